//! The real Elasticsearch node the tests use, and which store the HTTP tests run on.
//!
//! - [`url`]: the node every test shares (`crate::common::es::shared_node_url`:
//!   `FLEETAUTH_TEST_ES_URL`, else `scripts/elasticsearch.sh ensure`; never skipped);
//! - [`selected_store`]: `FLEETAUTH_TEST_STORE=elasticsearch` runs the HTTP integration
//!   tests (every `spawn_app*`, every `fleetauth` process the tests start) on the real
//!   node instead of SQLite, each data dir with its own index prefix
//!   ([`index_prefix_for`]), so a server restarted on the same data dir finds its state.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::OnceLock;

use fleetauth::config::{ElasticsearchSettings, Settings, StoreKind};

pub use crate::common::es::shared_node_url as url;
pub use crate::common::es::{delete_indices_blocking, unique_prefix};

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
        TestStore::Elasticsearch { url } => crate::common::es::store_env(
            url,
            &index_prefix_for(data_dir),
            std::time::Duration::from_secs(30),
        ),
    }
}
