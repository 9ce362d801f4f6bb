// panva's oidc-provider configured as a *legacy* server: no request objects, no PAR, no
// JWT response modes. Started by the interop tests on a loopback port behind jargate.
// Environment: PORT, ISSUER (jargate's public URL), CLIENTS (JSON array of client metadata).
import http from 'node:http';
import Provider from 'oidc-provider';

const { PORT, ISSUER, CLIENTS } = process.env;

const provider = new Provider(ISSUER, {
  clients: JSON.parse(CLIENTS),
  features: {
    requestObjects: { enabled: false },
    pushedAuthorizationRequests: { enabled: false },
    jwtResponseModes: { enabled: false },
    devInteractions: { enabled: true },
  },
  cookies: { keys: ['jargate-interop-tests-only'] },
  findAccount: async (ctx, accountId) => ({
    accountId,
    claims: async () => ({ sub: accountId }),
  }),
});
// Trust X-Forwarded-* (jargate sets them), so discovery and redirects use ISSUER's origin.
provider.proxy = true;
// Anything the provider gets wrong shows in the test's output.
for (const event of ['server_error', 'interaction.ended', 'authorization.error', 'grant.error']) {
  provider.on(event, (...args) => console.error(event, args.at(-1)?.stack ?? args.at(-1)));
}

const server = http.createServer(provider.callback());
server.listen(Number(PORT), '127.0.0.1', () => {
  process.stdout.write('ready\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
