//! One integration test binary. Every test starts its own server (`helpers::spawn_app`)
//! on an ephemeral port with its own store (SQLite in a temporary dir, a fresh
//! Elasticsearch stand-in, or fresh indices on a real Elasticsearch node: `real_es`),
//! and talks HTTP to it. What this crate shares with `tests/es_own_nodes` and
//! `benches/es_store.rs` (the real server in a process of its own, real Elasticsearch
//! nodes, the small Fleet requests) is in `tests/common`.

#[path = "../common/mod.rs"]
mod common; // shared with tests/es_own_nodes and benches/es_store.rs
mod es_standin; // an in-process Elasticsearch stand-in (not Elasticsearch) for CI
mod helpers;
mod real_es; // the real Elasticsearch node (FLEETAUTH_TEST_ES_URL or scripts/elasticsearch.sh) and FLEETAUTH_TEST_STORE

mod bad_input; // malformed headers, bodies, sizes and content types: 4xx, never 5xx
mod bulk_revocation; // POST /api/fleet/tokens/revoke and `tokens revoke` with real binaries on one store (SQLite file, real node): by agent, key, time; at once elsewhere; watermark
mod clients; // real third-party clients (authlib, elasticsearch-py, hvac, openid-client, schemathesis) from their registries against `fleetauth serve`
mod cluster; // three real fleetauth binaries on one real Elasticsearch node: races, reuse, invalidation, key rotation
mod crash_under_load; // the real binary killed -9 twenty times while 16 agents refresh concurrently: no acknowledged rotation lost (SQLite, real ES)
mod dpop; // RFC 9449: proofs signed with jsonwebtoken, bound pairs at every token endpoint, resources, replay, wrong keys, nonces
mod edge; // raw TCP: header/idle timeouts, the connection cap, EMFILE, layer errors in each family's format, keep-alive after unread bodies
mod elasticsearch; // Elasticsearch only: indices, CAS retries, faults, CLI, requests per issuance
mod elasticsearch_real; // the real node: what the stand-in models and what it hides
mod enrollment; // enrollment tokens (CLI binary, admin API), POST /api/fleet/agents/enroll with API keys or JWTs, re-enrollment, limits
mod es_faults; // a real node of its own killed -9 under load and restarted: 503s with Retry-After, recovery, no acknowledged rotation lost
mod fleet; // POST /api/fleet/authenticate, GET /api/fleet/whoami: every credential kind
mod forgery; // forged and tampered JWTs: alg none, HS256 with the public key, wrong key, bad claims
mod key_rotation; // automatic signing-key rotation with three real binaries on one store (SQLite file, real node): prepublication, retirement, one rotator
mod logs; // no secret in the server's output at trace level, through every kind of secret
mod oauth; // /oauth/token (client_credentials, refresh_token, token exchange), introspection, revocation, metadata: with the oauth2 crate and raw forms
mod process; // the binary: CLI beside a running server, settings, restart, kill -9
mod rotation; // the rotation protocol: pending/current, lost responses, reuse, races
mod security; // Elasticsearch-compatible security APIs: elastic, users, roles, token API, API keys, service accounts, the chain
mod store_conformance; // one suite, every backend: SQLite, ES stand-in, a real Elasticsearch node (never skipped)
mod throttling; // credential floods: 429 with Retry-After per family, per-address and per-credential limits, the argon2 budget, unknown ids without argon2
mod tls; // HTTPS with generated certificates: ALPN h2/http1.1, reload without dropping connections, mTLS
mod vault; // /v1/auth/jwt/*: admin-only config and roles, logins with external JWTs (PEM keys, OIDC discovery with rotation), bindings, num_uses, ttl, token exchange
