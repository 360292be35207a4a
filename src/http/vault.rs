//! The Vault-compatible API (SPEC §4 "Vault-compatible JWT auth method"), at Vault's
//! paths and in Vault's shapes:
//!
//! - `GET`/`POST /v1/auth/jwt/config`, `GET`/`POST`/`DELETE /v1/auth/jwt/role/:name`,
//!   `LIST /v1/auth/jwt/role` (or `GET ?list=true`): admin only ([`require_admin`]);
//! - `POST /v1/auth/jwt/login` (`role`, `jwt`): an external JWT for an access token of
//!   this server, answered as Vault's `{"auth": {...}}`;
//! - `GET`/`POST /v1/auth/token/lookup-self`: the presented token's description; a use
//!   of the token (as in Vault), so it counts against a role's `num_uses`.
//!
//! Bodies are JSON whatever the `Content-Type` (as Vault reads them); tokens come in
//! `X-Vault-Token` or `Authorization: Bearer`. Errors are `{"errors": [...]}`
//! ([`VaultApiError`]). `PUT` is `POST`, as in Vault.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Map, Value};

use super::error::VaultApiError;
use super::{no_store, read_body_first, AppState, RemoteAddr};
use crate::credentials::Presented;
use crate::grant::{GrantError, TokenLookup};
use crate::identity::privileges::Action;
use crate::vault::fields::Fields;
use crate::vault::VaultError;

/// The routes of the Vault-compatible API; every other `/v1/...` path is a Vault 404.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/jwt/config", any(config))
        .route("/v1/auth/jwt/role", any(roles))
        .route("/v1/auth/jwt/role/", any(roles))
        .route("/v1/auth/jwt/role/{name}", any(role))
        .route("/v1/auth/jwt/login", any(login))
        .route("/v1/auth/token/lookup-self", any(lookup_self))
        .route("/v1", any(no_handler))
        .route("/v1/", any(no_handler))
        .route("/v1/{*rest}", any(no_handler))
}

/// The token of the request: `X-Vault-Token`, else `Authorization: Bearer`.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(token) = headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Some(token.to_string());
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// The admin check of the config and role APIs: a credential that the authentication
/// chain resolves to a principal with `manage_security` (the `elastic` superuser, by
/// Basic or a token of the Elasticsearch token API), or the configured
/// `vault.admin_token`. The credential comes in `Authorization`, or, as every Vault
/// client sends it, in `X-Vault-Token` (then a token: the admin token, or an access
/// token of this server). Anything else is Vault's "permission denied".
async fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), VaultApiError> {
    let token = presented_token(headers);
    if state.vault.authorize_admin(token.as_deref()).is_ok() {
        return Ok(());
    }
    // `X-Vault-Token` wins over `Authorization`, as in Vault.
    let presented = if headers.contains_key("x-vault-token") {
        token.map(Presented::Bearer)
    } else {
        super::fleet::presented_header(headers).ok().flatten()
    };
    let Some(presented) = presented else {
        return Err(VaultError::PermissionDenied.into());
    };
    match state.authenticator.authenticate(&presented).await {
        Ok(principal)
            if principal
                .identity
                .privileges
                .allow(Action::ConfigureJwtAuth) =>
        {
            Ok(())
        }
        Err(
            e @ (GrantError::Throttled(_) | GrantError::Unavailable(_) | GrantError::Internal(_)),
        ) => Err(e.into()),
        _ => Err(VaultError::PermissionDenied.into()),
    }
}

/// The caller of the config and role APIs, admitted by `require_admin`.
pub struct VaultAdmin;

impl FromRequestParts<AppState> for VaultAdmin {
    type Rejection = VaultApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        require_admin(state, &parts.headers).await.map(|()| Self)
    }
}

/// An admin call with a body: the body is read first (so that a slow body meets the
/// edge's read timeout before the credential check), then the caller admitted by
/// `require_admin`. The body is read as JSON only by a write (`fields`); a
/// read ignores it, as Vault does.
pub struct VaultAdminBody(Result<Bytes, BytesRejection>);

impl FromRequest<AppState> for VaultAdminBody {
    type Rejection = VaultApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = read_body_first(request).await;
        VaultAdmin::from_request_parts(&mut parts, state).await?;
        Ok(Self(body))
    }
}

impl VaultAdminBody {
    /// The body's JSON object.
    fn fields(self) -> Result<Fields, VaultApiError> {
        fields(self.0)
    }
}

