//! The token service: mints access/refresh pairs, verifies access tokens, and applies
//! the rotation protocol through the store. Token formats are decided here
//! ([`jwt`], [`refresh`]), the rotation rules in [`rotation`], keys in [`keys`].
//!
//! What else it issues and keeps has a file of its own: the access tokens of subjects
//! admitted by the Vault JWT auth method and their use counters ([`external`]), and the
//! token API's token families ([`families`]); new tokens are minted in `minting.rs`.
//!
//! The service's own methods are split by job: this file is the service (start, its
//! settings, where a subject's state lives); `exchange.rs` issues pairs through the
//! store, `verify.rs` checks presented tokens and their state, `revoke.rs` revokes one
//! token or many, `key_upkeep.rs` keeps the key ring (reloads, JWKS, rotation).

pub mod dpop;
mod exchange;
mod external;
mod families;
pub mod jwt;
mod key_upkeep;
pub mod keys;
pub mod kind;
mod minting;
pub mod refresh;
pub mod revocation;
mod revoke;
pub mod rotation;
mod verify;

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

// What the token service's own files define, for one another.
use exchange::*;
use verify::*;

pub use key_upkeep::rotate_signing_key;

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
}
