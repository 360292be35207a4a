//! Checking presented tokens: an access token's signature and claims
//! ([`TokenService::verify_access`], with the bulk-revocation watermark), its
//! stored state ([`TokenService::confirm_access`]), a refresh token's state,
//! and the subjects of tokens without stored state.

use super::*;

impl TokenService {
    /// Checks an access token's signature, type, issuer, audience and expiry. Reloads
    /// the key ring (rate-limited) when the `kid` is unknown, in case another process
    /// rotated keys.
    pub async fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let leeway = self.settings.leeway.as_secs() as i64;
        let verify = |ring: &KeyRing| {
            let expect = jwt::Expectations {
                issuer: &self.issuer,
                audience: Some(&self.audience),
                leeway,
                now: self.clock.now(),
            };
            jwt::verify(token, ring, &expect)
        };
        let claims = match verify(&self.ring()) {
            Err(JwtError::UnknownKey) if self.may_reload_for_unknown_kid() => {
                self.reload_keys().await?;
                verify(&self.ring())?
            }
            other => other?,
        };
        // Tokens whose state this use does not read: stateless mode, a client's own
        // token (`sub` = `client_id`), an external subject's (`vault_role`).
        let unstored = self.settings.stateless
            || claims.vault_role.is_some()
            || (claims.sid.is_none() && claims.sub == claims.client_id);
        if self.watermark().refuses(&claims, unstored) {
            return Err(Refusal::NotCurrent.into());
        }
        Ok(claims)
    }

    pub(super) fn watermark(&self) -> Arc<Watermark> {
        self.watermark
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the bulk-revocation watermark (written by any instance or CLI).
    pub async fn reload_watermark(&self) -> Result<(), TokenError> {
        let watermark = read_watermark(self.store.as_ref()).await?;
        if *self.watermark() != watermark {
            *self.watermark.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(watermark);
        }
        Ok(())
    }

    /// The store half of access-token validation (skipped in stateless mode): the
    /// agent is enrolled and the `jti` is its current or pending pair's; a pending
    /// pair is promoted by this use.
    pub async fn confirm_access(&self, claims: &AccessClaims) -> Result<(), TokenError> {
        if self.settings.stateless {
            return Ok(());
        }
        let now = self.clock.now();
        let key = StateKey::of_claims(claims);
        let record = self.pairs_state(key).await?;
        let decision = rotation::confirm_access(record.as_ref(), &claims.jti, now);
        match decision.outcome {
            Outcome::Refused(refusal) => Err(refusal.into()),
            Outcome::Accepted { promoted: false } => Ok(()),
            Outcome::Accepted { promoted: true } => {
                let jti = claims.jti.clone();
                let decided = DecidedOutcome::default();
                let change_decided = decided.clone();
                self.update_state(
                    key,
                    Box::new(move |r| {
                        let decision = rotation::confirm_access(r, &jti, now);
                        change_decided.set(decision.outcome);
                        decision.write
                    }),
                )
                .await?;
                match decided.get() {
                    Some(Outcome::Accepted { .. }) => Ok(()),
                    Some(Outcome::Refused(refusal)) => Err(refusal.into()),
                    None => Err(Refusal::NotCurrent.into()),
                }
            }
        }
    }

    /// [`confirm_access`](Self::confirm_access) without its side effect: says whether
    /// the token is the current or pending pair's, and promotes nothing. For readers
    /// that are not the agent (introspection), whose look must not count as a use.
    pub async fn check_access(&self, claims: &AccessClaims) -> Result<(), TokenError> {
        if self.settings.stateless {
            return Ok(());
        }
        let record = self.pairs_state(StateKey::of_claims(claims)).await?;
        match rotation::confirm_access(record.as_ref(), &claims.jti, self.clock.now()).outcome {
            Outcome::Accepted { .. } => Ok(()),
            Outcome::Refused(refusal) => Err(refusal.into()),
        }
    }

    /// A read-only look at a refresh token: its expiry if it would be accepted now
    /// (current or pending, not expired, agent enrolled), else `None`.
    pub async fn inspect_refresh(
        &self,
        presented: &refresh::ParsedRefresh,
    ) -> Result<Option<UnixTime>, TokenError> {
        let record = self.state(StateKey::of_refresh(presented)).await?;
        Ok(rotation::inspect_refresh(
            record.as_ref(),
            &presented.hash,
            self.clock.now(),
        ))
    }

    /// Creates an empty, active token-state record for `subject` if there is none (a
    /// non-agent client whose pairs are kept like an agent's). An existing record is
    /// left alone, so an unenrolled subject stays unenrolled.
    pub async fn ensure_subject(&self, subject: &str) -> Result<(), TokenError> {
        if self.store.agent(subject).await?.is_some() {
            return Ok(());
        }
        let now = self.clock.now();
        let id = subject.to_string();
        self.store
            .update_agent(
                subject,
                Box::new(move |record| match record {
                    Some(_) => None,
                    None => Some(TokenStateRecord::enrolled(&id, now)),
                }),
            )
            .await?;
        Ok(())
    }
}

/// The stored watermark (none yet: an empty one). An unreadable record is an error, not
/// an empty watermark: revocations are never silently forgotten.
pub(super) async fn read_watermark(store: &dyn Store) -> Result<Watermark, StoreError> {
    match store.record(RecordKind::Revocations, WATERMARK_ID).await? {
        None => Ok(Watermark::default()),
        Some(record) => serde_json::from_value(record.body)
            .map_err(|e| StoreError::Corrupt(format!("revocation watermark: {e}"))),
    }
}
