//! The `[enrollment]` section: how fast one enrollment token may enroll agents.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SettingsError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEnrollment {
    /// Enrollments per minute one token may sustain (its bucket's refill rate).
    pub rate_per_minute: u32,
    /// Enrollments one token may make at once (its bucket's size).
    pub burst: u32,
}

impl Default for RawEnrollment {
    fn default() -> Self {
        Self {
            rate_per_minute: 600,
            burst: 100,
        }
    }
}

/// Per-token rate limit of `POST /api/fleet/agents/enroll` (a token bucket per
/// enrollment token, in each server's memory).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnrollmentSettings {
    /// Tokens added to a bucket per second.
    pub refill_per_second: f64,
    pub burst: u32,
}

impl Default for EnrollmentSettings {
    fn default() -> Self {
        RawEnrollment::default()
            .validate()
            .expect("built-in defaults are valid")
    }
}

impl EnrollmentSettings {
    /// How long an empty bucket takes to hold one enrollment again.
    pub fn one_token_every(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.refill_per_second)
    }
}

impl RawEnrollment {
    pub fn validate(&self) -> Result<EnrollmentSettings, SettingsError> {
        if self.rate_per_minute == 0 {
            return Err(SettingsError::new(
                "enrollment.rate_per_minute",
                "must be at least 1",
            ));
        }
        if self.burst == 0 {
            return Err(SettingsError::new("enrollment.burst", "must be at least 1"));
        }
        Ok(EnrollmentSettings {
            refill_per_second: f64::from(self.rate_per_minute) / 60.0,
            burst: self.burst,
        })
    }
}
