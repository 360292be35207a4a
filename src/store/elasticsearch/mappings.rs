// Over 600 lines with its tests: a table of the indices' mappings next to the documents they store (~540 lines of code), kept together on purpose.
//! The indices fleetauth keeps in Elasticsearch: their names, their explicit mappings
//! (`dynamic: strict`, keyword fields, nothing analysed) and the documents stored in
//! them, side by side so that a change to one is seen next to the other.
//!
//! | index                              | document id | one document per            |
//! |------------------------------------|-------------|-----------------------------|
//! | `<prefix>.fleet-agents`            | agent id    | agent (token state)         |
//! | `<prefix>.fleetauth-api-keys`      | key id      | API key                     |
//! | `<prefix>.fleetauth-signing-keys`  | `ring`      | the whole key ring (1 doc)  |
//! | `<prefix>.fleetauth-meta`          | meta key    | deployment-wide value       |
//! | `<prefix>.fleetauth-users`         | username    | native user                 |
//! | `<prefix>.fleetauth-roles`         | role name   | role (role API)             |
//! | `<prefix>.fleetauth-tokens`        | family id   | token family (ES token API) |
//! | `<prefix>.fleetauth-service-tokens`| `ns/svc/name` | service-account token     |
//! | `<prefix>.fleetauth-jwt-auth-config` | `config`  | the Vault JWT auth config   |
//! | `<prefix>.fleetauth-jwt-auth-roles`  | role name | a Vault JWT auth role       |
//! | `<prefix>.fleetauth-token-uses`      | JWT ID    | uses left of a use-limited token |
//! | `<prefix>.fleetauth-enrolled-agents` | agent id  | what an agent enrolled with |
//! | `<prefix>.fleetauth-revocations`     | `watermark` | the bulk-revocation watermark |
//! | `<prefix>.fleetauth-api-key-uses`    | key id    | an API key's coarse last use |
//!
//! The prefix is prepended as is, so the default (empty) prefix gives exactly
//! `.fleet-agents` (SPEC §5) and `index_prefix = "prod"` gives `prod.fleet-agents`.
//! The indices are hidden (`index.hidden`), which also keeps Elasticsearch from warning
//! about names that start with a dot.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::UnixTime;
use crate::store::{
    ApiKeyOwner, ApiKeyRecord, RecordKind, RetiredRefresh, SigningKeyRecord, StoredRecord,
    TokenPairRecord, TokenStateRecord,
};

/// Written in every mapping's `_meta`: an index without it is not ours, and start-up
/// refuses to write into it (e.g. a real Fleet Server's `.fleet-agents`).
pub const MANAGED_BY: &str = "fleetauth";
/// The document format version, in every mapping's `_meta`. Version 2 added the API
/// keys' `owner`; an index at an older version gets the new fields at start-up
/// (`PUT /{index}/_mapping`: adding fields is always allowed).
pub const SCHEMA_VERSION: u64 = 2;
/// The id of the one document of the signing-keys index.
pub const KEY_RING_ID: &str = "ring";

/// The names of fleetauth's indices for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indices {
    pub agents: String,
    pub api_keys: String,
    pub signing_keys: String,
    pub meta: String,
    pub users: String,
    pub roles: String,
    pub tokens: String,
    pub service_tokens: String,
    pub jwt_auth_config: String,
    pub jwt_auth_roles: String,
    pub token_uses: String,
    pub enrolled_agents: String,
    pub revocations: String,
    pub api_key_uses: String,
}

impl Indices {
    pub fn new(prefix: &str) -> Self {
        Self {
            agents: format!("{prefix}.fleet-agents"),
            api_keys: format!("{prefix}.fleetauth-api-keys"),
            signing_keys: format!("{prefix}.fleetauth-signing-keys"),
            meta: format!("{prefix}.fleetauth-meta"),
            users: format!("{prefix}.fleetauth-users"),
            roles: format!("{prefix}.fleetauth-roles"),
            tokens: format!("{prefix}.fleetauth-tokens"),
            service_tokens: format!("{prefix}.fleetauth-service-tokens"),
            jwt_auth_config: format!("{prefix}.fleetauth-jwt-auth-config"),
            jwt_auth_roles: format!("{prefix}.fleetauth-jwt-auth-roles"),
            token_uses: format!("{prefix}.fleetauth-token-uses"),
            enrolled_agents: format!("{prefix}.fleetauth-enrolled-agents"),
            revocations: format!("{prefix}.fleetauth-revocations"),
            api_key_uses: format!("{prefix}.fleetauth-api-key-uses"),
        }
    }

