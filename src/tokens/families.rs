//! Token families of the token API (`/_security/oauth2/token`): each `password` or
//! `client_credentials` grant starts one, a record keyed by a fresh id and owned by the
//! user, whose state rotates by the same rules as an agent's.

use super::*;

impl TokenService {
    /// Starts a new token family for a user (the token API's `password` and
    /// `client_credentials` grants): a fresh family id, and its first pair stored as
    /// the family's pending pair by the rotation rules (as an agent's API-key exchange
    /// is), in one write that also creates the family's record.
    pub async fn issue_family(
        &self,
        username: &str,
        realm: &str,
        realm_type: &str,
    ) -> Result<IssuedFamily, TokenError> {
        let now = self.clock.now();
        let family_id = uuid::Uuid::new_v4().simple().to_string();
        let subject = Subject {
            sub: username,
            client_id: refresh::FAMILY_CLIENT_ID,
            family: Some(&family_id),
            bound_key: None,
        };
        let (pair, record) = self.mint(&subject, None, now);
        let mut state = TokenStateRecord::enrolled(&family_id, now);
        state = rotation::exchange(Some(&state), TradedIn::ApiKey, &record, now)
            .write
            .unwrap_or(state);
        let family = TokenFamilyRecord {
            family_id: family_id.clone(),
            username: username.to_string(),
            realm: realm.to_string(),
            realm_type: realm_type.to_string(),
            created_at: now,
            state,
        };
        let before = self
            .store
            .update_typed::<TokenFamilyRecord, _>(&family_id, move |existing| match existing {
                Some(_) => TypedWrite::Keep,
                None => TypedWrite::Put(family.clone()),
            })
            .await?;
        if before.is_some() {
            // A random 128-bit id was taken: not a state anyone can reach.
            return Err(StoreError::Conflict(format!("token family {family_id}")).into());
        }
        Ok(IssuedFamily { family_id, pair })
    }

    /// A token family's record.
    pub async fn family(&self, family_id: &str) -> Result<Option<TokenFamilyRecord>, TokenError> {
        Ok(self
            .store
            .typed_record::<TokenFamilyRecord>(family_id)
            .await?)
    }

    /// Every token family of a user (a listing; see [`Store::records`]).
    pub async fn families_of(
        &self,
        username: Option<&str>,
    ) -> Result<Vec<TokenFamilyRecord>, TokenError> {
        Ok(self
            .store
            .typed_records::<TokenFamilyRecord>(username)
            .await?)
    }

    /// Revokes every pair of a token family. `true` if it had any.
    pub async fn revoke_family(&self, family_id: &str) -> Result<bool, TokenError> {
        let now = self.clock.now();
        let before = self
            .update_state(
                StateKey::Family(family_id),
                Box::new(move |r| rotation::revoke_pairs(r, now)),
            )
            .await?;
        Ok(rotation::revoke_pairs(before.as_ref(), now).is_some())
    }

    /// Removes the token families whose every token has expired by `now`.
    pub async fn purge_families(&self, now: UnixTime) -> Result<usize, TokenError> {
        Ok(self
            .store
            .purge_records(crate::store::RecordKind::TokenFamily, now)
            .await?)
    }
}
