//! The flows of the Elasticsearch-compatible security APIs (SPEC §4): the token API
//! (`/_security/oauth2/token`), API keys, service-account tokens, users, roles and
//! `_authenticate`. Each flow authenticates through the one chain
//! ([`GrantService::authenticate`]), authorizes by cluster privilege
//! ([`crate::security::privileges`]), validates the request the way Elasticsearch does
//! and decides Elasticsearch's error type ([`SecurityError`]); HTTP statuses are the
//! HTTP layer's.
//!
//! The token API's tokens are this server's access and refresh tokens. Each `password`
//! or `client_credentials` grant starts its own *token family* (a record keyed by a
//! fresh id, owned by the user), so a user may hold any number of independent tokens;
//! a family rotates with the rules of SPEC §3 through the same token-service calls as
//! an agent (its refresh token is single use, up to the lost-response retry that SPEC
//! §3 allows). Invalidation by `username` or `realm_name` lists the user's families.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{record_issued, GrantError, GrantKind, GrantService, Principal};
use crate::api_keys::ApiKeyService;
use crate::clock::UnixTime;
use crate::credentials::Presented;
use crate::security::roles::{check_role_name, RoleDescriptor, RoleError};
use crate::security::service_accounts::ServiceTokenError;
use crate::security::users::{PutUser, UserError};
use crate::security::{Action, AuthenticationType, Identity, Realm, ServiceAccount};
use crate::store::{ApiKeyFilter, ApiKeyOwner, ApiKeyRecord, StoreError};
use crate::tokens::{self, refresh, Subject, TokenError, TokenService};

/// Elasticsearch's error types, as the security APIs use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityErrorKind {
    /// No or bad credentials (`security_exception`, 401).
    Unauthenticated,
    /// Authenticated but not allowed (`security_exception`, 403).
    Forbidden,
    /// The token API's `invalid_grant` (`security_exception`, 400).
    InvalidGrant,
    /// A request that fails validation (`action_request_validation_exception`).
    Validation,
    /// A body that cannot be read (`parse_exception`).
    Parse,
    /// A value that is not acceptable (`illegal_argument_exception`).
    IllegalArgument,
    /// `resource_not_found_exception`.
    NotFound,
    /// Creating what exists (`version_conflict_engine_exception`).
    Conflict,
    /// The store is unavailable; the client may retry.
    Unavailable,
    /// Our failure.
    Internal,
}

/// A refusal of a security API, with Elasticsearch's type and reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct SecurityError {
    pub kind: SecurityErrorKind,
    pub reason: String,
    /// For `InvalidGrant`: the `error_description` Elasticsearch sends in the header.
    pub description: Option<String>,
}

impl SecurityError {
    fn new(kind: SecurityErrorKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            description: None,
        }
    }

    pub fn unauthenticated(reason: impl Into<String>) -> Self {
        Self::new(SecurityErrorKind::Unauthenticated, reason)
    }

    pub fn parse(reason: impl Into<String>) -> Self {
        Self::new(SecurityErrorKind::Parse, reason)
    }

    pub fn validation(problems: &[String]) -> Self {
        let listed: String = problems
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}: {p};", i + 1))
            .collect();
        Self::new(
            SecurityErrorKind::Validation,
            format!("Validation Failed: {listed}"),
        )
    }

    pub fn illegal_argument(reason: impl Into<String>) -> Self {
        Self::new(SecurityErrorKind::IllegalArgument, reason)
    }

    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(SecurityErrorKind::NotFound, reason)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self {
            kind: SecurityErrorKind::InvalidGrant,
            reason: "invalid_grant".into(),
            description: Some(description.into()),
        }
    }

    fn forbidden(identity: &Identity, action: Action) -> Self {
        let who = match &identity.api_key {
            Some((id, _)) => format!("API key id [{id}] of user [{}]", identity.username),
            None => format!("user [{}]", identity.username),
        };
        Self::new(
            SecurityErrorKind::Forbidden,
            format!(
                "action [{}] is unauthorized for {who} with effective roles [{}], this action is granted by the cluster privileges [{}]",
                action.name(),
                identity.roles.join(","),
                action.granted_by().join(","),
            ),
        )
    }

    /// A short label for the authentication-failure metric.
    pub fn metric_reason(&self) -> &'static str {
        match self.kind {
            SecurityErrorKind::Unauthenticated => "bad_credentials",
            SecurityErrorKind::Forbidden => "forbidden",
            SecurityErrorKind::InvalidGrant => "invalid_grant",
            SecurityErrorKind::Validation
            | SecurityErrorKind::Parse
            | SecurityErrorKind::IllegalArgument => "invalid_request",
            SecurityErrorKind::NotFound => "not_found",
            SecurityErrorKind::Conflict => "conflict",
            SecurityErrorKind::Unavailable => "store_unavailable",
            SecurityErrorKind::Internal => "internal",
        }
    }

    /// Elasticsearch's `type` of the error.
    pub fn es_type(&self) -> &'static str {
        match self.kind {
            SecurityErrorKind::Unauthenticated
            | SecurityErrorKind::Forbidden
            | SecurityErrorKind::InvalidGrant => "security_exception",
            SecurityErrorKind::Validation => "action_request_validation_exception",
            SecurityErrorKind::Parse => "parse_exception",
            SecurityErrorKind::IllegalArgument => "illegal_argument_exception",
            SecurityErrorKind::NotFound => "resource_not_found_exception",
            SecurityErrorKind::Conflict => "version_conflict_engine_exception",
            SecurityErrorKind::Unavailable => "status_exception",
            SecurityErrorKind::Internal => "exception",
        }
    }
}

