//! Test support shared by every test and bench crate that talks to fleetauth from the
//! outside: `tests/api` and `tests/es_own_nodes` include it with
//! `#[path = "../common/mod.rs"] mod common;`, `benches/es_store.rs` with
//! `#[path = "../tests/common/mod.rs"]`. Cargo compiles it only inside those crates (a
//! folder under `tests/` without a `main.rs` is no test crate of its own).
//!
//! - [`process`]: the `fleetauth` binary as an operator runs it: a command with a clean
//!   environment, `serve` started and its listening line read ([`process::Server`]),
//!   CLI commands, and a group of processes on one store ([`process::Processes`]);
//! - [`es`]: real Elasticsearch nodes through `scripts/elasticsearch.sh`: the shared
//!   one, nodes and clusters of a test's own, index prefixes, calls to the node;
//! - [`requests`]: the small requests tests repeat: the Fleet API (authenticate,
//!   refresh, whoami), the JWKS, `/metrics`, error bodies, credentials.
//!
//! Each crate uses a part of it, so unused items are no warning here.
#![allow(dead_code)]

pub mod es;
pub mod process;
pub mod requests;