    /// The index of a kind of security record.
    pub fn of_records(&self, kind: RecordKind) -> &str {
        match kind {
            RecordKind::User => &self.users,
            RecordKind::Role => &self.roles,
            RecordKind::TokenFamily => &self.tokens,
            RecordKind::ServiceToken => &self.service_tokens,
            RecordKind::JwtAuthConfig => &self.jwt_auth_config,
            RecordKind::JwtAuthRole => &self.jwt_auth_roles,
            RecordKind::TokenUses => &self.token_uses,
            RecordKind::EnrolledAgent => &self.enrolled_agents,
            RecordKind::Revocations => &self.revocations,
            RecordKind::ApiKeyUse => &self.api_key_uses,
        }
    }

    /// Every index name.
    pub fn all(&self) -> Vec<&str> {
        self.definitions()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// Every index with its creation body (settings and mappings).
    pub fn definitions(&self) -> Vec<(&str, Value)> {
        let mut all = vec![
            (self.agents.as_str(), index_body(agents_properties())),
            (&self.api_keys, index_body(api_keys_properties())),
            (&self.signing_keys, index_body(signing_keys_properties())),
            (&self.meta, index_body(meta_properties())),
        ];
        for kind in RecordKind::ALL {
            all.push((
                self.of_records(kind),
                index_body(record_doc_properties(kind)),
            ));
        }
        all
    }
}

/// The mapping body of `PUT /{index}/_mapping` that brings an index made by an older
/// fleetauth to this version (new fields only; existing ones are unchanged).
pub fn mapping_update(creation_body: &Value) -> Value {
    let mut mappings = creation_body["mappings"].clone();
    if let Some(m) = mappings.as_object_mut() {
        m.remove("dynamic");
    }
    mappings
}

/// One primary shard (these indices are small: about 1 KB per agent), one replica when
/// the cluster has a second node, hidden, strict mappings.
fn index_body(properties: Value) -> Value {
    json!({
        "settings": {
            "index": { "number_of_shards": 1, "auto_expand_replicas": "0-1", "hidden": true }
        },
        "mappings": {
            "dynamic": "strict",
            "_meta": { "managed_by": MANAGED_BY, "schema_version": SCHEMA_VERSION },
            "properties": properties
        }
    })
}

fn keyword() -> Value {
    json!({ "type": "keyword" })
}

/// Kept in `_source` only: never searched, never aggregated.
fn stored_only() -> Value {
    json!({ "type": "keyword", "index": false, "doc_values": false })
}

fn long() -> Value {
    json!({ "type": "long" })
}

fn pair_properties() -> Value {
    json!({
        "properties": {
            "jti": keyword(),
            "refresh_hash": keyword(),
            "access_expires_at": long(),
            "refresh_expires_at": long()
        }
    })
}

fn agents_properties() -> Value {
    json!({
        "agent_id": keyword(),
        "active": { "type": "boolean" },
        "current": pair_properties(),
        "pending": pair_properties(),
        "retired": { "properties": { "refresh_hash": keyword(), "expires_at": long() } },
        "updated_at": long()
    })
}

/// Kept in `_source` as written, not parsed or indexed (free-form JSON objects such as
/// metadata and role descriptors, whose fields a strict mapping cannot list).
fn opaque_object() -> Value {
    json!({ "type": "object", "enabled": false })
}

fn api_keys_properties() -> Value {
    json!({
        "id": keyword(),
        "name": keyword(),
        "agent_id": keyword(),
        "hash": stored_only(),
        "created_at": long(),
        "expires_at": long(),
        "invalidated_at": long(),
        "owner": {
            "properties": {
                "username": keyword(),
                "realm": keyword(),
                "realm_type": keyword(),
                "role_descriptors": opaque_object(),
                "limited_by": opaque_object(),
                "metadata": opaque_object()
            }
        }
    })
}

/// The `record` of each kind of security record.
/// The fields of a typed record; `None` for records that are parsed and checked above
/// the store (src/vault/, src/tokens/), which are kept as opaque objects.
fn record_properties(kind: RecordKind) -> Option<Value> {
    Some(match kind {
        RecordKind::JwtAuthConfig
        | RecordKind::JwtAuthRole
        | RecordKind::TokenUses
        | RecordKind::EnrolledAgent
        | RecordKind::Revocations
        | RecordKind::ApiKeyUse => return None,
        RecordKind::User => json!({
            "username": keyword(),
            "password_hash": stored_only(),
            "roles": keyword(),
            "full_name": stored_only(),
            "email": stored_only(),
            "metadata": opaque_object(),
            "enabled": { "type": "boolean" },
            "reserved": { "type": "boolean" },
            "created_at": long(),
            "updated_at": long()
        }),
        RecordKind::Role => json!({
            "name": keyword(),
            "cluster": keyword(),
            "indices": opaque_object(),
            "applications": opaque_object(),
            "run_as": keyword(),
            "metadata": opaque_object(),
            "description": stored_only(),
            "updated_at": long()
        }),
        RecordKind::TokenFamily => json!({
            "family_id": keyword(),
            "username": keyword(),
            "realm": keyword(),
            "realm_type": keyword(),
            "created_at": long(),
            "state": { "properties": agents_properties() }
        }),
        RecordKind::ServiceToken => json!({
            "account": keyword(),
            "name": keyword(),
            "secret_hash": stored_only(),
            "created_at": long(),
            "created_by": keyword()
        }),
    })
}

/// A security record's document: what the store searches on (`id`, `owner`,
/// `purge_after`) and the record itself under `record`.
fn record_doc_properties(kind: RecordKind) -> Value {
    json!({
        "id": keyword(),
        "owner": keyword(),
        "purge_after": long(),
        "record": match record_properties(kind) {
            Some(properties) => json!({ "properties": properties }),
            None => opaque_object(),
        }
    })
}

fn signing_keys_properties() -> Value {
    json!({
        "keys": {
            "properties": {
                "kid": keyword(),
                "algorithm": keyword(),
                "private_der": { "type": "binary" },
                "created_at": long(),
                "retired_at": long(),
                "verify_until": long()
            }
        }
    })
}

fn meta_properties() -> Value {
    json!({ "key": keyword(), "value": stored_only() })
}

// ---- documents ----

/// A `.fleet-agents` document: the JWT ID and refresh hash of the current and pending
/// pairs, and the retired refresh hashes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDoc {
    pub agent_id: String,
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<PairDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PairDoc>,
    #[serde(default)]
    pub retired: Vec<RetiredDoc>,
    pub updated_at: UnixTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairDoc {
    pub jti: String,
    pub refresh_hash: String,
    pub access_expires_at: UnixTime,
    pub refresh_expires_at: UnixTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredDoc {
    pub refresh_hash: String,
    pub expires_at: UnixTime,
}

impl From<&TokenPairRecord> for PairDoc {
    fn from(p: &TokenPairRecord) -> Self {
        Self {
            jti: p.jti.clone(),
            refresh_hash: p.refresh_hash.clone(),
            access_expires_at: p.access_expires_at,
            refresh_expires_at: p.refresh_expires_at,
        }
    }
}

impl From<PairDoc> for TokenPairRecord {
    fn from(p: PairDoc) -> Self {
        Self {
            jti: p.jti,
            refresh_hash: p.refresh_hash,
            access_expires_at: p.access_expires_at,
            refresh_expires_at: p.refresh_expires_at,
        }
    }
}

impl From<&TokenStateRecord> for AgentDoc {
    fn from(r: &TokenStateRecord) -> Self {
        Self {
            agent_id: r.agent_id.clone(),
            active: r.active,
            current: r.current.as_ref().map(PairDoc::from),
            pending: r.pending.as_ref().map(PairDoc::from),
            retired: r
                .retired
                .iter()
                .map(|t| RetiredDoc {
                    refresh_hash: t.refresh_hash.clone(),
                    expires_at: t.expires_at,
                })
                .collect(),
            updated_at: r.updated_at,
        }
    }
}

impl From<AgentDoc> for TokenStateRecord {
    fn from(d: AgentDoc) -> Self {
        Self {
            agent_id: d.agent_id,
            active: d.active,
            current: d.current.map(Into::into),
            pending: d.pending.map(Into::into),
            retired: d
                .retired
                .into_iter()
                .map(|t| RetiredRefresh {
                    refresh_hash: t.refresh_hash,
                    expires_at: t.expires_at,
                })
                .collect(),
            updated_at: d.updated_at,
        }
    }
}

/// An API key document; the secret only as its argon2id hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyDoc {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub hash: String,
    pub created_at: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidated_at: Option<UnixTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ApiKeyOwner>,
}

impl From<&ApiKeyRecord> for ApiKeyDoc {
    fn from(k: &ApiKeyRecord) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            agent_id: k.agent_id.clone(),
            hash: k.hash.clone(),
            created_at: k.created_at,
            expires_at: k.expires_at,
            invalidated_at: k.invalidated_at,
            owner: k.owner.clone(),
        }
    }
}

