//! The callers of the Fleet family's admin APIs (enrollment tokens, bulk revocation),
//! as extractors rejected in the Fleet format: [`FleetAdmin`] is a caller whose
//! credential authenticates through the one chain and whose privileges allow the
//! endpoint's [`AdminAction`] (403 naming the privileges that would); [`FleetAdminJson`]
//! is such a caller with a JSON body. The body is read first, as at every endpoint with
//! one, so that a slow body meets the edge's read timeout before the credential check;
//! the body's JSON is read after it.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::error::FleetError;
use super::fleet::{is_json, presented_header};
use super::{read_body_first, AppState};
use crate::credentials::CredentialError;
use crate::enrollment::Creator;
use crate::grant::GrantError;
use crate::identity::privileges::Action;

/// What an admin endpoint lets its caller do, and how a refusal names it.
pub trait AdminAction {
    const ACTION: Action;
    /// "`user` may not WHAT (needs ...)".
    const WHAT: &'static str;
}

/// `/api/fleet/enrollment_api_keys...`.
pub struct ManageEnrollmentTokens;

impl AdminAction for ManageEnrollmentTokens {
    const ACTION: Action = Action::ManageEnrollmentTokens;
    const WHAT: &'static str = "manage enrollment tokens";
}

/// `POST /api/fleet/tokens/revoke`.
pub struct RevokeTokens;

impl AdminAction for RevokeTokens {
    const ACTION: Action = Action::RevokeTokens;
    const WHAT: &'static str = "revoke tokens";
}

/// The caller of an admin endpoint, allowed `A`: who it is, as the creator of what it
/// makes.
pub struct FleetAdmin<A> {
    pub creator: Creator,
    action: PhantomData<fn() -> A>,
}

impl<A: AdminAction> FromRequestParts<AppState> for FleetAdmin<A> {
    type Rejection = FleetError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let creator = require_privilege(state, &parts.headers, A::ACTION, A::WHAT).await?;
        Ok(Self {
            creator,
            action: PhantomData,
        })
    }
}

/// The caller of an admin endpoint allowed `A`, and its JSON body `T`: the body read
/// first, then the caller checked, then the body's JSON (415 unless JSON, 400 if it
/// does not fit `T`).
pub struct FleetAdminJson<A, T> {
    pub admin: FleetAdmin<A>,
    pub body: T,
}

impl<A: AdminAction, T: DeserializeOwned> FromRequest<AppState> for FleetAdminJson<A, T> {
    /// A body that cannot be read keeps axum's answer, which the edge renders in the
    /// Fleet format (as for every handler that takes a body).
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, bytes) = read_body(request).await?;
        let admin = FleetAdmin::<A>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let body = json_body(&parts.headers, &bytes).map_err(IntoResponse::into_response)?;
        Ok(Self { admin, body })
    }
}

/// A request's head, and its body read whole; a body that cannot be read is axum's
/// answer, which the edge renders in the family's format.
pub(super) async fn read_body(request: Request) -> Result<(Parts, Bytes), Response> {
    let (parts, bytes) = read_body_first(request).await;
    Ok((parts, bytes.map_err(IntoResponse::into_response)?))
}

/// A JSON body of this family's admin and enrollment endpoints: 415 unless the
/// content type is JSON, 400 if it does not fit `T`.
pub(super) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, FleetError> {
    if !is_json(headers) {
        return Err(FleetError::UnsupportedMediaType);
    }
    serde_json::from_slice(body).map_err(|e| FleetError::BadRequest(format!("invalid body: {e}")))
}

/// The caller, if its credential authenticates and its privileges allow `action`.
async fn require_privilege(
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
