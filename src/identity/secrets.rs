//! Password hashing and verification: argon2id PHC strings, verified on the blocking
//! pool (at most two at a time, so a flood of bad passwords cannot starve the
//! runtime), with a bounded in-memory cache of verified secrets keyed by record id and
//! holding an HMAC of the secret and the stored hash (never the secret), so the hot
//! path pays argon2 once per secret, and a changed hash misses the cache. An unknown
//! id is verified against a dummy hash, so timing does not tell which ids exist.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use lru::LruCache;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

const ARGON2_CONCURRENCY: usize = 2;

/// Hashing failed (argon2 or the blocking pool); nothing the caller did.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash a secret: {0}")]
pub struct HashError(String);

fn hash_now(secret: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

fn matches(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

pub struct PasswordHasher {
    cache: Mutex<LruCache<String, [u8; 32]>>,
    cache_key: [u8; 32],
    permits: Semaphore,
    dummy_hash: String,
}

impl PasswordHasher {
    pub fn new(cache_size: usize) -> Result<Self, HashError> {
        let mut cache_key = [0u8; 32];
        rand::rng().fill_bytes(&mut cache_key);
        let mut dummy = [0u8; 24];
        rand::rng().fill_bytes(&mut dummy);
        Ok(Self {
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(cache_size).unwrap_or(NonZeroUsize::MIN),
            )),
            cache_key,
            permits: Semaphore::new(ARGON2_CONCURRENCY),
            dummy_hash: hash_now(&format!("{dummy:?}"))?,
        })
    }

    /// The argon2id PHC string of `secret`.
    pub async fn hash(&self, secret: &str) -> Result<String, HashError> {
        let secret = secret.to_string();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError(e.to_string()))?;
        tokio::task::spawn_blocking(move || hash_now(&secret))
            .await
            .map_err(|e| HashError(e.to_string()))?
    }

    fn fingerprint(&self, secret: &str, phc: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.cache_key)
            .expect("HMAC takes any key length");
        mac.update(secret.as_bytes());
        mac.update(&[0]);
        mac.update(phc.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `secret` matches the stored `phc` of record `id`.
    pub async fn verify(&self, id: &str, secret: &str, phc: &str) -> bool {
        let fingerprint = self.fingerprint(secret, phc);
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied();
        if cached.is_some_and(|c| bool::from(c.ct_eq(&fingerprint))) {
            return true;
        }
        if !self.argon2(secret, phc).await {
            return false;
        }
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(id.to_string(), fingerprint);
        true
    }

    /// Spends the time a verification would, for an id that does not exist.
    pub async fn verify_unknown(&self, secret: &str) {
        let dummy = self.dummy_hash.clone();
        self.argon2(secret, &dummy).await;
    }

    /// Forgets the cached verification of `id` (after a password change).
    pub fn forget(&self, id: &str) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).pop(id);
    }

    async fn argon2(&self, secret: &str, phc: &str) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let (secret, phc) = (secret.to_string(), phc.to_string());
        tokio::task::spawn_blocking(move || matches(&secret, &phc))
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_hashes_and_a_changed_hash_misses_the_cache() {
        let hasher = PasswordHasher::new(4).unwrap();
        let one = hasher.hash("first password").await.unwrap();
        assert!(one.starts_with("$argon2id$"));
        assert!(hasher.verify("u", "first password", &one).await);
        assert!(hasher.verify("u", "first password", &one).await, "cached");
        assert!(!hasher.verify("u", "wrong", &one).await);
        let two = hasher.hash("second password").await.unwrap();
        assert!(!hasher.verify("u", "first password", &two).await);
        assert!(hasher.verify("u", "second password", &two).await);
    }
}
