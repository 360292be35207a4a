//! Enrollment (SPEC §7): enrollment tokens, and `POST /api/fleet/agents/enroll`.
//!
//! An enrollment token is, as in Fleet, an API key: its secret is stored only as an
//! argon2id hash by the [`ApiKeyService`], and its owner metadata says which policy it
//! enrolls into (under the reserved key [`ENROLLMENT_TOKEN_MARKER`], plus Fleet's own
//! `type: enroll` / `policy_id` fields). The API key service accepts such a key for
//! enrollment only, never as a client or agent credential. A token with `max_uses` has
//! a use counter (a `TokenUses` record, `enrollment:<key id>`) taken atomically per
//! enrollment; every token is also rate-limited by a token bucket ([`limiter`]).
//!
//! Enrolling creates the agent (or replaces it, see [`EnrollmentService::enroll`]),
//! keeps what it enrolled with as an [`EnrolledAgentRecord`], and gives it either a
//! per-agent API key (as before) or, when the agent accepts JWTs, its first token pair,
//! issued by [`GrantService::issue_enrolled`] exactly as the Fleet door issues an API-key
//! exchange's pair (pending until first used).

pub mod limiter;
mod tokens;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::agents;
use crate::api_keys::{ApiKeyError, ApiKeyService};
use crate::clock::{Clock, UnixTime};
use crate::config::EnrollmentSettings;
use crate::grant::{DpopRequest, GrantError, GrantService};
use crate::secrets::{SecretError, ThrottleReason};
use crate::store::{
    ApiKeyFilter, ApiKeyOwner, ApiKeyRecord, RecordKind, RecordWrite, SecurityRecord, Store,
    StoreError, StoredRecord, TypedWrite, ENROLLMENT_TOKEN_MARKER,
};
use crate::telemetry::metrics;
use crate::tokens::IssuedPair;
use limiter::EnrollmentLimiter;

/// The longest policy id accepted.
const MAX_POLICY_ID_LEN: usize = 256;
/// Most tags an agent may enroll with, and the longest tag.
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    /// The enrollment token was refused (unknown, wrong secret, revoked, expired, used
    /// up, or not an enrollment token).
    #[error("{description}")]
    Unauthorized {
        reason: &'static str,
        description: String,
    },
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The agent id belongs to an agent that this request may not replace.
    #[error("{0}")]
    Conflict(String),
    /// Not now: the token's enrollment bucket is empty, or its check was throttled (the
    /// argon2 budget, failure limits per address or per credential); retry after
    /// `retry_after` seconds. `cause` says which, for the answer.
    #[error("{cause}; retry in {retry_after} s")]
    RateLimited {
        retry_after: u64,
        cause: &'static str,
    },
    /// Issuing the pair was refused or failed (DPoP proof, store).
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EnrollmentError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized { reason, .. } => reason,
            Self::BadRequest(_) => "bad_request",
            Self::Conflict(_) => "agent_id_in_use",
            Self::RateLimited { .. } => "rate_limited",
            Self::Grant(e) => e.reason(),
            Self::Store(_) => "store_unavailable",
        }
    }

    /// The [`FailureReason`](metrics::FailureReason) of the metrics.
    pub fn failure_reason(&self) -> metrics::FailureReason {
        match self {
            Self::Unauthorized { .. } => metrics::FailureReason::InvalidClient,
            Self::BadRequest(_) => metrics::FailureReason::InvalidRequest,
            Self::Conflict(_) => metrics::FailureReason::Conflict,
            Self::RateLimited { .. } => metrics::FailureReason::Throttled,
            Self::Grant(e) => e.failure_reason(),
            Self::Store(_) => metrics::FailureReason::Unavailable,
        }
    }

    fn unauthorized(reason: &'static str) -> Self {
        Self::Unauthorized {
            reason,
            description: "invalid enrollment token".into(),
        }
    }
}

impl From<ApiKeyError> for EnrollmentError {
    fn from(e: ApiKeyError) -> Self {
        match e {
            ApiKeyError::Store(s) => Self::Store(s),
            ApiKeyError::Secret(SecretError::Throttled(t)) => Self::RateLimited {
                retry_after: t.retry_after_secs(),
                cause: match t.reason {
                    ThrottleReason::Busy => "too many credential checks are in progress",
                    ThrottleReason::ClientAddress => {
                        "too many failed credential checks from this address"
                    }
                    ThrottleReason::Credential => "too many failed checks of this enrollment token",
                },
            },
            ApiKeyError::Secret(SecretError::Hashing(h)) => Self::Grant(GrantError::Internal(h)),
            other => Self::unauthorized(other.reason()),
        }
    }
}

/// What an enrollment token enrolls into, as kept in its owner metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentPolicy {
    pub policy_id: String,
    /// `None`: unlimited.
    pub max_uses: Option<u32>,
}

