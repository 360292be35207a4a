//! External JWTs admitted by the Vault-compatible JWT auth method ([`crate::vault`]):
//! the login grant of `POST /v1/auth/jwt/login`, and [`admit`], which lets token
//! exchange at `/oauth/token` trade the same JWTs through the same checks.
//!
//! What the subject gets (decided by the issuance policy,
//! `super::policy::IssuancePolicy::issue_external`): an access token of this server, `sub` = the
//! role's `user_claim` value, `client_id` = `auth/jwt/role/<role>` (also after a token
//! exchange by an authenticated client: the token is the subject's, obtained through
//! the role), `scope` = the role's policies,
//! `groups` = the `groups_claim` values, and the private claims `vault_role` and, for a
//! use-limited role, `max_uses`. No refresh token: the subject logs in again with a
//! fresh external JWT. The token is valid by its signature and claims (it is neither an
//! agent's nor a client's, so no store record backs it), except that a use-limited one
//! has a use counter in the store (see `tokens::TokenService::use_external`).
//!
//! External subjects share the `sub` namespace with agents (a JWT's `user_claim` may
//! hold any string): fleetauth never takes them for agents (it checks the `vault_role`
//! claim first everywhere), and resource servers tell them apart by the same claim, by
//! the `client_id`, or by the `vault_role` member of introspection.

use std::net::IpAddr;

use super::policy::IssuancePolicy;
use super::GrantError;
use crate::store::StoreError;
use crate::tokens::IssuedAccess;
use crate::vault::{Admitted, JwtAuth, LoginAttempt, NoRole, VaultError};

/// The `client_id` of tokens issued by a login through `role`.
pub fn role_client_id(role: &str) -> String {
    format!("auth/jwt/role/{role}")
}

/// Why a login failed: the auth method refused it (Vault's error, with Vault's
/// statuses), or issuing the token failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Refused(#[from] VaultError),
    #[error(transparent)]
    Grant(#[from] GrantError),
}

impl LoginError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Refused(e) => e.reason(),
            Self::Grant(e) => e.reason(),
        }
    }

    /// The metrics' reason of this refusal.
    pub fn failure_reason(&self) -> crate::telemetry::metrics::FailureReason {
        use crate::telemetry::metrics::FailureReason;
        match self {
            Self::Refused(VaultError::Invalid { .. } | VaultError::NoRole { .. }) => {
                FailureReason::InvalidGrant
            }
            Self::Refused(VaultError::PermissionDenied) => FailureReason::Forbidden,
            Self::Refused(VaultError::KeysUnavailable(_)) => FailureReason::Unavailable,
            Self::Refused(VaultError::Store(StoreError::Unavailable(_))) => {
                FailureReason::Unavailable
            }
            Self::Refused(VaultError::Store(_)) => FailureReason::Internal,
            Self::Grant(e) => e.failure_reason(),
        }
    }
}

/// A successful login: the token and whom it was issued to.
pub struct LoggedIn {
    pub access: IssuedAccess,
    pub admitted: Admitted,
}

/// `POST /v1/auth/jwt/login`.
pub(super) async fn login(
    auth: &JwtAuth,
    policy: &IssuancePolicy<'_>,
    attempt: LoginAttempt<'_>,
) -> Result<LoggedIn, LoginError> {
    let admitted = auth.login(attempt).await?;
    let access = policy
        .issue_external(&admitted, admitted.scope().as_deref())
        .await?;
    tracing::debug!(role = %admitted.role, "jwt auth login");
    Ok(LoggedIn { access, admitted })
}

/// Token exchange's check of a subject token that is a JWT but not one of ours: the
/// auth method's role named by the `audience` (else its `default_role`) admits it, or
/// refuses it. When the auth method is not configured it knows no token (`Ok(None)`).
pub(super) async fn admit(
    auth: &JwtAuth,
    token: &str,
    role: Option<&str>,
    remote_addr: Option<IpAddr>,
) -> Result<Option<Admitted>, GrantError> {
    let attempt = LoginAttempt {
        role,
        jwt: token,
        remote_addr,
    };
    match auth.login(attempt).await {
        Ok(admitted) => Ok(Some(admitted)),
        Err(VaultError::NoRole {
            why: NoRole::NotConfigured,
            ..
        }) => Ok(None),
        Err(e) => Err(exchange_error(e)),
    }
}

/// The auth method's refusals in RFC 8693 terms: a role the `audience` does not name is
/// `invalid_target`; a refused JWT (or caller address) makes the subject token invalid
/// (`invalid_grant`, which token exchange reports as `invalid_request`).
fn exchange_error(error: VaultError) -> GrantError {
    match error {
        VaultError::NoRole {
            why: why @ (NoRole::Unknown | NoRole::InvalidName),
            message,
        } => GrantError::InvalidTarget {
            reason: why.reason(),
            description: format!("the audience names no JWT auth role: {message}"),
        },
        VaultError::NoRole {
            why: NoRole::Missing,
            ..
        } => GrantError::invalid_request(
            NoRole::Missing.reason(),
            "the subject_token is an external JWT: name its JWT auth role in the audience parameter (or configure default_role)",
        ),
        VaultError::Invalid { reason, message } => GrantError::invalid_grant(reason, message),
        // Unreachable from `admit` (an unconfigured auth method knows no token), kept
        // total: the subject token cannot be checked.
        e @ VaultError::NoRole {
            why: NoRole::NotConfigured,
            ..
        } => GrantError::invalid_grant(e.reason(), e.to_string()),
        VaultError::PermissionDenied => GrantError::invalid_grant(
            "permission_denied",
            "the role does not accept requests from this address (bound_cidrs)",
        ),
        VaultError::KeysUnavailable(why) => GrantError::Unavailable(why),
        VaultError::Store(e) => e.into(),
    }
}
