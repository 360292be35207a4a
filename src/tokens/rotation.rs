//! The rotation protocol of SPEC §3 as pure functions: given an agent's record and
//! what was presented, decide the outcome and the record to write. No I/O here; the
//! store applies the decision atomically (`Store::update_agent`), and may ask again
//! with a newer record if it lost a race, so these functions must stay deterministic.
//!
//! - A new pair is stored as *pending*; the *current* pair keeps working.
//! - The first use of the pending pair (its access token anywhere, or its refresh
//!   token) promotes it to current and *retires* the old current pair.
//! - Refreshing with the current refresh token (a client whose response was lost)
//!   replaces the pending pair; the replaced pair was never used, so presenting it
//!   later is refused but is not treated as theft.
//! - Presenting a *retired* refresh token is reuse (RFC 9700 §4.14.2): every token of
//!   the agent is revoked.

use subtle::ConstantTimeEq;

use crate::clock::UnixTime;
use crate::store::{RetiredRefresh, TokenPairRecord, TokenStateRecord};

/// How many retired refresh hashes an agent record keeps for reuse detection.
pub const MAX_RETIRED: usize = 16;

/// What was traded in for a new pair (the rotation decision's input; distinct from the
/// `Authorization` credential, `credentials::Presented`, and a parsed refresh token,
/// `refresh::ParsedRefresh`).
#[derive(Debug, Clone, Copy)]
pub enum TradedIn<'a> {
    /// A verified API key of the agent.
    ApiKey,
    /// A verified (signature, expiry, issuer) access token with this `jti`.
    AccessToken { jti: &'a str },
    /// A refresh token with this SHA-256 hash.
    RefreshToken { hash: &'a str },
}

/// Why an agent's token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the agent is not enrolled")]
    UnknownAgent,
    #[error("the agent has been unenrolled")]
    Unenrolled,
    #[error("the token is not current for this agent")]
    NotCurrent,
    #[error("the refresh token has expired")]
    Expired,
    #[error("the refresh token was already used; the agent's tokens are revoked")]
    Reused,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::UnknownAgent => "unknown_agent",
            Self::Unenrolled => "unenrolled",
            Self::NotCurrent => "token_not_current",
            Self::Expired => "refresh_expired",
            Self::Reused => "refresh_reused",
        }
    }
}

/// What a decision does to the agent's pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; `promoted` says whether the pending pair became current.
    Accepted {
        promoted: bool,
    },
    Refused(Refusal),
}

/// An outcome and the record to write (if anything changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub write: Option<TokenStateRecord>,
}

impl Decision {
    fn refuse(refusal: Refusal) -> Self {
        Self {
            outcome: Outcome::Refused(refusal),
            write: None,
        }
    }
}

/// Which of the agent's pairs a presented credential belongs to.
enum Matched {
    Current,
    Pending,
    Retired,
    Nothing,
}

/// Refresh hashes are compared in constant time, like every secret-derived value.
fn same_hash(stored: &str, presented: &str) -> bool {
    stored.as_bytes().ct_eq(presented.as_bytes()).into()
}

fn match_refresh(record: &TokenStateRecord, hash: &str) -> (Matched, Option<UnixTime>) {
    if let Some(p) = record
        .pending
        .as_ref()
        .filter(|p| same_hash(&p.refresh_hash, hash))
    {
        return (Matched::Pending, Some(p.refresh_expires_at));
    }
    if let Some(c) = record
        .current
        .as_ref()
        .filter(|c| same_hash(&c.refresh_hash, hash))
    {
        return (Matched::Current, Some(c.refresh_expires_at));
    }
    if record
        .retired
        .iter()
        .any(|r| same_hash(&r.refresh_hash, hash))
    {
        return (Matched::Retired, None);
    }
    (Matched::Nothing, None)
}

fn match_access(record: &TokenStateRecord, jti: &str) -> Matched {
    if record.pending.as_ref().is_some_and(|p| p.jti == jti) {
        Matched::Pending
    } else if record.current.as_ref().is_some_and(|c| c.jti == jti) {
        Matched::Current
    } else {
        Matched::Nothing
    }
}

/// Makes the pending pair current, retiring the old current pair's refresh token.
fn promote(record: &mut TokenStateRecord, now: UnixTime) {
    if let Some(old) = record.current.take() {
        record.retired.insert(
            0,
            RetiredRefresh {
                refresh_hash: old.refresh_hash,
                expires_at: old.refresh_expires_at,
            },
        );
    }
    record.current = record.pending.take();
    record.retired.retain(|r| r.expires_at > now);
    record.retired.truncate(MAX_RETIRED);
}

