//! Access tokens presented back to us: verified once (signature, type, issuer, audience,
//! expiry), their [`TokenKind`] decided once, then checked against the store as that
//! kind requires. Every reader of access tokens goes through [`AccessTokens`]: the
//! authentication chain, token exchange, introspection and revocation, the Fleet API's
//! exchange, the Vault `lookup-self` and the token API's invalidation.

use super::GrantError;
use crate::api_keys::{ApiKeyError, ApiKeyService};
use crate::tokens::kind::{ClientState, TokenKind};
use crate::tokens::refresh::ParsedRefresh;
use crate::tokens::{jwt, AccessClaims, TokenError, TokenService};

/// How an access token is being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Presented by its holder (a resource request, a token exchange): the first use of
    /// a pending pair promotes it (SPEC §3), and a use-limited token loses one use.
    Use,
    /// Looked at by someone else (introspection, revocation): changes nothing.
    Look,
}

/// A verified access token and what kind it is.
#[derive(Debug, Clone)]
pub struct VerifiedAccess {
    pub claims: AccessClaims,
    pub kind: TokenKind,
}

/// The checks of presented access tokens, over the services they need.
pub struct AccessTokens<'a> {
    tokens: &'a TokenService,
    api_keys: &'a ApiKeyService,
    clients: ClientState,
}

impl<'a> AccessTokens<'a> {
    pub fn new(
        tokens: &'a TokenService,
        api_keys: &'a ApiKeyService,
        clients: ClientState,
    ) -> Self {
        Self {
            tokens,
            api_keys,
            clients,
        }
    }

    /// The kind of a parsed refresh token, under the same policy.
    pub fn kind_of_refresh(&self, presented: &ParsedRefresh) -> TokenKind {
        self.clients.of_refresh(presented)
    }

    /// The signature and claims of a token, and its kind; no store. `Err(Jwt)`: not a
    /// valid access token of ours.
    pub async fn verify(&self, token: &str) -> Result<VerifiedAccess, TokenError> {
        let claims = self.tokens.verify_access(token).await?;
        let kind = self.clients.of_access(&claims);
        Ok(VerifiedAccess { claims, kind })
    }

    /// Checks a presented access token: [`verify`](Self::verify), then (unless
    /// `jwt.stateless`) that it is still valid in the store:
    /// [`confirm`](Self::confirm).
    pub async fn validate(&self, token: &str, check: Check) -> Result<VerifiedAccess, GrantError> {
        if !jwt::looks_like_jwt(token) {
            return Err(GrantError::invalid_grant(
                "unknown_token",
                "the token is not a JWT access token",
            ));
        }
        let verified = self.verify(token).await?;
        self.confirm(&verified, check).await?;
        Ok(verified)
    }

    /// The store half of [`validate`](Self::validate), by kind: a stored pair must be
    /// its subject's current or pending pair; a client token kept nowhere needs the
    /// client's API key still valid; an external subject's token needs a use left (a
    /// use takes one, a look only checks).
    pub async fn confirm(&self, verified: &VerifiedAccess, check: Check) -> Result<(), GrantError> {
        let claims = &verified.claims;
        match verified.kind {
            TokenKind::External => {
                match check {
                    Check::Use => self.tokens.use_external(claims).await?,
                    Check::Look => self.tokens.check_external(claims).await?,
                };
                Ok(())
            }
            TokenKind::ClientToken { stored: false } => {
                self.check_client_key(&claims.client_id).await
            }
            TokenKind::AgentPair | TokenKind::Family | TokenKind::ClientToken { stored: true } => {
                match check {
                    Check::Use => self.tokens.confirm_access(claims).await?,
                    Check::Look => self.tokens.check_access(claims).await?,
                }
                Ok(())
            }
        }
    }

    /// A stateless client token is valid while the client's API key is.
    pub async fn check_client_key(&self, client_id: &str) -> Result<(), GrantError> {
        if self.tokens.settings().stateless {
            return Ok(());
        }
        match self.api_keys.check_active(client_id).await {
            Ok(_) => Ok(()),
            Err(ApiKeyError::Store(e)) => Err(e.into()),
            Err(e) => Err(GrantError::invalid_grant(
                e.reason(),
                "the token is not valid",
            )),
        }
    }
}
