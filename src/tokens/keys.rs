//! Signing keys: generation, the parsed key (signer, verifier, public JWK, `kid` = RFC
//! 7638 thumbprint) and the [`KeyRing`] of every key that may still verify a live token.
//!
//! A key signs from its `created_at` until its `retired_at`; both may lie in the future.
//! An automatic rotation (see `TokenService::rotate_if_due`) stores the next key with a
//! `created_at` `jwt.key_prepublish` ahead and the current key's `retired_at` at that same
//! instant, so the next key is in every JWKS before it signs, and every instance switches
//! at the same second ([`KeyRing::signer`]) without another store read.
//!
//! Private keys are parsed into aws-lc key pairs once, when the ring is loaded, not on
//! every signature (`jsonwebtoken::encode` would re-parse the PKCS#8 document per call;
//! see docs/benchmarks.md for what that costs).

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, RsaKeyPair, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType,
    PublicKeyUse, RSAKeyParameters, RSAKeyType, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::jwt::VerifiedTokens;
use crate::clock::UnixTime;
use crate::config::SigningAlgorithm;
use crate::store::SigningKeyRecord;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a {0} key")]
    Generate(&'static str),
    #[error("stored signing key {kid} is unusable: {reason}")]
    Unusable { kid: String, reason: String },
    #[error("no signing key is available")]
    NoSigningKey,
    #[error("no signing key has kid {0}")]
    UnknownKid(String),
}

