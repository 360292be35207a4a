//! Settings: parsed once, in layers (built-in defaults < TOML file < `FLEETAUTH_*`
//! environment < command-line flags), then validated into typed [`Settings`] that are
//! passed down. An invalid value becomes one [`SettingsError`] naming the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod dpop;
pub mod enrollment;

pub use dpop::{DpopSettings, RawDpop};
pub use enrollment::{EnrollmentSettings, RawEnrollment};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

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

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawElasticsearch {
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub api_key: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub index_prefix: String,
    /// Bound on each request to the cluster.
    pub timeout: String,
}

impl Default for RawElasticsearch {
    fn default() -> Self {
        Self {
            url: None,
            username: None,
            password: None,
            api_key: None,
            ca_cert: None,
            index_prefix: String::new(),
            timeout: "5s".into(),
        }
    }
}

impl std::fmt::Debug for RawElasticsearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "[redacted]");
        f.debug_struct("RawElasticsearch")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("api_key", &redacted(&self.api_key))
            .field("ca_cert", &self.ca_cert)
            .field("index_prefix", &self.index_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

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
}

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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOAuth {
    pub client_credentials_refresh: bool,
    pub scopes: Vec<String>,
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
            tls: RawTls::default(),
            connections: RawConnections::default(),
            enrollment: RawEnrollment::default(),
            dpop: RawDpop::default(),
            elasticsearch_api: RawElasticsearchApi::default(),
        }
    }
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
        }
    }
}

