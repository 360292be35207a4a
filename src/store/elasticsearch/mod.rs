// Over 600 lines: the one Store implementation over Elasticsearch; its methods share the rules stated below (real-time GETs, optimistic concurrency, wait_for), kept in one place.
//! The distributed store: every record in Elasticsearch, so that many fleetauth
//! instances behind a load balancer share one state (JWT validation stays stateless).
//! Index names and mappings are in [`mappings`], the HTTP calls in [`client`].
//!
//! Rules (docs/storage.md explains them at length):
//!
//! - **Reads that a decision depends on are real-time GETs by id** (`GET
//!   /{index}/_doc/{id}` sees the latest acknowledged write, refreshed or not). Nothing
//!   is decided from a search.
//! - **Every change of an existing record is a compare-and-set**: read the document
//!   with its `_seq_no`/`_primary_term`, compute the next version, write it with
//!   `if_seq_no`/`if_primary_term`. A 409 means another writer won: read again and
//!   decide again ([`Store::update_agent`]'s change closure is called again with the
//!   newer record), at most [`MAX_CAS_ATTEMPTS`] times with jittered backoff, then
//!   report [`StoreError::Contended`] (the caller lost a race: `invalid_grant` for a
//!   grant, never a 5xx). Two writers can never both win.
//! - **Inserts that must not overwrite use `op_type=create`** (409 → conflict). A
//!   record created by a change (an agent's first enrollment, the key ring, a meta
//!   value) is created the same way, and a lost creation race is retried as above.
//! - **No scripted updates, no `_update_by_query`**: whole documents are written.
//! - **Purges refresh first** (`POST /{index}/_refresh`): they are rare background
//!   jobs, and so see every change acknowledged before them.
//! - **One search**, in [`Store::invalidate_agent_api_keys`], finds the keys of an agent;
//!   API keys are inserted with `refresh=wait_for` so that every insert that has
//!   returned is visible to it, and each key found is then changed by real-time
//!   compare-and-set. The signing keys live in one document, so rotation is atomic and
//!   listing them is a single GET.
//! - **Faults**: each request is bounded by `elasticsearch.timeout`. A refused
//!   connection, a timeout or an error answer (401/403, a missing index, 429, 5xx) is
//!   [`StoreError::Unavailable`] (503, `/readyz` not ready); a 400 for our own request or
//!   an unreadable document is [`StoreError::Corrupt`]. Nothing is retried except a lost
//!   compare-and-set and a request the cluster rejected as overloaded (429: resent at
//!   most [`client::MAX_REJECTED_RESENDS`] times, see [`client`]). A write is one
//!   request on one document, so a failure leaves no partial record.

pub mod client;
pub mod mappings;

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use self::client::{EsClient, EsError, Expect, Visibility, Written};
use self::mappings::{
    mapping_update, AgentDoc, ApiKeyDoc, Indices, KeyRingDoc, MetaDoc, RecordDoc, SigningKeyDoc,
    KEY_RING_ID, MANAGED_BY, SCHEMA_VERSION,
};
use super::{
    AgentChange, ApiKeyFilter, ApiKeyRecord, RecordChange, RecordKind, RecordWrite,
    SigningKeyRecord, Store, StoreError, StoredRecord, TokenStateRecord,
};
use crate::clock::UnixTime;
use crate::config::ElasticsearchSettings;

/// How many times a compare-and-set is tried before the store reports
/// [`StoreError::Contended`]. Each lost attempt means another writer succeeded, so this bounds the
/// number of writers that may overtake one change, not the total throughput.
pub const MAX_CAS_ATTEMPTS: u32 = 64;
/// The longest pause between two attempts of a compare-and-set.
const MAX_BACKOFF: Duration = Duration::from_millis(50);
/// Page size of searches (an agent's API keys, listings, purges).
const API_KEY_PAGE: usize = 500;
/// Elasticsearch refuses longer document ids.
const MAX_DOC_ID_BYTES: usize = 512;
/// Read by `ping`: it need not exist, a real-time GET of it proves the agents index
/// answers.
const PROBE_ID: &str = "fleetauth-readiness-probe";

