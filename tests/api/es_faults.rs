//! Faults on a REAL Elasticsearch node: a node of the test's own
//! (`scripts/elasticsearch.sh` with `FLEETAUTH_ES_INSTANCE`, so that the node every other
//! test uses is not disturbed), killed with `kill -9` while a real `fleetauth serve`
//! process is under load, then started again on the same data. Never skipped: a node
//! that cannot start fails the test with its log tail.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::helpers::{pair_from, Pair};

const BIN: &str = env!("CARGO_BIN_EXE_fleetauth");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/elasticsearch.sh");
const ES_TIMEOUT: Duration = Duration::from_secs(2);
const BOOTSTRAP_PASSWORD: &str = "fault-test-password";

/// A node of this test's own, stopped when dropped.
struct OwnNode {
    instance: String,
    url: String,
}

impl OwnNode {
    fn script(instance: &str, command: &str) -> std::process::Output {
        let mut script = Command::new("bash");
        script.args([SCRIPT, command]);
        if let Ok(version) = std::env::var("FLEETAUTH_TEST_ES_VERSION") {
            script.arg(version);
        }
        script
            .env("FLEETAUTH_ES_INSTANCE", instance)
            .output()
            .expect("run scripts/elasticsearch.sh")
    }

    fn must(instance: &str, command: &str) -> String {
        let output = Self::script(instance, command);
        assert!(
            output.status.success(),
            "scripts/elasticsearch.sh {command} (instance {instance}) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn start() -> Self {
        let instance = format!("faults-{}", std::process::id());
        let url = Self::must(&instance, "start")
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        Self { instance, url }
    }

    /// `kill -9` of the node of `instance` (its data stays).
    fn kill_9(instance: &str) {
        Self::must(instance, "kill");
    }

    /// Starts the node of `instance` again on its ports and data.
    fn resume(instance: &str) {
        Self::must(instance, "resume");
    }
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = Self::script(&self.instance, "discard");
    }
}

struct Fleetauth {
    env: Vec<(&'static str, String)>,
    _dir: tempfile::TempDir,
}

impl Fleetauth {
    fn on(node: &OwnNode) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![
            ("FLEETAUTH_STORE", "elasticsearch".to_string()),
            ("FLEETAUTH_ELASTICSEARCH__URL", node.url.clone()),
            ("FLEETAUTH_JWT__KEY_POLL_INTERVAL", "200ms".to_string()),
            (
                "FLEETAUTH_BOOTSTRAP_PASSWORD",
                BOOTSTRAP_PASSWORD.to_string(),
            ),
            (
                "FLEETAUTH_DATA_DIR",
                dir.path().to_str().unwrap().to_string(),
            ),
            ("FLEETAUTH_LOG", "error".to_string()),
        ];
        Self { env, _dir: dir }
    }

