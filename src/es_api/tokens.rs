//! The token API (`POST|DELETE /_security/oauth2/token`): the `password`,
//! `client_credentials` and `refresh_token` grants, each starting or rotating a token
//! family, and invalidation by token, refresh token, username or realm.

use super::{RequestBody, SecurityApi, SecurityError};
use crate::authentication::{AuthMethod, Principal};
use crate::grant::access::VerifiedAccess;
use crate::grant::{DpopRequest, FamilyOwner, GrantRequest, Issued};
use crate::identity::users::UserError;
use crate::identity::{Action, AuthenticationType, Identity};
use crate::store::UserRecord;
use crate::telemetry::metrics::{self, Credential, Endpoint};
use crate::tokens::kind::TokenKind;
use crate::tokens::{self, refresh, TokenError};

/// `POST /_security/oauth2/token`: the grant asked for.
pub struct CreateTokenRequest {
    pub grant_type: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub kerberos_ticket: Option<String>,
}

/// Tokens the token API issued, and to whom (the HTTP layer renders its answer).
pub struct CreatedToken {
    pub issued: Issued,
    /// The user the tokens belong to, as `_authenticate` describes it.
    pub user: Identity,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreatedToken([redacted])")
    }
}

/// `DELETE /_security/oauth2/token`: what to invalidate.
pub struct InvalidateTokenRequest {
    pub token: Option<String>,
    pub refresh_token: Option<String>,
    pub realm_name: Option<String>,
    pub username: Option<String>,
}

/// How many tokens an invalidation reached.
#[derive(Debug, Default)]
pub struct TokensInvalidated {
    pub invalidated: usize,
    pub previously_invalidated: usize,
}

impl SecurityApi {
    /// `POST /_security/oauth2/token`: the request is checked and its user
    /// authenticated here, in Elasticsearch's terms; the tokens come from the one grant
    /// dispatch ([`GrantService::grant`]), which records the issuance.
    pub async fn create_token(
        &self,
        principal: &Principal,
        request: RequestBody<CreateTokenRequest>,
    ) -> Result<CreatedToken, SecurityError> {
        Self::authorize(principal, Action::CreateToken)?;
        let request = request.take()?;
        match request.grant_type.as_deref().unwrap_or_default() {
            "password" => self.password_grant(request).await,
            "client_credentials" => self.client_credentials_grant(principal, request).await,
            "refresh_token" => self.refresh_grant(request).await,
            "" => Err(SecurityError::validation(&["grant_type is missing".into()])),
            other => Err(SecurityError::validation(&[format!(
                "grant_type [{other}] is not supported; supported: password, client_credentials, refresh_token"
            )])),
        }
    }

    async fn password_grant(
        &self,
        request: CreateTokenRequest,
    ) -> Result<CreatedToken, SecurityError> {
        let identity = self
            .password_user(request)
            .await
            .inspect_err(record_refusal)?;
        let owner = family_owner(&identity);
        let issued = self.grant(GrantRequest::UserPassword(owner)).await?;
        Ok(created(issued, token_authentication(&identity)))
    }

    /// The user of a `password` grant, authenticated by its password.
    async fn password_user(&self, request: CreateTokenRequest) -> Result<Identity, SecurityError> {
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
        Ok(self
            .authenticator
            .user_identity(&user, AuthenticationType::Realm)
            .await?)
    }

    async fn client_credentials_grant(
        &self,
        principal: &Principal,
        request: CreateTokenRequest,
    ) -> Result<CreatedToken, SecurityError> {
        let checked = if request.username.is_some()
            || request.password.is_some()
            || request.refresh_token.is_some()
        {
            Err(SecurityError::validation(&[
                "username, password and refresh_token are not supported with the client_credentials grant_type".into(),
            ]))
        } else if !principal.identity.is_user() {
            Err(SecurityError::illegal_argument(
                "the client_credentials grant is available to users only, not to API keys, service accounts or agents",
            ))
        } else {
            Ok(())
        };
        checked.inspect_err(record_refusal)?;
        let identity = &principal.identity;
        let request = GrantRequest::UserClientCredentials {
            owner: family_owner(identity),
            credential: principal_credential(principal),
        };
        let issued = self.grant(request).await?;
        Ok(created(issued, token_authentication(identity)))
    }

