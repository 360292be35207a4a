//! The Fleet API: `POST /api/fleet/authenticate` (trade a credential for a pair) and
//! `GET /api/fleet/whoami` (the simplest protected resource), both DPoP-aware
//! (RFC 9449); enrollment is in [`super::fleet_enroll`].

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::dpop::{add_nonce, DpopParts};
use super::error::FleetError;
use super::token_json::JsonObject;
use super::{no_store, AppState};
use crate::authentication::AuthMethod;
use crate::credentials::{self, CredentialError, Presented};
use crate::grant::GrantError;
use crate::tokens::IssuedPair;

#[derive(Deserialize)]
struct AuthenticateBody {
    refresh_token: Option<String>,
}

/// The credential in the `Authorization` header, if any.
pub(super) fn presented_header(headers: &HeaderMap) -> Result<Option<Presented>, GrantError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(GrantError::InvalidRequest {
            reason: "malformed_credentials",
            description: "more than one Authorization header".into(),
        });
    }
    Ok(Some(credentials::from_authorization(value.as_bytes())?))
}

/// Whether the body is JSON (`application/json` or `+json`), for every body of the
/// Fleet family.
pub(super) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/json") || v.to_ascii_lowercase().ends_with("+json")
        })
}

/// The refresh token in a JSON body `{"refresh_token": "..."}`, if any. It is only
/// ever a refresh token: the grant layer refuses any other kind of token there.
fn presented_body(headers: &HeaderMap, body: &Bytes) -> Result<Option<String>, FleetError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if !is_json(headers) {
        return Err(FleetError::UnsupportedMediaType);
    }
    let parsed: AuthenticateBody = serde_json::from_slice(body)
        .map_err(|e| FleetError::BadRequest(format!("invalid JSON body: {e}")))?;
    Ok(parsed.refresh_token)
}

/// The body of a pair's answer, written straight from the pair (no intermediate JSON
/// value, no copies of the tokens, no escape scan over them: [`JsonObject`]). The
/// members are in the order the answer has always had them (alphabetical, as a
/// `serde_json` object orders them).
fn pair_answer(pair: &IssuedPair) -> Response {
    let mut answer =
        JsonObject::with_capacity(pair.access_token.len() + pair.refresh_token.len() + 80);
    answer.string("access_token", &pair.access_token);
    answer.number("expires_in", pair.expires_in);
    answer.string("refresh_token", &pair.refresh_token);
    answer.string("token_type", pair.token_type());
    answer.into_response()
}

pub async fn authenticate(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FleetError> {
    if !state.settings.jwt.enabled {
        return Err(FleetError::NotFound);
    }
    let from_body = presented_body(&headers, &body)?;
    let from_header = presented_header(&headers)?;
    let dpop = DpopParts::read(&state, &method, &uri, &headers)?;
    let dpop = dpop.request();
    let pair = match (from_header, from_body) {
        (Some(_), Some(_)) => {
            return Err(FleetError::BadRequest(
                "present one credential: a header or a body refresh_token".into(),
            ))
        }
        (Some(presented), None) => state.grants.exchange_with_dpop(&presented, &dpop).await?,
        (None, Some(refresh_token)) => {
            state
                .grants
                .exchange_refresh_token_with_dpop(&refresh_token, &dpop)
                .await?
        }
        (None, None) => return Err(GrantError::from(CredentialError::Missing).into()),
    };
    let mut response = pair_answer(&pair);
    mirror_pair(&pair, response.headers_mut());
    no_store(response.headers_mut());
    add_nonce(&state, response.headers_mut());
    Ok(response)
}

/// The pair mirrored into the `X-Fleet-*` headers.
pub(super) fn mirror_pair(pair: &IssuedPair, headers: &mut HeaderMap) {
    let expires_in = pair.expires_in.to_string();
    for (name, value) in [
        ("x-fleet-access-token", pair.access_token.as_str()),
        ("x-fleet-refresh-token", pair.refresh_token.as_str()),
        ("x-fleet-token-expires-in", expires_in.as_str()),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

pub async fn whoami(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, FleetError> {
    // The request's head by reference: extracting `Method`, `Uri` and `HeaderMap` would
    // copy each of them on every request. A body is not read (as before).
    let (head, body) = request.into_parts();
    drop(body);
    let (method, uri, headers) = (&head.method, &head.uri, &head.headers);
    let at_resource = FleetError::AtResource;
    let presented = presented_header(headers)
        .map_err(at_resource)?
        .ok_or_else(|| at_resource(GrantError::from(CredentialError::Missing)))?;
    let dpop = DpopParts::read(&state, method, uri, headers).map_err(at_resource)?;
    let principal = state
        .authenticator
        .authenticate_with_dpop(&presented, &dpop.request())
        .await
        .map_err(at_resource)?;
    let Some(agent_id) = principal.agent_id else {
        return Err(GrantError::InvalidClient {
            reason: "not_an_agent",
            description: "the credential does not belong to an agent".into(),
        }
        .into());
    };
    let mut response = Json(WhoamiAnswer {
        agent_id: &agent_id,
        auth_method: principal.auth_method,
        token_id: &principal.token_id,
    })
    .into_response();
    no_store(response.headers_mut());
    add_nonce(&state, response.headers_mut());
    Ok(response)
}

/// `whoami`'s answer, serialized straight into the body (no intermediate JSON value).
#[derive(Serialize)]
struct WhoamiAnswer<'a> {
    agent_id: &'a str,
    auth_method: AuthMethod,
    token_id: &'a str,
}
