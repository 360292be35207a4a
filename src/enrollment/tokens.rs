//! The enrollment tokens themselves: created (API keys with the enrollment policy in
//! their owner metadata), described, listed and revoked, for the CLI and the
//! Kibana-shaped admin API. Enrolling with one is the parent module's.

use super::*;

impl EnrollmentService {
    /// Creates an enrollment token (its secret exists only in the answer).
    pub async fn create_token(
        &self,
        creator: &Creator,
        request: NewEnrollmentToken,
    ) -> Result<CreatedEnrollmentToken, EnrollmentError> {
        if !valid_policy_id(&request.policy_id) {
            return Err(EnrollmentError::BadRequest(format!(
                "policy_id must be 1 to {MAX_POLICY_ID_LEN} printable ASCII characters without spaces"
            )));
        }
        if request.max_uses == Some(0) {
            return Err(EnrollmentError::BadRequest(
                "max_uses must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        let name = request
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| format!("{} enrollment token", request.policy_id));
        if name.chars().count() > 1024 {
            return Err(EnrollmentError::BadRequest(
                "name may not be more than 1024 characters long".into(),
            ));
        }
        let policy = EnrollmentPolicy {
            policy_id: request.policy_id.clone(),
            max_uses: request.max_uses,
        };
        let owner = ApiKeyOwner {
            username: creator.username.clone(),
            realm: creator.realm.clone(),
            realm_type: creator.realm_type.clone(),
            // As Fleet's enrollment keys: no privilege at all.
            role_descriptors: json!({ "fleet-apikey-enroll": { "cluster": [], "indices": [], "applications": [], "run_as": [], "metadata": {}, "transient_metadata": { "enabled": true } } }),
            limited_by: json!([]),
            metadata: json!({
                "managed_by": "fleet",
                "managed": true,
                "type": "enroll",
                "policy_id": request.policy_id,
                ENROLLMENT_TOKEN_MARKER: policy,
            }),
        };
        let created = self
            .api_keys
            .create_owned(&name, request.expires_at, owner)
            .await?;
        if let Some(max_uses) = request.max_uses {
            let counter = StoredRecord {
                id: uses_id(&created.id),
                owner: None,
                purge_after: request.expires_at,
                body: json!({ "remaining": max_uses }),
            };
            self.store
                .update_record(
                    RecordKind::TokenUses,
                    &counter.id.clone(),
                    Box::new(move |_| RecordWrite::Put(counter.clone())),
                )
                .await?;
        }
        tracing::info!(id = %created.id, policy_id = %request.policy_id, username = %creator.username, "enrollment token created");
        metrics::enrollment_token("created");
        let now = self.clock.now();
        Ok(CreatedEnrollmentToken {
            token: EnrollmentToken {
                id: created.id.clone(),
                api_key_id: created.id,
                name: created.name,
                policy_id: request.policy_id,
                active: true,
                created_at: rfc3339(now),
                expiration: created.expiration,
                max_uses: request.max_uses,
                uses_left: request.max_uses,
            },
            api_key: created.api_key,
            encoded: created.encoded,
        })
    }

    async fn describe(&self, key: &ApiKeyRecord) -> Result<Option<EnrollmentToken>, StoreError> {
        let Some(policy) = policy_of(key) else {
            return Ok(None);
        };
        let uses_left = match policy.max_uses {
            None => None,
            Some(_) => Some(
                self.store
                    .record(RecordKind::TokenUses, &uses_id(&key.id))
                    .await?
                    .and_then(|r| r.body.get("remaining").and_then(Value::as_u64))
                    .unwrap_or(0) as u32,
            ),
        };
        let now = self.clock.now();
        Ok(Some(EnrollmentToken {
            id: key.id.clone(),
            api_key_id: key.id.clone(),
            name: key.name.clone(),
            policy_id: policy.policy_id,
            active: key.invalidated_at.is_none()
                && key.expires_at.is_none_or(|t| t > now)
                && uses_left != Some(0),
            created_at: rfc3339(key.created_at),
            expiration: key.expires_at.map(|t| t * 1000),
            max_uses: policy.max_uses,
            uses_left,
        }))
    }

    /// Every enrollment token (of one policy, if given), ordered by id.
    pub async fn list_tokens(
        &self,
        policy_id: Option<&str>,
    ) -> Result<Vec<EnrollmentToken>, EnrollmentError> {
        let mut tokens = Vec::new();
        for key in self.api_keys.list(&ApiKeyFilter::default()).await? {
            if let Some(token) = self.describe(&key).await? {
                if policy_id.is_none_or(|p| p == token.policy_id) {
                    tokens.push(token);
                }
            }
        }
        Ok(tokens)
    }

    /// One enrollment token.
    pub async fn token(&self, id: &str) -> Result<Option<EnrollmentToken>, EnrollmentError> {
        match self.api_keys.get(id).await? {
            Some(key) => Ok(self.describe(&key).await?),
            None => Ok(None),
        }
    }

    /// Revokes an enrollment token at once (agents it enrolled keep working). `None`
    /// if there is no such enrollment token; else whether it was active.
    pub async fn revoke_token(&self, id: &str) -> Result<Option<bool>, EnrollmentError> {
        match self.api_keys.get(id).await? {
            Some(key) if key.is_enrollment_token() => {
                let changed = self.api_keys.invalidate(id).await?;
                if changed {
                    tracing::info!(id, "enrollment token revoked");
                    metrics::enrollment_token("revoked");
                }
                Ok(Some(changed))
            }
            _ => Ok(None),
        }
    }
}
