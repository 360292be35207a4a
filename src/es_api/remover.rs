//! The background remover: API keys expired or invalidated more than
//! `api_keys.retention` ago, and token families whose every token has expired.

use std::sync::Arc;
use std::time::Duration;

use super::{SecurityApi, SecurityError};

/// What the background remover removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub api_keys: usize,
    pub token_families: usize,
}

impl SecurityApi {
    /// Removes what has outlived its use: API keys expired or invalidated more than
    /// `api_keys.retention` ago, and token families whose every token has expired.
    pub async fn remove_expired(&self) -> Result<Removed, SecurityError> {
        let now = self.now();
        let cutoff = now - self.retention.as_secs() as i64;
        let api_keys = self.api_keys.purge(cutoff).await?;
        let token_families = self.tokens.purge_families(now).await?;
        // Last-used records of keys unused for a long time (or removed).
        self.api_keys.purge_last_used(now).await?;
        if api_keys + token_families > 0 {
            tracing::info!(api_keys, token_families, "removed expired security records");
        }
        Ok(Removed {
            api_keys,
            token_families,
        })
    }

    /// Runs [`remove_expired`](Self::remove_expired) every `interval` for as long as
    /// the service lives (first run one interval after start).
    pub fn spawn_remover(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(api) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = api.remove_expired().await {
                    tracing::warn!(error = %e, "could not remove expired security records");
                }
            }
        })
    }
}
