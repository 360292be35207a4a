//! The `[dpop]` section: DPoP (RFC 9449) proofs at the token endpoints and protected
//! resources.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, SettingsError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDpop {
    /// How far a proof's `iat` may be from the server's clock, either way.
    pub proof_window: String,
    /// Demand a server nonce (`DPoP-Nonce`) in every proof (RFC 9449 §8).
    pub require_nonce: bool,
    /// How long a server nonce stays acceptable (it is accepted for up to twice this).
    pub nonce_lifetime: String,
    /// Agents must prove a DPoP key to get tokens: every pair issued to an agent is
    /// DPoP-bound (a policy for fleets whose agents all support DPoP).
    pub require_for_agents: bool,
    /// The most proof ids remembered for replay detection; beyond it, proofs are
    /// refused until old ones age out (fail closed).
    pub replay_cache_size: usize,
}

impl Default for RawDpop {
    fn default() -> Self {
        Self {
            proof_window: "60s".into(),
            require_nonce: false,
            nonce_lifetime: "5m".into(),
            require_for_agents: false,
            replay_cache_size: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DpopSettings {
    pub proof_window: Duration,
    pub require_nonce: bool,
    pub nonce_lifetime: Duration,
    pub require_for_agents: bool,
    pub replay_cache_size: usize,
}

impl Default for DpopSettings {
    fn default() -> Self {
        RawDpop::default()
            .validate()
            .expect("built-in defaults are valid")
    }
}

impl RawDpop {
    pub fn validate(&self) -> Result<DpopSettings, SettingsError> {
        let proof_window = duration("dpop.proof_window", &self.proof_window)?;
        if proof_window < Duration::from_secs(1) || proof_window > Duration::from_secs(600) {
            return Err(SettingsError::new(
                "dpop.proof_window",
                "must be between 1s and 10m",
            ));
        }
        let nonce_lifetime = duration("dpop.nonce_lifetime", &self.nonce_lifetime)?;
        if nonce_lifetime < Duration::from_secs(1) || nonce_lifetime > Duration::from_secs(86_400) {
            return Err(SettingsError::new(
                "dpop.nonce_lifetime",
                "must be between 1s and 24h",
            ));
        }
        if self.replay_cache_size < 1000 {
            return Err(SettingsError::new(
                "dpop.replay_cache_size",
                "must be at least 1000",
            ));
        }
        Ok(DpopSettings {
            proof_window,
            require_nonce: self.require_nonce,
            nonce_lifetime,
            require_for_agents: self.require_for_agents,
            replay_cache_size: self.replay_cache_size,
        })
    }
}
