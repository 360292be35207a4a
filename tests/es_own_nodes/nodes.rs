//! `fleetauth` processes on the nodes and clusters of a test's own
//! (`crate::common::es::{OwnNode, OwnCluster}`): one index prefix per test, a data dir
//! per process, the `elastic` password set, and the node's URL and request timeout
//! given per process (each server of a cluster test talks to its own node).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::es::request_timeout;
use crate::common::process::{Server, SharedStore};

/// The password of the built-in `elastic` user of fleetauth's own security API.
pub const BOOTSTRAP_PASSWORD: &str = "own-node-test-password";

/// `fleetauth` processes sharing one store (one index prefix).
pub struct Fleetauth {
    pub prefix: String,
    extra_env: Vec<(String, String)>,
}

impl Fleetauth {
    pub fn new(label: &str) -> Self {
        Self {
            prefix: format!("{label}-{}", std::process::id()),
            extra_env: Vec::new(),
        }
    }

    /// With settings for every process (e.g. credentials for the cluster).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.extra_env.push((key.to_string(), value.to_string()));
        self
    }

    /// The processes on the node or cluster at `url`.
    fn on(&self, url: &str) -> SharedStore {
        let store = SharedStore::elasticsearch(url, &self.prefix)
            .with_env("FLEETAUTH_BOOTSTRAP_PASSWORD", BOOTSTRAP_PASSWORD)
            .with_env("FLEETAUTH_LOG", "error");
        self.extra_env
            .iter()
            .fold(store, |store, (key, value)| store.with_env(key, value))
    }

    /// A CLI command (generous timeout: it may create the indices); its JSON output,
    /// or its stderr.
    pub fn cli(&self, url: &str, args: &[&str]) -> Result<Value, String> {
        self.on(url)
            .cli(&request_timeout(Duration::from_secs(60)), args)
    }

    /// `Authorization: ApiKey ...` of a new API key for `agent`.
    pub fn enroll(&self, url: &str, agent: &str) -> String {
        self.on(url)
            .enroll(&request_timeout(Duration::from_secs(60)), agent)
    }

    /// A server, each request to the node bounded by `bound`.
    pub fn serve(&self, url: &str, bound: Duration) -> Server {
        self.on(url).serve(&request_timeout(bound))
    }

    /// A server whose log (stderr) goes to `log`.
    pub fn serve_logging_to(&self, url: &str, bound: Duration, log: &Path) -> Server {
        let log = std::fs::File::create(log).expect("log file");
        self.on(url).serve_logging(&request_timeout(bound), log)
    }
}
