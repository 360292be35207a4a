//! The public keys that may verify external JWTs: PEM keys from the config
//! (`jwt_validation_pubkeys`), or the JWKS of an OIDC provider found by discovery
//! (`oidc_discovery_url`: `<url>/.well-known/openid-configuration`, then its
//! `jwks_uri`).
//!
//! Remote keys are cached. A token whose `kid` is not in the cache, or a cache older
//! than `vault.jwks_max_age`, makes the server fetch the JWKS again, but at most once
//! per `vault.jwks_min_refresh_interval` (attempts count, failed or not) and one fetch
//! at a time: a flood of tokens with unknown kids costs the provider at most one request
//! per interval. Every request has the `vault.http_timeout` timeout and a bounded body.
//! When a refresh fails, the keys already cached keep verifying.
//!
//! Only asymmetric algorithms are ever accepted ([`SUPPORTED_ALGORITHMS`]); HMAC keys
//! (`kty: oct`) and encryption keys in a JWKS are skipped, so neither `none` nor a
//! symmetric/asymmetric confusion can verify.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;

use crate::clock::UnixTime;
use crate::config::VaultSettings;

/// The signing algorithms external JWTs may use (every asymmetric algorithm the JWT
/// library verifies). Vault also lists ES512, which is not available here.
pub const SUPPORTED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// The largest discovery document or JWKS read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Redirects followed by a discovery or JWKS request.
const MAX_REDIRECTS: usize = 3;

/// The JOSE name of an algorithm.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        _ => "unknown",
    }
}

/// A supported algorithm by its JOSE name; `None` for HMAC, `none` and the unknown.
pub fn supported_algorithm(name: &str) -> Option<Algorithm> {
    SUPPORTED_ALGORITHMS
        .into_iter()
        .find(|alg| algorithm_name(*alg) == name)
}

/// One public key and what it may verify.
pub struct PublicKey {
    pub kid: Option<String>,
    /// The only algorithm the key may be used with (a JWK's `alg`), if restricted.
    alg: Option<Algorithm>,
    /// The curve of an EC or OKP JWK; unknown for a PEM EC key.
    curve: Option<EllipticCurve>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.key.family())
            .finish()
    }
}

impl PublicKey {
    /// A PEM public key (SubjectPublicKeyInfo, PKCS#1 RSA, or a certificate): RSA, EC
    /// (P-256, P-384) or Ed25519.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        if pem.contains("PRIVATE KEY") {
            return Err("a private key was given; give the public key".into());
        }
        let bytes = pem.trim().as_bytes();
        let key = DecodingKey::from_rsa_pem(bytes)
            .or_else(|_| DecodingKey::from_ec_pem(bytes))
            .or_else(|_| DecodingKey::from_ed_pem(bytes))
            .map_err(|_| "not a PEM-encoded RSA, EC or Ed25519 public key".to_string())?;
        Ok(Self {
            kid: None,
            alg: None,
            curve: None,
            key,
        })
    }

    /// A JWK of a JWKS; `None` for keys that can never verify an accepted token
    /// (symmetric, encryption-only, unknown type or algorithm, unsupported curve).
    pub fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            return None;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(key_alg) => Some(supported_algorithm(key_algorithm_name(key_alg)?)?),
        };
        let curve = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => None,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 | EllipticCurve::P384 => Some(ec.curve.clone()),
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => Some(EllipticCurve::Ed25519),
                _ => return None,
            },
            // HMAC secrets (and anything else) never verify external tokens.
            _ => return None,
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self {
            kid: jwk.common.key_id.clone(),
            alg,
            curve,
            key,
        })
    }

    /// Whether this key may verify a signature made with `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        if self.key.family() != alg.family() || self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match (&self.curve, alg) {
            (None, _) => true,
            (Some(EllipticCurve::P256), Algorithm::ES256)
            | (Some(EllipticCurve::P384), Algorithm::ES384)
            | (Some(EllipticCurve::Ed25519), Algorithm::EdDSA) => true,
            (Some(_), _) => false,
        }
    }
}

fn key_algorithm_name(alg: KeyAlgorithm) -> Option<&'static str> {
    Some(match alg {
        KeyAlgorithm::ES256 => "ES256",
        KeyAlgorithm::ES384 => "ES384",
        KeyAlgorithm::RS256 => "RS256",
        KeyAlgorithm::RS384 => "RS384",
        KeyAlgorithm::RS512 => "RS512",
        KeyAlgorithm::PS256 => "PS256",
        KeyAlgorithm::PS384 => "PS384",
        KeyAlgorithm::PS512 => "PS512",
        KeyAlgorithm::EdDSA => "EdDSA",
        _ => return None,
    })
}

