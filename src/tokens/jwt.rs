//! The access-token format: a JWS-signed JWT with header `typ: at+jwt` and `kid`, and
//! the claims of SPEC §3. Signing uses the key ring's parsed key; verification uses
//! `jsonwebtoken` with exactly one allowed algorithm, the one of the key named by `kid`
//! (so `none` and HMAC-with-a-public-key confusions cannot pass).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Validation};
use serde::{Deserialize, Serialize};

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
            Self::WrongIssuer => "jwt_wrong_issuer",
            Self::WrongAudience => "jwt_wrong_audience",
        }
    }
}

/// Signs `claims` with `key` into a compact JWS.
pub fn sign(key: &SigningKey, claims: &AccessClaims) -> String {
    let header = JoseHeader {
        alg: key.algorithm.as_str(),
        typ: ACCESS_TOKEN_TYP,
        kid: &key.kid,
    };
    // Serializing these plain structs cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = String::with_capacity(64 + header.len() * 4 / 3 + claims.len() * 4 / 3 + 360);
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
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

/// Checks the signature (known `kid`, its algorithm only), `typ`, `iss`, `aud` and `exp`.
/// Does not consult the store: that is the token service's second step.
pub fn verify(
    token: &str,
    ring: &KeyRing,
    expect: &Expectations<'_>,
) -> Result<AccessClaims, JwtError> {
    let header = decode_header(token).map_err(|_| JwtError::Malformed)?;
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(JwtError::WrongType);
    }
    let kid = header.kid.as_deref().ok_or(JwtError::UnknownKey)?;
    let key = ring.verifying_key(kid).ok_or(JwtError::UnknownKey)?;
    if header.alg != key.jwt_algorithm() {
        return Err(JwtError::WrongAlgorithm);
    }
    let mut validation = Validation::new(key.jwt_algorithm());
    // Time is checked below against our clock, not jsonwebtoken's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    validation.set_issuer(&[expect.issuer]);
    match expect.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    let data =
        decode::<AccessClaims>(token, &key.decoding_key, &validation).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature => JwtError::BadSignature,
                ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
                ErrorKind::InvalidAudience => JwtError::WrongAudience,
                ErrorKind::InvalidAlgorithm => JwtError::WrongAlgorithm,
                _ => JwtError::Malformed,
            }
        })?;
    let claims = data.claims;
    if claims.exp + expect.leeway <= expect.now {
        return Err(JwtError::Expired);
    }
    if claims.iat > expect.now + expect.leeway {
        return Err(JwtError::Malformed);
    }
    Ok(claims)
}

/// True when `token` has the shape of a compact JWS (three dot-separated parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}
