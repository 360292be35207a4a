// Over 600 lines with its tests: the code is ~400 (the access-token format: claims, signing, the one verifier and its checks); the tests (~270) forge and tamper tokens against exactly that code, so they stay beside it.
//! The access-token format: a JWS-signed JWT with header `typ: at+jwt` and `kid`, and
//! the claims of SPEC §3. Signing uses the key ring's parsed key pair; verification uses
//! the ring's parsed public key (aws-lc `ParsedPublicKey`) with exactly one allowed
//! algorithm, the one of the key named by `kid` (so `none` and HMAC-with-a-public-key
//! confusions cannot pass), and refuses what RFC 7515/7519 say to refuse: any `crit`
//! header parameter (this verifier understands no extension), a token before its `nbf`.
//!
//! The signature check is the expensive step (tens of µs for Ed25519/ES256, more for
//! RSA), so each [`KeyRing`] remembers the tokens whose signature it has verified: a
//! bounded set of keyed SHA-256 fingerprints of the whole compact token
//! ([`VerifiedTokens`]). A token whose exact bytes were verified by a key of this ring
//! skips only the signature computation; everything else (header, `kid`, `alg`, `typ`,
//! `crit`, claims, `iss`, `aud`, `exp`, `nbf`, `iat`) is parsed and checked on every
//! use, and the token service still checks the store (agent enrolled, `jti` current or
//! pending) on every request. A ring is replaced whenever a key enters or leaves it, and
//! a new ring starts with an empty set, so a key that leaves the ring verifies nothing
//! more, cached or not.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lru::LruCache;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::keys::{KeyRing, SigningKey};
use crate::clock::UnixTime;

/// The JOSE header `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub jti: String,
    pub iat: UnixTime,
    pub exp: UnixTime,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 9068 §2.2.3.1 `groups`: the groups of a subject admitted by the Vault JWT
    /// auth method (its role's `groups_claim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Private claim: the Vault JWT auth role that admitted a subject holding an
    /// external JWT. Such a subject is neither an agent nor a client: its token is valid
    /// by its signature and claims (plus its use counter, below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_role: Option<String>,
    /// Private claim: the token may be used this many times; its remaining uses are
    /// counted in the store under its `jti`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    /// The token family (the Elasticsearch-compatible token API): its record holds the
    /// token state, and `sub` is the user. Absent on agents' and clients' tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// RFC 9449 §6.1 confirmation: the token is DPoP-bound to the key whose RFC 7638
    /// thumbprint is `cnf.jkt`; it is accepted only with a proof signed by that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The `cnf` claim of a DPoP-bound token (RFC 9449 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

impl AccessClaims {
    /// The thumbprint of the DPoP key the token is bound to, if it is bound.
    pub fn bound_key(&self) -> Option<&str> {
        self.cnf.as_ref().map(|c| c.jkt.as_str())
    }
}

impl AccessClaims {
    /// Whether the subject was admitted by the Vault JWT auth method (an external JWT)
    /// rather than being an agent or a client.
    pub fn is_external(&self) -> bool {
        self.vault_role.is_some()
    }
}

#[derive(Serialize)]
struct JoseHeader<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// Why a presented JWT was refused. Deliberately coarse towards clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is not an access token of this server")]
    WrongType,
    #[error("the token was not signed by a known key")]
    UnknownKey,
    #[error("the token's algorithm is not allowed")]
    WrongAlgorithm,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has a critical header parameter this server does not understand")]
    CriticalHeader,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is not meant for this audience")]
    WrongAudience,
}

impl JwtError {
    /// A short label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "jwt_malformed",
            Self::WrongType => "jwt_wrong_type",
            Self::UnknownKey => "jwt_unknown_key",
            Self::WrongAlgorithm => "jwt_wrong_algorithm",
            Self::BadSignature => "jwt_bad_signature",
            Self::Expired => "jwt_expired",
            Self::NotYetValid => "jwt_not_yet_valid",
            Self::CriticalHeader => "jwt_critical_header",
            Self::WrongIssuer => "jwt_wrong_issuer",
            Self::WrongAudience => "jwt_wrong_audience",
        }
    }
}

