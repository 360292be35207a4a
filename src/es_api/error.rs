//! The error type of the Elasticsearch-compatible security APIs: Elasticsearch's error
//! `type` and `reason` are decided here ([`SecurityErrorKind`]); the HTTP status is the
//! HTTP layer's (`http::error::EsApiError`).

use crate::api_keys::ApiKeyError;
use crate::grant::GrantError;
use crate::identity::roles::RoleError;
use crate::identity::service_accounts::ServiceTokenError;
use crate::identity::users::UserError;
use crate::identity::{Action, Identity};
use crate::secrets::{SecretError, ThrottleReason, Throttled};
use crate::store::StoreError;
use crate::telemetry::metrics::FailureReason;
use crate::tokens::TokenError;

/// Elasticsearch's error types, as the security APIs use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityErrorKind {
    /// No or bad credentials (`security_exception`, 401).
    Unauthenticated,
    /// Authenticated but not allowed (`security_exception`, 403).
    Forbidden,
    /// The token API's `invalid_grant` (`security_exception`, 400).
    InvalidGrant,
    /// A request that fails validation (`action_request_validation_exception`).
    Validation,
    /// A body that cannot be read (`parse_exception`).
    Parse,
    /// A value that is not acceptable (`illegal_argument_exception`).
    IllegalArgument,
    /// `resource_not_found_exception`.
    NotFound,
    /// Creating what exists (`version_conflict_engine_exception`).
    Conflict,
    /// Not checked now: busy (`es_rejected_execution_exception`, 429, as Elasticsearch
    /// answers when its queues are full) or too many failed checks
    /// (`security_exception`, 429); the error carries the `Retry-After`.
    TooManyRequests(ThrottleReason),
    /// The store is unavailable; the client may retry.
    Unavailable,
    /// Our failure.
    Internal,
}

/// A refusal of a security API, with Elasticsearch's type and reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct SecurityError {
    pub kind: SecurityErrorKind,
    pub reason: String,
    /// For `InvalidGrant`: the `error_description` Elasticsearch sends in the header.
    pub description: Option<String>,
    /// For `TooManyRequests`: when to retry.
    pub retry_after: Option<std::time::Duration>,
}

impl SecurityError {
    pub(crate) fn new(kind: SecurityErrorKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            description: None,
            retry_after: None,
        }
    }

    /// A credential check refused for now (429 with `Retry-After`).
    pub fn throttled(t: Throttled) -> Self {
        Self {
            retry_after: Some(t.retry_after),
            ..Self::new(SecurityErrorKind::TooManyRequests(t.reason), t.to_string())
        }
    }

    pub fn unauthenticated(reason: impl Into<String>) -> Self {
        Self::new(SecurityErrorKind::Unauthenticated, reason)
    }

    pub fn parse(reason: impl Into<String>) -> Self {
        Self::new(SecurityErrorKind::Parse, reason)
    }

    pub fn validation(problems: &[String]) -> Self {
        let listed: String = problems
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}: {p};", i + 1))
            .collect();
        Self::new(
            SecurityErrorKind::Validation,
            format!("Validation Failed: {listed}"),
        )
    }

    pub fn illegal_argument(reason: impl Into<String>) -> Self {
        Self::new(SecurityErrorKind::IllegalArgument, reason)
    }

    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(SecurityErrorKind::NotFound, reason)
    }

    pub(crate) fn invalid_grant(description: impl Into<String>) -> Self {
        Self {
            kind: SecurityErrorKind::InvalidGrant,
            reason: "invalid_grant".into(),
            description: Some(description.into()),
            retry_after: None,
        }
    }

    pub(crate) fn forbidden(identity: &Identity, action: Action) -> Self {
        let who = match &identity.api_key {
            Some((id, _)) => format!("API key id [{id}] of user [{}]", identity.username),
            None => format!("user [{}]", identity.username),
        };
        Self::new(
            SecurityErrorKind::Forbidden,
            format!(
                "action [{}] is unauthorized for {who} with effective roles [{}], this action is granted by the cluster privileges [{}]",
                action.name(),
                identity.roles.join(","),
                action.granted_by().join(","),
            ),
        )
    }

    /// A short label for the authentication-failure metric.
    pub fn metric_reason(&self) -> &'static str {
        match self.kind {
            SecurityErrorKind::Unauthenticated => "bad_credentials",
            SecurityErrorKind::Forbidden => "forbidden",
            SecurityErrorKind::InvalidGrant => "invalid_grant",
            SecurityErrorKind::Validation
            | SecurityErrorKind::Parse
            | SecurityErrorKind::IllegalArgument => "invalid_request",
            SecurityErrorKind::NotFound => "not_found",
            SecurityErrorKind::Conflict => "conflict",
            SecurityErrorKind::TooManyRequests(reason) => reason.as_str(),
            SecurityErrorKind::Unavailable => "store_unavailable",
            SecurityErrorKind::Internal => "internal",
        }
    }

    /// The metrics' reason of this refusal.
    pub fn failure_reason(&self) -> FailureReason {
        match self.kind {
            SecurityErrorKind::Unauthenticated => FailureReason::InvalidClient,
            SecurityErrorKind::Forbidden => FailureReason::Forbidden,
            SecurityErrorKind::InvalidGrant => FailureReason::InvalidGrant,
            SecurityErrorKind::Validation
            | SecurityErrorKind::Parse
            | SecurityErrorKind::IllegalArgument => FailureReason::InvalidRequest,
            SecurityErrorKind::NotFound => FailureReason::NotFound,
            SecurityErrorKind::Conflict => FailureReason::Conflict,
            SecurityErrorKind::TooManyRequests(_) => FailureReason::Throttled,
            SecurityErrorKind::Unavailable => FailureReason::Unavailable,
            SecurityErrorKind::Internal => FailureReason::Internal,
        }
    }

    /// Elasticsearch's `type` of the error.
    pub fn es_type(&self) -> &'static str {
        match self.kind {
            SecurityErrorKind::Unauthenticated
            | SecurityErrorKind::Forbidden
            | SecurityErrorKind::InvalidGrant => "security_exception",
            SecurityErrorKind::Validation => "action_request_validation_exception",
            SecurityErrorKind::Parse => "parse_exception",
            SecurityErrorKind::IllegalArgument => "illegal_argument_exception",
            SecurityErrorKind::NotFound => "resource_not_found_exception",
            SecurityErrorKind::Conflict => "version_conflict_engine_exception",
            SecurityErrorKind::TooManyRequests(ThrottleReason::Busy) => {
                "es_rejected_execution_exception"
            }
            SecurityErrorKind::TooManyRequests(_) => "security_exception",
            SecurityErrorKind::Unavailable => "status_exception",
            SecurityErrorKind::Internal => "exception",
        }
    }
}

