//! The embedded store's schema: the tables, and the migrations of databases made by
//! older versions (`user_version`), applied in order at open.

use super::*;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
    agent_id                   TEXT PRIMARY KEY,
    active                     INTEGER NOT NULL,
    current_jti                TEXT,
    current_refresh_hash       TEXT,
    current_access_expires_at  INTEGER,
    current_refresh_expires_at INTEGER,
    pending_jti                TEXT,
    pending_refresh_hash       TEXT,
    pending_access_expires_at  INTEGER,
    pending_refresh_expires_at INTEGER,
    retired                    BLOB NOT NULL,
    updated_at                 INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    agent_id       TEXT,
    hash           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    invalidated_at INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_by_agent ON api_keys (agent_id);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid          TEXT PRIMARY KEY,
    algorithm    TEXT NOT NULL,
    private_der  BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER,
    verify_until INTEGER
);
CREATE TABLE IF NOT EXISTS security_records (
    kind        TEXT NOT NULL,
    id          TEXT NOT NULL,
    owner       TEXT,
    purge_after INTEGER,
    body        TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS security_records_by_owner ON security_records (kind, owner, id);
CREATE INDEX IF NOT EXISTS security_records_by_purge ON security_records (kind, purge_after);
";

/// Schema changes after version 1, applied in order to a database at an older
/// `user_version` (a new database goes through them too).
pub(super) const MIGRATIONS: &[(i64, &str)] = &[(
    2,
    "ALTER TABLE api_keys ADD COLUMN owner_username TEXT;
     ALTER TABLE api_keys ADD COLUMN owner_realm TEXT;
     ALTER TABLE api_keys ADD COLUMN owner TEXT;
     CREATE INDEX IF NOT EXISTS api_keys_by_owner ON api_keys (owner_username, owner_realm);
     CREATE INDEX IF NOT EXISTS api_keys_by_name ON api_keys (name);
     CREATE INDEX IF NOT EXISTS api_keys_by_invalidation ON api_keys (invalidated_at);
     CREATE INDEX IF NOT EXISTS api_keys_by_expiry ON api_keys (expires_at);",
)];

/// Creates the tables and applies the migrations the database has not seen, in the
/// caller's transaction.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA).map_err(unavailable)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(unavailable)?;
    let mut version = version.max(1);
    for (target, sql) in MIGRATIONS {
        if version < *target {
            conn.execute_batch(sql).map_err(unavailable)?;
            version = *target;
        }
    }
    conn.execute_batch(&format!("PRAGMA user_version = {version};"))
        .map_err(unavailable)
}
