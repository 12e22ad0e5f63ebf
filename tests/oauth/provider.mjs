// A real OAuth 2.1 authorization server for tests/oauth: oidc-provider (panva, a certified
// OpenID Connect provider), configured as a team's IdP would be for the MCP server.
//
//   node provider.mjs '<config as JSON>'
//
// config: {keys: "<path of a private JWKS (RSA + EC keys) written by the test>",
//          scopes: ["flux:generate", ...]   scopes a resource server may be granted,
//          ttl: 300                         access token lifetime, seconds,
//          alg: "ES256"                     access token signing algorithm,
//          allowLoopbackFetch: true}        let CIMD fetch a loopback https URL (tests only)
//
// What it enables: Dynamic Client Registration (open, no initial access token), Client ID
// Metadata Documents (oidc-provider's own `clientIdMetadataDocument` feature, draft-02), PKCE
// (required for public clients, S256 only), resource indicators (RFC 8707) issuing JWT access
// tokens (RFC 9068) whose audience is the requested resource.
//
// The browser step is scripted: the interaction page /interaction/<uid>?user=<sub> signs in the
// user the test names and consents to everything asked, then redirects on, so a test completes
// the sign-in with plain HTTP requests (following redirects, keeping cookies).
//
// It listens on a free loopback port, then prints one line: {"issuer": "http://127.0.0.1:PORT"}.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2] ?? '{}');
const keys = JSON.parse(readFileSync(config.keys, 'utf8'));
const scopes = config.scopes ?? ['flux:generate'];
const ttl = config.ttl ?? 300;
const alg = config.alg ?? 'ES256';

// The port first (0: any free one), then the provider: its issuer names the port.
const server = createServer();
await new Promise((resolve) => server.listen(config.port ?? 0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

// oidc-provider refuses to fetch from special-use addresses (SSRF protection); the tests serve
// client metadata documents from loopback, so only there is its dispatcher dropped.
function fetchAllowingLoopback(url, options) {
  if (config.allowLoopbackFetch && new URL(url).hostname === '127.0.0.1') {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  }
  return globalThis.fetch(url, options);
}

const provider = new Provider(issuer, {
  jwks: keys,
  cookies: { keys: ['flux-tools-oauth-tests-cookie-key'] },
  clientDefaults: {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  },
  scopes: ['openid', 'offline_access', ...scopes],
  pkce: { required: () => true },
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  fetch: fetchAllowingLoopback,
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    clientIdMetadataDocument: {
      enabled: true,
      ack: 'draft-02',
      // Seconds a fetched document is kept (the test's documents say no-store).
      cacheDuration: { min: 0, max: 60 },
    },
    resourceIndicators: {
      enabled: true,
      // A token request without `resource` gets the one granted at the authorization step.
      useGrantedResource: async () => true,
      defaultResource: async (ctx, client, oneOf) => oneOf,
      getResourceServerInfo: async (ctx, resourceIndicator) => ({
        scope: scopes.join(' '),
        audience: resourceIndicator,
        accessTokenTTL: ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg } },
      }),
    },
  },
});
// Behind nothing: requests are plain http on loopback.
provider.proxy = false;

async function interaction(req, res) {
  const url = new URL(req.url, issuer);
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    const user = url.searchParams.get('user');
    if (!user) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end('scripted login: add ?user=<subject> to the interaction URL');
      return;
    }
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: user } },
      { mergeWithLastSubmission: false },
    );
    return;
  }
  // Consent: everything asked, as a user pressing "Allow" would.
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const asked = prompt.details;
  if (asked.missingOIDCScope) grant.addOIDCScope(asked.missingOIDCScope.join(' '));
  if (asked.missingOIDCClaims) grant.addOIDCClaims(asked.missingOIDCClaims);
  for (const [indicator, scope] of Object.entries(asked.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scope.join(' '));
  }
  await provider.interactionFinished(
    req,
    res,
    { consent: { grantId: await grant.save() } },
    { mergeWithLastSubmission: true },
  );
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => {
      process.stderr.write(`interaction failed: ${error}\n`);
      if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(String(error));
    });
    return;
  }
  callback(req, res);
});
provider.on('server_error', (ctx, error) => process.stderr.write(`server_error: ${error}\n`));

process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
