//! API keys (`/_security/api_key`): creation limited by the creator's privileges,
//! listing and invalidation within what the caller may reach ([`Scope`]).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{RequestBody, SecurityApi, SecurityError};
use crate::api_keys::CreatedApiKey;
use crate::authentication::Principal;
use crate::clock::UnixTime;
use crate::identity::roles::RoleDescriptor;
use crate::identity::{Action, Identity};
use crate::store::{ApiKeyFilter, ApiKeyOwner, ApiKeyRecord};

/// Elasticsearch's time values: a number and one of `d h m s ms micros nanos`
/// (e.g. `1d`, `90m`); `None` if it is not one, or not positive.
pub fn parse_time_value(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let duration = match unit {
        "d" => Duration::from_secs(n.checked_mul(86_400)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "micros" => Duration::from_micros(n),
        "nanos" => Duration::from_nanos(n),
        _ => return None,
    };
    (!duration.is_zero()).then_some(duration)
}

/// `POST`/`PUT /_security/api_key`: what to create.
pub struct CreateApiKeyRequest {
    pub name: Option<String>,
    /// An Elasticsearch time value ([`parse_time_value`]).
    pub expiration: Option<String>,
    pub role_descriptors: Option<Map<String, Value>>,
    pub metadata: Option<Map<String, Value>>,
}

/// `GET /_security/api_key`: which keys to list.
#[derive(Debug, Default)]
pub struct GetApiKeyQuery {
    pub id: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub realm_name: Option<String>,
    pub owner: bool,
    pub active_only: bool,
}

/// `DELETE /_security/api_key`: which keys to invalidate.
pub struct InvalidateApiKeyRequest {
    pub ids: Option<Vec<String>>,
    pub id: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub realm_name: Option<String>,
    pub owner: bool,
}

/// The ids of the keys an invalidation reached.
#[derive(Debug, Default)]
pub struct ApiKeysInvalidated {
    pub invalidated: Vec<String>,
    pub previously_invalidated: Vec<String>,
}

/// A key of `GET /_security/api_key`'s answer, and when it was last used (at most
/// `api_keys.last_used_interval` stale), if it has been since that was recorded.
pub struct ListedApiKey {
    pub key: ApiKeyRecord,
    pub last_used: Option<UnixTime>,
}

fn active(key: &ApiKeyRecord, now: UnixTime) -> bool {
    key.invalidated_at.is_none() && key.expires_at.is_none_or(|t| t > now)
}

/// Which API keys a request may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// The caller's own (by owner username and realm).
    Owner(ApiKeyFilter),
    /// The calling API key itself.
    Itself(String),
    /// Anyone's.
    Any,
}

impl SecurityApi {
    /// `POST`/`PUT /_security/api_key`.
    pub async fn create_api_key(
        &self,
        principal: &Principal,
        request: RequestBody<CreateApiKeyRequest>,
    ) -> Result<CreatedApiKey, SecurityError> {
        Self::authorize(principal, Action::CreateApiKey)?;
        let identity = &principal.identity;
        if identity.api_key.is_some() {
            return Err(SecurityError::illegal_argument(
                "an API key cannot create API keys here; authenticate as a user or a service account",
            ));
        }
        let request = request.take()?;
        let name = request.name.unwrap_or_default();
        let mut problems = Vec::new();
        if name.is_empty() {
            problems.push("api key name is required".to_string());
        } else if name.chars().count() > 1024 {
            problems.push("api key name may not be more than [1024] characters long".into());
        } else if name.starts_with('_') {
            problems.push("api key name may not begin with an underscore".into());
        }
        if request
            .metadata
            .as_ref()
            .is_some_and(|m| m.keys().any(|k| k.starts_with('_')))
        {
            // As Elasticsearch: such keys are reserved (here: enrollment tokens' marker).
            problems.push("API key metadata keys may not start with [_]".into());
        }
        if !problems.is_empty() {
            return Err(SecurityError::validation(&problems));
        }
        let expires_at = match &request.expiration {
            None => None,
            Some(text) => {
                let lifetime = parse_time_value(text).ok_or_else(|| {
                    SecurityError::parse(format!(
                        "failed to parse setting [expiration] with value [{text}] as a time value: a positive number and one of the units d, h, m, s, ms, micros, nanos"
                    ))
                })?;
                Some(self.now() + lifetime.as_secs().max(1) as i64)
            }
        };
        let mut descriptors = Map::new();
        for (role, descriptor) in request.role_descriptors.unwrap_or_default() {
            let parsed = RoleDescriptor::parse(&role, &descriptor)?;
            descriptors.insert(role, parsed.to_json());
        }
        let owner = ApiKeyOwner {
            username: identity.username.clone(),
            realm: identity.lookup_realm.name.to_string(),
            realm_type: identity.lookup_realm.kind.to_string(),
            role_descriptors: Value::Object(descriptors),
            limited_by: json!([identity.role_descriptors]),
            metadata: Value::Object(request.metadata.unwrap_or_default()),
        };
        let created = self.api_keys.create_owned(&name, expires_at, owner).await?;
        tracing::info!(id = %created.id, username = %identity.username, "API key created");
        Ok(created)
    }

