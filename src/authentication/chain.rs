//! The authentication chain: who a presented credential is, for every protected API
//! (the Fleet API's resources and the Elasticsearch-compatible security APIs).
//!
//! Order (SPEC §2): service accounts, then the token service, then API keys. What
//! that means observably:
//!
//! - `Authorization: Bearer <value>`: a value in the service-token format (Elasticsearch's
//!   `AAEAA…`) is decided by the service accounts alone, and never tried as anything
//!   else; otherwise a JWT is decided by the token service (an agent's or client's
//!   access token, or a user's token from `POST /_security/oauth2/token`); a refresh
//!   token is refused (it is accepted by token endpoints only). The formats do not
//!   overlap, so no value is ever tried twice.
//! - `Authorization: ApiKey <base64(id:key)>`: the API key service.
//! - `Authorization: Basic <base64(name:secret)>`: Elasticsearch reads Basic as a
//!   username and password, our OAuth2 clients send an API key id and key. The rule:
//!   if a user named `name` exists, the credential is that user's password (and only
//!   that); otherwise it is an API key. So an API key whose id equals a username can
//!   be used with `ApiKey` but not with `Basic` (key ids are 20 random characters,
//!   which usernames do not normally collide with). The OAuth2 endpoints' client
//!   authentication is unchanged: there Basic is always an API key.

use serde_json::json;

use super::{AuthMethod, Authenticator, Principal};
use crate::credentials::Presented;
use crate::grant::access::{AccessTokens, Check, VerifiedAccess};
use crate::grant::IssuancePolicy;
use crate::grant::{record_failure, DpopRequest, GrantError};
use crate::identity::roles::Resolved;
use crate::identity::service_accounts::{self, ServiceTokenError};
use crate::identity::users::{self, UserError};
use crate::identity::{AuthenticationType, Identity, Privileges, Realm};
use crate::store::{ApiKeyRecord, StoreError, UserRecord};
use crate::tokens::kind::TokenKind;
use crate::tokens::{self, jwt};

impl From<UserError> for GrantError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Store(s) => s.into(),
            UserError::Secret(s) => s.into(),
            // One message for every failure, so the answer does not tell which users exist.
            other => Self::InvalidClient {
                reason: other.reason(),
                description: "invalid username or password".into(),
            },
        }
    }
}

impl From<ServiceTokenError> for GrantError {
    fn from(e: ServiceTokenError) -> Self {
        match e {
            ServiceTokenError::Store(s) => s.into(),
            ServiceTokenError::Secret(s) => s.into(),
            other => Self::InvalidGrant {
                reason: other.reason(),
                description: "invalid service token".into(),
            },
        }
    }
}

fn store_error(e: StoreError) -> GrantError {
    e.into()
}

