//! The token API (`POST|DELETE /_security/oauth2/token`): the `password`,
//! `client_credentials` and `refresh_token` grants, each starting or rotating a token
//! family, and invalidation by token, refresh token, username or realm.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::grant_to_security;
use super::{authenticate_json, read_body, SecurityApi, SecurityError};
use crate::authentication::{AuthMethod, Principal};
use crate::grant::access::VerifiedAccess;
use crate::identity::users::UserError;
use crate::identity::{Action, AuthenticationType, Identity};
use crate::telemetry::metrics::{self, Credential, Endpoint, Grant, Issuance};
use crate::tokens::kind::TokenKind;
use crate::tokens::{self, refresh, Subject, TokenError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub grant_type: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub kerberos_ticket: Option<String>,
}

/// A token as the token API answers.
#[derive(Serialize)]
pub struct CreatedToken {
    pub access_token: String,
    #[serde(rename = "type")]
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub authentication: Value,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreatedToken([redacted])")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateTokenRequest {
    pub token: Option<String>,
    pub refresh_token: Option<String>,
    pub realm_name: Option<String>,
    pub username: Option<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct TokensInvalidated {
    pub invalidated_tokens: usize,
    pub previously_invalidated_tokens: usize,
    pub error_count: usize,
    pub error_details: Vec<Value>,
}

impl SecurityApi {
    /// `POST /_security/oauth2/token`.
    pub async fn create_token(
        &self,
        principal: &Principal,
        body: Value,
    ) -> Result<CreatedToken, SecurityError> {
        Self::authorize(principal, Action::CreateToken)?;
        let request: CreateTokenRequest = read_body("token_request", body)?;
        let started = Instant::now();
        let grant_type = request.grant_type.clone().unwrap_or_default();
        let (how, result) = match grant_type.as_str() {
            "password" => (
                Issuance {
                    grant: Grant::Password,
                    credential: Credential::Password,
                },
                self.password_grant(request).await,
            ),
            "client_credentials" => (
                Issuance {
                    grant: Grant::ClientCredentials,
                    credential: principal_credential(principal),
                },
                self.client_credentials_grant(principal, request).await,
            ),
            "refresh_token" => (
                Issuance {
                    grant: Grant::RefreshToken,
                    credential: Credential::RefreshToken,
                },
                self.refresh_grant(request).await,
            ),
            "" => return Err(SecurityError::validation(&["grant_type is missing".into()])),
            other => {
                return Err(SecurityError::validation(&[format!(
                    "grant_type [{other}] is not supported; supported: password, client_credentials, refresh_token"
                )]))
            }
        };
        match &result {
            Ok(token) => metrics::tokens_issued(
                Endpoint::Elasticsearch,
                how,
                token.refresh_token.is_some(),
                started,
            ),
            Err(e) => metrics::auth_failure(e.failure_reason(), e.metric_reason()),
        }
        result
    }

    async fn password_grant(
        &self,
        request: CreateTokenRequest,
    ) -> Result<CreatedToken, SecurityError> {
        let mut problems = Vec::new();
        if request.username.as_deref().is_none_or(str::is_empty) {
            problems.push("username is missing".to_string());
        }
        if request.password.as_deref().is_none_or(str::is_empty) {
            problems.push("password is missing".to_string());
        }
        if request.refresh_token.is_some() {
            problems.push("refresh_token is not supported with the password grant_type".into());
        }
        if !problems.is_empty() {
            return Err(SecurityError::validation(&problems));
        }
        let (username, password) = (
            request.username.unwrap_or_default(),
            request.password.unwrap_or_default(),
        );
        let user = self
            .identity
            .users
            .authenticate(&username, &password)
            .await
            .map_err(|e| match e {
                UserError::Store(s) => SecurityError::from(s),
                UserError::Secret(s) => SecurityError::from(s),
                _ => SecurityError::unauthenticated(format!(
                    "unable to authenticate user [{username}] for action [{}]",
                    Action::CreateToken.name()
                )),
            })?;
        let identity = self
            .authenticator
            .user_identity(&user, AuthenticationType::Realm)
            .await
            .map_err(grant_to_security)?;
        self.start_family(&identity, true).await
    }

    async fn client_credentials_grant(
        &self,
        principal: &Principal,
        request: CreateTokenRequest,
    ) -> Result<CreatedToken, SecurityError> {
        if request.username.is_some()
            || request.password.is_some()
            || request.refresh_token.is_some()
        {
            return Err(SecurityError::validation(&[
                "username, password and refresh_token are not supported with the client_credentials grant_type".into(),
            ]));
        }
        if !principal.identity.is_user() {
            return Err(SecurityError::illegal_argument(
                "the client_credentials grant is available to users only, not to API keys, service accounts or agents",
            ));
        }
        self.start_family(&principal.identity, false).await
    }

    async fn refresh_grant(
        &self,
        request: CreateTokenRequest,
    ) -> Result<CreatedToken, SecurityError> {
        let token = request
            .refresh_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| SecurityError::validation(&["refresh_token is missing".into()]))?;
        self.refresh_family(&token).await
    }

