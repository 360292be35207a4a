//! The `jwt` section: access and refresh token lifetimes, issuer, audience, signing
//! algorithm, leeway, stateless mode, key polling and automatic key rotation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, SettingsError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJwt {
    pub enabled: bool,
    pub access_ttl: String,
    pub max_access_ttl: String,
    pub refresh_ttl: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub algorithm: String,
    pub leeway: String,
    pub stateless: bool,
    pub key_poll_interval: String,
    /// `"off"` or a duration: how long a signing key signs before the next one takes over.
    pub key_rotation_period: String,
    pub key_prepublish: String,
}

impl Default for RawJwt {
    fn default() -> Self {
        Self {
            enabled: true,
            access_ttl: "20m".into(),
            max_access_ttl: "1h".into(),
            refresh_ttl: "24h".into(),
            issuer: None,
            audience: None,
            algorithm: "EdDSA".into(),
            leeway: "30s".into(),
            stateless: false,
            key_poll_interval: "1s".into(),
            key_rotation_period: "off".into(),
            key_prepublish: "1h".into(),
        }
    }
}

/// The signing algorithms this server can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    EdDSA,
    ES256,
    RS256,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub enabled: bool,
    pub access_ttl: Duration,
    /// No access token lives longer (the Vault JWT auth method's roles are capped by it).
    pub max_access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// `jwt.issuer` as configured; see [`Settings::jwt_settings`](super::Settings::jwt_settings) for the issuer used.
    pub issuer: Option<String>,
    /// The `aud` of access tokens; `None`: the issuer.
    pub audience: Option<String>,
    pub algorithm: SigningAlgorithm,
    pub leeway: Duration,
    pub stateless: bool,
    pub key_poll_interval: Duration,
    /// Automatic rotation: a new signing key every this long (`None`: only `keys rotate`).
    pub key_rotation_period: Option<Duration>,
    /// An automatically rotated key is published in the JWKS at least this long before
    /// it signs, so a verifier whose cached JWKS is younger never meets an unknown `kid`.
    pub key_prepublish: Duration,
}

impl JwtSettings {
    /// How long after a key stops signing a token it signed may still be presented:
    /// the longest access-token lifetime (`jwt.max_access_ttl`, which the Vault roles'
    /// tokens may reach) plus the leeway, plus one second for rounding.
    pub fn verify_after_retirement(&self) -> Duration {
        self.max_access_ttl.max(self.access_ttl) + self.leeway + Duration::from_secs(1)
    }
}

impl RawJwt {
    pub(super) fn validate(&self) -> Result<JwtSettings, SettingsError> {
        let jwt = self;
        let access_ttl = duration("jwt.access_ttl", &jwt.access_ttl)?;
        let max_access_ttl = duration("jwt.max_access_ttl", &jwt.max_access_ttl)?;
        let refresh_ttl = duration("jwt.refresh_ttl", &jwt.refresh_ttl)?;
        let leeway = duration("jwt.leeway", &jwt.leeway)?;
        let key_poll_interval = duration("jwt.key_poll_interval", &jwt.key_poll_interval)?;
        if access_ttl < Duration::from_secs(1) {
            return Err(SettingsError::new("jwt.access_ttl", "must be at least 1s"));
        }
        if access_ttl > max_access_ttl {
            return Err(SettingsError::new(
                "jwt.access_ttl",
                format!(
                    "{} exceeds jwt.max_access_ttl ({})",
                    jwt.access_ttl, jwt.max_access_ttl
                ),
            ));
        }
        if refresh_ttl < access_ttl {
            return Err(SettingsError::new(
                "jwt.refresh_ttl",
                "must not be shorter than jwt.access_ttl",
            ));
        }
        if leeway > Duration::from_secs(300) {
            return Err(SettingsError::new("jwt.leeway", "must be at most 5m"));
        }
        if key_poll_interval < Duration::from_millis(100) {
            return Err(SettingsError::new(
                "jwt.key_poll_interval",
                "must be at least 100ms",
            ));
        }
        let key_rotation_period = match jwt.key_rotation_period.trim() {
            "off" | "" => None,
            text => Some(duration("jwt.key_rotation_period", text)?),
        };
        let key_prepublish = duration("jwt.key_prepublish", &jwt.key_prepublish)?;
        if let Some(period) = key_rotation_period {
            if key_prepublish < key_poll_interval {
                return Err(SettingsError::new(
                    "jwt.key_prepublish",
                    format!(
                        "{} is shorter than jwt.key_poll_interval ({}): other instances \
                         might sign with a key before they publish it",
                        jwt.key_prepublish, jwt.key_poll_interval
                    ),
                ));
            }
            if key_prepublish >= period {
                return Err(SettingsError::new(
                    "jwt.key_prepublish",
                    format!(
                        "{} must be shorter than jwt.key_rotation_period ({})",
                        jwt.key_prepublish, jwt.key_rotation_period
                    ),
                ));
            }
        }
        let algorithm = SigningAlgorithm::parse(&jwt.algorithm).ok_or_else(|| {
            SettingsError::new(
                "jwt.algorithm",
                format!("{:?} is not one of EdDSA, ES256, RS256", jwt.algorithm),
            )
        })?;
        if let Some(issuer) = &jwt.issuer {
            if issuer.trim().is_empty() {
                return Err(SettingsError::new(
                    "jwt.issuer",
                    "must not be empty (leave it out to derive one)",
                ));
            }
        }
        Ok(JwtSettings {
            enabled: jwt.enabled,
            access_ttl,
            max_access_ttl,
            refresh_ttl,
            issuer: jwt.issuer.clone(),
            audience: jwt.audience.clone(),
            algorithm,
            leeway,
            stateless: jwt.stateless,
            key_poll_interval,
            key_rotation_period,
            key_prepublish,
        })
    }
}
