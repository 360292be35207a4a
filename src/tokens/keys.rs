//! Signing keys: generation, the parsed key (signer, verifier, public JWK, `kid` = RFC
//! 7638 thumbprint) and the [`KeyRing`] of every key that may still verify a live token.
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
    pub signing: Arc<SigningKey>,
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
    /// Builds the ring from stored records (as returned by `Store::signing_keys`).
    /// Unusable records are logged and skipped, never fatal for the others.
    pub fn from_records(records: &[SigningKeyRecord]) -> Result<Self, KeyError> {
        let mut verifying = HashMap::new();
        let mut signing: Option<Arc<SigningKey>> = None;
        for record in records {
            match SigningKey::from_record(record) {
                Ok(key) => {
                    let key = Arc::new(key);
                    let newer = signing
                        .as_ref()
                        .is_none_or(|s| key.created_at > s.created_at);
                    if key.retired_at.is_none() && newer {
                        signing = Some(key.clone());
                    }
                    verifying.insert(key.kid.clone(), key);
                }
                Err(e) => tracing::error!(error = %e, "skipping signing key"),
            }
        }
        Ok(Self {
            signing: signing.ok_or(KeyError::NoSigningKey)?,
            verifying,
            source: key_states(records),
            verified: VerifiedTokens::default(),
        })
    }

    /// Whether the ring was built from exactly these records' keys, in these states.
    pub fn built_from(&self, records: &[SigningKeyRecord]) -> bool {
        self.source == key_states(records)
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

    #[test]
    fn a_tampered_kid_is_refused() {
        let mut record = SigningKey::generate(SigningAlgorithm::EdDSA, 1_000).unwrap();
        record.kid = "something-else".into();
        assert!(SigningKey::from_record(&record).is_err());
    }
}
