//! The bulk-revocation admin API of the Fleet family: `POST /api/fleet/tokens/revoke`
//! with exactly one of `agent_id`, `client_id`, `kid` or `issued_before` (epoch
//! seconds or RFC 3339, not in the future), for a `manage_token` or `manage_security`
//! principal. Answers what was revoked (token-state records and pairs, signing keys);
//! the flow is `TokenService::revoke_bulk` (src/tokens/revocation.rs).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::FleetError;
use super::fleet_admin::{FleetAdminJson, RevokeTokens};
use super::AppState;
use crate::grant::GrantError;
use crate::tokens::{revocation, Criterion, KeyError, TokenError};

/// `POST /api/fleet/tokens/revoke`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    /// Epoch seconds, or an RFC 3339 time.
    #[serde(default)]
    issued_before: Option<serde_json::Value>,
}

/// `POST /api/fleet/tokens/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    FleetAdminJson { body, .. }: FleetAdminJson<RevokeTokens, RevokeBody>,
) -> Result<Response, FleetError> {
    let tokens = &state.tokens;
    let non_empty = |field: &str, v: String| {
        if v.is_empty() {
            Err(FleetError::BadRequest(format!("{field} must not be empty")))
        } else {
            Ok(v)
        }
    };
    let mut criteria = Vec::new();
    if let Some(agent) = body.agent_id {
        criteria.push(Criterion::Agent(non_empty("agent_id", agent)?));
    }
    if let Some(client) = body.client_id {
        criteria.push(Criterion::Client(non_empty("client_id", client)?));
    }
    if let Some(kid) = body.kid {
        criteria.push(Criterion::Kid(non_empty("kid", kid)?));
    }
    if let Some(at) = &body.issued_before {
        criteria.push(Criterion::IssuedBefore(
            revocation::parse_issued_before(at, tokens.now()).map_err(FleetError::BadRequest)?,
        ));
    }
    let [criterion] = criteria.as_slice() else {
        return Err(FleetError::BadRequest(
            "give exactly one of agent_id, client_id, kid, issued_before".into(),
        ));
    };
    let revoked = match tokens.revoke_bulk(criterion).await {
        Ok(revoked) => revoked,
        Err(TokenError::Keys(KeyError::UnknownKid(_))) => return Err(FleetError::NotFound),
        Err(e) => return Err(GrantError::from(e).into()),
    };
    Ok(Json(json!({
        "action": "revoked",
        "by": criterion.label(),
        "revoked": revoked,
    }))
    .into_response())
}
