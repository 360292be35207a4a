// Over 600 lines on purpose: every HTTP status and error body of every API family is decided here, once (STYLE.md), so the families can be compared side by side.
//! HTTP status codes are decided here, once per API family. Internals never reach the
//! client; 5xx causes are logged here (they carry no secrets).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::enrollment::EnrollmentError;
use crate::es_api::{SecurityError, SecurityErrorKind};
use crate::grant::{GrantError, LoginError};
use crate::secrets::{retry_after_secs, Throttled};
use crate::store::StoreError;
use crate::vault::VaultError;

/// `Retry-After` of a throttled credential check (429): when the refusing bucket has a
/// token again, or the verifier's queue should have drained.
fn retry_after(headers: &mut axum::http::HeaderMap, throttled: &Throttled) {
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(throttled.retry_after_secs()),
    );
}

/// The API family a request belongs to, by its path prefix (SPEC §4): the format of
/// every error it is answered with, including those the HTTP layers decide themselves
/// (404 of an unknown path, 405, 408, 413, 414, 431, a handler's panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFamily {
    /// `/api/fleet/...`
    Fleet,
    /// `/oauth/...` and `/.well-known/...`
    OAuth,
    /// `/_security/...`, and `/` (Elasticsearch's info document)
    Elasticsearch,
    /// `/v1`, `/v1/...`
    Vault,
    /// Anything else (`/metrics`, `/healthz`, unknown paths): the Fleet format.
    Other,
}

impl ApiFamily {
    pub fn of(path: &str) -> Self {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/api/fleet") {
            Self::Fleet
        } else if under("/oauth") || under("/.well-known") {
            Self::OAuth
        } else if under("/_security") || path == "/" {
            // `GET /` is Elasticsearch's info document (`http::es_api::info`).
            Self::Elasticsearch
        } else if under("/v1") {
            Self::Vault
        } else {
            Self::Other
        }
    }

    /// An error the HTTP layers decided (`status`, and a reason without internals), in
    /// this family's format. `method` and `path` fill Elasticsearch's 405 message.
    pub fn layer_error(self, status: StatusCode, method: &str, path: &str) -> Response {
        let reason = layer_reason(status);
        match self {
            Self::Fleet | Self::Other => FleetError::Http(status, reason.into()).into_response(),
            Self::OAuth => OAuthError::Body(status, reason.into()).into_response(),
            Self::Vault => match status {
                StatusCode::NOT_FOUND => {
                    let path = path.trim_start_matches("/v1/").trim_start_matches("/v1");
                    VaultApiError::NoHandler(path.to_string()).into_response()
                }
                StatusCode::METHOD_NOT_ALLOWED => {
                    VaultApiError::UnsupportedOperation.into_response()
                }
                _ => VaultApiError::Body(status, reason.into()).into_response(),
            },
            Self::Elasticsearch => match status {
                // Elasticsearch's own 405 is a flat error naming the method.
                StatusCode::METHOD_NOT_ALLOWED => EsApiError::Flat(
                    status,
                    format!("Incorrect HTTP method for uri [{path}] and method [{method}]"),
                )
                .into_response(),
                StatusCode::NOT_FOUND => EsApiError::Security(SecurityError::illegal_argument(
                    format!("no handler found for uri [{path}] and method [{method}]"),
                ))
                .into_response(),
                _ => EsApiError::Http(status, reason.into()).into_response(),
            },
        }
    }
}

/// What each status decided by the HTTP layers means, for the client.
fn layer_reason(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "no such endpoint",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed for this endpoint",
        StatusCode::REQUEST_TIMEOUT => "the request took too long (request_timeout)",
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large (max_body_bytes)",
        StatusCode::URI_TOO_LONG => "the request target is too long (connections.max_uri_bytes)",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "the request headers are too large (connections.max_header_bytes)"
        }
        s if s.is_server_error() => "internal error",
        _ => "the request was refused",
    }
}

/// The Fleet-format `error` code of a status decided by the HTTP layers.
fn fleet_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        s if s.is_server_error() => "internal_error",
        _ => "invalid_request",
    }
}

/// The Elasticsearch error `type` of a status decided by the HTTP layers (the names
/// Elasticsearch's HTTP layer uses).
fn es_layer_type(status: StatusCode) -> &'static str {
    match status {
        StatusCode::REQUEST_TIMEOUT => "timeout_exception",
        StatusCode::PAYLOAD_TOO_LARGE => "content_too_long_exception",
        StatusCode::URI_TOO_LONG => "too_long_http_line_exception",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "too_long_http_header_exception",
        s if s.is_server_error() => "exception",
        _ => "illegal_argument_exception",
    }
}