impl From<EsError> for StoreError {
    fn from(e: EsError) -> Self {
        if e.is_transient() {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Corrupt(e.to_string())
        }
    }
}

/// The document id of a record id. Ids are used as they are, except that `.` and `..`
/// (which a URL would resolve as path segments) and `%` are escaped, injectively.
/// `None` when the id cannot be a document id (empty or too long): no such record
/// exists.
fn doc_id(id: &str) -> Option<Cow<'_, str>> {
    let escaped: Cow<'_, str> = match id {
        "" => return None,
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ if id.contains('%') => id.replace('%', "%25").into(),
        _ => id.into(),
    };
    (escaped.len() <= MAX_DOC_ID_BYTES).then_some(escaped)
}

fn unwritable_id(kind: &str, id: &str) -> StoreError {
    StoreError::Conflict(format!(
        "{kind} id of {} bytes cannot be stored in Elasticsearch",
        id.len()
    ))
}

/// Waits a random time before attempt `attempt + 1` of a compare-and-set, so that
/// writers that just collided do not collide again in lockstep.
async fn backoff(attempt: u32) {
    let cap = Duration::from_millis(1u64 << attempt.min(16)).min(MAX_BACKOFF);
    let pause = rand::rng().random_range(Duration::ZERO..=cap);
    tokio::time::sleep(pause).await;
}

/// The store over one Elasticsearch cluster. Cheap to clone.
#[derive(Clone)]
pub struct ElasticsearchStore {
    client: EsClient,
    indices: Indices,
}

impl ElasticsearchStore {
    /// Connects and makes sure every index exists with its mapping, creating missing
    /// ones (another instance creating the same index at the same time is fine). An
    /// existing index that fleetauth did not create is refused rather than written to.
    /// The flag says whether this call created the agents index.
    pub async fn open(settings: &ElasticsearchSettings) -> Result<(Self, bool), StoreError> {
        let client = EsClient::connect(settings)?;
        let indices = Indices::new(&settings.index_prefix);
        let mut created_agents = false;
        for (name, body) in indices.definitions() {
            let created =
                !client.index_exists(name).await? && client.create_index(name, &body).await?;
            if created {
                tracing::info!(index = name, "created elasticsearch index");
            } else if check_ownership(&client, name).await? < SCHEMA_VERSION {
                client.put_mapping(name, &mapping_update(&body)).await?;
                tracing::info!(
                    index = name,
                    schema_version = SCHEMA_VERSION,
                    "updated elasticsearch index mapping"
                );
            }
            if name == indices.agents {
                created_agents = created;
            }
        }
        Ok((Self { client, indices }, created_agents))
    }

    pub fn indices(&self) -> &Indices {
        &self.indices
    }

    /// Reads a document by id, in real time.
    async fn read<T: DeserializeOwned>(
        &self,
        index: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let Some(id) = doc_id(id) else {
            return Ok(None);
        };
        Ok(self.client.get::<T>(index, &id).await?.map(|v| v.doc))
    }

    /// The compare-and-set loop: read `id` in real time, let `decide` compute the next
    /// document (or `None` to leave it) and a result, and write the next document only
    /// if nobody wrote in between; otherwise decide again on the newer document.
    async fn compare_and_set<T, R, F>(
        &self,
        kind: &'static str,
        index: &str,
        id: &str,
        visibility: Visibility,
        mut decide: F,
    ) -> Result<R, StoreError>
    where
        T: Serialize + DeserializeOwned + Send + Sync,
        R: Send,
        F: FnMut(Option<&T>) -> Result<(Option<T>, R), StoreError> + Send,
    {
        self.compare_and_change(
            kind,
            index,
            id,
            [visibility, visibility],
            |current: Option<&T>| {
                let (next, result) = decide(current)?;
                Ok((next.map_or(Next::Keep, Next::Put), result))
            },
        )
        .await
    }

