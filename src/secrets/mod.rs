//! The one secret verifier: how a presented secret (an API key's, a user's password, a
//! service token's) is checked against what is stored, for every credential kind.
//!
//! - Hashing: argon2id PHC strings ([`SecretVerifier::hash`]), computed and verified on
//!   the blocking pool, at most `credential_checks.max_concurrent_hashes` at once with
//!   ONE semaphore ([`budget`]); a verification waits for its turn at most
//!   `credential_checks.max_queue_wait`, then is refused as [`ThrottleReason::Busy`].
//! - Cache: a bounded LRU of verified secrets keyed by (kind, id), holding an HMAC (with
//!   a per-process random key) of the secret and the stored hash — never the secret —
//!   so the hot path pays argon2 once per secret, and a changed hash misses.
//! - Failure limits ([`throttle`]): token buckets per client address and per
//!   credential; an empty bucket refuses further uncached checks with an honest
//!   `Retry-After` ([`ThrottleReason::ClientAddress`], [`ThrottleReason::Credential`]).
//!   Checks that cost nothing — a cache hit, a service token's SHA-256 — are answered
//!   before the limits, so a flood aimed at a credential does not lock out its holder
//!   once it has authenticated.
//! - Unknown ids (`credential_checks.unknown_ids`): refused without argon2 by default
//!   (an unknown, invalidated or expired id all answer alike, fast), or verified
//!   against a dummy hash ([`UnknownIdPolicy`]; docs/operations.md has the trade-off).
//! - Service tokens carry 256 random bits: their SHA-256 is stored and compared in
//!   constant time ([`Stored::Sha256Hex`]); argon2 would add only cost an attacker can
//!   make us pay.
//!
//! Errors are this module's own ([`SecretError`]); the services above map them.

pub mod budget;
pub mod caller;
pub mod settings;
pub mod throttle;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use hmac::{Hmac, Mac};
use lru::LruCache;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use budget::{BudgetError, HashBudget, Wait};
pub use caller::{caller_address, with_caller_address};
pub use settings::{CredentialCheckSettings, RawCredentialChecks, UnknownIdPolicy};
use throttle::{Exhausted, FailureLimits};

/// Which kind of credential a secret belongs to (also the metrics' `credential` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    ApiKey,
    Password,
    ServiceToken,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Password => "password",
            Self::ServiceToken => "service_token",
        }
    }

    /// Whether this kind's secrets are argon2id hashes (else SHA-256).
    fn is_argon2(self) -> bool {
        !matches!(self, Self::ServiceToken)
    }
}

/// What is stored for an active credential.
#[derive(Debug, Clone, Copy)]
pub enum Stored<'a> {
    /// An argon2id PHC string.
    Argon2(&'a str),
    /// The lowercase hex SHA-256 of a high-entropy secret.
    Sha256Hex(&'a str),
}

/// Why a check was not made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleReason {
    /// The argon2 budget is spent: the queue is longer than the bounded wait.
    Busy,
    /// Too many failed checks from this client address.
    ClientAddress,
    /// Too many failed checks of this credential.
    Credential,
}

impl ThrottleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::ClientAddress => "client_address",
            Self::Credential => "credential",
        }
    }
}

/// A check refused for now; it may be retried after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct Throttled {
    pub reason: ThrottleReason,
    pub retry_after: Duration,
}

impl Throttled {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        retry_after_secs(self.retry_after)
    }

    fn describe(&self) -> String {
        let after = self.retry_after_secs();
        match self.reason {
            ThrottleReason::Busy => {
                format!("too many credential checks are in progress; retry after {after}s")
            }
            ThrottleReason::ClientAddress => {
                format!("too many failed credential checks from this address; retry after {after}s")
            }
            ThrottleReason::Credential => {
                format!("too many failed checks of this credential; retry after {after}s")
            }
        }
    }
}

/// A wait as `Retry-After` can say it: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Not checked now: busy, or too many failures. The client may retry later.
    #[error(transparent)]
    Throttled(#[from] Throttled),
    /// Hashing failed on our side (argon2, or the blocking pool); nothing the client did.
    #[error("cannot hash or verify a secret: {0}")]
    Hashing(String),
}

impl From<BudgetError> for SecretError {
    fn from(e: BudgetError) -> Self {
        match e {
            BudgetError::Busy(retry_after) => Self::Throttled(Throttled {
                reason: ThrottleReason::Busy,
                retry_after,
            }),
            BudgetError::Pool(m) => Self::Hashing(m),
        }
    }
}

fn hash_now(secret: &str) -> Result<String, SecretError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hashing(e.to_string()))
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

