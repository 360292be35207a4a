//! Bulk revocation: what is revoked for each criterion (an agent, a client, a signing
//! key, everything issued before a time), as pure functions over stored records, and
//! the revocation watermark that every instance checks on every access token.
//!
//! Two halves, so that revocation acts at once where the state is read anyway and costs
//! no store read where it is not:
//!
//! - **Stored pairs** (agents, clients whose pairs are kept, token families) are
//!   dropped from their records by [`drop_pairs`] through the store's atomic change:
//!   stateful validation reads the record on every use, so a dropped pair's access and
//!   refresh tokens are refused at once, on every instance.
//! - **The watermark** ([`Watermark`]: a time before which every token is refused, and
//!   per-subject and per-client times) is one small record, read by every instance with
//!   the key ring (`jwt.key_poll_interval`) and checked in memory on every access token,
//!   stateless ones included. A token the watermark refuses is refused whatever its
//!   state; what it cannot cover alone (refresh tokens, which carry no issue time) is
//!   covered by the first half.
//!
//! A pair's issue time is read from its JWT ID: access tokens carry UUIDv7 ids whose
//! timestamp is the issue time ([`issued_at`]); ids without one (tokens from before
//! this format) count as issued before any time asked for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::jwt::AccessClaims;
use crate::clock::UnixTime;
use crate::store::{TokenPairRecord, TokenStateRecord};

/// The id of the one watermark record (kind `Revocations`).
pub const WATERMARK_ID: &str = "watermark";

/// What a bulk revocation revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    /// Every pair of one agent (its API keys stay valid: it may authenticate again).
    Agent(String),
    /// Every token issued through one client (an API key id): the client's own pairs,
    /// the pairs of the agent the key belongs to, and its stateless tokens.
    Client(String),
    /// Every token signed by one key: the key leaves the ring at once (a new key signs
    /// if it was signing), and the pairs issued while it signed are dropped.
    Kid(String),
    /// Every token issued before this time.
    IssuedBefore(UnixTime),
}

impl Criterion {
    /// The metric label of the criterion.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Agent(_) => "agent",
            Self::Client(_) => "client",
            Self::Kid(_) => "kid",
            Self::IssuedBefore(_) => "issued_before",
        }
    }
}

/// What a bulk revocation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Revoked {
    /// Token-state records (agents, clients, token families) that lost a pair.
    pub families: u64,
    /// Pairs (access + refresh token) dropped.
    pub pairs: u64,
    /// Signing keys removed from the ring (a `kid` revocation).
    pub signing_keys: u64,
}

/// A subject's or client's entry: tokens issued before `before` are refused; the
/// entry is kept until `until`, when no token issued before `before` can be live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cutoff {
    pub before: UnixTime,
    pub until: UnixTime,
}

/// The revocation watermark: checked on every access token, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Watermark {
    /// Every token issued before this is refused.
    pub issued_before: Option<UnixTime>,
    /// By `sub` (an agent id, a client id): tokens of the subject issued before.
    pub subjects: BTreeMap<String, Cutoff>,
    /// By `client_id`: tokens issued through the client before.
    pub clients: BTreeMap<String, Cutoff>,
}

impl Watermark {
    /// Whether an access token with these claims is revoked. Cheap: a comparison, and
    /// two map lookups only when entries exist. `unstored`: the token's state is not
    /// read on this use (stateless mode, a client's or an external subject's token
    /// alone), so the subject and client entries apply; a stored pair was dropped from
    /// its record by the revocation itself, exactly, and a pair issued to the same
    /// subject right after it is valid.
    pub fn refuses(&self, claims: &AccessClaims, unstored: bool) -> bool {
        let before = |cutoff: Option<&Cutoff>| cutoff.is_some_and(|c| claims.iat < c.before);
        self.issued_before.is_some_and(|t| claims.iat < t)
            || (unstored
                && ((!self.subjects.is_empty() && before(self.subjects.get(&claims.sub)))
                    || (!self.clients.is_empty() && before(self.clients.get(&claims.client_id)))))
    }

    /// The watermark with `criterion` at `now` added (entries kept `keep` seconds, the
    /// longest an access token issued before `now` may still be presented) and expired
    /// entries dropped. A subject's or client's entry refuses the whole second of the
    /// revocation (`iat` has whole seconds): a token issued in that second after the
    /// revocation is refused too where the entry applies.
    pub fn with(mut self, criterion: &Criterion, now: UnixTime, keep: i64) -> Self {
        let cutoff = Cutoff {
            before: now + 1,
            until: now + 1 + keep,
        };
        match criterion {
            Criterion::Agent(agent) => {
                self.subjects.insert(agent.clone(), cutoff);
            }
            Criterion::Client(client) => {
                self.clients.insert(client.clone(), cutoff);
                self.subjects.insert(client.clone(), cutoff);
            }
            Criterion::IssuedBefore(t) => {
                self.issued_before = Some(self.issued_before.map_or(*t, |old| old.max(*t)));
            }
            // The key leaves the ring: its tokens fail their signature check.
            Criterion::Kid(_) => {}
        }
        self.subjects.retain(|_, c| c.until > now);
        self.clients.retain(|_, c| c.until > now);
        self
    }
}

