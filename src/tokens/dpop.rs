//! DPoP proofs (RFC 9449 §4): parsing and checking the `DPoP` header's JWT, the key
//! thumbprint it proves (RFC 7638), the replay cache of proof ids, and server nonces.
//!
//! A proof is accepted when (§4.3): it is a JWS with `typ: dpop+jwt`, an asymmetric
//! `alg` of [`ALGORITHMS`] matching its `jwk`, a `jwk` holding a public key only, and a
//! valid signature by that key; its `htm` and `htu` are the request's method and URL
//! (without query and fragment); its `iat` is within `dpop.proof_window` of the
//! server's clock; its `jti` has not been seen in that window ([`ReplayCache`]); with
//! an access token, its `ath` is the token's SHA-256; and, when `dpop.require_nonce`
//! is set, its `nonce` is a current server nonce.
//!
//! Server nonces are stateless: base64url(time step ‖ HMAC-SHA-256(key, time step)),
//! valid for the current and the previous step of `dpop.nonce_lifetime`. The HMAC key
//! is kept in the store (meta `dpop_nonce_key`), so every instance issues and accepts
//! the same nonces. The replay cache is in each instance's memory: a proof replayed to
//! *another* instance within the window is not detected (docs/operations.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::telemetry::metrics;
use subtle::ConstantTimeEq;

use crate::clock::{Clock, UnixTime};
use crate::config::DpopSettings;

/// The JOSE `typ` of a DPoP proof.
pub const PROOF_TYP: &str = "dpop+jwt";
/// The proof algorithms accepted (advertised as `dpop_signing_alg_values_supported`).
pub const ALGORITHMS: [&str; 5] = ["ES256", "ES384", "EdDSA", "RS256", "PS256"];
/// The longest proof looked at.
const MAX_PROOF_LEN: usize = 8 * 1024;
/// The longest `jti` accepted.
const MAX_JTI_LEN: usize = 256;
/// Members of a JWK that only a private key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a proof was refused (a metrics label each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("the DPoP proof is not a well-formed JWT")]
    Malformed,
    #[error("the DPoP proof's typ is not dpop+jwt")]
    WrongType,
    #[error("the DPoP proof's algorithm is not supported")]
    UnsupportedAlgorithm,
    #[error("the DPoP proof's jwk is not a public key of its algorithm")]
    BadKey,
    #[error("the DPoP proof's signature is invalid")]
    BadSignature,
    #[error("the DPoP proof's htm is not the request's method")]
    WrongMethod,
    #[error("the DPoP proof's htu is not the request's URL")]
    WrongUrl,
    #[error("the DPoP proof's iat is outside the accepted window")]
    Stale,
    #[error("the DPoP proof has been used before")]
    Replayed,
    #[error("the DPoP proof's ath does not match the access token")]
    WrongAccessTokenHash,
    /// The proof lacks a current server nonce; the client must retry with one.
    #[error("a DPoP nonce from this server is required")]
    NonceRequired,
    #[error("too many recent DPoP proofs; retry shortly")]
    ReplayCacheFull,
}

impl DpopError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "dpop_malformed",
            Self::WrongType => "dpop_wrong_type",
            Self::UnsupportedAlgorithm => "dpop_unsupported_algorithm",
            Self::BadKey => "dpop_bad_key",
            Self::BadSignature => "dpop_bad_signature",
            Self::WrongMethod => "dpop_wrong_method",
            Self::WrongUrl => "dpop_wrong_url",
            Self::Stale => "dpop_stale",
            Self::Replayed => "dpop_replayed",
            Self::WrongAccessTokenHash => "dpop_wrong_ath",
            Self::NonceRequired => "dpop_nonce_required",
            Self::ReplayCacheFull => "dpop_replay_cache_full",
        }
    }
}

/// The request a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct ProofTarget<'a> {
    /// The HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The request URL without query and fragment, e.g. `https://auth.example/oauth/token`.
    pub url: &'a str,
    /// The access token presented with the proof (at a protected resource), if any.
    pub access_token: Option<&'a str>,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK, base64url.
pub fn thumbprint(jwk: &Jwk) -> Option<String> {
    jwk.thumbprint(ThumbprintHash::SHA256).ok()
}

/// `ath`: base64url(SHA-256(access token)) (RFC 9449 §4.2).
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn algorithm(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "RS256" => Algorithm::RS256,
        "PS256" => Algorithm::PS256,
        _ => return None,
    })
}