    /// [`compare_and_set`](Self::compare_and_set) for changes that may also delete the
    /// document (a delete conditional on the version read, like a write).
    /// `[created, updated]`: when a created and an updated document become visible to
    /// searches.
    async fn compare_and_change<T, R, F>(
        &self,
        kind: &'static str,
        index: &str,
        id: &str,
        [created, updated]: [Visibility; 2],
        mut decide: F,
    ) -> Result<R, StoreError>
    where
        T: Serialize + DeserializeOwned + Send + Sync,
        R: Send,
        F: FnMut(Option<&T>) -> Result<(Next<T>, R), StoreError> + Send,
    {
        let Some(doc_id) = doc_id(id) else {
            return match decide(None)? {
                (Next::Keep | Next::Delete, result) => Ok(result),
                (Next::Put(_), _) => Err(unwritable_id(kind, id)),
            };
        };
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let current = self.client.get::<T>(index, &doc_id).await?;
            let (next, result) = decide(current.as_ref().map(|v| &v.doc))?;
            let written = match (next, &current) {
                (Next::Keep, _) | (Next::Delete, None) => return Ok(result),
                (Next::Delete, Some(v)) => self.client.delete(index, &doc_id, v.version).await?,
                (Next::Put(next), _) => {
                    let expect = match &current {
                        Some(v) => Expect::At(v.version),
                        None => Expect::Absent,
                    };
                    let visibility = if current.is_none() { created } else { updated };
                    self.client
                        .put(index, &doc_id, &next, expect, visibility)
                        .await?
                }
            };
            match written {
                Written::Done => return Ok(result),
                Written::Conflict => {
                    crate::telemetry::metrics::store_cas_conflict(kind);
                    if attempt + 1 < MAX_CAS_ATTEMPTS {
                        backoff(attempt).await;
                    }
                }
            }
        }
        tracing::warn!(
            record = kind,
            attempts = MAX_CAS_ATTEMPTS,
            "compare-and-set gave up under contention"
        );
        Err(StoreError::Contended(format!(
            "{kind} record is changing too fast: {MAX_CAS_ATTEMPTS} conflicting writes in a row"
        )))
    }

    /// Every id that a search for `query` finds (sorted by `sort_field`, paged).
    async fn search_all_ids(
        &self,
        index: &str,
        query: serde_json::Value,
        sort_field: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .client
                .search_ids(
                    index,
                    query.clone(),
                    sort_field,
                    after.as_deref(),
                    API_KEY_PAGE,
                )
                .await?;
            let full = page.len() == API_KEY_PAGE;
            after = page.last().and_then(|(_, sort)| sort.clone());
            for (_, value) in page {
                let Some(value) = value else {
                    return Err(StoreError::Corrupt(format!(
                        "a document of {index} has no {sort_field} field"
                    )));
                };
                ids.push(value);
            }
            if !full || after.is_none() {
                return Ok(ids);
            }
        }
    }

    /// A purge: refreshes `index` first (a rare background job, so that its search sees
    /// every change acknowledged before it), then deletes each document `query` finds
    /// whose real-time version is still `purgeable` (by compare-and-change, so one changed
    /// since the search is kept); how many were deleted.
    async fn purge_where<T>(
        &self,
        kind: &'static str,
        index: &str,
        query: serde_json::Value,
        purgeable: impl Fn(&T) -> bool + Send + Sync,
    ) -> Result<usize, StoreError>
    where
        T: Serialize + DeserializeOwned + Send + Sync,
    {
        self.client.refresh(index).await?;
        let mut removed = 0;
        for id in self.search_all_ids(index, query, "id").await? {
            let gone = self
                .compare_and_change(
                    kind,
                    index,
                    &id,
                    [Visibility::Eventually; 2],
                    |current: Option<&T>| {
                        Ok(if current.is_some_and(&purgeable) {
                            (Next::Delete, true)
                        } else {
                            (Next::Keep, false)
                        })
                    },
                )
                .await?;
            removed += usize::from(gone);
        }
        Ok(removed)
    }

    /// A compare-and-set of the key ring (every signing key in one document, so that a
    /// rotation is atomic).
    async fn change_key_ring<R, F>(&self, decide: F) -> Result<R, StoreError>
    where
        R: Send,
        F: FnMut(Option<&KeyRingDoc>) -> Result<(Option<KeyRingDoc>, R), StoreError> + Send,
    {
        self.compare_and_set(
            "signing_keys",
            &self.indices.signing_keys,
            KEY_RING_ID,
            Visibility::Eventually,
            decide,
        )
        .await
    }

    /// Invalidates one key of `agent_id` unless already invalidated; whether it changed.
    async fn invalidate_key_of(
        &self,
        id: &str,
        agent_id: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        self.compare_and_set(
            "api_key",
            &self.indices.api_keys,
            id,
            Visibility::Eventually,
            |current: Option<&ApiKeyDoc>| match current {
                Some(k)
                    if k.invalidated_at.is_none() && k.agent_id.as_deref() == Some(agent_id) =>
                {
                    Ok((
                        Some(ApiKeyDoc {
                            invalidated_at: Some(now),
                            ..k.clone()
                        }),
                        true,
                    ))
                }
                _ => Ok((None, false)),
            },
        )
        .await
    }
}

