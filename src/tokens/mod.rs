//! The token service: mints access/refresh pairs, verifies access tokens, and applies
//! the rotation protocol through the store. Token formats are decided here
//! ([`jwt`], [`refresh`]), the rotation rules in [`rotation`], keys in [`keys`].
//!
//! What else it issues and keeps has a file of its own: the access tokens of subjects
//! admitted by the Vault JWT auth method and their use counters ([`external`]), and the
//! token API's token families ([`families`]); new tokens are minted in `minting.rs`.

pub mod dpop;
mod external;
mod families;
pub mod jwt;
pub mod keys;
pub mod kind;
mod minting;
pub mod refresh;
pub mod revocation;
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
pub use revocation::{Criterion, Revoked, Watermark, WATERMARK_ID};
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
    /// The bulk-revocation watermark, refreshed with the key ring.
    watermark: RwLock<Arc<Watermark>>,
    last_unknown_kid_reload: Mutex<Option<Instant>>,
}

/// Whether a process that opens the token service may change the key ring itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDuty {
    /// `serve`: a changed `jwt.algorithm` rotates the signing key at start, and
    /// automatic rotation (`jwt.key_rotation_period`) runs.
    Server,
    /// An admin command beside a server: the ring is used as it is, whatever this
    /// process's `jwt.algorithm` says (only `keys rotate` changes it, explicitly).
    Admin,
}

