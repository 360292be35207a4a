//! Roles: the built-in `superuser` and roles defined through the role API, as role
//! descriptors in Elasticsearch's format. Only their cluster privileges
//! ([`Privileges`]) mean anything to fleetauth, which has no index or application APIs;
//! the rest is validated for shape, kept and given back as written.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::privileges::Privileges;
use crate::clock::{Clock, UnixTime};
use crate::store::{RoleRecord, Store, StoreError, TypedWrite};

/// The built-in role of the `elastic` user.
pub const SUPERUSER: &str = "superuser";

/// A role descriptor: what a role (or an API key's `role_descriptors` entry) grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDescriptor {
    pub cluster: Vec<String>,
    pub indices: Value,
    pub applications: Value,
    pub run_as: Vec<String>,
    pub metadata: Value,
    pub description: Option<String>,
}

/// Why a role descriptor was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// Not a role descriptor's shape (Elasticsearch: `parse_exception`).
    #[error("failed to parse role [{role}]. {reason}")]
    Parse { role: String, reason: String },
    /// A cluster privilege this server does not know (`illegal_argument_exception`).
    #[error("unknown cluster privilege [{privilege}]. a privilege must be one of the predefined cluster privilege names [{known}]")]
    UnknownPrivilege { privilege: String, known: String },
    /// A role name Elasticsearch would refuse (`action_request_validation_exception`).
    #[error("{0}")]
    InvalidName(String),
    /// A built-in role (`illegal_argument_exception`).
    #[error("role [{0}] is reserved and cannot be modified")]
    Reserved(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn string_list(role: &str, field: &str, value: &Value) -> Result<Vec<String>, RoleError> {
    let parse = |reason: String| RoleError::Parse {
        role: role.to_string(),
        reason,
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| parse(format!("expected strings in [{field}]")))
            })
            .collect(),
        _ => Err(parse(format!("expected an array of strings for [{field}]"))),
    }
}

impl RoleDescriptor {
    /// Parses and checks a role descriptor (`{"cluster": [...], "indices": [...], ...}`).
    pub fn parse(role: &str, value: &Value) -> Result<Self, RoleError> {
        let parse = |reason: String| RoleError::Parse {
            role: role.to_string(),
            reason,
        };
        let object = value
            .as_object()
            .ok_or_else(|| parse("expected an object".into()))?;
        for key in object.keys() {
            if ![
                "cluster",
                "indices",
                "index",
                "applications",
                "run_as",
                "metadata",
                "transient_metadata",
                "description",
            ]
            .contains(&key.as_str())
            {
                // Also Elasticsearch's `global`, `remote_indices`, `remote_cluster`:
                // refused rather than silently dropped.
                return Err(parse(format!("unexpected field [{key}]")));
            }
        }
        let cluster = string_list(
            role,
            "cluster",
            &object.get("cluster").cloned().unwrap_or(Value::Null),
        )?;
        if let Err(privilege) = Privileges::from_names(cluster.iter().map(String::as_str)) {
            return Err(RoleError::UnknownPrivilege {
                privilege,
                known: Privileges::names().collect::<Vec<_>>().join(","),
            });
        }
        let array_of_objects = |field: &str| -> Result<Value, RoleError> {
            match object.get(field) {
                None | Some(Value::Null) => Ok(json!([])),
                Some(Value::Array(items)) if items.iter().all(Value::is_object) => {
                    Ok(Value::Array(items.clone()))
                }
                Some(_) => Err(parse(format!("expected an array of objects for [{field}]"))),
            }
        };
        let indices = match (object.get("indices"), object.get("index")) {
            (Some(_), _) => array_of_objects("indices")?,
            (None, Some(_)) => array_of_objects("index")?,
            (None, None) => json!([]),
        };
        let metadata = match object.get("metadata") {
            None | Some(Value::Null) => json!({}),
            Some(Value::Object(m)) => Value::Object(m.clone()),
            Some(_) => return Err(parse("expected an object for [metadata]".into())),
        };
        let description = match object.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(_) => return Err(parse("expected a string for [description]".into())),
        };
        Ok(Self {
            cluster,
            indices,
            applications: array_of_objects("applications")?,
            run_as: string_list(
                role,
                "run_as",
                &object.get("run_as").cloned().unwrap_or(Value::Null),
            )?,
            metadata,
            description,
        })
    }

    /// The cluster privileges granted (names were checked when parsed).
    pub fn privileges(&self) -> Privileges {
        Privileges::from_names(self.cluster.iter().map(String::as_str)).unwrap_or_default()
    }

    /// Elasticsearch's JSON form.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "cluster": self.cluster,
            "indices": self.indices,
            "applications": self.applications,
            "run_as": self.run_as,
            "metadata": self.metadata,
            "transient_metadata": { "enabled": true },
        });
        if let Some(d) = &self.description {
            out["description"] = json!(d);
        }
        out
    }

    fn from_record(r: &RoleRecord) -> Self {
        Self {
            cluster: r.cluster.clone(),
            indices: r.indices.clone(),
            applications: r.applications.clone(),
            run_as: r.run_as.clone(),
            metadata: r.metadata.clone(),
            description: r.description.clone(),
        }
    }

    fn superuser() -> Self {
        Self {
            cluster: vec!["all".into()],
            indices: json!([{ "names": ["*"], "privileges": ["all"], "allow_restricted_indices": true }]),
            applications: json!([{ "application": "*", "privileges": ["*"], "resources": ["*"] }]),
            run_as: vec!["*".into()],
            metadata: json!({ "_reserved": true }),
            description: Some("Grants full access to the cluster and every security API.".into()),
        }
    }
}