impl Authenticator {
    /// The checks of presented access tokens, under the OAuth2 policy.
    pub fn access(&self) -> AccessTokens<'_> {
        IssuancePolicy::new(&self.tokens, &self.api_keys, &self.oauth).access()
    }

    /// Says who a credential is, for protected resources. A refresh token is not
    /// accepted here (only token endpoints take it).
    /// A DPoP-bound access token is refused here: resources that accept those call
    /// [`authenticate_with_dpop`](Self::authenticate_with_dpop).
    pub async fn authenticate(&self, presented: &Presented) -> Result<Principal, GrantError> {
        self.authenticate_with_dpop(presented, &DpopRequest::NONE)
            .await
    }

    /// [`authenticate`](Self::authenticate) for a request that may carry a DPoP proof: a
    /// bound access token is accepted with `Authorization: DPoP` and a fresh proof of
    /// its key (checked before the token counts as used), RFC 9449 §7.
    pub async fn authenticate_with_dpop(
        &self,
        presented: &Presented,
        dpop: &DpopRequest<'_>,
    ) -> Result<Principal, GrantError> {
        let result = self.authenticate_inner(presented, dpop).await;
        if let Err(e) = &result {
            record_failure(e);
        }
        result
    }

    async fn authenticate_inner(
        &self,
        presented: &Presented,
        dpop: &DpopRequest<'_>,
    ) -> Result<Principal, GrantError> {
        if dpop.dpop_scheme
            && !matches!(presented, Presented::Bearer(token) if jwt::looks_like_jwt(token))
        {
            return Err(GrantError::invalid_request(
                "dpop_scheme_not_a_token",
                "Authorization: DPoP carries an access token",
            ));
        }
        match presented {
            Presented::ApiKey { id, secret } => self.api_key_principal(id, secret).await,
            Presented::Basic { id, secret } => {
                let user = self
                    .identity
                    .users
                    .get(id)
                    .await
                    .map_err(GrantError::from)?;
                match user {
                    Some(_) => self.password_principal(id, secret).await,
                    None => self.api_key_principal(id, secret).await,
                }
            }
            Presented::Bearer(token) => {
                if let Some(parsed) = service_accounts::parse(token) {
                    return self.service_token_principal(&parsed).await;
                }
                if jwt::looks_like_jwt(token) {
                    let access = self.access();
                    let verified = access.verify(token).await?;
                    self.dpop
                        .check_presentation(&verified.claims, token, dpop)?;
                    access.confirm(&verified, Check::Use).await?;
                    return self.access_token_principal(verified).await;
                }
                if tokens::refresh::parse(token).is_some() {
                    return Err(GrantError::invalid_grant(
                        "refresh_token_on_resource",
                        "a refresh token is accepted only by token endpoints",
                    ));
                }
                Err(GrantError::invalid_grant(
                    "unknown_token",
                    "the bearer token is not valid",
                ))
            }
        }
    }

    async fn api_key_principal(&self, id: &str, secret: &str) -> Result<Principal, GrantError> {
        let key = self.api_keys.verify(id, secret).await?;
        Ok(Principal {
            agent_id: key.agent_id.clone(),
            auth_method: AuthMethod::ApiKey,
            token_id: key.id.clone(),
            identity: api_key_identity(&key),
        })
    }

    async fn password_principal(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Principal, GrantError> {
        let user = self.identity.users.authenticate(username, password).await?;
        let identity = self.user_identity(&user, AuthenticationType::Realm).await?;
        Ok(Principal {
            agent_id: None,
            auth_method: AuthMethod::Password,
            token_id: user.username,
            identity,
        })
    }

    async fn service_token_principal(
        &self,
        parsed: &service_accounts::ParsedToken,
    ) -> Result<Principal, GrantError> {
        let (account, record) = self.identity.service_accounts.verify(parsed).await?;
        let resolved = account.resolved();
        let identity = Identity {
            username: account.principal.to_string(),
            roles: Vec::new(),
            full_name: Some(format!("Service account - {}", account.principal)),
            email: None,
            metadata: json!({ "_elastic_service_account": true }),
            enabled: true,
            authentication_realm: Realm::service_account(),
            lookup_realm: Realm::service_account(),
            authentication_type: AuthenticationType::Token,
            api_key: None,
            service_token: Some(record.name.clone()),
            privileges: resolved.privileges,
            role_descriptors: serde_json::Value::Object(resolved.descriptors),
        };
        Ok(Principal {
            agent_id: None,
            auth_method: AuthMethod::ServiceToken,
            token_id: record.name,
            identity,
        })
    }

    async fn access_token_principal(
        &self,
        VerifiedAccess { claims, kind }: VerifiedAccess,
    ) -> Result<Principal, GrantError> {
        if kind == TokenKind::Family {
            // A user's token (the token API): the user must still exist and be enabled;
            // its privileges are its roles' now.
            let user = self
                .identity
                .users
                .get(&claims.sub)
                .await
                .map_err(GrantError::from)?
                .filter(|u| u.enabled)
                .ok_or_else(|| {
                    GrantError::invalid_grant(
                        "user_gone",
                        "the token's user no longer exists or is disabled",
                    )
                })?;
            let identity = self.user_identity(&user, AuthenticationType::Token).await?;
            return Ok(Principal {
                agent_id: None,
                auth_method: AuthMethod::Jwt,
                token_id: claims.jti,
                identity,
            });
        }
        // A client's token for itself (RFC 9068 §2.2) is not an agent's, nor is the
        // token of a subject admitted by the Vault JWT auth method.
        let agent_id = kind.agent(&claims.sub).map(str::to_string);
        let identity = Identity {
            username: claims.sub.clone(),
            roles: Vec::new(),
            full_name: None,
            email: None,
            metadata: json!({ "client_id": claims.client_id }),
            enabled: true,
            authentication_realm: Realm::fleetauth(),
            lookup_realm: Realm::fleetauth(),
            authentication_type: AuthenticationType::Token,
            api_key: None,
            service_token: None,
            privileges: Privileges::NONE,
            role_descriptors: json!({}),
        };
        Ok(Principal {
            agent_id,
            auth_method: AuthMethod::Jwt,
            token_id: claims.jti,
            identity,
        })
    }

    /// A user's identity, with the privileges of its roles as they are now.
    pub async fn user_identity(
        &self,
        user: &UserRecord,
        authentication_type: AuthenticationType,
    ) -> Result<Identity, GrantError> {
        let resolved = self
            .identity
            .roles
            .resolve(&user.roles)
            .await
            .map_err(|e| match e {
                crate::identity::roles::RoleError::Store(s) => store_error(s),
                other => GrantError::Internal(other.to_string()),
            })?;
        let realm = users::realm_of(user);
        Ok(Identity {
            username: user.username.clone(),
            roles: user.roles.clone(),
            full_name: user.full_name.clone(),
            email: user.email.clone(),
            metadata: user.metadata.clone(),
            enabled: user.enabled,
            authentication_realm: realm.clone(),
            lookup_realm: realm,
            authentication_type,
            api_key: None,
            service_token: None,
            privileges: resolved.privileges,
            role_descriptors: serde_json::Value::Object(resolved.descriptors),
        })
    }
}

