//! The API key service: creates keys (secret shown once, stored as an argon2id hash)
//! and verifies presented keys. Verified keys are remembered in a bounded in-memory
//! cache keyed by key id and holding an HMAC of the secret (never the secret), so the
//! hot path pays argon2 once per key, not once per request. The key's record is read
//! on every verification, so an invalidated or expired key stops working at once.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use lru::LruCache;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::clock::{Clock, UnixTime};
use crate::store::{ApiKeyFilter, ApiKeyOwner, ApiKeyRecord, Store, StoreError};

/// At most this many argon2 verifications run at once; the rest wait, so a flood of
/// bad keys cannot starve the runtime.
const ARGON2_CONCURRENCY: usize = 2;

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
            Self::WrongPurpose => "api_key_wrong_purpose",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// A key as handed out once at creation.
#[derive(Debug, Clone, serde::Serialize)]
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

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn hash_secret(secret: &str) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Unavailable(format!("argon2: {e}")))
}

fn argon2_matches(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

pub struct ApiKeyService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Key id -> HMAC(secret, stored hash) of the last secret that verified.
    cache: Mutex<LruCache<String, [u8; 32]>>,
    cache_key: [u8; 32],
    argon2_permits: Semaphore,
    /// Verified against when the id is unknown, so timing does not reveal which ids exist.
    dummy_hash: String,
}

impl ApiKeyService {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cache_size: usize,
    ) -> Result<Self, StoreError> {
        let mut cache_key = [0u8; 32];
        rand::rng().fill_bytes(&mut cache_key);
        let capacity = NonZeroUsize::new(cache_size).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            store,
            clock,
            cache: Mutex::new(LruCache::new(capacity)),
            cache_key,
            argon2_permits: Semaphore::new(ARGON2_CONCURRENCY),
            dummy_hash: hash_secret(&random_token(24))?,
        })
    }

    /// Creates a key; the clear secret exists only in the returned value.
    pub async fn create(
        &self,
        name: &str,
        agent_id: Option<&str>,
        expires_at: Option<UnixTime>,
    ) -> Result<CreatedApiKey, StoreError> {
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
    ) -> Result<CreatedApiKey, StoreError> {
        self.create_with_owner(name, None, expires_at, Some(owner))
            .await
    }

    async fn create_with_owner(
        &self,
        name: &str,
        agent_id: Option<&str>,
        expires_at: Option<UnixTime>,
        owner: Option<ApiKeyOwner>,
    ) -> Result<CreatedApiKey, StoreError> {
        let id = random_token(15);
        let secret = random_token(24);
        let hash = {
            let secret = secret.clone();
            tokio::task::spawn_blocking(move || hash_secret(&secret))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))??
        };
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

    fn fingerprint(&self, record: &ApiKeyRecord, secret: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.cache_key)
            .expect("HMAC takes any key length");
        mac.update(secret.as_bytes());
        mac.update(&[0]);
        mac.update(record.hash.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Verifies a presented key; returns its record. Enrollment tokens are refused:
    /// they are good for [`verify_enrollment_token`](Self::verify_enrollment_token) only.
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
        let Some(record) = self.store.api_key(id).await? else {
            self.argon2(secret.to_string(), self.dummy_hash.clone())
                .await;
            return Err(ApiKeyError::Unknown);
        };
        if record.invalidated_at.is_some() {
            return Err(ApiKeyError::Invalidated);
        }
        if record.expires_at.is_some_and(|t| t <= self.clock.now()) {
            return Err(ApiKeyError::Expired);
        }
        if record.is_enrollment_token() != enrollment {
            return Err(ApiKeyError::WrongPurpose);
        }
        let fingerprint = self.fingerprint(&record, secret);
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied();
        if cached.is_some_and(|c| bool::from(c.ct_eq(&fingerprint))) {
            return Ok(record);
        }
        if !self.argon2(secret.to_string(), record.hash.clone()).await {
            return Err(ApiKeyError::WrongSecret);
        }
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(id.to_string(), fingerprint);
        Ok(record)
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

    async fn argon2(&self, secret: String, phc: String) -> bool {
        let Ok(_permit) = self.argon2_permits.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || argon2_matches(&secret, &phc))
            .await
            .unwrap_or(false)
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
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).pop(id);
        Ok(changed)
    }
}
