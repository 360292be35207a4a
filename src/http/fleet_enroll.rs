//! Fleet enrollment (SPEC §7): `POST /api/fleet/agents/enroll` (an agent trades an
//! enrollment token for its credentials, in Fleet Server's request and response
//! shapes) and the admin API of enrollment tokens, in Kibana Fleet's shapes:
//! `POST`/`GET /api/fleet/enrollment_api_keys`, `GET`/`DELETE
//! /api/fleet/enrollment_api_keys/{id}` (a `manage_security` principal, e.g. `elastic`).
//! Errors are the Fleet API's ([`FleetError`]).

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::dpop::{add_nonce, DpopParts};
use super::error::FleetError;
use super::fleet::{mirror_pair, presented_header};
use super::{no_store, AppState};
use crate::credentials::{CredentialError, Presented};
use crate::enrollment::{
    self, Creator, EnrollRequest, EnrolledCredential, EnrollmentError, NewEnrollmentToken,
};
use crate::grant::GrantError;
use crate::identity::privileges::Action;

/// The header by which an agent says it takes JWTs instead of an API key.
const ACCEPT_AUTH: &str = "x-elastic-agent-accept-auth";

impl From<EnrollmentError> for FleetError {
    fn from(e: EnrollmentError) -> Self {
        match e {
            EnrollmentError::Unauthorized {
                reason,
                description,
            } => GrantError::InvalidClient {
                reason,
                description,
            }
            .into(),
            EnrollmentError::BadRequest(m) => Self::BadRequest(m),
            EnrollmentError::Conflict(m) => Self::Conflict(m),
            EnrollmentError::RateLimited { retry_after, .. } => {
                Self::TooManyRequests(retry_after, e.to_string())
            }
            EnrollmentError::Grant(g) => g.into(),
            EnrollmentError::Store(s) => GrantError::from(s).into(),
        }
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "application/json" || v.ends_with("+json")
        })
}

pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, FleetError> {
    if !is_json(headers) {
        return Err(FleetError::UnsupportedMediaType);
    }
    serde_json::from_slice(body).map_err(|e| FleetError::BadRequest(format!("invalid body: {e}")))
}

/// Whether `X-Elastic-Agent-Accept-Auth` lists `JWT`.
fn accepts_jwt(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT_AUTH).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case("jwt"))
        })
    })
}

/// `POST /api/fleet/agents/enroll`.
pub async fn enroll(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FleetError> {
    let (id, secret) = match presented_header(&headers)? {
        Some(Presented::ApiKey { id, secret }) => (id, secret),
        Some(_) => {
            return Err(GrantError::invalid_client(
                "unsupported_scheme",
                "enrollment takes Authorization: ApiKey <enrollment token>",
            )
            .into())
        }
        None => return Err(GrantError::from(CredentialError::Missing).into()),
    };
    let request: EnrollRequest = json_body(&headers, &body)?;
    let accept_jwt = accepts_jwt(&headers);
    let dpop = DpopParts::read(&state, &method, &uri, &headers)?;
    let enrolled = state
        .enrollment
        .enroll(&id, &secret, request, accept_jwt, &dpop.request())
        .await?;
    let item = enrollment::response_item(&enrolled);
    let mut response = Json(json!({ "action": "created", "item": item })).into_response();
    if let EnrolledCredential::Pair(pair) = &enrolled.credential {
        mirror_pair(pair, response.headers_mut());
    }
    no_store(response.headers_mut());
    add_nonce(&state, response.headers_mut());
    Ok(response)
}

/// The caller of the enrollment-token admin API, who must hold `manage_security`: an
/// extractor (rejected in the Fleet API's format) of the endpoints without a body.
pub struct EnrollmentAdmin;

impl FromRequestParts<AppState> for EnrollmentAdmin {
    type Rejection = FleetError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        require_admin(state, &parts.headers).await.map(|_| Self)
    }
}

