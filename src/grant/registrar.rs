//! The client registry of the OAuth2 endpoints, as an oxide-auth `Registrar`: a client
//! is an API key (client id = key id, client secret = the key), checked by the
//! [`ApiKeyService`] (argon2id, cached), and the scopes it may be granted are the ones
//! configured in `oauth.scopes` (RFC 6749 §3.3).
//!
//! Our grant handlers call the typed methods ([`ApiKeyRegistrar::authenticate`],
//! [`ApiKeyRegistrar::negotiate_scope`]), which say *why* a client was refused. The
//! [`oxide_auth_async::primitives::Registrar`] implementation wraps them for oxide-auth's
//! own flows, whose `RegistrarError` cannot carry a reason: the reason of the last
//! refusal is kept here ([`ApiKeyRegistrar::take_failure`]).
//!
//! There are no redirect URIs (no authorization endpoint): `bound_redirect` binds every
//! client to one placeholder URI and refuses any redirect URI a request names.

use std::borrow::Cow;
use std::sync::Mutex;

use async_trait::async_trait;
use oxide_auth::frontends::dev::Url;
use oxide_auth::primitives::registrar::{
    BoundClient, ClientUrl, PreGrant, RegisteredUrl, RegistrarError,
};
use oxide_auth::primitives::scope::Scope;

use super::request::{empty_scope, parse_scope, scope_text};
use super::GrantError;
use crate::api_keys::ApiKeyService;

/// The redirect URI oxide-auth's types require; nothing is ever sent there.
const NO_REDIRECT: &str = "urn:fleetauth:no-redirect";

pub(crate) fn placeholder_redirect() -> Url {
    Url::parse(NO_REDIRECT).expect("a valid URN")
}

/// A client whose credentials were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The API key id.
    pub id: String,
    /// The agent the key belongs to; `None` for a non-agent client.
    pub agent_id: Option<String>,
}

impl Client {
    /// The `sub` of tokens issued to this client: its agent, or itself (RFC 9068 §2.2).
    pub fn subject(&self) -> &str {
        self.agent_id.as_deref().unwrap_or(&self.id)
    }

    /// Whether a token with these `sub` and `client_id` belongs to this client: tokens
    /// of its agent (issued through any of the agent's keys), or its own.
    pub fn owns(&self, sub: &str, client_id: &str) -> bool {
        match &self.agent_id {
            Some(agent_id) => agent_id == sub,
            None => self.id == sub && self.id == client_id,
        }
    }
}

pub struct ApiKeyRegistrar<'a> {
    api_keys: &'a ApiKeyService,
    scopes: &'a [String],
    failure: Mutex<Option<GrantError>>,
}

impl<'a> ApiKeyRegistrar<'a> {
    pub fn new(api_keys: &'a ApiKeyService, scopes: &'a [String]) -> Self {
        Self {
            api_keys,
            scopes,
            failure: Mutex::new(None),
        }
    }

    /// Verifies a client id and secret. Every refusal reads the same to the client
    /// (`invalid_client`, "invalid API key"), so it cannot tell which ids exist.
    pub async fn authenticate(&self, id: &str, secret: &str) -> Result<Client, GrantError> {
        let key = self.api_keys.verify(id, secret).await?;
        Ok(Client {
            id: key.id,
            agent_id: key.agent_id,
        })
    }

    /// RFC 6749 §3.3: the requested scope must be made of configured scopes; no scope
    /// requested means a token without scope. Returns the scope to grant, normalized.
    pub fn negotiate_scope(&self, requested: Option<&Scope>) -> Result<Option<String>, GrantError> {
        let Some(requested) = requested else {
            return Ok(None);
        };
        if let Some(unknown) = requested
            .iter()
            .find(|token| !self.scopes.iter().any(|allowed| allowed == token))
        {
            let description = if self.scopes.is_empty() {
                "this server grants no scopes; leave scope out".to_string()
            } else {
                format!("the scope {unknown:?} may not be requested")
            };
            return Err(GrantError::invalid_scope("scope_not_allowed", description));
        }
        Ok(scope_text(requested))
    }

    /// The reason behind the last error reported through the `Registrar` trait.
    pub fn take_failure(&self) -> Option<GrantError> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn fail(&self, error: GrantError) -> RegistrarError {
        let kind = if error.is_server_error() {
            RegistrarError::PrimitiveError
        } else {
            RegistrarError::Unspecified
        };
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        kind
    }
}

#[async_trait]
impl oxide_auth_async::primitives::Registrar for ApiKeyRegistrar<'_> {
    async fn bound_redirect<'b>(
        &self,
        bound: ClientUrl<'b>,
    ) -> Result<BoundClient<'b>, RegistrarError> {
        if bound.redirect_uri.is_some() {
            return Err(self.fail(GrantError::invalid_request(
                "redirect_uri",
                "this server has no authorization endpoint; redirect_uri is not used",
            )));
        }
        Ok(BoundClient {
            client_id: bound.client_id,
            redirect_uri: Cow::Owned(RegisteredUrl::Semantic(placeholder_redirect())),
        })
    }

    async fn negotiate<'b>(
        &self,
        client: BoundClient<'b>,
        scope: Option<Scope>,
    ) -> Result<PreGrant, RegistrarError> {
        let scope = match self.negotiate_scope(scope.as_ref()) {
            Ok(scope) => scope,
            Err(e) => return Err(self.fail(e)),
        };
        let scope = match scope.as_deref().map(parse_scope).transpose() {
            Ok(scope) => scope.unwrap_or_else(empty_scope),
            Err(e) => return Err(self.fail(e)),
        };
        Ok(PreGrant {
            client_id: client.client_id.into_owned(),
            redirect_uri: client.redirect_uri.into_owned(),
            scope,
        })
    }

    async fn check(
        &self,
        client_id: &str,
        passphrase: Option<&[u8]>,
    ) -> Result<(), RegistrarError> {
        // Every client is confidential: no passphrase, no access.
        let Some(secret) = passphrase.and_then(|p| std::str::from_utf8(p).ok()) else {
            return Err(self.fail(GrantError::invalid_client(
                "missing_client_secret",
                "client authentication failed",
            )));
        };
        match self.authenticate(client_id, secret).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }
}
