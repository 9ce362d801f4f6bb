// panva's oidc-provider for the benchmark's native comparison (bench/native.py): with
// NATIVE=1 its own request objects by value, PAR and JWT response modes on; with NATIVE=0
// all three off, as the legacy server behind jargate (mirrors tests/interop/provider.mjs).
// Environment: PORT, ISSUER, CLIENTS (JSON array of client metadata), NATIVE=1|0.
// oidc-provider resolves from tests/interop/node_modules (`make interop-deps`).
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../tests/interop/package.json', import.meta.url));
const { default: Provider } = await import(require.resolve('oidc-provider'));

const { PORT, ISSUER, CLIENTS, NATIVE } = process.env;
const native = NATIVE === '1';

// Its own signing keys, ES256 and RS256 (JARM responses), made at start.
const jwks = {
  keys: [
    generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }),
    generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  ],
};

const provider = new Provider(ISSUER, {
  clients: JSON.parse(CLIENTS),
  jwks,
  features: {
    // By value only, signed or not as the client sends it (the objects here are signed).
    requestObjects: { enabled: native, requireSignedRequestObject: false },
    pushedAuthorizationRequests: { enabled: native, requirePushedAuthorizationRequests: false },
    jwtResponseModes: { enabled: native },
    devInteractions: { enabled: true },
  },
  cookies: { keys: ['jargate-bench-only'] },
  findAccount: async (ctx, accountId) => ({
    accountId,
    claims: async () => ({ sub: accountId }),
  }),
});
// Behind jargate: trust X-Forwarded-* so discovery and redirects use ISSUER's origin.
provider.proxy = !native;
// What the provider refuses shows in bench/native.py's check of a few responses.
for (const event of ['server_error', 'authorization.error', 'pushed_authorization_request.error']) {
  provider.on(event, (...args) => console.error(event, args.at(-1)?.message ?? args.at(-1)));
}

const server = http.createServer(provider.callback());
server.keepAliveTimeout = 75_000;
server.listen(Number(PORT), '127.0.0.1', () => {
  process.stdout.write('ready\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
