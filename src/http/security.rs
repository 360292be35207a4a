//! The Elasticsearch-compatible security APIs (SPEC §4): `_authenticate`, the token
//! API, API keys, service-account tokens, users and roles, with Elasticsearch's paths,
//! JSON shapes and errors ([`EsApiError`]). Handlers read the credential and the JSON
//! body, call the flows of `grant::security` and render; every answer carries
//! `Cache-Control: no-store`.
//!
//! Bodies are JSON (`Content-Type: application/json`, or none); query strings accept
//! the parameters of each API and Elasticsearch's generic `pretty`, `human`,
//! `error_trace` and `refresh` (ignored: writes are durable when answered, and
//! listings always see them).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::EsApiError;
use super::fleet::presented_header;
use super::{no_store, AppState};
use crate::grant::security::{GetApiKeyQuery, SecurityError, SecurityErrorKind};
use crate::grant::{GrantError, Principal};

/// Parameters every endpoint accepts and ignores.
const GENERIC_PARAMS: &[&str] = &["pretty", "human", "error_trace", "refresh"];

fn ok(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    no_store(response.headers_mut());
    response
}

/// The caller, through the authentication chain; Elasticsearch's 401 otherwise.
async fn caller(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Principal, EsApiError> {
    let presented = match presented_header(headers) {
        Ok(presented) => presented,
        Err(GrantError::InvalidRequest { description, .. }) => {
            return Err(SecurityError::unauthenticated(description).into())
        }
        Err(e) => return Err(SecurityError::unauthenticated(e.to_string()).into()),
    };
    Ok(state
        .security
        .authenticate(presented.as_ref(), uri.path())
        .await?)
}

/// The JSON body (`{}` when empty).
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, EsApiError> {
    let body = body.map_err(|r| EsApiError::Body(r.status(), r.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let text = content_type.to_str().unwrap_or("");
        let essence = text
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(EsApiError::ContentType(text.chars().take(100).collect()));
        }
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| SecurityError::parse(format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(SecurityError::parse("request body must be a JSON object").into());
    }
    Ok(value)
}

/// The query parameters, refusing unknown ones as Elasticsearch does.
fn query_params(
    raw: Option<String>,
    uri: &Uri,
    allowed: &[&str],
) -> Result<HashMap<String, String>, EsApiError> {
    let mut params = HashMap::new();
    for pair in raw
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(&text.replace('+', " "))
                .decode_utf8()
                .map(|t| t.into_owned())
                .map_err(|_| SecurityError::illegal_argument("the query string is not valid UTF-8"))
        };
        let (name, value) = (decode(name)?, decode(value)?);
        if !allowed.contains(&name.as_str()) && !GENERIC_PARAMS.contains(&name.as_str()) {
            return Err(SecurityError::illegal_argument(format!(
                "request [{}] contains unrecognized parameter: [{name}]",
                uri.path()
            ))
            .into());
        }
        params.insert(name, value);
    }
    Ok(params)
}

fn bool_param(params: &HashMap<String, String>, name: &str) -> Result<bool, EsApiError> {
    match params.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("" | "true") => Ok(true),
        Some(other) => Err(SecurityError::illegal_argument(format!(
            "Failed to parse value [{other}] as only [true] or [false] are allowed."
        ))
        .into()),
    }
}

fn names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

// ---- _authenticate ----

pub async fn authenticate(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    Ok(ok(
        StatusCode::OK,
        crate::grant::security::authenticate_json(&principal.identity),
    ))
}

// ---- the token API ----

pub async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let body = json_body(&headers, body)?;
    let created = state.security.create_token(&principal, body).await?;
    Ok(ok(StatusCode::OK, json!(created)))
}

pub async fn invalidate_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let body = json_body(&headers, body)?;
    match state.security.invalidate_tokens(&principal, body).await {
        Ok(result) => Ok(ok(StatusCode::OK, json!(result))),
        // Nothing found: Elasticsearch answers 404 with the (zero) counts.
        Err(e) if e.kind == SecurityErrorKind::NotFound => Ok(ok(
            StatusCode::NOT_FOUND,
            json!({ "invalidated_tokens": 0, "previously_invalidated_tokens": 0, "error_count": 0, "error_details": [] }),
        )),
        Err(e) => Err(e.into()),
    }
}

// ---- API keys ----

pub async fn create_api_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let body = json_body(&headers, body)?;
    let created = state.security.create_api_key(&principal, body).await?;
    Ok(ok(StatusCode::OK, json!(created)))
}

pub async fn get_api_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, EsApiError> {
    let params = query_params(
        query,
        &uri,
        &[
            "id",
            "name",
            "username",
            "realm_name",
            "owner",
            "with_limited_by",
            "active_only",
        ],
    )?;
    let principal = caller(&state, &headers, &uri).await?;
    let query = GetApiKeyQuery {
        id: params.get("id").cloned(),
        name: params.get("name").cloned(),
        username: params.get("username").cloned(),
        realm_name: params.get("realm_name").cloned(),
        owner: bool_param(&params, "owner")?,
        with_limited_by: bool_param(&params, "with_limited_by")?,
        active_only: bool_param(&params, "active_only")?,
    };
    let keys = state.security.get_api_keys(&principal, query).await?;
    Ok(ok(StatusCode::OK, keys))
}

