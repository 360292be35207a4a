// Over 600 lines with its tests: the code is ~450 (the settings root, loading and cross-section checks); the rest is the validation tests.
//! Settings: parsed once, in layers (built-in defaults < TOML file < `FLEETAUTH_*`
//! environment < command-line flags), then validated into typed [`Settings`] that are
//! passed down. An invalid value becomes one [`SettingsError`] naming the setting.
//!
//! One file per section of the config file: [`jwt`], [`oauth`], [`elasticsearch`],
//! [`vault`]; the top-level settings and the `api_keys` section are here; [`Secret`]
//! wraps every secret value.

pub mod elasticsearch;
pub mod jwt;
pub mod oauth;
pub mod secret;
pub mod vault;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod dpop;
pub mod edge;
pub mod enrollment;

pub use dpop::{DpopSettings, RawDpop};
pub use edge::{ClientAuth, ConnectionSettings, RawConnections, RawTls, TlsSettings};
pub use enrollment::{EnrollmentSettings, RawEnrollment};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use elasticsearch::{redact_url, ElasticsearchSettings, EsAuth, RawElasticsearch};
pub use jwt::{JwtSettings, RawJwt, SigningAlgorithm};
pub use oauth::{OAuthSettings, RawOAuth};
pub use secret::Secret;
pub use vault::{RawVault, VaultSettings};

/// The config file read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "config/fleetauth.toml";

/// Settings as written by a user: strings and numbers, not yet checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSettings {
    pub listen: String,
    pub data_dir: PathBuf,
    pub store: String,
    pub max_body_bytes: usize,
    pub request_timeout: String,
    pub elasticsearch: RawElasticsearch,
    /// The server's externally visible base URL (for absolute URLs in metadata).
    pub public_url: Option<String>,
    pub jwt: RawJwt,
    pub api_keys: RawApiKeys,
    pub oauth: RawOAuth,
    pub vault: RawVault,
    /// `[credential_checks]`: the secret verifier's budget and failure limits.
    pub credential_checks: crate::secrets::RawCredentialChecks,
    pub tls: RawTls,
    pub connections: RawConnections,
    pub enrollment: RawEnrollment,
    pub dpop: RawDpop,
    pub elasticsearch_api: RawElasticsearchApi,
}

/// How the Elasticsearch-compatible API family presents itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawElasticsearchApi {
    /// Answer as Elasticsearch: `X-Elastic-Product: Elasticsearch` on the family's
    /// answers and Elasticsearch's info document at `GET /` (the official clients
    /// refuse a server without them).
    pub product_header: bool,
}

impl Default for RawElasticsearchApi {
    fn default() -> Self {
        Self {
            product_header: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApiKeys {
    pub cache_size: usize,
    /// How long expired and invalidated API keys are kept before they are removed.
    pub retention: String,
    /// How often the background remover looks for API keys past their retention (and
    /// token families whose every token has expired).
    pub purge_interval: String,
    /// How often at most a key's coarse "last used" time is written (per key; the
    /// `last_used` field of the get API key answer is at most this stale).
    pub last_used_interval: String,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8220".into(),
            data_dir: PathBuf::from("./data"),
            store: "embedded".into(),
            max_body_bytes: 64 * 1024,
            request_timeout: "30s".into(),
            public_url: None,
            elasticsearch: RawElasticsearch::default(),
            jwt: RawJwt::default(),
            api_keys: RawApiKeys::default(),
            oauth: RawOAuth::default(),
            vault: RawVault::default(),
            credential_checks: Default::default(),
            tls: RawTls::default(),
            connections: RawConnections::default(),
            enrollment: RawEnrollment::default(),
            dpop: RawDpop::default(),
            elasticsearch_api: RawElasticsearchApi::default(),
        }
    }
}

impl Default for RawApiKeys {
    fn default() -> Self {
        Self {
            cache_size: 100_000,
            retention: "7d".into(),
            purge_interval: "1h".into(),
            last_used_interval: "1h".into(),
        }
    }
}

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elasticsearch: Option<EsOverrides>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EsOverrides {
    pub url: String,
}

/// Which backend holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Elasticsearch,
}