/// Why remote keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The provider did not answer usefully (unreachable, timeout, bad status or body).
    #[error("{0}")]
    Provider(String),
}

/// Where the keys come from.
pub enum KeySet {
    /// `jwt_validation_pubkeys`: every key is tried (they have no `kid`).
    Pem(Vec<Arc<PublicKey>>),
    /// `oidc_discovery_url`: the provider's JWKS, cached.
    Oidc(Arc<OidcKeys>),
}

/// The keys a token should be checked with.
pub enum Candidates {
    Keys(Vec<Arc<PublicKey>>),
    /// The token names a `kid` that is not (yet) known, even after any refresh allowed.
    UnknownKid,
}

impl KeySet {
    /// The keys that may verify a token signed with `alg` and naming `kid` (if any).
    pub async fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        now: UnixTime,
    ) -> Result<Candidates, FetchError> {
        match self {
            Self::Pem(keys) => Ok(Candidates::Keys(
                keys.iter().filter(|k| k.fits(alg)).cloned().collect(),
            )),
            Self::Oidc(remote) => {
                let keys = remote.keys_for(kid, now).await?;
                let matching: Vec<Arc<PublicKey>> = keys
                    .iter()
                    .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
                    .cloned()
                    .collect();
                if kid.is_some() && matching.is_empty() {
                    return Ok(Candidates::UnknownKid);
                }
                Ok(Candidates::Keys(
                    matching.into_iter().filter(|k| k.fits(alg)).collect(),
                ))
            }
        }
    }
}

