//! HTTP status codes are decided here, once per API family. Internals never reach the
//! client; 5xx causes are logged here (they carry no secrets).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::grant::GrantError;

/// Challenges sent with a 401 from the Fleet API.
const FLEET_CHALLENGE: &str =
    "ApiKey realm=\"fleetauth\", Bearer realm=\"fleetauth\", error=\"invalid_token\"";

/// An error of the Fleet API: `{"statusCode", "error", "message"}` as Fleet Server
/// answers, with the OAuth error code in `error`.
#[derive(Debug)]
pub enum FleetError {
    Grant(GrantError),
    BadRequest(String),
    UnsupportedMediaType,
    NotFound,
}

impl From<GrantError> for FleetError {
    fn from(e: GrantError) -> Self {
        Self::Grant(e)
    }
}

impl IntoResponse for FleetError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Self::Grant(e) => {
                let status = match e {
                    GrantError::InvalidRequest { .. }
                    | GrantError::InvalidClient { .. }
                    | GrantError::InvalidGrant { .. } => StatusCode::UNAUTHORIZED,
                    GrantError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                    GrantError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                if status.is_server_error() {
                    tracing::error!(error = %e, "fleet request failed");
                } else {
                    tracing::debug!(reason = e.reason(), "fleet request refused");
                }
                let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
                    "internal error".into()
                } else {
                    e.to_string()
                };
                (status, e.oauth_code(), message)
            }
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m.clone()),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "the body must be application/json".into(),
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "not found".into()),
        };
        let mut response = (
            status,
            Json(json!({ "statusCode": status.as_u16(), "error": code, "message": message })),
        )
            .into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(FLEET_CHALLENGE),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