impl Default for RawApiKeys {
    fn default() -> Self {
        Self {
            cache_size: 100_000,
            retention: "7d".into(),
            purge_interval: "1h".into(),
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

/// A secret setting (password, API key): kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How fleetauth authenticates to Elasticsearch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EsAuth {
    None,
    Basic {
        username: String,
        password: Secret,
    },
    /// `id:key`, or the base64 `encoded` form Elasticsearch returns.
    ApiKey(Secret),
}

/// The Elasticsearch backend's settings (present when `store = "elasticsearch"`).
#[derive(Clone)]
pub struct ElasticsearchSettings {
    /// The cluster's base URL, without credentials (those are in `auth`).
    pub url: url::Url,
    pub auth: EsAuth,
    /// PEM of the CA that signed the cluster's certificate, read from `elasticsearch.ca_cert`.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Prepended to every index name: `<prefix>.fleet-agents`, `<prefix>.fleetauth-*`.
    pub index_prefix: String,
    /// Bound on each request to the cluster; past it the store reports "unavailable".
    pub timeout: Duration,
}

impl std::fmt::Debug for ElasticsearchSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchSettings")
            .field("url", &self.url.as_str())
            .field("auth", &self.auth)
            .field(
                "ca_cert_pem",
                &self
                    .ca_cert_pem
                    .as_ref()
                    .map(|pem| format!("<{} bytes>", pem.len())),
            )
            .field("index_prefix", &self.index_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ElasticsearchSettings {
    /// As JSON for `fleetauth config check`: which credentials, never their values.
    pub fn describe(&self) -> serde_json::Value {
        let auth = match &self.auth {
            EsAuth::None => serde_json::json!({ "kind": "none" }),
            EsAuth::Basic { username, .. } => {
                serde_json::json!({ "kind": "basic", "username": username })
            }
            EsAuth::ApiKey(_) => serde_json::json!({ "kind": "api_key" }),
        };
        serde_json::json!({
            "url": self.url.as_str(),
            "auth": auth,
            "ca_cert": self.ca_cert_pem.is_some(),
            "index_prefix": self.index_prefix,
            "timeout_secs": self.timeout.as_secs_f64(),
        })
    }

    /// Settings for a cluster at `url` with defaults for everything else (tests).
    pub fn for_url(url: &str) -> Result<Self, SettingsError> {
        RawElasticsearch {
            url: Some(url.to_string()),
            ..Default::default()
        }
        .validate()
    }
}

/// `url` without its user-info, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "<unparsable url>".into(),
    }
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
    pub oauth: OAuthSettings,
    pub vault: VaultSettings,
    /// `Some`: serve HTTPS (the `[tls]` section, SPEC §7).
    pub tls: Option<TlsSettings>,
    /// Timeouts and limits of client connections (the `[connections]` section).
    pub connections: ConnectionSettings,
    pub enrollment: EnrollmentSettings,
    pub dpop: DpopSettings,
    /// `elasticsearch_api.product_header`: the Elasticsearch-compatible family answers
    /// with `X-Elastic-Product: Elasticsearch` and serves `GET /` (see `http::security`).
    pub es_product_header: bool,
    /// The password of the built-in `elastic` user when this start creates the store.
    /// Never read from the config file or `FLEETAUTH_*` settings: `startup` takes it from
    /// `FLEETAUTH_BOOTSTRAP_PASSWORD` when this is `None` (embedding code and tests may
    /// set it here instead).
    pub bootstrap_password: Option<Secret>,
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
    fn validate(self) -> Result<VaultSettings, SettingsError> {
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
                Some(Secret(token))
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

/// The OAuth2 token endpoint's policy (SPEC §4 "OAuth2").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthSettings {
    /// Also give non-agent clients a refresh token from `client_credentials` (RFC 6749
    /// §4.4.3 says they get none). Their token state is then kept like an agent's.
    pub client_credentials_refresh: bool,
    /// The scopes a client may request (RFC 6749 §3.3). Empty: any request that names
    /// a scope is refused with `invalid_scope`.
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub enabled: bool,
    pub access_ttl: Duration,
    /// No access token lives longer (the Vault JWT auth method's roles are capped by it).
    pub max_access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// `jwt.issuer` as configured; see [`Settings::jwt_settings`] for the issuer used.
    pub issuer: Option<String>,
    /// The `aud` of access tokens; `None`: the issuer.
    pub audience: Option<String>,
    pub algorithm: SigningAlgorithm,
    pub leeway: Duration,
    pub stateless: bool,
    pub key_poll_interval: Duration,
}

/// One invalid setting, named the way the user wrote it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{setting}`: {reason}")]
pub struct SettingsError {
    pub setting: String,
    pub reason: String,
}

impl SettingsError {
    fn new(setting: &str, reason: impl Into<String>) -> Self {
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

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn valid_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
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

fn duration(setting: &str, value: &str) -> Result<Duration, SettingsError> {
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
        let jwt = &self.jwt;
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
        let public_url = self
            .public_url
            .as_deref()
            .map(|url| validate_public_url("public_url", url))
            .transpose()?;
        for scope in &self.oauth.scopes {
            if !valid_scope_token(scope) {
                return Err(SettingsError::new(
                    "oauth.scopes",
                    format!(
                        "{scope:?} is not a scope token (RFC 6749 §3.3: printable ASCII, no space, '\"' or '\\')"
                    ),
                ));
            }
        }
        let vault = self.vault.validate()?;
        let tls = self.tls.validate()?;
        let connections = self.connections.validate()?;
        let enrollment = self.enrollment.validate()?;
        let dpop = self.dpop.validate()?;
        let api_key_retention = duration("api_keys.retention", &self.api_keys.retention)?;
        let api_key_purge_interval =
            duration("api_keys.purge_interval", &self.api_keys.purge_interval)?;
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
            jwt: JwtSettings {
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
            },
            api_key_cache_size: self.api_keys.cache_size,
            api_key_retention,
            api_key_purge_interval,
            bootstrap_password: None,
            public_url,
            oauth: OAuthSettings {
                client_credentials_refresh: self.oauth.client_credentials_refresh,
                scopes: self.oauth.scopes,
            },
            vault,
            tls,
            connections,
            enrollment,
            dpop,
            es_product_header: self.elasticsearch_api.product_header,
        })
    }
}

/// The longest index prefix accepted (index names are limited to 255 bytes).
const MAX_INDEX_PREFIX_LEN: usize = 100;

impl RawElasticsearch {
    pub fn validate(&self) -> Result<ElasticsearchSettings, SettingsError> {
        let raw_url = self.url.as_deref().ok_or_else(|| {
            SettingsError::new(
                "elasticsearch.url",
                "required when store = \"elasticsearch\"",
            )
        })?;
        let mut url = url::Url::parse(raw_url.trim()).map_err(|e| {
            SettingsError::new(
                "elasticsearch.url",
                format!("{:?} is not a URL ({e})", redact_url(raw_url)),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(SettingsError::new(
                "elasticsearch.url",
                format!(
                    "{:?} is not an http(s) URL like https://localhost:9200",
                    redact_url(raw_url)
                ),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(SettingsError::new(
                "elasticsearch.url",
                "must not have a query or a fragment",
            ));
        }
        // Credentials in the URL (https://user:pass@host) count as username/password.
        let url_user = match url.username() {
            "" => None,
            user => Some((
                decode_userinfo(user),
                url.password().map(decode_userinfo).unwrap_or_default(),
            )),
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let username = self.username.clone().filter(|u| !u.is_empty());
        let auth = match (url_user, username, &self.password, &self.api_key) {
            (Some(_), Some(_), _, _) => {
                return Err(SettingsError::new(
                    "elasticsearch.username",
                    "given both in elasticsearch.url and on its own; give it once",
                ))
            }
            (Some(_), None, _, Some(_)) | (None, Some(_), _, Some(_)) => {
                return Err(SettingsError::new(
                    "elasticsearch.api_key",
                    "give either an API key or a username and password, not both",
                ))
            }
            (Some((username, password)), None, None, None) => EsAuth::Basic {
                username,
                password: Secret(password),
            },
            (Some(_), None, Some(_), None) => {
                return Err(SettingsError::new(
                    "elasticsearch.password",
                    "given both in elasticsearch.url and on its own; give it once",
                ))
            }
            (None, Some(username), Some(password), None) => EsAuth::Basic {
                username,
                password: Secret(password.clone()),
            },
            (None, Some(_), None, None) => {
                return Err(SettingsError::new(
                    "elasticsearch.password",
                    "required with elasticsearch.username",
                ))
            }
            (None, None, Some(_), _) => {
                return Err(SettingsError::new(
                    "elasticsearch.username",
                    "required with elasticsearch.password",
                ))
            }
            (None, None, None, Some(key)) => {
                let key = key.trim();
                if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(SettingsError::new(
                        "elasticsearch.api_key",
                        "must be \"id:key\" or the base64 encoded form, without spaces",
                    ));
                }
                EsAuth::ApiKey(Secret(key.to_string()))
            }
            (None, None, None, None) => EsAuth::None,
        };
        let ca_cert_pem = match &self.ca_cert {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    SettingsError::new(
                        "elasticsearch.ca_cert",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(SettingsError::new(
                        "elasticsearch.ca_cert",
                        format!("{} holds no PEM certificate", path.display()),
                    ));
                }
                Some(pem)
            }
        };
        let prefix = &self.index_prefix;
        if prefix.len() > MAX_INDEX_PREFIX_LEN
            || prefix.starts_with(['-', '_', '+'])
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(SettingsError::new(
                "elasticsearch.index_prefix",
                format!(
                    "{prefix:?} must be at most {MAX_INDEX_PREFIX_LEN} characters of a-z 0-9 . _ - \
                     and not start with - _ +"
                ),
            ));
        }
        let timeout = duration("elasticsearch.timeout", &self.timeout)?;
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(120) {
            return Err(SettingsError::new(
                "elasticsearch.timeout",
                "must be between 100ms and 2m",
            ));
        }
        Ok(ElasticsearchSettings {
            url,
            auth,
            ca_cert_pem,
            index_prefix: prefix.clone(),
            timeout,
        })
    }
}

/// URL user-info is percent-encoded.
fn decode_userinfo(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
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
            },
            "api_keys": {
                "cache_size": self.api_key_cache_size,
                "retention_secs": secs(self.api_key_retention),
                "purge_interval_secs": secs(self.api_key_purge_interval),
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

// ---------------------------------------------------------------------------------
// The HTTP edge: `[tls]` and `[connections]` (used by `http::server` and `http::tls`).

/// `[tls]` as written: PEM paths. No `cert` and no `key`: plain HTTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    /// The certificate chain, leaf first (FLEETAUTH_TLS__CERT).
    pub cert: Option<PathBuf>,
    /// The private key of the leaf: PKCS#8, SEC1 or PKCS#1 (FLEETAUTH_TLS__KEY).
    pub key: Option<PathBuf>,
    /// CA certificates that sign client certificates; set: mTLS (FLEETAUTH_TLS__CLIENT_CA).
    pub client_ca: Option<PathBuf>,
    /// `required` (default): a client without a valid certificate is refused in the
    /// handshake; `optional`: a client may present none, but one it presents must verify.
    pub client_auth: String,
    /// How often the files are checked for changes (a SIGHUP reloads at once).
    pub reload_interval: String,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            client_auth: "required".into(),
            reload_interval: "10s".into(),
        }
    }
}

/// Whether a client must present a certificate (when `tls.client_ca` is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    Optional,
}

