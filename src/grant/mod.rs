//! Grant flows: turn a presented credential into tokens, or into a principal. One
//! implementation serves every front door, so rotation, reuse detection, lifetimes and
//! metrics are written once. OAuth error codes are decided here ([`GrantError`]).
//!
//! - [`GrantService::exchange`]: the Fleet API's grant: an API key (the
//!   `client_credentials` grant), an access token (token exchange) or a refresh token
//!   (`refresh_token` grant) for a new pair.
//! - [`GrantService::token`]: the OAuth2 token endpoint (RFC 6749 §3.2), one module per
//!   grant type ([`client_credentials`], [`refresh`], [`token_exchange`]); the rules they
//!   apply are the Fleet API's, through the same token-service calls.
//! - [`GrantService::introspect`] and [`GrantService::revoke`]: RFC 7662 and RFC 7009
//!   ([`introspection`]).
//! - [`GrantService::jwt_login`]: the Vault-compatible JWT auth method's login
//!   ([`external_jwt`]); the same checks back token exchange of external JWTs.
//!
//! oxide-auth supplies the primitives and request checks: [`registrar::ApiKeyRegistrar`]
//! and [`issuer::JwtIssuer`] implement its async `Registrar` and `Issuer` over our
//! services, and the `client_credentials` and `refresh_token` grants run its state
//! machines. The steps are executed here rather than by oxide-auth-async's endpoint
//! flows, so that every refusal keeps its RFC 6749 code and its reason (see
//! docs/architecture.md).

pub mod access;
pub mod client_credentials;
pub mod dispatch;
mod dpop;
mod enrolled;
pub mod error;
pub mod external_jwt;
pub mod introspection;
pub mod issuer;
pub mod policy;
pub mod refresh;
pub mod registrar;
pub mod request;
pub mod token_exchange;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub use dpop::{Binding, DpopPolicy, DpopRequest};
pub use enrolled::EnrollmentBinding;
pub use error::GrantError;

use crate::api_keys::ApiKeyService;
use crate::config::{OAuthSettings, SigningAlgorithm};
use crate::credentials::Presented;
use crate::telemetry::metrics::{self, Credential, Endpoint, Grant, Issuance};
use crate::tokens::{self, jwt, AccessClaims, IssuedPair, TokenService};
use crate::vault::{JwtAuth, LoginAttempt};
use access::Check;
pub use dispatch::{GrantRequest, Granted};
pub use external_jwt::{LoggedIn, LoginError};
pub use introspection::Introspection;
pub use policy::{FamilyOwner, IssuancePolicy, Issued};
use registrar::ApiKeyRegistrar;
pub use request::{ClientAuthMethod, ClientCredentials, Params, TokenRequest};

/// A successful answer of the OAuth2 token endpoint (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Clone, serde::Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

impl From<Granted> for TokenResponse {
    fn from(granted: Granted) -> Self {
        let Granted {
            issued,
            issued_token_type,
        } = granted;
        Self {
            token_type: issued.token_type(),
            access_token: issued.access_token,
            expires_in: issued.expires_in,
            refresh_token: issued.refresh_token,
            scope: issued.scope,
            issued_token_type,
        }
    }
}

/// What the authorization server metadata (RFC 8414) says about the grants; the HTTP
/// layer adds the endpoint URLs.
#[derive(Debug, Clone)]
pub struct GrantMetadata {
    pub issuer: String,
    pub grant_types: Vec<&'static str>,
    pub client_auth_methods: Vec<&'static str>,
    pub scopes: Vec<String>,
    pub signing_algorithms: Vec<SigningAlgorithm>,
    /// The DPoP proof algorithms accepted (RFC 9449 §5.1); empty without DPoP.
    pub dpop_algorithms: Vec<&'static str>,
}

pub struct GrantService {
    tokens: Arc<TokenService>,
    api_keys: Arc<ApiKeyService>,
    oauth: OAuthSettings,
    /// The Vault-compatible JWT auth method, when wired in (its login, and the external
    /// JWTs of token exchange).
    jwt_auth: Option<Arc<JwtAuth>>,
    /// DPoP proofs (RFC 9449), when wired in; without, a proof is refused.
    dpop: DpopPolicy,
}

/// A verified access token looked up by its holder (Vault's `lookup-self`), which
/// counts as a use.
#[derive(Debug, Clone)]
pub struct TokenLookup {
    pub claims: AccessClaims,
    /// Uses left after this one, for a use-limited token.
    pub uses_left: Option<u32>,
}

