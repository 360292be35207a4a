//! The `[credential_checks]` settings section: how many argon2 verifications run at
//! once, how long one may wait for its turn, how fast failed checks refill per client
//! address and per credential, and what an unknown id costs. Self-contained: raw values
//! as written, validated once into [`CredentialCheckSettings`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::SettingsError;

/// How unknown (or no longer active) ids are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownIdPolicy {
    /// Refused at once, without argon2: a flood of random ids costs a store read each,
    /// and an unknown id answers as fast as an invalidated or expired one. An active id
    /// with a wrong secret still pays argon2, so timing tells an active id from others
    /// (ids are not secret in Elasticsearch's model; see docs/operations.md).
    FailFast,
    /// Verified against a dummy hash, so an unknown id costs what a wrong secret for an
    /// active id costs; invalidated and expired ids pay it too. The flood then spends
    /// the argon2 budget and is held back only by the failure limits and the budget.
    DummyHash,
}

impl UnknownIdPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailFast => "fail_fast",
            Self::DummyHash => "dummy_hash",
        }
    }
}

/// One token bucket's rule: `burst` failures at once, then one more each
/// `refill_interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketRule {
    pub burst: u32,
    pub refill_interval: Duration,
}

/// Validated `[credential_checks]`.
#[derive(Debug, Clone)]
pub struct CredentialCheckSettings {
    /// Argon2 verifications (and hashes) running at once, at most.
    pub max_concurrent_hashes: usize,
    /// How long a verification waits for its turn before it is refused as busy.
    pub max_queue_wait: Duration,
    /// Failed checks allowed per client address (IPv6: per /64).
    pub per_address: BucketRule,
    /// Failed checks allowed per API key id, username or service token.
    pub per_credential: BucketRule,
    /// Buckets kept per map (client addresses; credentials), least recently used
    /// forgotten first.
    pub max_tracked: usize,
    pub unknown_ids: UnknownIdPolicy,
}

impl Default for CredentialCheckSettings {
    fn default() -> Self {
        RawCredentialChecks::default()
            .validate()
            .expect("the defaults are valid")
    }
}

/// `[credential_checks]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCredentialChecks {
    pub max_concurrent_hashes: usize,
    pub max_queue_wait: String,
    pub address_burst: u32,
    pub address_refill_interval: String,
    pub credential_burst: u32,
    pub credential_refill_interval: String,
    pub max_tracked: usize,
    pub unknown_ids: String,
}

impl Default for RawCredentialChecks {
    fn default() -> Self {
        Self {
            max_concurrent_hashes: 2,
            max_queue_wait: "500ms".into(),
            address_burst: 20,
            address_refill_interval: "3s".into(),
            credential_burst: 10,
            credential_refill_interval: "6s".into(),
            max_tracked: 100_000,
            unknown_ids: "fail_fast".into(),
        }
    }
}

fn duration(setting: &str, value: &str) -> Result<Duration, SettingsError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        SettingsError::new(
            setting,
            format!("{value:?} is not a duration like 250ms: {e}"),
        )
    })
}

impl RawCredentialChecks {
    pub fn validate(&self) -> Result<CredentialCheckSettings, SettingsError> {
        const S: &str = "credential_checks";
        if !(1..=64).contains(&self.max_concurrent_hashes) {
            return Err(SettingsError::new(
                &format!("{S}.max_concurrent_hashes"),
                "must be between 1 and 64",
            ));
        }
        let max_queue_wait = duration(&format!("{S}.max_queue_wait"), &self.max_queue_wait)?;
        if max_queue_wait > Duration::from_secs(10) {
            return Err(SettingsError::new(
                &format!("{S}.max_queue_wait"),
                "must be at most 10s",
            ));
        }
        let rule = |burst: u32, burst_name: &str, interval: &str, interval_name: &str| {
            if burst == 0 {
                return Err(SettingsError::new(
                    &format!("{S}.{burst_name}"),
                    "must be at least 1",
                ));
            }
            let refill_interval = duration(&format!("{S}.{interval_name}"), interval)?;
            if refill_interval < Duration::from_millis(1)
                || refill_interval > Duration::from_secs(3600)
            {
                return Err(SettingsError::new(
                    &format!("{S}.{interval_name}"),
                    "must be between 1ms and 1h",
                ));
            }
            Ok(BucketRule {
                burst,
                refill_interval,
            })
        };
        let per_address = rule(
            self.address_burst,
            "address_burst",
            &self.address_refill_interval,
            "address_refill_interval",
        )?;
        let per_credential = rule(
            self.credential_burst,
            "credential_burst",
            &self.credential_refill_interval,
            "credential_refill_interval",
        )?;
        if self.max_tracked == 0 {
            return Err(SettingsError::new(
                &format!("{S}.max_tracked"),
                "must be at least 1",
            ));
        }
        let unknown_ids = match self.unknown_ids.as_str() {
            "fail_fast" => UnknownIdPolicy::FailFast,
            "dummy_hash" => UnknownIdPolicy::DummyHash,
            other => {
                return Err(SettingsError::new(
                    &format!("{S}.unknown_ids"),
                    format!("{other:?} is not one of \"fail_fast\", \"dummy_hash\""),
                ))
            }
        };
        Ok(CredentialCheckSettings {
            max_concurrent_hashes: self.max_concurrent_hashes,
            max_queue_wait,
            per_address,
            per_credential,
            max_tracked: self.max_tracked,
            unknown_ids,
        })
    }
}

impl CredentialCheckSettings {
    /// For `fleetauth config check`.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "max_concurrent_hashes": self.max_concurrent_hashes,
            "max_queue_wait_secs": self.max_queue_wait.as_secs_f64(),
            "address_burst": self.per_address.burst,
            "address_refill_interval_secs": self.per_address.refill_interval.as_secs_f64(),
            "credential_burst": self.per_credential.burst,
            "credential_refill_interval_secs": self.per_credential.refill_interval.as_secs_f64(),
            "max_tracked": self.max_tracked,
            "unknown_ids": self.unknown_ids.as_str(),
        })
    }
}