/// An enrollment token as listed (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct EnrollmentToken {
    /// The API key id (Fleet's `id` and `api_key_id` are the same here).
    pub id: String,
    pub api_key_id: String,
    pub name: String,
    pub policy_id: String,
    /// False once revoked or expired.
    pub active: bool,
    /// RFC 3339.
    pub created_at: String,
    /// Expiry in milliseconds since the epoch, if any.
    pub expiration: Option<i64>,
    pub max_uses: Option<u32>,
    /// Enrollments left, when `max_uses` is set.
    pub uses_left: Option<u32>,
}

/// A token as created: the listing plus its secret, shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedEnrollmentToken {
    #[serde(flatten)]
    pub token: EnrollmentToken,
    /// The secret part.
    pub api_key: String,
    /// `base64(id ":" api_key)`, the value of `Authorization: ApiKey …`.
    pub encoded: String,
}

/// Who creates a token (kept as the API key's owner).
#[derive(Debug, Clone)]
pub struct Creator {
    pub username: String,
    pub realm: String,
    pub realm_type: String,
}

impl Creator {
    /// The command line, acting as the built-in superuser.
    pub fn cli() -> Self {
        Self {
            username: crate::identity::users::ELASTIC.to_string(),
            realm: "reserved".into(),
            realm_type: "reserved".into(),
        }
    }
}

/// What an administrator asks for.
#[derive(Debug, Clone, Default)]
pub struct NewEnrollmentToken {
    pub policy_id: String,
    pub name: Option<String>,
    pub expires_at: Option<UnixTime>,
    pub max_uses: Option<u32>,
}

/// What an agent enrolled with (kept by agent id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrolledAgentRecord {
    pub agent_id: String,
    pub policy_id: String,
    /// `PERMANENT`, `EPHEMERAL` or `TEMPORARY`.
    pub agent_type: String,
    pub enrollment_token_id: String,
    pub enrolled_at: UnixTime,
    pub local_metadata: Value,
    pub user_provided_metadata: Value,
    pub tags: Vec<String>,
    /// SHA-256 (hex) of the `replace_token` the agent enrolled with, if any: a later
    /// enrollment with the same id must present it.
    pub replace_token_hash: Option<String>,
    /// How the agent authenticates: `api_key` or `jwt`.
    pub auth: String,
}

impl SecurityRecord for EnrolledAgentRecord {
    const KIND: RecordKind = RecordKind::EnrolledAgent;
    fn id(&self) -> String {
        self.agent_id.clone()
    }
    fn owner(&self) -> Option<String> {
        Some(self.policy_id.clone())
    }
}

/// The body of `POST /api/fleet/agents/enroll` (Fleet Server's `EnrollRequest`). Other
/// fields are ignored, as Fleet Server ignores them (agents of other versions send more).
#[derive(Debug, Clone, Deserialize)]
pub struct EnrollRequest {
    #[serde(rename = "type")]
    pub agent_type: String,
    /// The agent id to enroll as (else one is generated).
    #[serde(default)]
    pub id: Option<String>,
    /// Deprecated in Fleet Server; accepted and ignored.
    #[serde(default)]
    pub shared_id: Option<String>,
    #[serde(default)]
    pub replace_token: Option<String>,
    /// Fleet Server's enrollment id (accepted and ignored).
    #[serde(default)]
    pub enrollment_id: Option<String>,
    pub metadata: EnrollMetadata,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EnrollMetadata {
    pub local: Map<String, Value>,
    #[serde(default)]
    pub user_provided: Map<String, Value>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The credential an enrolled agent is given.
#[derive(Debug, Clone)]
pub enum EnrolledCredential {
    ApiKey { id: String, encoded: String },
    Pair(IssuedPair),
}

/// An enrollment's outcome.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub record: EnrolledAgentRecord,
    pub credential: EnrolledCredential,
    /// Whether an existing agent with this id was replaced (its credentials revoked).
    pub replaced: bool,
}

pub struct EnrollmentService {
    store: Arc<dyn Store>,
    api_keys: Arc<ApiKeyService>,
    grants: Arc<GrantService>,
    clock: Arc<dyn Clock>,
    limiter: EnrollmentLimiter,
}

fn uses_id(key_id: &str) -> String {
    format!("enrollment:{key_id}")
}

fn rfc3339(t: UnixTime) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// The policy of an enrollment token's record (`None`: not an enrollment token).
pub fn policy_of(key: &ApiKeyRecord) -> Option<EnrollmentPolicy> {
    let owner = key.owner.as_ref()?;
    serde_json::from_value(owner.metadata.get(ENROLLMENT_TOKEN_MARKER)?.clone()).ok()
}

fn valid_policy_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_POLICY_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

impl EnrollmentService {
    pub fn new(
        store: Arc<dyn Store>,
        api_keys: Arc<ApiKeyService>,
        grants: Arc<GrantService>,
        clock: Arc<dyn Clock>,
        settings: EnrollmentSettings,
    ) -> Self {
        Self {
            store,
            api_keys,
            grants,
            clock,
            limiter: EnrollmentLimiter::new(settings),
        }
    }

