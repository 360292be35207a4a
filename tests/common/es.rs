//! Real Elasticsearch nodes, through `scripts/elasticsearch.sh`:
//!
//! - [`shared_node_url`]: the node every test shares: `FLEETAUTH_TEST_ES_URL` when set
//!   (CI sets it, once per supported version, after `scripts/elasticsearch.sh start`);
//!   otherwise the script's `ensure` starts a node (fetched through Maven, needs `mvn`
//!   and a JDK) or reuses the one it started before; it stays up for the next run
//!   (`scripts/elasticsearch.sh stop` stops it). If no node can be had the test FAILS
//!   with the script's log tail: real-cluster tests are never skipped. Tests isolate
//!   themselves on it by index prefix ([`unique_prefix`], [`delete_indices_blocking`]);
//! - [`OwnNode`], [`OwnCluster`]: nodes of a test's own (`FLEETAUTH_ES_INSTANCE`), for
//!   faults that would disturb every test beside it (kill, restart, tiny queues,
//!   security on), discarded when dropped;
//! - [`store_env`], [`request_timeout`]: the settings of a `fleetauth` process on a node;
//! - [`get_json`], [`as_user`]: calls to the node itself.

use std::io::{Read, Write};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/elasticsearch.sh");

/// The Elasticsearch version under test: `FLEETAUTH_TEST_ES_VERSION`, else the newest
/// supported one (the first of `scripts/elasticsearch.sh versions`).
pub fn version() -> String {
    if let Ok(version) = std::env::var("FLEETAUTH_TEST_ES_VERSION") {
        if !version.trim().is_empty() {
            return version.trim().to_string();
        }
    }
    let output = Command::new("bash")
        .args([SCRIPT, "versions"])
        .output()
        .expect("run scripts/elasticsearch.sh versions");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .expect("a supported version")
        .to_string()
}

/// `scripts/elasticsearch.sh <args>`, for the node of `instance` (None: the shared one).
pub fn script(instance: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("bash");
    command.arg(SCRIPT).args(args).envs(env.iter().copied());
    if let Some(instance) = instance {
        command.env("FLEETAUTH_ES_INSTANCE", instance);
    }
    command.output().expect("run scripts/elasticsearch.sh")
}

/// The script's stdout lines; a failure fails the test with its stderr.
fn must(instance: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let output = script(Some(instance), args, env);
    assert!(
        output.status.success(),
        "scripts/elasticsearch.sh {args:?} (instance {instance}) failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The URL of the script's default node, started if none runs (`ensure`); or the
/// script's stderr.
pub fn ensure_default_node() -> Result<String, String> {
    let output = script(None, &["ensure"], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let url = stdout.lines().last().unwrap_or("").trim().to_string();
    if output.status.success() && url.starts_with("http") {
        Ok(url)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The PID of the script's default node (`status`: "running <url> pid <pid>").
pub fn default_node_pid() -> Option<u32> {
    let status = script(None, &["status"], &[]);
    String::from_utf8_lossy(&status.stdout)
        .split_whitespace()
        .last()
        .and_then(|p| p.parse().ok())
}

/// The URL of the node every test shares (see the module doc); panics, loudly, if
/// there is none.
pub fn shared_node_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = std::env::var("FLEETAUTH_TEST_ES_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            return url.trim().to_string();
        }
        ensure_default_node().unwrap_or_else(|stderr| {
            panic!(
                "FLEETAUTH_TEST_ES_URL is not set and `scripts/elasticsearch.sh ensure` could \
                 not start a real Elasticsearch node (it needs mvn and a JDK; or start one \
                 yourself and set FLEETAUTH_TEST_ES_URL=http://127.0.0.1:PORT):\n{stderr}"
            )
        })
    })
    .clone()
}

/// A fresh, unique index prefix.
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

/// The settings of a `fleetauth` process on the node at `url` under `prefix` (`""`:
/// none), each request to the node bounded by `timeout`.
pub fn store_env(url: &str, prefix: &str, timeout: Duration) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("FLEETAUTH_STORE", "elasticsearch".into()),
        ("FLEETAUTH_ELASTICSEARCH__URL", url.to_string()),
        ("FLEETAUTH_ELASTICSEARCH__INDEX_PREFIX", prefix.to_string()),
    ];
    env.extend(request_timeout(timeout));
    env
}

/// The setting that bounds each request of a `fleetauth` process to the node.
pub fn request_timeout(timeout: Duration) -> [(&'static str, String); 1] {
    [(
        "FLEETAUTH_ELASTICSEARCH__TIMEOUT",
        format!("{}ms", timeout.as_millis()),
    )]
}

/// Deletes every index of `prefix` (hidden ones included), blocking; best effort (a
/// leftover index only costs the node memory).
pub fn delete_indices_blocking(url: &str, prefix: &str) {
    assert!(!prefix.is_empty(), "an empty prefix would be every index");
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
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
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

/// One node of a test's own with extra `elasticsearch.yml` lines, discarded when
/// dropped.
pub struct OwnNode {
    instance: String,
    version: String,
    pub url: String,
}

impl OwnNode {
    /// `env`: the script's settings of the node (`FLEETAUTH_ES_SETTINGS`, ...).
    pub fn start(label: &str, env: &[(&str, &str)]) -> Self {
        let instance = format!("{label}-{}", std::process::id());
        let version = version();
        let url = must(&instance, &["start", &version], env)
            .pop()
            .expect("the node's URL");
        Self {
            instance,
            version,
            url,
        }
    }

    /// `kill -9` of the node (its data stays).
    pub fn kill_9(&self) {
        must(&self.instance, &["kill", &self.version], &[]);
    }

    /// Starts the node again on its ports and data.
    pub fn resume(&self) {
        must(&self.instance, &["resume", &self.version], &[]);
    }
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = script(Some(&self.instance), &["discard", &self.version], &[]);
    }
}

/// A cluster of `n` nodes of a test's own, discarded when dropped.
pub struct OwnCluster {
    instance: String,
    version: String,
    /// The HTTP URL of each node, by node number - 1.
    pub urls: Vec<String>,
}

impl OwnCluster {
    pub fn start(label: &str, n: usize) -> Self {
        let instance = format!("{label}-{}", std::process::id());
        let version = version();
        let urls = must(&instance, &["start-cluster", &n.to_string(), &version], &[]);
        assert_eq!(urls.len(), n, "one URL per node: {urls:?}");
        Self {
            instance,
            version,
            urls,
        }
    }

    /// The node number (0-based) of a node name as Elasticsearch reports it.
    pub fn node_of(&self, name: &str) -> usize {
        let prefix = format!("fleetauth-test-{}-{}-n", self.version, self.instance);
        let n: usize = name
            .strip_prefix(&prefix)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not a node of {prefix}*"));
        n - 1
    }

    /// `kill -9` of node `i` (0-based).
    pub fn kill_9(&self, i: usize) {
        let member = format!("{}-n{}", self.instance, i + 1);
        must(&member, &["kill", &self.version], &[]);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = script(
            Some(&self.instance),
            &["discard-cluster", &self.version],
            &[],
        );
    }
}

/// A JSON answer of the node itself (panics on a transport error or a body that is
/// not JSON).
pub async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// A call to the node as `user`: its status and JSON body (`null` if none).
pub async fn as_user(
    client: &reqwest::Client,
    (user, password): (&str, &str),
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client
        .request(method, &url)
        .basic_auth(user, Some(password));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