/// Where a grant refusal is answered: the columns of [`grant_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrantDoor {
    /// A Fleet token endpoint (`authenticate`, `enroll`, the admin APIs).
    FleetToken,
    /// A Fleet protected resource (`whoami`): DPoP refusals are 401 with a challenge.
    FleetResource,
    /// The OAuth2 API (RFC 6749 §5.2).
    OAuth,
    /// The Vault-compatible API: a token that is not valid is `permission denied`.
    Vault,
}

impl GrantDoor {
    fn family(self) -> &'static str {
        match self {
            Self::FleetToken | Self::FleetResource => "fleet",
            Self::OAuth => "oauth",
            Self::Vault => "vault",
        }
    }
}

/// The status of every grant refusal at every door: one row per refusal, one column
/// per door (Fleet token endpoint, Fleet resource, OAuth, Vault).
fn grant_status(e: &GrantError, door: GrantDoor) -> StatusCode {
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    const UNAUTH: StatusCode = StatusCode::UNAUTHORIZED;
    const DENIED: StatusCode = StatusCode::FORBIDDEN;
    let [fleet_token, fleet_resource, oauth, vault] = match e {
        GrantError::InvalidDpopProof { .. } | GrantError::UseDpopNonce { .. } => {
            [BAD, UNAUTH, BAD, DENIED]
        }
        GrantError::InvalidRequest { .. }
        | GrantError::InvalidGrant { .. }
        | GrantError::LostRace(_) => [UNAUTH, UNAUTH, BAD, DENIED],
        GrantError::InvalidClient { .. } => [UNAUTH, UNAUTH, UNAUTH, DENIED],
        // Decided by the OAuth2 grants only; never produced for Fleet requests.
        GrantError::UnauthorizedClient { .. }
        | GrantError::UnsupportedGrantType { .. }
        | GrantError::InvalidScope { .. }
        | GrantError::InvalidTarget { .. }
        | GrantError::UnsupportedTokenType { .. } => [BAD, BAD, BAD, DENIED],
        GrantError::Throttled(_) => [StatusCode::TOO_MANY_REQUESTS; 4],
        GrantError::Unavailable(_) => [StatusCode::SERVICE_UNAVAILABLE; 4],
        GrantError::Internal(_) => [StatusCode::INTERNAL_SERVER_ERROR; 4],
    };
    match door {
        GrantDoor::FleetToken => fleet_token,
        GrantDoor::FleetResource => fleet_resource,
        GrantDoor::OAuth => oauth,
        GrantDoor::Vault => vault,
    }
}

/// What a client is told of a grant refusal: its description, but never our internals
/// (a store's or a hashing failure's text stays in the log).
fn grant_message(e: &GrantError) -> String {
    match e {
        GrantError::Internal(_) => "internal error".to_string(),
        GrantError::Unavailable(_) => STORE_UNAVAILABLE.to_string(),
        other => other.to_string(),
    }
}

/// A grant refusal's status at `door`, logged once: a 5xx with its cause (which carries
/// no secret), a refusal by its reason.
fn grant_refusal(e: &GrantError, door: GrantDoor) -> StatusCode {
    let status = grant_status(e, door);
    let family = door.family();
    if status.is_server_error() {
        tracing::error!(error = %e, family, "request failed");
    } else {
        tracing::debug!(
            reason = e.reason(),
            code = e.oauth_code(),
            family,
            "request refused"
        );
    }
    status
}

/// A 503 (the store, or the keys of the JWT auth method, did not answer) asks the
/// client to retry in a second, in every family.
fn retry_soon_if_unavailable(headers: &mut axum::http::HeaderMap, status: StatusCode) {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
}

/// What every family says of a store that does not answer (503).
const STORE_UNAVAILABLE: &str = "the store is temporarily unavailable";

/// Challenges sent with a 401 from the Fleet API.
const FLEET_CHALLENGE: &str =
    "ApiKey realm=\"fleetauth\", Bearer realm=\"fleetauth\", error=\"invalid_token\"";

/// The DPoP challenge of a protected resource (RFC 9449 §7.1), with the error code.
fn dpop_challenge(code: &str) -> String {
    format!(
        "DPoP algs=\"{}\", error=\"{code}\"",
        crate::tokens::dpop::ALGORITHMS.join(" ")
    )
}

