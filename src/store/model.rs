//! The records the store keeps. Plain data: no behaviour beyond small accessors, no
//! secrets in clear (refresh tokens as SHA-256 hex, API keys as argon2id PHC strings).

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;

/// The token state of one agent (index `.fleet-agents` in Elasticsearch).
///
/// At most one *current* and one *pending* pair (SPEC §3): a new issuance is stored as
/// pending; its first use promotes it to current and retires the old current pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
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

impl AgentRecord {
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
