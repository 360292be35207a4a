//! Grant-layer errors: the OAuth 2.0 error code (RFC 6749 §5.2) is decided here, once,
//! for every front door; each HTTP family only chooses how to render it.

use crate::api_keys::ApiKeyError;
use crate::credentials::CredentialError;
use crate::store::StoreError;
use crate::tokens::{Refusal, TokenError};

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The request is missing or has a malformed parameter or credential.
    #[error("{description}")]
    InvalidRequest {
        reason: &'static str,
        description: String,
    },
    /// Client (API key) authentication failed.
    #[error("{description}")]
    InvalidClient {
        reason: &'static str,
        description: String,
    },
    /// The grant (refresh token, access token) is invalid, expired, revoked or reused.
    #[error("{description}")]
    InvalidGrant {
        reason: &'static str,
        description: String,
    },
    /// The store could not be reached; the client may retry.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// A failure on our side that is not the client's.
    #[error("server error: {0}")]
    Internal(String),
}

impl GrantError {
    /// The RFC 6749 §5.2 `error` value.
    pub fn oauth_code(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::InvalidClient { .. } => "invalid_client",
            Self::InvalidGrant { .. } => "invalid_grant",
            Self::Unavailable(_) => "temporarily_unavailable",
            Self::Internal(_) => "server_error",
        }
    }

    /// A short label for the authentication-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidRequest { reason, .. }
            | Self::InvalidClient { reason, .. }
            | Self::InvalidGrant { reason, .. } => reason,
            Self::Unavailable(_) => "store_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    pub fn invalid_grant(reason: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidGrant {
            reason,
            description: description.into(),
        }
    }
}

impl From<CredentialError> for GrantError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Missing | CredentialError::UnsupportedScheme => Self::InvalidClient {
                reason: e.reason(),
                description: e.to_string(),
            },
            _ => Self::InvalidRequest {
                reason: e.reason(),
                description: e.to_string(),
            },
        }
    }
}

impl From<StoreError> for GrantError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<ApiKeyError> for GrantError {
    fn from(e: ApiKeyError) -> Self {
        match e {
            ApiKeyError::Store(s) => s.into(),
            // One message for every failure, so the answer does not tell which ids exist.
            other => Self::InvalidClient {
                reason: other.reason(),
                description: "invalid API key".into(),
            },
        }
    }
}

impl From<TokenError> for GrantError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Jwt(j) => Self::InvalidGrant {
                reason: j.reason(),
                description: j.to_string(),
            },
            TokenError::Refused(r @ Refusal::Unenrolled)
            | TokenError::Refused(r @ Refusal::UnknownAgent) => Self::InvalidGrant {
                reason: r.reason(),
                description: "the token is not valid".into(),
            },
            TokenError::Refused(r) => Self::InvalidGrant {
                reason: r.reason(),
                description: r.to_string(),
            },
            TokenError::Store(s) => s.into(),
            TokenError::Keys(k) => Self::Internal(k.to_string()),
        }
    }
}