/// The cluster privileges and descriptors of a set of role descriptors (by name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    pub privileges: Privileges,
    /// Name → descriptor JSON: what an API key created by this identity is limited by.
    pub descriptors: Map<String, Value>,
}

impl Resolved {
    /// Privileges and descriptors of explicit descriptors (an API key's own, a service
    /// account's).
    pub fn of(descriptors: &BTreeMap<String, RoleDescriptor>) -> Self {
        let mut resolved = Self::default();
        for (name, d) in descriptors {
            resolved.privileges = resolved.privileges.union(d.privileges());
            resolved.descriptors.insert(name.clone(), d.to_json());
        }
        resolved
    }

    /// Reads descriptors back from their JSON form (an object name → descriptor);
    /// entries that do not parse grant nothing.
    pub fn from_json(value: &Value) -> Self {
        let mut descriptors = BTreeMap::new();
        if let Some(object) = value.as_object() {
            for (name, d) in object {
                if let Ok(d) = RoleDescriptor::parse(name, d) {
                    descriptors.insert(name.clone(), d);
                }
            }
        }
        Self::of(&descriptors)
    }
}

/// Elasticsearch's rule for role names: 1 to 507 printable ASCII characters, no
/// leading or trailing whitespace.
pub fn check_role_name(name: &str) -> Result<(), RoleError> {
    let ok = !name.is_empty()
        && name.len() <= 507
        && name.bytes().all(|b| (0x20..0x7f).contains(&b))
        && name.trim() == name;
    if ok {
        Ok(())
    } else {
        Err(RoleError::InvalidName(
            "Validation Failed: 1: role name must be 1 to 507 printable ASCII characters without leading or trailing whitespace;".into(),
        ))
    }
}

/// Built-in and stored roles.
pub struct RoleService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl RoleService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    fn builtin(name: &str) -> Option<RoleDescriptor> {
        (name == SUPERUSER).then(RoleDescriptor::superuser)
    }

    /// A role by name (built-in or stored).
    pub async fn get(&self, name: &str) -> Result<Option<RoleDescriptor>, RoleError> {
        if let Some(builtin) = Self::builtin(name) {
            return Ok(Some(builtin));
        }
        Ok(self
            .store
            .typed_record::<RoleRecord>(name)
            .await?
            .map(|r| RoleDescriptor::from_record(&r)))
    }

    /// Every role: the built-in ones, then the stored ones by name.
    pub async fn all(&self) -> Result<BTreeMap<String, RoleDescriptor>, RoleError> {
        let mut all = BTreeMap::new();
        all.insert(SUPERUSER.to_string(), RoleDescriptor::superuser());
        for r in self.store.typed_records::<RoleRecord>(None).await? {
            all.insert(r.name.clone(), RoleDescriptor::from_record(&r));
        }
        Ok(all)
    }

    /// The union of the named roles; names that are not roles grant nothing (as in
    /// Elasticsearch, a user may name roles that do not exist yet).
    pub async fn resolve(&self, names: &[String]) -> Result<Resolved, RoleError> {
        let mut found = BTreeMap::new();
        for name in names {
            if let Some(d) = self.get(name).await? {
                found.insert(name.clone(), d);
            }
        }
        Ok(Resolved::of(&found))
    }

    /// Creates or replaces a role; `true` when created.
    pub async fn put(&self, name: &str, descriptor: RoleDescriptor) -> Result<bool, RoleError> {
        check_role_name(name)?;
        if Self::builtin(name).is_some() {
            return Err(RoleError::Reserved(name.to_string()));
        }
        let record = RoleRecord {
            name: name.to_string(),
            cluster: descriptor.cluster,
            indices: descriptor.indices,
            applications: descriptor.applications,
            run_as: descriptor.run_as,
            metadata: descriptor.metadata,
            description: descriptor.description,
            updated_at: self.now(),
        };
        let before = self
            .store
            .update_typed::<RoleRecord, _>(name, move |_| TypedWrite::Put(record.clone()))
            .await?;
        Ok(before.is_none())
    }

    /// Deletes a stored role; `true` if it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, RoleError> {
        if Self::builtin(name).is_some() {
            return Err(RoleError::Reserved(name.to_string()));
        }
        let before = self
            .store
            .update_typed::<RoleRecord, _>(name, |current| match current {
                Some(_) => TypedWrite::Delete,
                None => TypedWrite::Keep,
            })
            .await?;
        Ok(before.is_some())
    }

    fn now(&self) -> UnixTime {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_parsed_like_elasticsearch() {
        let d = RoleDescriptor::parse(
            "r",
            &json!({ "cluster": ["manage_own_api_key"], "indices": [{ "names": ["logs-*"], "privileges": ["read"] }] }),
        )
        .unwrap();
        assert!(d
            .privileges()
            .allow(super::super::privileges::Action::CreateApiKey));
        assert_eq!(d.to_json()["indices"][0]["names"][0], "logs-*");
        assert!(matches!(
            RoleDescriptor::parse("r", &json!({ "cluster": ["teleport"] })),
            Err(RoleError::UnknownPrivilege { .. })
        ));
        assert!(matches!(
            RoleDescriptor::parse("r", &json!({ "clusterz": [] })),
            Err(RoleError::Parse { .. })
        ));
        assert!(matches!(
            RoleDescriptor::parse("r", &json!({ "cluster": "all", "indices": "x" })),
            Err(RoleError::Parse { .. })
        ));
        assert!(RoleDescriptor::parse("r", &json!([])).is_err());
    }
}
