// One relying-party flow with panva's openid-client, through jargate, as a browser would.
// Usage: node flows.mjs <flow>. Environment: ISSUER, RP_PORT, CLIENT (JSON: client_id,
// client_secret, private JWK "key", "alg"). Prints one JSON line: the outcome.
import http from 'node:http';
import * as client from 'openid-client';

const flow = process.argv[2];
const { ISSUER, RP_PORT } = process.env;
const CLIENT = JSON.parse(process.env.CLIENT);
const redirectUri = `http://127.0.0.1:${RP_PORT}/cb`;

const IMPORT = {
  PS256: { name: 'RSA-PSS', hash: 'SHA-256' },
  RS256: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
  ES256: { name: 'ECDSA', namedCurve: 'P-256' },
};

async function signingKey() {
  const { key, alg } = CLIENT;
  const cryptoKey = await crypto.subtle.importKey('jwk', key, IMPORT[alg], false, ['sign']);
  return { key: cryptoKey, kid: key.kid };
}

async function configuration(jarm) {
  const metadata = { redirect_uris: [redirectUri] };
  if (jarm) metadata.authorization_signed_response_alg = CLIENT.jarm_alg;
  const execute = [client.allowInsecureRequests];
  if (jarm) execute.push(client.useJwtResponseMode);
  return client.discovery(
    new URL(ISSUER),
    CLIENT.client_id,
    metadata,
    client.ClientSecretBasic(CLIENT.client_secret),
    { execute },
  );
}

// --- a browser: follows redirects, keeps cookies, fills in the provider's login and
// consent forms, and posts form_post pages back, as a person with a browser would.
const jar = new Map();
function remember(response) {
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(';');
    const [name, ...value] = pair.split('=');
    jar.set(name.trim(), value.join('='));
  }
}
const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');

function formOf(html) {
  const action = html.match(/<form[^>]*action="([^"]*)"/)?.[1];
  if (!action) return undefined;
  const fields = new URLSearchParams();
  for (const [tag] of html.matchAll(/<input[^>]*>/g)) {
    const name = tag.match(/name="([^"]+)"/)?.[1];
    const value = tag.match(/value="([^"]*)"/)?.[1] ?? '';
    if (name) fields.set(name, value.replaceAll('&amp;', '&').replaceAll('&quot;', '"'));
  }
  if (fields.has('login')) { fields.set('login', 'alice'); fields.set('password', 'any'); }
  return { action: action.replaceAll('&amp;', '&'), fields };
}

async function browse(start) {
  const trail = [];
  let url = new URL(start);
  let init = {};
  for (let hop = 0; hop < 25; hop += 1) {
    const response = await fetch(url, { ...init, redirect: 'manual', headers: { ...init.headers, cookie: cookieHeader() } });
    remember(response);
    trail.push(`${init.method ?? 'GET'} ${url.pathname} -> ${response.status}`);
    init = {};
    if (response.status >= 300 && response.status < 400) {
      url = new URL(response.headers.get('location'), url);
      continue;
    }
    const body = await response.text();
    if (url.pathname === '/cb') return { trail, status: response.status, body };
    const form = response.status === 200 ? formOf(body) : undefined;
    if (!form) return { trail, status: response.status, body };
    url = new URL(form.action, url);
    init = {
      method: 'POST',
      body: form.fields.toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    };
  }
  return { trail, status: 0, body: 'too many hops' };
}

// --- the relying party's callback: verifies the response with openid-client.
function callbackServer(config, checks) {
  return http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const url = new URL(req.url, redirectUri);
    const current = req.method === 'POST'
      ? new Request(url, { method: 'POST', body: Buffer.concat(chunks), headers: { 'content-type': req.headers['content-type'] } })
      : url;
    let outcome;
    try {
      const tokens = await client.authorizationCodeGrant(config, current, checks);
      const claims = tokens.claims();
      outcome = { ok: true, method: req.method, query: [...url.searchParams.keys()], nonce_checked: claims?.nonce === checks.expectedNonce, sub: claims?.sub, id_token_iss: claims?.iss, access_token: Boolean(tokens.access_token) };
    } catch (error) {
      outcome = { ok: false, method: req.method, error: error.message, code: error.code, cause: error.cause?.error ?? String(error.cause ?? '') };
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(outcome));
  });
}

