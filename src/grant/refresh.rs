//! The `refresh_token` grant (RFC 6749 §6) at the OAuth2 token endpoint: the rotation
//! and reuse rules of SPEC §3, applied by the same `TokenService::exchange_scoped` call
//! as the Fleet API (single use; a lost race or a replaced pending pair is
//! `invalid_grant`; a retired token revokes the family).
//!
//! The request is checked by oxide-auth's state machine
//! (`oxide_auth::code_grant::refresh::Refresh`: required parameters, the token issued to
//! the authenticated client, a requested scope within the original one) and its
//! requests are answered here with our [`ApiKeyRegistrar`] and [`IssuancePolicy`], so that
//! every refusal keeps its reason. oxide-auth-async's `RefreshFlow` would split the
//! decision into `recover_refresh` (a read) and `refresh` (the write) and report any
//! failure of the latter, such as a lost race, as a server error.
//!
//! Client authentication is optional here, as at `/api/fleet/authenticate`: the refresh
//! token itself is a 256-bit secret bound to its client. When a client does
//! authenticate, the token must have been issued to it (else `invalid_grant`), and a
//! non-agent client may use this grant only if `oauth.client_credentials_refresh` is on
//! (else `unauthorized_client`; a non-agent client's refresh token presented without
//! client authentication while the setting is off is `invalid_grant`).

use std::borrow::Cow;

use oxide_auth::code_grant::error::AccessTokenErrorType;
use oxide_auth::code_grant::refresh::{Error as MachineError, Input, Output, Refresh, Request};
use oxide_auth::primitives::grant::Grant;

use super::issuer::refresh_grant;
use super::policy::{IssuancePolicy, Issued};
use super::registrar::ApiKeyRegistrar;
use super::request::{scope_text, ClientCredentials, TokenRequest};
use super::GrantError;
use crate::tokens::refresh;

/// The grant type this module answers.
pub const GRANT_TYPE: &str = "refresh_token";

struct View<'r> {
    request: &'r TokenRequest,
    client: Option<&'r ClientCredentials>,
}

impl Request for View<'_> {
    fn valid(&self) -> bool {
        true
    }

    fn refresh_token(&self) -> Option<Cow<'_, str>> {
        self.request.params.get("refresh_token").map(Cow::Borrowed)
    }

    fn scope(&self) -> Option<Cow<'_, str>> {
        self.request.params.get("scope").map(Cow::Borrowed)
    }

    fn grant_type(&self) -> Option<Cow<'_, str>> {
        self.request.params.get("grant_type").map(Cow::Borrowed)
    }

    fn authorization(&self) -> Option<(Cow<'_, str>, Cow<'_, [u8]>)> {
        self.client.map(|c| {
            (
                Cow::Borrowed(c.id.as_str()),
                Cow::Borrowed(c.secret.as_bytes()),
            )
        })
    }

    fn extension(&self, key: &str) -> Option<Cow<'_, str>> {
        self.request.params.get(key).map(Cow::Borrowed)
    }
}

/// What the state machine asked for, owned.
enum Step {
    Authenticate {
        id: String,
        secret: Vec<u8>,
    },
    /// No client authentication was presented: the token alone is enough.
    Anonymous,
    Recover(String),
    Refresh(String, Box<Grant>),
    Done,
}

/// How far the machine got, to explain its refusals.
#[derive(Clone, Copy)]
enum Stage {
    Start,
    Authenticated,
    Recovered { found: bool },
}