/// What a change does to a document.
enum Next<T> {
    Keep,
    Put(T),
    Delete,
}

/// Refuses an existing index whose mapping does not say it is fleetauth's, or that a
/// newer fleetauth has changed; returns its schema version.
async fn check_ownership(client: &EsClient, index: &str) -> Result<u64, StoreError> {
    let meta = client.mapping_meta(index).await?;
    if meta["managed_by"].as_str() != Some(MANAGED_BY) {
        return Err(StoreError::Corrupt(format!(
            "index {index} exists but was not created by fleetauth (its mapping has no \
             _meta.managed_by = \"{MANAGED_BY}\"); choose another elasticsearch.index_prefix"
        )));
    }
    match meta["schema_version"].as_u64() {
        Some(v) if v <= SCHEMA_VERSION => Ok(v),
        other => Err(StoreError::Corrupt(format!(
            "index {index} has schema version {other:?}; this fleetauth reads version {SCHEMA_VERSION}"
        ))),
    }
}

fn ring_records(ring: &KeyRingDoc) -> Result<Vec<SigningKeyRecord>, StoreError> {
    ring.keys
        .iter()
        .map(|k| {
            SigningKeyRecord::try_from(k).map_err(|e| {
                StoreError::Corrupt(format!(
                    "signing key {}: private key is not base64: {e}",
                    k.kid
                ))
            })
        })
        .collect()
}

/// The newest unretired key of the ring.
fn signing_key_of(ring: &KeyRingDoc) -> Option<&SigningKeyDoc> {
    ring.keys
        .iter()
        .filter(|k| k.retired_at.is_none())
        .max_by_key(|k| k.created_at)
}

