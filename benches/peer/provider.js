// The peer of `cargo bench --bench authenticate` (docs/benchmarks.md): node
// oidc-provider serving `POST /token` with grant_type=client_credentials for one
// client (HTTP Basic), issuing JWT access tokens (EdDSA, 20 minutes, like fleetauth's
// defaults). Listens on 127.0.0.1 port 0 and prints the same JSON line as the bench's
// other servers: {"status":"listening","listen":"127.0.0.1:PORT"}.
//
// The client id and secret come from BENCH_PEER_CLIENT_ID / BENCH_PEER_CLIENT_SECRET.
// BENCH_PEER_RATE_LOG=PATH (optional, for docs/benchmarks.md "The peer's steady state")
// appends one line per second to PATH: answers, CPU µs per answer, heap MiB, GC ms.
import { generateKeyPairSync } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { PerformanceObserver } from 'node:perf_hooks';
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

const rateLog = process.env.BENCH_PEER_RATE_LOG;
if (rateLog) {
  let answers = 0;
  let gcMs = 0;
  server.on('request', (req, res) => res.on('finish', () => { answers += 1; }));
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) gcMs += entry.duration;
  }).observe({ entryTypes: ['gc'] });
  let cpu = process.cpuUsage();
  let t = process.hrtime.bigint();
  const started = t;
  setInterval(() => {
    const now = process.hrtime.bigint();
    const used = process.cpuUsage(cpu);
    const secs = Number(now - t) / 1e9;
    const line = {
      t: Number(now - started) / 1e9,
      rate: answers / secs,
      cpu_us: answers ? (used.user + used.system) / answers : 0,
      heap_mib: process.memoryUsage().heapUsed / 2 ** 20,
      gc_ms: gcMs,
    };
    appendFileSync(rateLog, `${JSON.stringify(line)}\n`);
    answers = 0;
    gcMs = 0;
    cpu = process.cpuUsage();
    t = now;
  }, 1000).unref();
}
server.listen(0, '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(JSON.stringify({ status: 'listening', listen: `${address}:${port}` }));
});
