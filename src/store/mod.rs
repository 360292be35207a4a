//! The `Store` trait: everything fleetauth persists, behind one interface that every
//! backend implements (`sqlite` embedded, `elasticsearch` distributed) and that one
//! conformance suite (`tests/api/store_conformance.rs`) checks. No backend crate is
//! imported here, and nothing here knows about HTTP or OAuth.
//!
//! Concurrency lives inside each backend: [`Store::update_agent`] applies a pure change
//! function atomically (a transaction in SQLite; compare-and-set with retries in a
//! distributed backend), so the rotation rules are written once, above the store.
//! [`Store::update_record`] does the same for the small records of every other kind
//! (users, roles, token families, service tokens, the Vault JWT auth config and roles,
//! use counters of use-limited tokens).

pub mod elasticsearch;
pub mod model;
pub mod sqlite;

use async_trait::async_trait;

use crate::clock::UnixTime;
pub use model::{
    ApiKeyFilter, ApiKeyOwner, ApiKeyRecord, RecordKind, RecordWrite, RetiredRefresh, RoleRecord,
    SecurityRecord, ServiceTokenRecord, SigningKeyRecord, StoredRecord, TokenFamilyRecord,
    TokenPairRecord, TokenStateRecord, UserRecord, ENROLLMENT_TOKEN_MARKER,
};

/// A change to one agent record: given the record as it is now (or `None`), return the
/// record to write, or `None` to leave it as it is. It may be called more than once (a
/// backend that lost a race calls it again with the newer record), so it must be pure.
pub type AgentChange =
    Box<dyn FnMut(Option<&TokenStateRecord>) -> Option<TokenStateRecord> + Send + 'static>;

/// A change to one security record: given the record as it is now (or `None`), what to
/// write. Like [`AgentChange`] it may be called more than once, so it must be pure.
pub type RecordChange = Box<dyn FnMut(Option<&StoredRecord>) -> RecordWrite + Send + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or failed; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A change of one record lost every compare-and-set attempt to concurrent changes
    /// of the same record (only the Elasticsearch store, after
    /// `elasticsearch::MAX_CAS_ATTEMPTS`); nothing was written. Each lost attempt means
    /// another change of that record succeeded, so this is the caller's lost race, not a
    /// server fault: a grant answers `invalid_grant`, the security APIs 409.
    #[error("store contended: {0}")]
    Contended(String),
    /// A record already exists with that id.
    #[error("already exists: {0}")]
    Conflict(String),
    /// Stored data could not be read back (corruption or an incompatible version).
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the backend is usable (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// A value kept for the life of the store (e.g. the deployment id): returns the
    /// stored value, storing `value` first if there is none.
    async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError>;

    async fn agent(&self, agent_id: &str) -> Result<Option<TokenStateRecord>, StoreError>;

    /// [`agent`](Self::agent) for a reader that looks only at whether the agent is
    /// enrolled and at its current and pending pairs (the per-request check of an
    /// access token): the record's `retired` list may come back empty. A backend that
    /// can skip reading and decoding that list does (SQLite: it is most of the cost of
    /// the read); the default reads the whole record. Never use it to decide a change:
    /// changes go through [`update_agent`](Self::update_agent), which reads everything.
    async fn agent_pairs(&self, agent_id: &str) -> Result<Option<TokenStateRecord>, StoreError> {
        self.agent(agent_id).await
    }

    /// The id of every agent record (agents, and non-agent clients whose pairs are kept
    /// like an agent's), ordered by id: a listing (every record whose creation has
    /// returned is included), for bulk revocation. Each record is then read and changed
    /// through [`update_agent`](Self::update_agent), never decided from the listing.
    async fn agent_ids(&self) -> Result<Vec<String>, StoreError>;

    /// Applies `change` atomically with respect to every other change of this agent.
    /// Returns the record the applied change was given (the state it decided on), so
    /// the caller can re-derive what was decided.
    async fn update_agent(
        &self,
        agent_id: &str,
        change: AgentChange,
    ) -> Result<Option<TokenStateRecord>, StoreError>;

    async fn insert_api_key(&self, key: ApiKeyRecord) -> Result<(), StoreError>;

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Marks the key invalidated. `false` if it does not exist or already was.
    async fn invalidate_api_key(&self, id: &str, now: UnixTime) -> Result<bool, StoreError>;

    /// Invalidates every key of an agent; returns how many changed.
    async fn invalidate_agent_api_keys(
        &self,
        agent_id: &str,
        now: UnixTime,
    ) -> Result<usize, StoreError>;

    /// The API keys that match `filter`, each as it is now (a listing: every key whose
    /// creation has returned is included), ordered by id.
    async fn api_keys_where(&self, filter: &ApiKeyFilter) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Removes the keys invalidated or expired at or before `cutoff`; returns how many.
    /// A distributed backend finds them by a search, so a key invalidated within its
    /// last refresh interval may be left for the next run; a key is never removed
    /// unless its current state says so.
    async fn purge_api_keys(&self, cutoff: UnixTime) -> Result<usize, StoreError>;

    /// A small record by kind and id, as it is now.
    async fn record(&self, kind: RecordKind, id: &str) -> Result<Option<StoredRecord>, StoreError>;

    /// Applies `change` to one security record atomically with respect to every other
    /// change of it (creating or removing it as the change decides). Returns the record
    /// the applied change was given. A `Put` must keep the record's id.
    async fn update_record(
        &self,
        kind: RecordKind,
        id: &str,
        change: RecordChange,
    ) -> Result<Option<StoredRecord>, StoreError>;

    /// The records of a kind (of one owner, if given), each as it is now, ordered by
    /// id. A listing: every record whose creation has returned is included.
    async fn records(
        &self,
        kind: RecordKind,
        owner: Option<&str>,
    ) -> Result<Vec<StoredRecord>, StoreError>;

    /// Removes the records of a kind whose `purge_after` is at or before `cutoff`;
    /// returns how many (found like [`purge_api_keys`](Self::purge_api_keys)'s keys).
    async fn purge_records(&self, kind: RecordKind, cutoff: UnixTime) -> Result<usize, StoreError>;

    /// Every signing key that has not passed its `verify_until` at `now`.
    async fn signing_keys(&self, now: UnixTime) -> Result<Vec<SigningKeyRecord>, StoreError>;

    /// Stores `key` as the signing key if no unretired key exists; returns the unretired
    /// key that signs afterwards (the existing one, or `key`).
    async fn insert_first_signing_key(
        &self,
        key: SigningKeyRecord,
    ) -> Result<SigningKeyRecord, StoreError>;

    /// Retires every unretired key (it verifies until `old_verify_until`) and stores
    /// `key` as the new signing key, atomically.
    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        old_verify_until: UnixTime,
    ) -> Result<(), StoreError>;

    /// Takes one key out of the ring at once (a revoked key): it stops signing and
    /// verifying at `now`. `false` if no such key is stored or it already had.
    async fn expire_signing_key(&self, kid: &str, now: UnixTime) -> Result<bool, StoreError>;

    /// A compare-and-set for automatic rotation: if the newest key of the store is
    /// `expected_kid` and it is unretired, schedules its retirement at `key.created_at`
    /// (verifying until `old_verify_until`) and stores `key`, which signs from its
    /// `created_at`, atomically; returns `true`. Otherwise (another instance rotated
    /// first, or an operator did) changes nothing and returns `false`.
    async fn schedule_signing_key(
        &self,
        key: SigningKeyRecord,
        expected_kid: &str,
        old_verify_until: UnixTime,
    ) -> Result<bool, StoreError>;
}

