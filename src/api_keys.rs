//! The API key service: creates keys (secret shown once, stored as an argon2id hash)
//! and verifies presented keys through the one [`SecretVerifier`] (its cache, work
//! budget and failure limits). The key's record is read on every verification, so an
//! invalidated or expired key stops working at once; such a key is answered like an
//! unknown id (see [`crate::secrets::UnknownIdPolicy`]).
//!
//! Each key has a coarse "last used" time (Elasticsearch #54789), kept as a small record
//! (kind `ApiKeyUse`) and written at most once per key per `api_keys.last_used_interval`:
//! this process remembers when it last wrote each key's time and writes again only once
//! the interval has passed (in the background, off the request), and the write itself
//! keeps a newer time written by another instance, so a key costs at most one write
//! per interval per instance, never one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::clock::{Clock, UnixTime};
use crate::secrets::{SecretError, SecretKind, SecretVerifier, Stored};
use crate::store::{
    ApiKeyFilter, ApiKeyOwner, ApiKeyRecord, RecordKind, RecordWrite, Store, StoreError,
    StoredRecord,
};

/// A last-used record is removed after this long without a use (the key is then shown
/// without `last_used`); a key in use keeps it.
const LAST_USED_KEPT: i64 = 400 * 86_400;
/// How many keys' last writes this process remembers before it forgets the stale ones.
const LAST_USED_REMEMBERED: usize = 200_000;

/// The body of a last-used record.
#[derive(serde::Serialize, serde::Deserialize)]
struct LastUsed {
    last_used: UnixTime,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("unknown API key")]
    Unknown,
    #[error("wrong API key secret")]
    WrongSecret,
    #[error("the API key has expired")]
    Expired,
    #[error("the API key has been invalidated")]
    Invalidated,
    /// Not checked now (busy, too many failures), or hashing failed on our side.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// An enrollment token presented anywhere but enrollment, or another key presented
    /// for enrollment.
    #[error("the API key is not valid for this request")]
    WrongPurpose,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiKeyError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unknown => "api_key_unknown",
            Self::WrongSecret => "api_key_wrong_secret",
            Self::Expired => "api_key_expired",
            Self::Invalidated => "api_key_invalidated",
            Self::Secret(SecretError::Throttled(_)) => "throttled",
            Self::Secret(SecretError::Hashing(_)) => "hashing_failed",
            Self::WrongPurpose => "api_key_wrong_purpose",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// A key as handed out once at creation (its `Debug` leaves the secret out).
#[derive(Clone, serde::Serialize)]
pub struct CreatedApiKey {
    pub id: String,
    pub name: String,
    pub agent_id: Option<String>,
    pub api_key: String,
    /// `base64(id ":" api_key)`, the value of `Authorization: ApiKey …`.
    pub encoded: String,
    /// Expiry in milliseconds since the epoch (Elasticsearch's convention), if any.
    pub expiration: Option<i64>,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CreatedApiKey({}, [redacted])", self.id)
    }
}

pub struct ApiKeyService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    secrets: Arc<SecretVerifier>,
    /// `api_keys.last_used_interval`, in seconds.
    last_used_interval: i64,
    /// When this process last wrote each key's last-used time.
    last_used_written: Arc<Mutex<HashMap<String, UnixTime>>>,
}

