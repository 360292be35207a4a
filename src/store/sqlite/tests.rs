//! Unit tests of the embedded store's own parts (the conformance suite in
//! tests/api/store_conformance.rs tests it as a `Store`).

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

/// The bundled SQLite is built with the options `.cargo/config.toml` gives it
/// (docs/architecture.md, "SQLite build options"); a build that lost them (the
/// config not read, libsqlite3-sys no longer reading `LIBSQLITE3_FLAGS`) fails here.
/// `HAVE_FDATASYNC` is not among SQLite's reported options; it travels in the same
/// variable, so a build that lost the variable fails here too (which sync call SQLite
/// makes is not checked).
#[test]
fn sqlite_is_built_with_the_configured_options() {
    let conn = Connection::open_in_memory().unwrap();
    let mut statement = conn.prepare("PRAGMA compile_options").unwrap();
    let options: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "compile options: {options:?}"
    );
}

/// Every connection the store opens is in WAL mode with `synchronous = FULL` (2): the
/// basis of "a 2xx is durable".
#[test]
fn connections_are_wal_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_connection(&dir.path().join(DB_FILE)).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .unwrap();
    assert_eq!((mode.as_str(), sync), ("wal", 2));
}

/// `update_agent` runs without a savepoint (writer.rs, `as_one_statement`): a job whose
/// upsert fails must still leave nothing of itself behind, even a change its statement
/// made before failing, and the other jobs of the same batch must commit.
#[tokio::test]
async fn a_failed_agent_write_leaves_nothing_and_its_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = SqliteStore::open(dir.path()).unwrap();
    // The upsert of agent "bad" first writes a row of its own, then fails.
    store
        .write(|conn| {
            conn.execute_batch(
                "CREATE TRIGGER refuse_bad BEFORE INSERT ON agents WHEN NEW.agent_id = 'bad' \
                 BEGIN INSERT INTO meta (key, value) VALUES ('partial', 'x'); \
                 SELECT RAISE(ABORT, 'refused'); END;",
            )
            .map_err(unavailable)
        })
        .await
        .unwrap();
    let write = |id: &'static str| {
        store.update_agent(
            id,
            Box::new(move |_| Some(TokenStateRecord::enrolled(id, 7))),
        )
    };
    // The first job holds the writer, so that the next three are queued into one batch.
    let hold = store.write(|_| {
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    });
    let (held, before, bad, after) =
        tokio::join!(hold, write("good-1"), write("bad"), write("good-2"));
    held.unwrap();
    assert!(bad.is_err(), "the refused upsert must fail");
    before.unwrap();
    after.unwrap();

    // Reopened from the file: what was committed.
    drop(store);
    let (store, _) = SqliteStore::open(dir.path()).unwrap();
    assert!(store.agent("good-1").await.unwrap().is_some());
    assert!(store.agent("good-2").await.unwrap().is_some());
    assert_eq!(store.agent("bad").await.unwrap(), None);
    let partial: Option<String> = store
        .read(|conn| {
            conn.query_row("SELECT value FROM meta WHERE key = 'partial'", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(unavailable)
        })
        .unwrap();
    assert_eq!(
        partial, None,
        "the failed statement's own change was undone"
    );
}
