//! Issuing a pair through the store: [`TokenService::exchange`] mints first, then
//! asks the store to apply the rotation decision atomically, and reads back the
//! outcome that decision recorded.

use super::*;

impl TokenService {
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
}

/// The outcome of the rotation decision a store change made, taken out of the change
/// so that it is computed once per attempt, not again on the record the store returns.
/// A store may call a change more than once (a compare-and-set lost to a concurrent
/// writer is retried with the newer record); the last call is the one whose write was
/// applied, and its outcome is the one kept.
#[derive(Clone, Default)]
pub(super) struct DecidedOutcome(Arc<Mutex<Option<Outcome>>>);

impl DecidedOutcome {
    pub(super) fn set(&self, outcome: Outcome) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
    }

    pub(super) fn get(&self) -> Option<Outcome> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `TradedIn` with owned strings, so a store change closure can own it.
#[derive(Clone)]
pub(super) enum OwnedTradedIn {
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
    pub(super) fn borrow(&self) -> TradedIn<'_> {
        match self {
            Self::ApiKey => TradedIn::ApiKey,
            Self::AccessToken(jti) => TradedIn::AccessToken { jti },
            Self::RefreshToken(hash) => TradedIn::RefreshToken { hash },
        }
    }
}