pub(crate) fn record_failure(e: &GrantError) {
    metrics::auth_failure(e.failure_reason(), e.reason());
}

impl GrantService {
    pub fn new(tokens: Arc<TokenService>, api_keys: Arc<ApiKeyService>) -> Self {
        Self {
            tokens,
            api_keys,
            oauth: OAuthSettings::default(),
            jwt_auth: None,
            dpop: DpopPolicy::default(),
        }
    }

    /// Wires in DPoP (RFC 9449) proofs at the token endpoints and protected resources.
    pub fn with_dpop(mut self, dpop: DpopPolicy) -> Self {
        self.dpop = dpop;
        self
    }

    /// The nonce for `DPoP-Nonce` on successful answers, when nonces are required.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.dpop.nonce()
    }

    /// Wires in the Vault-compatible JWT auth method: its login, and its validator of
    /// external JWTs in token exchange (asked after ours).
    pub fn with_jwt_auth(mut self, auth: Arc<JwtAuth>) -> Self {
        self.jwt_auth = Some(auth);
        self
    }

    /// Sets the OAuth2 token endpoint's policy (default: no scopes, no refresh tokens
    /// for non-agent clients).
    pub fn with_oauth(mut self, oauth: OAuthSettings) -> Self {
        self.oauth = oauth;
        self
    }

    fn registrar(&self) -> ApiKeyRegistrar<'_> {
        ApiKeyRegistrar::new(&self.api_keys, &self.oauth.scopes)
    }

    /// The OAuth2 token endpoint: dispatches on `grant_type` (RFC 6749 §4.4, §6;
    /// RFC 8693).
    pub async fn token(&self, request: &TokenRequest) -> Result<TokenResponse, GrantError> {
        self.token_with_dpop(request, &DpopRequest::NONE).await
    }

    /// [`token`](Self::token) for a request that may carry a DPoP proof: the tokens are
    /// bound to its key ([`Binding`]).
    pub async fn token_with_dpop(
        &self,
        request: &TokenRequest,
        dpop: &DpopRequest<'_>,
    ) -> Result<TokenResponse, GrantError> {
        let grant = match request.params.require("grant_type") {
            Ok(client_credentials::GRANT_TYPE) => GrantRequest::OAuthClientCredentials(request),
            Ok(refresh::GRANT_TYPE) => GrantRequest::OAuthRefreshToken(request),
            Ok(token_exchange::GRANT_TYPE) => GrantRequest::OAuthTokenExchange(request),
            Ok(other) => {
                let e = GrantError::UnsupportedGrantType {
                    reason: "unsupported_grant_type",
                    description: format!(
                        "the grant_type {other:?} is not supported; supported: {}",
                        Self::GRANT_TYPES.join(", ")
                    ),
                };
                record_failure(&e);
                return Err(e);
            }
            Err(e) => {
                record_failure(&e);
                return Err(e);
            }
        };
        let granted = self.grant(Endpoint::OAuth, grant, dpop).await?;
        Ok(TokenResponse::from(granted))
    }

    /// `POST /v1/auth/jwt/login`: an external JWT, checked by a role of the JWT auth
    /// method, for an access token of this server.
    pub async fn jwt_login(
        &self,
        role: Option<&str>,
        jwt: &str,
        remote_addr: Option<IpAddr>,
    ) -> Result<LoggedIn, LoginError> {
        let started = Instant::now();
        let result = match &self.jwt_auth {
            Some(auth) => {
                let attempt = LoginAttempt {
                    role,
                    jwt,
                    remote_addr,
                };
                external_jwt::login(auth, &self.policy(), attempt).await
            }
            None => Err(LoginError::Refused(crate::vault::VaultError::no_role(
                crate::vault::NoRole::NotConfigured,
                "could not load configuration",
            ))),
        };
        match &result {
            Ok(_) => metrics::tokens_issued(
                Endpoint::Vault,
                Issuance {
                    grant: Grant::JwtLogin,
                    credential: Credential::ExternalJwt,
                },
                false,
                started,
            ),
            Err(e) => metrics::auth_failure(e.failure_reason(), e.reason()),
        }
        result
    }

    /// A protected resource's view of one of our access tokens, presented by its
    /// holder: validated as by [`authenticate`](Self::authenticate) (a use: it promotes
    /// a pending pair, and takes one use of a use-limited token).
    pub async fn lookup_self(&self, token: &str) -> Result<TokenLookup, GrantError> {
        let result = async {
            if !jwt::looks_like_jwt(token) {
                return Err(GrantError::invalid_grant(
                    "unknown_token",
                    "the token is not a JWT access token",
                ));
            }
            let policy = self.policy();
            let access = policy.access();
            let verified = access.verify(token).await?;
            // No DPoP proofs here: a DPoP-bound token is refused before it counts as used.
            self.dpop
                .check_presentation(&verified.claims, token, &DpopRequest::NONE)?;
            access.confirm(&verified, Check::Use).await?;
            let claims = verified.claims;
            let uses_left = match claims.max_uses {
                // The use just taken is counted; a look says what is left.
                Some(_) => self
                    .tokens
                    .check_external(&claims)
                    .await
                    .ok()
                    .flatten()
                    .or(Some(0)),
                None => None,
            };
            Ok(TokenLookup { claims, uses_left })
        }
        .await;
        if let Err(e) = &result {
            record_failure(e);
        }
        result
    }

    /// The grant types of the token endpoint.
    pub const GRANT_TYPES: [&'static str; 3] = [
        client_credentials::GRANT_TYPE,
        refresh::GRANT_TYPE,
        token_exchange::GRANT_TYPE,
    ];

    /// RFC 7662 introspection, for an authenticated client.
    pub async fn introspect(&self, request: &TokenRequest) -> Result<Introspection, GrantError> {
        let result =
            introspection::introspect(&self.registrar(), &self.policy(), &self.tokens, request)
                .await;
        if let Err(e) = &result {
            record_failure(e);
        }
        result
    }

    /// RFC 7009 revocation, for an authenticated client.
    pub async fn revoke(&self, request: &TokenRequest) -> Result<(), GrantError> {
        let result =
            introspection::revoke(&self.registrar(), &self.policy(), &self.tokens, request).await;
        if let Err(e) = &result {
            record_failure(e);
        }
        result
    }

    /// What RFC 8414 metadata says about the grants (only what is true).
    pub fn metadata(&self) -> GrantMetadata {
        GrantMetadata {
            issuer: self.tokens.issuer().to_string(),
            grant_types: Self::GRANT_TYPES.to_vec(),
            client_auth_methods: vec!["client_secret_basic", "client_secret_post"],
            scopes: self.oauth.scopes.clone(),
            signing_algorithms: self.tokens.algorithms(),
            dpop_algorithms: if self.dpop.enabled() {
                tokens::dpop::ALGORITHMS.to_vec()
            } else {
                Vec::new()
            },
        }
    }

    /// The Fleet door: trades a credential for a new access/refresh pair.
    pub async fn exchange(&self, presented: &Presented) -> Result<IssuedPair, GrantError> {
        self.exchange_with_dpop(presented, &DpopRequest::NONE).await
    }

    /// [`exchange`](Self::exchange) for a request that may carry a DPoP proof: the pair
    /// is bound to its key ([`Binding`]).
    pub async fn exchange_with_dpop(
        &self,
        presented: &Presented,
        dpop: &DpopRequest<'_>,
    ) -> Result<IssuedPair, GrantError> {
        let grant = match presented {
            Presented::ApiKey { id, secret } | Presented::Basic { id, secret } => {
                GrantRequest::AgentApiKey { id, secret }
            }
            Presented::Bearer(token) => GrantRequest::BearerToken(token),
        };
        self.grant(Endpoint::Fleet, grant, dpop).await?.into_pair()
    }

    /// Trades a value presented *as a refresh token* (the Fleet API's JSON body
    /// `{"refresh_token": ...}`) for a new pair. Only a refresh token is accepted there:
    /// an access token, or anything else, is `invalid_grant` (token-type confusion,
    /// RFC 8725 §2.8), as at `/oauth/token`.
    pub async fn exchange_refresh_token(&self, token: &str) -> Result<IssuedPair, GrantError> {
        self.exchange_refresh_token_with_dpop(token, &DpopRequest::NONE)
            .await
    }

    /// [`exchange_refresh_token`](Self::exchange_refresh_token) for a request that may
    /// carry a DPoP proof (a bound refresh token needs one of its key).
    pub async fn exchange_refresh_token_with_dpop(
        &self,
        token: &str,
        dpop: &DpopRequest<'_>,
    ) -> Result<IssuedPair, GrantError> {
        self.grant(Endpoint::Fleet, GrantRequest::RefreshToken(token), dpop)
            .await?
            .into_pair()
    }
}
