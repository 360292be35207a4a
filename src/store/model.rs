//! The records the store keeps. Plain data: no behaviour beyond small accessors, no
//! secrets in clear (refresh tokens as SHA-256 hex, API keys as argon2id PHC strings).

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;

/// The token state of one subject (index `.fleet-agents` in Elasticsearch): an agent,
/// a non-agent client with stored pairs (keyed by its client id), or, inside a token
/// family's record, a family of the token API. `agent_id` is the key: the agent id or
/// the client id.
///
/// At most one *current* and one *pending* pair (SPEC §3): a new issuance is stored as
/// pending; its first use promotes it to current and retires the old current pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenStateRecord {
    pub agent_id: String,
    /// False once unenrolled: every credential of the agent stops working.
    pub active: bool,
    pub current: Option<TokenPairRecord>,
    pub pending: Option<TokenPairRecord>,
    /// Refresh tokens of pairs that were current and have been superseded, newest
    /// first, kept (bounded) until they expire so that their reuse can be detected.
    pub retired: Vec<RetiredRefresh>,
    pub updated_at: UnixTime,
}

impl TokenStateRecord {
    pub fn enrolled(agent_id: &str, now: UnixTime) -> Self {
        Self {
            agent_id: agent_id.to_string(),
            active: true,
            current: None,
            pending: None,
            retired: Vec::new(),
            updated_at: now,
        }
    }
}

/// What is stored of one issued pair: the JWT ID and the refresh token's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPairRecord {
    pub jti: String,
    /// Lower-case hex SHA-256 of the refresh token.
    pub refresh_hash: String,
    pub access_expires_at: UnixTime,
    pub refresh_expires_at: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredRefresh {
    pub refresh_hash: String,
    pub expires_at: UnixTime,
}

/// An API key. The secret is kept only as an argon2id hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// The agent this key enrolls, if it is an agent's key.
    pub agent_id: Option<String>,
    /// argon2id PHC string of the secret.
    pub hash: String,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
    pub invalidated_at: Option<UnixTime>,
    /// Set for keys created through `POST /_security/api_key`.
    #[serde(default)]
    pub owner: Option<ApiKeyOwner>,
}

/// The owner-metadata key that makes an API key an enrollment token (SPEC §7): its
/// value holds the policy. The leading underscore reserves it (the API key API refuses
/// such metadata keys, as Elasticsearch does), so only `src/enrollment/` makes them.
pub const ENROLLMENT_TOKEN_MARKER: &str = "_fleetauth_enrollment";

impl ApiKeyRecord {
    /// Whether the key is an enrollment token: accepted by `POST /api/fleet/agents/enroll`
    /// only, never as a client or agent credential.
    pub fn is_enrollment_token(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|o| o.metadata.get(ENROLLMENT_TOKEN_MARKER).is_some())
    }
}

/// Which API keys a listing wants (every given part must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeyFilter {
    pub name: Option<String>,
    /// The owner's username.
    pub username: Option<String>,
    /// The owner's realm name.
    pub realm: Option<String>,
}

impl ApiKeyFilter {
    pub fn matches(&self, key: &ApiKeyRecord) -> bool {
        let owner = key.owner.as_ref();
        self.name.as_ref().is_none_or(|n| n == &key.name)
            && self
                .username
                .as_ref()
                .is_none_or(|u| owner.is_some_and(|o| &o.username == u))
            && self
                .realm
                .as_ref()
                .is_none_or(|r| owner.is_some_and(|o| &o.realm == r))
    }
}

/// A JWT signing key. The newest key without `retired_at` signs; retired keys still
/// verify until `verify_until`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// "EdDSA", "ES256" or "RS256".
    pub algorithm: String,
    /// PKCS#8 DER of the private key.
    pub private_der: Vec<u8>,
    pub created_at: UnixTime,
    pub retired_at: Option<UnixTime>,
    /// After this, no token signed by the key can still be live.
    pub verify_until: Option<UnixTime>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_der", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("verify_until", &self.verify_until)
            .finish()
    }
}