/// Checked `[tls]` settings: the files exist when the server starts (their content is
/// checked by `http::tls` when it loads them, at start-up and on every reload).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `Some`: client certificates signed by these CAs are verified.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub reload_interval: Duration,
}

impl TlsSettings {
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "cert": self.cert,
            "key": self.key,
            "client_ca": self.client_ca,
            "client_auth": match self.client_auth { ClientAuth::Required => "required", ClientAuth::Optional => "optional" },
            "reload_interval_secs": self.reload_interval.as_secs_f64(),
        })
    }
}

impl RawTls {
    fn validate(self) -> Result<Option<TlsSettings>, SettingsError> {
        let (cert, key) = match (self.cert, self.key) {
            (None, None) => {
                if self.client_ca.is_some() {
                    return Err(SettingsError::new(
                        "tls.client_ca",
                        "needs tls.cert and tls.key (client certificates are checked only over TLS)",
                    ));
                }
                return Ok(None);
            }
            (Some(_), None) => {
                return Err(SettingsError::new(
                    "tls.key",
                    "must be set when tls.cert is",
                ))
            }
            (None, Some(_)) => {
                return Err(SettingsError::new(
                    "tls.cert",
                    "must be set when tls.key is",
                ))
            }
            (Some(cert), Some(key)) => (cert, key),
        };
        for (setting, path) in [
            ("tls.cert", Some(&cert)),
            ("tls.key", Some(&key)),
            ("tls.client_ca", self.client_ca.as_ref()),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(SettingsError::new(
                        setting,
                        format!("no such file: {}", path.display()),
                    ));
                }
            }
        }
        let client_auth = match self.client_auth.as_str() {
            "required" => ClientAuth::Required,
            "optional" => ClientAuth::Optional,
            other => {
                return Err(SettingsError::new(
                    "tls.client_auth",
                    format!("{other:?} is not one of \"required\", \"optional\""),
                ))
            }
        };
        let reload_interval = duration("tls.reload_interval", &self.reload_interval)?;
        if reload_interval < Duration::from_millis(100) {
            return Err(SettingsError::new(
                "tls.reload_interval",
                "must be at least 100ms",
            ));
        }
        Ok(Some(TlsSettings {
            cert,
            key,
            client_ca: self.client_ca,
            client_auth,
            reload_interval,
        }))
    }
}

