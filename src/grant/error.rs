//! Grant-layer errors: the OAuth 2.0 error code (RFC 6749 §5.2, plus RFC 8693's
//! `invalid_target` and RFC 7009's `unsupported_token_type`) is decided here, once, for
//! every front door; each HTTP family only chooses how to render it.

use crate::api_keys::ApiKeyError;
use crate::credentials::CredentialError;
use crate::secrets::{SecretError, Throttled};
use crate::store::StoreError;
use crate::telemetry::metrics::FailureReason;
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
    /// Every attempt to apply the grant was overtaken by another change of the same
    /// agent or token (the store's `Contended`): the credential was being used
    /// concurrently, and this use lost. `invalid_grant` in OAuth terms; Elasticsearch's
    /// conflict at the token API.
    #[error("the grant lost a race with concurrent uses of the same credential ({0})")]
    LostRace(String),
    /// The authenticated client may not use this grant type (or act on this token).
    #[error("{description}")]
    UnauthorizedClient {
        reason: &'static str,
        description: String,
    },
    /// The grant type is not one this server supports.
    #[error("{description}")]
    UnsupportedGrantType {
        reason: &'static str,
        description: String,
    },
    /// The requested scope is malformed, unknown or exceeds what may be granted.
    #[error("{description}")]
    InvalidScope {
        reason: &'static str,
        description: String,
    },
    /// RFC 8693 §2.2.2: a token for the requested `resource`/`audience` cannot be issued.
    #[error("{description}")]
    InvalidTarget {
        reason: &'static str,
        description: String,
    },
    /// RFC 7009 §2.2.1: this kind of token cannot be revoked here.
    #[error("{description}")]
    UnsupportedTokenType {
        reason: &'static str,
        description: String,
    },
    /// The credential was not checked now: the secret verifier is busy, or too many
    /// checks failed for the caller's address or this credential (HTTP 429 with
    /// `Retry-After`).
    #[error("{0}")]
    Throttled(Throttled),
    /// RFC 9449 §5 and §7.1: the DPoP proof is missing, malformed, replayed or does not
    /// prove the key the tokens are bound to.
    #[error("{description}")]
    InvalidDpopProof {
        reason: &'static str,
        description: String,
    },
    /// RFC 9449 §8: the proof must carry this server nonce (sent as `DPoP-Nonce`).
    #[error("a DPoP proof with the server's nonce is required")]
    UseDpopNonce { nonce: String },
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
            Self::InvalidGrant { .. } | Self::LostRace(_) => "invalid_grant",
            Self::UnauthorizedClient { .. } => "unauthorized_client",
            Self::UnsupportedGrantType { .. } => "unsupported_grant_type",
            Self::InvalidScope { .. } => "invalid_scope",
            Self::InvalidTarget { .. } => "invalid_target",
            Self::UnsupportedTokenType { .. } => "unsupported_token_type",
            Self::InvalidDpopProof { .. } => "invalid_dpop_proof",
            Self::UseDpopNonce { .. } => "use_dpop_nonce",
            Self::Throttled(_) | Self::Unavailable(_) => "temporarily_unavailable",
            Self::Internal(_) => "server_error",
        }
    }

    /// A short label for the authentication-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidRequest { reason, .. }
            | Self::InvalidClient { reason, .. }
            | Self::InvalidGrant { reason, .. }
            | Self::UnauthorizedClient { reason, .. }
            | Self::UnsupportedGrantType { reason, .. }
            | Self::InvalidScope { reason, .. }
            | Self::InvalidTarget { reason, .. }
            | Self::UnsupportedTokenType { reason, .. }
            | Self::InvalidDpopProof { reason, .. } => reason,
            Self::LostRace(_) => "lost_race",
            Self::UseDpopNonce { .. } => "dpop_nonce_required",
            Self::Throttled(t) => t.reason.as_str(),
            Self::Unavailable(_) => "store_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The metrics' reason of this refusal.
    pub fn failure_reason(&self) -> FailureReason {
        match self {
            Self::InvalidRequest { .. } => FailureReason::InvalidRequest,
            Self::InvalidClient { .. } => FailureReason::InvalidClient,
            Self::InvalidGrant { .. } | Self::LostRace(_) => FailureReason::InvalidGrant,
            Self::UnauthorizedClient { .. } => FailureReason::UnauthorizedClient,
            Self::UnsupportedGrantType { .. } => FailureReason::UnsupportedGrantType,
            Self::InvalidScope { .. } => FailureReason::InvalidScope,
            Self::InvalidTarget { .. } => FailureReason::InvalidTarget,
            Self::UnsupportedTokenType { .. } => FailureReason::UnsupportedTokenType,
            Self::InvalidDpopProof { .. } => FailureReason::InvalidDpopProof,
            Self::UseDpopNonce { .. } => FailureReason::UseDpopNonce,
            Self::Throttled(_) => FailureReason::Throttled,
            Self::Unavailable(_) => FailureReason::Unavailable,
            Self::Internal(_) => FailureReason::Internal,
        }
    }

    pub fn invalid_grant(reason: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidGrant {
            reason,
            description: description.into(),
        }
    }

    pub fn invalid_request(reason: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidRequest {
            reason,
            description: description.into(),
        }
    }

    pub fn invalid_dpop_proof(reason: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidDpopProof {
            reason,
            description: description.into(),
        }
    }

    /// The nonce to send as `DPoP-Nonce` with this error, if it asks for one.
    pub fn dpop_nonce(&self) -> Option<&str> {
        match self {
            Self::UseDpopNonce { nonce } => Some(nonce),
            _ => None,
        }
    }

    /// Whether the error is about the request's DPoP proof (answered with a `DPoP`
    /// challenge at protected resources, RFC 9449 §7.1).
    pub fn is_dpop(&self) -> bool {
        matches!(
            self,
            Self::InvalidDpopProof { .. } | Self::UseDpopNonce { .. }
        )
    }

    pub fn invalid_client(reason: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidClient {
            reason,
            description: description.into(),
        }
    }

    pub fn invalid_scope(reason: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidScope {
            reason,
            description: description.into(),
        }
    }

    pub fn unauthorized_client(reason: &'static str, description: impl Into<String>) -> Self {
        Self::UnauthorizedClient {
            reason,
            description: description.into(),
        }
    }

    /// True for failures on our side (the answer is a 5xx), false for the client's.
    pub fn is_server_error(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Internal(_))
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
            // Every attempt was overtaken by another change of the same agent or token:
            // the credential was being used concurrently, and this use lost.
            StoreError::Contended(m) => Self::LostRace(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<SecretError> for GrantError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Throttled(t) => Self::Throttled(t),
            SecretError::Hashing(m) => Self::Internal(m),
        }
    }
}

impl From<ApiKeyError> for GrantError {
    fn from(e: ApiKeyError) -> Self {
        match e {
            ApiKeyError::Store(s) => s.into(),
            ApiKeyError::Secret(s) => s.into(),
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
            TokenError::UsesExhausted => Self::InvalidGrant {
                reason: "uses_exhausted",
                description: e.to_string(),
            },
            TokenError::Store(s) => s.into(),
            TokenError::Keys(k) => Self::Internal(k.to_string()),
        }
    }
}