impl From<StoreError> for SecurityError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::new(SecurityErrorKind::Unavailable, m),
            // What Elasticsearch itself answers when concurrent writes of a document win.
            StoreError::Contended(m) => Self::new(SecurityErrorKind::Conflict, m),
            other => Self::new(SecurityErrorKind::Internal, other.to_string()),
        }
    }
}

impl From<TokenError> for SecurityError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Store(s) => s.into(),
            TokenError::Keys(k) => Self::new(SecurityErrorKind::Internal, k.to_string()),
            TokenError::Jwt(_) | TokenError::Refused(_) | TokenError::UsesExhausted => {
                Self::invalid_grant("could not refresh the requested token")
            }
        }
    }
}

impl From<SecretError> for SecurityError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Throttled(t) => Self::throttled(t),
            SecretError::Hashing(m) => Self::new(SecurityErrorKind::Internal, m),
        }
    }
}

impl From<ApiKeyError> for SecurityError {
    fn from(e: ApiKeyError) -> Self {
        match e {
            ApiKeyError::Store(s) => s.into(),
            ApiKeyError::Secret(s) => s.into(),
            _ => Self::unauthenticated("unable to authenticate with provided credentials"),
        }
    }
}

impl From<UserError> for SecurityError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Store(s) => s.into(),
            UserError::Secret(s) => s.into(),
            UserError::Invalid(m) => Self::new(SecurityErrorKind::Validation, m),
            UserError::Reserved(_) => Self::new(
                SecurityErrorKind::Validation,
                format!("Validation Failed: 1: {e};"),
            ),
            UserError::Unknown | UserError::WrongPassword | UserError::Disabled => {
                Self::unauthenticated("unable to authenticate user")
            }
        }
    }
}

impl From<RoleError> for SecurityError {
    fn from(e: RoleError) -> Self {
        match e {
            RoleError::Store(s) => s.into(),
            RoleError::Parse { .. } => Self::parse(e.to_string()),
            RoleError::UnknownPrivilege { .. } | RoleError::Reserved(_) => {
                Self::illegal_argument(e.to_string())
            }
            RoleError::InvalidName(m) => Self::new(SecurityErrorKind::Validation, m),
        }
    }
}

impl From<ServiceTokenError> for SecurityError {
    fn from(e: ServiceTokenError) -> Self {
        match e {
            ServiceTokenError::Store(s) => s.into(),
            ServiceTokenError::Secret(s) => s.into(),
            ServiceTokenError::UnknownAccount(_) => Self::illegal_argument(e.to_string()),
            ServiceTokenError::InvalidName(_) => Self::validation(&[e.to_string()]),
            ServiceTokenError::Exists(ref id) => Self::new(
                SecurityErrorKind::Conflict,
                format!("[{id}]: version conflict, document already exists (current version [1])"),
            ),
            ServiceTokenError::UnknownToken | ServiceTokenError::WrongSecret => {
                Self::unauthenticated("unable to authenticate with the provided service token")
            }
        }
    }
}

/// A grant's refusal at the token API: what Elasticsearch answers for a token it will
/// not issue or refresh; a lost race is its conflict.
impl From<GrantError> for SecurityError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::Throttled(t) => Self::throttled(t),
            GrantError::Unavailable(m) => Self::new(SecurityErrorKind::Unavailable, m),
            GrantError::LostRace(m) => Self::new(SecurityErrorKind::Conflict, m),
            e @ GrantError::Internal(_) => Self::new(SecurityErrorKind::Internal, e.to_string()),
            _ => Self::invalid_grant("could not refresh the requested token"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_are_listed_like_elasticsearch() {
        let e = SecurityError::validation(&["a".into(), "b".into()]);
        assert_eq!(e.reason, "Validation Failed: 1: a;2: b;");
        assert_eq!(e.es_type(), "action_request_validation_exception");
    }
}