impl From<StoreError> for SecurityError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::new(SecurityErrorKind::Unavailable, m),
            // What Elasticsearch itself answers when concurrent writes of a document win.
            StoreError::Contended(m) => Self::new(SecurityErrorKind::Conflict, m),
            other => Self::new(SecurityErrorKind::Internal, other.to_string()),
        }
    }
}

impl From<TokenError> for SecurityError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Store(s) => s.into(),
            TokenError::Keys(k) => Self::new(SecurityErrorKind::Internal, k.to_string()),
            TokenError::Jwt(_) | TokenError::Refused(_) | TokenError::UsesExhausted => {
                Self::invalid_grant("could not refresh the requested token")
            }
        }
    }
}

impl From<UserError> for SecurityError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Store(s) => s.into(),
            UserError::Hash(h) => Self::new(SecurityErrorKind::Internal, h.to_string()),
            UserError::Invalid(m) => Self::new(SecurityErrorKind::Validation, m),
            UserError::Reserved(_) => Self::new(
                SecurityErrorKind::Validation,
                format!("Validation Failed: 1: {e};"),
            ),
            UserError::Unknown | UserError::WrongPassword | UserError::Disabled => {
                Self::unauthenticated("unable to authenticate user")
            }
        }
    }
}

impl From<RoleError> for SecurityError {
    fn from(e: RoleError) -> Self {
        match e {
            RoleError::Store(s) => s.into(),
            RoleError::Parse { .. } => Self::parse(e.to_string()),
            RoleError::UnknownPrivilege { .. } | RoleError::Reserved(_) => {
                Self::illegal_argument(e.to_string())
            }
            RoleError::InvalidName(m) => Self::new(SecurityErrorKind::Validation, m),
        }
    }
}

impl From<ServiceTokenError> for SecurityError {
    fn from(e: ServiceTokenError) -> Self {
        match e {
            ServiceTokenError::Store(s) => s.into(),
            ServiceTokenError::UnknownAccount(_) => Self::illegal_argument(e.to_string()),
            ServiceTokenError::InvalidName(_) => Self::validation(&[e.to_string()]),
            ServiceTokenError::Exists(ref id) => Self::new(
                SecurityErrorKind::Conflict,
                format!("[{id}]: version conflict, document already exists (current version [1])"),
            ),
            ServiceTokenError::UnknownToken | ServiceTokenError::WrongSecret => {
                Self::unauthenticated("unable to authenticate with the provided service token")
            }
        }
    }
}

/// A request body read into a typed request; what does not fit is a `parse_exception`,
/// as Elasticsearch's parsers answer.
pub fn read_body<T: DeserializeOwned>(what: &str, body: Value) -> Result<T, SecurityError> {
    serde_json::from_value(body)
        .map_err(|e| SecurityError::parse(format!("failed to parse [{what}]: {e}")))
}

