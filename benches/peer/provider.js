// The peer of `cargo bench --bench authenticate` (docs/benchmarks.md): node
// oidc-provider serving `POST /token` with grant_type=client_credentials for one
// client (HTTP Basic), issuing JWT access tokens (EdDSA, 20 minutes, like fleetauth's
// defaults). Listens on 127.0.0.1 port 0 and prints the same JSON line as the bench's
// other servers: {"status":"listening","listen":"127.0.0.1:PORT"}.
//
// The client id and secret come from BENCH_PEER_CLIENT_ID / BENCH_PEER_CLIENT_SECRET.
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const clientId = process.env.BENCH_PEER_CLIENT_ID;
const clientSecret = process.env.BENCH_PEER_CLIENT_SECRET;
if (!clientId || !clientSecret) {
  console.error('BENCH_PEER_CLIENT_ID and BENCH_PEER_CLIENT_SECRET are required');
  process.exit(2);
}

const resource = 'urn:fleetauth:bench';
const keys = [
  { ...generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' }), alg: 'EdDSA', use: 'sig', kid: 'ed' },
  // oidc-provider signs ID tokens with RS256 by default and wants such a key at hand.
  { ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig', kid: 'rs' },
];

const provider = new Provider('http://127.0.0.1', {
  jwks: { keys },
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'EdDSA'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'agent',
        audience: resource,
        accessTokenTTL: 1200,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'EdDSA' } },
      }),
    },
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const server = createServer(provider.callback());
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(JSON.stringify({ status: 'listening', listen: `${address}:${port}` }));
});
