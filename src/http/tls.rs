//! TLS for `serve` (SPEC §7): the rustls server configuration built from the `[tls]`
//! PEM files (HTTP/2 and HTTP/1.1 offered by ALPN, client certificates verified when
//! `tls.client_ca` is set), reloaded when the files change or on SIGHUP, and the
//! self-signed certificate of `fleetauth tls self-signed`.
//!
//! A reload swaps the configuration that *new* handshakes use; connections already
//! established keep theirs, so nothing is dropped. A reload that fails (a half-written
//! file, a key that does not match the certificate) is logged and the previous
//! configuration stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, TlsSettings};

/// Why a TLS configuration could not be built (the message names the file).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {setting} ({path}): {source}")]
    Read {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting} ({path}): {reason}")]
    Pem {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("tls: {0}")]
    Rustls(String),
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
}

/// The PEM files as read, and their fingerprint (to notice a change).
struct TlsFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
    fingerprint: [u8; 32],
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_path_buf(),
        source,
    })
}

impl TlsFiles {
    fn read(settings: &TlsSettings) -> Result<Self, TlsError> {
        let cert = read("tls.cert", &settings.cert)?;
        let key = read("tls.key", &settings.key)?;
        let client_ca = settings
            .client_ca
            .as_deref()
            .map(|path| read("tls.client_ca", path))
            .transpose()?;
        let mut hash = Sha256::new();
        for part in [Some(&cert), Some(&key), client_ca.as_ref()]
            .into_iter()
            .flatten()
        {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        Ok(Self {
            cert,
            key,
            client_ca,
            fingerprint: hash.finalize().into(),
        })
    }
}

/// The ALPN protocols offered, in order of preference (RFC 7301; RFC 9113 §3.2).
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn pem_error(setting: &'static str, path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Pem {
        setting,
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn certificates(
    setting: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(setting, path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(setting, path, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}

fn server_config(settings: &TlsSettings, files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates("tls.cert", &settings.cert, &files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| {
        pem_error(
            "tls.key",
            &settings.key,
            format!("not a PEM private key: {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match (&settings.client_ca, &files.client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("tls.client_ca", path, pem)? {
                roots
                    .add(ca)
                    .map_err(|e| pem_error("tls.client_ca", path, e.to_string()))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match settings.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| pem_error("tls.client_ca", path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        pem_error(
            "tls.key",
            &settings.key,
            format!("does not fit tls.cert: {e}"),
        )
    })?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The current TLS configuration of a server, replaced by [`Self::reload`].
pub struct TlsReloader {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
    /// The fingerprint of the files behind `current`, and of the last files that could
    /// not be loaded (so a broken file is reported once, not at every poll).
    loaded: Mutex<([u8; 32], Option<[u8; 32]>)>,
}

impl TlsReloader {
    /// Loads the files; an error here stops start-up.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        let files = TlsFiles::read(settings)?;
        let config = server_config(settings, &files)?;
        Ok(Self {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
            loaded: Mutex::new((files.fingerprint, None)),
        })
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        TlsAcceptor::from(config)
    }

    /// Reads the files again and, when they changed and are valid, uses them for new
    /// handshakes. `Ok(true)`: a new configuration is in use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = TlsFiles::read(&self.settings)?;
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if files.fingerprint == loaded.0 {
            return Ok(false);
        }
        match server_config(&self.settings, &files) {
            Ok(config) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config);
                *loaded = (files.fingerprint, None);
                Ok(true)
            }
            Err(e) => {
                let first_time = loaded.1 != Some(files.fingerprint);
                loaded.1 = Some(files.fingerprint);
                if first_time {
                    Err(e)
                } else {
                    Ok(false)
                }
            }
        }
    }

    fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(true) => tracing::info!(trigger = why, "TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(
                trigger = why,
                error = %e,
                "TLS reload failed; the previous certificate stays in use"
            ),
        }
    }

    /// Reloads on SIGHUP and whenever the files change (checked every
    /// `tls.reload_interval`), until the task is aborted.
    pub fn spawn_reloader(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        let interval = self.settings.reload_interval;
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                #[cfg(unix)]
                let signalled = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let signalled = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = ticker.tick() => self.reload_and_log("file change"),
                    _ = signalled => self.reload_and_log("SIGHUP"),
                }
            }
        })
    }
}

/// A self-signed certificate and its key, both PEM.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The names a first-try certificate is valid for when none are given.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Generates a self-signed server certificate (ECDSA P-256, valid for a year from
/// yesterday) for these DNS names and IP addresses; for a first try only: clients must
/// be told to trust it.
pub fn self_signed(subject_alt_names: &[String]) -> Result<SelfSigned, TlsError> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
        KeyUsagePurpose,
    };
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = CertificateParams::new(subject_alt_names.to_vec()).map_err(generate)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "fleetauth self-signed");
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let today = chrono::Utc::now().date_naive();
    let day = |date: chrono::NaiveDate| {
        use chrono::Datelike;
        rcgen::date_time_ymd(date.year(), date.month() as u8, date.day() as u8)
    };
    params.not_before = day(today - chrono::Days::new(1));
    params.not_after = day(today + chrono::Days::new(365));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> TlsSettings {
        TlsSettings {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
            client_auth: ClientAuth::Required,
            reload_interval: Duration::from_secs(1),
        }
    }

    fn write(dir: &Path, generated: &SelfSigned) {
        std::fs::write(dir.join("cert.pem"), &generated.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &generated.key_pem).unwrap();
    }

    #[test]
    fn a_generated_certificate_loads_and_offers_h2_then_http1() {
        crate::startup::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let sans: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
        write(dir.path(), &self_signed(&sans).unwrap());
        let reloader = TlsReloader::load(&settings(dir.path())).unwrap();
        let config = reloader.acceptor().config().clone();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(!reloader.reload().unwrap(), "unchanged files: no reload");
    }

    #[test]
    fn a_bad_new_file_keeps_the_old_config_and_is_reported_once() {
        crate::startup::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let sans = vec!["localhost".to_string()];
        write(dir.path(), &self_signed(&sans).unwrap());
        let reloader = TlsReloader::load(&settings(dir.path())).unwrap();
        let before = reloader.acceptor().config().clone();

        // A key that does not belong to the certificate.
        let other = self_signed(&sans).unwrap();
        std::fs::write(dir.path().join("key.pem"), &other.key_pem).unwrap();
        let error = reloader.reload().unwrap_err().to_string();
        assert!(error.contains("tls.key"), "{error}");
        assert!(
            !reloader.reload().unwrap(),
            "the same broken files: not again"
        );
        assert!(Arc::ptr_eq(&before, reloader.acceptor().config()));

        std::fs::write(dir.path().join("cert.pem"), &other.cert_pem).unwrap();
        assert!(reloader.reload().unwrap());
        assert!(!Arc::ptr_eq(&before, reloader.acceptor().config()));
    }

    #[test]
    fn files_that_are_not_pem_are_refused_by_setting() {
        crate::startup::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
        std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
        let error = TlsReloader::load(&settings(dir.path()))
            .err()
            .expect("refused")
            .to_string();
        assert!(error.starts_with("tls.cert"), "{error}");
    }
}