    async fn start_family(
        &self,
        identity: &Identity,
        with_refresh: bool,
    ) -> Result<CreatedToken, SecurityError> {
        let realm = &identity.lookup_realm;
        let issued = self
            .tokens
            .issue_family(&identity.username, &realm.name, &realm.kind)
            .await?;
        tracing::info!(username = %identity.username, "token family started");
        let mut authentication = authenticate_json(identity);
        authentication["authentication_type"] = json!(AuthenticationType::Realm);
        Ok(CreatedToken {
            access_token: issued.pair.access_token,
            token_type: "Bearer",
            expires_in: issued.pair.expires_in,
            // client_credentials: no refresh token; the one minted with the pair is
            // never shown, so it can never be used.
            refresh_token: with_refresh.then_some(issued.pair.refresh_token),
            authentication,
        })
    }

    async fn refresh_family(&self, token: &str) -> Result<CreatedToken, SecurityError> {
        let access = self.authenticator.access();
        let parsed = refresh::parse(token)
            .filter(|p| access.kind_of_refresh(p) == TokenKind::Family)
            .ok_or_else(|| SecurityError::invalid_grant("could not refresh the requested token"))?;
        let user = self
            .identity
            .users
            .get(&parsed.agent_id)
            .await?
            .filter(|u| u.enabled)
            .ok_or_else(|| SecurityError::invalid_grant("could not refresh the requested token"))?;
        let subject = Subject {
            agent_id: &parsed.agent_id,
            client_id: &parsed.client_id,
            family: parsed.family.as_deref(),
            bound_key: None,
        };
        let pair = self
            .tokens
            .exchange_scoped(
                subject,
                None,
                tokens::Presented::RefreshToken { hash: &parsed.hash },
            )
            .await?;
        let identity = self
            .authenticator
            .user_identity(&user, AuthenticationType::Token)
            .await
            .map_err(grant_to_security)?;
        Ok(CreatedToken {
            access_token: pair.access_token,
            token_type: "Bearer",
            expires_in: pair.expires_in,
            refresh_token: Some(pair.refresh_token),
            authentication: authenticate_json(&identity),
        })
    }

    /// `DELETE /_security/oauth2/token`. `Err(NotFound)` carries nothing: the HTTP layer
    /// answers 404 with the counts (all zero), as Elasticsearch does.
    pub async fn invalidate_tokens(
        &self,
        principal: &Principal,
        body: Value,
    ) -> Result<TokensInvalidated, SecurityError> {
        Self::authorize(principal, Action::InvalidateToken)?;
        let request: InvalidateTokenRequest = read_body("invalidate_token_request", body)?;
        let by_token = request.token.is_some() || request.refresh_token.is_some();
        let by_owner = request.realm_name.is_some() || request.username.is_some();
        if request.token.is_some() && request.refresh_token.is_some() || by_token && by_owner {
            return Err(SecurityError::validation(&[
                "only one of [token, refresh_token] may be given, and not together with [realm_name, username]".into(),
            ]));
        }
        if !by_token && !by_owner {
            return Err(SecurityError::validation(&[
                "one of [token, refresh_token, realm_name, username] must be specified".into(),
            ]));
        }
        let mut result = TokensInvalidated::default();
        if let Some(token) = &request.token {
            let verified = if tokens::jwt::looks_like_jwt(token) {
                match self.authenticator.access().verify(token).await {
                    Ok(verified) => Some(verified),
                    Err(TokenError::Jwt(_)) => None,
                    Err(e) => return Err(e.into()),
                }
            } else {
                None
            };
            let family_token = verified.filter(|v| v.kind == TokenKind::Family);
            if let Some(VerifiedAccess { claims, .. }) = family_token {
                if self.tokens.revoke_access(&claims).await? {
                    result.invalidated_tokens = 1;
                } else if let Some(family) = &claims.sid {
                    if self.tokens.family(family).await?.is_some() {
                        result.previously_invalidated_tokens = 1;
                    }
                }
            }
        } else if let Some(token) = &request.refresh_token {
            let access = self.authenticator.access();
            let family_token =
                refresh::parse(token).filter(|p| access.kind_of_refresh(p) == TokenKind::Family);
            if let Some(parsed) = family_token {
                if self.tokens.revoke_refresh(&parsed).await? {
                    result.invalidated_tokens = 1;
                } else if let Some(family) = &parsed.family {
                    if self.tokens.family(family).await?.is_some() {
                        result.previously_invalidated_tokens = 1;
                    }
                }
            }
        } else {
            let families = self.tokens.families_of(request.username.as_deref()).await?;
            for family in families
                .iter()
                .filter(|f| request.realm_name.as_ref().is_none_or(|r| &f.realm == r))
            {
                if self.tokens.revoke_family(&family.family_id).await? {
                    result.invalidated_tokens += 1;
                } else {
                    result.previously_invalidated_tokens += 1;
                }
            }
        }
        if result.invalidated_tokens + result.previously_invalidated_tokens == 0 {
            return Err(SecurityError::not_found(
                "no tokens were found to invalidate",
            ));
        }
        Ok(result)
    }
}

/// What authenticated the caller of the token API's `client_credentials` grant.
fn principal_credential(principal: &Principal) -> Credential {
    match principal.auth_method {
        AuthMethod::ApiKey => Credential::ApiKey,
        AuthMethod::Jwt => Credential::AccessToken,
        AuthMethod::Password => Credential::Password,
        AuthMethod::ServiceToken => Credential::ServiceToken,
    }
}