/// A new random secret of `bytes` random bytes, base64url without padding: API key ids
/// and secrets, service-token values, generated passwords.
pub fn random_secret(bytes: usize) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The lowercase hex SHA-256 of a secret, as [`Stored::Sha256Hex`] expects.
pub fn sha256_hex(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

pub struct SecretVerifier {
    /// (kind, id) -> HMAC(secret, stored hash) of the last secret that verified.
    cache: Mutex<LruCache<(SecretKind, String), [u8; 32]>>,
    cache_key: [u8; 32],
    budget: HashBudget,
    limits: FailureLimits,
    /// Verified against for unknown ids under [`UnknownIdPolicy::DummyHash`] (`None`:
    /// [`UnknownIdPolicy::FailFast`]).
    dummy_hash: Option<String>,
    /// Argon2 verifications run (not cache hits, not hashes): for tests and the
    /// benchmark, which check what a flood cost.
    argon2_runs: AtomicU64,
}

impl SecretVerifier {
    pub fn new(settings: &CredentialCheckSettings, cache_size: usize) -> Result<Self, SecretError> {
        let mut cache_key = [0u8; 32];
        rand::rng().fill_bytes(&mut cache_key);
        let dummy_hash = match settings.unknown_ids {
            UnknownIdPolicy::FailFast => None,
            UnknownIdPolicy::DummyHash => {
                let mut dummy = [0u8; 24];
                rand::rng().fill_bytes(&mut dummy);
                Some(hash_now(&sha256_hex(&format!("{dummy:?}")))?)
            }
        };
        Ok(Self {
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(cache_size).unwrap_or(NonZeroUsize::MIN),
            )),
            cache_key,
            budget: HashBudget::new(settings.max_concurrent_hashes, settings.max_queue_wait),
            limits: FailureLimits::new(
                settings.per_address,
                settings.per_credential,
                settings.max_tracked,
            ),
            dummy_hash,
            argon2_runs: AtomicU64::new(0),
        })
    }

    /// The argon2id PHC string of a new secret (waits for its turn without bound: only
    /// authenticated requests and the CLI create secrets).
    pub async fn hash(&self, secret: &str) -> Result<String, SecretError> {
        let secret = secret.to_string();
        self.budget
            .run(Wait::Unbounded, move || hash_now(&secret))
            .await?
    }

    /// Argon2 verifications run so far.
    pub fn argon2_runs(&self) -> u64 {
        self.argon2_runs.load(Ordering::Relaxed)
    }

    fn fingerprint(&self, secret: &str, phc: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.cache_key)
            .expect("HMAC takes any key length");
        mac.update(secret.as_bytes());
        mac.update(&[0]);
        mac.update(phc.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `secret` is the secret of credential `id`, whose stored hash is
    /// `stored` (`None`: no such id, or it is no longer active). `Ok(false)` is a failed
    /// check (counted against the caller's address and the credential); `Err` means
    /// the check was not made (busy, too many failures) or failed on our side.
    pub async fn verify(
        &self,
        kind: SecretKind,
        id: &str,
        secret: &str,
        stored: Option<Stored<'_>>,
    ) -> Result<bool, SecretError> {
        let addr = caller_address();
        let result = self.verify_from(addr, kind, id, secret, stored).await;
        if let Err(SecretError::Throttled(t)) = &result {
            crate::telemetry::metrics::credential_check_throttled(kind, t.reason);
        }
        result
    }

    async fn verify_from(
        &self,
        addr: Option<std::net::IpAddr>,
        kind: SecretKind,
        id: &str,
        secret: &str,
        stored: Option<Stored<'_>>,
    ) -> Result<bool, SecretError> {
        let credential = Some((kind, id));
        match stored {
            Some(Stored::Sha256Hex(expected)) => {
                let presented = sha256_hex(secret);
                if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
                    return Ok(true);
                }
                self.admit(addr, credential)?;
                self.limits.record_failure(addr, credential, Instant::now());
                Ok(false)
            }
            Some(Stored::Argon2(phc)) => {
                let fingerprint = self.fingerprint(secret, phc);
                let cached = self
                    .cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&(kind, id.to_string()))
                    .copied();
                if cached.is_some_and(|c| bool::from(c.ct_eq(&fingerprint))) {
                    return Ok(true);
                }
                self.admit(addr, credential)?;
                if self.argon2(secret, phc).await? {
                    self.cache
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .put((kind, id.to_string()), fingerprint);
                    return Ok(true);
                }
                self.limits.record_failure(addr, credential, Instant::now());
                Ok(false)
            }
            None => {
                // No per-credential bucket for ids that do not exist (see `throttle`).
                self.admit(addr, None)?;
                if let (true, Some(dummy)) = (kind.is_argon2(), &self.dummy_hash) {
                    self.argon2(secret, dummy).await?;
                }
                self.limits.record_failure(addr, None, Instant::now());
                Ok(false)
            }
        }
    }

    fn admit(
        &self,
        addr: Option<std::net::IpAddr>,
        credential: Option<(SecretKind, &str)>,
    ) -> Result<(), Throttled> {
        self.limits
            .admit(addr, credential, Instant::now())
            .map_err(|(exhausted, retry_after)| Throttled {
                reason: match exhausted {
                    Exhausted::ClientAddress => ThrottleReason::ClientAddress,
                    Exhausted::Credential => ThrottleReason::Credential,
                },
                retry_after,
            })
    }

    async fn argon2(&self, secret: &str, phc: &str) -> Result<bool, SecretError> {
        self.argon2_runs.fetch_add(1, Ordering::Relaxed);
        let (secret, phc) = (secret.to_string(), phc.to_string());
        Ok(self
            .budget
            .run(Wait::Bounded, move || argon2_matches(&secret, &phc))
            .await?)
    }

    /// Forgets the cached verification of a credential (its secret changed, or it was
    /// invalidated or deleted).
    pub fn forget(&self, kind: SecretKind, id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(&(kind, id.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use settings::BucketRule;

    fn settings(unknown_ids: UnknownIdPolicy) -> CredentialCheckSettings {
        CredentialCheckSettings {
            unknown_ids,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn verifies_hashes_and_a_changed_hash_misses_the_cache() {
        let verifier = SecretVerifier::new(&settings(UnknownIdPolicy::FailFast), 4).unwrap();
        let kind = SecretKind::Password;
        let one = verifier.hash("first password").await.unwrap();
        assert!(one.starts_with("$argon2id$"));
        let check = |secret: &'static str, phc: String| {
            let verifier = &verifier;
            async move {
                verifier
                    .verify(kind, "u", secret, Some(Stored::Argon2(&phc)))
                    .await
                    .unwrap()
            }
        };
        assert!(check("first password", one.clone()).await);
        let runs = verifier.argon2_runs();
        assert!(check("first password", one.clone()).await, "cached");
        assert_eq!(verifier.argon2_runs(), runs, "a cache hit runs no argon2");
        assert!(!check("wrong", one.clone()).await);
        let two = verifier.hash("second password").await.unwrap();
        assert!(!check("first password", two.clone()).await);
        assert!(check("second password", two).await);
    }

    #[tokio::test]
    async fn unknown_ids_cost_argon2_only_under_the_dummy_hash_policy() {
        let fast = SecretVerifier::new(&settings(UnknownIdPolicy::FailFast), 4).unwrap();
        assert!(!fast
            .verify(SecretKind::ApiKey, "nope", "s", None)
            .await
            .unwrap());
        assert_eq!(fast.argon2_runs(), 0);
        let dummy = SecretVerifier::new(&settings(UnknownIdPolicy::DummyHash), 4).unwrap();
        assert!(!dummy
            .verify(SecretKind::ApiKey, "nope", "s", None)
            .await
            .unwrap());
        assert_eq!(dummy.argon2_runs(), 1);
        // Service tokens never use argon2.
        assert!(!dummy
            .verify(SecretKind::ServiceToken, "nope", "s", None)
            .await
            .unwrap());
        assert_eq!(dummy.argon2_runs(), 1);
    }

    #[tokio::test]
    async fn failures_from_one_address_are_throttled_but_a_cached_secret_still_passes() {
        let limited = CredentialCheckSettings {
            per_address: BucketRule {
                burst: 2,
                refill_interval: Duration::from_secs(60),
            },
            ..settings(UnknownIdPolicy::FailFast)
        };
        let verifier = SecretVerifier::new(&limited, 4).unwrap();
        let phc = verifier.hash("right").await.unwrap();
        let stored = Some(Stored::Argon2(&phc));
        let addr = Some("192.0.2.7".parse().unwrap());
        let check = |secret: &'static str| {
            let verifier = &verifier;
            with_caller_address(addr, async move {
                verifier
                    .verify(SecretKind::ApiKey, "k", secret, stored)
                    .await
            })
        };
        assert!(check("right").await.unwrap());
        assert!(!check("wrong").await.unwrap());
        assert!(!check("wrong").await.unwrap());
        let throttled = match check("wrong").await {
            Err(SecretError::Throttled(t)) => t,
            other => panic!("expected throttled, got {other:?}"),
        };
        assert_eq!(throttled.reason, ThrottleReason::ClientAddress);
        assert!((59..=60).contains(&throttled.retry_after_secs()));
        assert!(
            check("right").await.unwrap(),
            "a cached secret is not throttled"
        );
        // Another address is not held back.
        let other = with_caller_address(Some("192.0.2.8".parse().unwrap()), async {
            verifier
                .verify(SecretKind::ApiKey, "k", "wrong", stored)
                .await
        });
        assert!(!other.await.unwrap());
    }

    #[tokio::test]
    async fn service_tokens_compare_sha256_and_a_right_token_is_never_throttled() {
        let limited = CredentialCheckSettings {
            per_credential: BucketRule {
                burst: 1,
                refill_interval: Duration::from_secs(60),
            },
            ..settings(UnknownIdPolicy::FailFast)
        };
        let verifier = SecretVerifier::new(&limited, 4).unwrap();
        let stored = sha256_hex("token secret");
        let check = |secret: &'static str| {
            verifier.verify(
                SecretKind::ServiceToken,
                "a/b/t",
                secret,
                Some(Stored::Sha256Hex(&stored)),
            )
        };
        assert!(!check("guess").await.unwrap());
        assert!(matches!(
            check("guess").await,
            Err(SecretError::Throttled(Throttled {
                reason: ThrottleReason::Credential,
                ..
            }))
        ));
        assert!(check("token secret").await.unwrap());
        assert_eq!(verifier.argon2_runs(), 0);
    }
}
