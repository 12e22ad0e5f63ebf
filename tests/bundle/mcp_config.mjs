// The command, arguments and environment Claude Desktop starts a bundle's server with, computed by
// the MCPB library's own getMcpConfigForManifest (defaults, user settings, ${__dirname},
// ${HOME}... and the expansion of multiple-choice settings into several arguments).
// Usage: node mcp_config.mjs '{"manifest": PATH, "extensionPath": DIR, "userConfig": {...},
//                            "systemDirs": {"HOME": ...}}'  -> prints the config as JSON.
import { readFileSync } from "node:fs";
import { getMcpConfigForManifest } from "@anthropic-ai/mcpb";

const options = JSON.parse(process.argv[2]);
const manifest = JSON.parse(readFileSync(options.manifest, "utf-8"));
const config = await getMcpConfigForManifest({
  manifest,
  extensionPath: options.extensionPath,
  systemDirs: options.systemDirs,
  userConfig: options.userConfig,
  pathSeparator: "/",
  logger: console,
});
process.stdout.write(JSON.stringify(config ?? null));