impl From<ApiKeyDoc> for ApiKeyRecord {
    fn from(d: ApiKeyDoc) -> Self {
        Self {
            id: d.id,
            name: d.name,
            agent_id: d.agent_id,
            hash: d.hash,
            created_at: d.created_at,
            expires_at: d.expires_at,
            invalidated_at: d.invalidated_at,
            owner: d.owner,
        }
    }
}

/// The one document of the signing-keys index: every key, so that "retire the signing
/// key and add a new one" is a single compare-and-set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRingDoc {
    pub keys: Vec<SigningKeyDoc>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyDoc {
    pub kid: String,
    pub algorithm: String,
    /// Standard base64 of the PKCS#8 DER (the `binary` field type's format).
    pub private_der: String,
    pub created_at: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<UnixTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_until: Option<UnixTime>,
}

impl std::fmt::Debug for SigningKeyDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyDoc")
            .field("kid", &self.kid)
            .field("private_der", &"[redacted]")
            .finish()
    }
}

impl From<&SigningKeyRecord> for SigningKeyDoc {
    fn from(k: &SigningKeyRecord) -> Self {
        use base64::Engine;
        Self {
            kid: k.kid.clone(),
            algorithm: k.algorithm.clone(),
            private_der: base64::engine::general_purpose::STANDARD.encode(&k.private_der),
            created_at: k.created_at,
            retired_at: k.retired_at,
            verify_until: k.verify_until,
        }
    }
}

