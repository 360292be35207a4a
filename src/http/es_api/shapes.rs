//! The JSON shapes of the Elasticsearch-compatible family: the request bodies
//! ([`EsBodyShape`]: read by [`super::EsJsonCall`], made the service's typed requests)
//! and the answers, rendered from the typed results of the service (`crate::es_api`).
//! Field names, and what a body may not contain, are Elasticsearch's.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api_keys::CreatedApiKey;
use crate::clock::UnixTime;
use crate::es_api::api_keys::{
    ApiKeysInvalidated, CreateApiKeyRequest, InvalidateApiKeyRequest, ListedApiKey,
};
use crate::es_api::service_tokens::ServiceCredentials;
use crate::es_api::tokens::{
    CreateTokenRequest, CreatedToken, InvalidateTokenRequest, TokensInvalidated,
};
use crate::es_api::users::{ChangePasswordRequest, PutUserRequest};
use crate::identity::roles::RoleDescriptor;
use crate::identity::service_accounts::CreatedServiceToken;
use crate::identity::{Identity, Realm};
use crate::store::UserRecord;

// ---- request bodies ----

/// A request body in its JSON shape: deserialized from the body's JSON object, then
/// made the service's typed request. A body that does not fit is a `parse_exception`
/// naming [`EsBodyShape::NAME`], as Elasticsearch's parsers answer.
pub trait EsBodyShape: DeserializeOwned {
    /// The parser's name in Elasticsearch's message (`failed to parse [NAME]: ...`).
    const NAME: &'static str;
    /// The service's request.
    type Request;
    fn into_request(self) -> Self::Request;
}

/// A body taken as it is (a role descriptor, parsed by the role model itself).
impl EsBodyShape for Value {
    const NAME: &'static str = "request";
    type Request = Value;
    fn into_request(self) -> Value {
        self
    }
}

/// `POST`/`PUT /_security/api_key`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyBody {
    name: Option<String>,
    expiration: Option<String>,
    #[serde(default)]
    role_descriptors: Option<Map<String, Value>>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

impl EsBodyShape for CreateApiKeyBody {
    const NAME: &'static str = "api_key_request";
    type Request = CreateApiKeyRequest;
    fn into_request(self) -> CreateApiKeyRequest {
        CreateApiKeyRequest {
            name: self.name,
            expiration: self.expiration,
            role_descriptors: self.role_descriptors,
            metadata: self.metadata,
        }
    }
}

/// `DELETE /_security/api_key`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateApiKeyBody {
    ids: Option<Vec<String>>,
    id: Option<String>,
    name: Option<String>,
    username: Option<String>,
    realm_name: Option<String>,
    #[serde(default)]
    owner: bool,
}

impl EsBodyShape for InvalidateApiKeyBody {
    const NAME: &'static str = "invalidate_api_key_request";
    type Request = InvalidateApiKeyRequest;
    fn into_request(self) -> InvalidateApiKeyRequest {
        InvalidateApiKeyRequest {
            ids: self.ids,
            id: self.id,
            name: self.name,
            username: self.username,
            realm_name: self.realm_name,
            owner: self.owner,
        }
    }
}

/// `POST /_security/oauth2/token`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    kerberos_ticket: Option<String>,
}

impl EsBodyShape for CreateTokenBody {
    const NAME: &'static str = "token_request";
    type Request = CreateTokenRequest;
    fn into_request(self) -> CreateTokenRequest {
        CreateTokenRequest {
            grant_type: self.grant_type,
            username: self.username,
            password: self.password,
            refresh_token: self.refresh_token,
            scope: self.scope,
            kerberos_ticket: self.kerberos_ticket,
        }
    }
}

/// `DELETE /_security/oauth2/token`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateTokenBody {
    token: Option<String>,
    refresh_token: Option<String>,
    realm_name: Option<String>,
    username: Option<String>,
}

impl EsBodyShape for InvalidateTokenBody {
    const NAME: &'static str = "invalidate_token_request";
    type Request = InvalidateTokenRequest;
    fn into_request(self) -> InvalidateTokenRequest {
        InvalidateTokenRequest {
            token: self.token,
            refresh_token: self.refresh_token,
            realm_name: self.realm_name,
            username: self.username,
        }
    }
}

/// `PUT|POST /_security/user/{username}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutUserBody {
    password: Option<String>,
    password_hash: Option<String>,
    roles: Option<Vec<String>>,
    full_name: Option<String>,
    email: Option<String>,
    metadata: Option<Map<String, Value>>,
    enabled: Option<bool>,
}

impl EsBodyShape for PutUserBody {
    const NAME: &'static str = "user";
    type Request = PutUserRequest;
    fn into_request(self) -> PutUserRequest {
        PutUserRequest {
            password: self.password,
            password_hash: self.password_hash,
            roles: self.roles,
            full_name: self.full_name,
            email: self.email,
            metadata: self.metadata,
            enabled: self.enabled,
        }
    }
}

/// `POST|PUT /_security/user[/{username}]/_password`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    password: Option<String>,
    password_hash: Option<String>,
}