/// Revokes every token of the agent (after reuse of a retired refresh token).
fn revoke_all(record: &TokenStateRecord, now: UnixTime) -> TokenStateRecord {
    TokenStateRecord {
        current: None,
        pending: None,
        updated_at: now,
        ..record.clone()
    }
}

fn enrolled(record: Option<&TokenStateRecord>) -> Result<&TokenStateRecord, Refusal> {
    let record = record.ok_or(Refusal::UnknownAgent)?;
    if record.active {
        Ok(record)
    } else {
        Err(Refusal::Unenrolled)
    }
}

/// Trades `presented` for `new_pair`, which becomes the agent's pending pair.
pub fn exchange(
    record: Option<&TokenStateRecord>,
    presented: TradedIn<'_>,
    new_pair: &TokenPairRecord,
    now: UnixTime,
) -> Decision {
    let record = match enrolled(record) {
        Ok(record) => record,
        Err(refusal) => return Decision::refuse(refusal),
    };
    let matched = match presented {
        TradedIn::ApiKey => Matched::Current,
        TradedIn::AccessToken { jti } => match_access(record, jti),
        TradedIn::RefreshToken { hash } => match match_refresh(record, hash) {
            (_, Some(expires_at)) if expires_at <= now => {
                return Decision::refuse(Refusal::Expired)
            }
            (matched, _) => matched,
        },
    };
    let mut next = record.clone();
    let promoted = match matched {
        Matched::Pending => {
            promote(&mut next, now);
            true
        }
        Matched::Current => false,
        Matched::Retired => {
            return Decision {
                outcome: Outcome::Refused(Refusal::Reused),
                write: Some(revoke_all(record, now)),
            }
        }
        Matched::Nothing => return Decision::refuse(Refusal::NotCurrent),
    };
    next.pending = Some(new_pair.clone());
    next.updated_at = now;
    Decision {
        outcome: Outcome::Accepted { promoted },
        write: Some(next),
    }
}

/// The use of an access token on a protected resource: accepted if it is the current
/// or pending pair's; the pending pair is promoted by its first use.
pub fn confirm_access(record: Option<&TokenStateRecord>, jti: &str, now: UnixTime) -> Decision {
    let record = match enrolled(record) {
        Ok(record) => record,
        Err(refusal) => return Decision::refuse(refusal),
    };
    match match_access(record, jti) {
        Matched::Current => Decision {
            outcome: Outcome::Accepted { promoted: false },
            write: None,
        },
        Matched::Pending => {
            let mut next = record.clone();
            promote(&mut next, now);
            next.updated_at = now;
            Decision {
                outcome: Outcome::Accepted { promoted: true },
                write: Some(next),
            }
        }
        Matched::Retired | Matched::Nothing => Decision::refuse(Refusal::NotCurrent),
    }
}

/// A read-only look at a refresh token (for introspection): its expiry, if it is the
/// current or the pending pair's and has not expired. A retired token is reported as
/// not valid like an unknown one: looking is not a use, so it is not a reuse either.
pub fn inspect_refresh(
    record: Option<&TokenStateRecord>,
    hash: &str,
    now: UnixTime,
) -> Option<UnixTime> {
    let record = enrolled(record).ok()?;
    match match_refresh(record, hash) {
        (Matched::Current | Matched::Pending, Some(expires_at)) if expires_at > now => {
            Some(expires_at)
        }
        _ => None,
    }
}

/// Revocation of a refresh token (RFC 7009 §2.1): when it is one of the agent's
/// (current, pending or retired), the whole family goes: every token of the agent.
/// Returns the record to write, `None` when there is nothing to revoke.
pub fn revoke_refresh(
    record: Option<&TokenStateRecord>,
    hash: &str,
    now: UnixTime,
) -> Option<TokenStateRecord> {
    let record = record?;
    let has_pairs = record.current.is_some() || record.pending.is_some();
    match match_refresh(record, hash).0 {
        Matched::Nothing => None,
        _ if !has_pairs => None,
        _ => Some(revoke_all(record, now)),
    }
}

/// Revocation of every pair at once (the token API's invalidation by user or realm):
/// `None` when there is none left to revoke.
pub fn revoke_pairs(record: Option<&TokenStateRecord>, now: UnixTime) -> Option<TokenStateRecord> {
    let record = record?;
    (record.current.is_some() || record.pending.is_some()).then(|| revoke_all(record, now))
}

