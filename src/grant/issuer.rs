//! The token issuer of the OAuth2 endpoints as oxide-auth sees it: an
//! [`oxide_auth_async::primitives::Issuer`] over the one issuance policy
//! ([`IssuancePolicy`], grant/policy.rs), which decides *what* a grant hands out and to
//! whom, and the checks of access tokens presented back.
//!
//! Our grant handlers call the policy's typed methods. This implementation wraps them
//! for oxide-auth's flows, whose `Err(())` means "server error" and `Ok(None)` "invalid
//! grant": the real reason of the last failure is kept here
//! ([`JwtIssuer::take_failure`]), so that a lost refresh race can still be reported as
//! `invalid_grant`, not 500.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oxide_auth::primitives::grant::{Extensions, Grant};
use oxide_auth::primitives::issuer::{IssuedToken, RefreshedToken, TokenType};

use super::access::Check;
use super::policy::IssuancePolicy;
use super::registrar::{placeholder_redirect, Client};
use super::request::{empty_scope, parse_scope, scope_text};
use super::GrantError;
use crate::api_keys::ApiKeyService;
use crate::config::OAuthSettings;
use crate::tokens::{refresh, AccessClaims, TokenService};

pub struct JwtIssuer<'a> {
    policy: IssuancePolicy<'a>,
    failure: Option<GrantError>,
}

impl<'a> JwtIssuer<'a> {
    pub fn new(
        tokens: &'a TokenService,
        api_keys: &'a ApiKeyService,
        settings: &'a OAuthSettings,
    ) -> Self {
        Self {
            policy: IssuancePolicy::new(tokens, api_keys, settings),
            failure: None,
        }
    }

    /// The policy this issuer applies.
    pub fn policy(&self) -> &IssuancePolicy<'a> {
        &self.policy
    }

    /// The reason behind the last failure reported through the `Issuer` trait.
    pub fn take_failure(&mut self) -> Option<GrantError> {
        self.failure.take()
    }

    fn fail<T>(&mut self, error: GrantError) -> Result<T, ()> {
        self.failure = Some(error);
        Err(())
    }
}

/// The grant a refresh token stands for, read from the token alone (no I/O): whether it
/// is still valid is decided when it is used, atomically, by the rotation rules. Its
/// `until` is left open for the same reason: oxide-auth's state machine compares it
/// with the wall clock, while expiry is decided by our clock in `tokens::rotation`.
pub fn refresh_grant(token: &str) -> Option<Grant> {
    let parsed = refresh::parse(token)?;
    let scope = match parsed.scope.as_deref() {
        Some(text) => parse_scope(text).ok()?,
        None => empty_scope(),
    };
    Some(Grant {
        owner_id: parsed.agent_id,
        client_id: parsed.client_id,
        scope,
        redirect_uri: placeholder_redirect(),
        until: DateTime::<Utc>::MAX_UTC,
        extensions: Extensions::new(),
    })
}

/// The grant an access token stands for.
fn access_grant(claims: &AccessClaims) -> Grant {
    Grant {
        owner_id: claims.sub.clone(),
        client_id: claims.client_id.clone(),
        scope: claims
            .scope
            .as_deref()
            .and_then(|s| parse_scope(s).ok())
            .unwrap_or_else(empty_scope),
        redirect_uri: placeholder_redirect(),
        until: DateTime::from_timestamp(claims.exp, 0).unwrap_or(DateTime::<Utc>::MIN_UTC),
        extensions: Extensions::new(),
    }
}

#[async_trait]
impl oxide_auth_async::primitives::Issuer for JwtIssuer<'_> {
    /// Issues to the grant's client; its `owner_id` is the agent, or the client itself.
    /// The flow calling this must have authenticated the client (`Registrar::check`).
    async fn issue(&mut self, grant: Grant) -> Result<IssuedToken, ()> {
        let client = Client {
            agent_id: self
                .policy
                .client_state()
                .of_subject(&grant.owner_id, &grant.client_id)
                .agent(&grant.owner_id)
                .map(str::to_string),
            id: grant.client_id.clone(),
        };
        let scope = scope_text(&grant.scope);
        match self.policy.issue_to(&client, scope.as_deref()).await {
            Ok(issued) => Ok(IssuedToken {
                until: self.policy.until(issued.expires_in),
                token: issued.access_token,
                refresh: issued.refresh_token,
                token_type: TokenType::Bearer,
            }),
            Err(e) => self.fail(e),
        }
    }

    async fn refresh(&mut self, token: &str, grant: Grant) -> Result<RefreshedToken, ()> {
        let Some(parsed) = refresh::parse(token) else {
            return self.fail(GrantError::invalid_grant(
                "unknown_token",
                "the refresh token is not valid",
            ));
        };
        let scope = scope_text(&grant.scope);
        match self.policy.refresh(&parsed, scope.as_deref()).await {
            Ok(issued) => Ok(RefreshedToken {
                until: self.policy.until(issued.expires_in),
                token: issued.access_token,
                refresh: issued.refresh_token,
                token_type: TokenType::Bearer,
            }),
            Err(e) => self.fail(e),
        }
    }

    /// A use of the token by its holder (oxide-auth's resource flow).
    async fn recover_token(&mut self, token: &str) -> Result<Option<Grant>, ()> {
        match self.policy.access().validate(token, Check::Use).await {
            Ok(verified) => Ok(Some(access_grant(&verified.claims))),
            Err(e) if e.is_server_error() => self.fail(e),
            Err(e) => {
                self.failure = Some(e);
                Ok(None)
            }
        }
    }

    async fn recover_refresh(&mut self, token: &str) -> Result<Option<Grant>, ()> {
        Ok(refresh_grant(token))
    }
}