/// Whether `jwk` is a key of `alg`'s type (never a symmetric key).
fn key_fits(alg: Algorithm, jwk: &Jwk) -> bool {
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        (AlgorithmParameters::RSA(p), Algorithm::RS256 | Algorithm::PS256) => {
            // At least 2048-bit moduli.
            URL_SAFE_NO_PAD.decode(&p.n).is_ok_and(|n| n.len() >= 256)
        }
        _ => false,
    }
}

/// The URL as compared for `htu` (RFC 9449 §4.3 step 9, RFC 3986 §6.2.2 and §6.2.3):
/// no query or fragment, scheme and host in lower case, a default port dropped.
fn normalized_url(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let mut out = format!("{}://{}", parsed.scheme(), parsed.host_str()?);
    if let Some(port) = parsed.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(parsed.path());
    Some(out)
}

/// Proof ids seen within the window, bounded; failing closed when full.
struct ReplayCache {
    seen: HashMap<[u8; 32], UnixTime>,
    capacity: usize,
}

impl ReplayCache {
    /// Records `key` until `until`; false if it was already there (a replay).
    fn insert(&mut self, key: [u8; 32], until: UnixTime, now: UnixTime) -> Result<bool, DpopError> {
        if let Some(expires) = self.seen.get(&key) {
            if *expires >= now {
                return Ok(false);
            }
        }
        if self.seen.len() >= self.capacity {
            self.seen.retain(|_, expires| *expires >= now);
            if self.seen.len() >= self.capacity {
                return Err(DpopError::ReplayCacheFull);
            }
        }
        self.seen.insert(key, until);
        Ok(true)
    }
}

/// Checks DPoP proofs and issues server nonces.
pub struct DpopVerifier {
    settings: DpopSettings,
    clock: Arc<dyn Clock>,
    nonce_key: [u8; 32],
    replay: Mutex<ReplayCache>,
}

impl DpopVerifier {
    /// `nonce_key`: the HMAC key of server nonces, the same on every instance.
    pub fn new(settings: DpopSettings, clock: Arc<dyn Clock>, nonce_key: [u8; 32]) -> Self {
        let capacity = settings.replay_cache_size;
        Self {
            settings,
            clock,
            nonce_key,
            replay: Mutex::new(ReplayCache {
                seen: HashMap::new(),
                capacity,
            }),
        }
    }

    pub fn settings(&self) -> &DpopSettings {
        &self.settings
    }

    fn nonce_step(&self, now: UnixTime) -> u64 {
        (now.max(0) as u64) / self.settings.nonce_lifetime.as_secs().max(1)
    }

