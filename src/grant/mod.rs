//! Grant flows: turn a presented credential into tokens, or into a principal. One
//! implementation serves every front door, so rotation, reuse detection, lifetimes and
//! metrics are written once. OAuth error codes are decided here ([`GrantError`]).
//!
//! - [`GrantService::exchange`]: API key (the `client_credentials` grant), access token
//!   (token exchange) or refresh token (`refresh_token` grant) for a new pair.
//! - [`GrantService::authenticate`]: the authentication chain for protected resources
//!   (SPEC §2 order: service accounts, then the token service, then API keys).

pub mod error;

use std::sync::Arc;
use std::time::Instant;

pub use error::GrantError;

use crate::api_keys::ApiKeyService;
use crate::credentials::Presented;
use crate::tokens::{self, jwt, refresh, IssuedPair, Subject, TokenService};

/// Which grant produced a pair (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    ApiKey,
    AccessToken,
    RefreshToken,
}

impl GrantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::AccessToken => "access_token",
            Self::RefreshToken => "refresh_token",
        }
    }
}

/// How a principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiKey,
    Jwt,
}

/// Who a credential belongs to.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The agent, when the credential is an agent's.
    pub agent_id: Option<String>,
    pub auth_method: AuthMethod,
    /// The API key id or the JWT ID.
    pub token_id: String,
}

pub struct GrantService {
    tokens: Arc<TokenService>,
    api_keys: Arc<ApiKeyService>,
}

fn record_failure(e: &GrantError) {
    metrics::counter!("fleetauth_auth_failures_total", "reason" => e.reason()).increment(1);
}

impl GrantService {
    pub fn new(tokens: Arc<TokenService>, api_keys: Arc<ApiKeyService>) -> Self {
        Self { tokens, api_keys }
    }

    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// Trades a credential for a new access/refresh pair.
    pub async fn exchange(&self, presented: &Presented) -> Result<IssuedPair, GrantError> {
        let started = Instant::now();
        let (kind, result) = match presented {
            Presented::ApiKey { id, secret } | Presented::Basic { id, secret } => {
                (GrantKind::ApiKey, self.exchange_api_key(id, secret).await)
            }
            Presented::Bearer(token) => match refresh::parse(token) {
                Some(parsed) => (
                    GrantKind::RefreshToken,
                    self.exchange_refresh(&parsed).await,
                ),
                None => (
                    GrantKind::AccessToken,
                    self.exchange_access_token(token).await,
                ),
            },
        };
        match &result {
            Ok(_) => {
                let grant = kind.as_str();
                metrics::counter!("fleetauth_tokens_issued_total", "grant" => grant, "kind" => "access").increment(1);
                metrics::counter!("fleetauth_tokens_issued_total", "grant" => grant, "kind" => "refresh").increment(1);
                metrics::histogram!("fleetauth_token_issue_seconds", "grant" => grant)
                    .record(started.elapsed().as_secs_f64());
            }
            Err(e) => record_failure(e),
        }
        result
    }

    async fn exchange_api_key(&self, id: &str, secret: &str) -> Result<IssuedPair, GrantError> {
        let key = self.api_keys.verify(id, secret).await?;
        let agent_id = key
            .agent_id
            .as_deref()
            .ok_or_else(|| GrantError::InvalidClient {
                reason: "api_key_not_an_agent",
                description: "the API key does not belong to an agent".into(),
            })?;
        let subject = Subject {
            agent_id,
            client_id: &key.id,
        };
        Ok(self
            .tokens
            .exchange(subject, tokens::Presented::ApiKey)
            .await?)
    }

    async fn exchange_refresh(
        &self,
        parsed: &refresh::PresentedRefresh,
    ) -> Result<IssuedPair, GrantError> {
        let subject = Subject {
            agent_id: &parsed.agent_id,
            client_id: &parsed.client_id,
        };
        let presented = tokens::Presented::RefreshToken { hash: &parsed.hash };
        Ok(self.tokens.exchange(subject, presented).await?)
    }

    async fn exchange_access_token(&self, token: &str) -> Result<IssuedPair, GrantError> {
        if !jwt::looks_like_jwt(token) {
            return Err(GrantError::invalid_grant(
                "unknown_token",
                "the token is neither a JWT nor a refresh token",
            ));
        }
        let claims = self.tokens.verify_access(token).await?;
        let subject = Subject {
            agent_id: &claims.sub,
            client_id: &claims.client_id,
        };
        let presented = tokens::Presented::AccessToken { jti: &claims.jti };
        Ok(self.tokens.exchange(subject, presented).await?)
    }

    /// Says who a credential is, for protected resources. A refresh token is not
    /// accepted here (only token endpoints take it).
    pub async fn authenticate(&self, presented: &Presented) -> Result<Principal, GrantError> {
        let result = self.authenticate_inner(presented).await;
        if let Err(e) = &result {
            record_failure(e);
        }
        result
    }

    async fn authenticate_inner(&self, presented: &Presented) -> Result<Principal, GrantError> {
        match presented {
            Presented::ApiKey { id, secret } | Presented::Basic { id, secret } => {
                let key = self.api_keys.verify(id, secret).await?;
                Ok(Principal {
                    agent_id: key.agent_id,
                    auth_method: AuthMethod::ApiKey,
                    token_id: key.id,
                })
            }
            Presented::Bearer(token) if jwt::looks_like_jwt(token) => {
                let claims = self.tokens.verify_access(token).await?;
                self.tokens.confirm_access(&claims).await?;
                Ok(Principal {
                    agent_id: Some(claims.sub),
                    auth_method: AuthMethod::Jwt,
                    token_id: claims.jti,
                })
            }
            Presented::Bearer(token) if refresh::parse(token).is_some() => {
                Err(GrantError::invalid_grant(
                    "refresh_token_on_resource",
                    "a refresh token is accepted only by token endpoints",
                ))
            }
            Presented::Bearer(_) => Err(GrantError::invalid_grant(
                "unknown_token",
                "the bearer token is not valid",
            )),
        }
    }
}