/// An error of the Fleet API: `{"statusCode", "error", "message"}` as Fleet Server
/// answers, with the OAuth error code in `error`.
#[derive(Debug)]
pub enum FleetError {
    /// A refusal at a token endpoint (`authenticate`, `enroll`): DPoP errors are 400.
    Grant(GrantError),
    /// A refusal at a protected resource (`whoami`): DPoP errors are 401 with a `DPoP`
    /// challenge (RFC 9449 §7.1).
    AtResource(GrantError),
    BadRequest(String),
    UnsupportedMediaType,
    NotFound,
    /// Decided by the HTTP layers (405, 408, 413, 414, 431, 500 of a panic).
    Http(StatusCode, String),
    /// The caller may not do this (authenticated, but without the privilege).
    Forbidden(String),
    /// The request conflicts with what exists (an agent id in use).
    Conflict(String),
    /// Too many requests: retry after this many seconds.
    TooManyRequests(u64, String),
}

impl From<GrantError> for FleetError {
    fn from(e: GrantError) -> Self {
        Self::Grant(e)
    }
}

/// An enrollment refusal in the Fleet format (`POST /api/fleet/agents/enroll` and the
/// enrollment-token admin API).
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

impl IntoResponse for FleetError {
    fn into_response(self) -> Response {
        let mut challenge: Option<String> = None;
        let mut retry_after: Option<u64> = None;
        let (status, code, message) = match &self {
            Self::Grant(e) | Self::AtResource(e) => {
                let door = match self {
                    Self::AtResource(_) => GrantDoor::FleetResource,
                    _ => GrantDoor::FleetToken,
                };
                if door == GrantDoor::FleetResource && e.is_dpop() {
                    challenge = Some(dpop_challenge(e.oauth_code()));
                }
                if let GrantError::Throttled(t) = e {
                    retry_after = Some(t.retry_after_secs());
                }
                (grant_refusal(e, door), e.oauth_code(), grant_message(e))
            }
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m.clone()),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "the body must be application/json".into(),
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "not found".into()),
            Self::Http(status, reason) => (*status, fleet_code(*status), reason.clone()),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            Self::TooManyRequests(after, m) => {
                retry_after = Some(*after);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    m.clone(),
                )
            }
        };
        let nonce = match &self {
            Self::Grant(e) | Self::AtResource(e) => e.dpop_nonce().map(str::to_string),
            _ => None,
        };
        let mut response = (
            status,
            Json(json!({ "statusCode": status.as_u16(), "error": code, "message": message })),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(nonce) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            headers.insert(super::dpop::DPOP_NONCE, nonce);
        }
        if let Some(after) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(after));
        }
        if status == StatusCode::UNAUTHORIZED {
            let value = match challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
                Some(dpop) => dpop,
                None => HeaderValue::from_static(FLEET_CHALLENGE),
            };
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        retry_soon_if_unavailable(headers, status);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// The challenge sent with `invalid_client` from the OAuth2 API (RFC 6749 §5.2).
const OAUTH_CHALLENGE: &str = "Basic realm=\"fleetauth\"";

/// An error of the OAuth2 API: RFC 6749 §5.2 JSON, `{"error", "error_description"}`.
#[derive(Debug)]
pub enum OAuthError {
    Grant(GrantError),
    /// The request body could not be read (too large, cut short): its status and why.
    Body(StatusCode, String),
}

impl From<GrantError> for OAuthError {
    fn from(e: GrantError) -> Self {
        Self::Grant(e)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let (status, code, description) = match &self {
            Self::Grant(e) => (
                grant_refusal(e, GrantDoor::OAuth),
                e.oauth_code(),
                grant_message(e),
            ),
            Self::Body(status, why) => {
                let code = if status.is_server_error() {
                    "server_error"
                } else {
                    "invalid_request"
                };
                (*status, code, why.clone())
            }
        };
        let nonce = match &self {
            Self::Grant(e) => e.dpop_nonce().map(str::to_string),
            Self::Body(..) => None,
        };
        let mut response = (
            status,
            Json(json!({ "error": code, "error_description": description })),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(nonce) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            headers.insert(super::dpop::DPOP_NONCE, nonce);
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(OAUTH_CHALLENGE),
            );
        }
        if let Self::Grant(GrantError::Throttled(t)) = &self {
            retry_after(headers, t);
        }
        retry_soon_if_unavailable(headers, status);
        super::no_store(headers);
        response
    }
}