/// An HTTP client for one provider: rustls on aws-lc-rs; trusted roots are the given
/// CA certificates when there are any (as Vault does with `oidc_discovery_ca_pem`),
/// else the Mozilla roots of `webpki-roots`.
pub fn http_client(ca_pem: Option<&str>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem.filter(|pem| !pem.trim().is_empty()) {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("oidc_discovery_ca_pem: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("oidc_discovery_ca_pem: {e}"))?;
            }
            if roots.is_empty() {
                return Err("oidc_discovery_ca_pem holds no PEM certificate".into());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .user_agent(concat!("fleetauth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// The keys of an OIDC provider, found by discovery and cached.
pub struct OidcKeys {
    client: reqwest::Client,
    /// The issuer URL, without a trailing `/`.
    discovery_url: String,
    min_refresh: i64,
    max_age: i64,
    /// Held while fetching, so that only one fetch runs at a time.
    fetch: tokio::sync::Mutex<FetchState>,
    snapshot: RwLock<Arc<Snapshot>>,
}

#[derive(Default)]
struct FetchState {
    jwks_uri: Option<String>,
    last_attempt: Option<UnixTime>,
}

#[derive(Default)]
struct Snapshot {
    keys: Vec<Arc<PublicKey>>,
    fetched_at: Option<UnixTime>,
}

impl OidcKeys {
    pub fn new(client: reqwest::Client, discovery_url: &str, settings: &VaultSettings) -> Self {
        Self {
            client,
            discovery_url: discovery_url.trim_end_matches('/').to_string(),
            min_refresh: settings.jwks_min_refresh_interval.as_secs() as i64,
            max_age: settings.jwks_max_age.as_secs() as i64,
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn usable(&self, snapshot: &Snapshot, kid: Option<&str>, now: UnixTime) -> bool {
        let fresh = snapshot
            .fetched_at
            .is_some_and(|at| now - at < self.max_age);
        let knows_kid = match kid {
            Some(kid) => snapshot.keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
            None => true,
        };
        fresh && knows_kid
    }

    /// Discovery and JWKS, now, whatever the rate limit (a config write checks the
    /// provider this way). Returns how many usable keys the JWKS has.
    pub async fn refresh_now(&self, now: UnixTime) -> Result<usize, FetchError> {
        let mut state = self.fetch.lock().await;
        state.jwks_uri = None;
        self.fetch_into(&mut state, now).await
    }

    /// The cached keys, fetched again first if they are stale or lack `kid` and the
    /// rate limit allows it. A failed fetch leaves the cached keys in use; it is an
    /// error only when no key was ever fetched.
    async fn keys_for(
        &self,
        kid: Option<&str>,
        now: UnixTime,
    ) -> Result<Vec<Arc<PublicKey>>, FetchError> {
        let snapshot = self.snapshot();
        if self.usable(&snapshot, kid, now) {
            return Ok(snapshot.keys.clone());
        }
        let mut state = self.fetch.lock().await;
        // Another request may have fetched while this one waited.
        let snapshot = self.snapshot();
        if self.usable(&snapshot, kid, now) {
            return Ok(snapshot.keys.clone());
        }
        let allowed = state
            .last_attempt
            .is_none_or(|at| now - at >= self.min_refresh || now < at);
        if !allowed {
            return Ok(snapshot.keys.clone());
        }
        match self.fetch_into(&mut state, now).await {
            Ok(_) => Ok(self.snapshot().keys.clone()),
            Err(e) if snapshot.fetched_at.is_some() => {
                tracing::warn!(provider = %self.discovery_url, error = %e, "could not refresh the OIDC provider's keys; the cached ones stay in use");
                Ok(snapshot.keys.clone())
            }
            Err(e) => {
                tracing::warn!(provider = %self.discovery_url, error = %e, "could not fetch the OIDC provider's keys");
                Err(e)
            }
        }
    }

    async fn fetch_into(&self, state: &mut FetchState, now: UnixTime) -> Result<usize, FetchError> {
        state.last_attempt = Some(now);
        let jwks_uri = match &state.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                state.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let jwks = match self.get_json(&jwks_uri).await {
            Ok(jwks) => jwks,
            Err(e) => {
                // The provider may have moved its JWKS: discover again next time.
                state.jwks_uri = None;
                return Err(e);
            }
        };
        let keys = parse_jwks(&jwks)
            .ok_or_else(|| FetchError::Provider(format!("{jwks_uri}: not a JWK Set")))?;
        let count = keys.len();
        tracing::info!(provider = %self.discovery_url, keys = count, "fetched the OIDC provider's keys");
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Snapshot {
            keys,
            fetched_at: Some(now),
        });
        Ok(count)
    }

    /// Reads the discovery document and returns its `jwks_uri`. Its `issuer` must be
    /// the discovery URL (OpenID Connect Discovery 1.0 §4.3).
    async fn discover(&self) -> Result<String, FetchError> {
        let url = format!("{}/.well-known/openid-configuration", self.discovery_url);
        let doc = self.get_json(&url).await?;
        let issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
        if issuer.trim_end_matches('/') != self.discovery_url {
            return Err(FetchError::Provider(format!(
                "{url}: the issuer {issuer:?} is not the discovery URL"
            )));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| FetchError::Provider(format!("{url}: no jwks_uri")))?;
        match url::Url::parse(jwks_uri) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(jwks_uri.to_string()),
            _ => Err(FetchError::Provider(format!(
                "{url}: jwks_uri {jwks_uri:?} is not an http(s) URL"
            ))),
        }
    }

    /// GETs a JSON document (2xx, at most [`MAX_DOCUMENT_BYTES`]).
    async fn get_json(&self, url: &str) -> Result<Value, FetchError> {
        let fail = |why: String| FetchError::Provider(format!("{url}: {why}"));
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| fail(describe(&e)))?;
        if !response.status().is_success() {
            return Err(fail(format!("answered {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(fail("the document is too large".into()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(describe(&e)))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(fail("the document is too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|_| fail("the body is not JSON".into()))
    }
}

/// A reqwest error with its causes (which name the TLS or connection failure).
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The usable keys of a JWK Set; keys that do not parse are skipped, not fatal.
fn parse_jwks(doc: &Value) -> Option<Vec<Arc<PublicKey>>> {
    let keys = doc.get("keys")?.as_array()?;
    Some(
        keys.iter()
            .filter_map(|key| serde_json::from_value::<Jwk>(key.clone()).ok())
            .filter_map(|jwk| PublicKey::from_jwk(&jwk))
            .map(Arc::new)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_asymmetric_algorithms_are_supported() {
        for name in ["RS256", "PS512", "ES256", "ES384", "EdDSA"] {
            assert!(supported_algorithm(name).is_some(), "{name}");
        }
        for name in ["HS256", "HS512", "none", "ES512", "rs256"] {
            assert!(supported_algorithm(name).is_none(), "{name}");
        }
    }

    #[test]
    fn a_jwks_keeps_only_keys_that_can_verify_accepted_tokens() {
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "weird", "kid": "w"},
        ]});
        let keys = parse_jwks(&doc).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, vec!["ec", "ed"]);
        assert!(keys[0].fits(Algorithm::ES256));
        assert!(!keys[0].fits(Algorithm::ES384));
        assert!(!keys[0].fits(Algorithm::HS256));
        assert!(keys[1].fits(Algorithm::EdDSA));
        assert!(!keys[1].fits(Algorithm::RS256));
        assert!(parse_jwks(&json!({"nokeys": []})).is_none());
    }

    #[test]
    fn private_keys_and_garbage_are_not_public_keys() {
        assert!(PublicKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
        )
        .is_err());
        assert!(PublicKey::from_pem("not a pem").is_err());
    }
}