    async fn refresh_grant(
        &self,
        request: CreateTokenRequest,
    ) -> Result<CreatedToken, SecurityError> {
        let (parsed, user) = self
            .refreshing_user(request)
            .await
            .inspect_err(record_refusal)?;
        let issued = self.grant(GrantRequest::FamilyRefresh(&parsed)).await?;
        let identity = self
            .authenticator
            .user_identity(&user, AuthenticationType::Token)
            .await?;
        Ok(created(issued, identity))
    }

    /// A token family's refresh token, and its user, who must still be enabled.
    async fn refreshing_user(
        &self,
        request: CreateTokenRequest,
    ) -> Result<(refresh::ParsedRefresh, UserRecord), SecurityError> {
        let token = request
            .refresh_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| SecurityError::validation(&["refresh_token is missing".into()]))?;
        let access = self.authenticator.access();
        let parsed = refresh::parse(&token)
            .filter(|p| access.kind_of_refresh(p) == TokenKind::Family)
            .ok_or_else(|| SecurityError::invalid_grant("could not refresh the requested token"))?;
        let user = self
            .identity
            .users
            .get(&parsed.agent_id)
            .await?
            .filter(|u| u.enabled)
            .ok_or_else(|| SecurityError::invalid_grant("could not refresh the requested token"))?;
        Ok((parsed, user))
    }

    /// The one grant dispatch, from the token API's door.
    async fn grant(&self, request: GrantRequest<'_>) -> Result<Issued, SecurityError> {
        Ok(self
            .grants
            .grant(Endpoint::Elasticsearch, request, &DpopRequest::NONE)
            .await?
            .issued)
    }

    /// `DELETE /_security/oauth2/token`. `Err(NotFound)` carries nothing: the HTTP layer
    /// answers 404 with the counts (all zero), as Elasticsearch does.
    pub async fn invalidate_tokens(
        &self,
        principal: &Principal,
        request: RequestBody<InvalidateTokenRequest>,
    ) -> Result<TokensInvalidated, SecurityError> {
        Self::authorize(principal, Action::InvalidateToken)?;
        let request = request.take()?;
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
                    result.invalidated = 1;
                } else if let Some(family) = &claims.sid {
                    if self.tokens.family(family).await?.is_some() {
                        result.previously_invalidated = 1;
                    }
                }
            }
        } else if let Some(token) = &request.refresh_token {
            let access = self.authenticator.access();
            let family_token =
                refresh::parse(token).filter(|p| access.kind_of_refresh(p) == TokenKind::Family);
            if let Some(parsed) = family_token {
                if self.tokens.revoke_refresh(&parsed).await? {
                    result.invalidated = 1;
                } else if let Some(family) = &parsed.family {
                    if self.tokens.family(family).await?.is_some() {
                        result.previously_invalidated = 1;
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
                    result.invalidated += 1;
                } else {
                    result.previously_invalidated += 1;
                }
            }
        }
        if result.invalidated + result.previously_invalidated == 0 {
            return Err(SecurityError::not_found(
                "no tokens were found to invalidate",
            ));
        }
        Ok(result)
    }
}

fn created(issued: Issued, user: Identity) -> CreatedToken {
    CreatedToken { issued, user }
}

/// The user of a new family's answer, authenticated by its realm.
fn token_authentication(identity: &Identity) -> Identity {
    Identity {
        authentication_type: AuthenticationType::Realm,
        ..identity.clone()
    }
}

fn family_owner(identity: &Identity) -> FamilyOwner<'_> {
    let realm = &identity.lookup_realm;
    FamilyOwner {
        username: &identity.username,
        realm: realm.name,
        realm_type: realm.kind,
    }
}

/// A refusal of the token API's own checks (the dispatch records its own).
fn record_refusal(e: &SecurityError) {
    metrics::auth_failure(e.failure_reason(), e.metric_reason());
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