    /// Takes one use of a token with `max_uses`, atomically; refuses when none is left.
    async fn take_use(&self, key_id: &str) -> Result<(), EnrollmentError> {
        let id = uses_id(key_id);
        let before = self
            .store
            .update_record(
                RecordKind::TokenUses,
                &id,
                Box::new(move |record| {
                    let Some(record) = record else {
                        return RecordWrite::Keep;
                    };
                    match record.body.get("remaining").and_then(Value::as_u64) {
                        Some(n) if n >= 1 => RecordWrite::Put(StoredRecord {
                            body: json!({ "remaining": n - 1 }),
                            ..record.clone()
                        }),
                        _ => RecordWrite::Keep,
                    }
                }),
            )
            .await?;
        match before
            .as_ref()
            .and_then(|r| r.body.get("remaining").and_then(Value::as_u64))
        {
            Some(n) if n >= 1 => Ok(()),
            _ => Err(EnrollmentError::unauthorized("enrollment_token_used_up")),
        }
    }

    /// `POST /api/fleet/agents/enroll`.
    ///
    /// The enrollment token is verified, then rate-limited, then (with `max_uses`) one
    /// use is taken. An agent id that exists may be enrolled again (its old API keys and
    /// tokens are revoked first) only if it was enrolled here into the same policy and,
    /// when it enrolled with a `replace_token`, this request presents the same one; an
    /// agent made otherwise (the CLI) or of another policy is a conflict. With
    /// `accept_jwt`, the agent gets a token pair (bound to the DPoP key proved in
    /// `dpop`, if any) and no API key; without, a per-agent API key.
    pub async fn enroll(
        &self,
        token_id: &str,
        token_secret: &str,
        request: EnrollRequest,
        accept_jwt: bool,
        dpop: &DpopRequest<'_>,
    ) -> Result<Enrolled, EnrollmentError> {
        let result = self
            .enroll_inner(token_id, token_secret, request, accept_jwt, dpop)
            .await;
        let auth = if accept_jwt { "jwt" } else { "api_key" };
        match &result {
            Ok(enrolled) => {
                let outcome = if enrolled.replaced {
                    "replaced"
                } else {
                    "created"
                };
                metrics::enrollment(outcome, auth);
            }
            Err(e) => {
                metrics::enrollment("refused", auth);
                metrics::auth_failure(e.failure_reason(), e.reason());
            }
        }
        result
    }

