//! Tests on Elasticsearch nodes of their own, started by `scripts/elasticsearch.sh` for
//! one test and stopped at its end (never skipped: a node that cannot start fails the
//! test with its log tail). They need more than the shared node of `tests/api` can
//! give without disturbing every test beside them:
//!
//! - [`failover`]: a three-node cluster on loopback whose node holding the primary of
//!   the agents index is killed (`kill -9`) while agents refresh through three
//!   `fleetauth serve` processes;
//! - [`rejections`]: a node with a one-thread, one-slot write queue, so that concurrent
//!   load gets real 429 answers;
//! - [`secured`]: a node with security on (the integ-test-zip distribution has
//!   x-pack-security): fleetauth authenticates with the documented least privileges,
//!   and coexists with a `.fleet-agents` index it did not create.
//!
//! Starting several JVMs takes minutes on a busy machine, so this target is not part
//! of `cargo test` (`test = false` in Cargo.toml): `.ci/run` runs it as its own step,
//! `cargo test --test es_own_nodes` by hand.
//!
//! The nodes and the `fleetauth` processes are started by `tests/common` (shared with
//! `tests/api` and `benches/es_store.rs`); [`nodes`] sets up the processes on them.

#[path = "../common/mod.rs"]
mod common;
mod failover;
mod nodes;
mod rejections;
mod secured;