/// Checked settings, passed down to every layer that needs them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreKind,
    /// `Some` exactly when `store` is [`StoreKind::Elasticsearch`].
    pub elasticsearch: Option<ElasticsearchSettings>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Base URL without a trailing slash, e.g. `https://auth.example.com`; `None`: derived
    /// per request from the `Host` header (see `http::oauth`).
    pub public_url: Option<String>,
    pub jwt: JwtSettings,
    pub api_key_cache_size: usize,
    /// How long expired and invalidated API keys are kept (`api_keys.retention`).
    pub api_key_retention: Duration,
    /// How often the remover runs (`api_keys.purge_interval`).
    pub api_key_purge_interval: Duration,
    /// At most one "last used" write per key per this long (`api_keys.last_used_interval`).
    pub api_key_last_used_interval: Duration,
    pub oauth: OAuthSettings,
    pub vault: VaultSettings,
    /// `[credential_checks]` (see `crate::secrets`).
    pub credential_checks: crate::secrets::CredentialCheckSettings,
    /// `Some`: serve HTTPS (the `[tls]` section, SPEC §7).
    pub tls: Option<TlsSettings>,
    /// Timeouts and limits of client connections (the `[connections]` section).
    pub connections: ConnectionSettings,
    pub enrollment: EnrollmentSettings,
    pub dpop: DpopSettings,
    /// `elasticsearch_api.product_header`: the Elasticsearch-compatible family answers
    /// with `X-Elastic-Product: Elasticsearch` and serves `GET /` (see `http::es_api`).
    pub es_product_header: bool,
    /// The password of the built-in `elastic` user when this start creates the store.
    /// Never read from the config file or `FLEETAUTH_*` settings: `startup` takes it from
    /// `FLEETAUTH_BOOTSTRAP_PASSWORD` when this is `None` (embedding code and tests may
    /// set it here instead).
    pub bootstrap_password: Option<Secret>,
}

/// One invalid setting, named the way the user wrote it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{setting}`: {reason}")]
pub struct SettingsError {
    pub setting: String,
    pub reason: String,
}

