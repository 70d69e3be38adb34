// A real OpenID Connect provider (npm oidc-provider) for Bulkhead's tests.
// Environment: PORT, ISSUER, CLIENT_ID, CLIENT_SECRET, AUDIENCE (resource indicator), KID,
// ROLES (comma-separated, put in a `roles` claim of access tokens).
// Prints "ready <port>" on stdout once it listens on 127.0.0.1.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const env = (name, fallback) => process.env[name] ?? fallback;
const port = Number(env('PORT', '0'));
const audience = env('AUDIENCE', 'https://api.example/');
const roles = env('ROLES', 'agent').split(',').filter(Boolean);

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: env('KID', 'key-1'), alg: 'RS256', use: 'sig' };

const provider = new Provider(env('ISSUER', `http://127.0.0.1:${port}`), {
  clients: [{
    client_id: env('CLIENT_ID', 'bulkhead-test'),
    client_secret: env('CLIENT_SECRET', 'bulkhead-test-secret'),
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
  }],
  jwks: { keys: [jwk] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api',
        audience,
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: () => ({ roles }),
});

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${server.address().port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
