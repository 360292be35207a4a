//! The per-token rate limit of enrollment: one token bucket per enrollment token, in
//! this server's memory (each instance limits on its own; `max_uses`, kept in the
//! store, is the fleet-wide bound).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::UnixTime;
use crate::config::EnrollmentSettings;

/// Buckets beyond this many are dropped when full ones (idle tokens) can go.
const MAX_BUCKETS: usize = 10_000;

struct Bucket {
    tokens: f64,
    at: UnixTime,
}

pub struct EnrollmentLimiter {
    settings: EnrollmentSettings,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl EnrollmentLimiter {
    pub fn new(settings: EnrollmentSettings) -> Self {
        Self {
            settings,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one enrollment from the token's bucket; `Err(seconds)` says when to retry.
    pub fn take(&self, token_id: &str, now: UnixTime) -> Result<(), u64> {
        let burst = f64::from(self.settings.burst);
        let rate = self.settings.refill_per_second;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(token_id) {
            // A full bucket carries nothing a new one would not: forget those.
            buckets.retain(|_, b| b.tokens + (now - b.at).max(0) as f64 * rate < burst);
        }
        let bucket = buckets.entry(token_id.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = (now - bucket.at).max(0) as f64;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limiter = EnrollmentLimiter::new(EnrollmentSettings {
            refill_per_second: 0.5,
            burst: 3,
        });
        for _ in 0..3 {
            assert_eq!(limiter.take("t", 100), Ok(()));
        }
        assert_eq!(limiter.take("t", 100), Err(2));
        // Another token has its own bucket.
        assert_eq!(limiter.take("u", 100), Ok(()));
        assert_eq!(limiter.take("t", 101), Err(1));
        assert_eq!(limiter.take("t", 102), Ok(()));
        assert!(limiter.take("t", 102).is_err());
        // Never more than the burst, however long idle.
        for _ in 0..3 {
            assert_eq!(limiter.take("t", 10_000), Ok(()));
        }
        assert!(limiter.take("t", 10_000).is_err());
    }
}