/// Elasticsearch's time values: a number and one of `d h m s ms micros nanos`
/// (e.g. `1d`, `90m`); `None` if it is not one, or not positive.
pub fn parse_time_value(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let duration = match unit {
        "d" => Duration::from_secs(n.checked_mul(86_400)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "micros" => Duration::from_micros(n),
        "nanos" => Duration::from_nanos(n),
        _ => return None,
    };
    (!duration.is_zero()).then_some(duration)
}

// ---- requests and answers ----

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    pub name: Option<String>,
    pub expiration: Option<String>,
    #[serde(default)]
    pub role_descriptors: Option<Map<String, Value>>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

/// A created API key (its secret shown this once).
#[derive(Serialize)]
pub struct CreatedApiKey {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<i64>,
    pub api_key: String,
    pub encoded: String,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CreatedApiKey({}, [redacted])", self.id)
    }
}

/// The query of `GET /_security/api_key`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetApiKeyQuery {
    pub id: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub realm_name: Option<String>,
    #[serde(default)]
    pub owner: bool,
    #[serde(default)]
    pub with_limited_by: bool,
    #[serde(default)]
    pub active_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateApiKeyRequest {
    pub ids: Option<Vec<String>>,
    pub id: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub realm_name: Option<String>,
    #[serde(default)]
    pub owner: bool,
}

#[derive(Debug, Serialize, Default)]
pub struct ApiKeysInvalidated {
    pub invalidated_api_keys: Vec<String>,
    pub previously_invalidated_api_keys: Vec<String>,
    pub error_count: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutUserRequest {
    pub password: Option<String>,
    pub password_hash: Option<String>,
    pub roles: Option<Vec<String>>,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub password: Option<String>,
    pub password_hash: Option<String>,
}

/// A service token as created (its value shown this once).
#[derive(Serialize)]
pub struct CreatedServiceToken {
    pub created: bool,
    pub token: ServiceTokenValue,
}

#[derive(Serialize)]
pub struct ServiceTokenValue {
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for CreatedServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CreatedServiceToken({}, [redacted])", self.token.name)
    }
}

/// What the background remover removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub api_keys: usize,
    pub token_families: usize,
}

/// `_authenticate`'s answer for an identity.
pub fn authenticate_json(identity: &Identity) -> Value {
    let mut out = json!({
        "username": identity.username,
        "roles": identity.roles,
        "full_name": identity.full_name,
        "email": identity.email,
        "metadata": identity.metadata,
        "enabled": identity.enabled,
        "authentication_realm": identity.authentication_realm,
        "lookup_realm": identity.lookup_realm,
        "authentication_type": identity.authentication_type,
    });
    if let Some((id, name)) = &identity.api_key {
        out["api_key"] = json!({ "id": id, "name": name });
    }
    if let Some(name) = &identity.service_token {
        out["token"] = json!({ "name": name, "type": "_service_account_index" });
    }
    out
}

fn millis(t: UnixTime) -> i64 {
    t.saturating_mul(1000)
}

/// One key in `GET /_security/api_key`'s answer.
fn api_key_json(key: &ApiKeyRecord, with_limited_by: bool) -> Value {
    let mut out = json!({
        "id": key.id,
        "name": key.name,
        "type": "rest",
        "creation": millis(key.created_at),
        "invalidated": key.invalidated_at.is_some(),
    });
    if let Some(t) = key.expires_at {
        out["expiration"] = json!(millis(t));
    }
    if let Some(t) = key.invalidated_at {
        out["invalidation"] = json!(millis(t));
    }
    match &key.owner {
        Some(owner) => {
            out["username"] = json!(owner.username);
            out["realm"] = json!(owner.realm);
            out["realm_type"] = json!(owner.realm_type);
            out["metadata"] = owner.metadata.clone();
            out["role_descriptors"] = owner.role_descriptors.clone();
            if with_limited_by {
                out["limited_by"] = owner.limited_by.clone();
            }
        }
        None => {
            // Made by the CLI: an agent's key or a plain OAuth2 client's.
            out["username"] = json!(key.agent_id.clone().unwrap_or_else(|| key.id.clone()));
            out["realm"] = json!(Realm::fleetauth().name);
            out["metadata"] = json!({});
            out["role_descriptors"] = json!({});
            if let Some(agent) = &key.agent_id {
                out["agent_id"] = json!(agent);
            }
        }
    }
    out
}

fn active(key: &ApiKeyRecord, now: UnixTime) -> bool {
    key.invalidated_at.is_none() && key.expires_at.is_none_or(|t| t > now)
}

