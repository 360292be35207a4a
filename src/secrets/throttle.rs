//! Failed-check limits: a token bucket per client address (IPv6: per /64, which one
//! host usually holds whole) and one per credential (API key id, username, service
//! token). Each failed check takes a token; tokens come back one per refill interval,
//! up to the burst. An empty bucket refuses further *uncached* checks until a token is
//! back, and says exactly when that is (the honest `Retry-After`).
//!
//! A success gives nothing back: buckets refill with time only, so an attacker who
//! holds one valid key cannot interleave successes to reset a counter. Only ids that
//! exist get a per-credential bucket (random ids would evict the real ones from the
//! bounded map); unknown ids are held back by their address's bucket. Buckets are kept
//! in bounded LRU maps; a bucket that is forgotten is full again, which is what it
//! would have become anyway after `burst × refill_interval` of quiet.
//!
//! Time is passed in (`now`), so the rules are tested without sleeping.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::settings::BucketRule;
use super::SecretKind;

/// Whose failures ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    ClientAddress,
    Credential,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rule: BucketRule, now: Instant) -> Self {
        Self {
            tokens: f64::from(rule.burst),
            updated: now,
        }
    }

    fn refill(&mut self, rule: BucketRule, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let added = elapsed / rule.refill_interval.as_secs_f64();
        self.tokens = (self.tokens + added).min(f64::from(rule.burst));
        self.updated = now;
    }

    /// `None` when a token is there; else how long until one is.
    fn wait(&self, rule: BucketRule) -> Option<Duration> {
        (self.tokens < 1.0).then(|| rule.refill_interval.mul_f64(1.0 - self.tokens))
    }
}

/// The key of a client address's bucket: an IPv4 address, or an IPv6 /64.
fn address_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

pub struct FailureLimits {
    per_address: BucketRule,
    per_credential: BucketRule,
    addresses: Mutex<LruCache<IpAddr, Bucket>>,
    credentials: Mutex<LruCache<(SecretKind, String), Bucket>>,
}

impl FailureLimits {
    pub fn new(per_address: BucketRule, per_credential: BucketRule, max_tracked: usize) -> Self {
        let capacity = NonZeroUsize::new(max_tracked).unwrap_or(NonZeroUsize::MIN);
        Self {
            per_address,
            per_credential,
            addresses: Mutex::new(LruCache::new(capacity)),
            credentials: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Whether another uncached check may run: `Err` with whose bucket is empty and
    /// how long until it has a token again (the longer wait, when both are empty).
    pub fn admit(
        &self,
        addr: Option<IpAddr>,
        credential: Option<(SecretKind, &str)>,
        now: Instant,
    ) -> Result<(), (Exhausted, Duration)> {
        let mut refused: Option<(Exhausted, Duration)> = None;
        if let Some(addr) = addr {
            let mut map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(bucket) = map.get_mut(&address_key(addr)) {
                bucket.refill(self.per_address, now);
                if let Some(wait) = bucket.wait(self.per_address) {
                    refused = Some((Exhausted::ClientAddress, wait));
                }
            }
        }
        if let Some((kind, id)) = credential {
            let mut map = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(bucket) = map.get_mut(&(kind, id.to_string())) {
                bucket.refill(self.per_credential, now);
                if let Some(wait) = bucket.wait(self.per_credential) {
                    if refused.is_none_or(|(_, w)| wait > w) {
                        refused = Some((Exhausted::Credential, wait));
                    }
                }
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// Counts one failed check against the address and (when it exists) the credential.
    pub fn record_failure(
        &self,
        addr: Option<IpAddr>,
        credential: Option<(SecretKind, &str)>,
        now: Instant,
    ) {
        if let Some(addr) = addr {
            let mut map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
            let rule = self.per_address;
            let bucket = map.get_or_insert_mut(address_key(addr), || Bucket::full(rule, now));
            bucket.refill(rule, now);
            bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        }
        if let Some((kind, id)) = credential {
            let mut map = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
            let rule = self.per_credential;
            let bucket = map.get_or_insert_mut((kind, id.to_string()), || Bucket::full(rule, now));
            bucket.refill(rule, now);
            bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: BucketRule = BucketRule {
        burst: 3,
        refill_interval: Duration::from_secs(2),
    };
    const CRED: BucketRule = BucketRule {
        burst: 2,
        refill_interval: Duration::from_secs(10),
    };

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_gets_its_burst_then_one_per_interval_with_an_honest_wait() {
        let limits = FailureLimits::new(ADDR, CRED, 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limits.admit(ip("10.0.0.1"), None, t0).is_ok());
            limits.record_failure(ip("10.0.0.1"), None, t0);
        }
        let (who, wait) = limits.admit(ip("10.0.0.1"), None, t0).unwrap_err();
        assert_eq!(who, Exhausted::ClientAddress);
        assert_eq!(wait, Duration::from_secs(2));
        // Half an interval later, half the wait is left.
        let half = t0 + Duration::from_secs(1);
        assert_eq!(
            limits.admit(ip("10.0.0.1"), None, half).unwrap_err().1,
            Duration::from_secs(1)
        );
        // Another address is not affected.
        assert!(limits.admit(ip("10.0.0.2"), None, t0).is_ok());
        // After the wait, exactly one more failure fits.
        let later = t0 + Duration::from_secs(2);
        assert!(limits.admit(ip("10.0.0.1"), None, later).is_ok());
        limits.record_failure(ip("10.0.0.1"), None, later);
        assert!(limits.admit(ip("10.0.0.1"), None, later).is_err());
    }

    #[test]
    fn a_credential_is_limited_across_addresses_and_ipv6_counts_per_64() {
        let limits = FailureLimits::new(ADDR, CRED, 100);
        let t0 = Instant::now();
        let key = Some((SecretKind::ApiKey, "key-1"));
        limits.record_failure(ip("10.0.0.1"), key, t0);
        limits.record_failure(ip("10.0.0.2"), key, t0);
        let (who, wait) = limits.admit(ip("10.0.0.3"), key, t0).unwrap_err();
        assert_eq!(
            (who, wait),
            (Exhausted::Credential, Duration::from_secs(10))
        );
        // The same id of another kind is another credential.
        assert!(limits
            .admit(ip("10.0.0.3"), Some((SecretKind::Password, "key-1")), t0)
            .is_ok());
        for host in ["2001:db8::1", "2001:db8::2", "2001:db8::3"] {
            limits.record_failure(ip(host), None, t0);
        }
        assert!(limits.admit(ip("2001:db8::ffff"), None, t0).is_err());
        assert!(limits.admit(ip("2001:db8:0:1::1"), None, t0).is_ok());
    }

    #[test]
    fn without_an_address_only_the_credential_counts() {
        let limits = FailureLimits::new(ADDR, CRED, 1);
        let t0 = Instant::now();
        limits.record_failure(None, None, t0);
        assert!(limits.admit(None, None, t0).is_ok());
    }
}
