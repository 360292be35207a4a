//! The Elasticsearch-compatible security service (SPEC §4): the token API
//! (`/_security/oauth2/token`), API keys, service-account tokens, users, roles and
//! `_authenticate`. Each flow authenticates through the one chain
//! ([`Authenticator::authenticate`]), authorizes by cluster privilege
//! ([`crate::identity::privileges`]), validates the request the way Elasticsearch does
//! and decides Elasticsearch's error type ([`SecurityError`]); HTTP statuses are the
//! HTTP layer's.
//!
//! The token API's tokens are this server's access and refresh tokens. Each `password`
//! or `client_credentials` grant starts its own *token family* (a record keyed by a
//! fresh id, owned by the user), so a user may hold any number of independent tokens;
//! a family rotates with the rules of SPEC §3 through the same token-service calls as
//! an agent (its refresh token is single use, up to the lost-response retry that SPEC
//! §3 allows). Invalidation by `username` or `realm_name` lists the user's families.
//!
//! One file per resource family: [`tokens`] (the token API), [`api_keys`],
//! [`service_tokens`], [`users`], [`roles`]; [`remover`] is the background removal of
//! what has expired; [`error`] is the family's error type. The flows take typed
//! requests and give typed results; their JSON shapes are the HTTP layer's
//! (`http::es_api::shapes`).

pub mod api_keys;
pub mod error;
pub mod remover;
pub mod roles;
pub mod service_tokens;
pub mod tokens;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

pub use error::{SecurityError, SecurityErrorKind};

use crate::api_keys::ApiKeyService;
use crate::authentication::{Authenticator, IdentityServices, Principal};
use crate::clock::UnixTime;
use crate::credentials::Presented;
use crate::grant::{GrantError, GrantService};
use crate::identity::Action;
use crate::tokens::TokenService;

/// A request body as the HTTP layer read it (its JSON shapes are `http::es_api::shapes`):
/// the typed request, or the `parse_exception` for a body that does not fit its shape.
/// A flow takes it out ([`RequestBody::take`]) after its first checks (the caller's
/// privilege), so a caller learns whether its body fits only once it may make the call.
#[derive(Debug)]
pub struct RequestBody<T>(Result<T, SecurityError>);

impl<T> RequestBody<T> {
    pub fn new(read: Result<T, SecurityError>) -> Self {
        Self(read)
    }

    /// The typed request, or why the body could not be read into it.
    pub fn take(self) -> Result<T, SecurityError> {
        self.0
    }
}

/// The flows of the security APIs.
pub struct SecurityApi {
    authenticator: Arc<Authenticator>,
    identity: IdentityServices,
    /// The one grant dispatch, for the token API's grants.
    grants: Arc<GrantService>,
    tokens: Arc<TokenService>,
    api_keys: Arc<ApiKeyService>,
    /// How long expired and invalidated API keys are kept.
    retention: Duration,
}

impl SecurityApi {
    pub fn new(
        authenticator: Arc<Authenticator>,
        identity: IdentityServices,
        grants: Arc<GrantService>,
        tokens: Arc<TokenService>,
        api_keys: Arc<ApiKeyService>,
        retention: Duration,
    ) -> Self {
        Self {
            authenticator,
            identity,
            grants,
            tokens,
            api_keys,
            retention,
        }
    }

    fn now(&self) -> UnixTime {
        self.tokens.now()
    }

    /// The authentication chain, with Elasticsearch's 401 for no or bad credentials.
    pub async fn authenticate(
        &self,
        presented: Option<&Presented>,
        path: &str,
    ) -> Result<Principal, SecurityError> {
        let Some(presented) = presented else {
            return Err(SecurityError::unauthenticated(format!(
                "missing authentication credentials for REST request [{path}]"
            )));
        };
        match self.authenticator.authenticate(presented).await {
            Ok(principal) => Ok(principal),
            // Not a verdict on the credential: as any grant refusal of the kind.
            Err(
                e @ (GrantError::Throttled(_) | GrantError::Unavailable(_) | GrantError::Internal(_)),
            ) => Err(e.into()),
            Err(_) => Err(SecurityError::unauthenticated(match presented {
                Presented::Basic { id, .. } => {
                    format!("unable to authenticate user [{id}] for REST request [{path}]")
                }
                _ => "unable to authenticate with provided credentials and anonymous access is not allowed for this request".to_string(),
            })),
        }
    }

    fn authorize(principal: &Principal, action: Action) -> Result<(), SecurityError> {
        if principal.identity.privileges.allow(action) {
            Ok(())
        } else {
            Err(SecurityError::forbidden(&principal.identity, action))
        }
    }
}