#[async_trait]
impl Store for ElasticsearchStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read::<serde_json::Value>(&self.indices.agents, PROBE_ID)
            .await
            .map(|_| ())
    }

    async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        self.compare_and_set(
            "meta",
            &self.indices.meta,
            key,
            Visibility::Eventually,
            |current: Option<&MetaDoc>| {
                Ok(match current {
                    Some(existing) => (None, existing.value.clone()),
                    None => (
                        Some(MetaDoc {
                            key: key.to_string(),
                            value: value.to_string(),
                        }),
                        value.to_string(),
                    ),
                })
            },
        )
        .await
    }

    async fn agent(&self, agent_id: &str) -> Result<Option<TokenStateRecord>, StoreError> {
        Ok(self
            .read::<AgentDoc>(&self.indices.agents, agent_id)
            .await?
            .map(TokenStateRecord::from))
    }

    async fn update_agent(
        &self,
        agent_id: &str,
        mut change: AgentChange,
    ) -> Result<Option<TokenStateRecord>, StoreError> {
        self.compare_and_set(
            "agent",
            &self.indices.agents,
            agent_id,
            Visibility::Eventually,
            |current: Option<&AgentDoc>| {
                let before = current.cloned().map(TokenStateRecord::from);
                let next = change(before.as_ref()).map(|record| AgentDoc::from(&record));
                Ok((next, before))
            },
        )
        .await
    }

    async fn insert_api_key(&self, key: ApiKeyRecord) -> Result<(), StoreError> {
        let id = doc_id(&key.id).ok_or_else(|| unwritable_id("api key", &key.id))?;
        // Visible to searches before this returns: `invalidate_agent_api_keys` finds it.
        let doc = ApiKeyDoc::from(&key);
        match self
            .client
            .put(
                &self.indices.api_keys,
                &id,
                &doc,
                Expect::Absent,
                Visibility::BeforeReturn,
            )
            .await?
        {
            Written::Done => Ok(()),
            Written::Conflict => Err(StoreError::Conflict(format!("api key {}", key.id))),
        }
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(self
            .read::<ApiKeyDoc>(&self.indices.api_keys, id)
            .await?
            .map(ApiKeyRecord::from))
    }

    async fn invalidate_api_key(&self, id: &str, now: UnixTime) -> Result<bool, StoreError> {
        self.compare_and_set(
            "api_key",
            &self.indices.api_keys,
            id,
            Visibility::Eventually,
            |current: Option<&ApiKeyDoc>| {
                Ok(match current {
                    Some(k) if k.invalidated_at.is_none() => (
                        Some(ApiKeyDoc {
                            invalidated_at: Some(now),
                            ..k.clone()
                        }),
                        true,
                    ),
                    _ => (None, false),
                })
            },
        )
        .await
    }

    async fn invalidate_agent_api_keys(
        &self,
        agent_id: &str,
        now: UnixTime,
    ) -> Result<usize, StoreError> {
        // The search only says which keys to look at; each is re-read in real time and
        // changed by compare-and-set, so a stale hit is harmless. Keys are inserted with
        // `refresh=wait_for`, so none that has been created is missing from the hits.
        let query = json!({
            "bool": {
                "filter": [{ "term": { "agent_id": agent_id } }],
                "must_not": [{ "exists": { "field": "invalidated_at" } }]
            }
        });
        let mut changed = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .client
                .search_ids(
                    &self.indices.api_keys,
                    query.clone(),
                    "id",
                    after.as_deref(),
                    API_KEY_PAGE,
                )
                .await?;
            for (_, key_id) in &page {
                let Some(key_id) = key_id else {
                    return Err(StoreError::Corrupt(
                        "an api key document has no id field".into(),
                    ));
                };
                if self.invalidate_key_of(key_id, agent_id, now).await? {
                    changed += 1;
                }
            }
            if page.len() < API_KEY_PAGE {
                return Ok(changed);
            }
            after = page.last().and_then(|(_, id)| id.clone());
        }
    }

    async fn api_keys_where(&self, filter: &ApiKeyFilter) -> Result<Vec<ApiKeyRecord>, StoreError> {
        // The search only says which keys to read; each is then read in real time (keys
        // are inserted with `refresh=wait_for`, so every created key is found).
        let mut terms = Vec::new();
        for (field, value) in [
            ("name", &filter.name),
            ("owner.username", &filter.username),
            ("owner.realm", &filter.realm),
        ] {
            if let Some(value) = value {
                terms.push(json!({ "term": { field: value } }));
            }
        }
        let query = json!({ "bool": { "filter": terms } });
        let mut keys = Vec::new();
        for id in self
            .search_all_ids(&self.indices.api_keys, query, "id")
            .await?
        {
            if let Some(key) = self.api_key(&id).await? {
                if filter.matches(&key) {
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }

    async fn purge_api_keys(&self, cutoff: UnixTime) -> Result<usize, StoreError> {
        let query = json!({
            "bool": { "should": [
                { "range": { "invalidated_at": { "lte": cutoff } } },
                { "range": { "expires_at": { "lte": cutoff } } }
            ] }
        });
        self.purge_where("api_key", &self.indices.api_keys, query, |k: &ApiKeyDoc| {
            k.invalidated_at.is_some_and(|t| t <= cutoff)
                || k.expires_at.is_some_and(|t| t <= cutoff)
        })
        .await
    }

    async fn record(&self, kind: RecordKind, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        Ok(self
            .read::<RecordDoc>(self.indices.of_records(kind), id)
            .await?
            .map(StoredRecord::from))
    }

    async fn update_record(
        &self,
        kind: RecordKind,
        id: &str,
        mut change: RecordChange,
    ) -> Result<Option<StoredRecord>, StoreError> {
        // A created record is searchable before this returns, so that listings (and
        // invalidation by owner) find every record whose creation has returned.
        self.compare_and_change(
            kind.as_str(),
            self.indices.of_records(kind),
            id,
            [Visibility::BeforeReturn, Visibility::Eventually],
            |current: Option<&RecordDoc>| {
                let before = current.cloned().map(StoredRecord::from);
                let next = match change(before.as_ref()) {
                    RecordWrite::Keep => Next::Keep,
                    RecordWrite::Delete => Next::Delete,
                    RecordWrite::Put(next) => Next::Put(RecordDoc::from(&next)),
                };
                Ok((next, before))
            },
        )
        .await
    }

    async fn records(
        &self,
        kind: RecordKind,
        owner: Option<&str>,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let query = match owner {
            Some(owner) => json!({ "bool": { "filter": [{ "term": { "owner": owner } }] } }),
            None => json!({ "match_all": {} }),
        };
        let index = self.indices.of_records(kind);
        let mut found = Vec::new();
        for id in self.search_all_ids(index, query, "id").await? {
            if let Some(record) = self.record(kind, &id).await? {
                if owner.is_none_or(|o| record.owner.as_deref() == Some(o)) {
                    found.push(record);
                }
            }
        }
        Ok(found)
    }

    async fn purge_records(&self, kind: RecordKind, cutoff: UnixTime) -> Result<usize, StoreError> {
        let query = json!({ "range": { "purge_after": { "lte": cutoff } } });
        let index = self.indices.of_records(kind);
        self.purge_where(kind.as_str(), index, query, |r: &RecordDoc| {
            r.purge_after.is_some_and(|t| t <= cutoff)
        })
        .await
    }

    async fn agent_ids(&self) -> Result<Vec<String>, StoreError> {
        // A rare admin listing: refresh first, so that the search sees every agent whose
        // creation has returned (each record is then changed by real-time CAS).
        self.client.refresh(&self.indices.agents).await?;
        self.search_all_ids(
            &self.indices.agents,
            json!({ "exists": { "field": "agent_id" } }),
            "agent_id",
        )
        .await
    }

    async fn signing_keys(&self, now: UnixTime) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let ring = self
            .read::<KeyRingDoc>(&self.indices.signing_keys, KEY_RING_ID)
            .await?
            .unwrap_or_default();
        let mut keys: Vec<SigningKeyRecord> = ring_records(&ring)?
            .into_iter()
            .filter(|k| k.verify_until.is_none_or(|t| t > now))
            .collect();
        keys.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.kid.cmp(&b.kid))
        });
        Ok(keys)
    }

    async fn insert_first_signing_key(
        &self,
        key: SigningKeyRecord,
    ) -> Result<SigningKeyRecord, StoreError> {
        self.change_key_ring(|ring: Option<&KeyRingDoc>| {
            let ring = ring.cloned().unwrap_or_default();
            if let Some(existing) = signing_key_of(&ring) {
                let existing = SigningKeyRecord::try_from(existing).map_err(|e| {
                    StoreError::Corrupt(format!("signing key {}: {e}", existing.kid))
                })?;
                return Ok((None, existing));
            }
            if ring.keys.iter().any(|k| k.kid == key.kid) {
                return Err(StoreError::Conflict(format!("signing key {}", key.kid)));
            }
            let mut next = ring;
            next.keys.push(SigningKeyDoc::from(&key));
            Ok((Some(next), key.clone()))
        })
        .await
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        old_verify_until: UnixTime,
    ) -> Result<(), StoreError> {
        self.change_key_ring(|ring: Option<&KeyRingDoc>| {
            let mut next = ring.cloned().unwrap_or_default();
            if next.keys.iter().any(|k| k.kid == key.kid) {
                return Err(StoreError::Conflict(format!("signing key {}", key.kid)));
            }
            let now = key.created_at;
            for old in next.keys.iter_mut().filter(|k| k.retired_at.is_none()) {
                old.retired_at = Some(now);
                old.verify_until = Some(old_verify_until);
            }
            // Keys that can no longer verify anything are dropped, so the ring stays small.
            next.keys.retain(|k| k.verify_until.is_none_or(|t| t > now));
            next.keys.push(SigningKeyDoc::from(&key));
            Ok((Some(next), ()))
        })
        .await
    }

    async fn expire_signing_key(&self, kid: &str, now: UnixTime) -> Result<bool, StoreError> {
        self.change_key_ring(|ring: Option<&KeyRingDoc>| {
            let Some(ring) = ring else {
                return Ok((None, false));
            };
            let mut next = ring.clone();
            let Some(key) = next
                .keys
                .iter_mut()
                .find(|k| k.kid == kid && k.verify_until.is_none_or(|t| t > now))
            else {
                return Ok((None, false));
            };
            key.retired_at = Some(key.retired_at.map_or(now, |t| t.min(now)));
            key.verify_until = Some(now);
            Ok((Some(next), true))
        })
        .await
    }

    async fn schedule_signing_key(
        &self,
        key: SigningKeyRecord,
        expected_kid: &str,
        old_verify_until: UnixTime,
    ) -> Result<bool, StoreError> {
        self.change_key_ring(|ring: Option<&KeyRingDoc>| {
            let Some(ring) = ring else {
                return Ok((None, false));
            };
            let newest = ring
                .keys
                .iter()
                .max_by(|a, b| a.created_at.cmp(&b.created_at).then(b.kid.cmp(&a.kid)));
            if !newest.is_some_and(|k| k.kid == expected_kid && k.retired_at.is_none()) {
                return Ok((None, false));
            }
            let mut next = ring.clone();
            let now = key.created_at;
            for old in next.keys.iter_mut().filter(|k| k.kid == expected_kid) {
                old.retired_at = Some(now);
                old.verify_until = Some(old_verify_until);
            }
            next.keys.push(SigningKeyDoc::from(&key));
            Ok((Some(next), true))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_ids_are_escaped_injectively() {
        let ids = [".", "..", "%2E", "%2E%2E", "%252E", "a.b", "a%b", "a/b"];
        let escaped: std::collections::HashSet<String> = ids
            .iter()
            .map(|id| doc_id(id).unwrap().into_owned())
            .collect();
        assert_eq!(escaped.len(), ids.len());
        assert_eq!(doc_id("agent-1").unwrap(), "agent-1");
        assert!(doc_id("").is_none());
        assert!(doc_id(&"x".repeat(513)).is_none());
        assert!(doc_id(&"x".repeat(512)).is_some());
    }
}