/// A JSON object body; empty is `{}`.
fn fields(body: Result<Bytes, BytesRejection>) -> Result<Fields, VaultApiError> {
    let body =
        body.map_err(|rejection| VaultApiError::Body(rejection.status(), rejection.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(VaultApiError::BadRequest(
            "failed to parse JSON input: the body must be a JSON object".into(),
        )),
        Err(e) => Err(VaultApiError::BadRequest(format!(
            "failed to parse JSON input: {e}"
        ))),
    }
}

/// Vault's response envelope.
fn envelope(status: StatusCode, data: Value, auth: Value, warnings: Vec<String>) -> Response {
    let warnings = if warnings.is_empty() {
        Value::Null
    } else {
        json!(warnings)
    };
    let mut response = (
        status,
        Json(json!({
            "request_id": uuid::Uuid::new_v4().to_string(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": data,
            "wrap_info": null,
            "warnings": warnings,
            "auth": auth,
        })),
    )
        .into_response();
    no_store(response.headers_mut());
    response
}

fn data(data: Value) -> Response {
    envelope(StatusCode::OK, data, Value::Null, Vec::new())
}

/// A write's answer: 204, or 200 with the warnings.
fn written(warnings: Vec<String>) -> Response {
    if warnings.is_empty() {
        let mut response = StatusCode::NO_CONTENT.into_response();
        no_store(response.headers_mut());
        response
    } else {
        envelope(StatusCode::OK, Value::Null, Value::Null, warnings)
    }
}

fn is_write(method: &Method) -> bool {
    method == Method::POST || method == Method::PUT
}

async fn config(
    State(state): State<AppState>,
    method: Method,
    body: VaultAdminBody,
) -> Result<Response, VaultApiError> {
    match method {
        Method::GET => match state.vault.read_config().await? {
            Some(config) => Ok(data(config)),
            None => Err(VaultApiError::NotFound),
        },
        ref m if is_write(m) => {
            let warnings = state.vault.write_config(&body.fields()?).await?;
            Ok(written(warnings))
        }
        _ => Err(VaultApiError::UnsupportedOperation),
    }
}

/// Whether the query says `list=true` (Vault's `GET` form of `LIST`).
fn list_query(uri: &Uri) -> bool {
    uri.query().is_some_and(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .any(|(k, v)| k == "list" && matches!(v.as_ref(), "true" | "1" | "t" | "True" | "TRUE"))
    })
}

async fn roles(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    _: VaultAdmin,
) -> Result<Response, VaultApiError> {
    let listing = method.as_str() == "LIST" || (method == Method::GET && list_query(&uri));
    if !listing {
        return Err(VaultApiError::UnsupportedOperation);
    }
    let keys = state.vault.list_roles().await?;
    if keys.is_empty() {
        // Vault answers an empty list with 404.
        return Err(VaultApiError::NotFound);
    }
    Ok(data(json!({ "keys": keys })))
}

async fn role(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    body: VaultAdminBody,
) -> Result<Response, VaultApiError> {
    match method {
        Method::GET => match state.vault.read_role(&name).await? {
            Some(role) => Ok(data(role)),
            None => Err(VaultApiError::NotFound),
        },
        Method::DELETE => {
            state.vault.delete_role(&name).await?;
            Ok(written(Vec::new()))
        }
        ref m if is_write(m) => {
            let warnings = state.vault.write_role(&name, &body.fields()?).await?;
            Ok(written(warnings))
        }
        _ => Err(VaultApiError::UnsupportedOperation),
    }
}

/// An optional string field of a login body.
fn string_field<'a>(body: &'a Fields, name: &str) -> Result<Option<&'a str>, VaultApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(VaultApiError::BadRequest(format!(
            "invalid value for {name:?}: expected a string"
        ))),
    }
}

async fn login(
    State(state): State<AppState>,
    method: Method,
    RemoteAddr(remote_addr): RemoteAddr,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, VaultApiError> {
    if !is_write(&method) {
        return Err(VaultApiError::UnsupportedOperation);
    }
    let body = fields(body)?;
    let role = string_field(&body, "role")?;
    let jwt = string_field(&body, "jwt")?.unwrap_or("");
    let logged_in = state.grants.jwt_login(role, jwt, remote_addr).await?;
    let admitted = &logged_in.admitted;
    let auth = json!({
        "client_token": logged_in.access.access_token,
        "accessor": logged_in.access.jti,
        "policies": admitted.policies,
        "token_policies": admitted.policies,
        "identity_policies": null,
        "metadata": admitted.metadata,
        "lease_duration": logged_in.access.expires_in,
        "renewable": false,
        "entity_id": "",
        "token_type": "service",
        "orphan": true,
        "mfa_requirement": null,
        "num_uses": admitted.num_uses,
    });
    Ok(envelope(StatusCode::OK, Value::Null, auth, Vec::new()))
}

fn rfc3339(at: i64) -> Value {
    DateTime::from_timestamp(at, 0)
        .map(|t| json!(t.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

async fn lookup_self(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, VaultApiError> {
    if method != Method::GET && !is_write(&method) {
        return Err(VaultApiError::UnsupportedOperation);
    }
    let token = presented_token(&headers).ok_or(VaultError::PermissionDenied)?;
    let TokenLookup { claims, uses_left } = state.grants.lookup_self(&token).await?;
    let now = state.tokens.now();
    let policies: Vec<&str> = claims
        .scope
        .as_deref()
        .map(|s| s.split(' ').collect())
        .unwrap_or_default();
    let (path, meta) = match &claims.vault_role {
        Some(role) => ("auth/jwt/login", json!({ "role": role })),
        None => ("oauth/token", Value::Null),
    };
    Ok(data(json!({
        "accessor": claims.jti,
        "creation_time": claims.iat,
        "creation_ttl": (claims.exp - claims.iat).max(0),
        "display_name": format!("jwt-{}", claims.sub),
        "entity_id": "",
        "expire_time": rfc3339(claims.exp),
        "explicit_max_ttl": 0,
        "issue_time": rfc3339(claims.iat),
        "meta": meta,
        "num_uses": uses_left.unwrap_or(0),
        "orphan": true,
        "path": path,
        "policies": policies,
        "renewable": false,
        "ttl": (claims.exp - now).max(0),
        "type": "service",
        "sub": claims.sub,
        "groups": claims.groups,
    })))
}

/// Reads and discards the body first, so the connection stays usable (keep-alive).
async fn no_handler(uri: Uri, _drained: Result<Bytes, BytesRejection>) -> VaultApiError {
    let path = uri
        .path()
        .trim_start_matches("/v1/")
        .trim_start_matches("/v1");
    VaultApiError::NoHandler(path.to_string())
}