#[cfg(test)]
mod tests {
    //! Our primitives under oxide-auth-async's own executors: they plug in, and the
    //! reason of a failure that the library can only call a server error is kept.

    use std::borrow::Cow;
    use std::sync::Arc;

    use oxide_auth::code_grant::{client_credentials as cc_machine, refresh as refresh_machine};
    use oxide_auth::primitives::authorizer::AuthMap;
    use oxide_auth::primitives::generator::RandomGenerator;
    use oxide_auth_async::code_grant::{client_credentials, refresh};
    use oxide_auth_async::primitives::{Authorizer, Issuer, Registrar};

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::Settings;
    use crate::grant::registrar::ApiKeyRegistrar;
    use crate::store::sqlite::SqliteStore;

    struct Services {
        tokens: Arc<TokenService>,
        api_keys: ApiKeyService,
        policy: OAuthSettings,
        _dir: tempfile::TempDir,
    }

    async fn services() -> Services {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::for_data_dir(dir.path());
        let clock = Arc::new(ManualClock::starting_now());
        let (store, _) = SqliteStore::open(dir.path()).unwrap();
        let store: Arc<dyn crate::store::Store> = Arc::new(store);
        let tokens = TokenService::start(store.clone(), clock.clone(), settings.jwt.clone())
            .await
            .unwrap();
        let api_keys = ApiKeyService::new(
            store.clone(),
            clock.clone(),
            Arc::new(crate::secrets::SecretVerifier::new(&Default::default(), 16).unwrap()),
        );
        crate::agents::enroll(store.as_ref(), "agent-1", clock.now())
            .await
            .unwrap();
        Services {
            tokens,
            api_keys,
            policy: OAuthSettings::default(),
            _dir: dir,
        }
    }