/// Revocation of an access token: its pair (and so the refresh token issued with it,
/// as RFC 7009 §2.1 allows) stops working at once; the agent's other pair is kept.
/// The pair is dropped, not retired, so a later use of its refresh token is refused
/// without being taken for theft. `None` when the token is not current or pending.
pub fn revoke_access(
    record: Option<&TokenStateRecord>,
    jti: &str,
    now: UnixTime,
) -> Option<TokenStateRecord> {
    let record = record?;
    let mut next = record.clone();
    match match_access(record, jti) {
        Matched::Pending => next.pending = None,
        Matched::Current => next.current = None,
        Matched::Retired | Matched::Nothing => return None,
    }
    next.updated_at = now;
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = 1_000_000;

    fn pair(n: u32) -> TokenPairRecord {
        TokenPairRecord {
            jti: format!("jti-{n}"),
            refresh_hash: format!("hash-{n}"),
            access_expires_at: NOW + 1200,
            refresh_expires_at: NOW + 86400,
        }
    }

    fn agent() -> TokenStateRecord {
        TokenStateRecord::enrolled("a1", NOW)
    }

    fn apply(
        record: &TokenStateRecord,
        presented: TradedIn<'_>,
        n: u32,
    ) -> (Outcome, TokenStateRecord) {
        let d = exchange(Some(record), presented, &pair(n), NOW);
        (d.outcome, d.write.unwrap_or_else(|| record.clone()))
    }

    #[test]
    fn api_key_issues_a_pending_pair_and_keeps_the_current_one() {
        let (o, r) = apply(&agent(), TradedIn::ApiKey, 1);
        assert_eq!(o, Outcome::Accepted { promoted: false });
        assert_eq!(r.pending, Some(pair(1)));
        assert_eq!(r.current, None);
        let r = confirm_access(Some(&r), "jti-1", NOW).write.unwrap();
        assert_eq!(r.current, Some(pair(1)));
        let (_, r) = apply(&r, TradedIn::ApiKey, 2);
        assert_eq!(
            (r.current.clone(), r.pending.clone()),
            (Some(pair(1)), Some(pair(2)))
        );
    }

    #[test]
    fn refreshing_with_the_pending_token_promotes_and_retires_the_current() {
        let (_, r) = apply(&agent(), TradedIn::ApiKey, 1);
        let (o, r) = apply(&r, TradedIn::RefreshToken { hash: "hash-1" }, 2);
        assert_eq!(o, Outcome::Accepted { promoted: true });
        assert_eq!(
            (r.current.clone(), r.pending.clone()),
            (Some(pair(1)), Some(pair(2)))
        );
        let (o, r) = apply(&r, TradedIn::RefreshToken { hash: "hash-2" }, 3);
        assert_eq!(o, Outcome::Accepted { promoted: true });
        assert_eq!(r.retired[0].refresh_hash, "hash-1");
    }

    #[test]
    fn a_lost_response_is_recovered_with_the_current_refresh_token() {
        let (_, r) = apply(&agent(), TradedIn::ApiKey, 1);
        let (_, r) = apply(&r, TradedIn::RefreshToken { hash: "hash-1" }, 2);
        // The answer carrying pair 2 is lost; the agent retries with its current token.
        let (o, r) = apply(&r, TradedIn::RefreshToken { hash: "hash-1" }, 3);
        assert_eq!(o, Outcome::Accepted { promoted: false });
        assert_eq!(
            (r.current.clone(), r.pending.clone()),
            (Some(pair(1)), Some(pair(3)))
        );
        // The replaced pending pair is refused, without revoking anything.
        let d = exchange(
            Some(&r),
            TradedIn::RefreshToken { hash: "hash-2" },
            &pair(4),
            NOW,
        );
        assert_eq!(d.outcome, Outcome::Refused(Refusal::NotCurrent));
        assert_eq!(d.write, None);
    }

    #[test]
    fn reuse_of_a_retired_refresh_token_revokes_everything() {
        let (_, r) = apply(&agent(), TradedIn::ApiKey, 1);
        let (_, r) = apply(&r, TradedIn::RefreshToken { hash: "hash-1" }, 2);
        let (_, r) = apply(&r, TradedIn::RefreshToken { hash: "hash-2" }, 3);
        let (o, r) = apply(&r, TradedIn::RefreshToken { hash: "hash-1" }, 4);
        assert_eq!(o, Outcome::Refused(Refusal::Reused));
        assert_eq!((r.current, r.pending), (None, None));
    }

    #[test]
    fn expired_and_unknown_tokens_and_unenrolled_agents_are_refused() {
        let (_, mut r) = apply(&agent(), TradedIn::ApiKey, 1);
        r.pending.as_mut().unwrap().refresh_expires_at = NOW;
        assert_eq!(
            apply(&r, TradedIn::RefreshToken { hash: "hash-1" }, 2).0,
            Outcome::Refused(Refusal::Expired)
        );
        assert_eq!(
            apply(&r, TradedIn::RefreshToken { hash: "nope" }, 2).0,
            Outcome::Refused(Refusal::NotCurrent)
        );
        assert_eq!(
            apply(&r, TradedIn::AccessToken { jti: "nope" }, 2).0,
            Outcome::Refused(Refusal::NotCurrent)
        );
        r.active = false;
        assert_eq!(
            apply(&r, TradedIn::ApiKey, 2).0,
            Outcome::Refused(Refusal::Unenrolled)
        );
        assert_eq!(
            exchange(None, TradedIn::ApiKey, &pair(1), NOW).outcome,
            Outcome::Refused(Refusal::UnknownAgent)
        );
    }

    #[test]
    fn the_retired_list_is_bounded() {
        let (_, mut r) = apply(&agent(), TradedIn::ApiKey, 0);
        for n in 1..40 {
            let (_, next) = apply(
                &r,
                TradedIn::RefreshToken {
                    hash: &format!("hash-{}", n - 1),
                },
                n,
            );
            r = next;
        }
        assert_eq!(r.retired.len(), MAX_RETIRED);
    }

    #[test]
    fn inspecting_a_refresh_token_changes_nothing_and_never_counts_as_reuse() {
        let (_, r) = apply(&agent(), TradedIn::ApiKey, 1);
        let (_, r) = apply(&r, TradedIn::RefreshToken { hash: "hash-1" }, 2);
        let (_, r) = apply(&r, TradedIn::RefreshToken { hash: "hash-2" }, 3);
        // hash-1 is retired, hash-2 current, hash-3 pending.
        assert_eq!(inspect_refresh(Some(&r), "hash-1", NOW), None);
        assert_eq!(inspect_refresh(Some(&r), "hash-2", NOW), Some(NOW + 86400));
        assert_eq!(inspect_refresh(Some(&r), "hash-3", NOW), Some(NOW + 86400));
        assert_eq!(inspect_refresh(Some(&r), "hash-3", NOW + 86400), None);
        assert_eq!(inspect_refresh(None, "hash-3", NOW), None);
    }

    #[test]
    fn revoking_a_refresh_token_revokes_the_family_and_unknown_ones_change_nothing() {
        let (_, r) = apply(&agent(), TradedIn::ApiKey, 1);
        let (_, r) = apply(&r, TradedIn::RefreshToken { hash: "hash-1" }, 2);
        assert_eq!(revoke_refresh(Some(&r), "nope", NOW), None);
        let revoked = revoke_refresh(Some(&r), "hash-1", NOW).unwrap();
        assert_eq!((revoked.current, revoked.pending), (None, None));
        assert!(revoked.active, "revocation is not unenrollment");
        let revoked = revoke_refresh(Some(&r), "hash-2", NOW).unwrap();
        assert_eq!(
            revoke_refresh(Some(&revoked), "hash-2", NOW),
            None,
            "already revoked"
        );
    }

    #[test]
    fn revoking_an_access_token_drops_only_its_pair() {
        let (_, r) = apply(&agent(), TradedIn::ApiKey, 1);
        let (_, r) = apply(&r, TradedIn::RefreshToken { hash: "hash-1" }, 2);
        // jti-1 current, jti-2 pending.
        let without_pending = revoke_access(Some(&r), "jti-2", NOW).unwrap();
        assert_eq!(
            (without_pending.current, without_pending.pending),
            (Some(pair(1)), None)
        );
        let without_current = revoke_access(Some(&r), "jti-1", NOW).unwrap();
        assert_eq!(
            (
                without_current.current.clone(),
                without_current.pending.clone()
            ),
            (None, Some(pair(2)))
        );
        assert!(without_current
            .retired
            .iter()
            .all(|t| t.refresh_hash != "hash-1"));
        assert_eq!(revoke_access(Some(&r), "jti-9", NOW), None);
    }
}