/// The first part of every access token a key signs: its JOSE header
/// `{alg, typ: at+jwt, kid}`, base64url-encoded. It depends on the key only, so the key
/// computes it once ([`SigningKey::jws_header`]).
pub(super) fn encoded_header(algorithm: &str, kid: &str) -> String {
    let header = JoseHeader {
        alg: algorithm,
        typ: ACCESS_TOKEN_TYP,
        kid,
    };
    // Serializing this plain struct cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default())
}

/// Signs `claims` with `key` into a compact JWS.
pub fn sign(key: &SigningKey, claims: &AccessClaims) -> String {
    let header = key.jws_header();
    // Serializing this plain struct cannot fail.
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = String::with_capacity(header.len() + claims.len() * 4 / 3 + 360);
    token.push_str(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    token
}

/// What a verifier checks besides the signature.
pub struct Expectations<'a> {
    pub issuer: &'a str,
    pub audience: Option<&'a str>,
    pub leeway: i64,
    pub now: UnixTime,
}

/// The JOSE header, as far as the verifier reads it. Duplicate members are refused
/// (serde), unknown ones ignored, except `crit`: see [`Presence`].
#[derive(Deserialize)]
struct ReadHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, borrow)]
    typ: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Presence,
}

/// Whether a member is present at all, whatever its value (even `null`): RFC 7515
/// §4.1.11 says a recipient that does not understand a `crit` extension must refuse the
/// JWS, and this verifier understands none, so any `crit` is refused.
#[derive(Default)]
struct Presence(bool);

impl<'de> Deserialize<'de> for Presence {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d)?;
        Ok(Self(true))
    }
}

/// The claims as the verifier reads them, in one pass: [`AccessClaims`]' members and
/// the registered time claim it does not carry, `nbf` (RFC 7519 §4.1.5; a NumericDate
/// may be fractional, so it is read as a number of any kind). Unknown members are
/// ignored and duplicate known ones refused, as [`AccessClaims`]' own `Deserialize`
/// does.
#[derive(Deserialize)]
struct ReadClaims {
    iss: String,
    sub: String,
    jti: String,
    iat: UnixTime,
    exp: UnixTime,
    client_id: String,
    #[serde(default)]
    aud: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    vault_role: Option<String>,
    #[serde(default)]
    max_uses: Option<u32>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    cnf: Option<Confirmation>,
    #[serde(default)]
    nbf: Option<f64>,
}

impl ReadClaims {
    fn into_claims(self) -> (AccessClaims, Option<f64>) {
        let claims = AccessClaims {
            iss: self.iss,
            sub: self.sub,
            jti: self.jti,
            iat: self.iat,
            exp: self.exp,
            client_id: self.client_id,
            aud: self.aud,
            scope: self.scope,
            groups: self.groups,
            vault_role: self.vault_role,
            max_uses: self.max_uses,
            sid: self.sid,
            cnf: self.cnf,
        };
        (claims, self.nbf)
    }
}

/// How many verified tokens a key ring remembers (least recently used first out).
/// About 100 bytes each: ~13 MB when full.
pub const VERIFIED_TOKENS_CAPACITY: usize = 131_072;

/// The tokens whose signature a key ring has verified, by a keyed fingerprint of the
/// whole compact token: SHA-256 over a random 32-byte secret of this ring and the token.
/// Only a token byte-for-byte equal to a verified one matches (SHA-256 collision
/// resistance); the secret makes the fingerprints (and so the set's hash-table layout
/// and lookup timing) unpredictable to clients. Only tokens that passed every check are
/// added.
pub struct VerifiedTokens {
    secret: [u8; 32],
    fingerprints: Mutex<LruCache<[u8; 32], ()>>,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens").finish_non_exhaustive()
    }
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::with_capacity(VERIFIED_TOKENS_CAPACITY)
    }
}

