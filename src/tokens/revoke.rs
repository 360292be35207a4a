//! Revoking through the token service: one token (RFC 7009: a refresh token or an
//! access token, with its state) and in bulk ([`TokenService::revoke_bulk`]; the
//! criteria and the watermark are [`super::revocation`]).

use super::*;

impl TokenService {
    /// Bulk revocation (see [`revocation`]): writes the watermark (durable before this
    /// returns, applied here at once and by every other instance within
    /// `jwt.key_poll_interval`), removes a revoked signing key from the ring, and drops
    /// the matching pairs from every token-state record they are in, each by an atomic
    /// change (stateful validation refuses them at once on every instance).
    pub async fn revoke_bulk(&self, criterion: &Criterion) -> Result<Revoked, TokenError> {
        let now = self.clock.now();
        let keep = self.settings.verify_after_retirement().as_secs() as i64;
        let mut revoked = Revoked::default();
        if !matches!(criterion, Criterion::Kid(_)) {
            let added = criterion.clone();
            self.store
                .update_record(
                    RecordKind::Revocations,
                    WATERMARK_ID,
                    Box::new(move |current| {
                        let watermark = current
                            .and_then(|r| serde_json::from_value::<Watermark>(r.body.clone()).ok())
                            .unwrap_or_default()
                            .with(&added, now, keep);
                        RecordWrite::Put(StoredRecord {
                            id: WATERMARK_ID.to_string(),
                            owner: None,
                            purge_after: None,
                            body: serde_json::to_value(&watermark).unwrap_or_default(),
                        })
                    }),
                )
                .await?;
            self.reload_watermark().await?;
        }
        let poll = self.settings.key_poll_interval.as_secs() as i64 + 1;
        // Which pairs, by issue time, and in which records.
        let (from, until, keys) = match criterion {
            Criterion::Agent(agent) => (UnixTime::MIN, UnixTime::MAX, vec![agent.clone()]),
            Criterion::Client(client) => {
                let mut ids = vec![client.clone()];
                if let Some(agent) = self.store.api_key(client).await?.and_then(|k| k.agent_id) {
                    ids.push(agent);
                }
                (UnixTime::MIN, UnixTime::MAX, ids)
            }
            Criterion::Kid(kid) => {
                let Some(key) = self
                    .store
                    .signing_keys(now)
                    .await?
                    .into_iter()
                    .find(|k| &k.kid == kid)
                else {
                    return Err(TokenError::Keys(KeyError::UnknownKid(kid.clone())));
                };
                if self.ring().signer(now).kid == key.kid || key.created_at > now {
                    // It signs (or is about to): a fresh key of its algorithm takes over.
                    let algorithm =
                        SigningAlgorithm::parse(&key.algorithm).unwrap_or(self.settings.algorithm);
                    rotate_signing_key(self.store.as_ref(), now, &self.settings, algorithm).await?;
                    crate::telemetry::metrics::signing_key_rotated("revoked");
                }
                if self.store.expire_signing_key(kid, now).await? {
                    revoked.signing_keys = 1;
                }
                self.reload_keys().await?;
                // Pairs issued while it signed, with the poll interval of the other
                // instances as a margin (an instance may sign with a retired key until
                // its next poll).
                let stopped = key.retired_at.map_or(now, |t| t.min(now));
                (
                    key.created_at,
                    stopped + poll,
                    self.store.agent_ids().await?,
                )
            }
            Criterion::IssuedBefore(t) => (UnixTime::MIN, *t, self.store.agent_ids().await?),
        };
        let mut states: Vec<(bool, String)> = keys.into_iter().map(|id| (false, id)).collect();
        if matches!(criterion, Criterion::Kid(_) | Criterion::IssuedBefore(_)) {
            for family in self.families_of(None).await? {
                states.push((true, family.family_id));
            }
        }
        for (is_family, id) in states {
            let key = if is_family {
                StateKey::Family(&id)
            } else {
                StateKey::Agent(&id)
            };
            let doomed = move |p: &TokenPairRecord| revocation::issued_within(p, from, until);
            let before = self
                .update_state(
                    key,
                    Box::new(move |r| revocation::drop_pairs(r, doomed, now).map(|(next, _)| next)),
                )
                .await?;
            if let Some((_, pairs)) = revocation::drop_pairs(before.as_ref(), doomed, now) {
                revoked.families += 1;
                revoked.pairs += pairs;
            }
        }
        crate::telemetry::metrics::bulk_revocation(criterion.label(), revoked.pairs);
        tracing::info!(
            by = criterion.label(),
            families = revoked.families,
            pairs = revoked.pairs,
            signing_keys = revoked.signing_keys,
            "bulk revocation"
        );
        Ok(revoked)
    }

    /// Revokes the family of a refresh token (every token of its agent), RFC 7009.
    /// Returns whether anything was revoked.
    pub async fn revoke_refresh(
        &self,
        presented: &refresh::ParsedRefresh,
    ) -> Result<bool, TokenError> {
        let now = self.clock.now();
        let hash = presented.hash.clone();
        let before = self
            .update_state(
                StateKey::of_refresh(presented),
                Box::new(move |r| rotation::revoke_refresh(r, &hash, now)),
            )
            .await?;
        let revoked = rotation::revoke_refresh(before.as_ref(), &presented.hash, now).is_some();
        if revoked {
            tracing::info!(agent_id = %presented.agent_id, "refresh token revoked: all tokens of the subject revoked");
        }
        Ok(revoked)
    }

    /// Revokes the pair of a verified access token at once. Returns whether anything
    /// was revoked.
    pub async fn revoke_access(&self, claims: &AccessClaims) -> Result<bool, TokenError> {
        let now = self.clock.now();
        let jti = claims.jti.clone();
        let before = self
            .update_state(
                StateKey::of_claims(claims),
                Box::new(move |r| rotation::revoke_access(r, &jti, now)),
            )
            .await?;
        let revoked = rotation::revoke_access(before.as_ref(), &claims.jti, now).is_some();
        if revoked {
            tracing::info!(agent_id = %claims.sub, "access token revoked");
        }
        Ok(revoked)
    }
}
