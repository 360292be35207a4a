//! The `vault` section: the Vault-compatible JWT auth method (`/v1/auth/jwt/...`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, Secret, SettingsError};

/// The Vault-compatible JWT auth method (`/v1/auth/jwt/...`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawVault {
    pub admin_token: Option<String>,
    pub http_timeout: String,
    pub jwks_min_refresh_interval: String,
    pub jwks_max_age: String,
}

impl std::fmt::Debug for RawVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawVault")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "[redacted]"),
            )
            .field("http_timeout", &self.http_timeout)
            .field("jwks_min_refresh_interval", &self.jwks_min_refresh_interval)
            .field("jwks_max_age", &self.jwks_max_age)
            .finish()
    }
}

impl Default for RawVault {
    fn default() -> Self {
        Self {
            admin_token: None,
            http_timeout: "10s".into(),
            jwks_min_refresh_interval: "30s".into(),
            jwks_max_age: "1h".into(),
        }
    }
}

/// The Vault-compatible JWT auth method (SPEC §4 "Vault-compatible JWT auth method").
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// The token (`X-Vault-Token` or `Authorization: Bearer`) that may read and write
    /// the auth method's config and roles, besides any `manage_security` principal (the
    /// `elastic` superuser). `None`: only those.
    pub admin_token: Option<Secret>,
    /// Timeout of each OIDC discovery or JWKS request.
    pub http_timeout: Duration,
    /// A token signed by an unknown `kid` makes the server fetch the provider's JWKS
    /// again at most this often, so a flood of unknown kids cannot hammer it.
    pub jwks_min_refresh_interval: Duration,
    /// Keys fetched longer ago than this are fetched again before use (so a key the
    /// provider has removed stops validating).
    pub jwks_max_age: Duration,
}

impl Default for VaultSettings {
    fn default() -> Self {
        RawVault::default()
            .validate()
            .expect("built-in defaults are valid")
    }
}

/// The shortest admin token accepted.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

impl RawVault {
    pub(super) fn validate(self) -> Result<VaultSettings, SettingsError> {
        let admin_token = match self.admin_token {
            None => None,
            Some(token) => {
                if token.chars().count() < MIN_ADMIN_TOKEN_LEN
                    || !token.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(SettingsError::new(
                        "vault.admin_token",
                        format!("must be at least {MIN_ADMIN_TOKEN_LEN} printable ASCII characters without spaces (leave it out to disable the config and role APIs)"),
                    ));
                }
                Some(Secret::new(token))
            }
        };
        let http_timeout = duration("vault.http_timeout", &self.http_timeout)?;
        if http_timeout < Duration::from_millis(100) || http_timeout > Duration::from_secs(120) {
            return Err(SettingsError::new(
                "vault.http_timeout",
                "must be between 100ms and 2m",
            ));
        }
        let jwks_min_refresh_interval = duration(
            "vault.jwks_min_refresh_interval",
            &self.jwks_min_refresh_interval,
        )?;
        if jwks_min_refresh_interval < Duration::from_secs(1) {
            return Err(SettingsError::new(
                "vault.jwks_min_refresh_interval",
                "must be at least 1s",
            ));
        }
        let jwks_max_age = duration("vault.jwks_max_age", &self.jwks_max_age)?;
        if jwks_max_age < jwks_min_refresh_interval {
            return Err(SettingsError::new(
                "vault.jwks_max_age",
                "must not be shorter than vault.jwks_min_refresh_interval",
            ));
        }
        Ok(VaultSettings {
            admin_token,
            http_timeout,
            jwks_min_refresh_interval,
            jwks_max_age,
        })
    }
}
