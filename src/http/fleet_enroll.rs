//! Fleet enrollment (SPEC §7): `POST /api/fleet/agents/enroll` (an agent trades an
//! enrollment token for its credentials, in Fleet Server's request and response
//! shapes) and the admin API of enrollment tokens, in Kibana Fleet's shapes:
//! `POST`/`GET /api/fleet/enrollment_api_keys`, `GET`/`DELETE
//! /api/fleet/enrollment_api_keys/{id}` (a `manage_security` principal, e.g. `elastic`).
//! Errors are the Fleet API's ([`FleetError`]).

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::dpop::{add_nonce, DpopParts};
use super::error::FleetError;
use super::fleet::{mirror_pair, presented_header};
use super::fleet_admin::{
    json_body, read_body, FleetAdmin, FleetAdminJson, ManageEnrollmentTokens,
};
use super::{no_store, AppState};
use crate::credentials::{CredentialError, Presented};
use crate::enrollment::{self, EnrollRequest, EnrolledCredential, NewEnrollmentToken};
use crate::grant::GrantError;

/// The header by which an agent says it takes JWTs instead of an API key.
const ACCEPT_AUTH: &str = "x-elastic-agent-accept-auth";

/// Whether `X-Elastic-Agent-Accept-Auth` lists `JWT`.
fn accepts_jwt(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT_AUTH).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case("jwt"))
        })
    })
}

/// The call of `POST /api/fleet/agents/enroll`: the enrollment token, presented as
/// `Authorization: ApiKey`, and the request. The body is read first, then the header
/// checked, then the body's JSON.
pub struct EnrollCall {
    id: String,
    secret: String,
    request: EnrollRequest,
}

impl<S: Send + Sync> FromRequest<S> for EnrollCall {
    type Rejection = Response;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, bytes) = read_body(request).await?;
        let refused = |e: FleetError| e.into_response();
        let (id, secret) = match presented_header(&parts.headers).map_err(|e| refused(e.into()))? {
            Some(Presented::ApiKey { id, secret }) => (id, secret),
            Some(_) => {
                return Err(refused(
                    GrantError::invalid_client(
                        "unsupported_scheme",
                        "enrollment takes Authorization: ApiKey <enrollment token>",
                    )
                    .into(),
                ))
            }
            None => return Err(refused(GrantError::from(CredentialError::Missing).into())),
        };
        let request = json_body(&parts.headers, &bytes).map_err(refused)?;
        Ok(Self {
            id,
            secret,
            request,
        })
    }
}

/// `POST /api/fleet/agents/enroll`.
pub async fn enroll(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    call: EnrollCall,
) -> Result<Response, FleetError> {
    let accept_jwt = accepts_jwt(&headers);
    let dpop = DpopParts::read(&state, &method, &uri, &headers)?;
    let enrolled = state
        .enrollment
        .enroll(
            &call.id,
            &call.secret,
            call.request,
            accept_jwt,
            &dpop.request(),
        )
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

/// `POST /api/fleet/enrollment_api_keys`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
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
    FleetAdminJson { admin, body }: FleetAdminJson<ManageEnrollmentTokens, CreateBody>,
) -> Result<Response, FleetError> {
    let expires_at = match &body.expiration {
        None => None,
        Some(text) => {
            let lifetime = humantime::parse_duration(text.trim()).map_err(|e| {
                FleetError::BadRequest(format!(
                    "expiration {text:?} is not a duration like 30d: {e}"
                ))
            })?;
            Some(state.tokens.now() + lifetime.as_secs().max(1) as i64)
        }
    };
    let created = state
        .enrollment
        .create_token(
            &admin.creator,
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
    _: FleetAdmin<ManageEnrollmentTokens>,
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
    _: FleetAdmin<ManageEnrollmentTokens>,
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
    _: FleetAdmin<ManageEnrollmentTokens>,
) -> Result<Response, FleetError> {
    match state.enrollment.revoke_token(&id).await? {
        Some(_) => Ok((StatusCode::OK, Json(json!({ "action": "deleted" }))).into_response()),
        None => Err(FleetError::NotFound),
    }
}
