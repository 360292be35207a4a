//! The JWT-emitting issuer of the OAuth2 endpoints, as an oxide-auth `Issuer` over the
//! [`TokenService`]: it decides *what* a grant hands out and to whom, and checks access
//! tokens presented back; the token service mints, verifies and rotates.
//!
//! Who gets what:
//! - an **agent** (its API key has an agent id): a pair, stored as the agent's pending
//!   pair, with the rotation and reuse rules of SPEC §3 (the same call as the Fleet API);
//! - a **non-agent client**, by default: an access token alone (RFC 6749 §4.4.3), with
//!   `sub` = `client_id` = the key id (RFC 9068 §2.2), stored nowhere: it is valid by its
//!   signature and claims while the client's API key is valid. Many instances of one
//!   client may each hold a token, as standard clients expect;
//! - a subject admitted by the Vault JWT auth method (an external JWT; `vault_role`
//!   claim): an access token alone, issued by `external_jwt`, valid by its signature
//!   and claims plus, when use-limited, its use counter; it cannot be exchanged;
//! - a non-agent client with `oauth.client_credentials_refresh = true`: a pair, kept in
//!   a token-state record of its own (keyed by its client id, like an agent's), so that
//!   refresh, rotation and reuse detection work as for agents. Each client then has at
//!   most one current and one pending pair. Changing the setting changes how tokens
//!   already issued to such clients are checked (at most `jwt.access_ttl` long).
//!
//! Our grant handlers call the typed methods. The
//! [`oxide_auth_async::primitives::Issuer`] implementation wraps them for oxide-auth's
//! flows, whose `Err(())` means "server error" and `Ok(None)` "invalid grant": the real
//! reason of the last failure is kept here ([`JwtIssuer::take_failure`]), so that a lost
//! refresh race can still be reported as `invalid_grant`, not 500.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oxide_auth::primitives::grant::{Extensions, Grant};
use oxide_auth::primitives::issuer::{IssuedToken, RefreshedToken, TokenType};

use super::access::{AccessTokens, Check, VerifiedAccess};
use super::dpop::Binding;
use super::registrar::{placeholder_redirect, Client};
use super::request::{empty_scope, parse_scope, scope_text};
use super::GrantError;
use crate::api_keys::ApiKeyService;
use crate::config::OAuthSettings;
use crate::tokens::kind::{ClientState, TokenKind};
use crate::tokens::{self, refresh, AccessClaims, IssuedAccess, IssuedPair, Subject, TokenService};

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
    fn pair(pair: IssuedPair, scope: Option<&str>) -> Self {
        Self {
            access_token: pair.access_token,
            expires_in: pair.expires_in,
            refresh_token: Some(pair.refresh_token),
            scope: scope.map(str::to_string),
            jti: pair.jti,
            bound_key: pair.bound_key,
        }
    }

    fn access_only(access: IssuedAccess, scope: Option<&str>) -> Self {
        Self {
            access_token: access.access_token,
            expires_in: access.expires_in,
            refresh_token: None,
            scope: scope.map(str::to_string),
            jti: access.jti,
            bound_key: access.bound_key,
        }
    }
}

/// The refusal of a token of the Elasticsearch-compatible token API (a token family)
/// where only agents' and OAuth2 clients' tokens are traded.
pub fn not_a_client_token() -> GrantError {
    GrantError::invalid_grant(
        "token_api_token",
        "the token was issued by the token API (POST /_security/oauth2/token); refresh it there",
    )
}

pub struct JwtIssuer<'a> {
    tokens: &'a TokenService,
    api_keys: &'a ApiKeyService,
    policy: &'a OAuthSettings,
    /// The DPoP key the request proved, and the agents' DPoP policy.
    binding: Binding,
    failure: Option<GrantError>,
}

impl<'a> JwtIssuer<'a> {
    pub fn new(
        tokens: &'a TokenService,
        api_keys: &'a ApiKeyService,
        policy: &'a OAuthSettings,
    ) -> Self {
        Self {
            tokens,
            api_keys,
            policy,
            binding: Binding::default(),
            failure: None,
        }
    }

