//! What the caller presented, parsed from the `Authorization` header: no store, no
//! crypto, no judgement beyond syntax. Secrets are redacted from `Debug`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// A credential as presented.
pub enum Presented {
    /// `Authorization: ApiKey base64(id:key)` (Elasticsearch's format).
    ApiKey { id: String, secret: String },
    /// `Authorization: Basic base64(client_id:client_secret)`.
    Basic { id: String, secret: String },
    /// `Authorization: Bearer <token>`: a JWT, a refresh token or a service token;
    /// which one is for the token service to tell. `Authorization: DPoP <token>`
    /// (RFC 9449 §7.1) too: [`is_dpop_scheme`] tells them apart.
    Bearer(String),
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ApiKey { id, .. } => write!(f, "ApiKey({id}, [redacted])"),
            Self::Basic { id, .. } => write!(f, "Basic({id}, [redacted])"),
            Self::Bearer(_) => write!(f, "Bearer([redacted])"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no credentials were presented")]
    Missing,
    #[error("unsupported authorization scheme")]
    UnsupportedScheme,
    #[error("the credential is not valid base64")]
    BadBase64,
    #[error("the credential is not of the form id:secret")]
    NotAPair,
    #[error("the authorization header is not valid")]
    Malformed,
}

impl CredentialError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing_credentials",
            Self::UnsupportedScheme => "unsupported_scheme",
            Self::BadBase64 | Self::NotAPair | Self::Malformed => "malformed_credentials",
        }
    }
}

/// The longest `Authorization` value looked at.
const MAX_LEN: usize = 8 * 1024;

/// Whether an `Authorization` value uses the `DPoP` scheme (RFC 9449 §7.1).
pub fn is_dpop_scheme(value: &[u8]) -> bool {
    value.len() > 5 && value[..5].eq_ignore_ascii_case(b"dpop ")
}

/// Parses one `Authorization` header value.
pub fn from_authorization(value: &[u8]) -> Result<Presented, CredentialError> {
    if value.len() > MAX_LEN {
        return Err(CredentialError::Malformed);
    }
    let value = std::str::from_utf8(value)
        .map_err(|_| CredentialError::Malformed)?
        .trim();
    let (scheme, rest) = value.split_once(' ').ok_or(if value.is_empty() {
        CredentialError::Missing
    } else {
        CredentialError::Malformed
    })?;
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(CredentialError::Malformed);
    }
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("dpop") {
        if !rest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CredentialError::Malformed);
        }
        return Ok(Presented::Bearer(rest.to_string()));
    }
    let is_api_key = scheme.eq_ignore_ascii_case("apikey");
    if !is_api_key && !scheme.eq_ignore_ascii_case("basic") {
        return Err(CredentialError::UnsupportedScheme);
    }
    let decoded = STANDARD
        .decode(rest)
        .map_err(|_| CredentialError::BadBase64)?;
    let decoded = String::from_utf8(decoded).map_err(|_| CredentialError::BadBase64)?;
    let (id, secret) = decoded.split_once(':').ok_or(CredentialError::NotAPair)?;
    if id.is_empty() || secret.is_empty() {
        return Err(CredentialError::NotAPair);
    }
    let (id, secret) = (id.to_string(), secret.to_string());
    Ok(if is_api_key {
        Presented::ApiKey { id, secret }
    } else {
        Presented::Basic { id, secret }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        let encoded = STANDARD.encode("id1:secret");
        assert!(
            matches!(from_authorization(format!("ApiKey {encoded}").as_bytes()),
            Ok(Presented::ApiKey { id, secret }) if id == "id1" && secret == "secret")
        );
        assert!(matches!(
            from_authorization(format!("basic {encoded}").as_bytes()),
            Ok(Presented::Basic { .. })
        ));
        assert!(
            matches!(from_authorization(b"Bearer abc.def.ghi"), Ok(Presented::Bearer(t)) if t == "abc.def.ghi")
        );
        assert!(
            matches!(from_authorization(b"DPoP abc.def.ghi"), Ok(Presented::Bearer(t)) if t == "abc.def.ghi")
        );
        assert!(is_dpop_scheme(b"dpop abc.def.ghi"));
        assert!(!is_dpop_scheme(b"Bearer abc.def.ghi"));
        assert!(!is_dpop_scheme(b"DPoP"));
    }

    #[test]
    fn refuses_malformed_values() {
        assert_eq!(
            from_authorization(b"").unwrap_err(),
            CredentialError::Missing
        );
        assert_eq!(
            from_authorization(b"ApiKey !!!").unwrap_err(),
            CredentialError::BadBase64
        );
        let no_colon = STANDARD.encode("nocolon");
        assert_eq!(
            from_authorization(format!("ApiKey {no_colon}").as_bytes()).unwrap_err(),
            CredentialError::NotAPair
        );
        assert_eq!(
            from_authorization(b"Digest x").unwrap_err(),
            CredentialError::UnsupportedScheme
        );
        assert_eq!(
            from_authorization(b"Bearer").unwrap_err(),
            CredentialError::Malformed
        );
        assert_eq!(
            from_authorization(b"Bearer \xff\xfe").unwrap_err(),
            CredentialError::Malformed
        );
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let shown = format!(
            "{:?}",
            Presented::ApiKey {
                id: "i".into(),
                secret: "s3cr3t".into()
            }
        );
        assert!(!shown.contains("s3cr3t"));
    }
}