/// Which API keys a request may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// The caller's own (by owner username and realm).
    Owner(ApiKeyFilter),
    /// The calling API key itself.
    Itself(String),
    /// Anyone's.
    Any,
}

/// The flows of the security APIs.
pub struct SecurityApi {
    grants: Arc<GrantService>,
    tokens: Arc<TokenService>,
    api_keys: Arc<ApiKeyService>,
    /// How long expired and invalidated API keys are kept.
    retention: Duration,
}

impl SecurityApi {
    pub fn new(
        grants: Arc<GrantService>,
        tokens: Arc<TokenService>,
        api_keys: Arc<ApiKeyService>,
        retention: Duration,
    ) -> Self {
        Self {
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
        match self.grants.authenticate(presented).await {
            Ok(principal) => Ok(principal),
            Err(e @ (GrantError::Unavailable(_) | GrantError::Internal(_))) => Err(match e {
                GrantError::Unavailable(m) => SecurityError::new(SecurityErrorKind::Unavailable, m),
                other => SecurityError::new(SecurityErrorKind::Internal, other.to_string()),
            }),
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

    // ---- the token API ----

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
        let (kind, result) = match grant_type.as_str() {
            "password" => (GrantKind::Password, self.password_grant(request).await),
            "client_credentials" => (
                GrantKind::UserCredentials,
                self.client_credentials_grant(principal, request).await,
            ),
            "refresh_token" => (GrantKind::RefreshToken, self.refresh_grant(request).await),
            "" => return Err(SecurityError::validation(&["grant_type is missing".into()])),
            other => {
                return Err(SecurityError::validation(&[format!(
                    "grant_type [{other}] is not supported; supported: password, client_credentials, refresh_token"
                )]))
            }
        };
        match &result {
            Ok(token) => record_issued(kind, token.refresh_token.is_some(), started),
            Err(e) => {
                metrics::counter!("fleetauth_auth_failures_total", "reason" => e.metric_reason())
                    .increment(1)
            }
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
            .grants
            .security()
            .users
            .authenticate(&username, &password)
            .await
            .map_err(|e| match e {
                UserError::Store(s) => SecurityError::from(s),
                UserError::Hash(h) => {
                    SecurityError::new(SecurityErrorKind::Internal, h.to_string())
                }
                _ => SecurityError::unauthenticated(format!(
                    "unable to authenticate user [{username}] for action [{}]",
                    Action::CreateToken.name()
                )),
            })?;
        let identity = self
            .grants
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
        let parsed = refresh::parse(token)
            .filter(|p| p.family.is_some())
            .ok_or_else(|| SecurityError::invalid_grant("could not refresh the requested token"))?;
        let user = self
            .grants
            .security()
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
            .grants
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
            let claims = if tokens::jwt::looks_like_jwt(token) {
                match self.tokens.verify_access(token).await {
                    Ok(claims) => Some(claims),
                    Err(TokenError::Jwt(_)) => None,
                    Err(e) => return Err(e.into()),
                }
            } else {
                None
            };
            if let Some(claims) = claims.filter(|c| c.sid.is_some()) {
                if self.tokens.revoke_access(&claims).await? {
                    result.invalidated_tokens = 1;
                } else if let Some(family) = &claims.sid {
                    if self.tokens.family(family).await?.is_some() {
                        result.previously_invalidated_tokens = 1;
                    }
                }
            }
        } else if let Some(token) = &request.refresh_token {
            if let Some(parsed) = refresh::parse(token).filter(|p| p.family.is_some()) {
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

    // ---- API keys ----

    /// `POST`/`PUT /_security/api_key`.
    pub async fn create_api_key(
        &self,
        principal: &Principal,
        body: Value,
    ) -> Result<CreatedApiKey, SecurityError> {
        Self::authorize(principal, Action::CreateApiKey)?;
        let identity = &principal.identity;
        if identity.api_key.is_some() {
            return Err(SecurityError::illegal_argument(
                "an API key cannot create API keys here; authenticate as a user or a service account",
            ));
        }
        let request: CreateApiKeyRequest = read_body("api_key_request", body)?;
        let name = request.name.unwrap_or_default();
        let mut problems = Vec::new();
        if name.is_empty() {
            problems.push("api key name is required".to_string());
        } else if name.chars().count() > 1024 {
            problems.push("api key name may not be more than [1024] characters long".into());
        } else if name.starts_with('_') {
            problems.push("api key name may not begin with an underscore".into());
        }
        if request
            .metadata
            .as_ref()
            .is_some_and(|m| m.keys().any(|k| k.starts_with('_')))
        {
            // As Elasticsearch: such keys are reserved (here: enrollment tokens' marker).
            problems.push("API key metadata keys may not start with [_]".into());
        }
        if !problems.is_empty() {
            return Err(SecurityError::validation(&problems));
        }
        let expires_at = match &request.expiration {
            None => None,
            Some(text) => {
                let lifetime = parse_time_value(text).ok_or_else(|| {
                    SecurityError::parse(format!(
                        "failed to parse setting [expiration] with value [{text}] as a time value: a positive number and one of the units d, h, m, s, ms, micros, nanos"
                    ))
                })?;
                Some(self.now() + lifetime.as_secs().max(1) as i64)
            }
        };
        let mut descriptors = Map::new();
        for (role, descriptor) in request.role_descriptors.unwrap_or_default() {
            let parsed = RoleDescriptor::parse(&role, &descriptor)?;
            descriptors.insert(role, parsed.to_json());
        }
        let owner = ApiKeyOwner {
            username: identity.username.clone(),
            realm: identity.lookup_realm.name.clone(),
            realm_type: identity.lookup_realm.kind.clone(),
            role_descriptors: Value::Object(descriptors),
            limited_by: json!([identity.role_descriptors]),
            metadata: Value::Object(request.metadata.unwrap_or_default()),
        };
        let created = self.api_keys.create_owned(&name, expires_at, owner).await?;
        tracing::info!(id = %created.id, username = %identity.username, "API key created");
        Ok(CreatedApiKey {
            id: created.id,
            name: created.name,
            expiration: created.expiration,
            api_key: created.api_key,
            encoded: created.encoded,
        })
    }

    /// Which keys a request may reach: only the caller's own when it says so (`owner`,
    /// its own `username` and realm, or for an API key its own id), else anyone's (which
    /// needs more privilege), as Elasticsearch decides without looking at the keys.
    fn scope(
        identity: &Identity,
        owner: bool,
        ids: &[String],
        username: Option<&str>,
        realm: Option<&str>,
    ) -> Scope {
        if let Some((own_id, _)) = &identity.api_key {
            let only_itself = owner || (!ids.is_empty() && ids.iter().all(|i| i == own_id));
            return if only_itself {
                Scope::Itself(own_id.clone())
            } else {
                Scope::Any
            };
        }
        let mine = owner
            || (username == Some(identity.username.as_str())
                && realm.is_none_or(|r| r == identity.lookup_realm.name));
        if mine {
            Scope::Owner(ApiKeyFilter {
                name: None,
                username: Some(identity.username.clone()),
                realm: Some(identity.lookup_realm.name.clone()),
            })
        } else {
            Scope::Any
        }
    }

    /// The keys a request names, within `scope`.
    async fn find_keys(
        &self,
        scope: &Scope,
        ids: &[String],
        name: Option<&str>,
        username: Option<&str>,
        realm: Option<&str>,
    ) -> Result<Vec<ApiKeyRecord>, SecurityError> {
        let prefix = name.and_then(|n| n.strip_suffix('*'));
        let mut filter = ApiKeyFilter {
            name: name.filter(|_| prefix.is_none()).map(str::to_string),
            username: username.map(str::to_string),
            realm: realm.map(str::to_string),
        };
        let keys = match scope {
            Scope::Itself(own_id) => {
                let mut own = self
                    .api_keys
                    .get(own_id)
                    .await?
                    .into_iter()
                    .collect::<Vec<_>>();
                own.retain(|k| filter.name.as_ref().is_none_or(|n| n == &k.name));
                own
            }
            Scope::Owner(_) | Scope::Any => {
                if let Scope::Owner(owner) = scope {
                    filter.username = owner.username.clone();
                    filter.realm = owner.realm.clone();
                }
                if ids.is_empty() {
                    self.api_keys.list(&filter).await?
                } else {
                    let mut found = Vec::new();
                    for id in ids.iter().collect::<BTreeSet<_>>() {
                        if let Some(key) = self.api_keys.get(id).await? {
                            if filter.matches(&key) {
                                found.push(key);
                            }
                        }
                    }
                    found
                }
            }
        };
        Ok(keys
            .into_iter()
            .filter(|k| prefix.is_none_or(|p| k.name.starts_with(p)))
            .collect())
    }

    /// `GET /_security/api_key`.
    pub async fn get_api_keys(
        &self,
        principal: &Principal,
        query: GetApiKeyQuery,
    ) -> Result<Value, SecurityError> {
        let identity = &principal.identity;
        let ids: Vec<String> = query.id.iter().cloned().collect();
        let scope = Self::scope(
            identity,
            query.owner,
            &ids,
            query.username.as_deref(),
            query.realm_name.as_deref(),
        );
        Self::authorize(
            principal,
            Action::GetApiKey {
                any: scope == Scope::Any,
            },
        )?;
        let keys = self
            .find_keys(
                &scope,
                &ids,
                query.name.as_deref(),
                query.username.as_deref(),
                query.realm_name.as_deref(),
            )
            .await?;
        let now = self.now();
        let listed: Vec<Value> = keys
            .iter()
            .filter(|k| !query.active_only || active(k, now))
            .map(|k| api_key_json(k, query.with_limited_by))
            .collect();
        Ok(json!({ "api_keys": listed }))
    }

    /// `DELETE /_security/api_key`.
    pub async fn invalidate_api_keys(
        &self,
        principal: &Principal,
        body: Value,
    ) -> Result<ApiKeysInvalidated, SecurityError> {
        let request: InvalidateApiKeyRequest = read_body("invalidate_api_key_request", body)?;
        if request.id.is_some() && request.ids.is_some() {
            return Err(SecurityError::validation(&[
                "only one of [id, ids] may be given".into(),
            ]));
        }
        let ids: Vec<String> = request
            .ids
            .clone()
            .or(request.id.clone().map(|id| vec![id]))
            .unwrap_or_default();
        if ids.iter().any(String::is_empty) {
            return Err(SecurityError::validation(&[
                "api key ids must not be empty".into(),
            ]));
        }
        let nothing_named = ids.is_empty()
            && request.name.is_none()
            && request.username.is_none()
            && request.realm_name.is_none();
        if nothing_named && !request.owner {
            return Err(SecurityError::validation(&[
                "One of [api key id(s), api key name, username, realm name] must be specified if [owner] flag is false".into(),
            ]));
        }
        let identity = &principal.identity;
        let scope = Self::scope(
            identity,
            request.owner,
            &ids,
            request.username.as_deref(),
            request.realm_name.as_deref(),
        );
        Self::authorize(
            principal,
            Action::InvalidateApiKey {
                any: scope == Scope::Any,
            },
        )?;
        let keys = self
            .find_keys(
                &scope,
                &ids,
                request.name.as_deref(),
                request.username.as_deref(),
                request.realm_name.as_deref(),
            )
            .await?;
        let mut result = ApiKeysInvalidated::default();
        for key in keys {
            if key.invalidated_at.is_none() && self.api_keys.invalidate(&key.id).await? {
                result.invalidated_api_keys.push(key.id);
            } else {
                result.previously_invalidated_api_keys.push(key.id);
            }
        }
        if !result.invalidated_api_keys.is_empty() {
            tracing::info!(count = result.invalidated_api_keys.len(), by = %identity.username, "API keys invalidated");
        }
        Ok(result)
    }

    /// Removes what has outlived its use: API keys expired or invalidated more than
    /// `api_keys.retention` ago, and token families whose every token has expired.
    pub async fn remove_expired(&self) -> Result<Removed, SecurityError> {
        let now = self.now();
        let cutoff = now - self.retention.as_secs() as i64;
        let api_keys = self.api_keys.purge(cutoff).await?;
        let token_families = self.tokens.purge_families(now).await?;
        if api_keys + token_families > 0 {
            tracing::info!(api_keys, token_families, "removed expired security records");
        }
        Ok(Removed {
            api_keys,
            token_families,
        })
    }

    /// Runs [`remove_expired`](Self::remove_expired) every `interval` for as long as
    /// the service lives (first run one interval after start).
    pub fn spawn_remover(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(api) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = api.remove_expired().await {
                    tracing::warn!(error = %e, "could not remove expired security records");
                }
            }
        })
    }

    // ---- service accounts ----

    fn service_account(namespace: &str, service: &str) -> Result<ServiceAccount, SecurityError> {
        let principal = format!("{namespace}/{service}");
        ServiceAccount::find(&principal).ok_or_else(|| {
            SecurityError::illegal_argument(format!("service account [{principal}] does not exist"))
        })
    }

    /// `POST|PUT /_security/service/{namespace}/{service}/credential/token[/{name}]`.
    pub async fn create_service_token(
        &self,
        principal: &Principal,
        namespace: &str,
        service: &str,
        name: Option<&str>,
    ) -> Result<CreatedServiceToken, SecurityError> {
        Self::authorize(principal, Action::CreateServiceToken)?;
        let account = Self::service_account(namespace, service)?;
        let created = self
            .grants
            .security()
            .service_accounts
            .create(account.principal, name, &principal.identity.username)
            .await?;
        tracing::info!(account = account.principal, name = %created.name, "service token created");
        Ok(CreatedServiceToken {
            created: true,
            token: ServiceTokenValue {
                name: created.name,
                value: created.value,
            },
        })
    }

    /// `GET /_security/service/{namespace}/{service}/credential`.
    pub async fn service_credentials(
        &self,
        principal: &Principal,
        namespace: &str,
        service: &str,
    ) -> Result<Value, SecurityError> {
        Self::authorize(principal, Action::GetServiceCredentials)?;
        let account = Self::service_account(namespace, service)?;
        let names = self
            .grants
            .security()
            .service_accounts
            .list(account.principal)
            .await?;
        let tokens: Map<String, Value> = names.iter().map(|n| (n.clone(), json!({}))).collect();
        Ok(json!({
            "service_account": account.principal,
            "count": names.len(),
            "tokens": tokens,
            "nodes_credentials": {
                "_nodes": { "total": 1, "successful": 1, "failed": 0 },
                "file_tokens": {}
            }
        }))
    }

    /// `DELETE /_security/service/{namespace}/{service}/credential/token/{name}`:
    /// whether it was found.
    pub async fn delete_service_token(
        &self,
        principal: &Principal,
        namespace: &str,
        service: &str,
        name: &str,
    ) -> Result<bool, SecurityError> {
        Self::authorize(principal, Action::DeleteServiceToken)?;
        let account = Self::service_account(namespace, service)?;
        let found = self
            .grants
            .security()
            .service_accounts
            .delete(account.principal, name)
            .await?;
        if found {
            tracing::info!(account = account.principal, name, "service token deleted");
        }
        Ok(found)
    }

    // ---- users ----

    /// `PUT|POST /_security/user/{username}`: whether it was created.
    pub async fn put_user(
        &self,
        principal: &Principal,
        username: &str,
        body: Value,
    ) -> Result<bool, SecurityError> {
        Self::authorize(principal, Action::PutUser)?;
        let request: PutUserRequest = read_body("user", body)?;
        if request.password_hash.is_some() {
            return Err(SecurityError::illegal_argument(
                "[password_hash] is not supported; give a password",
            ));
        }
        let created = self
            .grants
            .security()
            .users
            .put(PutUser {
                username: username.to_string(),
                password: request.password,
                roles: request.roles.unwrap_or_default(),
                full_name: request.full_name,
                email: request.email,
                metadata: Value::Object(request.metadata.unwrap_or_default()),
                enabled: request.enabled.unwrap_or(true),
            })
            .await?;
        tracing::info!(username, created, by = %principal.identity.username, "user saved");
        Ok(created)
    }

    /// `GET /_security/user[/{names}]`: the users by name (all when `names` is empty);
    /// `Err(NotFound)` when names were given and none exists.
    pub async fn get_users(
        &self,
        principal: &Principal,
        names: &[String],
    ) -> Result<Value, SecurityError> {
        Self::authorize(principal, Action::GetUser)?;
        let users = &self.grants.security().users;
        let found = if names.is_empty() {
            users.all().await?
        } else {
            let mut found = Vec::new();
            for name in names {
                if let Some(user) = users.get(name).await? {
                    found.push(user);
                }
            }
            found
        };
        if found.is_empty() && !names.is_empty() {
            return Err(SecurityError::not_found("no such user"));
        }
        let out: Map<String, Value> = found
            .iter()
            .map(|u| {
                (
                    u.username.clone(),
                    json!({
                        "username": u.username, "roles": u.roles, "full_name": u.full_name,
                        "email": u.email, "metadata": u.metadata, "enabled": u.enabled,
                    }),
                )
            })
            .collect();
        Ok(Value::Object(out))
    }

    /// `DELETE /_security/user/{username}`: whether it existed. The user's tokens are
    /// revoked too, so that a new user of the same name never inherits them (its API
    /// keys stay, as in Elasticsearch).
    pub async fn delete_user(
        &self,
        principal: &Principal,
        username: &str,
    ) -> Result<bool, SecurityError> {
        Self::authorize(principal, Action::DeleteUser)?;
        let found = self.grants.security().users.delete(username).await?;
        if found {
            for family in self.tokens.families_of(Some(username)).await? {
                self.tokens.revoke_family(&family.family_id).await?;
            }
            tracing::info!(username, by = %principal.identity.username, "user deleted");
        }
        Ok(found)
    }

    /// `POST|PUT /_security/user[/{username}]/_password`.
    pub async fn change_password(
        &self,
        principal: &Principal,
        username: Option<&str>,
        body: Value,
    ) -> Result<(), SecurityError> {
        let identity = &principal.identity;
        let target = username.unwrap_or(&identity.username);
        let own = identity.is_user() && target == identity.username;
        Self::authorize(principal, Action::ChangePassword { other: !own })?;
        let request: ChangePasswordRequest = read_body("change_password", body)?;
        if request.password_hash.is_some() {
            return Err(SecurityError::illegal_argument(
                "[password_hash] is not supported; give a password",
            ));
        }
        let password = request
            .password
            .ok_or_else(|| SecurityError::validation(&["password is missing".into()]))?;
        if !self
            .grants
            .security()
            .users
            .change_password(target, &password)
            .await?
        {
            return Err(SecurityError::not_found(format!(
                "user [{target}] does not exist"
            )));
        }
        tracing::info!(username = target, by = %identity.username, "password changed");
        Ok(())
    }

    // ---- roles ----

    /// `PUT|POST /_security/role/{name}`: whether it was created.
    pub async fn put_role(
        &self,
        principal: &Principal,
        name: &str,
        body: Value,
    ) -> Result<bool, SecurityError> {
        Self::authorize(principal, Action::PutRole)?;
        check_role_name(name)?;
        let descriptor = RoleDescriptor::parse(name, &body)?;
        let created = self.grants.security().roles.put(name, descriptor).await?;
        tracing::info!(role = name, created, by = %principal.identity.username, "role saved");
        Ok(created)
    }

    /// `GET /_security/role[/{names}]`.
    pub async fn get_roles(
        &self,
        principal: &Principal,
        names: &[String],
    ) -> Result<Value, SecurityError> {
        Self::authorize(principal, Action::GetRole)?;
        let roles = &self.grants.security().roles;
        let mut out = Map::new();
        if names.is_empty() {
            for (name, d) in roles.all().await? {
                out.insert(name, d.to_json());
            }
        } else {
            for name in names {
                if let Some(d) = roles.get(name).await? {
                    out.insert(name.clone(), d.to_json());
                }
            }
            if out.is_empty() {
                return Err(SecurityError::not_found("no such role"));
            }
        }
        Ok(Value::Object(out))
    }

    /// `DELETE /_security/role/{name}`: whether it existed.
    pub async fn delete_role(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<bool, SecurityError> {
        Self::authorize(principal, Action::DeleteRole)?;
        let found = self.grants.security().roles.delete(name).await?;
        if found {
            tracing::info!(role = name, by = %principal.identity.username, "role deleted");
        }
        Ok(found)
    }
}

fn grant_to_security(e: GrantError) -> SecurityError {
    match e {
        GrantError::Unavailable(m) => SecurityError::new(SecurityErrorKind::Unavailable, m),
        other => SecurityError::new(SecurityErrorKind::Internal, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_values_are_elasticsearchs() {
        assert_eq!(parse_time_value("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_time_value("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(
            parse_time_value("1500ms"),
            Some(Duration::from_millis(1500))
        );
        for bad in [
            "",
            "d",
            "1",
            "1 d",
            "-1d",
            "1w",
            "0s",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_time_value(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn validation_errors_are_listed_like_elasticsearch() {
        let e = SecurityError::validation(&["a".into(), "b".into()]);
        assert_eq!(e.reason, "Validation Failed: 1: a;2: b;");
        assert_eq!(e.es_type(), "action_request_validation_exception");
    }
}
