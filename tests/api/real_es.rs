//! The real Elasticsearch node the tests use, and which store the HTTP tests run on.
//!
//! - [`url`]: `FLEETAUTH_TEST_ES_URL` when set (CI sets it, once per supported version,
//!   after `scripts/elasticsearch.sh start`); otherwise the harness runs
//!   `scripts/elasticsearch.sh ensure` itself, which starts a node (fetched through Maven,
//!   needs `mvn` and a JDK) or reuses the one it started before; it stays up for the next
//!   run (`scripts/elasticsearch.sh stop` stops it). If no node can be had the test
//!   FAILS with the script's log tail: real-cluster tests are never skipped.
//! - [`selected_store`]: `FLEETAUTH_TEST_STORE=elasticsearch` runs the HTTP integration
//!   tests (every `spawn_app*`, every `fleetauth` process the tests start) on the real
//!   node instead of SQLite, each data dir with its own index prefix
//!   ([`index_prefix_for`]), so a server restarted on the same data dir finds its state.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::OnceLock;

use fleetauth::config::{ElasticsearchSettings, Settings, StoreKind};

/// The URL of the real node (see the module doc); panics, loudly, if there is none.
pub fn url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = std::env::var("FLEETAUTH_TEST_ES_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            return url.trim().to_string();
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/elasticsearch.sh");
        let output = std::process::Command::new("bash")
            .args([script, "ensure"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let url = stdout.lines().last().unwrap_or("").trim().to_string();
        assert!(
            output.status.success() && url.starts_with("http"),
            "FLEETAUTH_TEST_ES_URL is not set and `scripts/elasticsearch.sh ensure` could not \
             start a real Elasticsearch node (it needs mvn and a JDK; or start one yourself and \
             set FLEETAUTH_TEST_ES_URL=http://127.0.0.1:PORT):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        url
    })
    .clone()
}

/// The store the HTTP integration tests run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestStore {
    Sqlite,
    Elasticsearch { url: String },
}

pub fn selected_store() -> &'static TestStore {
    static STORE: OnceLock<TestStore> = OnceLock::new();
    STORE.get_or_init(|| match std::env::var("FLEETAUTH_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => TestStore::Sqlite,
        Ok("elasticsearch") => TestStore::Elasticsearch { url: url() },
        Ok(other) => panic!("FLEETAUTH_TEST_STORE={other}: expected sqlite or elasticsearch"),
    })
}

/// A fresh, unique index prefix (for tests that open stores themselves).
pub fn unique_prefix(label: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t{}-{label}-{nanos:x}-{n}", std::process::id())
}

/// The index prefix of the store of a data dir: the same dir, the same indices.
pub fn index_prefix_for(data_dir: &Path) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    format!("t{}-{:016x}", std::process::id(), hasher.finish())
}

/// Settings of a server on `data_dir` on the selected store.
pub fn settings_for(data_dir: &Path) -> Settings {
    let mut settings = Settings::for_data_dir(data_dir);
    if let TestStore::Elasticsearch { url } = selected_store() {
        let mut es = ElasticsearchSettings::for_url(url).expect("FLEETAUTH_TEST_ES_URL is a URL");
        es.index_prefix = index_prefix_for(data_dir);
        // A node shared by every test on 2 busy cores: a slow answer is not the fault
        // under test here (es_faults.rs bounds requests tightly on a node of its own).
        es.timeout = std::time::Duration::from_secs(30);
        settings.store = StoreKind::Elasticsearch;
        settings.elasticsearch = Some(es);
    }
    settings
}

/// Environment for a `fleetauth` process on `data_dir` on the selected store.
pub fn env_for(data_dir: &Path) -> Vec<(&'static str, String)> {
    match selected_store() {
        TestStore::Sqlite => Vec::new(),
        TestStore::Elasticsearch { url } => vec![
            ("FLEETAUTH_STORE", "elasticsearch".into()),
            ("FLEETAUTH_ELASTICSEARCH__URL", url.clone()),
            (
                "FLEETAUTH_ELASTICSEARCH__INDEX_PREFIX",
                index_prefix_for(data_dir),
            ),
            ("FLEETAUTH_ELASTICSEARCH__TIMEOUT", "30s".into()),
        ],
    }
}

/// Deletes every index of `prefix` (hidden ones included), blocking; best effort (a
/// leftover index only costs the node memory).
pub fn delete_indices_blocking(url: &str, prefix: &str) {
    let Some(authority) = url
        .trim_end_matches('/')
        .strip_prefix("http://")
        .map(str::to_string)
    else {
        return;
    };
    let path = format!("/{prefix}.*?expand_wildcards=all&ignore_unavailable=true");
    let _ = std::thread::spawn(move || {
        let Ok(mut stream) = std::net::TcpStream::connect(&authority) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(30)));
        let request = format!(
            "DELETE {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
        }
    })
    .join();
}
