//! Nodes and clusters of a test's own (through `scripts/elasticsearch.sh`), and real
//! `fleetauth` processes on them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_fleetauth");
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

fn script(instance: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .env("FLEETAUTH_ES_INSTANCE", instance)
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/elasticsearch.sh")
}

fn must(instance: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let output = script(instance, args, env);
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

/// A cluster of `n` nodes of this test's own, stopped when dropped.
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
        let _ = script(&self.instance, &["discard-cluster", &self.version], &[]);
    }
}

/// One node of this test's own with extra `elasticsearch.yml` lines, stopped when
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
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = script(&self.instance, &["discard", &self.version], &[]);
    }
}

/// `fleetauth` processes sharing one store (one index prefix), each with its own data
/// dir.
pub struct Fleetauth {
    pub prefix: String,
    extra_env: Vec<(String, String)>,
    dirs: Vec<tempfile::TempDir>,
}

impl Fleetauth {
    pub fn new(label: &str) -> Self {
        Self {
            prefix: format!("{label}-{}", std::process::id()),
            extra_env: Vec::new(),
            dirs: Vec::new(),
        }
    }

    /// With settings for every process (e.g. credentials for the cluster).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.extra_env.push((key.to_string(), value.to_string()));
        self
    }

    /// A `fleetauth` command on the cluster at `url`, each request bounded by
    /// `timeout`.
    pub fn command(&mut self, url: &str, timeout: Duration) -> Command {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(BIN);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FLEETAUTH_")) {
            command.env_remove(key);
        }
        command
            .env("FLEETAUTH_STORE", "elasticsearch")
            .env("FLEETAUTH_ELASTICSEARCH__URL", url)
            .env("FLEETAUTH_ELASTICSEARCH__INDEX_PREFIX", &self.prefix)
            .env(
                "FLEETAUTH_ELASTICSEARCH__TIMEOUT",
                format!("{}ms", timeout.as_millis()),
            )
            .env("FLEETAUTH_BOOTSTRAP_PASSWORD", BOOTSTRAP_PASSWORD)
            .env("FLEETAUTH_LOG", "error")
            .env("FLEETAUTH_DATA_DIR", dir.path())
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.dirs.push(dir);
        command
    }

    /// A CLI command (generous timeout: it may create the indices); its JSON output,
    /// or its stderr.
    pub fn cli(&mut self, url: &str, args: &[&str]) -> Result<Value, String> {
        let output = self
            .command(url, Duration::from_secs(60))
            .args(args)
            .output()
            .expect("fleetauth runs");
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).to_string());
        }
        Ok(serde_json::from_slice(&output.stdout).expect("JSON on stdout"))
    }

    /// `Authorization: ApiKey ...` of a new API key for `agent`.
    pub fn enroll(&mut self, url: &str, agent: &str) -> String {
        let created = self
            .cli(url, &["api-key", "create", "--agent-id", agent])
            .expect("api-key create");
        format!("ApiKey {}", created["encoded"].as_str().unwrap())
    }

    pub fn serve(&mut self, url: &str, timeout: Duration) -> Server {
        let mut command = self.command(url, timeout);
        command.stderr(Stdio::inherit());
        Server::start(&mut command)
    }

    /// A server whose log (stderr) goes to `log`.
    pub fn serve_logging_to(&mut self, url: &str, timeout: Duration, log: &Path) -> Server {
        let mut command = self.command(url, timeout);
        command.stderr(std::fs::File::create(log).expect("log file"));
        Server::start(&mut command)
    }
}

/// The password of the built-in `elastic` user of fleetauth's own security API.
pub const BOOTSTRAP_PASSWORD: &str = "own-node-test-password";

/// A running `fleetauth serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    fn start(command: &mut Command) -> Self {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("listening line");
        let started: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("serve did not start ({e}): {line:?}"));
        Self {
            child,
            base: format!("http://{}", started["listen"].as_str().unwrap()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct Pair {
    pub access_token: String,
    pub refresh_token: String,
}

pub async fn pair_from(response: reqwest::Response) -> Pair {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "a pair: {body}");
    Pair {
        access_token: body["access_token"].as_str().unwrap().to_string(),
        refresh_token: body["refresh_token"].as_str().unwrap().to_string(),
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub async fn authenticate(
    client: &reqwest::Client,
    base: &str,
    authorization: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/api/fleet/authenticate"))
        .header("Authorization", authorization)
        .send()
        .await
        .expect("request")
}

/// A JSON answer of the cluster itself (panics on a transport error).
pub async fn es_json(client: &reqwest::Client, url: String) -> Value {
    client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}