impl VerifiedTokens {
    pub fn with_capacity(capacity: usize) -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        Self {
            secret,
            fingerprints: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    fn fingerprint(&self, token: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.secret);
        hasher.update(token.as_bytes());
        hasher.finalize().into()
    }

    fn contains(&self, fingerprint: &[u8; 32]) -> bool {
        self.lock().get(fingerprint).is_some()
    }

    fn insert(&self, fingerprint: [u8; 32]) {
        self.lock().put(fingerprint, ());
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<[u8; 32], ()>> {
        self.fingerprints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn decode_part(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)
}

/// Checks the signature (known `kid`, its algorithm only), `crit`, `typ`, `iss`, `aud`,
/// `exp`, `nbf` and `iat`. Does not consult the store: that is the token service's
/// second step. A token the ring has verified before skips only the signature
/// computation (module docs).
pub fn verify(
    token: &str,
    ring: &KeyRing,
    expect: &Expectations<'_>,
) -> Result<AccessClaims, JwtError> {
    let mut parts = token.split('.');
    let (Some(header_part), Some(claims_part), Some(signature_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header_json = decode_part(header_part)?;
    let header: ReadHeader<'_> =
        serde_json::from_slice(&header_json).map_err(|_| JwtError::Malformed)?;
    if header.crit.0 {
        return Err(JwtError::CriticalHeader);
    }
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(JwtError::WrongType);
    }
    let kid = header.kid.as_deref().ok_or(JwtError::UnknownKey)?;
    let key = ring.verifying_key(kid).ok_or(JwtError::UnknownKey)?;
    if header.alg != key.algorithm.as_str() {
        return Err(JwtError::WrongAlgorithm);
    }
    let fingerprint = ring.verified.fingerprint(token);
    let seen = ring.verified.contains(&fingerprint);
    if !seen {
        let signature = decode_part(signature_part)?;
        // The signing input is the first two parts as they were sent (RFC 7515 §5.2).
        let signed = &token[..header_part.len() + 1 + claims_part.len()];
        if !key.verify(signed.as_bytes(), &signature) {
            return Err(JwtError::BadSignature);
        }
    }
    let claims_json = decode_part(claims_part)?;
    let (claims, nbf) = serde_json::from_slice::<ReadClaims>(&claims_json)
        .map_err(|_| JwtError::Malformed)?
        .into_claims();
    if claims.iss != expect.issuer {
        return Err(JwtError::WrongIssuer);
    }
    if let Some(audience) = expect.audience {
        if claims.aud.as_deref() != Some(audience) {
            return Err(JwtError::WrongAudience);
        }
    }
    if claims.exp + expect.leeway <= expect.now {
        return Err(JwtError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > (expect.now + expect.leeway) as f64) {
        return Err(JwtError::NotYetValid);
    }
    if claims.iat > expect.now + expect.leeway {
        return Err(JwtError::Malformed);
    }
    if !seen {
        ring.verified.insert(fingerprint);
    }
    Ok(claims)
}

/// True when `token` has the shape of a compact JWS (three dot-separated parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningAlgorithm;
    use crate::store::SigningKeyRecord;

    const ISSUER: &str = "fleetauth:test";
    const NOW: UnixTime = 1_800_000_000;

    fn new_ring(algorithm: SigningAlgorithm) -> (KeyRing, SigningKeyRecord) {
        let record = SigningKey::generate(algorithm, NOW - 10).unwrap();
        (
            KeyRing::from_records(std::slice::from_ref(&record)).unwrap(),
            record,
        )
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: ISSUER.into(),
            sub: "agent-1".into(),
            jti: "jti-1".into(),
            iat: NOW,
            exp: NOW + 1200,
            client_id: "client-1".into(),
            aud: Some(ISSUER.into()),
            scope: None,
            groups: None,
            vault_role: None,
            max_uses: None,
            sid: None,
            cnf: None,
        }
    }

    fn expect(now: UnixTime) -> Expectations<'static> {
        Expectations {
            issuer: ISSUER,
            audience: Some(ISSUER),
            leeway: 30,
            now,
        }
    }

    fn forge(header: serde_json::Value, claims: serde_json::Value, key: &SigningKey) -> String {
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        token
    }

    #[test]
    fn every_algorithm_verifies_its_own_tokens_and_remembers_them() {
        for algorithm in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::ES256,
            SigningAlgorithm::RS256,
        ] {
            let (key_ring, _) = new_ring(algorithm);
            let token = sign(&key_ring.signing, &claims());
            assert_eq!(key_ring.verified_tokens(), 0);
            assert_eq!(
                verify(&token, &key_ring, &expect(NOW)),
                Ok(claims()),
                "{algorithm:?}"
            );
            assert_eq!(key_ring.verified_tokens(), 1, "{algorithm:?}");
            assert_eq!(
                verify(&token, &key_ring, &expect(NOW)),
                Ok(claims()),
                "{algorithm:?} again"
            );
            assert_eq!(key_ring.verified_tokens(), 1);

            // Another ring (another key): unknown, whatever the first one remembers.
            let (other, _) = new_ring(algorithm);
            assert_eq!(
                verify(&token, &other, &expect(NOW)),
                Err(JwtError::UnknownKey)
            );
        }
    }

