//! Token introspection (RFC 7662) and revocation (RFC 7009). Both require the caller to
//! authenticate as a client (any valid API key).
//!
//! Introspection is a *look*, never a use: it promotes no pending pair and counts no
//! reuse. Any authenticated client may introspect any token (a resource server checks
//! tokens issued to others). An access token is active when it would be accepted by a
//! protected resource; a refresh token (RFC 7662 allows them) when the token endpoint
//! would accept it now (its subject's current or pending pair, not expired). Everything
//! else is `{"active": false}`, without saying why.
//!
//! Revocation acts only on the caller's own tokens (those of its agent, or its own;
//! another client's live token is `unauthorized_client`, as ORY fosite answers): a
//! refresh token revokes its family, every token of its subject (RFC 7009 §2.1); an
//! access token revokes its pair at once. A token that is not valid is answered with
//! success and nothing changes (RFC 7009 §2.2). A non-agent client's stateless access
//! token cannot be revoked alone (`unsupported_token_type`); invalidating the client's
//! API key stops all of them.

use serde::Serialize;

use super::access::{Check, VerifiedAccess};
use super::policy::IssuancePolicy;
use super::registrar::{ApiKeyRegistrar, Client};
use super::request::TokenRequest;
use super::GrantError;
use crate::tokens::kind::TokenKind;
use crate::tokens::{jwt, refresh, Confirmation, TokenError, TokenService};

/// An RFC 7662 §2.2 introspection response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `Bearer` for access tokens, `DPoP` for DPoP-bound ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `access_token` or `refresh_token` (an extension, as ORY Hydra answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_use: Option<&'static str>,
    /// The Vault JWT auth role that admitted the subject, for a token obtained with an
    /// external JWT (an extension: such a subject is not an agent, whatever its `sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_role: Option<String>,
    /// RFC 9449 §6.2: the DPoP key a bound token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

impl Introspection {
    pub fn inactive() -> Self {
        Self::default()
    }
}

/// The caller of introspection or revocation, who must authenticate.
async fn caller(
    registrar: &ApiKeyRegistrar<'_>,
    request: &TokenRequest,
) -> Result<Client, GrantError> {
    let Some(client) = request.client()? else {
        return Err(GrantError::invalid_client(
            "missing_credentials",
            "client authentication is required (HTTP Basic, ApiKey, or client_id and client_secret)",
        ));
    };
    registrar.authenticate(&client.id, &client.secret).await
}

pub(super) async fn introspect(
    registrar: &ApiKeyRegistrar<'_>,
    policy: &IssuancePolicy<'_>,
    tokens: &TokenService,
    request: &TokenRequest,
) -> Result<Introspection, GrantError> {
    caller(registrar, request).await?;
    let token = request.params.require("token")?;
    // `token_type_hint` is only a hint (RFC 7662 §2.1): every kind is looked at.
    if let Some(parsed) = refresh::parse(token) {
        return Ok(match tokens.inspect_refresh(&parsed).await? {
            Some(exp) => Introspection {
                active: true,
                scope: parsed.scope,
                client_id: Some(parsed.client_id),
                exp: Some(exp),
                sub: Some(parsed.agent_id),
                iss: Some(tokens.issuer().to_string()),
                token_use: Some("refresh_token"),
                cnf: parsed.jkt.map(|jkt| Confirmation { jkt }),
                ..Introspection::default()
            },
            None => Introspection::inactive(),
        });
    }
    match policy.access().validate(token, Check::Look).await {
        Ok(VerifiedAccess { claims, .. }) => Ok(Introspection {
            active: true,
            scope: claims.scope,
            client_id: Some(claims.client_id),
            token_type: Some(crate::tokens::token_type(claims.cnf.is_some())),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            sub: Some(claims.sub),
            aud: claims.aud,
            iss: Some(claims.iss),
            jti: Some(claims.jti),
            token_use: Some("access_token"),
            vault_role: claims.vault_role,
            cnf: claims.cnf,
        }),
        Err(e) if e.is_server_error() => Err(e),
        Err(_) => Ok(Introspection::inactive()),
    }
}

fn not_yours() -> GrantError {
    GrantError::unauthorized_client(
        "token_of_another_client",
        "the token was not issued to this client",
    )
}

pub(super) async fn revoke(
    registrar: &ApiKeyRegistrar<'_>,
    policy: &IssuancePolicy<'_>,
    tokens: &TokenService,
    request: &TokenRequest,
) -> Result<(), GrantError> {
    let caller = caller(registrar, request).await?;
    let token = request.params.require("token")?;
    // `token_type_hint` is only a hint (RFC 7009 §2.1): every kind is looked at.
    if let Some(parsed) = refresh::parse(token) {
        // A token of the token API (a family) is no client's: revoked there only.
        let family = policy.client_state().of_refresh(&parsed) == TokenKind::Family;
        if family || !caller.owns(&parsed.agent_id, &parsed.client_id) {
            // Refused only if it is a live token; an invalid one is answered 200.
            return match tokens.inspect_refresh(&parsed).await? {
                Some(_) => Err(not_yours()),
                None => Ok(()),
            };
        }
        tokens.revoke_refresh(&parsed).await?;
        return Ok(());
    }
    if !jwt::looks_like_jwt(token) {
        return Ok(());
    }
    let access = policy.access();
    let verified = match access.verify(token).await {
        Ok(verified) => verified,
        // Not a valid token of ours (or expired): nothing to revoke.
        Err(TokenError::Jwt(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // Refused only if it is a live token; an invalid one is answered 200.
    let refuse_if_live = |refusal: GrantError| async {
        match access.confirm(&verified, Check::Look).await {
            Ok(()) => Err(refusal),
            Err(e) if e.is_server_error() => Err(e),
            Err(_) => Ok(()),
        }
    };
    let claims = &verified.claims;
    match verified.kind {
        // Nobody's to revoke (an external subject is not a client); valid or not, it
        // is not revocable alone.
        TokenKind::External => refuse_if_live(GrantError::UnsupportedTokenType {
            reason: "external_subject_token",
            description: "a token of the JWT auth method is checked by its signature (and its use counter) and cannot be revoked alone; it expires with its exp".into(),
        })
        .await,
        // A token of the token API (a family) is no client's: revoked there only.
        TokenKind::Family => refuse_if_live(not_yours()).await,
        _ if !caller.owns(&claims.sub, &claims.client_id) => refuse_if_live(not_yours()).await,
        TokenKind::ClientToken { stored: false } => Err(stateless_access_token()),
        _ if tokens.settings().stateless => Err(stateless_access_token()),
        TokenKind::AgentPair | TokenKind::ClientToken { stored: true } => {
            tokens.revoke_access(claims).await?;
            Ok(())
        }
    }
}

fn stateless_access_token() -> GrantError {
    GrantError::UnsupportedTokenType {
        reason: "stateless_access_token",
        description: "this access token is checked by its signature only and cannot be revoked alone; it expires with its exp (invalidate the API key to stop all of the client's tokens)".into(),
    }
}