pub(super) async fn grant(
    registrar: &ApiKeyRegistrar<'_>,
    policy: &IssuancePolicy<'_>,
    request: &TokenRequest,
) -> Result<Issued, GrantError> {
    let client = request.client()?;
    request.scope()?;
    let view = View {
        request,
        client: client.as_ref(),
    };
    let mut machine = Refresh::new(&view);
    let mut input = Input::None;
    let mut stage = Stage::Start;
    let mut issued: Option<Issued> = None;
    loop {
        let step = match machine.advance(input) {
            Output::Unauthenticated {
                client,
                pass: Some(pass),
            } => Step::Authenticate {
                id: client.to_string(),
                secret: pass.to_vec(),
            },
            Output::Unauthenticated { pass: None, .. } => Step::Anonymous,
            Output::RecoverRefresh { token } => Step::Recover(token.to_string()),
            Output::Refresh { token, grant } => Step::Refresh(token.to_string(), grant),
            Output::Ok(_) => Step::Done,
            Output::Err(e) => return Err(machine_error(e, stage)),
        };
        input = match step {
            Step::Authenticate { id, secret } => {
                let secret = String::from_utf8(secret).map_err(|_| {
                    GrantError::invalid_client("malformed_credentials", "invalid API key")
                })?;
                let client = registrar.authenticate(&id, &secret).await?;
                if !policy.may_refresh(client.subject(), &client.id) {
                    return Err(refresh_not_allowed());
                }
                stage = Stage::Authenticated;
                Input::Authenticated {
                    scope: view.scope(),
                }
            }
            Step::Anonymous => Input::Authenticated {
                scope: view.scope(),
            },
            Step::Recover(token) => {
                let grant = refresh_grant(&token);
                if let Some(grant) = &grant {
                    // A non-agent client's refresh token while the setting is off: none
                    // is valid then (and the ids in a token prove nothing before use).
                    if !policy.may_refresh(&grant.owner_id, &grant.client_id) {
                        return Err(GrantError::invalid_grant(
                            "client_refresh_disabled",
                            "the refresh token is not valid",
                        ));
                    }
                }
                stage = Stage::Recovered {
                    found: grant.is_some(),
                };
                Input::Recovered {
                    scope: view.scope(),
                    grant: grant.map(Box::new),
                }
            }
            Step::Refresh(token, grant) => {
                let parsed = refresh::parse(&token).ok_or_else(not_valid)?;
                let scope = scope_text(&grant.scope);
                let result = policy.refresh(&parsed, scope.as_deref()).await?;
                let refreshed = policy.refreshed_token(&result);
                issued = Some(result);
                Input::Refreshed(refreshed)
            }
            Step::Done => {
                return issued
                    .ok_or_else(|| GrantError::Internal("refresh: finished without tokens".into()))
            }
        };
    }
}

fn not_valid() -> GrantError {
    GrantError::invalid_grant("unknown_token", "the refresh token is not valid")
}

fn refresh_not_allowed() -> GrantError {
    GrantError::unauthorized_client(
        "refresh_not_allowed",
        "this client is not issued refresh tokens (RFC 6749 §4.4.3)",
    )
}

/// The state machine's refusals, with the descriptions it does not carry.
fn machine_error(mut error: MachineError, stage: Stage) -> GrantError {
    let kind = match error.description() {
        Some(description) => description.kind(),
        None => return GrantError::Internal("refresh: primitive failure".into()),
    };
    match (kind, stage) {
        (AccessTokenErrorType::InvalidClient, _) => {
            GrantError::invalid_client("client_refused", "invalid API key")
        }
        (AccessTokenErrorType::InvalidScope, _) => GrantError::invalid_scope(
            "scope_exceeds_grant",
            "the requested scope exceeds the scope originally granted (RFC 6749 §6)",
        ),
        (AccessTokenErrorType::InvalidGrant, Stage::Recovered { found: true }) => {
            GrantError::invalid_grant(
                "refresh_other_client",
                "the refresh token was issued to another client",
            )
        }
        (AccessTokenErrorType::InvalidGrant, _) => not_valid(),
        (AccessTokenErrorType::UnsupportedGrantType, _) => GrantError::UnsupportedGrantType {
            reason: "unsupported_grant_type",
            description: "the grant_type is not supported".into(),
        },
        (_, Stage::Start) => GrantError::invalid_request(
            "missing_parameter",
            "the parameter \"refresh_token\" is required",
        ),
        _ => GrantError::invalid_request(
            "malformed_request",
            "the refresh_token request is malformed (RFC 6749 §6)",
        ),
    }
}