    #[test]
    fn every_claim_is_read_back_and_duplicates_are_refused() {
        let (ring, _) = new_ring(SigningAlgorithm::EdDSA);
        let full = AccessClaims {
            scope: Some("fleet:agent".into()),
            groups: Some(vec!["a".into(), "b".into()]),
            vault_role: Some("role-1".into()),
            max_uses: Some(3),
            sid: Some("family-1".into()),
            cnf: Some(Confirmation {
                jkt: "thumb".into(),
            }),
            ..claims()
        };
        let token = sign(&ring.signing, &full);
        assert_eq!(verify(&token, &ring, &expect(NOW)), Ok(full));
        // A member given twice, known or `nbf`, is malformed (one JSON pass reads both).
        let header = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": ring.signing.kid});
        let body = serde_json::to_string(&claims()).unwrap();
        for duplicate in [r#""sub":"agent-2","#, r#""nbf":1,"nbf":2,"#] {
            let raw = body.replacen('{', &format!("{{{duplicate}"), 1);
            let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
            token.push('.');
            token.push_str(&URL_SAFE_NO_PAD.encode(raw));
            let signature = ring.signing.sign(token.as_bytes());
            token.push('.');
            token.push_str(&URL_SAFE_NO_PAD.encode(signature));
            assert_eq!(
                verify(&token, &ring, &expect(NOW)),
                Err(JwtError::Malformed),
                "{duplicate}"
            );
        }
    }

    #[test]
    fn a_remembered_token_still_has_its_claims_checked() {
        let (ring, _) = new_ring(SigningAlgorithm::EdDSA);
        let token = sign(&ring.signing, &claims());
        verify(&token, &ring, &expect(NOW)).unwrap();
        assert_eq!(
            verify(&token, &ring, &expect(NOW + 1200 + 30)),
            Err(JwtError::Expired)
        );
        let other_issuer = Expectations {
            issuer: "fleetauth:other",
            ..expect(NOW)
        };
        assert_eq!(
            verify(&token, &ring, &other_issuer),
            Err(JwtError::WrongIssuer)
        );
        let other_audience = Expectations {
            audience: Some("elsewhere"),
            ..expect(NOW)
        };
        assert_eq!(
            verify(&token, &ring, &other_audience),
            Err(JwtError::WrongAudience)
        );
    }

