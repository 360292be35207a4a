//! The Elasticsearch-compatible security APIs (SPEC §4): `_authenticate`, the token
//! API, API keys, service-account tokens, users and roles, with Elasticsearch's paths,
//! JSON shapes and errors ([`EsApiError`]). Handlers take the path, the call ([`EsCall`]:
//! the query, checked first, and the caller; [`EsJsonCall`] with the JSON body) as
//! extractors (extract.rs), call the flows of `crate::es_api` and render; every answer carries
//! `Cache-Control: no-store`. Answering *as Elasticsearch* (product header, `GET /`,
//! compatible media types) is product.rs.
//!
//! Bodies are JSON (`Content-Type: application/json`, or none); query strings accept
//! the parameters of each API and Elasticsearch's generic `pretty`, `human`,
//! `error_trace` and `refresh` (ignored: writes are durable when answered, and
//! listings always see them).

mod extract;
mod product;
mod shapes;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Path;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub use extract::{AcceptedParams, EsCall, EsJsonCall, EsQuery, NoParams};
pub use product::{as_elasticsearch, info};

use super::error::EsApiError;
use super::no_store;
use crate::es_api::api_keys::GetApiKeyQuery;
use crate::es_api::tokens::TokensInvalidated;
use crate::es_api::{SecurityError, SecurityErrorKind};
use shapes::{
    ChangePasswordBody, CreateApiKeyBody, CreateTokenBody, InvalidateApiKeyBody,
    InvalidateTokenBody, PutUserBody,
};

/// A successful answer of this family: JSON, `Cache-Control: no-store`.
fn ok(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    no_store(response.headers_mut());
    response
}

/// `{"found": ...}`, 404 when nothing was found.
fn found(found: bool) -> Response {
    let status = if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    ok(status, json!({ "found": found }))
}

/// A listing, or Elasticsearch's `{}` with 404 when nothing named was found.
fn listed(result: Result<Value, SecurityError>) -> Result<Response, EsApiError> {
    match result {
        Ok(listing) => Ok(ok(StatusCode::OK, listing)),
        Err(e) if e.kind == SecurityErrorKind::NotFound => Ok(ok(StatusCode::NOT_FOUND, json!({}))),
        Err(e) => Err(e.into()),
    }
}

fn names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// The parameters of `GET /_security/api_key`.
pub struct GetApiKeyParams;

impl AcceptedParams for GetApiKeyParams {
    const NAMES: &'static [&'static str] = &[
        "id",
        "name",
        "username",
        "realm_name",
        "owner",
        "with_limited_by",
        "active_only",
    ];
}

/// The parameters of `GET /_security/user`.
pub struct GetUserParams;

impl AcceptedParams for GetUserParams {
    const NAMES: &'static [&'static str] = &["with_profile_uid"];
}

// ---- _authenticate ----

pub async fn authenticate(call: EsCall) -> Response {
    ok(
        StatusCode::OK,
        shapes::authenticate_json(&call.principal.identity),
    )
}

// ---- the token API ----

pub async fn create_token(
    EsJsonCall { call, body }: EsJsonCall<CreateTokenBody>,
) -> Result<Response, EsApiError> {
    let created = call.security.create_token(&call.principal, body).await?;
    Ok(ok(StatusCode::OK, shapes::created_token(&created)))
}

pub async fn invalidate_token(
    EsJsonCall { call, body }: EsJsonCall<InvalidateTokenBody>,
) -> Result<Response, EsApiError> {
    match call.security.invalidate_tokens(&call.principal, body).await {
        Ok(result) => Ok(ok(StatusCode::OK, shapes::tokens_invalidated(&result))),
        // Nothing found: Elasticsearch answers 404 with the (zero) counts.
        Err(e) if e.kind == SecurityErrorKind::NotFound => Ok(ok(
            StatusCode::NOT_FOUND,
            shapes::tokens_invalidated(&TokensInvalidated::default()),
        )),
        Err(e) => Err(e.into()),
    }
}

// ---- API keys ----

pub async fn create_api_key(
    EsJsonCall { call, body }: EsJsonCall<CreateApiKeyBody>,
) -> Result<Response, EsApiError> {
    let created = call.security.create_api_key(&call.principal, body).await?;
    Ok(ok(StatusCode::OK, shapes::created_api_key(&created)))
}

pub async fn get_api_keys(call: EsCall<GetApiKeyParams>) -> Result<Response, EsApiError> {
    let owner = call.query.flag("owner")?;
    let with_limited_by = call.query.flag("with_limited_by")?;
    let query = GetApiKeyQuery {
        id: call.query.get("id").cloned(),
        name: call.query.get("name").cloned(),
        username: call.query.get("username").cloned(),
        realm_name: call.query.get("realm_name").cloned(),
        owner,
        active_only: call.query.flag("active_only")?,
    };
    let keys = call.security.get_api_keys(&call.principal, query).await?;
    Ok(ok(StatusCode::OK, shapes::api_keys(&keys, with_limited_by)))
}

