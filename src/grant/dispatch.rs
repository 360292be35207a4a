//! The one grant dispatch: every front door that hands out tokens (`/oauth/token`,
//! the Fleet door `POST /api/fleet/authenticate` and enrollment, the token API
//! `POST /_security/oauth2/token`) translates its wire format into a typed
//! [`GrantRequest`] and calls [`GrantService::grant`], which binds DPoP, runs the grant
//! and asks the issuance policy ([`super::policy`]) what to hand out, and records the
//! metrics once. A new grant type is a [`GrantRequest`] variant and one arm here.

use std::time::Instant;

use super::access::VerifiedAccess;
use super::dpop::Binding;
use super::policy::{FamilyOwner, IssuancePolicy, Issued, Traded};
use super::registrar::Client;
use super::request::TokenRequest;
use super::{client_credentials, record_failure, refresh, token_exchange};
use super::{DpopRequest, EnrollmentBinding, GrantError, GrantService};
use crate::telemetry::metrics::{self, Credential, Endpoint, Grant, Issuance};
use crate::tokens::{self, jwt, IssuedPair};

/// A grant request, typed: what a front door asks for, whatever its wire format.
pub enum GrantRequest<'r> {
    /// `grant_type=client_credentials` at `/oauth/token` (RFC 6749 §4.4): the client
    /// authenticates in the form, checked by oxide-auth's state machine.
    OAuthClientCredentials(&'r TokenRequest),
    /// `grant_type=refresh_token` at `/oauth/token` (RFC 6749 §6).
    OAuthRefreshToken(&'r TokenRequest),
    /// Token exchange at `/oauth/token` (RFC 8693).
    OAuthTokenExchange(&'r TokenRequest),
    /// An agent's API key (the Fleet door's `Authorization: ApiKey|Basic`): a pair for
    /// its agent; a key without an agent is refused.
    AgentApiKey { id: &'r str, secret: &'r str },
    /// A value presented as a refresh token (the Fleet door): rotated; anything that is
    /// not a refresh token is `invalid_grant` (token-type confusion, RFC 8725 §2.8).
    RefreshToken(&'r str),
    /// A bearer token presented as the credential (the Fleet door's
    /// `Authorization: Bearer`): a refresh token is rotated, one of our access tokens
    /// traded for a pair.
    BearerToken(&'r str),
    /// An agent just enrolled through the enrollment token `client_id`: its first pair.
    Enrolled {
        agent_id: &'r str,
        client_id: &'r str,
        binding: &'r EnrollmentBinding,
    },
    /// The token API's `password` grant, for a user whose password the token API
    /// checked: a new token family with its refresh token.
    UserPassword(FamilyOwner<'r>),
    /// The token API's `client_credentials` grant, for the authenticated user calling
    /// it (`credential`: how it authenticated): a new token family, access token only.
    UserClientCredentials {
        owner: FamilyOwner<'r>,
        credential: Credential,
    },
    /// The token API's `refresh_token` grant: a token family's refresh token.
    FamilyRefresh(&'r tokens::refresh::ParsedRefresh),
}

/// What a grant handed out.
#[derive(Debug)]
pub struct Granted {
    pub issued: Issued,
    /// RFC 8693 §2.2.1 `issued_token_type`, for a token exchange.
    pub issued_token_type: Option<&'static str>,
}

impl Granted {
    fn plain(issued: Issued) -> Self {
        Self {
            issued,
            issued_token_type: None,
        }
    }

    /// The pair of a door that hands out pairs only (the Fleet door, enrollment): the
    /// policy gives such doors' requests a pair or a refusal, never an access token
    /// alone.
    pub fn into_pair(self) -> Result<IssuedPair, GrantError> {
        let Issued {
            access_token,
            expires_in,
            refresh_token,
            jti,
            bound_key,
            ..
        } = self.issued;
        let refresh_token = refresh_token.ok_or_else(|| {
            GrantError::Internal("a pair was granted without a refresh token".into())
        })?;
        Ok(IssuedPair {
            access_token,
            refresh_token,
            expires_in,
            jti,
            bound_key,
        })
    }
}

const CLIENT_CREDENTIALS_OF_A_KEY: Issuance = Issuance {
    grant: Grant::ClientCredentials,
    credential: Credential::ApiKey,
};
const REFRESH: Issuance = Issuance {
    grant: Grant::RefreshToken,
    credential: Credential::RefreshToken,
};

impl GrantService {
    /// Runs `request`, which came through `door` with the DPoP proof `dpop` (if any),
    /// and records the metrics of its issuance or its refusal.
    pub async fn grant(
        &self,
        door: Endpoint,
        request: GrantRequest<'_>,
        dpop: &DpopRequest<'_>,
    ) -> Result<Granted, GrantError> {
        let started = Instant::now();
        match self.dispatch(request, dpop).await {
            Ok((how, granted)) => {
                let with_refresh = granted.issued.refresh_token.is_some();
                metrics::tokens_issued(door, how, with_refresh, started);
                Ok(granted)
            }
            Err(e) => {
                record_failure(&e);
                Err(e)
            }
        }
    }

    async fn dispatch(
        &self,
        request: GrantRequest<'_>,
        dpop: &DpopRequest<'_>,
    ) -> Result<(Issuance, Granted), GrantError> {
        // A value presented as a refresh token is parsed (and hashed) once, here.
        let parsed_refresh = match request {
            GrantRequest::RefreshToken(token) | GrantRequest::BearerToken(token) => {
                tokens::refresh::parse(token)
            }
            _ => None,
        };
        // A bearer access token as the credential is checked before its proof (whose
        // `ath` must match it); every other request's proof is checked first.
        if let GrantRequest::BearerToken(token) = request {
            if parsed_refresh.is_none() {
                let issued = self.trade_bearer_access_token(token, dpop).await?;
                let how = Issuance {
                    grant: Grant::TokenExchange,
                    credential: Credential::AccessToken,
                };
                return Ok((how, Granted::plain(issued)));
            }
        }
        let binding = match &request {
            GrantRequest::Enrolled { binding, .. } => binding.binding().clone(),
            _ => self.dpop.binding(dpop)?,
        };
        let policy = self.policy().with_binding(binding);
        let registrar = self.registrar();
        match request {
            GrantRequest::OAuthClientCredentials(form) => {
                let issued = client_credentials::grant(&registrar, &policy, form).await?;
                Ok((CLIENT_CREDENTIALS_OF_A_KEY, Granted::plain(issued)))
            }
            GrantRequest::OAuthRefreshToken(form) => {
                let issued = refresh::grant(&registrar, &policy, form).await?;
                Ok((REFRESH, Granted::plain(issued)))
            }
            GrantRequest::OAuthTokenExchange(form) => {
                let exchanged = token_exchange::grant(
                    &registrar,
                    &policy,
                    self.jwt_auth.as_deref(),
                    Some(self.tokens.audience()),
                    form,
                )
                .await?;
                let how = Issuance {
                    grant: Grant::TokenExchange,
                    credential: exchanged.credential,
                };
                let granted = Granted {
                    issued: exchanged.issued,
                    issued_token_type: Some(exchanged.issued_token_type),
                };
                Ok((how, granted))
            }
            GrantRequest::AgentApiKey { id, secret } => {
                let key = self.api_keys.verify(id, secret).await?;
                let Some(agent_id) = key.agent_id else {
                    return Err(GrantError::InvalidClient {
                        reason: "api_key_not_an_agent",
                        description: "the API key does not belong to an agent".into(),
                    });
                };
                let client = Client {
                    id: key.id,
                    agent_id: Some(agent_id),
                };
                let issued = policy.issue_to(&client, None).await?;
                Ok((CLIENT_CREDENTIALS_OF_A_KEY, Granted::plain(issued)))
            }
            GrantRequest::RefreshToken(_) | GrantRequest::BearerToken(_) => {
                let Some(parsed) = parsed_refresh else {
                    return Err(GrantError::invalid_grant(
                        "not_a_refresh_token",
                        "the refresh token is not valid",
                    ));
                };
                let issued = policy.refresh(&parsed, parsed.scope.as_deref()).await?;
                Ok((REFRESH, Granted::plain(issued)))
            }
            GrantRequest::Enrolled {
                agent_id,
                client_id,
                ..
            } => {
                let issued = policy.issue_enrolled(agent_id, client_id).await?;
                let how = Issuance {
                    grant: Grant::Enrollment,
                    credential: Credential::EnrollmentToken,
                };
                Ok((how, Granted::plain(issued)))
            }
            GrantRequest::UserPassword(owner) => {
                let issued = policy.start_family(owner, true).await?;
                let how = Issuance {
                    grant: Grant::Password,
                    credential: Credential::Password,
                };
                Ok((how, Granted::plain(issued)))
            }
            GrantRequest::UserClientCredentials { owner, credential } => {
                let issued = policy.start_family(owner, false).await?;
                let how = Issuance {
                    grant: Grant::ClientCredentials,
                    credential,
                };
                Ok((how, Granted::plain(issued)))
            }
            GrantRequest::FamilyRefresh(parsed) => {
                let issued = policy.refresh_family(parsed).await?;
                Ok((REFRESH, Granted::plain(issued)))
            }
        }
    }

    /// The Fleet door's `Authorization: Bearer <access token>`: the token is verified,
    /// then the request's proof (with `ath` when the token is bound), then it is traded
    /// for a pair.
    async fn trade_bearer_access_token(
        &self,
        token: &str,
        dpop: &DpopRequest<'_>,
    ) -> Result<Issued, GrantError> {
        if !jwt::looks_like_jwt(token) {
            return Err(GrantError::invalid_grant(
                "unknown_token",
                "the token is neither a JWT nor a refresh token",
            ));
        }
        let policy = self.policy();
        let verified: VerifiedAccess = policy.access().verify(token).await?;
        // A bound token is a credential only with a proof of its key (and its `ath`).
        let proved = match verified.claims.bound_key() {
            Some(_) => self.dpop.proved_key(dpop, Some(token))?,
            None => self.dpop.proved_key(dpop, None)?,
        };
        let binding: Binding = self.dpop.binding_of(proved);
        let scope = verified.claims.scope.clone();
        policy
            .with_binding(binding)
            .exchange_access(&verified, scope.as_deref(), Traded::PairOnly)
            .await
    }

    /// The policy under this service's settings, without a DPoP binding.
    pub(super) fn policy(&self) -> IssuancePolicy<'_> {
        IssuancePolicy::new(&self.tokens, &self.api_keys, &self.oauth)
    }
}