    #[test]
    fn a_rebuilt_ring_remembers_nothing() {
        let (ring, record) = new_ring(SigningAlgorithm::EdDSA);
        let token = sign(&ring.signing, &claims());
        verify(&token, &ring, &expect(NOW)).unwrap();
        let rebuilt = KeyRing::from_records(&[record]).unwrap();
        assert_eq!(rebuilt.verified_tokens(), 0);
        assert_eq!(verify(&token, &rebuilt, &expect(NOW)), Ok(claims()));
    }

    #[test]
    fn refused_headers_and_times() {
        let (ring, _) = new_ring(SigningAlgorithm::EdDSA);
        let key = &ring.signing;
        let header = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid});
        let body = serde_json::to_value(claims()).unwrap();
        let with = |name: &str, value: serde_json::Value, of: &serde_json::Value| {
            let mut v = of.clone();
            v[name] = value;
            v
        };
        let cases = [
            (
                "crit",
                forge(
                    with("crit", serde_json::json!(["exp"]), &header),
                    body.clone(),
                    key,
                ),
                JwtError::CriticalHeader,
            ),
            (
                "crit null",
                forge(
                    with("crit", serde_json::Value::Null, &header),
                    body.clone(),
                    key,
                ),
                JwtError::CriticalHeader,
            ),
            (
                "alg none",
                forge(with("alg", "none".into(), &header), body.clone(), key),
                JwtError::WrongAlgorithm,
            ),
            (
                "alg ES256",
                forge(with("alg", "ES256".into(), &header), body.clone(), key),
                JwtError::WrongAlgorithm,
            ),
            (
                "typ JWT",
                forge(with("typ", "JWT".into(), &header), body.clone(), key),
                JwtError::WrongType,
            ),
            (
                "no kid",
                forge(
                    serde_json::json!({"alg": "EdDSA", "typ": "at+jwt"}),
                    body.clone(),
                    key,
                ),
                JwtError::UnknownKey,
            ),
            (
                "nbf ahead",
                forge(header.clone(), with("nbf", (NOW + 31).into(), &body), key),
                JwtError::NotYetValid,
            ),
            (
                "nbf text",
                forge(header.clone(), with("nbf", "soon".into(), &body), key),
                JwtError::Malformed,
            ),
            (
                "iat ahead",
                forge(header.clone(), with("iat", (NOW + 31).into(), &body), key),
                JwtError::Malformed,
            ),
            (
                "no exp",
                forge(
                    header.clone(),
                    {
                        let mut b = body.clone();
                        b.as_object_mut().unwrap().remove("exp");
                        b
                    },
                    key,
                ),
                JwtError::Malformed,
            ),
            ("two parts", "a.b".to_string(), JwtError::Malformed),
            (
                "four parts",
                format!("{}.x", sign(key, &claims())),
                JwtError::Malformed,
            ),
            (
                "padded",
                format!("{}=", sign(key, &claims())),
                JwtError::Malformed,
            ),
        ];
        for (what, token, error) in cases {
            assert_eq!(verify(&token, &ring, &expect(NOW)), Err(error), "{what}");
        }
        // nbf within the leeway passes; a bad signature never does, and is not remembered.
        let within = forge(header.clone(), with("nbf", (NOW + 30).into(), &body), key);
        assert!(verify(&within, &ring, &expect(NOW)).is_ok());
        let (other, _) = new_ring(SigningAlgorithm::EdDSA);
        let mut forged = forge(header, body, &other.signing);
        assert_eq!(
            verify(&forged, &ring, &expect(NOW)),
            Err(JwtError::BadSignature)
        );
        assert_eq!(
            verify(&forged, &ring, &expect(NOW)),
            Err(JwtError::BadSignature)
        );
        forged.truncate(forged.len() - 4);
        assert!(verify(&forged, &ring, &expect(NOW)).is_err());
    }
}
