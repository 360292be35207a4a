//! One integration test binary. Every test starts its own server (`helpers::spawn_app`)
//! on an ephemeral port with its own SQLite store, and talks HTTP to it.

mod helpers;

mod fleet; // POST /api/fleet/authenticate, GET /api/fleet/whoami: every credential kind
mod rotation; // the rotation protocol: pending/current, lost responses, reuse, races

