//! The writer thread: every write of the embedded store is a job it runs inside one
//! group-commit transaction, answered after the commit; a job of several statements
//! runs in its own savepoint, a job of at most one statement needs none (its
//! statement is atomic by itself).

use super::*;

/// A write run by the writer thread inside the batch transaction; it returns what to
/// do once the batch's commit has succeeded or failed.
pub(super) type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;
pub(super) type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Runs one job in a savepoint, so that its failure undoes only its own writes.
pub(super) fn in_savepoint<T>(
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

/// Runs a job whose writes are at most one SQL statement, its last (reads may come
/// before it), without a savepoint: SQLite undoes a failed statement's own changes and
/// keeps the transaction's earlier ones ("each SQL statement is atomic"), which is
/// what the savepoint would have done. An error that ends the whole transaction
/// (I/O, full disk) fails the batch's commit, with or without a savepoint, so no
/// caller is answered as if its write were committed (docs/architecture.md).
pub(super) fn as_one_statement<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    f(conn)
}

pub(super) fn writer_loop(conn: Connection, jobs: mpsc::Receiver<Job>) {
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
