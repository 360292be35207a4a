//! The `elasticsearch` section: the distributed backend's cluster, credentials, CA,
//! index prefix and request timeout.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, Secret, SettingsError};

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
                password: Secret::new(password),
            },
            (Some(_), None, Some(_), None) => {
                return Err(SettingsError::new(
                    "elasticsearch.password",
                    "given both in elasticsearch.url and on its own; give it once",
                ))
            }
            (None, Some(username), Some(password), None) => EsAuth::Basic {
                username,
                password: Secret::new(password.clone()),
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
                EsAuth::ApiKey(Secret::new(key))
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
