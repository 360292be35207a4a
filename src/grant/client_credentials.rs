//! The `client_credentials` grant (RFC 6749 §4.4): an API key buys tokens for its agent,
//! or for the client itself (see `policy` for who gets what).
//!
//! The request is checked by oxide-auth's own state machine
//! (`oxide_auth::code_grant::client_credentials::ClientCredentials`: grant type, one
//! client authentication, scope syntax) and its requests are answered here, one step at
//! a time, with our [`ApiKeyRegistrar`] and [`IssuancePolicy`]. We drive the machine
//! ourselves rather than through `oxide_auth_async::endpoint::ClientCredentialsFlow`
//! because that flow turns every primitive failure into a bare 500, renders the JSON
//! itself (no `error_description`, `expires_in` from the wall clock) and knows only
//! Basic authentication; see docs/architecture.md.

use std::borrow::Cow;

use oxide_auth::code_grant::client_credentials::{
    ClientCredentials, Error as MachineError, Input, Output, Request,
};
use oxide_auth::code_grant::error::AccessTokenErrorType;
use oxide_auth::primitives::grant::Extensions;
use oxide_auth::primitives::registrar::{BoundClient, ClientUrl, PreGrant};
use oxide_auth::primitives::scope::Scope;
use oxide_auth_async::primitives::Registrar;

use super::policy::{IssuancePolicy, Issued};
use super::registrar::{ApiKeyRegistrar, Client};
use super::request::{empty_scope, parse_scope, scope_text, TokenRequest};
use super::GrantError;

/// The grant type this module answers.
pub const GRANT_TYPE: &str = "client_credentials";

/// The request as oxide-auth's state machine reads it.
struct View<'r> {
    request: &'r TokenRequest,
    /// False when the body's `client_id` only repeats the header's.
    body_authenticates: bool,
}

impl Request for View<'_> {
    fn valid(&self) -> bool {
        true
    }

    fn authorization(&self) -> Option<(Cow<'_, str>, Cow<'_, [u8]>)> {
        self.request.header_client.as_ref().map(|c| {
            (
                Cow::Borrowed(c.id.as_str()),
                Cow::Borrowed(c.secret.as_bytes()),
            )
        })
    }

    fn scope(&self) -> Option<Cow<'_, str>> {
        self.request.params.get("scope").map(Cow::Borrowed)
    }

    fn grant_type(&self) -> Option<Cow<'_, str>> {
        self.request.params.get("grant_type").map(Cow::Borrowed)
    }

    fn extension(&self, key: &str) -> Option<Cow<'_, str>> {
        if matches!(key, "client_id" | "client_secret") && !self.body_authenticates {
            return None;
        }
        self.request.params.get(key).map(Cow::Borrowed)
    }

    fn allow_credentials_in_body(&self) -> bool {
        true
    }
}

/// What the state machine asked for, owned, so the machine can be advanced again.
enum Step {
    Authenticate { id: String, secret: Vec<u8> },
    Bind(String),
    Extend,
    Negotiate(BoundClient<'static>, Option<Scope>),
    Issue(PreGrant),
}

pub(super) async fn grant(
    registrar: &ApiKeyRegistrar<'_>,
    policy: &IssuancePolicy<'_>,
    request: &TokenRequest,
) -> Result<Issued, GrantError> {
    // RFC 6749 §4.4.2: the client MUST authenticate; without credentials that is
    // `invalid_client` (§5.2), which the state machine would call `invalid_request`.
    // Likewise a malformed scope is `invalid_scope` here (§5.2), not `invalid_request`.
    if request.client()?.is_none() {
        return Err(GrantError::invalid_client(
            "missing_credentials",
            "client authentication is required (HTTP Basic, ApiKey, or client_id and client_secret)",
        ));
    }
    request.scope()?;
    let view = View {
        request,
        body_authenticates: request.body_client()?.is_some(),
    };
    let mut machine = ClientCredentials::new(&view);
    let mut input = Input::None;
    let mut client: Option<Client> = None;
    loop {
        let step = match machine.advance(input) {
            Output::Authenticate { client, passdata } => Step::Authenticate {
                id: client.to_string(),
                secret: passdata.to_vec(),
            },
            Output::Binding { client_id } => Step::Bind(client_id.to_string()),
            Output::Extend => Step::Extend,
            Output::Negotiate {
                bound_client,
                scope,
            } => Step::Negotiate(bound_client.clone(), scope),
            Output::Ok { pre_grant, .. } => Step::Issue(pre_grant.clone()),
            Output::Err(e) => return Err(machine_error(*e)),
        };
        input = match step {
            Step::Authenticate { id, secret } => {
                let secret = String::from_utf8(secret).map_err(|_| {
                    GrantError::invalid_client("malformed_credentials", "invalid API key")
                })?;
                client = Some(registrar.authenticate(&id, &secret).await?);
                Input::Authenticated
            }
            Step::Bind(client_id) => {
                let url = ClientUrl {
                    client_id: Cow::Owned(client_id),
                    redirect_uri: None,
                };
                let bound_client = registrar
                    .bound_redirect(url)
                    .await
                    .map_err(|_| registrar_failure(registrar))?;
                Input::Bound { bound_client }
            }
            Step::Extend => Input::Extended {
                extensions: Extensions::new(),
            },
            Step::Negotiate(bound, scope) => {
                let granted = registrar.negotiate_scope(scope.as_ref())?;
                let scope = granted
                    .as_deref()
                    .map(parse_scope)
                    .transpose()?
                    .unwrap_or_else(empty_scope);
                Input::Negotiated {
                    pre_grant: PreGrant {
                        client_id: bound.client_id.into_owned(),
                        redirect_uri: bound.redirect_uri.into_owned(),
                        scope,
                    },
                }
            }
            Step::Issue(pre_grant) => {
                let client = client.ok_or_else(|| {
                    GrantError::Internal("client_credentials: issuing to no client".into())
                })?;
                return policy
                    .issue_to(&client, scope_text(&pre_grant.scope).as_deref())
                    .await;
            }
        };
    }
}

fn registrar_failure(registrar: &ApiKeyRegistrar<'_>) -> GrantError {
    registrar
        .take_failure()
        .unwrap_or_else(|| GrantError::Internal("the registrar failed without a reason".into()))
}

/// The state machine's refusals, with the descriptions it does not carry.
fn machine_error(error: MachineError) -> GrantError {
    match error {
        MachineError::Invalid(mut description) => match description.description().kind() {
            AccessTokenErrorType::UnsupportedGrantType => GrantError::UnsupportedGrantType {
                reason: "unsupported_grant_type",
                description: "the grant_type is not supported".into(),
            },
            AccessTokenErrorType::InvalidScope => {
                GrantError::invalid_scope("malformed_scope", "the scope is malformed")
            }
            _ => GrantError::invalid_request(
                "malformed_request",
                "the client_credentials request is malformed (RFC 6749 §4.4.2)",
            ),
        },
        MachineError::Unauthorized(..) | MachineError::Ignore => {
            GrantError::invalid_client("client_refused", "invalid API key")
        }
        MachineError::Primitive(_) => {
            GrantError::Internal("client_credentials: primitive failure".into())
        }
    }
}
