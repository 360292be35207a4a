//! One integration test binary. Every test starts its own server (`helpers::spawn_app`)
//! on an ephemeral port with its own store (SQLite in a temporary dir, or a fresh
//! Elasticsearch stand-in), and talks HTTP to it.

mod es_standin; // an in-process Elasticsearch stand-in (not Elasticsearch) for CI
mod helpers;

mod bad_input; // malformed headers, bodies, sizes and content types: 4xx, never 5xx
mod edge; // raw TCP: header/idle timeouts, the connection cap, EMFILE, layer errors in each family's format, keep-alive after unread bodies
mod elasticsearch; // Elasticsearch only: indices, CAS retries, faults, CLI, requests per issuance
mod fleet; // POST /api/fleet/authenticate, GET /api/fleet/whoami: every credential kind
mod forgery; // forged and tampered JWTs: alg none, HS256 with the public key, wrong key, bad claims
mod oauth; // /oauth/token (client_credentials, refresh_token, token exchange), introspection, revocation, metadata: with the oauth2 crate and raw forms
mod process; // the binary: CLI beside a running server, settings, restart, kill -9
mod rotation; // the rotation protocol: pending/current, lost responses, reuse, races
mod security; // Elasticsearch-compatible security APIs: elastic, users, roles, token API, API keys, service accounts, the chain
mod store_conformance; // one suite, every backend: SQLite, ES stand-in, a real cluster if set
mod tls; // HTTPS with generated certificates: ALPN h2/http1.1, reload without dropping connections, mTLS
mod vault; // /v1/auth/jwt/*: admin-only config and roles, logins with external JWTs (PEM keys, OIDC discovery with rotation), bindings, num_uses, ttl, token exchange