/// The caller of the enrollment-token admin API, who must hold `manage_security`, as
/// who creates a token.
async fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<Creator, FleetError> {
    require_privilege(
        state,
        headers,
        Action::ManageEnrollmentTokens,
        "manage enrollment tokens",
    )
    .await
}

/// The caller of an admin API of this family, if its credential authenticates and its
/// privileges allow `action` (403 naming the privileges that would).
pub(super) async fn require_privilege(
    state: &AppState,
    headers: &HeaderMap,
    action: Action,
    what: &str,
) -> Result<Creator, FleetError> {
    let presented =
        presented_header(headers)?.ok_or_else(|| GrantError::from(CredentialError::Missing))?;
    let principal = state.authenticator.authenticate(&presented).await?;
    if !principal.identity.privileges.allow(action) {
        return Err(FleetError::Forbidden(format!(
            "{} may not {what} (needs {})",
            principal.identity.username,
            action.granted_by().join(" or ")
        )));
    }
    Ok(Creator {
        username: principal.identity.username.clone(),
        realm: principal.identity.lookup_realm.name.to_string(),
        realm_type: principal.identity.lookup_realm.kind.to_string(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    policy_id: String,
    #[serde(default)]
    name: Option<String>,
    /// A duration, e.g. `30d`.
    #[serde(default)]
    expiration: Option<String>,
    #[serde(default)]
    max_uses: Option<u32>,
}

/// `POST /api/fleet/enrollment_api_keys`.
pub async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FleetError> {
    // Not the extractor: the body is read first, as at every other endpoint with one,
    // so that a slow body meets the edge's read timeout before the credential check.
    let creator = require_admin(&state, &headers).await?;
    let body: CreateBody = json_body(&headers, &body)?;
    let expires_at = match &body.expiration {
        None => None,
        Some(text) => {
            let lifetime = humantime::parse_duration(text.trim()).map_err(|e| {
                FleetError::BadRequest(format!(
                    "expiration {text:?} is not a duration like 30d: {e}"
                ))
            })?;
            Some(state.grants.tokens().now() + lifetime.as_secs().max(1) as i64)
        }
    };
    let created = state
        .enrollment
        .create_token(
            &creator,
            NewEnrollmentToken {
                policy_id: body.policy_id,
                name: body.name,
                expires_at,
                max_uses: body.max_uses,
            },
        )
        .await?;
    let mut item = serde_json::to_value(&created.token).unwrap_or_default();
    // Kibana's `api_key` is the value of `Authorization: ApiKey …`.
    item["api_key"] = json!(created.encoded);
    let mut response = Json(json!({ "action": "created", "item": item })).into_response();
    no_store(response.headers_mut());
    Ok(response)
}

#[derive(Deserialize)]
pub struct ListQuery {
    pub policy_id: Option<String>,
}

/// `GET /api/fleet/enrollment_api_keys[?policy_id=P]`.
pub async fn list_tokens(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
    _: EnrollmentAdmin,
) -> Result<Response, FleetError> {
    let items = state
        .enrollment
        .list_tokens(query.policy_id.as_deref())
        .await?;
    let total = items.len();
    Ok(
        Json(json!({ "items": items, "total": total, "page": 1, "perPage": total.max(1) }))
            .into_response(),
    )
}

/// `GET /api/fleet/enrollment_api_keys/{id}`.
pub async fn get_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _: EnrollmentAdmin,
) -> Result<Response, FleetError> {
    match state.enrollment.token(&id).await? {
        Some(item) => Ok(Json(json!({ "item": item })).into_response()),
        None => Err(FleetError::NotFound),
    }
}

/// `DELETE /api/fleet/enrollment_api_keys/{id}`: revokes the token at once.
pub async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _: EnrollmentAdmin,
) -> Result<Response, FleetError> {
    match state.enrollment.revoke_token(&id).await? {
        Some(_) => Ok((StatusCode::OK, Json(json!({ "action": "deleted" }))).into_response()),
        None => Err(FleetError::NotFound),
    }
}
