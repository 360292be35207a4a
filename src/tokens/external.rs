//! Subjects admitted by the Vault JWT auth method (external JWTs) get an access token
//! alone ([`TokenService::issue_external`]): valid by its signature and claims, like a
//! non-agent client's, except that a use-limited one (`max_uses` claim) has a counter
//! in the store, keyed by its `jti`, that every use decrements atomically
//! ([`TokenService::use_external`]); a background task removes expired counters.

use std::sync::Arc;
use std::time::Duration;

use super::*;

/// How often the use counters of expired tokens are removed.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// What a subject admitted by the Vault JWT auth method is given (see
/// [`TokenService::issue_external`]).
#[derive(Debug, Clone)]
pub struct ExternalAccess<'a> {
    /// `sub`: the value of the role's `user_claim`.
    pub subject: &'a str,
    /// `client_id`: what the token was issued through (the role).
    pub client_id: &'a str,
    pub vault_role: &'a str,
    pub scope: Option<&'a str>,
    pub groups: &'a [String],
    /// Capped at `jwt.max_access_ttl`.
    pub lifetime: Duration,
    /// 0: unlimited.
    pub max_uses: u32,
}

/// The stored state of a use-limited token.
#[derive(serde::Deserialize)]
struct UseCounter {
    remaining: u32,
}

impl TokenService {
    /// An access token for a subject admitted by the Vault JWT auth method: stored
    /// nowhere unless it is use-limited, in which case its use counter is durable before
    /// this returns. Its lifetime is `access.lifetime`, at most `jwt.max_access_ttl`
    /// and at least one second.
    pub async fn issue_external(
        &self,
        access: ExternalAccess<'_>,
    ) -> Result<IssuedAccess, TokenError> {
        let now = self.clock.now();
        let lifetime = access
            .lifetime
            .min(self.settings.max_access_ttl)
            .max(Duration::from_secs(1));
        let subject = Subject {
            sub: access.subject,
            client_id: access.client_id,
            family: None,
            bound_key: None,
        };
        let mut claims = self.access_claims(&subject, access.scope, lifetime, now);
        claims.vault_role = Some(access.vault_role.to_string());
        claims.groups = (!access.groups.is_empty()).then(|| access.groups.to_vec());
        if access.max_uses > 0 {
            claims.max_uses = Some(access.max_uses);
            // Kept until the token cannot be accepted any more, then purged.
            let counter = StoredRecord {
                id: claims.jti.clone(),
                owner: None,
                purge_after: Some(claims.exp + self.settings.leeway.as_secs() as i64 + 1),
                body: counter_body(access.max_uses),
            };
            self.store
                .update_record(
                    RecordKind::TokenUses,
                    &claims.jti,
                    Box::new(move |_| RecordWrite::Put(counter.clone())),
                )
                .await?;
        }
        Ok(self.sign_access(claims))
    }

    /// A use of a verified external-subject token: for a use-limited one, takes one use
    /// from its counter atomically (the last use removes the counter) and refuses it
    /// once none is left. Returns the uses left after this one (`None`: unlimited).
    /// Applies in stateless mode too: the limit is the role's explicit demand.
    pub async fn use_external(&self, claims: &AccessClaims) -> Result<Option<u32>, TokenError> {
        if claims.max_uses.is_none() {
            return Ok(None);
        }
        let before = self
            .store
            .update_record(
                RecordKind::TokenUses,
                &claims.jti,
                Box::new(|current| {
                    let Some(record) = current else {
                        return RecordWrite::Keep;
                    };
                    match parse_counter(record) {
                        Some(counter) if counter.remaining > 1 => RecordWrite::Put(StoredRecord {
                            body: counter_body(counter.remaining - 1),
                            ..record.clone()
                        }),
                        Some(_) => RecordWrite::Delete,
                        None => RecordWrite::Keep,
                    }
                }),
            )
            .await?;
        match before.as_ref().and_then(parse_counter) {
            Some(counter) if counter.remaining >= 1 => Ok(Some(counter.remaining - 1)),
            _ => Err(TokenError::UsesExhausted),
        }
    }

    /// [`use_external`](Self::use_external) without its side effect (introspection):
    /// the uses left, or a refusal when none is.
    pub async fn check_external(&self, claims: &AccessClaims) -> Result<Option<u32>, TokenError> {
        if claims.max_uses.is_none() {
            return Ok(None);
        }
        let counter = self
            .store
            .record(RecordKind::TokenUses, &claims.jti)
            .await?;
        match counter.as_ref().and_then(parse_counter) {
            Some(counter) if counter.remaining >= 1 => Ok(Some(counter.remaining)),
            _ => Err(TokenError::UsesExhausted),
        }
    }

    /// Removes, every few minutes for as long as the service lives, the store's expired
    /// documents (the use counters of tokens that have expired).
    pub fn spawn_purger(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PURGE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                match service
                    .store
                    .purge_records(RecordKind::TokenUses, service.clock.now())
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "expired use counters removed"),
                    Err(e) => tracing::warn!(error = %e, "could not remove expired use counters"),
                }
            }
        })
    }
}

fn parse_counter(record: &StoredRecord) -> Option<UseCounter> {
    serde_json::from_value(record.body.clone()).ok()
}

fn counter_body(remaining: u32) -> serde_json::Value {
    serde_json::json!({ "remaining": remaining })
}
