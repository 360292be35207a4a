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
//!
//! This file is the handle (opening, the reader pool, handing jobs to the writer);
//! `writer.rs` is the writer thread, `operations.rs` the `Store` methods, `rows.rs`
//! the statements and row mapping, `schema.rs` the tables and migrations.

mod operations;
mod rows;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

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

// What the store's own files define, for one another.
use rows::*;
use schema::*;
use writer::*;

/// The database file inside the data dir.
pub const DB_FILE: &str = "fleetauth.db";
/// Most writes folded into one transaction.
const MAX_BATCH: usize = 512;
const READERS: usize = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// Queues `f` for the writer, in a savepoint of its own; answers once the batch
    /// holding it is committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.queue_write(f, in_savepoint).await
    }

    /// Like [`Self::write`] for a job whose writes are at most one statement, its last:
    /// no savepoint ([`as_one_statement`] says why none is needed).
    async fn write_one_statement<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.queue_write(f, as_one_statement).await
    }

    async fn queue_write<T: Send + 'static, F>(
        &self,
        f: F,
        run: fn(&Connection, F) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &Connection| {
            let outcome = run(conn, f);
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