impl TokenService {
    /// Makes sure a signing key of the configured algorithm exists, derives the issuer
    /// and loads the key ring (see [`KeyDuty`]).
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: JwtSettings,
    ) -> Result<Arc<Self>, TokenError> {
        Self::start_as(store, clock, settings, KeyDuty::Server).await
    }

    /// [`start`](Self::start) for a process with the given [`KeyDuty`].
    pub async fn start_as(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: JwtSettings,
        duty: KeyDuty,
    ) -> Result<Arc<Self>, TokenError> {
        let now = clock.now();
        let first = SigningKey::generate(settings.algorithm, now)?;
        let signing = store.insert_first_signing_key(first).await?;
        if signing.algorithm != settings.algorithm.as_str() {
            match duty {
                KeyDuty::Server => {
                    tracing::info!(from = %signing.algorithm, to = settings.algorithm.as_str(), "signing algorithm changed: rotating the signing key");
                    rotate_signing_key(store.as_ref(), now, &settings, settings.algorithm).await?;
                    crate::telemetry::metrics::signing_key_rotated("algorithm_changed");
                }
                KeyDuty::Admin => tracing::debug!(
                    stored = %signing.algorithm,
                    configured = settings.algorithm.as_str(),
                    "an admin command leaves the signing key alone"
                ),
            }
        }
        let deployment_id = store
            .meta_get_or_insert(DEPLOYMENT_ID, &uuid::Uuid::new_v4().simple().to_string())
            .await?;
        let issuer = match &settings.issuer {
            Some(issuer) => issuer.clone(),
            None => format!("fleetauth:{deployment_id}"),
        };
        let audience = settings.audience.clone().unwrap_or_else(|| issuer.clone());
        let ring = KeyRing::from_records_at(&store.signing_keys(now).await?, now)?;
        let watermark = read_watermark(store.as_ref()).await?;
        Ok(Arc::new(Self {
            store,
            clock,
            settings,
            issuer,
            audience,
            deployment_id,
            ring: RwLock::new(Arc::new(ring)),
            watermark: RwLock::new(Arc::new(watermark)),
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

    /// The token state at `key` for a check of its pairs only (an access token's use
    /// or look): an agent's retired refresh hashes are not read
    /// ([`Store::agent_pairs`]). The rotation decision of an access token's use does
    /// not look at them; a promotion re-reads the whole record in
    /// [`update_state`](Self::update_state).
    async fn pairs_state(&self, key: StateKey<'_>) -> Result<Option<TokenStateRecord>, StoreError> {
        match key {
            StateKey::Agent(id) => self.store.agent_pairs(id).await,
            StateKey::Family(_) => self.state(key).await,
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
        let now = self.clock.now();
        let records = self.store.signing_keys(now).await?;
        let current = self.ring();
        if current.built_from(&records) && !current.switch_due(now) {
            // Nothing changed (the usual case for the periodic poll): keep the parsed keys.
            return Ok(());
        }
        let ring = KeyRing::from_records_at(&records, now)?;
        if current.signing.kid != ring.signing.kid {
            tracing::info!(kid = %ring.signing.kid, "now signing with a new key");
        }
        if let Some(next) = ring.next() {
            if current.next().is_none_or(|n| n.kid != next.kid) {
                tracing::info!(kid = %next.kid, signs_from = next.created_at, "next signing key published");
            }
        }
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        Ok(())
    }

    /// Polls the store for key changes for as long as the service lives, and, with
    /// `jwt.key_rotation_period`, rotates the signing key when it is due
    /// ([`rotate_if_due`](Self::rotate_if_due)).
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
                    continue;
                }
                if let Err(e) = service.reload_watermark().await {
                    tracing::warn!(error = %e, "could not reload the revocation watermark");
                }
                if let Err(e) = service.rotate_if_due().await {
                    tracing::warn!(error = %e, "could not rotate the signing key");
                }
            }
        })
    }

    /// Automatic rotation (`jwt.key_rotation_period`): once the signing key has signed
    /// for `period - key_prepublish` and no next key is published, stores a new key
    /// that signs from `max(signing key's start + period, now + key_prepublish)`, and
    /// schedules the signing key's retirement at that instant; it verifies
    /// [`verify_after_retirement`](JwtSettings::verify_after_retirement) longer. The
    /// store's compare-and-set on the newest key makes exactly one of several instances
    /// succeed; the others see the new key at their next poll. Returns the new key's
    /// `kid` if this call rotated.
    pub async fn rotate_if_due(&self) -> Result<Option<String>, TokenError> {
        let Some(period) = self.settings.key_rotation_period else {
            return Ok(None);
        };
        let now = self.clock.now();
        let ring = self.ring();
        if ring.next().is_some() {
            return Ok(None);
        }
        let signing = ring.signer(now).clone();
        let prepublish = self.settings.key_prepublish.as_secs() as i64;
        // `now` is whole seconds (the real time may be up to 1 s later): one second
        // early, so that the next key is stored at least `prepublish` before it signs.
        let due_at = signing.created_at + period.as_secs() as i64 - prepublish - 1;
        if now < due_at {
            return Ok(None);
        }
        let signs_from = (signing.created_at + period.as_secs() as i64).max(now + prepublish + 1);
        let algorithm = signing.algorithm;
        // RSA key generation takes tens of milliseconds: off the async workers.
        let key = tokio::task::spawn_blocking(move || SigningKey::generate(algorithm, signs_from))
            .await
            .map_err(|_| KeyError::Generate(algorithm.as_str()))??;
        let kid = key.kid.clone();
        let verify_until = signs_from + self.settings.verify_after_retirement().as_secs() as i64;
        let rotated = self
            .store
            .schedule_signing_key(key, &signing.kid, verify_until)
            .await?;
        if !rotated {
            // Another instance (or an operator) changed the ring first: follow it.
            self.reload_keys().await?;
            return Ok(None);
        }
        crate::telemetry::metrics::signing_key_rotated("scheduled");
        tracing::info!(kid = %kid, signs_from, retiring = %signing.kid, "signing key rotation scheduled");
        self.reload_keys().await?;
        Ok(Some(kid))
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
        let decided = DecidedOutcome::default();
        let change_decided = decided.clone();
        let before = self
            .update_state(
                subject.state_key(),
                Box::new(move |record| {
                    let decision = rotation::exchange(record, owned.borrow(), &new_pair, now);
                    change_decided.set(decision.outcome);
                    decision.write
                }),
            )
            .await?;
        let outcome = decided.get().unwrap_or_else(|| {
            // A store that never called the change (none does today) decided nothing:
            // refuse as for a token that is not current.
            Outcome::Refused(if before.is_none() {
                Refusal::UnknownAgent
            } else {
                Refusal::NotCurrent
            })
        });
        match outcome {
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
        let claims = match verify(&self.ring()) {
            Err(JwtError::UnknownKey) if self.may_reload_for_unknown_kid() => {
                self.reload_keys().await?;
                verify(&self.ring())?
            }
            other => other?,
        };
        // Tokens whose state this use does not read: stateless mode, a client's own
        // token (`sub` = `client_id`), an external subject's (`vault_role`).
        let unstored = self.settings.stateless
            || claims.vault_role.is_some()
            || (claims.sid.is_none() && claims.sub == claims.client_id);
        if self.watermark().refuses(&claims, unstored) {
            return Err(Refusal::NotCurrent.into());
        }
        Ok(claims)
    }

    fn watermark(&self) -> Arc<Watermark> {
        self.watermark
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the bulk-revocation watermark (written by any instance or CLI).
    pub async fn reload_watermark(&self) -> Result<(), TokenError> {
        let watermark = read_watermark(self.store.as_ref()).await?;
        if *self.watermark() != watermark {
            *self.watermark.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(watermark);
        }
        Ok(())
    }

    /// Bulk revocation (see [`revocation`]): writes the watermark (durable before this
    /// returns, applied here at once and by every other instance within
    /// `jwt.key_poll_interval`), removes a revoked signing key from the ring, and drops
    /// the matching pairs from every token-state record they are in, each by an atomic
    /// change (stateful validation refuses them at once on every instance).
    pub async fn revoke_bulk(&self, criterion: &Criterion) -> Result<Revoked, TokenError> {
        let now = self.clock.now();
        let keep = self.settings.verify_after_retirement().as_secs() as i64;
        let mut revoked = Revoked::default();
        if !matches!(criterion, Criterion::Kid(_)) {
            let added = criterion.clone();
            self.store
                .update_record(
                    RecordKind::Revocations,
                    WATERMARK_ID,
                    Box::new(move |current| {
                        let watermark = current
                            .and_then(|r| serde_json::from_value::<Watermark>(r.body.clone()).ok())
                            .unwrap_or_default()
                            .with(&added, now, keep);
                        RecordWrite::Put(StoredRecord {
                            id: WATERMARK_ID.to_string(),
                            owner: None,
                            purge_after: None,
                            body: serde_json::to_value(&watermark).unwrap_or_default(),
                        })
                    }),
                )
                .await?;
            self.reload_watermark().await?;
        }
        let poll = self.settings.key_poll_interval.as_secs() as i64 + 1;
        // Which pairs, by issue time, and in which records.
        let (from, until, keys) = match criterion {
            Criterion::Agent(agent) => (UnixTime::MIN, UnixTime::MAX, vec![agent.clone()]),
            Criterion::Client(client) => {
                let mut ids = vec![client.clone()];
                if let Some(agent) = self.store.api_key(client).await?.and_then(|k| k.agent_id) {
                    ids.push(agent);
                }
                (UnixTime::MIN, UnixTime::MAX, ids)
            }
            Criterion::Kid(kid) => {
                let Some(key) = self
                    .store
                    .signing_keys(now)
                    .await?
                    .into_iter()
                    .find(|k| &k.kid == kid)
                else {
                    return Err(TokenError::Keys(KeyError::UnknownKid(kid.clone())));
                };
                if self.ring().signer(now).kid == key.kid || key.created_at > now {
                    // It signs (or is about to): a fresh key of its algorithm takes over.
                    let algorithm =
                        SigningAlgorithm::parse(&key.algorithm).unwrap_or(self.settings.algorithm);
                    rotate_signing_key(self.store.as_ref(), now, &self.settings, algorithm).await?;
                    crate::telemetry::metrics::signing_key_rotated("revoked");
                }
                if self.store.expire_signing_key(kid, now).await? {
                    revoked.signing_keys = 1;
                }
                self.reload_keys().await?;
                // Pairs issued while it signed, with the poll interval of the other
                // instances as a margin (an instance may sign with a retired key until
                // its next poll).
                let stopped = key.retired_at.map_or(now, |t| t.min(now));
                (
                    key.created_at,
                    stopped + poll,
                    self.store.agent_ids().await?,
                )
            }
            Criterion::IssuedBefore(t) => (UnixTime::MIN, *t, self.store.agent_ids().await?),
        };
        let mut states: Vec<(bool, String)> = keys.into_iter().map(|id| (false, id)).collect();
        if matches!(criterion, Criterion::Kid(_) | Criterion::IssuedBefore(_)) {
            for family in self.families_of(None).await? {
                states.push((true, family.family_id));
            }
        }
        for (is_family, id) in states {
            let key = if is_family {
                StateKey::Family(&id)
            } else {
                StateKey::Agent(&id)
            };
            let doomed = move |p: &TokenPairRecord| revocation::issued_within(p, from, until);
            let before = self
                .update_state(
                    key,
                    Box::new(move |r| revocation::drop_pairs(r, doomed, now).map(|(next, _)| next)),
                )
                .await?;
            if let Some((_, pairs)) = revocation::drop_pairs(before.as_ref(), doomed, now) {
                revoked.families += 1;
                revoked.pairs += pairs;
            }
        }
        crate::telemetry::metrics::bulk_revocation(criterion.label(), revoked.pairs);
        tracing::info!(
            by = criterion.label(),
            families = revoked.families,
            pairs = revoked.pairs,
            signing_keys = revoked.signing_keys,
            "bulk revocation"
        );
        Ok(revoked)
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
        let record = self.pairs_state(key).await?;
        let decision = rotation::confirm_access(record.as_ref(), &claims.jti, now);
        match decision.outcome {
            Outcome::Refused(refusal) => Err(refusal.into()),
            Outcome::Accepted { promoted: false } => Ok(()),
            Outcome::Accepted { promoted: true } => {
                let jti = claims.jti.clone();
                let decided = DecidedOutcome::default();
                let change_decided = decided.clone();
                self.update_state(
                    key,
                    Box::new(move |r| {
                        let decision = rotation::confirm_access(r, &jti, now);
                        change_decided.set(decision.outcome);
                        decision.write
                    }),
                )
                .await?;
                match decided.get() {
                    Some(Outcome::Accepted { .. }) => Ok(()),
                    Some(Outcome::Refused(refusal)) => Err(refusal.into()),
                    None => Err(Refusal::NotCurrent.into()),
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
        let record = self.pairs_state(StateKey::of_claims(claims)).await?;
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

    /// The algorithm of the key that signs now.
    pub fn signing_algorithm(&self) -> SigningAlgorithm {
        self.ring().signer(self.clock.now()).algorithm
    }

    /// The algorithms of the keys that sign or still verify, the signing one first.
    pub fn algorithms(&self) -> Vec<SigningAlgorithm> {
        self.ring().algorithms()
    }
}

/// The outcome of the rotation decision a store change made, taken out of the change
/// so that it is computed once per attempt, not again on the record the store returns.
/// A store may call a change more than once (a compare-and-set lost to a concurrent
/// writer is retried with the newer record); the last call is the one whose write was
/// applied, and its outcome is the one kept.
#[derive(Clone, Default)]
struct DecidedOutcome(Arc<Mutex<Option<Outcome>>>);

impl DecidedOutcome {
    fn set(&self, outcome: Outcome) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
    }

    fn get(&self) -> Option<Outcome> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The stored watermark (none yet: an empty one). An unreadable record is an error, not
/// an empty watermark: revocations are never silently forgotten.
async fn read_watermark(store: &dyn Store) -> Result<Watermark, StoreError> {
    match store.record(RecordKind::Revocations, WATERMARK_ID).await? {
        None => Ok(Watermark::default()),
        Some(record) => serde_json::from_value(record.body)
            .map_err(|e| StoreError::Corrupt(format!("revocation watermark: {e}"))),
    }
}

/// Rotates the signing key at once: a new key of `algorithm` signs from now on; the
/// old ones verify until every token they signed has expired
/// ([`JwtSettings::verify_after_retirement`]).
pub async fn rotate_signing_key(
    store: &dyn Store,
    now: UnixTime,
    settings: &JwtSettings,
    algorithm: SigningAlgorithm,
) -> Result<String, TokenError> {
    let key = SigningKey::generate(algorithm, now)?;
    let kid = key.kid.clone();
    let verify_until = now + settings.verify_after_retirement().as_secs() as i64;
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