    fn nonce_for_step(&self, step: u64) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.nonce_key)
            .expect("HMAC takes any key length");
        mac.update(&step.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut raw = step.to_be_bytes().to_vec();
        raw.extend_from_slice(&tag[..16]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The nonce to hand out now (`DPoP-Nonce`).
    pub fn nonce(&self) -> String {
        self.nonce_for_step(self.nonce_step(self.clock.now()))
    }

    /// Whether responses should carry a fresh `DPoP-Nonce`.
    pub fn nonces_required(&self) -> bool {
        self.settings.require_nonce
    }

    fn nonce_is_current(&self, nonce: &str) -> bool {
        let step = self.nonce_step(self.clock.now());
        [step, step.saturating_sub(1)]
            .iter()
            .any(|s| bool::from(self.nonce_for_step(*s).as_bytes().ct_eq(nonce.as_bytes())))
    }

    /// Checks a proof against the request; returns the thumbprint of the key it proves.
    pub fn verify(&self, proof: &str, target: &ProofTarget<'_>) -> Result<String, DpopError> {
        let result = self.verify_inner(proof, target);
        if let Err(e) = &result {
            metrics::dpop_proof_failure(e.reason());
        }
        result
    }

    fn verify_inner(&self, proof: &str, target: &ProofTarget<'_>) -> Result<String, DpopError> {
        if proof.len() > MAX_PROOF_LEN || proof.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(DpopError::Malformed);
        }
        let header_part = proof.split('.').next().ok_or(DpopError::Malformed)?;
        let raw_header: Value = URL_SAFE_NO_PAD
            .decode(header_part)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(DpopError::Malformed)?;
        if raw_header.get("typ").and_then(Value::as_str) != Some(PROOF_TYP) {
            return Err(DpopError::WrongType);
        }
        let alg = raw_header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(algorithm)
            .ok_or(DpopError::UnsupportedAlgorithm)?;
        let raw_jwk = raw_header.get("jwk").ok_or(DpopError::BadKey)?;
        if PRIVATE_MEMBERS.iter().any(|m| raw_jwk.get(m).is_some()) {
            return Err(DpopError::BadKey);
        }
        let jwk: Jwk = serde_json::from_value(raw_jwk.clone()).map_err(|_| DpopError::BadKey)?;
        if !key_fits(alg, &jwk) {
            return Err(DpopError::BadKey);
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| DpopError::BadKey)?;
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        let claims = decode::<ProofClaims>(proof, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => DpopError::BadSignature,
                _ => DpopError::Malformed,
            })?
            .claims;
        if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
            return Err(DpopError::Malformed);
        }
        if claims.htm != target.method {
            return Err(DpopError::WrongMethod);
        }
        match (normalized_url(&claims.htu), normalized_url(target.url)) {
            (Some(presented), Some(expected)) if presented == expected => {}
            _ => return Err(DpopError::WrongUrl),
        }
        let now = self.clock.now();
        let window = self.settings.proof_window.as_secs() as i64;
        if (claims.iat - now).abs() > window {
            return Err(DpopError::Stale);
        }
        if let Some(token) = target.access_token {
            let expected = access_token_hash(token);
            let matches = claims
                .ath
                .as_deref()
                .is_some_and(|ath| bool::from(ath.as_bytes().ct_eq(expected.as_bytes())));
            if !matches {
                return Err(DpopError::WrongAccessTokenHash);
            }
        }
        if self.settings.require_nonce
            && !claims
                .nonce
                .as_deref()
                .is_some_and(|n| self.nonce_is_current(n))
        {
            return Err(DpopError::NonceRequired);
        }
        let jkt = thumbprint(&jwk).ok_or(DpopError::BadKey)?;
        // Only a proof that passed every other check takes a place in the cache.
        let mut id = Sha256::new();
        id.update(jkt.as_bytes());
        id.update([0]);
        id.update(claims.jti.as_bytes());
        let id: [u8; 32] = id.finalize().into();
        let fresh = self
            .replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, claims.iat + window, now)?;
        if !fresh {
            return Err(DpopError::Replayed);
        }
        Ok(jkt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_is_compared_without_query_fragment_or_default_port() {
        assert_eq!(
            normalized_url("HTTPS://Auth.Example:443/oauth/token?x=1#f").as_deref(),
            Some("https://auth.example/oauth/token")
        );
        assert_eq!(
            normalized_url("http://127.0.0.1:8220/api/fleet/whoami").as_deref(),
            Some("http://127.0.0.1:8220/api/fleet/whoami")
        );
        assert_ne!(
            normalized_url("http://127.0.0.1:8220/api/fleet/whoami"),
            normalized_url("http://127.0.0.1:8221/api/fleet/whoami")
        );
        assert_eq!(normalized_url("not a url"), None);
    }

    #[test]
    fn the_replay_cache_refuses_a_second_use_and_fails_closed_when_full() {
        let mut cache = ReplayCache {
            seen: HashMap::new(),
            capacity: 2,
        };
        assert_eq!(cache.insert([1; 32], 160, 100), Ok(true));
        assert_eq!(cache.insert([1; 32], 160, 120), Ok(false));
        assert_eq!(cache.insert([2; 32], 160, 100), Ok(true));
        assert_eq!(
            cache.insert([3; 32], 160, 100),
            Err(DpopError::ReplayCacheFull)
        );
        // Once the old ids have aged out there is room again.
        assert_eq!(cache.insert([3; 32], 300, 200), Ok(true));
    }

    #[test]
    fn nonces_are_accepted_for_the_current_and_previous_step_only() {
        let clock = Arc::new(crate::clock::ManualClock::starting_now());
        let settings = DpopSettings {
            nonce_lifetime: std::time::Duration::from_secs(60),
            ..DpopSettings::default()
        };
        let verifier = DpopVerifier::new(settings, clock.clone(), [7; 32]);
        let nonce = verifier.nonce();
        assert!(verifier.nonce_is_current(&nonce));
        clock.advance(60);
        assert!(verifier.nonce_is_current(&nonce));
        clock.advance(60);
        assert!(!verifier.nonce_is_current(&nonce));
        let other = DpopVerifier::new(DpopSettings::default(), clock, [8; 32]);
        assert!(!other.nonce_is_current(&verifier.nonce()));
    }
}
