//! The issuance policy: the one place that decides *who gets which tokens*, for every
//! front door (the grant dispatch, [`super::dispatch`], and the Vault login call it);
//! the token service mints, verifies and rotates.
//!
//! Who gets what:
//! - an **agent** (its API key has an agent id, or it enrolled): a pair, stored as the
//!   agent's pending pair, with the rotation and reuse rules of SPEC §3;
//! - a **non-agent client**, by default: an access token alone (RFC 6749 §4.4.3), with
//!   `sub` = `client_id` = the key id (RFC 9068 §2.2), stored nowhere: it is valid by its
//!   signature and claims while the client's API key is valid. Many instances of one
//!   client may each hold a token, as standard clients expect;
//! - a non-agent client with `oauth.client_credentials_refresh = true`: a pair, kept in
//!   a token-state record of its own (keyed by its client id, like an agent's), so that
//!   refresh, rotation and reuse detection work as for agents. Each client then has at
//!   most one current and one pending pair. Changing the setting changes how tokens
//!   already issued to such clients are checked (at most `jwt.access_ttl` long);
//! - a **user of the token API** (`/_security/oauth2/token`): a new token family per
//!   grant, rotated by the same rules in the family's record; its tokens are refused
//!   wherever agents' and clients' tokens are traded, and vice versa;
//! - a subject admitted by the Vault JWT auth method (an external JWT; `vault_role`
//!   claim): an access token alone ([`IssuancePolicy::issue_external`]), valid by its
//!   signature and claims plus, when use-limited, its use counter; it cannot be
//!   exchanged.
//!
//! DPoP (RFC 9449): every pair or token of an agent or client is bound as the request's
//! [`Binding`] decides (a bound credential keeps its key; `dpop.require_for_agents`).

use chrono::{DateTime, Utc};
use oxide_auth::primitives::issuer::{RefreshedToken, TokenType};

use super::access::{AccessTokens, VerifiedAccess};
use super::dpop::Binding;
use super::external_jwt::role_client_id;
use super::registrar::Client;
use super::GrantError;
use crate::api_keys::ApiKeyService;
use crate::config::OAuthSettings;
use crate::tokens::kind::{ClientState, TokenKind};
use crate::tokens::{
    self, refresh, ExternalAccess, IssuedAccess, IssuedPair, Subject, TokenService,
};
use crate::vault::Admitted;

/// What one grant hands out.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: Option<String>,
    /// The granted scope, normalized; `None` for none.
    pub scope: Option<String>,
    pub jti: String,
    /// The DPoP key the tokens are bound to, if any (`token_type: DPoP`).
    pub bound_key: Option<String>,
}

impl Issued {
    pub(super) fn pair(pair: IssuedPair, scope: Option<&str>) -> Self {
        Self {
            access_token: pair.access_token,
            expires_in: pair.expires_in,
            refresh_token: Some(pair.refresh_token),
            scope: scope.map(str::to_string),
            jti: pair.jti,
            bound_key: pair.bound_key,
        }
    }

    pub(super) fn access_only(access: IssuedAccess, scope: Option<&str>) -> Self {
        Self {
            access_token: access.access_token,
            expires_in: access.expires_in,
            refresh_token: None,
            scope: scope.map(str::to_string),
            jti: access.jti,
            bound_key: access.bound_key,
        }
    }

    /// The `token_type` to answer: `DPoP` for bound tokens (RFC 9449 §5), else `Bearer`.
    pub fn token_type(&self) -> &'static str {
        tokens::token_type(self.bound_key.is_some())
    }
}

/// Whose token family a token-API grant starts: a user the token API authenticated.
#[derive(Debug, Clone, Copy)]
pub struct FamilyOwner<'a> {
    pub username: &'a str,
    pub realm: &'a str,
    pub realm_type: &'a str,
}

/// The refusal of a token of the Elasticsearch-compatible token API (a token family)
/// where only agents' and OAuth2 clients' tokens are traded.
pub fn not_a_client_token() -> GrantError {
    GrantError::invalid_grant(
        "token_api_token",
        "the token was issued by the token API (POST /_security/oauth2/token); refresh it there",
    )
}

/// What a front door accepts for a traded access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traded {
    /// Whatever the subject may hold: a pair when its pair is stored, else an access
    /// token alone (token exchange at `/oauth/token`).
    AsHeld,
    /// A pair only (the Fleet door, whose answer always carries a refresh token): a
    /// client without stored token state is refused before anything is minted.
    PairOnly,
}