    async fn enroll_inner(
        &self,
        token_id: &str,
        token_secret: &str,
        request: EnrollRequest,
        accept_jwt: bool,
        dpop: &DpopRequest<'_>,
    ) -> Result<Enrolled, EnrollmentError> {
        let key = self
            .api_keys
            .verify_enrollment_token(token_id, token_secret)
            .await?;
        let binding = match accept_jwt {
            true => Some(self.grants.enrollment_binding(dpop)?),
            false => None,
        };
        let policy = policy_of(&key)
            .ok_or_else(|| EnrollmentError::unauthorized("enrollment_token_corrupt"))?;
        let agent_type = request.agent_type.to_ascii_uppercase();
        if !["PERMANENT", "EPHEMERAL", "TEMPORARY"].contains(&agent_type.as_str()) {
            return Err(EnrollmentError::BadRequest(format!(
                "type {:?} is not one of PERMANENT, EPHEMERAL, TEMPORARY",
                request.agent_type
            )));
        }
        if request.metadata.tags.len() > MAX_TAGS
            || request
                .metadata
                .tags
                .iter()
                .any(|t| t.is_empty() || t.len() > MAX_TAG_LEN)
        {
            return Err(EnrollmentError::BadRequest(format!(
                "metadata.tags: at most {MAX_TAGS} tags of 1 to {MAX_TAG_LEN} bytes"
            )));
        }
        let agent_id = match &request.id {
            Some(id) if !agents::valid_agent_id(id) => {
                return Err(EnrollmentError::BadRequest(format!(
                    "id must be 1 to {} characters of A-Z a-z 0-9 - _ . : @",
                    agents::MAX_AGENT_ID_LEN
                )))
            }
            Some(id) => id.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        if let Some(replace) = &request.replace_token {
            if replace.is_empty() || replace.len() > 1024 {
                return Err(EnrollmentError::BadRequest(
                    "replace_token must be 1 to 1024 bytes".into(),
                ));
            }
        }
        let now = self.clock.now();
        self.limiter
            .take(&key.id, now)
            .map_err(|retry_after| EnrollmentError::RateLimited {
                retry_after,
                cause: "too many enrollments with this token",
            })?;
        if policy.max_uses.is_some() {
            self.take_use(&key.id).await?;
        }

        // An agent made without enrollment (the CLI) is not ours to replace.
        let existing_agent = self.store.agent(&agent_id).await?;
        let record = EnrolledAgentRecord {
            agent_id: agent_id.clone(),
            policy_id: policy.policy_id.clone(),
            agent_type,
            enrollment_token_id: key.id.clone(),
            enrolled_at: now,
            local_metadata: Value::Object(request.metadata.local),
            user_provided_metadata: Value::Object(request.metadata.user_provided),
            tags: request.metadata.tags,
            replace_token_hash: request.replace_token.as_deref().map(sha256_hex),
            auth: if accept_jwt { "jwt" } else { "api_key" }.into(),
        };
        let replace_hash = record.replace_token_hash.clone();
        let new_record = record.clone();
        let policy_id = policy.policy_id.clone();
        let agent_existed = existing_agent.is_some();
        // The enrollment record is the decision point: written only if absent (and no
        // agent of that id exists) or replaceable, atomically.
        let before = self
            .store
            .update_typed::<EnrolledAgentRecord, _>(&agent_id, move |current| match current {
                None if agent_existed => TypedWrite::Keep,
                None => TypedWrite::Put(new_record.clone()),
                Some(current) if may_replace(current, &policy_id, replace_hash.as_deref()) => {
                    TypedWrite::Put(new_record.clone())
                }
                Some(_) => TypedWrite::Keep,
            })
            .await?;
        let replaced = match &before {
            None if agent_existed => {
                return Err(EnrollmentError::Conflict(format!(
                    "agent {agent_id} exists and was not enrolled with an enrollment token"
                )))
            }
            None => false,
            Some(current)
                if may_replace(
                    current,
                    &policy.policy_id,
                    record.replace_token_hash.as_deref(),
                ) =>
            {
                true
            }
            Some(_) => {
                return Err(EnrollmentError::Conflict(format!(
                "agent {agent_id} is already enrolled (another policy, or another replace_token)"
            )))
            }
        };
        if replaced || agent_existed {
            // Every credential of the previous enrollment stops working at once.
            agents::unenroll(self.store.as_ref(), &agent_id, now).await?;
            tracing::info!(agent_id = %agent_id, "agent re-enrolled: its previous credentials are revoked");
        }
        agents::enroll(self.store.as_ref(), &agent_id, now).await?;
        let credential = if let Some(binding) = &binding {
            let pair = self
                .grants
                .issue_enrolled(&agent_id, &key.id, binding)
                .await?;
            EnrolledCredential::Pair(pair)
        } else {
            let created = self
                .api_keys
                .create(&format!("agent-{agent_id}"), Some(&agent_id), None)
                .await?;
            EnrolledCredential::ApiKey {
                id: created.id,
                encoded: created.encoded,
            }
        };
        tracing::info!(agent_id = %agent_id, policy_id = %record.policy_id, enrollment_token = %key.id, replaced, "agent enrolled");
        Ok(Enrolled {
            record,
            credential,
            replaced,
        })
    }
}

/// Whether an enrollment may replace the agent enrolled as `current`: same policy, and
/// the same replace token when the agent enrolled with one (compared in constant time).
fn may_replace(current: &EnrolledAgentRecord, policy_id: &str, replace_hash: Option<&str>) -> bool {
    if current.policy_id != policy_id {
        return false;
    }
    match (&current.replace_token_hash, replace_hash) {
        (None, _) => true,
        (Some(expected), Some(presented)) => {
            bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
        }
        (Some(_), None) => false,
    }
}

/// The agent as Fleet Server's enrollment response describes it (`item`).
pub fn response_item(enrolled: &Enrolled) -> Value {
    let r = &enrolled.record;
    let mut item = json!({
        "id": r.agent_id,
        "active": true,
        "policy_id": r.policy_id,
        "type": r.agent_type,
        "enrolled_at": rfc3339(r.enrolled_at),
        "user_provided_metadata": r.user_provided_metadata,
        "local_metadata": r.local_metadata,
        "tags": r.tags,
        "status": "online",
        "actions": [],
    });
    match &enrolled.credential {
        EnrolledCredential::ApiKey { id, encoded } => {
            item["access_api_key_id"] = json!(id);
            item["access_api_key"] = json!(encoded);
        }
        EnrolledCredential::Pair(pair) => {
            item["access_token"] = json!(pair.access_token);
            item["refresh_token"] = json!(pair.refresh_token);
            item["expires_in"] = json!(pair.expires_in);
            item["token_type"] = json!(pair.token_type());
        }
    }
    item
}