impl TryFrom<&SigningKeyDoc> for SigningKeyRecord {
    type Error = base64::DecodeError;

    fn try_from(d: &SigningKeyDoc) -> Result<Self, Self::Error> {
        use base64::Engine;
        Ok(Self {
            kid: d.kid.clone(),
            algorithm: d.algorithm.clone(),
            private_der: base64::engine::general_purpose::STANDARD.decode(&d.private_der)?,
            created_at: d.created_at,
            retired_at: d.retired_at,
            verify_until: d.verify_until,
        })
    }
}

/// A deployment-wide value (e.g. the deployment id).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaDoc {
    pub key: String,
    pub value: String,
}

/// A security record's document: `id`, `owner`, `purge_after` (what the store searches
/// on) and the typed record under `record`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordDoc {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_after: Option<UnixTime>,
    pub record: Value,
}

impl From<&StoredRecord> for RecordDoc {
    fn from(r: &StoredRecord) -> Self {
        Self {
            id: r.id.clone(),
            owner: r.owner.clone(),
            purge_after: r.purge_after,
            record: r.body.clone(),
        }
    }
}

impl From<RecordDoc> for StoredRecord {
    fn from(d: RecordDoc) -> Self {
        Self {
            id: d.id,
            owner: d.owner,
            purge_after: d.purge_after,
            body: d.record,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        RoleRecord, SecurityRecord, ServiceTokenRecord, TokenFamilyRecord, UserRecord,
    };

    #[test]
    fn the_default_prefix_gives_the_spec_index_name() {
        assert_eq!(Indices::new("").agents, ".fleet-agents");
        assert_eq!(Indices::new("prod").agents, "prod.fleet-agents");
        assert_eq!(Indices::new("prod").meta, "prod.fleetauth-meta");
    }

    /// Every field a document can hold is in its index's mapping (the indices are
    /// `dynamic: strict`, so a field missing from the mapping would be refused).
    #[test]
    fn documents_fit_their_strict_mappings() {
        fn fits(doc: &Value, mapping: &Value, path: &str) {
            let Some(fields) = doc.as_object() else {
                return;
            };
            for (name, value) in fields {
                let field = &mapping[name];
                assert!(!field.is_null(), "{path}{name} is not in the mapping");
                if field["enabled"] == json!(false) {
                    assert!(
                        value.is_object()
                            || value.is_null()
                            || value
                                .as_array()
                                .is_some_and(|a| a.iter().all(Value::is_object)),
                        "{path}{name}: only objects may go in an unparsed object field"
                    );
                    continue;
                }
                let items = match value {
                    Value::Array(items) => items.clone(),
                    other => vec![other.clone()],
                };
                for item in items.iter().filter(|v| v.is_object()) {
                    fits(item, &field["properties"], &format!("{path}{name}."));
                }
            }
        }
        let pair = TokenPairRecord {
            jti: "j".into(),
            refresh_hash: "h".into(),
            access_expires_at: 1,
            refresh_expires_at: 2,
        };
        let agent = TokenStateRecord {
            agent_id: "a".into(),
            active: true,
            current: Some(pair.clone()),
            pending: Some(pair),
            retired: vec![RetiredRefresh {
                refresh_hash: "r".into(),
                expires_at: 3,
            }],
            updated_at: 4,
        };
        let key = ApiKeyRecord {
            id: "k".into(),
            name: "n".into(),
            agent_id: Some("a".into()),
            hash: "$argon2id$".into(),
            created_at: 1,
            expires_at: Some(2),
            invalidated_at: Some(3),
            owner: Some(ApiKeyOwner {
                username: "u".into(),
                realm: "default_native".into(),
                realm_type: "native".into(),
                role_descriptors: json!({ "r": { "cluster": ["all"] } }),
                limited_by: json!([{ "superuser": { "cluster": ["all"] } }]),
                metadata: json!({ "a": { "b": 1 } }),
            }),
        };
        let signing = SigningKeyRecord {
            kid: "kid".into(),
            algorithm: "EdDSA".into(),
            private_der: vec![1, 2, 3],
            created_at: 1,
            retired_at: Some(2),
            verify_until: Some(3),
        };
        let ring = KeyRingDoc {
            keys: vec![SigningKeyDoc::from(&signing)],
        };
        let meta = MetaDoc {
            key: "k".into(),
            value: "v".into(),
        };
        fits(
            &serde_json::to_value(AgentDoc::from(&agent)).unwrap(),
            &agents_properties(),
            "",
        );
        fits(
            &serde_json::to_value(ApiKeyDoc::from(&key)).unwrap(),
            &api_keys_properties(),
            "",
        );
        fits(
            &serde_json::to_value(ring).unwrap(),
            &signing_keys_properties(),
            "",
        );
        fits(&serde_json::to_value(meta).unwrap(), &meta_properties(), "");
        let records: Vec<(RecordKind, StoredRecord)> = vec![
            (
                RecordKind::User,
                UserRecord {
                    username: "u".into(),
                    password_hash: "$argon2id$".into(),
                    roles: vec!["superuser".into()],
                    full_name: Some("U".into()),
                    email: Some("u@example.com".into()),
                    metadata: json!({ "x": [1, 2] }),
                    enabled: true,
                    reserved: false,
                    created_at: 1,
                    updated_at: 2,
                }
                .to_stored()
                .unwrap(),
            ),
            (
                RecordKind::Role,
                RoleRecord {
                    name: "r".into(),
                    cluster: vec!["all".into()],
                    indices: json!([{ "names": ["*"], "privileges": ["read"] }]),
                    applications: json!([]),
                    run_as: vec!["x".into()],
                    metadata: json!({}),
                    description: None,
                    updated_at: 1,
                }
                .to_stored()
                .unwrap(),
            ),
            (
                RecordKind::TokenFamily,
                TokenFamilyRecord {
                    family_id: "f".into(),
                    username: "u".into(),
                    realm: "default_native".into(),
                    realm_type: "native".into(),
                    created_at: 1,
                    state: agent.clone(),
                }
                .to_stored()
                .unwrap(),
            ),
            (
                RecordKind::ServiceToken,
                ServiceTokenRecord {
                    account: "elastic/fleet-server".into(),
                    name: "t".into(),
                    secret_hash: "h".into(),
                    created_at: 1,
                    created_by: "elastic".into(),
                }
                .to_stored()
                .unwrap(),
            ),
        ];
        for (kind, stored) in records {
            fits(
                &serde_json::to_value(RecordDoc::from(&stored)).unwrap(),
                &record_doc_properties(kind),
                "",
            );
        }
        assert_eq!(TokenStateRecord::from(AgentDoc::from(&agent)), agent);
        assert_eq!(
            SigningKeyRecord::try_from(&SigningKeyDoc::from(&signing)).unwrap(),
            signing
        );
    }
}