/// `[connections]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConnections {
    /// A new connection must complete its TLS handshake and its first request head
    /// within this; so must any later request head once its first byte has arrived.
    pub header_read_timeout: String,
    /// A connection with no request in progress is closed after this much silence.
    pub idle_timeout: String,
    /// Connections served at once; more wait in the listen backlog (not accepted).
    pub max_connections: usize,
    /// Largest request head (all header names and values), in bytes: larger gets 431.
    pub max_header_bytes: usize,
    /// Longest request target (path and query), in bytes: longer gets 414.
    pub max_uri_bytes: usize,
}

impl Default for RawConnections {
    fn default() -> Self {
        Self {
            header_read_timeout: "10s".into(),
            idle_timeout: "60s".into(),
            max_connections: 4096,
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
        }
    }
}

/// Checked `[connections]` settings.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
}

impl ConnectionSettings {
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "header_read_timeout_secs": self.header_read_timeout.as_secs_f64(),
            "idle_timeout_secs": self.idle_timeout.as_secs_f64(),
            "max_connections": self.max_connections,
            "max_header_bytes": self.max_header_bytes,
            "max_uri_bytes": self.max_uri_bytes,
        })
    }
}

impl RawConnections {
    fn validate(self) -> Result<ConnectionSettings, SettingsError> {
        let header_read_timeout =
            duration("connections.header_read_timeout", &self.header_read_timeout)?;
        let idle_timeout = duration("connections.idle_timeout", &self.idle_timeout)?;
        for (setting, value) in [
            ("connections.header_read_timeout", header_read_timeout),
            ("connections.idle_timeout", idle_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(SettingsError::new(setting, "must be at least 100ms"));
            }
        }
        if self.max_connections == 0 {
            return Err(SettingsError::new(
                "connections.max_connections",
                "must be at least 1",
            ));
        }
        if self.max_header_bytes < 1024 {
            return Err(SettingsError::new(
                "connections.max_header_bytes",
                "must be at least 1024",
            ));
        }
        if self.max_uri_bytes < 256 {
            return Err(SettingsError::new(
                "connections.max_uri_bytes",
                "must be at least 256",
            ));
        }
        Ok(ConnectionSettings {
            header_read_timeout,
            idle_timeout,
            max_connections: self.max_connections,
            max_header_bytes: self.max_header_bytes,
            max_uri_bytes: self.max_uri_bytes,
        })
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