impl SettingsError {
    pub(crate) fn new(setting: &str, reason: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

/// Environment variables that start with `FLEETAUTH_` but are not settings.
const NON_SETTING_ENV: &[&str] = &["bootstrap_password", "test_es_url", "log"];

/// Reads every layer and validates the result.
///
/// `config_file`: the `--config` path; when `None`, [`DEFAULT_CONFIG_FILE`] is read if
/// it exists.
pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> Result<Settings, SettingsError> {
    let mut figment = Figment::from(Serialized::defaults(RawSettings::default()));
    match config_file {
        Some(path) => {
            if !path.is_file() {
                return Err(SettingsError::new(
                    "--config",
                    format!("no such file: {}", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        None => {
            if Path::new(DEFAULT_CONFIG_FILE).is_file() {
                figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE));
            }
        }
    }
    figment = figment
        .merge(
            Env::prefixed("FLEETAUTH_")
                .filter(|key| {
                    !NON_SETTING_ENV.contains(&key.as_str().to_ascii_lowercase().as_str())
                })
                .split("__"),
        )
        .merge(Serialized::defaults(overrides));
    let raw: RawSettings = figment.extract().map_err(|e| {
        let setting = e.path.join(".");
        let setting = if setting.is_empty() {
            "config".to_string()
        } else {
            setting
        };
        SettingsError::new(&setting, e.kind.to_string())
    })?;
    raw.validate()
}

/// An absolute http(s) URL without query or fragment; returned without a trailing `/`.
fn validate_public_url(setting: &str, value: &str) -> Result<String, SettingsError> {
    let url = url::Url::parse(value.trim()).map_err(|e| {
        SettingsError::new(
            setting,
            format!("{value:?} is not an absolute URL like https://auth.example.com ({e})"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(SettingsError::new(
            setting,
            format!("{value:?} must be an http or https URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(SettingsError::new(
            setting,
            format!("{value:?} must not have a query, a fragment or credentials"),
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

pub(crate) fn duration(setting: &str, value: &str) -> Result<Duration, SettingsError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        SettingsError::new(
            setting,
            format!("{value:?} is not a duration like \"20m\" ({e})"),
        )
    })
}

impl RawSettings {
    pub fn validate(self) -> Result<Settings, SettingsError> {
        let listen = self.listen.parse::<SocketAddr>().map_err(|_| {
            SettingsError::new(
                "listen",
                format!("{:?} is not an address like 127.0.0.1:8220", self.listen),
            )
        })?;
        let store = match self.store.as_str() {
            "embedded" => StoreKind::Embedded,
            "elasticsearch" => StoreKind::Elasticsearch,
            other => {
                return Err(SettingsError::new(
                    "store",
                    format!("{other:?} is not one of \"embedded\", \"elasticsearch\""),
                ))
            }
        };
        let elasticsearch = match store {
            StoreKind::Embedded => None,
            StoreKind::Elasticsearch => Some(self.elasticsearch.validate()?),
        };
        if self.max_body_bytes < 1024 {
            return Err(SettingsError::new(
                "max_body_bytes",
                "must be at least 1024",
            ));
        }
        let request_timeout = duration("request_timeout", &self.request_timeout)?;
        let jwt = self.jwt.validate()?;
        let public_url = self
            .public_url
            .as_deref()
            .map(|url| validate_public_url("public_url", url))
            .transpose()?;
        let oauth = self.oauth.validate()?;
        let vault = self.vault.validate()?;
        let credential_checks = self.credential_checks.validate()?;
        let tls = self.tls.validate()?;
        let connections = self.connections.validate()?;
        let enrollment = self.enrollment.validate()?;
        let dpop = self.dpop.validate()?;
        let api_key_retention = duration("api_keys.retention", &self.api_keys.retention)?;
        let api_key_purge_interval =
            duration("api_keys.purge_interval", &self.api_keys.purge_interval)?;
        let api_key_last_used_interval = duration(
            "api_keys.last_used_interval",
            &self.api_keys.last_used_interval,
        )?;
        if api_key_last_used_interval < Duration::from_secs(1) {
            return Err(SettingsError::new(
                "api_keys.last_used_interval",
                "must be at least 1s",
            ));
        }
        if api_key_purge_interval < Duration::from_secs(1) {
            return Err(SettingsError::new(
                "api_keys.purge_interval",
                "must be at least 1s",
            ));
        }
        if self.api_keys.cache_size == 0 {
            return Err(SettingsError::new(
                "api_keys.cache_size",
                "must be at least 1",
            ));
        }
        Ok(Settings {
            listen,
            data_dir: self.data_dir,
            store,
            elasticsearch,
            max_body_bytes: self.max_body_bytes,
            request_timeout,
            jwt,
            api_key_cache_size: self.api_keys.cache_size,
            api_key_retention,
            api_key_purge_interval,
            api_key_last_used_interval,
            bootstrap_password: None,
            public_url,
            oauth,
            vault,
            credential_checks,
            tls,
            connections,
            enrollment,
            dpop,
            es_product_header: self.elasticsearch_api.product_header,
        })
    }
}

impl Settings {
    /// The token settings as the token service uses them. SPEC §7: `public_url` is the
    /// issuer unless `jwt.issuer` is set, so that RFC 8414 §3.3 discovery from that URL
    /// finds exactly its issuer; with neither, the issuer is derived from the deployment
    /// id kept in the store.
    pub fn jwt_settings(&self) -> JwtSettings {
        let mut jwt = self.jwt.clone();
        if jwt.issuer.is_none() {
            jwt.issuer = self.public_url.clone();
        }
        jwt
    }

    /// The effective settings as JSON, for `fleetauth config check` (no secrets).
    pub fn describe(&self) -> serde_json::Value {
        let secs = |d: Duration| d.as_secs_f64();
        serde_json::json!({
            "listen": self.listen.to_string(),
            "data_dir": self.data_dir,
            "store": match self.store { StoreKind::Embedded => "embedded", StoreKind::Elasticsearch => "elasticsearch" },
            "max_body_bytes": self.max_body_bytes,
            "request_timeout_secs": secs(self.request_timeout),
            "jwt": {
                "enabled": self.jwt.enabled,
                "access_ttl_secs": secs(self.jwt.access_ttl),
                "max_access_ttl_secs": secs(self.jwt.max_access_ttl),
                "refresh_ttl_secs": secs(self.jwt.refresh_ttl),
                "issuer": self.jwt_settings().issuer,
                "audience": self.jwt.audience,
                "algorithm": self.jwt.algorithm.as_str(),
                "leeway_secs": secs(self.jwt.leeway),
                "stateless": self.jwt.stateless,
                "key_poll_interval_secs": secs(self.jwt.key_poll_interval),
                "key_rotation_period_secs": self.jwt.key_rotation_period.map(secs),
                "key_prepublish_secs": secs(self.jwt.key_prepublish),
            },
            "api_keys": {
                "cache_size": self.api_key_cache_size,
                "retention_secs": secs(self.api_key_retention),
                "purge_interval_secs": secs(self.api_key_purge_interval),
                "last_used_interval_secs": secs(self.api_key_last_used_interval),
            },
            "public_url": self.public_url,
            "oauth": {
                "client_credentials_refresh": self.oauth.client_credentials_refresh,
                "scopes": self.oauth.scopes,
            },
            "elasticsearch": self.elasticsearch.as_ref().map(ElasticsearchSettings::describe),
            "vault": {
                "admin_token": if self.vault.admin_token.is_some() { "[set]" } else { "[unset]" },
                "http_timeout_secs": secs(self.vault.http_timeout),
                "jwks_min_refresh_interval_secs": secs(self.vault.jwks_min_refresh_interval),
                "jwks_max_age_secs": secs(self.vault.jwks_max_age),
            },
            "credential_checks": self.credential_checks.describe(),
            "tls": self.tls.as_ref().map(TlsSettings::describe),
            "connections": self.connections.describe(),
            "enrollment": {
                "rate_per_minute": self.enrollment.refill_per_second * 60.0,
                "burst": self.enrollment.burst,
            },
            "dpop": {
                "proof_window_secs": secs(self.dpop.proof_window),
                "require_nonce": self.dpop.require_nonce,
                "nonce_lifetime_secs": secs(self.dpop.nonce_lifetime),
                "require_for_agents": self.dpop.require_for_agents,
                "replay_cache_size": self.dpop.replay_cache_size,
            },
            "elasticsearch_api": { "product_header": self.es_product_header },
        })
    }

    /// Defaults with a different data dir and listen address: what tests start from.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        let raw = RawSettings {
            data_dir: data_dir.to_path_buf(),
            listen: "127.0.0.1:0".into(),
            ..Default::default()
        };
        raw.validate().expect("built-in defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let s = RawSettings::default().validate().unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8220");
        assert_eq!(s.jwt.access_ttl, Duration::from_secs(20 * 60));
        assert_eq!(s.jwt.refresh_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(s.jwt.algorithm, SigningAlgorithm::EdDSA);
        assert!(
            s.es_product_header,
            "elasticsearch_api.product_header defaults to on"
        );
        assert_eq!(
            s.jwt_settings().issuer,
            None,
            "no public_url: derived issuer"
        );
    }

    #[test]
    fn public_url_is_the_issuer_unless_jwt_issuer_is_set() {
        let raw: RawSettings = Figment::from(Serialized::defaults(RawSettings::default()))
            .merge(Toml::string(
                "public_url = \"https://auth.example.com/\"\n[elasticsearch_api]\nproduct_header = false\n",
            ))
            .extract()
            .unwrap();
        let s = raw.clone().validate().unwrap();
        assert!(!s.es_product_header);
        assert_eq!(
            s.jwt_settings().issuer.as_deref(),
            Some("https://auth.example.com")
        );
        let mut raw = raw;
        raw.jwt.issuer = Some("urn:fleet".into());
        let s = raw.validate().unwrap();
        assert_eq!(s.jwt_settings().issuer.as_deref(), Some("urn:fleet"));
    }

    #[test]
    fn access_ttl_over_the_cap_is_refused_by_name() {
        let mut raw = RawSettings::default();
        raw.jwt.access_ttl = "2h".into();
        let err = raw.validate().unwrap_err();
        assert_eq!(err.setting, "jwt.access_ttl");
    }

    #[test]
    fn oauth_settings_are_checked_by_name() {
        let mut raw = RawSettings::default();
        raw.oauth.scopes = vec!["fleet:read".into(), "bad scope".into()];
        assert_eq!(raw.validate().unwrap_err().setting, "oauth.scopes");
        let raw = RawSettings {
            public_url: Some("ftp://x".into()),
            ..Default::default()
        };
        assert_eq!(raw.validate().unwrap_err().setting, "public_url");
        let mut raw = RawSettings {
            public_url: Some("https://auth.example.com/".into()),
            ..Default::default()
        };
        raw.oauth.scopes = vec!["fleet:read".into()];
        let s = raw.validate().unwrap();
        assert_eq!(s.public_url.as_deref(), Some("https://auth.example.com"));
        assert_eq!(s.oauth.scopes, vec!["fleet:read".to_string()]);
        assert!(!s.oauth.client_credentials_refresh);
    }

    #[test]
    fn vault_settings_are_checked_by_name_and_the_admin_token_is_never_printed() {
        let mut raw = RawSettings::default();
        raw.vault.admin_token = Some("short".into());
        assert_eq!(raw.validate().unwrap_err().setting, "vault.admin_token");
        let mut raw = RawSettings::default();
        raw.vault.jwks_min_refresh_interval = "0s".into();
        assert_eq!(
            raw.validate().unwrap_err().setting,
            "vault.jwks_min_refresh_interval"
        );
        let mut raw = RawSettings::default();
        raw.vault.http_timeout = "soon".into();
        assert_eq!(raw.validate().unwrap_err().setting, "vault.http_timeout");
        let mut raw = RawSettings::default();
        raw.vault.admin_token = Some("a-long-enough-admin-token".into());
        assert!(!format!("{raw:?}").contains("a-long-enough"));
        let s = raw.validate().unwrap();
        assert_eq!(
            s.vault.admin_token.as_ref().map(Secret::expose),
            Some("a-long-enough-admin-token")
        );
        assert!(!format!("{s:?}").contains("a-long-enough"));
        assert!(!s.describe().to_string().contains("a-long-enough"));
        assert_eq!(s.jwt.max_access_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn api_key_retention_settings_are_checked_by_name() {
        let s = RawSettings::default().validate().unwrap();
        assert_eq!(s.api_key_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(s.api_key_purge_interval, Duration::from_secs(3600));
        assert!(s.bootstrap_password.is_none());
        let mut raw = RawSettings::default();
        raw.api_keys.retention = "soon".into();
        assert_eq!(raw.validate().unwrap_err().setting, "api_keys.retention");
        let mut raw = RawSettings::default();
        raw.api_keys.purge_interval = "0s".into();
        assert_eq!(
            raw.validate().unwrap_err().setting,
            "api_keys.purge_interval"
        );
    }

    #[test]
    fn unknown_algorithm_is_refused_by_name() {
        let mut raw = RawSettings::default();
        raw.jwt.algorithm = "HS256".into();
        assert_eq!(raw.validate().unwrap_err().setting, "jwt.algorithm");
    }

    fn elasticsearch(
        configure: impl FnOnce(&mut RawElasticsearch),
    ) -> Result<Settings, SettingsError> {
        let mut raw = RawSettings {
            store: "elasticsearch".into(),
            ..Default::default()
        };
        raw.elasticsearch.url = Some("https://es.example:9200".into());
        configure(&mut raw.elasticsearch);
        raw.validate()
    }

    #[test]
    fn the_elasticsearch_store_needs_a_url_and_gets_typed_settings() {
        assert_eq!(
            elasticsearch(|es| es.url = None).unwrap_err().setting,
            "elasticsearch.url"
        );
        let s = elasticsearch(|_| {}).unwrap();
        let es = s.elasticsearch.expect("elasticsearch settings");
        assert_eq!(es.url.as_str(), "https://es.example:9200/");
        assert_eq!(es.auth, EsAuth::None);
        assert_eq!(es.index_prefix, "");
        assert_eq!(es.timeout, Duration::from_secs(5));
        assert!(RawSettings::default()
            .validate()
            .unwrap()
            .elasticsearch
            .is_none());
    }

    #[test]
    fn bad_elasticsearch_values_are_refused_by_name() {
        let refused =
            |configure: fn(&mut RawElasticsearch)| elasticsearch(configure).unwrap_err().setting;
        assert_eq!(
            refused(|es| es.url = Some("not a url".into())),
            "elasticsearch.url"
        );
        assert_eq!(
            refused(|es| es.url = Some("ftp://es:21".into())),
            "elasticsearch.url"
        );
        assert_eq!(
            refused(|es| es.username = Some("u".into())),
            "elasticsearch.password"
        );
        assert_eq!(
            refused(|es| es.password = Some("p".into())),
            "elasticsearch.username"
        );
        assert_eq!(
            refused(|es| {
                es.username = Some("u".into());
                es.password = Some("p".into());
                es.api_key = Some("id:key".into());
            }),
            "elasticsearch.api_key"
        );
        assert_eq!(
            refused(|es| es.index_prefix = "Prod".into()),
            "elasticsearch.index_prefix"
        );
        assert_eq!(
            refused(|es| es.index_prefix = "_x".into()),
            "elasticsearch.index_prefix"
        );
        assert_eq!(
            refused(|es| es.timeout = "0s".into()),
            "elasticsearch.timeout"
        );
        assert_eq!(
            refused(|es| es.timeout = "soon".into()),
            "elasticsearch.timeout"
        );
        assert_eq!(
            refused(|es| es.ca_cert = Some("/nonexistent/ca.pem".into())),
            "elasticsearch.ca_cert"
        );
    }

    #[test]
    fn elasticsearch_credentials_never_show_in_debug_or_describe() {
        let s = elasticsearch(|es| es.url = Some("http://elastic:s3cr%3At@localhost:9200".into()))
            .unwrap();
        let es = s.elasticsearch.as_ref().unwrap();
        assert_eq!(
            es.auth,
            EsAuth::Basic {
                username: "elastic".into(),
                password: Secret::new("s3cr:t")
            },
            "credentials in the URL are taken out of it"
        );
        assert_eq!(es.url.as_str(), "http://localhost:9200/");
        let shown = format!("{s:?} {}", s.describe());
        assert!(!shown.contains("s3cr"), "{shown}");
        let api_key = elasticsearch(|es| es.api_key = Some("id:very-secret".into())).unwrap();
        let shown = format!("{api_key:?} {}", api_key.describe());
        assert!(
            !shown.contains("very-secret") && shown.contains("api_key"),
            "{shown}"
        );
        let raw = RawElasticsearch {
            url: Some("http://u:pw-in-url@h:9200".into()),
            password: Some("plain-pw".into()),
            ..Default::default()
        };
        let shown = format!("{raw:?}");
        assert!(
            !shown.contains("pw-in-url") && !shown.contains("plain-pw"),
            "{shown}"
        );
    }

    #[test]
    fn the_index_prefix_is_validated_and_kept() {
        let s = elasticsearch(|es| es.index_prefix = "prod-eu.1".into()).unwrap();
        assert_eq!(s.elasticsearch.unwrap().index_prefix, "prod-eu.1");
    }
}
