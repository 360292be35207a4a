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
//! | `<prefix>.fleetauth-documents`     | `kind:name` | small JSON document (Vault config, roles, use counters) |
//!
//! The prefix is prepended as is, so the default (empty) prefix gives exactly
//! `.fleet-agents` (SPEC §5) and `index_prefix = "prod"` gives `prod.fleet-agents`.
//! The indices are hidden (`index.hidden`), which also keeps Elasticsearch from warning
//! about names that start with a dot.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::UnixTime;
use crate::store::{AgentRecord, ApiKeyRecord, RetiredRefresh, SigningKeyRecord, TokenPairRecord};

/// Written in every mapping's `_meta`: an index without it is not ours, and start-up
/// refuses to write into it (e.g. a real Fleet Server's `.fleet-agents`).
pub const MANAGED_BY: &str = "fleetauth";
/// The document format version, in every mapping's `_meta`.
pub const SCHEMA_VERSION: u64 = 1;
/// The id of the one document of the signing-keys index.
pub const KEY_RING_ID: &str = "ring";

/// The names of fleetauth's indices for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indices {
    pub agents: String,
    pub api_keys: String,
    pub signing_keys: String,
    pub meta: String,
    pub documents: String,
}

impl Indices {
    pub fn new(prefix: &str) -> Self {
        Self {
            agents: format!("{prefix}.fleet-agents"),
            api_keys: format!("{prefix}.fleetauth-api-keys"),
            signing_keys: format!("{prefix}.fleetauth-signing-keys"),
            meta: format!("{prefix}.fleetauth-meta"),
            documents: format!("{prefix}.fleetauth-documents"),
        }
    }

    /// Every index with its creation body (settings and mappings).
    pub fn definitions(&self) -> [(&str, Value); 5] {
        [
            (&self.agents, index_body(agents_properties())),
            (&self.api_keys, index_body(api_keys_properties())),
            (&self.signing_keys, index_body(signing_keys_properties())),
            (&self.meta, index_body(meta_properties())),
            (&self.documents, index_body(documents_properties())),
        ]
    }
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

fn api_keys_properties() -> Value {
    json!({
        "id": keyword(),
        "name": keyword(),
        "agent_id": keyword(),
        "hash": stored_only(),
        "created_at": long(),
        "expires_at": long(),
        "invalidated_at": long()
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

fn documents_properties() -> Value {
    json!({
        "id": keyword(),
        "kind": keyword(),
        "name": keyword(),
        // Opaque to the store and possibly long: kept, never indexed.
        "json": { "type": "text", "index": false },
        "expires_at": long()
    })
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

impl From<&AgentRecord> for AgentDoc {
    fn from(r: &AgentRecord) -> Self {
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

impl From<AgentDoc> for AgentRecord {
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

/// A small JSON document of the generic document API (`Store::document` and friends).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentDoc {
    /// The document id again, as a sortable field for paging through listings.
    pub id: String,
    pub kind: String,
    pub name: String,
    pub json: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixTime>,
}

impl DocumentDoc {
    /// The document id of `kind`/`name`. Kinds are fixed identifiers without `:`, so
    /// the id is unambiguous.
    pub fn id_of(kind: &str, name: &str) -> String {
        format!("{kind}:{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let agent = AgentRecord {
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
        assert_eq!(AgentRecord::from(AgentDoc::from(&agent)), agent);
        assert_eq!(
            SigningKeyRecord::try_from(&SigningKeyDoc::from(&signing)).unwrap(),
            signing
        );
    }
}