/// A private key, parsed once.
enum PrivateKey {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// One signing key with everything derived from it.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub created_at: UnixTime,
    pub retired_at: Option<UnixTime>,
    pub verify_until: Option<UnixTime>,
    private: PrivateKey,
    /// The public key, parsed once, that verifies this key's JWS signatures.
    verifier: ParsedPublicKey,
    /// The public JWK, with `kid`, `alg` and `use: sig`.
    pub jwk: Jwk,
    /// The same public key for `jsonwebtoken` (the signing bench compares against it;
    /// the server verifies with [`SigningKey::verify`]).
    pub decoding_key: DecodingKey,
    /// The encoded JOSE header of the access tokens this key signs (it names the key
    /// and its algorithm only), computed once.
    jws_header: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl SigningKey {
    pub fn jwt_algorithm(&self) -> Algorithm {
        match self.algorithm {
            SigningAlgorithm::EdDSA => Algorithm::EdDSA,
            SigningAlgorithm::ES256 => Algorithm::ES256,
            SigningAlgorithm::RS256 => Algorithm::RS256,
        }
    }

    /// Signs `message`, returning the raw JWS signature bytes.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.private {
            PrivateKey::Ed(kp) => kp.sign(message).as_ref().to_vec(),
            PrivateKey::Ec(kp) => kp
                .sign(&SystemRandom::new(), message)
                .map(|sig| sig.as_ref().to_vec())
                .unwrap_or_default(),
            PrivateKey::Rsa(kp) => {
                let mut signature = vec![0; kp.public_modulus_len()];
                match kp.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                ) {
                    Ok(()) => signature,
                    Err(_) => Vec::new(),
                }
            }
        }
    }

    /// The base64url JOSE header `{alg, typ: at+jwt, kid}` of the tokens this key signs.
    pub fn jws_header(&self) -> &str {
        &self.jws_header
    }

    /// Whether `signature` (raw JWS signature bytes: R || S for ES256) is this key's
    /// signature of `message`, with this key's algorithm only.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verifier.verify_sig(message, signature).is_ok()
    }

    /// Generates a new key; its `kid` is its thumbprint.
    pub fn generate(
        algorithm: SigningAlgorithm,
        now: UnixTime,
    ) -> Result<SigningKeyRecord, KeyError> {
        let rng = SystemRandom::new();
        let fail = |_| KeyError::Generate(algorithm.as_str());
        let private_der = match algorithm {
            SigningAlgorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(fail)?
                .as_ref()
                .to_vec(),
            SigningAlgorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(fail)?
                    .as_ref()
                    .to_vec()
            }
            SigningAlgorithm::RS256 => {
                let kp = RsaKeyPair::generate(KeySize::Rsa2048).map_err(fail)?;
                let der = kp.as_der().map_err(fail)?;
                der.as_ref().to_vec()
            }
        };
        let mut record = SigningKeyRecord {
            kid: String::new(),
            algorithm: algorithm.as_str().to_string(),
            private_der,
            created_at: now,
            retired_at: None,
            verify_until: None,
        };
        record.kid = Self::from_record(&record)?.kid;
        Ok(record)
    }

    /// Parses a stored key and derives its public JWK and thumbprint.
    pub fn from_record(record: &SigningKeyRecord) -> Result<Self, KeyError> {
        let unusable = |reason: &str| KeyError::Unusable {
            kid: record.kid.clone(),
            reason: reason.to_string(),
        };
        let algorithm = SigningAlgorithm::parse(&record.algorithm)
            .ok_or_else(|| unusable("unknown algorithm"))?;
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let (private, params, verifier) = match algorithm {
            SigningAlgorithm::EdDSA => {
                let kp = Ed25519KeyPair::from_pkcs8(&record.private_der)
                    .map_err(|_| unusable("bad Ed25519 key"))?;
                let params = AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: b64(kp.public_key().as_ref()),
                });
                let verifier = ParsedPublicKey::new(&ED25519, kp.public_key().as_ref());
                (PrivateKey::Ed(kp), params, verifier)
            }
            SigningAlgorithm::ES256 => {
                let kp =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &record.private_der)
                        .map_err(|_| unusable("bad P-256 key"))?;
                // Uncompressed point: 0x04 || x || y.
                let point = kp.public_key().as_ref();
                if point.len() != 65 {
                    return Err(unusable("unexpected P-256 public key length"));
                }
                let params = AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve: EllipticCurve::P256,
                    x: b64(&point[1..33]),
                    y: b64(&point[33..65]),
                });
                let verifier = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point);
                (PrivateKey::Ec(kp), params, verifier)
            }
            SigningAlgorithm::RS256 => {
                let kp = RsaKeyPair::from_pkcs8(&record.private_der)
                    .map_err(|_| unusable("bad RSA key"))?;
                let public = kp.public_key();
                let params = AlgorithmParameters::RSA(RSAKeyParameters {
                    key_type: RSAKeyType::RSA,
                    n: b64(public.modulus().big_endian_without_leading_zero()),
                    e: b64(public.exponent().big_endian_without_leading_zero()),
                });
                // The DER RSAPublicKey (RFC 8017 A.1.1).
                let verifier = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public.as_ref());
                (PrivateKey::Rsa(kp), params, verifier)
            }
        };
        let mut jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: params,
        };
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| unusable(&e.to_string()))?;
        jwk.common = CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(match algorithm {
                SigningAlgorithm::EdDSA => KeyAlgorithm::EdDSA,
                SigningAlgorithm::ES256 => KeyAlgorithm::ES256,
                SigningAlgorithm::RS256 => KeyAlgorithm::RS256,
            }),
            key_id: Some(kid.clone()),
            ..Default::default()
        };
        if !record.kid.is_empty() && record.kid != kid {
            return Err(unusable("stored kid does not match the key's thumbprint"));
        }
        let decoding_key = DecodingKey::from_jwk(&jwk).map_err(|e| unusable(&e.to_string()))?;
        let verifier = verifier.map_err(|_| unusable("its public key does not parse"))?;
        Ok(Self {
            jws_header: super::jwt::encoded_header(algorithm.as_str(), &kid),
            kid,
            algorithm,
            created_at: record.created_at,
            retired_at: record.retired_at,
            verify_until: record.verify_until,
            private,
            verifier,
            jwk,
            decoding_key,
        })
    }
}