pub async fn invalidate_api_keys(
    EsJsonCall { call, body }: EsJsonCall<InvalidateApiKeyBody>,
) -> Result<Response, EsApiError> {
    let result = call
        .security
        .invalidate_api_keys(&call.principal, body)
        .await?;
    Ok(ok(StatusCode::OK, shapes::api_keys_invalidated(&result)))
}

// ---- service accounts ----

pub async fn create_service_token(
    Path((namespace, service, name)): Path<(String, String, String)>,
    call: EsCall,
) -> Result<Response, EsApiError> {
    let created = call
        .security
        .create_service_token(&call.principal, &namespace, &service, Some(&name))
        .await?;
    Ok(ok(StatusCode::OK, shapes::created_service_token(&created)))
}

pub async fn create_service_token_named_by_server(
    Path((namespace, service)): Path<(String, String)>,
    call: EsCall,
) -> Result<Response, EsApiError> {
    let created = call
        .security
        .create_service_token(&call.principal, &namespace, &service, None)
        .await?;
    Ok(ok(StatusCode::OK, shapes::created_service_token(&created)))
}

pub async fn delete_service_token(
    Path((namespace, service, name)): Path<(String, String, String)>,
    call: EsCall,
) -> Result<Response, EsApiError> {
    let deleted = call
        .security
        .delete_service_token(&call.principal, &namespace, &service, &name)
        .await?;
    Ok(found(deleted))
}

pub async fn service_credentials(
    Path((namespace, service)): Path<(String, String)>,
    call: EsCall,
) -> Result<Response, EsApiError> {
    let credentials = call
        .security
        .service_credentials(&call.principal, &namespace, &service)
        .await?;
    Ok(ok(
        StatusCode::OK,
        shapes::service_credentials(&credentials),
    ))
}

// ---- users ----

pub async fn put_user(
    Path(username): Path<String>,
    EsJsonCall { call, body }: EsJsonCall<PutUserBody>,
) -> Result<Response, EsApiError> {
    let created = call
        .security
        .put_user(&call.principal, &username, body)
        .await?;
    Ok(ok(StatusCode::OK, json!({ "created": created })))
}

pub async fn get_user(
    Path(list): Path<String>,
    call: EsCall<GetUserParams>,
) -> Result<Response, EsApiError> {
    let users = call
        .security
        .get_users(&call.principal, &names(&list))
        .await;
    listed(users.map(|u| shapes::users(&u)))
}

pub async fn get_all_users(call: EsCall<GetUserParams>) -> Result<Response, EsApiError> {
    let users = call.security.get_users(&call.principal, &[]).await;
    listed(users.map(|u| shapes::users(&u)))
}

pub async fn delete_user(
    Path(username): Path<String>,
    call: EsCall,
) -> Result<Response, EsApiError> {
    Ok(found(
        call.security
            .delete_user(&call.principal, &username)
            .await?,
    ))
}

pub async fn change_password(
    Path(username): Path<String>,
    EsJsonCall { call, body }: EsJsonCall<ChangePasswordBody>,
) -> Result<Response, EsApiError> {
    call.security
        .change_password(&call.principal, Some(&username), body)
        .await?;
    Ok(ok(StatusCode::OK, json!({})))
}

pub async fn change_own_password(
    EsJsonCall { call, body }: EsJsonCall<ChangePasswordBody>,
) -> Result<Response, EsApiError> {
    call.security
        .change_password(&call.principal, None, body)
        .await?;
    Ok(ok(StatusCode::OK, json!({})))
}

// ---- roles ----

pub async fn put_role(
    Path(name): Path<String>,
    EsJsonCall { call, body }: EsJsonCall,
) -> Result<Response, EsApiError> {
    let created = call
        .security
        .put_role(&call.principal, &name, body.take()?)
        .await?;
    Ok(ok(
        StatusCode::OK,
        json!({ "role": { "created": created } }),
    ))
}

pub async fn get_role(Path(list): Path<String>, call: EsCall) -> Result<Response, EsApiError> {
    let roles = call
        .security
        .get_roles(&call.principal, &names(&list))
        .await;
    listed(roles.map(|r| shapes::roles(&r)))
}

pub async fn get_all_roles(call: EsCall) -> Result<Response, EsApiError> {
    let roles = call.security.get_roles(&call.principal, &[]).await;
    listed(roles.map(|r| shapes::roles(&r)))
}

pub async fn delete_role(Path(name): Path<String>, call: EsCall) -> Result<Response, EsApiError> {
    Ok(found(
        call.security.delete_role(&call.principal, &name).await?,
    ))
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
