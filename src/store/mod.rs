//! The `Store` trait: everything fleetauth persists, behind one interface that every
//! backend implements (`sqlite` embedded, `elasticsearch` distributed) and that one
//! conformance suite (`tests/api/store_conformance.rs`) checks. No backend crate is
//! imported here, and nothing here knows about HTTP or OAuth.
//!
//! Concurrency lives inside each backend: [`Store::update_agent`] applies a pure change
//! function atomically (a transaction in SQLite; compare-and-set with retries in a
//! distributed backend), so the rotation rules are written once, above the store.
//! [`Store::update_document`] does the same for small JSON documents (e.g. the use
//! counters of use-limited tokens).

pub mod elasticsearch;
pub mod model;
pub mod sqlite;

use async_trait::async_trait;

use crate::clock::UnixTime;
pub use model::{AgentRecord, ApiKeyRecord, RetiredRefresh, SigningKeyRecord, TokenPairRecord};

/// A change to one agent record: given the record as it is now (or `None`), return the
/// record to write, or `None` to leave it as it is. It may be called more than once (a
/// backend that lost a race calls it again with the newer record), so it must be pure.
pub type AgentChange = Box<dyn FnMut(Option<&AgentRecord>) -> Option<AgentRecord> + Send + 'static>;

/// A change to one document: given its JSON text as it is now (or `None`), what to do.
/// Like [`AgentChange`], it may be called more than once, so it must be pure.
pub type DocumentChange = Box<dyn FnMut(Option<&str>) -> DocumentWrite + Send + 'static>;

/// What a [`DocumentChange`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentWrite {
    /// Leave the document as it is (or absent).
    Keep,
    /// Store this JSON text (keeping the document's `expires_at`; none for a new one).
    Put(String),
    /// Remove the document.
    Delete,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or failed; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
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

    async fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError>;

    /// Applies `change` atomically with respect to every other change of this agent.
    /// Returns the record the applied change was given (the state it decided on), so
    /// the caller can re-derive what was decided.
    async fn update_agent(
        &self,
        agent_id: &str,
        change: AgentChange,
    ) -> Result<Option<AgentRecord>, StoreError>;

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

    // ---- documents ----
    //
    // Small JSON documents kept by `kind` and `name` (the Vault JWT auth config and
    // roles, per-token use counters). The store does not look inside them: parsing
    // and validation live above it. `expires_at` is housekeeping only: a document past
    // it may still be read until `delete_expired_documents` removes it, so callers
    // that care check validity themselves.

    /// The JSON text of a document, if it exists.
    async fn document(&self, kind: &str, name: &str) -> Result<Option<String>, StoreError>;

    /// Creates or replaces a document.
    async fn put_document(
        &self,
        kind: &str,
        name: &str,
        json: &str,
        expires_at: Option<UnixTime>,
    ) -> Result<(), StoreError>;

    /// Removes a document; `false` if there was none.
    async fn delete_document(&self, kind: &str, name: &str) -> Result<bool, StoreError>;

    /// The names of every document of `kind`, sorted.
    async fn document_names(&self, kind: &str) -> Result<Vec<String>, StoreError>;

    /// Applies `change` atomically with respect to every other change of this document
    /// (a transaction in SQLite; compare-and-set with retries in a distributed
    /// backend). Returns the JSON text the applied change was given, so the caller can
    /// re-derive what was decided.
    async fn update_document(
        &self,
        kind: &str,
        name: &str,
        change: DocumentChange,
    ) -> Result<Option<String>, StoreError>;

    /// Removes every document whose `expires_at` is at or before `now`; returns how
    /// many.
    async fn delete_expired_documents(&self, now: UnixTime) -> Result<usize, StoreError>;
}
