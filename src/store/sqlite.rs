//! The embedded store: one SQLite file (`fleetauth.db` in the data dir), WAL mode,
//! `synchronous = FULL`, so a committed write survives `kill -9` and power loss.
//!
//! Writes go through one writer thread that practises *group commit*: it takes every
//! write queued while the previous commit was being flushed, runs each in its own
//! savepoint inside one transaction, commits once, and only then answers each caller.
//! One fsync thus serves many issuances, and every answer still means "durable".
//! The writer is also what serializes changes to one agent: `update_agent` reads and
//! writes the record inside the writer's transaction, so it never conflicts.
//!
//! Reads use a small pool of reader connections; in WAL mode they never wait for the
//! writer. Other processes (the CLI) may open the same file at any time: SQLite's
//! locking and `busy_timeout` keep them consistent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::oneshot;

use super::{
    AgentChange, ApiKeyFilter, ApiKeyOwner, ApiKeyRecord, RecordChange, RecordKind, RecordWrite,
    RetiredRefresh, SigningKeyRecord, Store, StoreError, StoredRecord, TokenPairRecord,
    TokenStateRecord,
};
use crate::clock::UnixTime;

/// The database file inside the data dir.
pub const DB_FILE: &str = "fleetauth.db";
/// Most writes folded into one transaction.
const MAX_BATCH: usize = 512;
const READERS: usize = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
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
const MIGRATIONS: &[(i64, &str)] = &[(
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
fn migrate(conn: &Connection) -> Result<(), StoreError> {
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

/// A write run by the writer thread inside the batch transaction; it returns what to
/// do once the batch's commit has succeeded or failed.
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A cheap, cloneable handle on the embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<Job>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unavailable)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .map_err(unavailable)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`. The flag says whether the
    /// database was created by this call.
    pub fn open(data_dir: &Path) -> Result<(Self, bool), StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DB_FILE);
        let created = !path.exists();
        let writer_conn = open_connection(&path)?;
        restrict_permissions(&path);
        writer_conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(unavailable)?;
        if let Err(e) = migrate(&writer_conn) {
            let _ = writer_conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        writer_conn.execute_batch("COMMIT").map_err(unavailable)?;
        let readers = (0..READERS)
            .map(|_| open_connection(&path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("fleetauth-sqlite-writer".into())
            .spawn(move || writer_loop(writer_conn, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
        let inner = Inner {
            path,
            writer: tx,
            readers,
            next_reader: AtomicUsize::new(0),
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            created,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a reader connection. Point reads take microseconds, so they run
    /// in place rather than hopping to a blocking thread.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let i = self.inner.next_reader.fetch_add(1, Ordering::Relaxed) % self.inner.readers.len();
        let conn = self.inner.readers[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&conn)
    }

    /// Queues `f` for the writer; answers once the batch holding it is committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &Connection| {
            let outcome = in_savepoint(conn, f);
            Box::new(move |committed: Result<(), StoreError>| {
                let _ = tx.send(committed.and(outcome));
            })
        });
        self.inner
            .writer
            .send(job)
            .map_err(|_| StoreError::Unavailable("sqlite writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("sqlite write was not committed".into()))?
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // The file holds signing keys: readable by its owner only.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) {}

/// Runs one job in a savepoint, so that its failure undoes only its own writes.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let run = |sql: &str| -> Result<(), StoreError> {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(drop)
            .map_err(unavailable)
    };
    run("SAVEPOINT job")?;
    let outcome = f(conn);
    if outcome.is_err() {
        run("ROLLBACK TO job")?;
    }
    run("RELEASE job")?;
    outcome
}

fn writer_loop(conn: Connection, jobs: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut completions: Vec<Completion> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "sqlite: cannot begin a write transaction");
            // Dropping the jobs tells each caller that its write was not committed.
            batch.clear();
            continue;
        }
        completions.extend(batch.drain(..).map(|job| job(&conn)));
        let committed = conn.execute_batch("COMMIT").map_err(|e| {
            tracing::error!(error = %e, "sqlite: commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            unavailable(e)
        });
        crate::telemetry::metrics::store_batch_size(completions.len());
        for complete in completions.drain(..) {
            let result = match &committed {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            };
            complete(result);
        }
    }
}

// ---- row mapping ----

// The hot statements are `concat!`ed at compile time rather than `format!`ed per
// call: `prepare_cached` then finds them without building the SQL text first.
macro_rules! agent_columns {
    () => {
        "agent_id, active, current_jti, current_refresh_hash, current_access_expires_at, \
         current_refresh_expires_at, pending_jti, pending_refresh_hash, pending_access_expires_at, \
         pending_refresh_expires_at, retired, updated_at"
    };
}
const SELECT_AGENT: &str = concat!(
    "SELECT ",
    agent_columns!(),
    " FROM agents WHERE agent_id = ?1"
);
/// The agent's row without its retired refresh hashes ([`Store::agent_pairs`]).
const SELECT_AGENT_PAIRS: &str = "SELECT agent_id, active, current_jti, current_refresh_hash, \
     current_access_expires_at, current_refresh_expires_at, pending_jti, pending_refresh_hash, \
     pending_access_expires_at, pending_refresh_expires_at, updated_at \
     FROM agents WHERE agent_id = ?1";
const UPSERT_AGENT: &str = concat!(
    "INSERT INTO agents (",
    agent_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
     ON CONFLICT (agent_id) DO UPDATE SET active = ?2, current_jti = ?3, \
     current_refresh_hash = ?4, current_access_expires_at = ?5, \
     current_refresh_expires_at = ?6, pending_jti = ?7, pending_refresh_hash = ?8, \
     pending_access_expires_at = ?9, pending_refresh_expires_at = ?10, retired = ?11, \
     updated_at = ?12"
);

fn pair_from(row: &Row<'_>, first: usize) -> rusqlite::Result<Option<TokenPairRecord>> {
    let jti: Option<String> = row.get(first)?;
    Ok(match jti {
        None => None,
        Some(jti) => Some(TokenPairRecord {
            jti,
            refresh_hash: row.get(first + 1)?,
            access_expires_at: row.get(first + 2)?,
            refresh_expires_at: row.get(first + 3)?,
        }),
    })
}

/// Bytes per retired refresh token in the `retired` column: the SHA-256 and the
/// expiry (big-endian seconds). Compact, because the column is rewritten on every
/// issuance.
const RETIRED_ENTRY: usize = 32 + 8;

fn encode_retired(retired: &[RetiredRefresh]) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::with_capacity(retired.len() * RETIRED_ENTRY);
    for r in retired {
        let hash = r.refresh_hash.as_bytes();
        if hash.len() != 64 {
            return Err(StoreError::Corrupt(
                "a refresh hash is not 64 hex digits".into(),
            ));
        }
        for pair in hash.chunks_exact(2) {
            match (hex_value(pair[0]), hex_value(pair[1])) {
                (Some(hi), Some(lo)) => bytes.push(hi << 4 | lo),
                _ => return Err(StoreError::Corrupt("a refresh hash is not hex".into())),
            }
        }
        bytes.extend_from_slice(&r.expires_at.to_be_bytes());
    }
    Ok(bytes)
}

/// The value of one hex digit (either case), by a table: this runs for every digit of
/// every retired hash of every issuance (1,024 per write of a long-running agent).
fn hex_value(digit: u8) -> Option<u8> {
    const INVALID: u8 = 0xff;
    const VALUES: [u8; 256] = {
        let mut table = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            table[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            table[b'a' as usize + i] = 10 + i as u8;
            table[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        table
    };
    match VALUES[usize::from(digit)] {
        INVALID => None,
        value => Some(value),
    }
}

fn decode_retired(agent_id: &str, bytes: &[u8]) -> Result<Vec<RetiredRefresh>, StoreError> {
    if !bytes.len().is_multiple_of(RETIRED_ENTRY) {
        return Err(StoreError::Corrupt(format!(
            "agent {agent_id}: retired tokens: {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(RETIRED_ENTRY)
        .map(|entry| {
            let (hash, expires_at) = entry.split_at(32);
            RetiredRefresh {
                refresh_hash: lower_hex(hash),
                expires_at: i64::from_be_bytes(expires_at.try_into().unwrap_or_default()),
            }
        })
        .collect())
}

/// `bytes` as lowercase hex, written into one exactly sized buffer (this runs for
/// every retired hash of every agent read, 16 per issuance of a long-running agent).
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = vec![0u8; bytes.len() * 2];
    for (out, b) in hex.chunks_exact_mut(2).zip(bytes) {
        out[0] = DIGITS[usize::from(b >> 4)];
        out[1] = DIGITS[usize::from(b & 0x0f)];
    }
    // Only ASCII digits were written.
    String::from_utf8(hex).unwrap_or_default()
}

fn agent_from(row: &Row<'_>) -> rusqlite::Result<(TokenStateRecord, Vec<u8>)> {
    let record = TokenStateRecord {
        agent_id: row.get(0)?,
        active: row.get(1)?,
        current: pair_from(row, 2)?,
        pending: pair_from(row, 6)?,
        retired: Vec::new(),
        updated_at: row.get(11)?,
    };
    Ok((record, row.get(10)?))
}

fn read_agent(conn: &Connection, agent_id: &str) -> Result<Option<TokenStateRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(SELECT_AGENT).map_err(unavailable)?;
    let found = stmt
        .query_row([agent_id], agent_from)
        .optional()
        .map_err(unavailable)?;
    found
        .map(|(mut record, retired)| {
            record.retired = decode_retired(agent_id, &retired)?;
            Ok(record)
        })
        .transpose()
}

/// The agent's record with an empty `retired` list, without reading the list.
fn read_agent_pairs(
    conn: &Connection,
    agent_id: &str,
) -> Result<Option<TokenStateRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(SELECT_AGENT_PAIRS)
        .map_err(unavailable)?;
    stmt.query_row([agent_id], |row| {
        Ok(TokenStateRecord {
            agent_id: row.get(0)?,
            active: row.get(1)?,
            current: pair_from(row, 2)?,
            pending: pair_from(row, 6)?,
            retired: Vec::new(),
            updated_at: row.get(10)?,
        })
    })
    .optional()
    .map_err(unavailable)
}

fn write_agent(conn: &Connection, r: &TokenStateRecord) -> Result<(), StoreError> {
    let retired = encode_retired(&r.retired)?;
    let (c, p) = (r.current.as_ref(), r.pending.as_ref());
    let mut stmt = conn.prepare_cached(UPSERT_AGENT).map_err(unavailable)?;
    stmt.execute(params![
        r.agent_id,
        r.active,
        c.map(|c| &c.jti),
        c.map(|c| &c.refresh_hash),
        c.map(|c| c.access_expires_at),
        c.map(|c| c.refresh_expires_at),
        p.map(|p| &p.jti),
        p.map(|p| &p.refresh_hash),
        p.map(|p| p.access_expires_at),
        p.map(|p| p.refresh_expires_at),
        retired,
        r.updated_at,
    ])
    .map_err(unavailable)?;
    Ok(())
}

macro_rules! api_key_columns {
    () => {
        "id, name, agent_id, hash, created_at, expires_at, invalidated_at, owner"
    };
}
const API_KEY_COLUMNS: &str = api_key_columns!();
const SELECT_API_KEY: &str = concat!(
    "SELECT ",
    api_key_columns!(),
    " FROM api_keys WHERE id = ?1"
);

fn api_key_from(row: &Row<'_>) -> rusqlite::Result<(ApiKeyRecord, Option<String>)> {
    Ok((
        ApiKeyRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            agent_id: row.get(2)?,
            hash: row.get(3)?,
            created_at: row.get(4)?,
            expires_at: row.get(5)?,
            invalidated_at: row.get(6)?,
            owner: None,
        },
        row.get(7)?,
    ))
}

/// The key with its owner (kept as JSON) decoded.
fn with_owner(
    (mut key, owner): (ApiKeyRecord, Option<String>),
) -> Result<ApiKeyRecord, StoreError> {
    key.owner = owner
        .map(|text| serde_json::from_str::<ApiKeyOwner>(&text))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("api key {}: owner: {e}", key.id)))?;
    Ok(key)
}

fn record_from(row: &Row<'_>) -> rusqlite::Result<(String, Option<String>, Option<i64>, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn decode_record(
    kind: RecordKind,
    (id, owner, purge_after, body): (String, Option<String>, Option<i64>, String),
) -> Result<StoredRecord, StoreError> {
    let body = serde_json::from_str(&body)
        .map_err(|e| StoreError::Corrupt(format!("{} record {id}: {e}", kind.as_str())))?;
    Ok(StoredRecord {
        id,
        owner,
        purge_after,
        body,
    })
}

fn read_record(
    conn: &Connection,
    kind: RecordKind,
    id: &str,
) -> Result<Option<StoredRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, owner, purge_after, body FROM security_records WHERE kind = ?1 AND id = ?2",
        )
        .map_err(unavailable)?;
    stmt.query_row(params![kind.as_str(), id], record_from)
        .optional()
        .map_err(unavailable)?
        .map(|row| decode_record(kind, row))
        .transpose()
}

fn signing_key_from(row: &Row<'_>) -> rusqlite::Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: row.get(0)?,
        algorithm: row.get(1)?,
        private_der: row.get(2)?,
        created_at: row.get(3)?,
        retired_at: row.get(4)?,
        verify_until: row.get(5)?,
    })
}

const SIGNING_KEY_COLUMNS: &str =
    "kid, algorithm, private_der, created_at, retired_at, verify_until";

fn insert_signing_key(conn: &Connection, k: &SigningKeyRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        ),
        params![
            k.kid,
            k.algorithm,
            k.private_der,
            k.created_at,
            k.retired_at,
            k.verify_until
        ],
    )
    .map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => {
            StoreError::Conflict(format!("signing key {}", k.kid))
        }
        _ => unavailable(e),
    })?;
    Ok(())
}

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
        self.write(move |conn| {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The version-1 schema, as the first releases created it.
    const SCHEMA_V1: &str = "
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, agent_id TEXT,
            hash TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER,
            invalidated_at INTEGER);
        INSERT INTO api_keys VALUES ('old', 'n', 'agent-1', 'h', 1, NULL, NULL);
        PRAGMA user_version = 1;";

    #[test]
    fn retired_hashes_round_trip_through_the_blob_as_lowercase_hex() {
        let retired: Vec<RetiredRefresh> = (0u8..3)
            .map(|n| RetiredRefresh {
                refresh_hash: (0..32u8)
                    .map(|i| format!("{:02x}", i.wrapping_mul(37).wrapping_add(n * 101)))
                    .collect(),
                expires_at: 1_700_000_000 + i64::from(n),
            })
            .collect();
        let blob = encode_retired(&retired).unwrap();
        assert_eq!(blob.len(), 3 * RETIRED_ENTRY);
        assert_eq!(decode_retired("a", &blob).unwrap(), retired);
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert!(decode_retired("a", &blob[..RETIRED_ENTRY - 1]).is_err());
    }

    #[tokio::test]
    async fn agent_pairs_reads_the_record_without_its_retired_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SqliteStore::open(dir.path()).unwrap();
        let pair = |n: u8| TokenPairRecord {
            jti: format!("jti-{n}"),
            refresh_hash: lower_hex(&[n; 32]),
            access_expires_at: 1_000 + i64::from(n),
            refresh_expires_at: 2_000 + i64::from(n),
        };
        let record = TokenStateRecord {
            agent_id: "agent-1".into(),
            active: true,
            current: Some(pair(1)),
            pending: Some(pair(2)),
            retired: vec![RetiredRefresh {
                refresh_hash: lower_hex(&[9; 32]),
                expires_at: 3_000,
            }],
            updated_at: 42,
        };
        let written = record.clone();
        store
            .update_agent("agent-1", Box::new(move |_| Some(written.clone())))
            .await
            .unwrap();

        assert_eq!(store.agent("agent-1").await.unwrap(), Some(record.clone()));
        let pairs = store.agent_pairs("agent-1").await.unwrap();
        assert_eq!(
            pairs,
            Some(TokenStateRecord {
                retired: Vec::new(),
                ..record
            })
        );
        assert_eq!(store.agent_pairs("agent-2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_version_1_database_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .execute_batch(SCHEMA_V1)
            .unwrap();

        let (store, created) = SqliteStore::open(dir.path()).unwrap();

        assert!(!created);
        let old = store.api_key("old").await.unwrap().unwrap();
        assert_eq!(
            (old.agent_id.as_deref(), old.owner),
            (Some("agent-1"), None)
        );
        let owned = ApiKeyRecord {
            id: "new".into(),
            owner: Some(ApiKeyOwner {
                username: "alice".into(),
                realm: "default_native".into(),
                realm_type: "native".into(),
                role_descriptors: serde_json::json!({}),
                limited_by: serde_json::json!([]),
                metadata: serde_json::json!({ "k": "v" }),
            }),
            ..old
        };
        store.insert_api_key(owned.clone()).await.unwrap();
        assert_eq!(store.api_key("new").await.unwrap(), Some(owned));
        let version: i64 = store
            .read(|c| {
                c.query_row("PRAGMA user_version", [], |r| r.get(0))
                    .map_err(unavailable)
            })
            .unwrap();
        assert_eq!(version, 2);
        drop(store);
        // Opening again changes nothing.
        let (again, _) = SqliteStore::open(dir.path()).unwrap();
        assert!(again.api_key("new").await.unwrap().is_some());
    }
}