    struct Endpoint<'a> {
        registrar: ApiKeyRegistrar<'a>,
        issuer: JwtIssuer<'a>,
        authorizer: AuthMap<RandomGenerator>,
        extension: (),
    }

    impl<'a> Endpoint<'a> {
        fn new(s: &'a Services) -> Self {
            Self {
                registrar: ApiKeyRegistrar::new(&s.api_keys, &[]),
                issuer: JwtIssuer::new(&s.tokens, &s.api_keys, &s.policy),
                authorizer: AuthMap::new(RandomGenerator::new(16)),
                extension: (),
            }
        }
    }

    impl refresh::Endpoint for Endpoint<'_> {
        fn registrar(&self) -> &(dyn Registrar + Sync) {
            &self.registrar
        }
        fn issuer(&mut self) -> &mut (dyn Issuer + Send) {
            &mut self.issuer
        }
    }

    impl client_credentials::Endpoint for Endpoint<'_> {
        fn registrar(&self) -> &(dyn Registrar + Sync) {
            &self.registrar
        }
        fn authorizer(&mut self) -> &mut (dyn Authorizer + Send) {
            &mut self.authorizer
        }
        fn issuer(&mut self) -> &mut (dyn Issuer + Send) {
            &mut self.issuer
        }
        fn extension(&mut self) -> &mut (dyn client_credentials::Extension + Send) {
            &mut self.extension
        }
    }

    /// A form request as oxide-auth's machines read it.
    struct Form {
        grant_type: &'static str,
        refresh_token: Option<String>,
        basic: Option<(String, String)>,
    }

    impl refresh_machine::Request for Form {
        fn valid(&self) -> bool {
            true
        }
        fn refresh_token(&self) -> Option<Cow<'_, str>> {
            self.refresh_token.as_deref().map(Cow::Borrowed)
        }
        fn scope(&self) -> Option<Cow<'_, str>> {
            None
        }
        fn grant_type(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.grant_type))
        }
        fn authorization(&self) -> Option<(Cow<'_, str>, Cow<'_, [u8]>)> {
            self.basic
                .as_ref()
                .map(|(id, secret)| (Cow::Borrowed(id.as_str()), Cow::Borrowed(secret.as_bytes())))
        }
        fn extension(&self, _: &str) -> Option<Cow<'_, str>> {
            None
        }
    }

    impl cc_machine::Request for Form {
        fn valid(&self) -> bool {
            true
        }
        fn authorization(&self) -> Option<(Cow<'_, str>, Cow<'_, [u8]>)> {
            refresh_machine::Request::authorization(self)
        }
        fn scope(&self) -> Option<Cow<'_, str>> {
            None
        }
        fn grant_type(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.grant_type))
        }
        fn extension(&self, _: &str) -> Option<Cow<'_, str>> {
            None
        }
    }

    fn bearer_json(token: impl FnOnce() -> String) -> serde_json::Value {
        serde_json::from_str(&token()).unwrap()
    }

    #[tokio::test]
    async fn oxide_auth_async_client_credentials_issues_our_jwt_through_our_primitives() {
        let s = services().await;
        let key = s.api_keys.create("k", Some("agent-1"), None).await.unwrap();
        let mut endpoint = Endpoint::new(&s);
        let form = Form {
            grant_type: "client_credentials",
            refresh_token: None,
            basic: Some((key.id.clone(), key.api_key.clone())),
        };

        let pending = client_credentials::client_credentials(&mut endpoint, &form)
            .await
            .ok()
            .expect("the flow accepts an API key");
        let token = pending
            .issue(&mut endpoint, "agent-1".into(), true)
            .await
            .ok()
            .expect("our issuer issues");

        let body = bearer_json(|| token.to_json());
        let claims = s
            .tokens
            .verify_access(body["access_token"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.client_id.as_str()),
            ("agent-1", key.id.as_str())
        );
        assert!(body["refresh_token"].as_str().unwrap().starts_with("fr1."));

        // A wrong secret: the library can only say "unauthorized"; we know why.
        let wrong = Form {
            basic: Some((key.id.clone(), "wrong".into())),
            ..form
        };
        assert!(
            client_credentials::client_credentials(&mut endpoint, &wrong)
                .await
                .is_err()
        );
        let reason = endpoint.registrar.take_failure().unwrap();
        assert_eq!(
            (reason.oauth_code(), reason.reason()),
            ("invalid_client", "api_key_wrong_secret")
        );
    }

    #[tokio::test]
    async fn a_lost_refresh_race_is_a_primitive_error_to_oxide_auth_but_invalid_grant_to_us() {
        let s = services().await;
        let key = s.api_keys.create("k", Some("agent-1"), None).await.unwrap();
        let client = Client {
            id: key.id.clone(),
            agent_id: Some("agent-1".into()),
        };
        let first = JwtIssuer::new(&s.tokens, &s.api_keys, &s.policy)
            .policy()
            .issue_to(&client, None)
            .await
            .unwrap();
        let mut endpoint = Endpoint::new(&s);
        let refresh_with = |token: &str| Form {
            grant_type: "refresh_token",
            refresh_token: Some(token.to_string()),
            basic: Some((key.id.clone(), key.api_key.clone())),
        };

        // Two refreshes with the same token: the second replaces the first's pair.
        let first_token = first.refresh_token.unwrap();
        let lost = refresh::refresh(&mut endpoint, &refresh_with(&first_token)).await;
        let lost = bearer_json(|| lost.expect("refreshed").to_json());
        assert!(refresh::refresh(&mut endpoint, &refresh_with(&first_token))
            .await
            .is_ok());
        let lost_refresh = lost["refresh_token"].as_str().unwrap();
        let outcome = refresh::refresh(&mut endpoint, &refresh_with(lost_refresh)).await;

        assert!(matches!(outcome, Err(refresh_machine::Error::Primitive)));
        let reason = endpoint.issuer.take_failure().expect("the reason is kept");
        assert_eq!(
            (reason.oauth_code(), reason.reason()),
            ("invalid_grant", "token_not_current")
        );
        // An unknown token is the library's own invalid_grant.
        let garbage = refresh::refresh(&mut endpoint, &refresh_with("not-a-token")).await;
        assert!(matches!(garbage, Err(refresh_machine::Error::Invalid(_))));
    }

    #[tokio::test]
    async fn recover_token_is_a_use_and_introspection_is_not() {
        let s = services().await;
        let key = s.api_keys.create("k", Some("agent-1"), None).await.unwrap();
        let client = Client {
            id: key.id,
            agent_id: Some("agent-1".into()),
        };
        let mut issuer = JwtIssuer::new(&s.tokens, &s.api_keys, &s.policy);
        let first = issuer.policy().issue_to(&client, None).await.unwrap();
        issuer
            .policy()
            .access()
            .validate(&first.access_token, Check::Use)
            .await
            .unwrap();
        let second = issuer.policy().issue_to(&client, None).await.unwrap();

        // A look at the pending token leaves the current one current.
        issuer
            .policy()
            .access()
            .validate(&second.access_token, Check::Look)
            .await
            .unwrap();
        issuer
            .policy()
            .access()
            .validate(&first.access_token, Check::Look)
            .await
            .unwrap();
        // oxide-auth's resource flow recovers a token as a use: it promotes.
        let grant = Issuer::recover_token(&mut issuer, &second.access_token)
            .await
            .unwrap();
        assert_eq!(grant.unwrap().owner_id, "agent-1");
        assert_eq!(
            Issuer::recover_token(&mut issuer, &first.access_token).await,
            Ok(None)
        );
        assert_eq!(issuer.take_failure().unwrap().oauth_code(), "invalid_grant");
    }
}