/// An error of the Vault-compatible API (`/v1/...`): Vault's `{"errors": [...]}` with
/// Vault's statuses: 400 for bad input, an unknown role or a JWT that does not pass; 403
/// `permission denied` for a missing or wrong token and for a caller outside a role's
/// `bound_cidrs`; 404 for unknown paths and absent entries; 405 for unsupported
/// operations. Never a 5xx for bad input.
#[derive(Debug)]
pub enum VaultApiError {
    Vault(VaultError),
    /// A grant-layer failure: a token presented to `lookup-self` that is not valid (403),
    /// or a store failure while issuing.
    Grant(GrantError),
    BadRequest(String),
    /// An absent entry: 404 with an empty `errors`, as Vault answers.
    NotFound,
    /// A path no handler serves.
    NoHandler(String),
    UnsupportedOperation,
    /// The request body could not be read (too large, cut short): its status and why.
    Body(StatusCode, String),
}

impl From<VaultError> for VaultApiError {
    fn from(e: VaultError) -> Self {
        Self::Vault(e)
    }
}

impl From<GrantError> for VaultApiError {
    fn from(e: GrantError) -> Self {
        Self::Grant(e)
    }
}

impl From<LoginError> for VaultApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Refused(e) => Self::Vault(e),
            LoginError::Grant(e) => Self::Grant(e),
        }
    }
}

const PERMISSION_DENIED: &str = "permission denied";

fn store_status(e: &StoreError) -> (StatusCode, String) {
    match e {
        StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, STORE_UNAVAILABLE.into()),
        StoreError::Contended(_) => (
            StatusCode::CONFLICT,
            "the record was changed concurrently; retry".into(),
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
    }
}

impl IntoResponse for VaultApiError {
    fn into_response(self) -> Response {
        let (status, errors): (StatusCode, Vec<String>) = match &self {
            Self::Vault(e) => {
                let (status, message) = match e {
                    VaultError::Invalid { message, .. } | VaultError::NoRole { message, .. } => {
                        (StatusCode::BAD_REQUEST, message.clone())
                    }
                    VaultError::PermissionDenied => {
                        (StatusCode::FORBIDDEN, PERMISSION_DENIED.into())
                    }
                    VaultError::KeysUnavailable(_) => {
                        (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    }
                    VaultError::Store(s) => store_status(s),
                };
                if status.is_server_error() {
                    tracing::error!(error = %e, "vault request failed");
                } else {
                    tracing::debug!(reason = e.reason(), "vault request refused");
                }
                (status, vec![message])
            }
            Self::Grant(e) => {
                let status = grant_refusal(e, GrantDoor::Vault);
                // A token that is not valid: Vault says no more than this.
                let message = if status == StatusCode::FORBIDDEN {
                    PERMISSION_DENIED.to_string()
                } else {
                    grant_message(e)
                };
                (status, vec![message])
            }
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, vec![m.clone()]),
            Self::NotFound => (StatusCode::NOT_FOUND, Vec::new()),
            Self::NoHandler(path) => (
                StatusCode::NOT_FOUND,
                vec![format!(
                    "no handler for route {path:?}. route entry not found."
                )],
            ),
            Self::UnsupportedOperation => (
                StatusCode::METHOD_NOT_ALLOWED,
                vec!["unsupported operation".into()],
            ),
            Self::Body(status, why) => (*status, vec![why.clone()]),
        };
        let mut response = (status, Json(json!({ "errors": errors }))).into_response();
        let headers = response.headers_mut();
        if let Self::Grant(GrantError::Throttled(t)) = &self {
            retry_after(headers, t);
        }
        retry_soon_if_unavailable(headers, status);
        super::no_store(headers);
        response
    }
}

/// The challenges Elasticsearch sends with a 401 from its REST APIs.
const ES_CHALLENGES: [&str; 3] = [
    "Basic realm=\"security\" charset=\"UTF-8\"",
    "Bearer realm=\"security\"",
    "ApiKey",
];

/// An error of the Elasticsearch-compatible security APIs:
/// `{"error":{"root_cause":[{"type","reason"}],"type","reason"},"status"}`, with
/// Elasticsearch's status for each error type.
#[derive(Debug)]
pub enum EsApiError {
    Security(SecurityError),
    /// The request body could not be read (too large, cut short): its status and why.
    Body(StatusCode, String),
    /// A body that is not JSON (Elasticsearch answers 406 with a flat error).
    ContentType(String),
    /// Decided by the HTTP layers (408, 413, 414, 431, 500 of a panic).
    Http(StatusCode, String),
    /// Elasticsearch's flat `{"error": "...", "status"}` (its 405).
    Flat(StatusCode, String),
    /// An `Accept` or `Content-Type` asking for a REST API compatibility version this
    /// server does not speak.
    MediaType(String),
}