impl EsBodyShape for ChangePasswordBody {
    const NAME: &'static str = "change_password";
    type Request = ChangePasswordRequest;
    fn into_request(self) -> ChangePasswordRequest {
        ChangePasswordRequest {
            password: self.password,
            password_hash: self.password_hash,
        }
    }
}

// ---- answers ----

/// Epoch milliseconds, Elasticsearch's time stamps.
fn millis(t: UnixTime) -> i64 {
    t.saturating_mul(1000)
}

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

/// `DELETE /_security/oauth2/token`'s answer (also with 404, all zero).
pub fn tokens_invalidated(result: &TokensInvalidated) -> Value {
    json!({
        "invalidated_tokens": result.invalidated,
        "previously_invalidated_tokens": result.previously_invalidated,
        "error_count": 0,
        "error_details": [],
    })
}

/// A created API key (its secret shown this once).
pub fn created_api_key(created: &CreatedApiKey) -> Value {
    let mut out = json!({
        "id": created.id,
        "name": created.name,
        "api_key": created.api_key,
        "encoded": created.encoded,
    });
    if let Some(expiration) = created.expiration {
        out["expiration"] = json!(expiration);
    }
    out
}

/// `GET /_security/api_key`'s answer; `limited_by` only when asked for.
pub fn api_keys(listed: &[ListedApiKey], with_limited_by: bool) -> Value {
    let keys: Vec<Value> = listed
        .iter()
        .map(|k| api_key_json(k, with_limited_by))
        .collect();
    json!({ "api_keys": keys })
}

/// One key in `GET /_security/api_key`'s answer; `last_used` (fleetauth's addition,
/// epoch milliseconds like `creation`, Elasticsearch #54789) when the key has been used
/// since it was recorded (at most `api_keys.last_used_interval` stale).
fn api_key_json(listed: &ListedApiKey, with_limited_by: bool) -> Value {
    let key = &listed.key;
    let mut out = json!({
        "id": key.id,
        "name": key.name,
        "type": "rest",
        "creation": millis(key.created_at),
        "invalidated": key.invalidated_at.is_some(),
    });
    if let Some(t) = listed.last_used {
        out["last_used"] = json!(millis(t));
    }
    if let Some(t) = key.expires_at {
        out["expiration"] = json!(millis(t));
    }
    if let Some(t) = key.invalidated_at {
        out["invalidation"] = json!(millis(t));
    }
    match &key.owner {
        Some(owner) => {
            out["username"] = json!(owner.username);
            out["realm"] = json!(owner.realm);
            out["realm_type"] = json!(owner.realm_type);
            out["metadata"] = owner.metadata.clone();
            out["role_descriptors"] = owner.role_descriptors.clone();
            if with_limited_by {
                out["limited_by"] = owner.limited_by.clone();
            }
        }
        None => {
            // Made by the CLI: an agent's key or a plain OAuth2 client's.
            out["username"] = json!(key.agent_id.clone().unwrap_or_else(|| key.id.clone()));
            out["realm"] = json!(Realm::fleetauth().name);
            out["metadata"] = json!({});
            out["role_descriptors"] = json!({});
            if let Some(agent) = &key.agent_id {
                out["agent_id"] = json!(agent);
            }
        }
    }
    out
}

/// `DELETE /_security/api_key`'s answer.
pub fn api_keys_invalidated(result: &ApiKeysInvalidated) -> Value {
    json!({
        "invalidated_api_keys": result.invalidated,
        "previously_invalidated_api_keys": result.previously_invalidated,
        "error_count": 0,
    })
}

/// A created service token (its value shown this once).
pub fn created_service_token(created: &CreatedServiceToken) -> Value {
    json!({
        "created": true,
        "token": { "name": created.name, "value": created.value },
    })
}

/// `GET /_security/service/{namespace}/{service}/credential`'s answer: the tokens by
/// name, and no file tokens (there are no nodes with files).
pub fn service_credentials(credentials: &ServiceCredentials) -> Value {
    let tokens: Map<String, Value> = credentials
        .token_names
        .iter()
        .map(|n| (n.clone(), json!({})))
        .collect();
    json!({
        "service_account": credentials.service_account,
        "count": credentials.token_names.len(),
        "tokens": tokens,
        "nodes_credentials": {
            "_nodes": { "total": 1, "successful": 1, "failed": 0 },
            "file_tokens": {}
        }
    })
}

/// `GET /_security/user[/{names}]`'s answer: the users by name.
pub fn users(users: &[UserRecord]) -> Value {
    let out: Map<String, Value> = users
        .iter()
        .map(|u| {
            (
                u.username.clone(),
                json!({
                    "username": u.username, "roles": u.roles, "full_name": u.full_name,
                    "email": u.email, "metadata": u.metadata, "enabled": u.enabled,
                }),
            )
        })
        .collect();
    Value::Object(out)
}

/// `GET /_security/role[/{names}]`'s answer: the role descriptors by name.
pub fn roles<'a>(roles: impl IntoIterator<Item = (&'a String, &'a RoleDescriptor)>) -> Value {
    Value::Object(
        roles
            .into_iter()
            .map(|(name, d)| (name.clone(), d.to_json()))
            .collect(),
    )
}
