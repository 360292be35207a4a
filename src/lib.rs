//! fleetauth: an OAuth2 authorization server for fleets of agents and standard OAuth2
//! clients.
//!
//! Data flows one way, each module using only those below it (plus the leaf modules
//! [`config`] and [`clock`]):
//!
//! ```text
//! http        axum frontends, one module per API family; status codes decided here
//!  -> enrollment    enrollment tokens and agent enrollment (issues through grant)
//!  -> credentials   what the caller presented (Authorization header), parsed only
//!   -> grant        flows: credential -> pair, credential -> principal; OAuth errors
//!    -> vault       the Vault-compatible JWT auth method: config, roles, external JWTs
//!    -> tokens, api_keys, agents, security   token formats, keys, rotation rules;
//!                  users, roles, privileges, service accounts
//!     -> secrets    the one secret verifier: argon2id, its work budget, the cache of
//!                  verified secrets, failed-check limits (429)
//!     -> store      the Store trait and its records
//!      -> store::sqlite   the embedded backend (group commit, WAL)
//!      -> store::elasticsearch   the distributed backend (real-time GETs, compare-and-set)
//! ```
//!
//! [`startup`] assembles the pieces; [`cli`] is the command line; [`telemetry`] holds
//! the process-wide log subscriber and metrics recorder.

pub mod agents;
pub mod api_keys;
pub mod authentication;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod enrollment;
pub mod es_api;
pub mod grant;
pub mod http;
pub mod identity;
pub mod scope;
pub mod secrets;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod vault;
