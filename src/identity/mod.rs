//! Elasticsearch-compatible security: native users (with the built-in superuser
//! `elastic`), roles and their cluster privileges, and service accounts with their
//! tokens. These are services over the store, like the API key service; the
//! authentication chain lives in `crate::authentication`, and the flows of the
//! Elasticsearch-compatible security APIs, with their error types, in `crate::es_api`.
//!
//! - [`privileges`]: the cluster privileges and what each API needs;
//! - [`roles`]: role descriptors, the built-in `superuser`, the role store;
//! - [`users`]: native users, passwords (argon2id), the bootstrap of `elastic`;
//! - [`service_accounts`]: `elastic/fleet-server` and its tokens (Elasticsearch's
//!   format).
//!
//! Passwords and service tokens are checked by the one secret verifier
//! ([`crate::secrets`]).

pub mod privileges;
pub mod roles;
pub mod service_accounts;
pub mod users;

use serde::Serialize;
use serde_json::Value;

pub use privileges::{Action, Privileges};
pub use roles::{Resolved, RoleDescriptor, RoleService};
pub use service_accounts::{ServiceAccount, ServiceAccounts};
pub use users::UserService;

/// A realm, as Elasticsearch names the source of an identity. Every realm is one of
/// the fixed ones below, so its names are static (building an identity, on every
/// authenticated request, copies no string for them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Realm {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl Realm {
    const fn new(name: &'static str, kind: &'static str) -> Self {
        Self { name, kind }
    }

    /// Native users.
    pub fn native() -> Self {
        Self::new("default_native", "native")
    }

    /// Built-in users (`elastic`).
    pub fn reserved() -> Self {
        Self::new("reserved", "reserved")
    }

    /// API keys.
    pub fn api_key() -> Self {
        Self::new("_es_api_key", "_es_api_key")
    }

    /// Service accounts.
    pub fn service_account() -> Self {
        Self::new("_service_account", "_service_account")
    }

    /// Agents' and OAuth2 clients' access tokens (not an Elasticsearch realm).
    pub fn fleetauth() -> Self {
        Self::new("_fleetauth", "_fleetauth")
    }
}

/// How a credential authenticated, in `_authenticate`'s terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthenticationType {
    /// A username and password.
    Realm,
    ApiKey,
    /// An access token or a service-account token.
    Token,
}

/// Who a credential is, in Elasticsearch's terms, and what it may do.
#[derive(Debug, Clone)]
pub struct Identity {
    pub username: String,
    pub roles: Vec<String>,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub metadata: Value,
    pub enabled: bool,
    pub authentication_realm: Realm,
    pub lookup_realm: Realm,
    pub authentication_type: AuthenticationType,
    /// The API key (id, name), when authenticated by one.
    pub api_key: Option<(String, String)>,
    /// The service token's name, when authenticated by one.
    pub service_token: Option<String>,
    /// The effective cluster privileges.
    pub privileges: Privileges,
    /// The role descriptors (name → descriptor) behind `privileges`: what an API key
    /// this identity creates is limited by.
    pub role_descriptors: Value,
}

impl Identity {
    /// Whether this identity is a user (not an API key, a service account or an agent).
    pub fn is_user(&self) -> bool {
        matches!(self.lookup_realm.kind, "native" | "reserved") && self.api_key.is_none()
    }
}
