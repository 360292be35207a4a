//! The answers of the Elasticsearch-compatible family, in Elasticsearch's JSON shapes,
//! rendered from the typed results of the service (`crate::es_api`).

use serde_json::{json, Value};

use crate::es_api::tokens::CreatedToken;
use crate::identity::Identity;

/// `_authenticate`'s answer for an identity.
pub fn authenticate_json(identity: &Identity) -> Value {
    let mut out = json!({
        "username": identity.username,
        "roles": identity.roles,
        "full_name": identity.full_name,
        "email": identity.email,
        "metadata": identity.metadata,
        "enabled": identity.enabled,
        "authentication_realm": identity.authentication_realm,
        "lookup_realm": identity.lookup_realm,
        "authentication_type": identity.authentication_type,
    });
    if let Some((id, name)) = &identity.api_key {
        out["api_key"] = json!({ "id": id, "name": name });
    }
    if let Some(name) = &identity.service_token {
        out["token"] = json!({ "name": name, "type": "_service_account_index" });
    }
    out
}

/// The token API's answer (`POST /_security/oauth2/token`).
pub fn created_token(created: &CreatedToken) -> Value {
    let issued = &created.issued;
    let mut out = json!({
        "access_token": issued.access_token,
        "type": "Bearer",
        "expires_in": issued.expires_in,
        "authentication": authenticate_json(&created.user),
    });
    if let Some(refresh_token) = &issued.refresh_token {
        out["refresh_token"] = json!(refresh_token);
    }
    out
}
