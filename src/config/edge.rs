//! The `[tls]` and `[connections]` sections: HTTPS and the limits of client
//! connections (used by `http::server` and `http::tls`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, SettingsError};

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
    pub(super) fn describe(&self) -> serde_json::Value {
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
    pub(super) fn validate(self) -> Result<Option<TlsSettings>, SettingsError> {
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
    pub(super) fn describe(&self) -> serde_json::Value {
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
    pub(super) fn validate(self) -> Result<ConnectionSettings, SettingsError> {
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