pub async fn invalidate_api_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let body = json_body(&headers, body)?;
    let result = state.security.invalidate_api_keys(&principal, body).await?;
    Ok(ok(StatusCode::OK, json!(result)))
}

// ---- service accounts ----

pub async fn create_service_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    Path((namespace, service, name)): Path<(String, String, String)>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let created = state
        .security
        .create_service_token(&principal, &namespace, &service, Some(&name))
        .await?;
    Ok(ok(StatusCode::OK, json!(created)))
}

pub async fn create_service_token_named_by_server(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    Path((namespace, service)): Path<(String, String)>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let created = state
        .security
        .create_service_token(&principal, &namespace, &service, None)
        .await?;
    Ok(ok(StatusCode::OK, json!(created)))
}

pub async fn delete_service_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    Path((namespace, service, name)): Path<(String, String, String)>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let found = state
        .security
        .delete_service_token(&principal, &namespace, &service, &name)
        .await?;
    let status = if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    Ok(ok(status, json!({ "found": found })))
}

pub async fn service_credentials(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    Path((namespace, service)): Path<(String, String)>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let credentials = state
        .security
        .service_credentials(&principal, &namespace, &service)
        .await?;
    Ok(ok(StatusCode::OK, credentials))
}

// ---- users ----

pub async fn put_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    Path(username): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let body = json_body(&headers, body)?;
    let created = state.security.put_user(&principal, &username, body).await?;
    Ok(ok(StatusCode::OK, json!({ "created": created })))
}

async fn users(
    state: AppState,
    headers: HeaderMap,
    uri: Uri,
    query: Option<String>,
    names: Vec<String>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &["with_profile_uid"])?;
    let principal = caller(&state, &headers, &uri).await?;
    match state.security.get_users(&principal, &names).await {
        Ok(users) => Ok(ok(StatusCode::OK, users)),
        Err(e) if e.kind == SecurityErrorKind::NotFound => Ok(ok(StatusCode::NOT_FOUND, json!({}))),
        Err(e) => Err(e.into()),
    }
}

pub async fn get_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    Path(list): Path<String>,
) -> Result<Response, EsApiError> {
    users(state, headers, uri, query, names(&list)).await
}

pub async fn get_all_users(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, EsApiError> {
    users(state, headers, uri, query, Vec::new()).await
}

pub async fn delete_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    Path(username): Path<String>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let found = state.security.delete_user(&principal, &username).await?;
    let status = if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    Ok(ok(status, json!({ "found": found })))
}

async fn password(
    state: AppState,
    headers: HeaderMap,
    uri: Uri,
    query: Option<String>,
    username: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let body = json_body(&headers, body)?;
    state
        .security
        .change_password(&principal, username.as_deref(), body)
        .await?;
    Ok(ok(StatusCode::OK, json!({})))
}

pub async fn change_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    Path(username): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, EsApiError> {
    password(state, headers, uri, query, Some(username), body).await
}

pub async fn change_own_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, EsApiError> {
    password(state, headers, uri, query, None, body).await
}

// ---- roles ----

pub async fn put_role(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let body = json_body(&headers, body)?;
    let created = state.security.put_role(&principal, &name, body).await?;
    Ok(ok(
        StatusCode::OK,
        json!({ "role": { "created": created } }),
    ))
}

async fn roles(
    state: AppState,
    headers: HeaderMap,
    uri: Uri,
    query: Option<String>,
    names: Vec<String>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    match state.security.get_roles(&principal, &names).await {
        Ok(roles) => Ok(ok(StatusCode::OK, roles)),
        Err(e) if e.kind == SecurityErrorKind::NotFound => Ok(ok(StatusCode::NOT_FOUND, json!({}))),
        Err(e) => Err(e.into()),
    }
}

pub async fn get_role(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    Path(list): Path<String>,
) -> Result<Response, EsApiError> {
    roles(state, headers, uri, query, names(&list)).await
}

pub async fn get_all_roles(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, EsApiError> {
    roles(state, headers, uri, query, Vec::new()).await
}

pub async fn delete_role(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    Path(name): Path<String>,
) -> Result<Response, EsApiError> {
    query_params(query, &uri, &[])?;
    let principal = caller(&state, &headers, &uri).await?;
    let found = state.security.delete_role(&principal, &name).await?;
    let status = if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    Ok(ok(status, json!({ "found": found })))
}

/// Any other path under `/_security`: Elasticsearch's answer for a path it has no
/// handler for. Reads and discards the body first, so the connection stays usable.
pub async fn no_handler(
    method: axum::http::Method,
    uri: Uri,
    _drained: Result<Bytes, BytesRejection>,
) -> Response {
    EsApiError::Security(SecurityError::illegal_argument(format!(
        "no handler found for uri [{}] and method [{method}]",
        uri.path()
    )))
    .into_response()
}