/// Reads `issued_before`: epoch seconds or RFC 3339, at most `now`.
pub fn parse_issued_before(value: &serde_json::Value, now: UnixTime) -> Result<UnixTime, String> {
    let at = match value {
        serde_json::Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("issued_before {n} is not whole epoch seconds"))?,
        serde_json::Value::String(text) => humantime::parse_rfc3339_weak(text.trim())
            .map_err(|e| format!("issued_before {text:?} is not an RFC 3339 time: {e}"))?
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| format!("issued_before {text:?} is before 1970"))?
            .as_secs() as UnixTime,
        other => return Err(format!("issued_before {other} is not a time")),
    };
    if at > now {
        return Err(format!(
            "issued_before {at} is in the future (now: {now}): it would refuse tokens not yet issued"
        ));
    }
    Ok(at)
}

/// The issue time of a pair, from its JWT ID (a UUIDv7's timestamp); `None` for ids
/// without one.
pub fn issued_at(jti: &str) -> Option<UnixTime> {
    let uuid = uuid::Uuid::parse_str(jti).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let bytes = uuid.as_bytes();
    let millis = bytes[..6]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    Some((millis / 1000) as UnixTime)
}

/// A new JWT ID for a token issued at `now`: a UUIDv7 (the issue time, then 74 random
/// bits from the thread's CSPRNG: no syscall per token).
pub fn new_jti(now: UnixTime) -> String {
    let millis = (now.max(0) as u64).saturating_mul(1000);
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random())
        .into_uuid()
        .to_string()
}

/// Whether a pair was issued in `[from, until)`; a pair without an issue time counts as
/// issued at the beginning of time.
pub fn issued_within(pair: &TokenPairRecord, from: UnixTime, until: UnixTime) -> bool {
    let at = issued_at(&pair.jti).unwrap_or(UnixTime::MIN);
    at >= from && at < until
}

/// Drops the pairs of `record` that `doomed` selects: the record to write and how many
/// pairs it lost, or `None` when none matched. A dropped pair is gone, not retired, so
/// a later use of its refresh token is refused without being taken for theft.
pub fn drop_pairs(
    record: Option<&TokenStateRecord>,
    doomed: impl Fn(&TokenPairRecord) -> bool,
    now: UnixTime,
) -> Option<(TokenStateRecord, u64)> {
    let record = record?;
    let mut next = record.clone();
    let mut dropped = 0;
    if next.current.as_ref().is_some_and(&doomed) {
        next.current = None;
        dropped += 1;
    }
    if next.pending.as_ref().is_some_and(&doomed) {
        next.pending = None;
        dropped += 1;
    }
    (dropped > 0).then(|| {
        next.updated_at = now;
        (next, dropped)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(jti: &str) -> TokenPairRecord {
        TokenPairRecord {
            jti: jti.to_string(),
            refresh_hash: "h".into(),
            access_expires_at: 0,
            refresh_expires_at: 0,
        }
    }

    fn claims(sub: &str, client: &str, iat: UnixTime) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: sub.into(),
            jti: new_jti(iat),
            iat,
            exp: iat + 60,
            client_id: client.into(),
            aud: None,
            scope: None,
            groups: None,
            vault_role: None,
            max_uses: None,
            sid: None,
            cnf: None,
        }
    }

    #[test]
    fn a_new_jti_carries_its_issue_time() {
        let jti = new_jti(1_700_000_123);
        assert_eq!(issued_at(&jti), Some(1_700_000_123));
        assert_ne!(new_jti(1_700_000_123), jti, "random part");
        assert_eq!(issued_at(&uuid::Uuid::new_v4().to_string()), None);
        assert_eq!(issued_at("not-a-uuid"), None);
    }

    #[test]
    fn pairs_are_dropped_by_issue_time_and_old_ids_count_as_old() {
        let mut record = TokenStateRecord::enrolled("a", 0);
        record.current = Some(pair(&new_jti(100)));
        record.pending = Some(pair(&new_jti(200)));
        let (next, n) = drop_pairs(Some(&record), |p| issued_within(p, 0, 150), 300).unwrap();
        assert_eq!(n, 1);
        assert!(next.current.is_none() && next.pending.is_some());
        assert!(drop_pairs(Some(&next), |p| issued_within(p, 0, 150), 300).is_none());

        record.current = Some(pair(&uuid::Uuid::new_v4().to_string()));
        let (_, n) =
            drop_pairs(Some(&record), |p| issued_within(p, UnixTime::MIN, 150), 300).unwrap();
        assert_eq!(n, 1, "an id without a time is older than any time");
    }

    #[test]
    fn the_watermark_refuses_what_was_issued_before_its_cutoffs() {
        let w = Watermark::default()
            .with(&Criterion::Agent("a".into()), 1_000, 60)
            .with(&Criterion::Client("k".into()), 1_000, 60);
        assert!(
            w.refuses(&claims("a", "x", 1_000), true),
            "the second of the revocation"
        );
        assert!(
            !w.refuses(&claims("a", "x", 1_001), true),
            "issued after it"
        );
        assert!(
            !w.refuses(&claims("a", "x", 999), false),
            "a stored pair: its record decides"
        );
        assert!(
            w.refuses(&claims("b", "k", 999), true),
            "through the client"
        );
        assert!(!w.refuses(&claims("b", "x", 10), true));

        let w = w.with(&Criterion::IssuedBefore(900), 1_062, 60);
        assert!(
            w.refuses(&claims("z", "z", 899), false),
            "issued_before applies to all"
        );
        assert!(!w.refuses(&claims("z", "z", 900), false));
        assert!(
            !w.refuses(&claims("a", "x", 999), true),
            "the agent entry expired"
        );
        assert!(w.subjects.is_empty() && w.clients.is_empty());
    }
}
