//! The token service: mints access/refresh pairs, verifies access tokens, and applies
//! the rotation protocol through the store. Token formats are decided here
//! ([`jwt`], [`refresh`]), the rotation rules in [`rotation`], keys in [`keys`].
//!
//! What else it issues and keeps has a file of its own: the access tokens of subjects
//! admitted by the Vault JWT auth method and their use counters ([`external`]), and the
//! token API's token families ([`families`]).

pub mod dpop;
mod external;
mod families;
pub mod jwt;
pub mod keys;
pub mod kind;
mod minting;
pub mod refresh;
pub mod rotation;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;

use crate::clock::{Clock, UnixTime};
use crate::config::{JwtSettings, SigningAlgorithm};
use crate::store::{
    AgentChange, RecordKind, RecordWrite, Store, StoreError, StoredRecord, TokenFamilyRecord,
    TokenPairRecord, TokenStateRecord, TypedWrite,
};
pub use external::ExternalAccess;
pub use jwt::{AccessClaims, Confirmation, JwtError};
pub use keys::{KeyError, KeyRing, SigningKey};
pub use rotation::{Outcome, Refusal, TradedIn};

/// The meta key under which the deployment id is stored.
const DEPLOYMENT_ID: &str = "deployment_id";
/// Reloading keys because of an unknown `kid` happens at most this often.
const UNKNOWN_KID_RELOAD_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("the token has been used as many times as it may be")]
    UsesExhausted,
}

/// A freshly issued pair, as handed to the client.
#[derive(Debug, Clone)]
pub struct IssuedPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub jti: String,
    /// The DPoP key (thumbprint) both tokens are bound to, if any.
    pub bound_key: Option<String>,
}

impl IssuedPair {
    /// The `token_type` to answer: `DPoP` for a bound pair (RFC 9449 §5), else `Bearer`.
    pub fn token_type(&self) -> &'static str {
        token_type(self.bound_key.is_some())
    }
}

/// `DPoP` for a DPoP-bound token (RFC 9449 §5), else `Bearer`.
pub fn token_type(bound: bool) -> &'static str {
    if bound {
        "DPoP"
    } else {
        "Bearer"
    }
}

/// A freshly issued access token without a refresh token and without stored state
/// (a non-agent client's `client_credentials` token; see `grant::issuer`).
#[derive(Debug, Clone)]
pub struct IssuedAccess {
    pub access_token: String,
    pub expires_in: u64,
    pub jti: String,
    /// The DPoP key (thumbprint) the token is bound to, if any.
    pub bound_key: Option<String>,
}

/// Who an access token was issued to.
pub struct Subject<'a> {
    /// The `sub` claim and, without a `family`, the key of the token state: the agent
    /// id, or the client id for a non-agent client (RFC 9068 §2.2), or the user of a
    /// token family, or an external subject's `user_claim` value.
    pub sub: &'a str,
    pub client_id: &'a str,
    /// The token family whose record holds the token state (the token API's tokens).
    pub family: Option<&'a str>,
    /// The DPoP key (RFC 7638 thumbprint) the tokens are bound to (`cnf.jkt`, and the
    /// refresh token's binding), if the request proved one.
    pub bound_key: Option<&'a str>,
}

impl Subject<'_> {
    fn state_key(&self) -> StateKey<'_> {
        match self.family {
            Some(family) => StateKey::Family(family),
            None => StateKey::Agent(self.sub),
        }
    }
}

/// Where a subject's token state lives: an agent's (or stateful client's) record, or a
/// token family's. The rotation rules are the same for both.
#[derive(Debug, Clone, Copy)]
enum StateKey<'a> {
    Agent(&'a str),
    Family(&'a str),
}

impl<'a> StateKey<'a> {
    fn of_claims(claims: &'a AccessClaims) -> Self {
        match &claims.sid {
            Some(family) => Self::Family(family),
            None => Self::Agent(&claims.sub),
        }
    }

    fn of_refresh(presented: &'a refresh::ParsedRefresh) -> Self {
        match &presented.family {
            Some(family) => Self::Family(family),
            None => Self::Agent(&presented.agent_id),
        }
    }
}

/// A family of the token API, as issued: its first pair (or access token alone).
#[derive(Debug, Clone)]
pub struct IssuedFamily {
    pub family_id: String,
    pub pair: IssuedPair,
}

pub struct TokenService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: JwtSettings,
    issuer: String,
    /// `aud` of every access token (RFC 9068 §2.2): `jwt.audience`, else the issuer.
    audience: String,
    /// The deployment's random id, kept in the store (the fingerprint issuer's).
    deployment_id: String,
    ring: RwLock<Arc<KeyRing>>,
    last_unknown_kid_reload: Mutex<Option<Instant>>,
}

