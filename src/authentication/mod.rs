//! Authentication: who a presented credential is, for every protected API (the Fleet
//! API's resources, the Elasticsearch-compatible security APIs, the Vault-compatible
//! admin check). One chain ([`Authenticator::authenticate`], in [`chain`]) in SPEC §2
//! order: service accounts, then the token service, then API keys. Its answer is a
//! [`Principal`]: how it authenticated and its [`Identity`] (Elasticsearch's terms and
//! cluster privileges).
//!
//! Refusals are the grant layer's [`GrantError`](crate::grant::GrantError)s (each API
//! family renders them in its own format); access tokens are checked by the same
//! validation as the OAuth2 endpoints use.

mod chain;

use std::sync::Arc;

use crate::api_keys::ApiKeyService;
use crate::config::OAuthSettings;
use crate::grant::GrantService;
use crate::identity::{Identity, RoleService, ServiceAccounts, UserService};
use crate::tokens::TokenService;

/// How a principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiKey,
    Jwt,
    /// A user's username and password (HTTP Basic).
    Password,
    ServiceToken,
}

/// Who a credential belongs to.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The agent, when the credential is an agent's.
    pub agent_id: Option<String>,
    pub auth_method: AuthMethod,
    /// The API key id, the JWT ID, the username or the service token's name.
    pub token_id: String,
    /// Who it is in Elasticsearch's terms, and its cluster privileges.
    pub identity: Identity,
}

/// The services behind users, roles and service accounts, shared by the
/// authentication chain and the Elasticsearch-compatible security APIs.
#[derive(Clone)]
pub struct IdentityServices {
    pub users: Arc<UserService>,
    pub roles: Arc<RoleService>,
    pub service_accounts: Arc<ServiceAccounts>,
}

/// The authentication chain over the services it asks.
pub struct Authenticator {
    /// For the DPoP checks of bound access tokens (RFC 9449 §7).
    grants: Arc<GrantService>,
    tokens: Arc<TokenService>,
    api_keys: Arc<ApiKeyService>,
    identity: IdentityServices,
    /// Which clients' tokens are kept in the store (`oauth.client_credentials_refresh`).
    oauth: OAuthSettings,
}

impl Authenticator {
    pub fn new(
        grants: Arc<GrantService>,
        tokens: Arc<TokenService>,
        api_keys: Arc<ApiKeyService>,
        identity: IdentityServices,
        oauth: OAuthSettings,
    ) -> Self {
        Self {
            grants,
            tokens,
            api_keys,
            identity,
            oauth,
        }
    }
}