/// What an API key is and may do: a key created through the API key API is its
/// owner's, limited by the owner's privileges at creation and by its own role
/// descriptors (when it has any); a key made by the CLI (an agent's, or a plain OAuth2
/// client's) has no cluster privilege.
fn api_key_identity(key: &ApiKeyRecord) -> Identity {
    let (username, privileges, metadata) = match &key.owner {
        Some(owner) => (
            owner.username.clone(),
            effective_privileges(key),
            owner.metadata.clone(),
        ),
        None => (
            key.agent_id.clone().unwrap_or_else(|| key.id.clone()),
            Privileges::NONE,
            json!({}),
        ),
    };
    Identity {
        username,
        roles: Vec::new(),
        full_name: None,
        email: None,
        metadata,
        enabled: true,
        authentication_realm: Realm::api_key(),
        lookup_realm: Realm::api_key(),
        authentication_type: AuthenticationType::ApiKey,
        api_key: Some((key.id.clone(), key.name.clone())),
        service_token: None,
        privileges,
        role_descriptors: json!({}),
    }
}

/// The intersection of a key's own role descriptors (all, when it has none) and every
/// set of descriptors it is limited by.
fn effective_privileges(key: &ApiKeyRecord) -> Privileges {
    let Some(owner) = &key.owner else {
        return Privileges::NONE;
    };
    let own = match owner.role_descriptors.as_object() {
        Some(d) if !d.is_empty() => Resolved::from_json(&owner.role_descriptors).privileges,
        _ => Privileges::ALL,
    };
    let limits = owner.limited_by.as_array().cloned().unwrap_or_default();
    if limits.is_empty() {
        return Privileges::NONE;
    }
    limits
        .iter()
        .map(|set| Resolved::from_json(set).privileges)
        .fold(own, Privileges::intersect)
}
