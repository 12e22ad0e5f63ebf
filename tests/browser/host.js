// A minimal MCP Apps host, as a chat client embeds one: the official MCP client connected to the
// server over streamable HTTP, and the official host bridge (@modelcontextprotocol/ext-apps
// AppBridge + PostMessageTransport) between it and the view in a sandboxed iframe. Bundled for
// the browser by run.mjs; the page calls window.fluxHost.start(...).
import {
  AppBridge,
  PostMessageTransport,
  RESOURCE_MIME_TYPE,
  getToolUiResourceUri,
} from "@modelcontextprotocol/ext-apps/app-bridge";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const HOST_INFO = { name: "flux-browser-test-host", version: "1.0.0" };

// What the host saw, for the test to check.
const log = { openLinks: [], modelContext: [], sizes: [], toolCalls: [] };

async function start({ mcpPath, tool, args, width }) {
  const client = new Client(HOST_INFO, {
    capabilities: {
      extensions: { "io.modelcontextprotocol/ui": { mimeTypes: [RESOURCE_MIME_TYPE] } },
    },
  });
  await client.connect(new StreamableHTTPClientTransport(new URL(mcpPath, location.href)));
  const { tools } = await client.listTools();
  const definition = tools.find((t) => t.name === tool);
  const uri = getToolUiResourceUri(definition);
  if (!uri) throw new Error(`${tool} names no UI resource`);
  const read = await client.readResource({ uri });
  const [content] = read.contents;
  if (content.mimeType !== RESOURCE_MIME_TYPE) {
    throw new Error(`the UI resource is served as ${content.mimeType}`);
  }

  // As hosts do: an opaque-origin frame that may run scripts and nothing else.
  const frame = document.createElement("iframe");
  frame.id = "view";
  frame.setAttribute("sandbox", "allow-scripts");
  frame.style.width = `${width}px`;
  frame.style.height = "200px";
  frame.style.border = "1px solid #ccc";
  document.getElementById("host").appendChild(frame);

  const bridge = new AppBridge(
    client,
    HOST_INFO,
    {
      serverTools: {},
      serverResources: {},
      openLinks: {},
      updateModelContext: { text: {} },
      logging: {},
    },
    {
      hostContext: {
        theme: "light",
        displayMode: "inline",
        availableDisplayModes: ["inline"],
        containerDimensions: { width, maxHeight: 900 },
        platform: "web",
        toolInfo: { tool: definition },
      },
    },
  );
  bridge.onsizechange = ({ height }) => {
    log.sizes.push(height);
    if (typeof height === "number") frame.style.height = `${height}px`;
  };
  bridge.onopenlink = async ({ url }) => {
    log.openLinks.push(url);
    return {};
  };
  bridge.onupdatemodelcontext = async (params) => {
    log.modelContext.push(params);
    return {};
  };
  const initialized = new Promise((resolve) => {
    bridge.oninitialized = resolve;
  });
  await bridge.connect(new PostMessageTransport(frame.contentWindow, frame.contentWindow));
  frame.srcdoc = content.text;
  await initialized;

  // The model's call: the view gets its arguments, then its result.
  await bridge.sendToolInput({ arguments: args });
  const result = await client.callTool({ name: tool, arguments: args });
  log.toolCalls.push({ name: tool, isError: Boolean(result.isError) });
  await bridge.sendToolResult(result);
  return {
    uri,
    mimeType: content.mimeType,
    toolMeta: definition._meta ?? null,
    serverCapabilities: client.getServerCapabilities() ?? null,
    resultBlocks: result.content.map((block) => block.type),
  };
}

window.fluxHost = { start, log };