/// The keys in force at one moment: the one that signs, and all that verify.
#[derive(Debug)]
pub struct KeyRing {
    /// The key that signed when the ring was built.
    pub signing: Arc<SigningKey>,
    /// A published key that starts signing at its `created_at` (automatic rotation).
    next: Option<Arc<SigningKey>>,
    verifying: HashMap<String, Arc<SigningKey>>,
    /// What the ring was built from, so a reload that finds the same keys in the same
    /// state can keep it instead of parsing every key again.
    source: Vec<KeyState>,
    /// Tokens whose signature a key of this ring has verified. A ring with other keys
    /// is a new ring, with an empty set: a key that leaves the ring takes its verified
    /// tokens with it.
    pub(super) verified: VerifiedTokens,
}

/// The parts of a stored key that change after it is created.
type KeyState = (String, Option<UnixTime>, Option<UnixTime>);

fn key_states(records: &[SigningKeyRecord]) -> Vec<KeyState> {
    records
        .iter()
        .map(|r| (r.kid.clone(), r.retired_at, r.verify_until))
        .collect()
}

impl KeyRing {
    /// Builds the ring from stored records (as returned by `Store::signing_keys`), with
    /// the newest unretired key signing (no key scheduled for later).
    pub fn from_records(records: &[SigningKeyRecord]) -> Result<Self, KeyError> {
        Self::from_records_at(records, UnixTime::MAX)
    }

    /// Builds the ring as of `now`: the newest key that has started signing and not
    /// stopped signs; an unretired key whose `created_at` is still ahead is the next one.
    /// Unusable records are logged and skipped, never fatal for the others.
    pub fn from_records_at(records: &[SigningKeyRecord], now: UnixTime) -> Result<Self, KeyError> {
        let mut verifying = HashMap::new();
        let mut signing: Option<Arc<SigningKey>> = None;
        let mut next: Option<Arc<SigningKey>> = None;
        let mut newest_unretired: Option<Arc<SigningKey>> = None;
        let newer = |candidate: &Option<Arc<SigningKey>>, key: &SigningKey| {
            candidate
                .as_ref()
                .is_none_or(|s| key.created_at > s.created_at)
        };
        for record in records {
            match SigningKey::from_record(record) {
                Ok(key) => {
                    let key = Arc::new(key);
                    let started = key.created_at <= now;
                    let signs_now = started && key.retired_at.is_none_or(|t| t > now);
                    if signs_now && newer(&signing, &key) {
                        signing = Some(key.clone());
                    }
                    if !started && key.retired_at.is_none() && newer(&next, &key) {
                        next = Some(key.clone());
                    }
                    if key.retired_at.is_none() && newer(&newest_unretired, &key) {
                        newest_unretired = Some(key.clone());
                    }
                    verifying.insert(key.kid.clone(), key);
                }
                Err(e) => tracing::error!(error = %e, "skipping signing key"),
            }
        }
        // Only a clock far behind the store's could see no key in force: sign with the
        // newest unretired one rather than with none.
        let signing = signing.or(newest_unretired).ok_or(KeyError::NoSigningKey)?;
        let next = next.filter(|n| n.kid != signing.kid);
        Ok(Self {
            signing,
            next,
            verifying,
            source: key_states(records),
            verified: VerifiedTokens::default(),
        })
    }

    /// Whether the ring was built from exactly these records' keys, in these states.
    pub fn built_from(&self, records: &[SigningKeyRecord]) -> bool {
        self.source == key_states(records)
    }

    /// The key that signs at `now`: the next key once its time has come, else the key
    /// that signed when the ring was built.
    pub fn signer(&self, now: UnixTime) -> &Arc<SigningKey> {
        match &self.next {
            Some(next) if now >= next.created_at => next,
            _ => &self.signing,
        }
    }

    /// The published key that will sign later, if a rotation is scheduled.
    pub fn next(&self) -> Option<&Arc<SigningKey>> {
        self.next.as_ref()
    }

