//! The [`Store`] operations of the embedded store: reads on the reader pool, writes
//! as jobs of the writer thread (one trait implementation, so one file).

use super::*;

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(unavailable)
        })
    }

    async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.write(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map_err(unavailable)?;
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [&key], |row| {
                row.get(0)
            })
            .map_err(unavailable)
        })
        .await
    }

    async fn agent(&self, agent_id: &str) -> Result<Option<TokenStateRecord>, StoreError> {
        self.read(|conn| read_agent(conn, agent_id))
    }

    async fn agent_pairs(&self, agent_id: &str) -> Result<Option<TokenStateRecord>, StoreError> {
        self.read(|conn| read_agent_pairs(conn, agent_id))
    }

    async fn update_agent(
        &self,
        agent_id: &str,
        mut change: AgentChange,
    ) -> Result<Option<TokenStateRecord>, StoreError> {
        let agent_id = agent_id.to_string();
        // A read, then at most one statement (the upsert): no savepoint needed.
        self.write_one_statement(move |conn| {
            let before = read_agent(conn, &agent_id)?;
            if let Some(after) = change(before.as_ref()) {
                write_agent(conn, &after)?;
            }
            Ok(before)
        })
        .await
    }

    async fn insert_api_key(&self, key: ApiKeyRecord) -> Result<(), StoreError> {
        let owner = key
            .owner
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write(move |conn| {
            let (username, realm) = match &key.owner {
                Some(o) => (Some(o.username.as_str()), Some(o.realm.as_str())),
                None => (None, None),
            };
            conn.execute(
                "INSERT INTO api_keys (id, name, agent_id, hash, created_at, expires_at, invalidated_at, \
                 owner_username, owner_realm, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![key.id, key.name, key.agent_id, key.hash, key.created_at, key.expires_at,
                        key.invalidated_at, username, realm, owner],
            )
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(format!("api key {}", key.id)),
                _ => unavailable(e),
            })?;
            Ok(())
        })
        .await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(SELECT_API_KEY).map_err(unavailable)?;
            stmt.query_row([id], api_key_from)
                .optional()
                .map_err(unavailable)?
                .map(with_owner)
                .transpose()
        })
    }

    async fn invalidate_api_key(&self, id: &str, now: UnixTime) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE api_keys SET invalidated_at = ?2 WHERE id = ?1 AND invalidated_at IS NULL",
                    params![id, now],
                )
                .map_err(unavailable)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn invalidate_agent_api_keys(
        &self,
        agent_id: &str,
        now: UnixTime,
    ) -> Result<usize, StoreError> {
        let agent_id = agent_id.to_string();
        self.write(move |conn| {
            conn.execute(
                "UPDATE api_keys SET invalidated_at = ?2 WHERE agent_id = ?1 AND invalidated_at IS NULL",
                params![agent_id, now],
            )
            .map_err(unavailable)
        })
        .await
    }

    async fn api_keys_where(&self, filter: &ApiKeyFilter) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE (?1 IS NULL OR name = ?1) \
                     AND (?2 IS NULL OR owner_username = ?2) AND (?3 IS NULL OR owner_realm = ?3) \
                     ORDER BY id"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(
                    params![filter.name, filter.username, filter.realm],
                    api_key_from,
                )
                .map_err(unavailable)?;
            rows.map(|row| with_owner(row.map_err(unavailable)?))
                .collect()
        })
    }

    async fn purge_api_keys(&self, cutoff: UnixTime) -> Result<usize, StoreError> {
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM api_keys WHERE invalidated_at <= ?1 OR expires_at <= ?1",
                [cutoff],
            )
            .map_err(unavailable)
        })
        .await
    }

    async fn record(&self, kind: RecordKind, id: &str) -> Result<Option<StoredRecord>, StoreError> {
        self.read(|conn| read_record(conn, kind, id))
    }

    async fn update_record(
        &self,
        kind: RecordKind,
        id: &str,
        mut change: RecordChange,
    ) -> Result<Option<StoredRecord>, StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            let before = read_record(conn, kind, &id)?;
            match change(before.as_ref()) {
                RecordWrite::Keep => {}
                RecordWrite::Delete => {
                    conn.execute(
                        "DELETE FROM security_records WHERE kind = ?1 AND id = ?2",
                        params![kind.as_str(), id],
                    )
                    .map_err(unavailable)?;
                }
                RecordWrite::Put(next) => {
                    let body = serde_json::to_string(&next.body)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    conn.execute(
                        "INSERT OR REPLACE INTO security_records (kind, id, owner, purge_after, body) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![kind.as_str(), id, next.owner, next.purge_after, body],
                    )
                    .map_err(unavailable)?;
                }
            }
            Ok(before)
        })
        .await
    }

    async fn records(
        &self,
        kind: RecordKind,
        owner: Option<&str>,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, owner, purge_after, body FROM security_records \
                     WHERE kind = ?1 AND (?2 IS NULL OR owner = ?2) ORDER BY id",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![kind.as_str(), owner], record_from)
                .map_err(unavailable)?;
            rows.map(|row| decode_record(kind, row.map_err(unavailable)?))
                .collect()
        })
    }

    async fn purge_records(&self, kind: RecordKind, cutoff: UnixTime) -> Result<usize, StoreError> {
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM security_records WHERE kind = ?1 AND purge_after <= ?2",
                params![kind.as_str(), cutoff],
            )
            .map_err(unavailable)
        })
        .await
    }

    async fn agent_ids(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT agent_id FROM agents ORDER BY agent_id")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
    }

    async fn signing_keys(&self, now: UnixTime) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys \
                     WHERE verify_until IS NULL OR verify_until > ?1 ORDER BY created_at DESC, kid"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([now], signing_key_from)
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
    }

    async fn insert_first_signing_key(
        &self,
        key: SigningKeyRecord,
    ) -> Result<SigningKeyRecord, StoreError> {
        self.write(move |conn| {
            let existing = conn
                .query_row(
                    &format!(
                        "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys WHERE retired_at IS NULL \
                         ORDER BY created_at DESC LIMIT 1"
                    ),
                    [],
                    signing_key_from,
                )
                .optional()
                .map_err(unavailable)?;
            match existing {
                Some(existing) => Ok(existing),
                None => {
                    insert_signing_key(conn, &key)?;
                    Ok(key)
                }
            }
        })
        .await
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        old_verify_until: UnixTime,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "UPDATE signing_keys SET retired_at = ?1, verify_until = ?2 WHERE retired_at IS NULL",
                params![key.created_at, old_verify_until],
            )
            .map_err(unavailable)?;
            insert_signing_key(conn, &key)
        })
        .await
    }

    async fn expire_signing_key(&self, kid: &str, now: UnixTime) -> Result<bool, StoreError> {
        let kid = kid.to_string();
        self.write(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE signing_keys SET retired_at = MIN(COALESCE(retired_at, ?1), ?1), \
                     verify_until = ?1 WHERE kid = ?2 AND (verify_until IS NULL OR verify_until > ?1)",
                    params![now, kid],
                )
                .map_err(unavailable)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn schedule_signing_key(
        &self,
        key: SigningKeyRecord,
        expected_kid: &str,
        old_verify_until: UnixTime,
    ) -> Result<bool, StoreError> {
        let expected_kid = expected_kid.to_string();
        self.write(move |conn| {
            let newest: Option<(String, Option<UnixTime>)> = conn
                .query_row(
                    "SELECT kid, retired_at FROM signing_keys \
                     ORDER BY created_at DESC, kid LIMIT 1",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(unavailable)?;
            if newest != Some((expected_kid.clone(), None)) {
                return Ok(false);
            }
            conn.execute(
                "UPDATE signing_keys SET retired_at = ?1, verify_until = ?2 WHERE kid = ?3",
                params![key.created_at, old_verify_until, expected_kid],
            )
            .map_err(unavailable)?;
            insert_signing_key(conn, &key)?;
            Ok(true)
        })
        .await
    }
}