impl From<SecurityError> for EsApiError {
    fn from(e: SecurityError) -> Self {
        Self::Security(e)
    }
}

/// The status of each Elasticsearch error kind.
pub fn es_status(kind: SecurityErrorKind) -> StatusCode {
    match kind {
        SecurityErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        SecurityErrorKind::Forbidden => StatusCode::FORBIDDEN,
        SecurityErrorKind::InvalidGrant
        | SecurityErrorKind::Validation
        | SecurityErrorKind::Parse
        | SecurityErrorKind::IllegalArgument => StatusCode::BAD_REQUEST,
        SecurityErrorKind::NotFound => StatusCode::NOT_FOUND,
        SecurityErrorKind::Conflict => StatusCode::CONFLICT,
        SecurityErrorKind::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        SecurityErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        SecurityErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for EsApiError {
    fn into_response(self) -> Response {
        let (status, kind, reason, header) = match &self {
            Self::Security(e) => {
                let status = es_status(e.kind);
                if status.is_server_error() {
                    tracing::error!(error = %e, "security request failed");
                } else {
                    tracing::debug!(kind = e.es_type(), "security request refused");
                }
                let reason = match e.kind {
                    SecurityErrorKind::Internal => "internal error".to_string(),
                    SecurityErrorKind::Unavailable => STORE_UNAVAILABLE.to_string(),
                    _ => e.reason.clone(),
                };
                let header = match (e.kind, &e.description) {
                    (SecurityErrorKind::Unauthenticated, _) => {
                        Some(json!({ "WWW-Authenticate": ES_CHALLENGES }))
                    }
                    (_, Some(description)) => Some(json!({ "error_description": description })),
                    _ => None,
                };
                (status, e.es_type(), reason, header)
            }
            Self::Body(status, why) => (*status, "parse_exception", why.clone(), None),
            Self::Http(status, why) => (*status, es_layer_type(*status), why.clone(), None),
            Self::MediaType(why) => (
                StatusCode::BAD_REQUEST,
                "media_type_header_exception",
                why.clone(),
                None,
            ),
            Self::ContentType(content_type) => {
                return es_flat(
                    StatusCode::NOT_ACCEPTABLE,
                    format!("Content-Type header [{content_type}] is not supported"),
                )
            }
            Self::Flat(status, message) => return es_flat(*status, message.clone()),
        };
        let mut cause = json!({ "type": kind, "reason": reason });
        if let Some(header) = &header {
            cause["header"] = header.clone();
        }
        let mut error = cause.clone();
        error["root_cause"] = json!([cause]);
        let mut response = (
            status,
            Json(json!({ "error": error, "status": status.as_u16() })),
        )
            .into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            for challenge in ES_CHALLENGES {
                headers.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
        }
        if let Self::Security(SecurityError {
            retry_after: Some(after),
            ..
        }) = &self
        {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(*after)),
            );
        }
        retry_soon_if_unavailable(headers, status);
        super::no_store(headers);
        response
    }
}

/// Elasticsearch's flat error form, `{"error": "<message>", "status"}`.
fn es_flat(status: StatusCode, message: String) -> Response {
    let mut response = (
        status,
        Json(json!({ "error": message, "status": status.as_u16() })),
    )
        .into_response();
    super::no_store(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_chosen_by_whole_path_segments() {
        for (path, family) in [
            ("/api/fleet/authenticate", ApiFamily::Fleet),
            ("/api/fleet", ApiFamily::Fleet),
            ("/api/fleetx", ApiFamily::Other),
            ("/oauth/token", ApiFamily::OAuth),
            ("/.well-known/jwks.json", ApiFamily::OAuth),
            ("/_security/user", ApiFamily::Elasticsearch),
            ("/_securityx", ApiFamily::Other),
            ("/v1", ApiFamily::Vault),
            ("/v1/auth/jwt/login", ApiFamily::Vault),
            ("/v10", ApiFamily::Other),
            ("/metrics", ApiFamily::Other),
            ("/", ApiFamily::Elasticsearch),
            ("/openapi.json", ApiFamily::Other),
        ] {
            assert_eq!(ApiFamily::of(path), family, "{path}");
        }
    }
}