/// Who created an API key through `POST /_security/api_key`, and what it may do. Keys
/// made by the CLI (agents' keys, plain OAuth2 clients) have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyOwner {
    pub username: String,
    /// The realm that authenticated the creator (`default_native`, `reserved`,
    /// `_service_account`, ...).
    pub realm: String,
    pub realm_type: String,
    /// The role descriptors asked for at creation (an object, Elasticsearch's format);
    /// empty: the key may do what its creator could.
    pub role_descriptors: serde_json::Value,
    /// The creator's role descriptors at creation (an array of such objects): the key
    /// can never do more than they allow, whatever `role_descriptors` asks for.
    pub limited_by: serde_json::Value,
    /// Free-form metadata (an object).
    pub metadata: serde_json::Value,
}

/// The kinds of [`StoredRecord`]s: the records of the Elasticsearch-compatible
/// security APIs. Each kind is its own index in Elasticsearch and its own rows of one
/// table in SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A native user ([`UserRecord`]).
    User,
    /// A role defined through the role API ([`RoleRecord`]).
    Role,
    /// The token state of one `POST /_security/oauth2/token` grant and its refreshes
    /// ([`TokenFamilyRecord`]).
    TokenFamily,
    /// A service-account token ([`ServiceTokenRecord`]).
    ServiceToken,
    /// The Vault-compatible JWT auth method's config (one record, opaque JSON).
    JwtAuthConfig,
    /// A role of the Vault-compatible JWT auth method (opaque JSON).
    JwtAuthRole,
    /// The uses left of a use-limited access token, by JWT ID (opaque JSON), kept
    /// until the token expires; also the uses left of an enrollment token with a
    /// `max_uses`.
    TokenUses,
    /// What an agent enrolled with (policy, type, metadata), by agent id (opaque JSON,
    /// read by `src/enrollment/`).
    EnrolledAgent,
    /// The bulk-revocation watermark (one record, opaque JSON, read by `src/tokens/`):
    /// what every instance refuses on every access token, refreshed with the key ring.
    Revocations,
    /// The coarse "last used" time of an API key, by key id (opaque JSON, read by
    /// `src/api_keys.rs`): written at most once per key per `api_keys.last_used_interval`.
    ApiKeyUse,
}

impl RecordKind {
    pub const ALL: [RecordKind; 10] = [
        Self::User,
        Self::Role,
        Self::TokenFamily,
        Self::ServiceToken,
        Self::JwtAuthConfig,
        Self::JwtAuthRole,
        Self::TokenUses,
        Self::EnrolledAgent,
        Self::Revocations,
        Self::ApiKeyUse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Role => "role",
            Self::TokenFamily => "token_family",
            Self::ServiceToken => "service_token",
            Self::JwtAuthConfig => "jwt_auth_config",
            Self::JwtAuthRole => "jwt_auth_role",
            Self::TokenUses => "token_uses",
            Self::EnrolledAgent => "enrolled_agent",
            Self::Revocations => "revocations",
            Self::ApiKeyUse => "api_key_use",
        }
    }
}

/// One security record as the store keeps it: the parts the store itself uses (the id,
/// the owner that listings filter on, the time after which the record may be removed)
/// and the typed record as JSON. [`SecurityRecord`] converts to and from typed records.
#[derive(Clone, PartialEq)]
pub struct StoredRecord {
    pub id: String,
    /// Who the record belongs to (a username, a service account): what
    /// [`Store::records`](super::Store::records) filters on.
    pub owner: Option<String>,
    /// After this, nothing in the record can still be valid:
    /// [`Store::purge_records`](super::Store::purge_records) may remove it.
    pub purge_after: Option<UnixTime>,
    pub body: serde_json::Value,
}

impl std::fmt::Debug for StoredRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body may hold password or token hashes: never printed.
        f.debug_struct("StoredRecord")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("purge_after", &self.purge_after)
            .field("body", &"[redacted]")
            .finish()
    }
}

/// What a [`RecordChange`](super::RecordChange) decides.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordWrite {
    /// Leave the record as it is (or absent).
    Keep,
    /// Write this record (creating it if absent).
    Put(StoredRecord),
    /// Remove the record.
    Delete,
}