async function authorize({ jar: useJar = true, jarm, responseMode, par = false, tamper = false }) {
  const config = await configuration(Boolean(jarm));
  // With useJwtResponseMode the library always asks for response_mode=jwt (build/index.js,
  // buildAuthorizationUrl); to ask for query.jwt or form_post.jwt explicitly, the URL is
  // built with a configuration without it, and the response validated with `config`.
  const builder = responseMode && responseMode !== 'jwt' ? await configuration(false) : config;
  const verifier = client.randomPKCECodeVerifier();
  const nonce = client.randomNonce();
  const state = client.randomState();
  const params = {
    redirect_uri: redirectUri,
    scope: 'openid',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    nonce,
    state,
  };
  if (responseMode) params.response_mode = responseMode;
  let url;
  if (useJar) {
    url = await client.buildAuthorizationUrlWithJAR(builder, params, await signingKey());
    if (tamper) {
      const [h, p, s] = url.searchParams.get('request').split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url'));
      claims.scope = 'openid admin';
      url.searchParams.set('request', [h, Buffer.from(JSON.stringify(claims)).toString('base64url'), s].join('.'));
    }
    if (par) url = await client.buildAuthorizationUrlWithPAR(builder, url.searchParams);
  } else {
    url = client.buildAuthorizationUrl(builder, params);
  }
  const server = callbackServer(config, { pkceCodeVerifier: verifier, expectedNonce: nonce, expectedState: state });
  await new Promise((resolve) => server.listen(Number(RP_PORT), '127.0.0.1', resolve));
  try {
    const result = await browse(url);
    const outcome = result.body.startsWith('{') ? JSON.parse(result.body) : {};
    return { flow, authorization_url_params: [...url.searchParams.keys()], trail: result.trail, status: result.status, ...outcome, gateway_error: outcome.ok === undefined ? result.body.slice(0, 300) : undefined };
  } finally {
    server.close();
  }
}

// FAPI 2.0 Message Signing as openid-client does it (oauth4webapi's
// examples/fapi2-message-signing.ts): private_key_jwt everywhere, a signed request object
// pushed (PAR), PKCE S256, response_mode=jwt (JARM), and the ID token's signature checked
// for non-repudiation. DPoP and mTLS are left out: the gateway binds no tokens; http on
// loopback needs allowInsecureRequests.
async function fapi2() {
  const signing = await signingKey();
  const config = await client.discovery(
    new URL(ISSUER),
    CLIENT.client_id,
    {
      redirect_uris: [redirectUri],
      token_endpoint_auth_method: 'private_key_jwt',
      authorization_signed_response_alg: CLIENT.jarm_alg,
    },
    client.PrivateKeyJwt(signing),
    { execute: [client.allowInsecureRequests, client.useJwtResponseMode, client.enableNonRepudiationChecks] },
  );
  const verifier = client.randomPKCECodeVerifier();
  const nonce = client.randomNonce();
  const params = {
    redirect_uri: redirectUri,
    scope: 'openid',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    nonce,
  };
  const { searchParams: signed } = await client.buildAuthorizationUrlWithJAR(config, params, signing);
  const url = await client.buildAuthorizationUrlWithPAR(config, signed);
  const server = callbackServer(config, { pkceCodeVerifier: verifier, expectedNonce: nonce });
  await new Promise((resolve) => server.listen(Number(RP_PORT), '127.0.0.1', resolve));
  try {
    const result = await browse(url);
    const outcome = result.body.startsWith('{') ? JSON.parse(result.body) : {};
    return { flow, pushed: [...signed.keys()], authorization_url_params: [...url.searchParams.keys()], trail: result.trail, status: result.status, ...outcome, gateway_error: outcome.ok === undefined ? result.body.slice(0, 300) : undefined };
  } finally {
    server.close();
  }
}

const FLOWS = {
  'jar-query-jwt': () => authorize({ jarm: true, responseMode: 'query.jwt' }),
  'par-jwt': () => authorize({ jarm: true, responseMode: 'jwt', par: true }),
  'form-post-jwt': () => authorize({ jarm: true, responseMode: 'form_post.jwt' }),
  plain: () => authorize({ jar: false }),
  fapi2,
  tampered: () => authorize({ jarm: true, responseMode: 'query.jwt', tamper: true }),
  discovery: async () => {
    const config = await configuration(false);
    return { flow, metadata: config.serverMetadata() };
  },
};

try {
  process.stdout.write(`${JSON.stringify(await FLOWS[flow]())}\n`);
} catch (error) {
  process.stdout.write(`${JSON.stringify({ flow, ok: false, error: error.message, code: error.code, cause: String(error.cause?.error ?? error.cause ?? '') })}\n`);
}
