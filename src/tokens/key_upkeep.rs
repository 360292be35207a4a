//! The token service's key ring upkeep: the ring in use and its JWKS, reloads
//! (on a timer and, rate-limited, for an unknown `kid`), automatic rotation
//! ([`TokenService::rotate_if_due`]) and the rotation of the CLI
//! ([`rotate_signing_key`]).

use super::*;

impl TokenService {
    pub(super) fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn jwks(&self) -> JwkSet {
        self.ring().jwks()
    }

    /// Re-reads the signing keys (after `keys rotate`, possibly by another process).
    pub async fn reload_keys(&self) -> Result<(), TokenError> {
        let now = self.clock.now();
        let records = self.store.signing_keys(now).await?;
        let current = self.ring();
        if current.built_from(&records) && !current.switch_due(now) {
            // Nothing changed (the usual case for the periodic poll): keep the parsed keys.
            return Ok(());
        }
        let ring = KeyRing::from_records_at(&records, now)?;
        if current.signing.kid != ring.signing.kid {
            tracing::info!(kid = %ring.signing.kid, "now signing with a new key");
        }
        if let Some(next) = ring.next() {
            if current.next().is_none_or(|n| n.kid != next.kid) {
                tracing::info!(kid = %next.kid, signs_from = next.created_at, "next signing key published");
            }
        }
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        Ok(())
    }

    /// Polls the store for key changes for as long as the service lives, and, with
    /// `jwt.key_rotation_period`, rotates the signing key when it is due
    /// ([`rotate_if_due`](Self::rotate_if_due)).
    pub fn spawn_key_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let period = self.settings.key_poll_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = service.reload_keys().await {
                    tracing::warn!(error = %e, "could not reload signing keys");
                    continue;
                }
                if let Err(e) = service.reload_watermark().await {
                    tracing::warn!(error = %e, "could not reload the revocation watermark");
                }
                if let Err(e) = service.rotate_if_due().await {
                    tracing::warn!(error = %e, "could not rotate the signing key");
                }
            }
        })
    }

    /// Automatic rotation (`jwt.key_rotation_period`): once the signing key has signed
    /// for `period - key_prepublish` and no next key is published, stores a new key
    /// that signs from `max(signing key's start + period, now + key_prepublish)`, and
    /// schedules the signing key's retirement at that instant; it verifies
    /// [`verify_after_retirement`](JwtSettings::verify_after_retirement) longer. The
    /// store's compare-and-set on the newest key makes exactly one of several instances
    /// succeed; the others see the new key at their next poll. Returns the new key's
    /// `kid` if this call rotated.
    pub async fn rotate_if_due(&self) -> Result<Option<String>, TokenError> {
        let Some(period) = self.settings.key_rotation_period else {
            return Ok(None);
        };
        let now = self.clock.now();
        let ring = self.ring();
        if ring.next().is_some() {
            return Ok(None);
        }
        let signing = ring.signer(now).clone();
        let prepublish = self.settings.key_prepublish.as_secs() as i64;
        // `now` is whole seconds (the real time may be up to 1 s later): one second
        // early, so that the next key is stored at least `prepublish` before it signs.
        let due_at = signing.created_at + period.as_secs() as i64 - prepublish - 1;
        if now < due_at {
            return Ok(None);
        }
        let signs_from = (signing.created_at + period.as_secs() as i64).max(now + prepublish + 1);
        let algorithm = signing.algorithm;
        // RSA key generation takes tens of milliseconds: off the async workers.
        let key = tokio::task::spawn_blocking(move || SigningKey::generate(algorithm, signs_from))
            .await
            .map_err(|_| KeyError::Generate(algorithm.as_str()))??;
        let kid = key.kid.clone();
        let verify_until = signs_from + self.settings.verify_after_retirement().as_secs() as i64;
        let rotated = self
            .store
            .schedule_signing_key(key, &signing.kid, verify_until)
            .await?;
        if !rotated {
            // Another instance (or an operator) changed the ring first: follow it.
            self.reload_keys().await?;
            return Ok(None);
        }
        crate::telemetry::metrics::signing_key_rotated("scheduled");
        tracing::info!(kid = %kid, signs_from, retiring = %signing.kid, "signing key rotation scheduled");
        self.reload_keys().await?;
        Ok(Some(kid))
    }

    pub(super) fn may_reload_for_unknown_kid(&self) -> bool {
        let mut last = self
            .last_unknown_kid_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= UNKNOWN_KID_RELOAD_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// The algorithm of the key that signs now.
    pub fn signing_algorithm(&self) -> SigningAlgorithm {
        self.ring().signer(self.clock.now()).algorithm
    }

    /// The algorithms of the keys that sign or still verify, the signing one first.
    pub fn algorithms(&self) -> Vec<SigningAlgorithm> {
        self.ring().algorithms()
    }
}

/// Rotates the signing key at once: a new key of `algorithm` signs from now on; the
/// old ones verify until every token they signed has expired
/// ([`JwtSettings::verify_after_retirement`]).
pub async fn rotate_signing_key(
    store: &dyn Store,
    now: UnixTime,
    settings: &JwtSettings,
    algorithm: SigningAlgorithm,
) -> Result<String, TokenError> {
    let key = SigningKey::generate(algorithm, now)?;
    let kid = key.kid.clone();
    let verify_until = now + settings.verify_after_retirement().as_secs() as i64;
    store.rotate_signing_key(key, verify_until).await?;
    Ok(kid)
}
