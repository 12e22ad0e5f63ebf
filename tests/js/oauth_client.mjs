// The official TypeScript MCP SDK client signing in with OAuth, driven by
// tests/oauth/test_sign_in.py: the SDK discovers the server's protected-resource metadata from
// its 401, then the authorization server's metadata, registers (Dynamic Client Registration)
// or names its Client ID Metadata Document, and sends the user agent to sign in. Here the user
// agent is a few fetch() calls: they follow the authorization server's redirects (keeping its
// cookies) and name the user on its scripted login page, until it sends them to the client's
// redirect URI, whose code the SDK exchanges (PKCE). Every event is one JSON line on stdout.
//
//   node oauth_client.mjs '<scenario as JSON>'
//
// scenario: {url, user, redirectUrl, clientMetadataUrl?, tool?, arguments?, steps?}
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const scenario = JSON.parse(process.argv[2]);

function emit(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

// The user agent: redirects followed by hand, cookies kept by name (one host).
async function signIn(authorizationUrl) {
  const jar = new Map();
  const origin = new URL(authorizationUrl).origin;
  let url = new URL(authorizationUrl);
  for (let hop = 0; hop < 12; hop += 1) {
    if (url.pathname.startsWith("/interaction/")) url.searchParams.set("user", scenario.user);
    const cookie = [...jar].map(([name, value]) => `${name}=${value}`).join("; ");
    const response = await fetch(url, { redirect: "manual", headers: cookie ? { cookie } : {} });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(";");
      const at = pair.indexOf("=");
      jar.set(pair.slice(0, at).trim(), pair.slice(at + 1).trim());
    }
    if (![302, 303, 307].includes(response.status)) {
      throw new Error(`the authorization server answered ${response.status} at ${url}: ${await response.text()}`);
    }
    url = new URL(response.headers.get("location"), url);
    if (url.origin !== origin) return url;
  }
  throw new Error("too many redirects");
}

// The SDK's OAuthClientProvider, in memory, as a host implements it.
const state = { tokens: undefined, client: undefined, verifier: undefined, redirected: undefined };
const provider = {
  get redirectUrl() {
    return scenario.redirectUrl;
  },
  clientMetadataUrl: scenario.clientMetadataUrl,
  get clientMetadata() {
    return {
      client_name: "flux-tools OAuth test (TypeScript SDK)",
      redirect_uris: [scenario.redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  },
  clientInformation: () => state.client,
  saveClientInformation: (info) => {
    state.client = info;
  },
  tokens: () => state.tokens,
  saveTokens: (tokens) => {
    state.tokens = tokens;
  },
  saveCodeVerifier: (verifier) => {
    state.verifier = verifier;
  },
  codeVerifier: () => state.verifier,
  redirectToAuthorization: async (authorizationUrl) => {
    emit({ event: "authorize", url: authorizationUrl.href });
    state.redirected = await signIn(authorizationUrl.href);
    emit({ event: "redirected", url: state.redirected.href });
  },
};

const url = new URL(scenario.url);
const client = new Client({ name: "flux-tools-js-oauth-test", version: "1.0.0" });
let transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
try {
  await client.connect(transport);
} catch (error) {
  if (!(error instanceof UnauthorizedError) || !state.redirected) throw error;
  // Back from the browser: the code is exchanged, then the client connects again.
  await transport.finishAuth(state.redirected.searchParams.get("code"));
  emit({ event: "signed-in", client_id: state.client?.client_id ?? null });
  transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
  await client.connect(transport);
}
emit({ event: "connected", protocolVersion: transport.protocolVersion ?? null });

const listed = await client.listTools();
emit({ event: "tools", names: listed.tools.map((t) => t.name) });
// One tool call by default; or the scenario's steps: {tool, arguments}, {read: uri}, {list: true}.
const steps = scenario.steps ?? [
  { tool: scenario.tool ?? "generate_image", arguments: scenario.arguments ?? { prompt: "a lighthouse at dusk" } },
];
for (const step of steps) {
  if (step.read) {
    try {
      const answer = await client.readResource({ uri: step.read });
      const contents = answer.contents.map((c) => ({ uri: c.uri, mimeType: c.mimeType ?? null }));
      emit({ event: "read", uri: step.read, ok: true, contents });
    } catch (error) {
      emit({ event: "read", uri: step.read, ok: false, error: String(error?.message ?? error) });
    }
  } else if (step.list) {
    const answer = await client.listResources();
    emit({ event: "resources", uris: answer.resources.map((r) => r.uri) });
  } else {
    const result = await client.callTool({ name: step.tool, arguments: step.arguments ?? {} });
    emit({
      event: "result",
      tool: step.tool,
      isError: result.isError ?? false,
      text: result.content.filter((c) => c.type === "text").map((c) => c.text).join("\n"),
      structuredContent: result.structuredContent ?? null,
    });
  }
}
await client.close();
process.exit(0);