    /// Which keys a request may reach: only the caller's own when it says so (`owner`,
    /// its own `username` and realm, or for an API key its own id), else anyone's (which
    /// needs more privilege), as Elasticsearch decides without looking at the keys.
    fn scope(
        identity: &Identity,
        owner: bool,
        ids: &[String],
        username: Option<&str>,
        realm: Option<&str>,
    ) -> Scope {
        if let Some((own_id, _)) = &identity.api_key {
            let only_itself = owner || (!ids.is_empty() && ids.iter().all(|i| i == own_id));
            return if only_itself {
                Scope::Itself(own_id.clone())
            } else {
                Scope::Any
            };
        }
        let mine = owner
            || (username == Some(identity.username.as_str())
                && realm.is_none_or(|r| r == identity.lookup_realm.name));
        if mine {
            Scope::Owner(ApiKeyFilter {
                name: None,
                username: Some(identity.username.clone()),
                realm: Some(identity.lookup_realm.name.to_string()),
            })
        } else {
            Scope::Any
        }
    }

    /// The keys a request names, within `scope`.
    async fn find_keys(
        &self,
        scope: &Scope,
        ids: &[String],
        name: Option<&str>,
        username: Option<&str>,
        realm: Option<&str>,
    ) -> Result<Vec<ApiKeyRecord>, SecurityError> {
        let prefix = name.and_then(|n| n.strip_suffix('*'));
        let mut filter = ApiKeyFilter {
            name: name.filter(|_| prefix.is_none()).map(str::to_string),
            username: username.map(str::to_string),
            realm: realm.map(str::to_string),
        };
        let keys = match scope {
            Scope::Itself(own_id) => {
                let mut own = self
                    .api_keys
                    .get(own_id)
                    .await?
                    .into_iter()
                    .collect::<Vec<_>>();
                own.retain(|k| filter.name.as_ref().is_none_or(|n| n == &k.name));
                own
            }
            Scope::Owner(_) | Scope::Any => {
                if let Scope::Owner(owner) = scope {
                    filter.username = owner.username.clone();
                    filter.realm = owner.realm.clone();
                }
                if ids.is_empty() {
                    self.api_keys.list(&filter).await?
                } else {
                    let mut found = Vec::new();
                    for id in ids.iter().collect::<BTreeSet<_>>() {
                        if let Some(key) = self.api_keys.get(id).await? {
                            if filter.matches(&key) {
                                found.push(key);
                            }
                        }
                    }
                    found
                }
            }
        };
        Ok(keys
            .into_iter()
            .filter(|k| prefix.is_none_or(|p| k.name.starts_with(p)))
            .collect())
    }