    /// A `fleetauth` command; each request to the node bounded by `timeout`.
    fn command(&self, timeout: Duration) -> Command {
        let mut command = Command::new(BIN);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FLEETAUTH_")) {
            command.env_remove(key);
        }
        command.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        command.env(
            "FLEETAUTH_ELASTICSEARCH__TIMEOUT",
            format!("{}ms", timeout.as_millis()),
        );
        command
    }

    fn cli(&self, args: &[&str]) -> Result<Value, String> {
        // The CLI creates the indices on the fresh node: generous bound.
        let output = self
            .command(Duration::from_secs(60))
            .args(args)
            .output()
            .expect("fleetauth runs");
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).to_string());
        }
        Ok(serde_json::from_slice(&output.stdout).expect("JSON on stdout"))
    }

    fn serve(&self) -> (Child, String) {
        let mut child = self
            .command(ES_TIMEOUT)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("listening line");
        let started: Value = serde_json::from_str(&line).expect("JSON line");
        let base = format!("http://{}", started["listen"].as_str().unwrap());
        (child, base)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn authenticate(
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

async fn status_of(client: &reqwest::Client, url: String) -> u16 {
    client
        .get(url)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

async fn primary_term_of(client: &reqwest::Client, node: &str, doc: &str) -> i64 {
    let got: Value = client
        .get(format!("{node}/{doc}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    got["_primary_term"]
        .as_i64()
        .unwrap_or_else(|| panic!("{doc}: {got}"))
}

/// Checks a 503 of one API family: `Retry-After` and the family's error body.
async fn assert_unavailable(
    family: &str,
    response: reqwest::Response,
    body_says: impl Fn(&Value) -> bool,
) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 503, "{family}: {body}");
    assert_eq!(retry_after.as_deref(), Some("1"), "{family}: Retry-After");
    assert!(
        body_says(&body),
        "{family}: error body in the family's format: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_gives_503s_with_retry_after_then_recovery_and_loses_no_acknowledged_rotation(
) {
    let node = blocking(OwnNode::start).await;
    let fleetauth = Arc::new(Fleetauth::on(&node));
    let created = {
        let f = fleetauth.clone();
        blocking(move || f.cli(&["api-key", "create", "--agent-id", "weathered"]))
            .await
            .expect("api-key create")
    };
    let api_key = format!("ApiKey {}", created["encoded"].as_str().unwrap());
    let (mut server, base) = fleetauth.serve();
    let client = reqwest::Client::new();
    let first = pair_from(authenticate(&client, &base, &api_key).await).await;

    // Load: a refresh chain, as an agent runs it (on 503 it retries the same token).
    let stop = Arc::new(AtomicBool::new(false));
    let last_acknowledged = Arc::new(Mutex::new(first.clone()));
    let statuses = Arc::new(Mutex::new(Vec::<u16>::new()));
    let load = {
        let (client, base) = (client.clone(), base.clone());
        let (stop, last, statuses) = (stop.clone(), last_acknowledged.clone(), statuses.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let token = last.lock().unwrap().refresh_token.clone();
                let response = authenticate(&client, &base, &format!("Bearer {token}")).await;
                let status = response.status().as_u16();
                statuses.lock().unwrap().push(status);
                if status == 200 {
                    *last.lock().unwrap() = pair_from(response).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };

    // Rotations acknowledged (exit 0) before the kill.
    let mut rotated = Vec::new();
    for _ in 0..3 {
        let f = fleetauth.clone();
        let kid = blocking(move || f.cli(&["keys", "rotate"]))
            .await
            .expect("rotate")["kid"]
            .as_str()
            .unwrap()
            .to_string();
        rotated.push(kid);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kill = statuses.lock().unwrap().len();

    let term_before = primary_term_of(&client, &node.url, ".fleet-agents/_doc/weathered").await;
    let killed_at = Instant::now();
    let instance = node.instance.clone();
    blocking(move || OwnNode::kill_9(&instance)).await;

    // /readyz says unavailable within elasticsearch.timeout (plus scheduling slack).
    loop {
        if status_of(&client, format!("{base}/readyz")).await == 503 {
            break;
        }
        assert!(
            killed_at.elapsed() < ES_TIMEOUT + Duration::from_secs(5),
            "/readyz still ready {:?} after the kill",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "/readyz 503 {:?} after kill -9 of the node",
        killed_at.elapsed()
    );
    assert_eq!(
        status_of(&client, format!("{base}/healthz")).await,
        200,
        "alive all the same"
    );

    // Every API family: 503, Retry-After, its own error format.
    let pair = last_acknowledged.lock().unwrap().clone();
    assert_unavailable(
        "fleet",
        authenticate(&client, &base, &format!("Bearer {}", pair.refresh_token)).await,
        |b| b["statusCode"] == 503 && b["error"].is_string(),
    )
    .await;
    assert_unavailable(
        "oauth",
        client
            .post(format!("{base}/oauth/token"))
            .header("Authorization", &api_key)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap(),
        |b| b["error"] == "temporarily_unavailable",
    )
    .await;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("elastic:{BOOTSTRAP_PASSWORD}"));
    assert_unavailable(
        "security",
        client
            .get(format!("{base}/_security/_authenticate"))
            .header("Authorization", format!("Basic {basic}"))
            .send()
            .await
            .unwrap(),
        |b| b["status"] == 503 && b["error"]["type"].is_string(),
    )
    .await;
    assert_unavailable(
        "vault",
        client
            .post(format!("{base}/v1/auth/jwt/login"))
            .json(&serde_json::json!({ "role": "r", "jwt": "x.y.z" }))
            .send()
            .await
            .unwrap(),
        |b| b["errors"].is_array(),
    )
    .await;

    // The node comes back on the same data; fleetauth recovers without a restart.
    let instance = node.instance.clone();
    blocking(move || OwnNode::resume(&instance)).await;
    let resumed_at = Instant::now();
    while status_of(&client, format!("{base}/readyz")).await != 200 {
        assert!(
            resumed_at.elapsed() < Duration::from_secs(120),
            "never ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the chain run on the recovered node, then stop it.
    let recovered_at = statuses.lock().unwrap().len();
    while statuses.lock().unwrap()[recovered_at..]
        .iter()
        .filter(|s| **s == 200)
        .count()
        < 5
    {
        assert!(
            resumed_at.elapsed() < Duration::from_secs(150),
            "the chain did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    // The restarted node made a new primary: versions of before are stale, and the
    // compare-and-set went on working across the change (the chain above).
    let term_after = primary_term_of(&client, &node.url, ".fleet-agents/_doc/weathered").await;
    assert!(
        term_after > term_before,
        "_primary_term {term_before} -> {term_after} across the restart"
    );

    let statuses = statuses.lock().unwrap().clone();
    let count = |s: u16| statuses.iter().filter(|x| **x == s).count();
    eprintln!(
        "refresh chain: {} answers, {} before the kill; 200 x{}, 503 x{}",
        statuses.len(),
        before_kill,
        count(200),
        count(503)
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "only 200 or 503 under the outage, never a 500 or a refusal: {statuses:?}"
    );
    assert!(count(503) > 0, "the outage was seen");

    // No acknowledged rotation was lost: the JWKS lists each key, the last one signs.
    let jwks: Value = client
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    for kid in &rotated {
        assert!(
            kids.contains(&kid.as_str()),
            "rotated key {kid} survived: {kids:?}"
        );
    }
    // The last pair the chain was given still works (nothing half-done); it
    // is the agent's newest pair, so check it before the API key issues another.
    let last = last_acknowledged.lock().unwrap().clone();
    assert_eq!(
        authenticate(&client, &base, &format!("Bearer {}", last.refresh_token))
            .await
            .status(),
        200
    );
    let fresh: Pair = pair_from(authenticate(&client, &base, &api_key).await).await;
    let header = fresh.access_token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        header["kid"],
        rotated.last().unwrap().as_str(),
        "the last acknowledged key signs"
    );
    let _ = server.kill();
    let _ = server.wait();
    drop(node);
}