/// A typed security record: its kind and how the store sees it.
pub trait SecurityRecord:
    Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static
{
    const KIND: RecordKind;
    fn id(&self) -> String;
    fn owner(&self) -> Option<String>;
    fn purge_after(&self) -> Option<UnixTime> {
        None
    }

    fn to_stored(&self) -> Result<StoredRecord, serde_json::Error> {
        Ok(StoredRecord {
            id: self.id(),
            owner: self.owner(),
            purge_after: self.purge_after(),
            body: serde_json::to_value(self)?,
        })
    }

    fn from_stored(stored: &StoredRecord) -> Result<Self, serde_json::Error> {
        serde_json::from_value(stored.body.clone())
    }
}

/// A native user. The password only as an argon2id PHC string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub full_name: Option<String>,
    pub email: Option<String>,
    /// Free-form metadata (an object).
    pub metadata: serde_json::Value,
    pub enabled: bool,
    /// A built-in user (`elastic`): reported in the `reserved` realm; it cannot be
    /// deleted, and only its password can be changed.
    pub reserved: bool,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .field("roles", &self.roles)
            .field("enabled", &self.enabled)
            .field("reserved", &self.reserved)
            .finish()
    }
}

impl SecurityRecord for UserRecord {
    const KIND: RecordKind = RecordKind::User;
    fn id(&self) -> String {
        self.username.clone()
    }
    fn owner(&self) -> Option<String> {
        None
    }
}

/// A role defined through `PUT /_security/role/{name}`. Only the cluster privileges
/// mean anything to fleetauth (it has no index or application APIs); the rest is kept
/// and given back as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRecord {
    pub name: String,
    pub cluster: Vec<String>,
    /// Index privileges (an array of objects), kept as written.
    pub indices: serde_json::Value,
    /// Application privileges (an array of objects), kept as written.
    pub applications: serde_json::Value,
    pub run_as: Vec<String>,
    /// Free-form metadata (an object).
    pub metadata: serde_json::Value,
    pub description: Option<String>,
    pub updated_at: UnixTime,
}

impl SecurityRecord for RoleRecord {
    const KIND: RecordKind = RecordKind::Role;
    fn id(&self) -> String {
        self.name.clone()
    }
    fn owner(&self) -> Option<String> {
        None
    }
}

/// The token state of one token family: the tokens of one `password` (or
/// `client_credentials`) grant of `POST /_security/oauth2/token` and of every refresh
/// that descends from it. A user may hold any number of families at once; each follows
/// the rotation rules of SPEC §3 on its own `state`, which has an agent record's shape
/// (its `agent_id` is the family id) so that the same rules apply unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFamilyRecord {
    pub family_id: String,
    pub username: String,
    pub realm: String,
    pub realm_type: String,
    pub created_at: UnixTime,
    pub state: TokenStateRecord,
}

impl SecurityRecord for TokenFamilyRecord {
    const KIND: RecordKind = RecordKind::TokenFamily;
    fn id(&self) -> String {
        self.family_id.clone()
    }
    fn owner(&self) -> Option<String> {
        Some(self.username.clone())
    }
    /// When the last token of the family (including retired refresh tokens, kept for
    /// reuse detection) has expired.
    fn purge_after(&self) -> Option<UnixTime> {
        let s = &self.state;
        let latest = [&s.current, &s.pending]
            .into_iter()
            .flatten()
            .flat_map(|p| [p.access_expires_at, p.refresh_expires_at])
            .chain(s.retired.iter().map(|r| r.expires_at))
            .chain([s.updated_at, self.created_at])
            .max();
        latest
    }
}

/// A service-account token (`elastic/fleet-server/<name>`). The secret is kept only as
/// its SHA-256 (it is 256 random bits, so a slow hash adds nothing).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTokenRecord {
    /// `namespace/service`, e.g. `elastic/fleet-server`.
    pub account: String,
    pub name: String,
    /// Lower-case hex SHA-256 of the secret.
    pub secret_hash: String,
    pub created_at: UnixTime,
    /// Who created it (a username), for the audit trail.
    pub created_by: String,
}

impl std::fmt::Debug for ServiceTokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTokenRecord")
            .field("account", &self.account)
            .field("name", &self.name)
            .field("secret_hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl SecurityRecord for ServiceTokenRecord {
    const KIND: RecordKind = RecordKind::ServiceToken;
    fn id(&self) -> String {
        format!("{}/{}", self.account, self.name)
    }
    fn owner(&self) -> Option<String> {
        Some(self.account.clone())
    }
}