impl ApiKeyService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, secrets: Arc<SecretVerifier>) -> Self {
        Self {
            store,
            clock,
            secrets,
            last_used_interval: 3600,
            last_used_written: Arc::default(),
        }
    }

    /// With `api_keys.last_used_interval` (default 1 h).
    pub fn with_last_used_interval(mut self, interval: Duration) -> Self {
        self.last_used_interval = interval.as_secs().max(1) as i64;
        self
    }

    /// Notes a successful use of key `id` at `now`: at most once per interval per key,
    /// a background write of its last-used time.
    fn note_use(&self, id: &str) {
        let now = self.clock.now();
        let interval = self.last_used_interval;
        {
            let mut written = self
                .last_used_written
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if written.get(id).is_some_and(|at| now - at < interval) {
                return;
            }
            if written.len() >= LAST_USED_REMEMBERED {
                written.retain(|_, at| now - *at < interval);
            }
            written.insert(id.to_string(), now);
        }
        let store = self.store.clone();
        let id = id.to_string();
        let remembered = self.last_used_written.clone();
        tokio::spawn(async move {
            let record = StoredRecord {
                id: id.clone(),
                owner: None,
                purge_after: Some(now + LAST_USED_KEPT),
                body: serde_json::json!(LastUsed { last_used: now }),
            };
            let written = store
                .update_record(
                    RecordKind::ApiKeyUse,
                    &id,
                    Box::new(move |current| {
                        let newer = current
                            .and_then(|r| serde_json::from_value::<LastUsed>(r.body.clone()).ok())
                            .is_some_and(|c| now - c.last_used < interval);
                        if newer {
                            RecordWrite::Keep
                        } else {
                            RecordWrite::Put(record.clone())
                        }
                    }),
                )
                .await;
            if let Err(e) = written {
                tracing::warn!(error = %e, key_id = %id, "could not write the API key's last use");
                // Try again on the next use.
                remembered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            }
        });
    }

    /// The last-used times of these keys (those that have one): a read per key for a
    /// few keys, else one listing of every last-used record.
    pub async fn last_used(&self, ids: &[&str]) -> Result<HashMap<String, UnixTime>, StoreError> {
        let records = if ids.len() <= 8 {
            let mut found = Vec::new();
            for id in ids {
                found.extend(self.store.record(RecordKind::ApiKeyUse, id).await?);
            }
            found
        } else {
            self.store.records(RecordKind::ApiKeyUse, None).await?
        };
        Ok(records
            .into_iter()
            .filter_map(|r| {
                let used = serde_json::from_value::<LastUsed>(r.body).ok()?;
                Some((r.id, used.last_used))
            })
            .collect())
    }

    /// Removes the last-used records of keys unused for [`LAST_USED_KEPT`].
    pub async fn purge_last_used(&self, now: UnixTime) -> Result<usize, StoreError> {
        self.store.purge_records(RecordKind::ApiKeyUse, now).await
    }

    /// Creates a key; the clear secret exists only in the returned value.
    pub async fn create(
        &self,
        name: &str,
        agent_id: Option<&str>,
        expires_at: Option<UnixTime>,
    ) -> Result<CreatedApiKey, ApiKeyError> {
        self.create_with_owner(name, agent_id, expires_at, None)
            .await
    }

    /// Creates a key for `POST /_security/api_key`: owned by its creator and limited
    /// by the creator's privileges (see `crate::es_api::api_keys`).
    pub async fn create_owned(
        &self,
        name: &str,
        expires_at: Option<UnixTime>,
        owner: ApiKeyOwner,
    ) -> Result<CreatedApiKey, ApiKeyError> {
        self.create_with_owner(name, None, expires_at, Some(owner))
            .await
    }

    async fn create_with_owner(
        &self,
        name: &str,
        agent_id: Option<&str>,
        expires_at: Option<UnixTime>,
        owner: Option<ApiKeyOwner>,
    ) -> Result<CreatedApiKey, ApiKeyError> {
        let id = crate::secrets::random_secret(15);
        let secret = crate::secrets::random_secret(24);
        let hash = self.secrets.hash(&secret).await?;
        let record = ApiKeyRecord {
            id: id.clone(),
            name: name.to_string(),
            agent_id: agent_id.map(str::to_string),
            hash,
            created_at: self.clock.now(),
            expires_at,
            invalidated_at: None,
            owner,
        };
        self.store.insert_api_key(record).await?;
        let encoded = STANDARD.encode(format!("{id}:{secret}"));
        Ok(CreatedApiKey {
            id,
            name: name.to_string(),
            agent_id: agent_id.map(str::to_string),
            api_key: secret,
            encoded,
            expiration: expires_at.map(|t| t * 1000),
        })
    }

    fn is_active(&self, record: &ApiKeyRecord) -> bool {
        record.invalidated_at.is_none() && record.expires_at.is_none_or(|t| t > self.clock.now())
    }

    /// Verifies a presented key; returns its record. Enrollment tokens are refused:
    /// they are good for [`verify_enrollment_token`](Self::verify_enrollment_token) only.
    /// An unknown, invalidated or expired key, or one of the other purpose, is not an
    /// active credential here: the verifier answers it as it answers an unknown id (the
    /// error still says which, for logs and metrics).
    pub async fn verify(&self, id: &str, secret: &str) -> Result<ApiKeyRecord, ApiKeyError> {
        self.verify_for(id, secret, false).await
    }

    /// Verifies a presented enrollment token (an API key marked as one); any other key
    /// is refused.
    pub async fn verify_enrollment_token(
        &self,
        id: &str,
        secret: &str,
    ) -> Result<ApiKeyRecord, ApiKeyError> {
        self.verify_for(id, secret, true).await
    }

    async fn verify_for(
        &self,
        id: &str,
        secret: &str,
        enrollment: bool,
    ) -> Result<ApiKeyRecord, ApiKeyError> {
        let record = self.store.api_key(id).await?;
        let active = record
            .as_ref()
            .filter(|r| self.is_active(r) && r.is_enrollment_token() == enrollment);
        let stored = active.map(|r| Stored::Argon2(&r.hash));
        if self
            .secrets
            .verify(SecretKind::ApiKey, id, secret, stored)
            .await?
        {
            if let Some(record) = active {
                self.note_use(&record.id);
                return Ok(record.clone());
            }
        }
        Err(match record {
            None => ApiKeyError::Unknown,
            Some(r) if r.invalidated_at.is_some() => ApiKeyError::Invalidated,
            Some(r) if !self.is_active(&r) => ApiKeyError::Expired,
            Some(r) if r.is_enrollment_token() != enrollment => ApiKeyError::WrongPurpose,
            Some(_) => ApiKeyError::WrongSecret,
        })
    }

    /// Whether the key `id` exists and is neither invalidated nor expired, without a
    /// secret (for tokens issued to a non-agent client, which live as long as its key).
    pub async fn check_active(&self, id: &str) -> Result<ApiKeyRecord, ApiKeyError> {
        let record = self.store.api_key(id).await?.ok_or(ApiKeyError::Unknown)?;
        if record.invalidated_at.is_some() {
            return Err(ApiKeyError::Invalidated);
        }
        if record.expires_at.is_some_and(|t| t <= self.clock.now()) {
            return Err(ApiKeyError::Expired);
        }
        Ok(record)
    }

    /// A key's record (no secret needed: for listings by their owner or an admin).
    pub async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.store.api_key(id).await
    }

    /// The keys matching `filter`, ordered by id.
    pub async fn list(&self, filter: &ApiKeyFilter) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.store.api_keys_where(filter).await
    }

    /// Removes the keys that were invalidated, or expired, at or before `cutoff`.
    pub async fn purge(&self, cutoff: UnixTime) -> Result<usize, StoreError> {
        self.store.purge_api_keys(cutoff).await
    }

    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    pub async fn invalidate(&self, id: &str) -> Result<bool, StoreError> {
        let changed = self.store.invalidate_api_key(id, self.clock.now()).await?;
        self.secrets.forget(SecretKind::ApiKey, id);
        Ok(changed)
    }
}
