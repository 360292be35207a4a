//! The token-exchange grant (RFC 8693): a `subject_token` buys new tokens for its
//! subject. The subject token is one of our own access tokens, or an external JWT
//! admitted by the Vault-compatible JWT auth method (`subject_token_type`
//! `urn:ietf:params:oauth:token-type:access_token` or `...:jwt`). Trading one of ours
//! follows the rotation rules of SPEC §3 (it must be the current or pending pair's, and
//! a pending pair is promoted), exactly as `POST /api/fleet/authenticate` with a JWT.
//! Trading an external JWT is a login (`POST /v1/auth/jwt/login`) through the same
//! validation: the role is named by the `audience` parameter, else the auth method's
//! `default_role`; the caller's address is checked against the role's `bound_cidrs`.
//!
//! A subject token is tried as one of our access tokens first, then (when the JWT auth
//! method is wired in) as an external JWT (`super::external_jwt::admit`).
//!
//! Errors follow RFC 8693 §2.2.2: an invalid or unacceptable `subject_token` is
//! `invalid_request` (not `invalid_grant`); so are an `actor_token` (delegation is not
//! supported) and a `requested_token_type` we cannot issue; a `resource`, an
//! `audience` we cannot issue for (our own token) or that names no JWT auth role (an
//! external JWT) is `invalid_target`. Client authentication is optional (§2.1), but
//! presented credentials must be valid.

use super::access::VerifiedAccess;
use super::external_jwt;
use super::policy::{IssuancePolicy, Issued, Traded};
use super::registrar::ApiKeyRegistrar;
use super::request::{parse_scope, scope_text, TokenRequest};
use super::GrantError;
use crate::telemetry::metrics::Credential;
use crate::tokens::{jwt, AccessClaims, JwtError, TokenError, TokenService};
use crate::vault::{Admitted, JwtAuth};

/// The grant type this module answers.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3 token type identifiers.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A subject token, recognised.
enum SubjectToken {
    /// One of our access tokens; signature and claims are verified. Whether it is still
    /// its subject's current or pending token is decided when it is traded, atomically.
    AccessToken(AccessClaims),
    /// An external JWT, admitted by a role of the Vault JWT auth method.
    External(Admitted),
}