impl TokenService {
    /// Makes sure a signing key of the configured algorithm exists, derives the issuer
    /// and loads the key ring.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: JwtSettings,
    ) -> Result<Arc<Self>, TokenError> {
        let now = clock.now();
        let first = SigningKey::generate(settings.algorithm, now)?;
        let signing = store.insert_first_signing_key(first).await?;
        if signing.algorithm != settings.algorithm.as_str() {
            tracing::info!(from = %signing.algorithm, to = settings.algorithm.as_str(), "signing algorithm changed: rotating the signing key");
            rotate_signing_key(store.as_ref(), now, &settings).await?;
        }
        let deployment_id = store
            .meta_get_or_insert(DEPLOYMENT_ID, &uuid::Uuid::new_v4().simple().to_string())
            .await?;
        let issuer = match &settings.issuer {
            Some(issuer) => issuer.clone(),
            None => format!("fleetauth:{deployment_id}"),
        };
        let audience = settings.audience.clone().unwrap_or_else(|| issuer.clone());
        let ring = KeyRing::from_records(&store.signing_keys(now).await?)?;
        Ok(Arc::new(Self {
            store,
            clock,
            settings,
            issuer,
            audience,
            deployment_id,
            ring: RwLock::new(Arc::new(ring)),
            last_unknown_kid_reload: Mutex::new(None),
        }))
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` claim of this server's access tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The deployment's stable random id (32 hex digits).
    pub fn deployment_id(&self) -> &str {
        &self.deployment_id
    }

    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn store_ready(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// The token state at `key`.
    async fn state(&self, key: StateKey<'_>) -> Result<Option<TokenStateRecord>, StoreError> {
        match key {
            StateKey::Agent(id) => self.store.agent(id).await,
            StateKey::Family(id) => Ok(self
                .store
                .typed_record::<TokenFamilyRecord>(id)
                .await?
                .map(|family| family.state)),
        }
    }

    /// Applies a change to the token state at `key` atomically (see
    /// [`Store::update_agent`]); a family's record is created only by
    /// [`issue_family`](Self::issue_family), so a change never creates one.
    async fn update_state(
        &self,
        key: StateKey<'_>,
        mut change: AgentChange,
    ) -> Result<Option<TokenStateRecord>, StoreError> {
        match key {
            StateKey::Agent(id) => self.store.update_agent(id, change).await,
            StateKey::Family(id) => {
                let before = self
                    .store
                    .update_typed::<TokenFamilyRecord, _>(id, move |family| match family {
                        None => TypedWrite::Keep,
                        Some(family) => match change(Some(&family.state)) {
                            Some(state) => TypedWrite::Put(TokenFamilyRecord {
                                state,
                                ..family.clone()
                            }),
                            None => TypedWrite::Keep,
                        },
                    })
                    .await?;
                Ok(before.map(|family| family.state))
            }
        }
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn jwks(&self) -> JwkSet {
        self.ring().jwks()
    }

    /// Re-reads the signing keys (after `keys rotate`, possibly by another process).
    pub async fn reload_keys(&self) -> Result<(), TokenError> {
        let records = self.store.signing_keys(self.clock.now()).await?;
        if self.ring().built_from(&records) {
            // Nothing changed (the usual case for the periodic poll): keep the parsed keys.
            return Ok(());
        }
        let ring = KeyRing::from_records(&records)?;
        if self.ring().signing.kid != ring.signing.kid {
            tracing::info!(kid = %ring.signing.kid, "now signing with a new key");
        }
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        Ok(())
    }

    /// Polls the store for key changes for as long as the service lives.
    pub fn spawn_key_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let period = self.settings.key_poll_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = service.reload_keys().await {
                    tracing::warn!(error = %e, "could not reload signing keys");
                }
            }
        })
    }

    /// Trades a verified credential of `subject` for a new pair (stored as pending).
    pub async fn exchange(
        &self,
        subject: Subject<'_>,
        presented: TradedIn<'_>,
    ) -> Result<IssuedPair, TokenError> {
        self.exchange_scoped(subject, None, presented).await
    }

    /// [`exchange`](Self::exchange), for a pair that carries an OAuth2 `scope`.
    pub async fn exchange_scoped(
        &self,
        subject: Subject<'_>,
        scope: Option<&str>,
        presented: TradedIn<'_>,
    ) -> Result<IssuedPair, TokenError> {
        let now = self.clock.now();
        let (issued, new_pair) = self.mint(&subject, scope, now);
        let owned = OwnedTradedIn::from(presented);
        let change_pair = new_pair.clone();
        let change_presented = owned.clone();
        let before = self
            .update_state(
                subject.state_key(),
                Box::new(move |record| {
                    rotation::exchange(record, change_presented.borrow(), &change_pair, now).write
                }),
            )
            .await?;
        let decision = rotation::exchange(before.as_ref(), owned.borrow(), &new_pair, now);
        match decision.outcome {
            Outcome::Accepted { promoted } => {
                if promoted {
                    tracing::debug!(agent_id = subject.sub, "pending pair promoted");
                }
                Ok(issued)
            }
            Outcome::Refused(Refusal::Reused) => {
                tracing::warn!(
                    agent_id = subject.sub,
                    "refresh token reuse detected: all tokens of the agent revoked"
                );
                crate::telemetry::metrics::refresh_token_reuse();
                Err(Refusal::Reused.into())
            }
            Outcome::Refused(refusal) => Err(refusal.into()),
        }
    }

    /// Checks an access token's signature, type, issuer, audience and expiry. Reloads
    /// the key ring (rate-limited) when the `kid` is unknown, in case another process
    /// rotated keys.
    pub async fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let leeway = self.settings.leeway.as_secs() as i64;
        let verify = |ring: &KeyRing| {
            let expect = jwt::Expectations {
                issuer: &self.issuer,
                audience: Some(&self.audience),
                leeway,
                now: self.clock.now(),
            };
            jwt::verify(token, ring, &expect)
        };
        match verify(&self.ring()) {
            Err(JwtError::UnknownKey) if self.may_reload_for_unknown_kid() => {
                self.reload_keys().await?;
                Ok(verify(&self.ring())?)
            }
            other => Ok(other?),
        }
    }

    fn may_reload_for_unknown_kid(&self) -> bool {
        let mut last = self
            .last_unknown_kid_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= UNKNOWN_KID_RELOAD_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// The store half of access-token validation (skipped in stateless mode): the
    /// agent is enrolled and the `jti` is its current or pending pair's; a pending
    /// pair is promoted by this use.
    pub async fn confirm_access(&self, claims: &AccessClaims) -> Result<(), TokenError> {
        if self.settings.stateless {
            return Ok(());
        }
        let now = self.clock.now();
        let key = StateKey::of_claims(claims);
        let record = self.state(key).await?;
        let decision = rotation::confirm_access(record.as_ref(), &claims.jti, now);
        match decision.outcome {
            Outcome::Refused(refusal) => Err(refusal.into()),
            Outcome::Accepted { promoted: false } => Ok(()),
            Outcome::Accepted { promoted: true } => {
                let jti = claims.jti.clone();
                let before = self
                    .update_state(
                        key,
                        Box::new(move |r| rotation::confirm_access(r, &jti, now).write),
                    )
                    .await?;
                match rotation::confirm_access(before.as_ref(), &claims.jti, now).outcome {
                    Outcome::Accepted { .. } => Ok(()),
                    Outcome::Refused(refusal) => Err(refusal.into()),
                }
            }
        }
    }

    /// [`confirm_access`](Self::confirm_access) without its side effect: says whether
    /// the token is the current or pending pair's, and promotes nothing. For readers
    /// that are not the agent (introspection), whose look must not count as a use.
    pub async fn check_access(&self, claims: &AccessClaims) -> Result<(), TokenError> {
        if self.settings.stateless {
            return Ok(());
        }
        let record = self.state(StateKey::of_claims(claims)).await?;
        match rotation::confirm_access(record.as_ref(), &claims.jti, self.clock.now()).outcome {
            Outcome::Accepted { .. } => Ok(()),
            Outcome::Refused(refusal) => Err(refusal.into()),
        }
    }

    /// A read-only look at a refresh token: its expiry if it would be accepted now
    /// (current or pending, not expired, agent enrolled), else `None`.
    pub async fn inspect_refresh(
        &self,
        presented: &refresh::ParsedRefresh,
    ) -> Result<Option<UnixTime>, TokenError> {
        let record = self.state(StateKey::of_refresh(presented)).await?;
        Ok(rotation::inspect_refresh(
            record.as_ref(),
            &presented.hash,
            self.clock.now(),
        ))
    }

    /// Creates an empty, active token-state record for `subject` if there is none (a
    /// non-agent client whose pairs are kept like an agent's). An existing record is
    /// left alone, so an unenrolled subject stays unenrolled.
    pub async fn ensure_subject(&self, subject: &str) -> Result<(), TokenError> {
        if self.store.agent(subject).await?.is_some() {
            return Ok(());
        }
        let now = self.clock.now();
        let id = subject.to_string();
        self.store
            .update_agent(
                subject,
                Box::new(move |record| match record {
                    Some(_) => None,
                    None => Some(TokenStateRecord::enrolled(&id, now)),
                }),
            )
            .await?;
        Ok(())
    }

    /// Revokes the family of a refresh token (every token of its agent), RFC 7009.
    /// Returns whether anything was revoked.
    pub async fn revoke_refresh(
        &self,
        presented: &refresh::ParsedRefresh,
    ) -> Result<bool, TokenError> {
        let now = self.clock.now();
        let hash = presented.hash.clone();
        let before = self
            .update_state(
                StateKey::of_refresh(presented),
                Box::new(move |r| rotation::revoke_refresh(r, &hash, now)),
            )
            .await?;
        let revoked = rotation::revoke_refresh(before.as_ref(), &presented.hash, now).is_some();
        if revoked {
            tracing::info!(agent_id = %presented.agent_id, "refresh token revoked: all tokens of the subject revoked");
        }
        Ok(revoked)
    }

    /// Revokes the pair of a verified access token at once. Returns whether anything
    /// was revoked.
    pub async fn revoke_access(&self, claims: &AccessClaims) -> Result<bool, TokenError> {
        let now = self.clock.now();
        let jti = claims.jti.clone();
        let before = self
            .update_state(
                StateKey::of_claims(claims),
                Box::new(move |r| rotation::revoke_access(r, &jti, now)),
            )
            .await?;
        let revoked = rotation::revoke_access(before.as_ref(), &claims.jti, now).is_some();
        if revoked {
            tracing::info!(agent_id = %claims.sub, "access token revoked");
        }
        Ok(revoked)
    }

    /// The algorithms of the keys that sign or still verify, the signing one first.
    pub fn algorithms(&self) -> Vec<SigningAlgorithm> {
        self.ring().algorithms()
    }
}

/// Rotates the signing key: a new key (of the configured algorithm) signs from now on;
/// the old ones verify until every token they signed has expired.
pub async fn rotate_signing_key(
    store: &dyn Store,
    now: UnixTime,
    settings: &JwtSettings,
) -> Result<String, TokenError> {
    let key = SigningKey::generate(settings.algorithm, now)?;
    let kid = key.kid.clone();
    let verify_until =
        now + settings.access_ttl.as_secs() as i64 + settings.leeway.as_secs() as i64 + 1;
    store.rotate_signing_key(key, verify_until).await?;
    Ok(kid)
}

/// `TradedIn` with owned strings, so a store change closure can own it.
#[derive(Clone)]
enum OwnedTradedIn {
    ApiKey,
    AccessToken(String),
    RefreshToken(String),
}

impl From<TradedIn<'_>> for OwnedTradedIn {
    fn from(p: TradedIn<'_>) -> Self {
        match p {
            TradedIn::ApiKey => Self::ApiKey,
            TradedIn::AccessToken { jti } => Self::AccessToken(jti.to_string()),
            TradedIn::RefreshToken { hash } => Self::RefreshToken(hash.to_string()),
        }
    }
}

impl OwnedTradedIn {
    fn borrow(&self) -> TradedIn<'_> {
        match self {
            Self::ApiKey => TradedIn::ApiKey,
            Self::AccessToken(jti) => TradedIn::AccessToken { jti },
            Self::RefreshToken(hash) => TradedIn::RefreshToken { hash },
        }
    }
}