/// The issuance policy under the OAuth settings, for one request's DPoP binding.
pub struct IssuancePolicy<'a> {
    tokens: &'a TokenService,
    api_keys: &'a ApiKeyService,
    settings: &'a OAuthSettings,
    /// The DPoP key the request proved, and the agents' DPoP policy.
    binding: Binding,
}

impl<'a> IssuancePolicy<'a> {
    pub fn new(
        tokens: &'a TokenService,
        api_keys: &'a ApiKeyService,
        settings: &'a OAuthSettings,
    ) -> Self {
        Self {
            tokens,
            api_keys,
            settings,
            binding: Binding::default(),
        }
    }

    /// The policy for a request that proved a DPoP key (or none): what it issues is
    /// bound as [`Binding`] decides.
    pub fn with_binding(mut self, binding: Binding) -> Self {
        self.binding = binding;
        self
    }

    pub fn tokens(&self) -> &'a TokenService {
        self.tokens
    }

    /// Whether non-agent clients' pairs are kept in the store: what a token's kind
    /// depends on.
    pub fn client_state(&self) -> ClientState {
        ClientState {
            stored: self.settings.client_credentials_refresh,
        }
    }

    /// The checks of presented access tokens, under the same policy.
    pub fn access(&self) -> AccessTokens<'a> {
        AccessTokens::new(self.tokens, self.api_keys, self.client_state())
    }

    /// Whether a subject may hold refresh tokens: agents always, non-agent clients when
    /// `oauth.client_credentials_refresh` allows it (their pair is then stored).
    pub fn may_refresh(&self, sub: &str, client_id: &str) -> bool {
        self.client_state()
            .of_subject(sub, client_id)
            .has_stored_pair()
    }

    /// The `client_credentials` grant for an authenticated client.
    pub async fn issue_to(
        &self,
        client: &Client,
        scope: Option<&str>,
    ) -> Result<Issued, GrantError> {
        let bound_key = self.binding.key_for(None, client.agent_id.is_some())?;
        let subject = Subject {
            sub: client.subject(),
            client_id: &client.id,
            family: None,
            bound_key: bound_key.as_deref(),
        };
        if !self.may_refresh(client.subject(), &client.id) {
            let access = self.tokens.issue_access_only(subject, scope);
            return Ok(Issued::access_only(access, scope));
        }
        if client.agent_id.is_none() {
            self.tokens.ensure_subject(&client.id).await?;
        }
        let pair = self
            .tokens
            .exchange_scoped(subject, scope, tokens::TradedIn::ApiKey)
            .await?;
        Ok(Issued::pair(pair, scope))
    }

    /// The first pair of an agent just enrolled through the enrollment token
    /// `client_id`: a pending pair under the same rotation rules as an API-key grant.
    pub async fn issue_enrolled(
        &self,
        agent_id: &str,
        client_id: &str,
    ) -> Result<Issued, GrantError> {
        let client = Client {
            id: client_id.to_string(),
            agent_id: Some(agent_id.to_string()),
        };
        self.issue_to(&client, None).await
    }

    /// The `refresh_token` grant of an agent or a client: the rotation of SPEC §3. A
    /// token family's refresh token is refused (it is refreshed at the token API).
    pub async fn refresh(
        &self,
        presented: &refresh::ParsedRefresh,
        scope: Option<&str>,
    ) -> Result<Issued, GrantError> {
        let kind = self.client_state().of_refresh(presented);
        if kind == TokenKind::Family {
            return Err(not_a_client_token());
        }
        let bound_key = self
            .binding
            .key_for(presented.jkt.as_deref(), kind == TokenKind::AgentPair)?;
        let subject = Subject {
            sub: &presented.agent_id,
            client_id: &presented.client_id,
            family: None,
            bound_key: bound_key.as_deref(),
        };
        let presented = tokens::TradedIn::RefreshToken {
            hash: &presented.hash,
        };
        let pair = self
            .tokens
            .exchange_scoped(subject, scope, presented)
            .await?;
        Ok(Issued::pair(pair, scope))
    }

    /// A verified access token (signature and claims) traded for new tokens of its
    /// subject: a new pending pair when the subject is stateful (the token must be its
    /// current or pending pair's, and a pending one is promoted), else, when `traded`
    /// allows it, a new access token while the client's key is valid.
    pub async fn exchange_access(
        &self,
        verified: &VerifiedAccess,
        scope: Option<&str>,
        traded: Traded,
    ) -> Result<Issued, GrantError> {
        let claims = &verified.claims;
        match verified.kind {
            TokenKind::External => {
                return Err(GrantError::invalid_grant(
                    "external_subject",
                    "a token from the JWT auth method cannot be exchanged: log in again with the external JWT",
                ))
            }
            TokenKind::Family => return Err(not_a_client_token()),
            TokenKind::ClientToken { stored: false } if traded == Traded::PairOnly => {
                return Err(GrantError::invalid_grant(
                    "no_stored_pair",
                    "the client's tokens are not stored (oauth.client_credentials_refresh is off): trade the token at /oauth/token",
                ))
            }
            TokenKind::AgentPair | TokenKind::ClientToken { .. } => {}
        }
        let agent = verified.kind == TokenKind::AgentPair;
        let bound_key = self.binding.key_for(claims.bound_key(), agent)?;
        let subject = Subject {
            sub: &claims.sub,
            client_id: &claims.client_id,
            family: None,
            bound_key: bound_key.as_deref(),
        };
        if !verified.kind.has_stored_pair() {
            self.access().check_client_key(&claims.client_id).await?;
            let access = self.tokens.issue_access_only(subject, scope);
            return Ok(Issued::access_only(access, scope));
        }
        let presented = tokens::TradedIn::AccessToken { jti: &claims.jti };
        let pair = self
            .tokens
            .exchange_scoped(subject, scope, presented)
            .await?;
        Ok(Issued::pair(pair, scope))
    }

    /// A new token family for a user the token API authenticated: its first pair,
    /// stored in the family's record. `with_refresh`: whether the refresh token is
    /// handed out (`password`) or never shown, so never usable (`client_credentials`).
    pub async fn start_family(
        &self,
        owner: FamilyOwner<'_>,
        with_refresh: bool,
    ) -> Result<Issued, GrantError> {
        let issued = self
            .tokens
            .issue_family(owner.username, owner.realm, owner.realm_type)
            .await?;
        tracing::info!(username = %owner.username, "token family started");
        let mut issued = Issued::pair(issued.pair, None);
        if !with_refresh {
            issued.refresh_token = None;
        }
        Ok(issued)
    }

    /// A token family's refresh token, rotated in its family's record. Any other
    /// refresh token is refused here.
    pub async fn refresh_family(
        &self,
        presented: &refresh::ParsedRefresh,
    ) -> Result<Issued, GrantError> {
        if self.client_state().of_refresh(presented) != TokenKind::Family {
            return Err(GrantError::invalid_grant(
                "not_a_family_token",
                "the refresh token was not issued by the token API",
            ));
        }
        let subject = Subject {
            sub: &presented.agent_id,
            client_id: &presented.client_id,
            family: presented.family.as_deref(),
            bound_key: None,
        };
        let pair = self
            .tokens
            .exchange_scoped(
                subject,
                None,
                tokens::TradedIn::RefreshToken {
                    hash: &presented.hash,
                },
            )
            .await?;
        Ok(Issued::pair(pair, None))
    }

    /// The access token of a subject admitted by the Vault JWT auth method (a login, or
    /// a token exchange of an external JWT): `client_id` = `auth/jwt/role/<role>`, no
    /// refresh token.
    pub async fn issue_external(
        &self,
        admitted: &Admitted,
        scope: Option<&str>,
    ) -> Result<IssuedAccess, GrantError> {
        let client_id = role_client_id(&admitted.role);
        Ok(self
            .tokens
            .issue_external(ExternalAccess {
                subject: &admitted.subject,
                client_id: &client_id,
                vault_role: &admitted.role,
                scope,
                groups: &admitted.groups,
                lifetime: admitted.lifetime,
                max_uses: admitted.num_uses,
            })
            .await?)
    }

    /// `issued` in oxide-auth's terms (to feed its refresh state machine).
    pub fn refreshed_token(&self, issued: &Issued) -> RefreshedToken {
        RefreshedToken {
            token: issued.access_token.clone(),
            refresh: issued.refresh_token.clone(),
            until: self.until(issued.expires_in),
            token_type: TokenType::Bearer,
        }
    }

    /// When a token issued now for `expires_in` seconds expires, in oxide-auth's terms.
    pub fn until(&self, expires_in: u64) -> DateTime<Utc> {
        DateTime::from_timestamp(self.tokens.now() + expires_in as i64, 0)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}