    /// The issuer for a request that proved a DPoP key (or none): what it issues is
    /// bound as [`Binding`] decides.
    pub fn with_binding(mut self, binding: Binding) -> Self {
        self.binding = binding;
        self
    }

    pub fn tokens(&self) -> &'a TokenService {
        self.tokens
    }

    /// The reason behind the last failure reported through the `Issuer` trait.
    pub fn take_failure(&mut self) -> Option<GrantError> {
        self.failure.take()
    }

    /// Whether non-agent clients' pairs are kept in the store: what a token's kind
    /// depends on.
    pub fn client_state(&self) -> ClientState {
        ClientState {
            stored: self.policy.client_credentials_refresh,
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
            agent_id: client.subject(),
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
            .exchange_scoped(subject, scope, tokens::Presented::ApiKey)
            .await?;
        Ok(Issued::pair(pair, scope))
    }

    /// The `refresh_token` grant: the rotation of SPEC §3, exactly as the Fleet API.
    pub async fn refresh(
        &self,
        presented: &refresh::PresentedRefresh,
        scope: Option<&str>,
    ) -> Result<Issued, GrantError> {
        if self.client_state().of_refresh(presented) == TokenKind::Family {
            return Err(not_a_client_token());
        }
        let agent = self.client_state().of_refresh(presented) == TokenKind::AgentPair;
        let bound_key = self.binding.key_for(presented.jkt.as_deref(), agent)?;
        let subject = Subject {
            agent_id: &presented.agent_id,
            client_id: &presented.client_id,
            family: None,
            bound_key: bound_key.as_deref(),
        };
        let presented = tokens::Presented::RefreshToken {
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
    /// current or pending pair's, and a pending one is promoted), else a new access
    /// token while the client's key is valid.
    pub async fn exchange_access(
        &self,
        verified: &VerifiedAccess,
        scope: Option<&str>,
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
            TokenKind::AgentPair | TokenKind::ClientToken { .. } => {}
        }
        let agent = verified.kind == TokenKind::AgentPair;
        let bound_key = self.binding.key_for(claims.bound_key(), agent)?;
        let subject = Subject {
            agent_id: &claims.sub,
            client_id: &claims.client_id,
            family: None,
            bound_key: bound_key.as_deref(),
        };
        if !verified.kind.has_stored_pair() {
            self.access().check_client_key(&claims.client_id).await?;
            let access = self.tokens.issue_access_only(subject, scope);
            return Ok(Issued::access_only(access, scope));
        }
        let presented = tokens::Presented::AccessToken { jti: &claims.jti };
        let pair = self
            .tokens
            .exchange_scoped(subject, scope, presented)
            .await?;
        Ok(Issued::pair(pair, scope))
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

    fn until(&self, expires_in: u64) -> DateTime<Utc> {
        DateTime::from_timestamp(self.tokens.now() + expires_in as i64, 0)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
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
                .client_state()
                .of_subject(&grant.owner_id, &grant.client_id)
                .agent(&grant.owner_id)
                .map(str::to_string),
            id: grant.client_id.clone(),
        };
        let scope = scope_text(&grant.scope);
        match self.issue_to(&client, scope.as_deref()).await {
            Ok(issued) => Ok(IssuedToken {
                until: self.until(issued.expires_in),
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
        match JwtIssuer::refresh(self, &parsed, scope.as_deref()).await {
            Ok(issued) => Ok(RefreshedToken {
                until: self.until(issued.expires_in),
                token: issued.access_token,
                refresh: issued.refresh_token,
                token_type: TokenType::Bearer,
            }),
            Err(e) => self.fail(e),
        }
    }

    /// A use of the token by its holder (oxide-auth's resource flow).
    async fn recover_token(&mut self, token: &str) -> Result<Option<Grant>, ()> {
        match self.access().validate(token, Check::Use).await {
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
        let first = issuer.issue_to(&client, None).await.unwrap();
        issuer
            .access()
            .validate(&first.access_token, Check::Use)
            .await
            .unwrap();
        let second = issuer.issue_to(&client, None).await.unwrap();

        // A look at the pending token leaves the current one current.
        issuer
            .access()
            .validate(&second.access_token, Check::Look)
            .await
            .unwrap();
        issuer
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
