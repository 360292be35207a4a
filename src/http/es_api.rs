//! The Elasticsearch-compatible security APIs (SPEC §4): `_authenticate`, the token
//! API, API keys, service-account tokens, users and roles, with Elasticsearch's paths,
//! JSON shapes and errors ([`EsApiError`]). Handlers read the credential and the JSON
//! body, call the flows of `crate::es_api` and render; every answer carries
//! `Cache-Control: no-store`.
//!
//! Interoperability choice (SPEC §7, setting `elasticsearch_api.product_header`, on by
//! default): the official Elasticsearch clients refuse any successful answer that does
//! not carry `X-Elastic-Product: Elasticsearch`, and read `GET /` to learn the server's
//! version. So this family answers as Elasticsearch does ([`as_elasticsearch`]): the
//! header on every answer of `/_security/...` and `/`, and at `/` the info document in
//! Elasticsearch's shape ([`info`]), naming REST API version 9 (the clients' vendor
//! media types `application/vnd.elasticsearch+json; compatible-with=8` or `=9` are
//! accepted, and answered in kind).
//!
//! Bodies are JSON (`Content-Type: application/json`, or none); query strings accept
//! the parameters of each API and Elasticsearch's generic `pretty`, `human`,
//! `error_trace` and `refresh` (ignored: writes are durable when answered, and
//! listings always see them).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::EsApiError;
use super::fleet::presented_header;
use super::{no_store, AppState};
use crate::authentication::Principal;
use crate::es_api::api_keys::GetApiKeyQuery;
use crate::es_api::{SecurityError, SecurityErrorKind};
use crate::grant::GrantError;

/// The Elasticsearch version this family answers as (its REST API is version 9's,
/// for the part implemented here).
const ES_VERSION: &str = "9.1.0";
/// The REST API compatibility versions accepted in `compatible-with` (as Elasticsearch
/// 9 does: its own and the previous major).
const COMPATIBLE_WITH: [&str; 2] = ["8", "9"];
/// Elasticsearch's vendor media type.
const ES_MEDIA_TYPE: &str = "application/vnd.elasticsearch+json";

/// Whether a path belongs to the Elasticsearch-compatible family.
fn is_es_path(path: &str) -> bool {
    path == "/" || path == "/_security" || path.starts_with("/_security/")
}

/// The `compatible-with` version a media type asks for, if any:
/// `application/vnd.elasticsearch+json; compatible-with=8` → `Some("8")`.
fn compatible_with(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    text.split(',').find_map(|media_type| {
        let mut parts = media_type.split(';');
        let essence = parts.next()?.trim();
        if !essence
            .to_ascii_lowercase()
            .starts_with("application/vnd.elasticsearch+")
        {
            return None;
        }
        parts.find_map(|param| {
            let (name, value) = param.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("compatible-with")
                .then(|| value.trim().trim_matches('"').to_string())
        })
    })
}

/// The middleware of the Elasticsearch-compatible family (on the whole router, acting
/// on this family's paths only, so that answers of the outer layers (413, 408) get it
/// too): checks the requested compatibility version, and, when
/// `elasticsearch_api.product_header` is on, marks the answer as Elasticsearch's and
/// answers a vendor `Accept` in kind.
pub async fn as_elasticsearch(
    State(product_header): State<bool>,
    request: Request,
    next: Next,
) -> Response {
    if !product_header || !is_es_path(request.uri().path()) {
        return next.run(request).await;
    }
    let mut accept_version = None;
    for name in [header::ACCEPT, header::CONTENT_TYPE] {
        for value in request.headers().get_all(&name) {
            if let Some(version) = compatible_with(value) {
                if !COMPATIBLE_WITH.contains(&version.as_str()) {
                    let shown: String = value.to_str().unwrap_or("").chars().take(100).collect();
                    let mut response = EsApiError::MediaType(format!(
                        "Invalid media-type value on headers [{name}]: compatible-with={} is not supported (only {}): {shown}",
                        version.chars().take(10).collect::<String>(),
                        COMPATIBLE_WITH.join(", ")
                    ))
                    .into_response();
                    mark_as_elasticsearch(&mut response, None);
                    return response;
                }
                if name == header::ACCEPT {
                    accept_version = Some(version);
                }
            }
        }
    }
    let mut response = next.run(request).await;
    mark_as_elasticsearch(&mut response, accept_version.as_deref());
    response
}

fn mark_as_elasticsearch(response: &mut Response, accept_version: Option<&str>) {
    let headers = response.headers_mut();
    headers.insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if let (Some(version), true) = (accept_version, is_json) {
        if let Ok(value) =
            HeaderValue::from_str(&format!("{ES_MEDIA_TYPE};compatible-with={version}"))
        {
            headers.insert(header::CONTENT_TYPE, value);
        }
    }
}

/// `GET /` (and `HEAD /`, the clients' `ping`): Elasticsearch's info document, as the
/// official clients read it. No credential is needed: it tells only what the product
/// header already tells, and the deployment's public id. 404 when
/// `elasticsearch_api.product_header` is off.
pub async fn info(State(state): State<AppState>) -> Response {
    if !state.settings.es_product_header {
        return super::not_found().await.into_response();
    }
    let tokens = state.grants.tokens();
    // Elasticsearch's cluster UUIDs are 16 bytes in URL-safe base64 (22 characters).
    let cluster_uuid = uuid::Uuid::parse_str(tokens.deployment_id())
        .map(|id| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
        })
        .unwrap_or_else(|_| tokens.deployment_id().to_string());
    Json(json!({
        "name": "fleetauth",
        "cluster_name": "fleetauth",
        "cluster_uuid": cluster_uuid,
        "version": {
            "number": ES_VERSION,
            "build_flavor": "default",
            "build_type": "fleetauth",
            "build_hash": concat!("fleetauth-", env!("CARGO_PKG_VERSION")),
            "build_date": "2026-01-01T00:00:00.000Z",
            "build_snapshot": false,
            "lucene_version": "10.2.2",
            "minimum_wire_compatibility_version": "8.19.0",
            "minimum_index_compatibility_version": "8.0.0",
        },
        "tagline": "You Know, for Search",
    }))
    .into_response()
}

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
        crate::es_api::authenticate_json(&principal.identity),
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