    /// Whether a rebuild at `now` would pick another signing key (the next key's time
    /// has come).
    pub fn switch_due(&self, now: UnixTime) -> bool {
        self.next.as_ref().is_some_and(|n| now >= n.created_at)
    }

    /// How many verified tokens the ring remembers.
    pub fn verified_tokens(&self) -> usize {
        self.verified.len()
    }

    pub fn verifying_key(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.verifying.get(kid)
    }

    /// The algorithms of the signing key and of every key that still verifies, the
    /// signing key's first (for RFC 8414 metadata).
    pub fn algorithms(&self) -> Vec<SigningAlgorithm> {
        let mut algorithms = vec![self.signing.algorithm];
        for key in self.verifying.values() {
            if !algorithms.contains(&key.algorithm) {
                algorithms.push(key.algorithm);
            }
        }
        algorithms
    }

    /// The public keys that may still verify a live token (RFC 7517 JWK Set).
    pub fn jwks(&self) -> JwkSet {
        let mut keys: Vec<&Arc<SigningKey>> = self.verifying.values().collect();
        keys.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.kid.cmp(&b.kid)));
        JwkSet {
            keys: keys.into_iter().map(|k| k.jwk.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_a_key_whose_kid_is_its_thumbprint() {
        for alg in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::ES256,
            SigningAlgorithm::RS256,
        ] {
            let record = SigningKey::generate(alg, 1_000).unwrap();
            let key = SigningKey::from_record(&record).unwrap();
            assert_eq!(key.kid, record.kid);
            let mut bare = key.jwk.clone();
            bare.common = CommonParameters::default();
            assert_eq!(
                bare.thumbprint(ThumbprintHash::SHA256).unwrap(),
                key.kid,
                "{alg:?}"
            );
            assert!(!key.sign(b"message").is_empty());
        }
    }

    fn key(created_at: UnixTime, retired_at: Option<UnixTime>) -> SigningKeyRecord {
        let mut record = SigningKey::generate(SigningAlgorithm::EdDSA, created_at).unwrap();
        record.retired_at = retired_at;
        record.verify_until = retired_at.map(|t| t + 100);
        record
    }

    #[test]
    fn a_scheduled_key_is_published_before_it_signs_and_signs_from_its_time() {
        let old = key(1_000, Some(2_000));
        let new = key(2_000, None);
        let records = [new.clone(), old.clone()];

        let ring = KeyRing::from_records_at(&records, 1_500).unwrap();
        assert_eq!(ring.signing.kid, old.kid);
        assert_eq!(ring.next().map(|k| k.kid.as_str()), Some(new.kid.as_str()));
        assert_eq!(ring.jwks().keys.len(), 2, "the next key is published");
        assert_eq!(ring.signer(1_999).kid, old.kid);
        assert!(!ring.switch_due(1_999));
        assert_eq!(ring.signer(2_000).kid, new.kid);
        assert!(ring.switch_due(2_000));

        let later = KeyRing::from_records_at(&records, 2_000).unwrap();
        assert_eq!(later.signing.kid, new.kid);
        assert!(later.next().is_none());
        assert!(
            later.verifying_key(&old.kid).is_some(),
            "the old key still verifies"
        );
    }

    #[test]
    fn without_a_time_the_newest_unretired_key_signs() {
        let old = key(1_000, Some(1_500));
        let new = key(1_500, None);
        let ring = KeyRing::from_records(&[old, new.clone()]).unwrap();
        assert_eq!(ring.signing.kid, new.kid);
        assert!(ring.next().is_none());
    }

    #[test]
    fn a_tampered_kid_is_refused() {
        let mut record = SigningKey::generate(SigningAlgorithm::EdDSA, 1_000).unwrap();
        record.kid = "something-else".into();
        assert!(SigningKey::from_record(&record).is_err());
    }
}