/// One of our access tokens, verified; `Ok(None)` for a token that is not ours (another
/// issuer, key or type), which may be an external JWT.
async fn own_access_token(
    tokens: &TokenService,
    token: &str,
) -> Result<Option<AccessClaims>, GrantError> {
    if !jwt::looks_like_jwt(token) {
        return Ok(None);
    }
    match tokens.verify_access(token).await {
        Ok(claims) => Ok(Some(claims)),
        Err(TokenError::Jwt(
            JwtError::UnknownKey
            | JwtError::WrongIssuer
            | JwtError::WrongType
            | JwtError::Malformed,
        )) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Token exchange's answer: the tokens and the type of the issued token.
pub struct Exchanged {
    pub issued: Issued,
    pub issued_token_type: &'static str,
    /// What was traded (a metrics label).
    pub credential: Credential,
}

pub(super) async fn grant(
    registrar: &ApiKeyRegistrar<'_>,
    policy: &IssuancePolicy<'_>,
    jwt_auth: Option<&JwtAuth>,
    audience: Option<&str>,
    request: &TokenRequest,
) -> Result<Exchanged, GrantError> {
    if let Some(client) = request.client()? {
        registrar.authenticate(&client.id, &client.secret).await?;
    }
    let params = &request.params;
    if params.get("actor_token").is_some() || params.get("actor_token_type").is_some() {
        return Err(GrantError::invalid_request(
            "actor_token",
            "delegation is not supported: actor_token must not be sent",
        ));
    }
    let issued_token_type = match params.get("requested_token_type") {
        None | Some(ACCESS_TOKEN_TYPE) => ACCESS_TOKEN_TYPE,
        Some(JWT_TOKEN_TYPE) => JWT_TOKEN_TYPE,
        Some(other) => {
            return Err(GrantError::invalid_request(
                "requested_token_type",
                format!("cannot issue a token of type {other:?}; this server issues {ACCESS_TOKEN_TYPE} (a JWT)"),
            ))
        }
    };
    if params.get("resource").is_some() {
        return Err(GrantError::InvalidTarget {
            reason: "resource",
            description: "tokens for other resources cannot be issued here".into(),
        });
    }
    let requested_audience = params.get("audience");
    let token = params.require("subject_token")?;
    let token_type = params.require("subject_token_type")?;
    if !matches!(token_type, ACCESS_TOKEN_TYPE | JWT_TOKEN_TYPE) {
        return Err(GrantError::invalid_request(
            "subject_token_type",
            format!("subject_token_type must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}"),
        ));
    }
    let requested_scope = request.scope()?;

    let own = own_access_token(policy.tokens(), token)
        .await
        .map_err(subject_token_error)?;
    let subject = match (own, jwt_auth) {
        (Some(claims), _) => Some(SubjectToken::AccessToken(claims)),
        (None, Some(auth)) if jwt::looks_like_jwt(token) => {
            external_jwt::admit(auth, token, requested_audience, request.remote_addr)
                .await
                .map_err(subject_token_error)?
                .map(SubjectToken::External)
        }
        (None, _) => None,
    };
    let Some(subject) = subject else {
        return Err(GrantError::invalid_request(
            "unknown_subject_token",
            "the subject_token is not valid",
        ));
    };
    let (issued, kind) = match subject {
        SubjectToken::AccessToken(claims) => {
            if let Some(requested) = requested_audience {
                if Some(requested) != audience {
                    return Err(GrantError::InvalidTarget {
                        reason: "audience",
                        description: format!(
                            "tokens for the audience {requested:?} cannot be issued here"
                        ),
                    });
                }
            }
            // RFC 8693 §2.1 / RFC 6749 §3.3: at most the subject token's scope.
            let held = claims.scope.as_deref().map(parse_scope).transpose()?;
            let scope = match (&requested_scope, &held) {
                (None, _) => claims.scope.clone(),
                (Some(requested), Some(held)) if requested <= held => scope_text(requested),
                (Some(requested), _) if scope_text(requested).is_none() => None,
                (Some(_), _) => {
                    return Err(GrantError::invalid_scope(
                        "scope_exceeds_subject_token",
                        "the requested scope exceeds the subject_token's scope",
                    ))
                }
            };
            let kind = policy.client_state().of_access(&claims);
            let issued = policy
                .exchange_access(
                    &VerifiedAccess { claims, kind },
                    scope.as_deref(),
                    Traded::AsHeld,
                )
                .await
                .map_err(subject_token_error)?;
            (issued, Credential::AccessToken)
        }
        SubjectToken::External(admitted) => {
            // At most the role's policies (the scope of a login's token).
            let held = admitted.scope();
            let scope = match &requested_scope {
                None => held,
                Some(requested) => {
                    let held_scope = held.as_deref().map(parse_scope).transpose()?;
                    match (scope_text(requested), held_scope) {
                        (None, _) => None,
                        (Some(text), Some(held)) if requested <= &held => Some(text),
                        _ => {
                            return Err(GrantError::invalid_scope(
                                "scope_exceeds_subject_token",
                                "the requested scope exceeds the role's policies",
                            ))
                        }
                    }
                }
            };
            let access = policy.issue_external(&admitted, scope.as_deref()).await?;
            let issued = Issued {
                access_token: access.access_token,
                expires_in: access.expires_in,
                refresh_token: None,
                scope,
                jti: access.jti,
                bound_key: access.bound_key,
            };
            (issued, Credential::ExternalJwt)
        }
    };
    Ok(Exchanged {
        issued,
        issued_token_type,
        credential: kind,
    })
}

/// RFC 8693 §2.2.2: a subject token that is invalid "for any reason" is
/// `invalid_request`; server-side failures stay what they are.
fn subject_token_error(error: GrantError) -> GrantError {
    match error {
        GrantError::InvalidGrant {
            reason,
            description,
        } => GrantError::InvalidRequest {
            reason,
            description: format!("the subject_token is not valid: {description}"),
        },
        GrantError::LostRace(m) => GrantError::InvalidRequest {
            reason: "lost_race",
            description: format!(
                "the subject_token is not valid: the grant lost a race with concurrent uses of the same credential ({m})"
            ),
        },
        other => other,
    }
}
