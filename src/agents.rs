//! Enrollment: an agent exists (and may hold tokens) from the moment one of its API
//! keys is created until it is unenrolled, which stops every credential at once.

use crate::clock::UnixTime;
use crate::store::{Store, StoreError, TokenStateRecord};

/// The longest agent id accepted.
pub const MAX_AGENT_ID_LEN: usize = 128;

/// Agent ids are printable and short: they travel in tokens and logs.
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_AGENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
}

/// Creates the agent, or re-activates an unenrolled one (with no tokens).
pub async fn enroll(store: &dyn Store, agent_id: &str, now: UnixTime) -> Result<(), StoreError> {
    let id = agent_id.to_string();
    store
        .update_agent(
            agent_id,
            Box::new(move |record| match record {
                Some(r) if r.active => None,
                _ => Some(TokenStateRecord::enrolled(&id, now)),
            }),
        )
        .await?;
    Ok(())
}

/// Unenrolls the agent: its tokens and API keys stop working at once. Returns whether
/// the agent existed.
pub async fn unenroll(
    store: &dyn Store,
    agent_id: &str,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let before = store
        .update_agent(
            agent_id,
            Box::new(move |record| {
                record.map(|r| TokenStateRecord {
                    active: false,
                    current: None,
                    pending: None,
                    updated_at: now,
                    ..r.clone()
                })
            }),
        )
        .await?;
    store.invalidate_agent_api_keys(agent_id, now).await?;
    Ok(before.is_some())
}