impl dyn Store {
    /// A typed security record by id.
    pub async fn typed_record<T: SecurityRecord>(&self, id: &str) -> Result<Option<T>, StoreError> {
        self.record(T::KIND, id)
            .await?
            .map(|stored| decode::<T>(&stored))
            .transpose()
    }

    /// Applies a typed change to one security record (see [`Store::update_record`]);
    /// returns the typed record the applied change was given. A stored record that does
    /// not decode is reported as corrupt and left alone.
    pub async fn update_typed<T, F>(&self, id: &str, mut change: F) -> Result<Option<T>, StoreError>
    where
        T: SecurityRecord,
        F: FnMut(Option<&T>) -> TypedWrite<T> + Send + 'static,
    {
        let wanted_id = id.to_string();
        let before = self
            .update_record(
                T::KIND,
                id,
                Box::new(move |stored| {
                    let current = match stored.map(decode::<T>).transpose() {
                        Ok(current) => current,
                        Err(_) => return RecordWrite::Keep,
                    };
                    match change(current.as_ref()) {
                        TypedWrite::Keep => RecordWrite::Keep,
                        TypedWrite::Delete => RecordWrite::Delete,
                        TypedWrite::Put(next) => match next.to_stored() {
                            Ok(next) if next.id == wanted_id => RecordWrite::Put(next),
                            _ => RecordWrite::Keep,
                        },
                    }
                }),
            )
            .await?;
        before.map(|stored| decode::<T>(&stored)).transpose()
    }

    /// The typed records of a kind (of one owner, if given), ordered by id.
    pub async fn typed_records<T: SecurityRecord>(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<T>, StoreError> {
        self.records(T::KIND, owner)
            .await?
            .iter()
            .map(decode::<T>)
            .collect()
    }
}

/// What a typed change decides (see [`RecordWrite`]).
#[derive(Debug, Clone, PartialEq)]
pub enum TypedWrite<T> {
    Keep,
    Put(T),
    Delete,
}

fn decode<T: SecurityRecord>(stored: &StoredRecord) -> Result<T, StoreError> {
    T::from_stored(stored)
        .map_err(|e| StoreError::Corrupt(format!("{} record {}: {e}", T::KIND.as_str(), stored.id)))
}