    /// The keys a get or invalidate request names, once the principal may act on them:
    /// the request's scope (own keys or anyone's) decides the privilege `action` asks.
    async fn select_keys(
        &self,
        principal: &Principal,
        selection: &KeySelection<'_>,
        action: fn(bool) -> Action,
    ) -> Result<Vec<ApiKeyRecord>, SecurityError> {
        let scope = Self::scope(
            &principal.identity,
            selection.owner,
            selection.ids,
            selection.username,
            selection.realm_name,
        );
        Self::authorize(principal, action(scope == Scope::Any))?;
        self.find_keys(
            &scope,
            selection.ids,
            selection.name,
            selection.username,
            selection.realm_name,
        )
        .await
    }

    /// `GET /_security/api_key`.
    pub async fn get_api_keys(
        &self,
        principal: &Principal,
        query: GetApiKeyQuery,
    ) -> Result<Vec<ListedApiKey>, SecurityError> {
        let ids: Vec<String> = query.id.iter().cloned().collect();
        let selection = KeySelection {
            owner: query.owner,
            ids: &ids,
            name: query.name.as_deref(),
            username: query.username.as_deref(),
            realm_name: query.realm_name.as_deref(),
        };
        let keys = self
            .select_keys(principal, &selection, |any| Action::GetApiKey { any })
            .await?;
        let now = self.now();
        let shown: Vec<ApiKeyRecord> = keys
            .into_iter()
            .filter(|k| !query.active_only || active(k, now))
            .collect();
        let ids: Vec<&str> = shown.iter().map(|k| k.id.as_str()).collect();
        let last_used = self.api_keys.last_used(&ids).await?;
        Ok(shown
            .into_iter()
            .map(|key| ListedApiKey {
                last_used: last_used.get(&key.id).copied(),
                key,
            })
            .collect())
    }

    /// `DELETE /_security/api_key`.
    pub async fn invalidate_api_keys(
        &self,
        principal: &Principal,
        request: RequestBody<InvalidateApiKeyRequest>,
    ) -> Result<ApiKeysInvalidated, SecurityError> {
        let request = request.take()?;
        if request.id.is_some() && request.ids.is_some() {
            return Err(SecurityError::validation(&[
                "only one of [id, ids] may be given".into(),
            ]));
        }
        let ids: Vec<String> = request
            .ids
            .clone()
            .or(request.id.clone().map(|id| vec![id]))
            .unwrap_or_default();
        if ids.iter().any(String::is_empty) {
            return Err(SecurityError::validation(&[
                "api key ids must not be empty".into(),
            ]));
        }
        let nothing_named = ids.is_empty()
            && request.name.is_none()
            && request.username.is_none()
            && request.realm_name.is_none();
        if nothing_named && !request.owner {
            return Err(SecurityError::validation(&[
                "One of [api key id(s), api key name, username, realm name] must be specified if [owner] flag is false".into(),
            ]));
        }
        let selection = KeySelection {
            owner: request.owner,
            ids: &ids,
            name: request.name.as_deref(),
            username: request.username.as_deref(),
            realm_name: request.realm_name.as_deref(),
        };
        let keys = self
            .select_keys(principal, &selection, |any| Action::InvalidateApiKey {
                any,
            })
            .await?;
        let mut result = ApiKeysInvalidated::default();
        for key in keys {
            if key.invalidated_at.is_none() && self.api_keys.invalidate(&key.id).await? {
                result.invalidated.push(key.id);
            } else {
                result.previously_invalidated.push(key.id);
            }
        }
        if !result.invalidated.is_empty() {
            tracing::info!(count = result.invalidated.len(), by = %principal.identity.username, "API keys invalidated");
        }
        Ok(result)
    }
}

/// What a get or invalidate request of API keys names (Elasticsearch's query fields).
struct KeySelection<'a> {
    owner: bool,
    ids: &'a [String],
    name: Option<&'a str>,
    username: Option<&'a str>,
    realm_name: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_values_are_elasticsearchs() {
        assert_eq!(parse_time_value("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_time_value("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(
            parse_time_value("1500ms"),
            Some(Duration::from_millis(1500))
        );
        for bad in [
            "",
            "d",
            "1",
            "1 d",
            "-1d",
            "1w",
            "0s",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_time_value(bad), None, "{bad:?}");
        }
    }
}
