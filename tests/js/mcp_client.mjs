// The official TypeScript MCP SDK client (what Claude Desktop and most IDEs embed), driven by
// tests/mcp/test_real_clients_js.py. One scenario per run; every event is one JSON line on
// stdout, so the test can react to it (e.g. kill this process after the first progress).
//
//   node mcp_client.mjs '<scenario as JSON>'
//
// scenario: {transport: "stdio"|"http", url?, command?, args?, env?, cwd?,
//            action: "generate"|"cancel"|"abort_close"|"hold", tool?, arguments?,
//            roots?: [uri, ...]}
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CallToolResultSchema,
  ListRootsRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";

const scenario = JSON.parse(process.argv[2]);

function emit(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

function transportFor(s) {
  if (s.transport === "stdio") {
    return new StdioClientTransport({
      command: s.command,
      args: s.args ?? [],
      env: s.env ?? {},
      cwd: s.cwd,
      stderr: "inherit",
    });
  }
  return new StreamableHTTPClientTransport(new URL(s.url));
}

const capabilities = scenario.roots ? { roots: { listChanged: false } } : {};
const client = new Client({ name: "flux-tools-js-test", version: "1.0.0" }, { capabilities });
if (scenario.roots) {
  client.setRequestHandler(ListRootsRequestSchema, async () => ({
    roots: scenario.roots.map((uri) => ({ uri, name: uri.split("/").pop() })),
  }));
}
const transport = transportFor(scenario);
await client.connect(transport);
emit({
  event: "connected",
  server: client.getServerVersion(),
  protocolVersion: transport.protocolVersion ?? null,
});

const listed = await client.listTools();
emit({ event: "tools", names: listed.tools.map((t) => t.name), bytes: JSON.stringify(listed).length });

const tool = scenario.tool ?? "generate_image";
const args = scenario.arguments ?? { prompt: "a lighthouse at dusk" };
const controller = new AbortController();
let progressCount = 0;
const options = {
  // Claude Desktop's behaviour: a 60 s timeout, reset by every progress notification.
  timeout: 60000,
  resetTimeoutOnProgress: true,
  signal: controller.signal,
  onprogress: (p) => {
    progressCount += 1;
    emit({ event: "progress", progress: p.progress, total: p.total ?? null, message: p.message ?? null });
    if (progressCount === 1 && scenario.action === "cancel") {
      controller.abort("the user pressed stop");
    }
    if (progressCount === 1 && scenario.action === "abort_close") {
      // The client goes away: abort the request, then close the transport at once.
      controller.abort("the window was closed");
      client.close().then(() => {
        emit({ event: "closed" });
        process.exit(0);
      });
    }
  },
};

try {
  const result = await client.callTool({ name: tool, arguments: args }, CallToolResultSchema, options);
  const wire = JSON.stringify(result);
  emit({
    event: "result",
    bytes: Buffer.byteLength(wire, "utf8"),
    isError: result.isError ?? false,
    types: result.content.map((c) => c.type),
    text: result.content.filter((c) => c.type === "text").map((c) => c.text).join("\n"),
    structuredContent: result.structuredContent ?? null,
    progressCount,
  });
} catch (error) {
  emit({ event: "error", name: error?.name ?? null, code: error?.code ?? null, message: String(error?.message ?? error) });
}

if (scenario.action === "abort_close") {
  // close() above ends the process; never reached unless the call ended first.
  await new Promise((resolve) => setTimeout(resolve, 60000));
}
if (scenario.action === "hold") {
  // Stay connected until killed by the test.
  await new Promise((resolve) => setTimeout(resolve, 120000));
}

// After a canceled call, the server must still serve this session.
const again = await client.listTools();
emit({ event: "tools-again", names: again.tools.map((t) => t.name) });
await client.close();
emit({ event: "closed" });
process.exit(0);
