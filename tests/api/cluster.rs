//! fleetauth as a cluster: three real `fleetauth serve` processes (the binary) on one
//! real Elasticsearch node (`crate::real_es::url`; never skipped), each with its own
//! data dir and all on the same index prefix, as behind a load balancer.

use std::collections::HashSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{jwt_parts, pair_from};
use crate::process::Server;
use crate::real_es;

const BIN: &str = env!("CARGO_BIN_EXE_fleetauth");
const KEY_POLL: Duration = Duration::from_millis(500);

/// The shared store: the real node and one index prefix, deleted at the end.
struct SharedStore {
    url: String,
    prefix: String,
    dirs: Vec<tempfile::TempDir>,
}

impl SharedStore {
    fn new(label: &str) -> Self {
        Self {
            url: real_es::url(),
            prefix: real_es::unique_prefix(label),
            dirs: Vec::new(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FLEETAUTH_STORE", "elasticsearch".into()),
            ("FLEETAUTH_ELASTICSEARCH__URL", self.url.clone()),
            ("FLEETAUTH_ELASTICSEARCH__INDEX_PREFIX", self.prefix.clone()),
            ("FLEETAUTH_ELASTICSEARCH__TIMEOUT", "30s".into()),
            (
                "FLEETAUTH_JWT__KEY_POLL_INTERVAL",
                format!("{}ms", KEY_POLL.as_millis()),
            ),
            ("FLEETAUTH_LOG", "warn".into()),
        ]
    }

    fn command(&mut self) -> Command {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(BIN);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FLEETAUTH_")) {
            command.env_remove(key);
        }
        command
            .envs(self.env())
            .env("FLEETAUTH_DATA_DIR", dir.path());
        self.dirs.push(dir);
        command
    }

    /// A CLI command on the shared store; its JSON output.
    fn cli(&mut self, args: &[&str]) -> Value {
        let output: Output = self.command().args(args).output().expect("fleetauth runs");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON on stdout")
    }

    /// Three servers, started one after the other (the first creates the indices).
    fn servers(&mut self, n: usize) -> Vec<Server> {
        (0..n).map(|_| Server::spawn(self.command(), &[])).collect()
    }
}

impl Drop for SharedStore {
    fn drop(&mut self) {
        real_es::delete_indices_blocking(&self.url, &self.prefix);
    }
}

async fn authenticate(
    client: &reqwest::Client,
    server: &Server,
    authorization: &str,
) -> reqwest::Response {
    client
        .post(server.url("/api/fleet/authenticate"))
        .header("Authorization", authorization)
        .send()
        .await
        .expect("request")
}

async fn whoami(client: &reqwest::Client, server: &Server, access_token: &str) -> u16 {
    client
        .get(server.url("/api/fleet/whoami"))
        .bearer_auth(access_token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

async fn kids_of(client: &reqwest::Client, server: &Server) -> HashSet<String> {
    let jwks: Value = client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

fn enroll(store: &mut SharedStore, agent: &str) -> String {
    let created = store.cli(&["api-key", "create", "--agent-id", agent]);
    format!("ApiKey {}", created["encoded"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_across_three_instances_leave_exactly_one_usable_pair() {
    let mut store = SharedStore::new("race");
    let api_key = enroll(&mut store, "racer");
    let servers = store.servers(3);
    let client = reqwest::Client::new();
    let start = pair_from(authenticate(&client, &servers[0], &api_key).await).await;
    assert_eq!(whoami(&client, &servers[1], &start.access_token).await, 200);

    let mut current = start;
    for round in 0..3 {
        let responses = futures::future::join_all((0..12).map(|i| {
            let (client, server) = (&client, &servers[i % 3]);
            let refresh = format!("Bearer {}", current.refresh_token);
            async move { authenticate(client, server, &refresh).await }
        }))
        .await;
        let mut pairs = Vec::new();
        for response in responses {
            let status = response.status().as_u16();
            assert!(
                status < 500,
                "round {round}: no answer may be a 5xx: {status}"
            );
            if status == 200 {
                pairs.push(pair_from(response).await);
            } else {
                assert_eq!(
                    error_code(response).await,
                    (401, "invalid_grant".into()),
                    "round {round}: a loser gets invalid_grant"
                );
            }
        }
        assert!(!pairs.is_empty(), "round {round}: someone won");
        let mut usable = Vec::new();
        for (i, pair) in pairs.iter().enumerate() {
            if whoami(&client, &servers[i % 3], &pair.access_token).await == 200 {
                usable.push(pair.clone());
            }
        }
        assert_eq!(
            usable.len(),
            1,
            "round {round}: exactly one returned pair is usable"
        );
        for pair in pairs
            .iter()
            .filter(|p| p.access_token != usable[0].access_token)
        {
            assert_eq!(
                error_code(
                    authenticate(
                        &client,
                        &servers[1],
                        &format!("Bearer {}", pair.refresh_token)
                    )
                    .await
                )
                .await,
                (401, "invalid_grant".into()),
                "round {round}: a replaced pending pair is refused"
            );
        }
        // The winner works on every instance (no false alarm) and, promoted there,
        // is the current pair of the next round.
        current = usable.remove(0);
        for server in &servers {
            assert_eq!(
                whoami(&client, server, &current.access_token).await,
                200,
                "round {round}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_on_one_instance_revokes_the_family_on_the_others() {
    let mut store = SharedStore::new("reuse");
    let api_key = enroll(&mut store, "reused");
    let servers = store.servers(3);
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
    let client = reqwest::Client::new();
    let first = pair_from(authenticate(&client, a, &api_key).await).await;
    assert_eq!(whoami(&client, a, &first.access_token).await, 200);
    let second =
        pair_from(authenticate(&client, c, &format!("Bearer {}", first.refresh_token)).await).await;
    assert_eq!(whoami(&client, a, &second.access_token).await, 200); // first is now retired

    let replayed = authenticate(&client, b, &format!("Bearer {}", first.refresh_token)).await;

    assert_eq!(error_code(replayed).await, (401, "invalid_grant".into()));
    assert_eq!(
        whoami(&client, a, &second.access_token).await,
        401,
        "revoked on A"
    );
    assert_eq!(
        whoami(&client, c, &second.access_token).await,
        401,
        "revoked on C"
    );
    assert_eq!(
        authenticate(&client, c, &format!("Bearer {}", second.refresh_token))
            .await
            .status(),
        401
    );
    let fresh = pair_from(authenticate(&client, b, &api_key).await).await;
    assert_eq!(
        whoami(&client, c, &fresh.access_token).await,
        200,
        "start over with the API key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_unenrolment_and_key_rotation_reach_every_instance() {
    let mut store = SharedStore::new("acts");
    let api_key = enroll(&mut store, "acted-on");
    let spare = store.cli(&[
        "api-key",
        "create",
        "--agent-id",
        "acted-on",
        "--name",
        "spare",
    ]);
    let spare_key = format!("ApiKey {}", spare["encoded"].as_str().unwrap());
    let servers = store.servers(3);
    let client = reqwest::Client::new();
    for server in &servers {
        assert_eq!(
            authenticate(&client, server, &spare_key).await.status(),
            200
        );
    }

    // api-key invalidate: at once on every instance (keys are read on every request).
    store.cli(&[
        "api-key",
        "invalidate",
        "--id",
        spare["id"].as_str().unwrap(),
    ]);
    for server in &servers {
        assert_eq!(
            authenticate(&client, server, &spare_key).await.status(),
            401
        );
    }

    // keys rotate: every instance's JWKS lists the new key within the poll interval.
    let pair = pair_from(authenticate(&client, &servers[0], &api_key).await).await;
    assert_eq!(
        whoami(&client, &servers[1], &pair.access_token).await,
        200,
        "promoted"
    );
    let rotated = store.cli(&["keys", "rotate"]);
    let kid = rotated["kid"].as_str().unwrap().to_string();
    let rotated_at = Instant::now();
    for server in &servers {
        loop {
            if kids_of(&client, server).await.contains(&kid) {
                break;
            }
            assert!(
                rotated_at.elapsed() < KEY_POLL * 2 + Duration::from_secs(5),
                "{} never listed {kid}",
                server.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "new key in every JWKS after {:?} (poll interval {KEY_POLL:?})",
        rotated_at.elapsed()
    );
    assert_eq!(
        whoami(&client, &servers[2], &pair.access_token).await,
        200,
        "a token of the old key still verifies"
    );
    let signed_after = pair_from(authenticate(&client, &servers[2], &api_key).await).await;
    assert_eq!(jwt_parts(&signed_after.access_token).0["kid"], kid.as_str());

    // agent unenroll: every token of the agent refused at once on every instance.
    let live = pair_from(authenticate(&client, &servers[1], &api_key).await).await;
    assert_eq!(whoami(&client, &servers[0], &live.access_token).await, 200);
    store.cli(&["agent", "unenroll", "--agent-id", "acted-on"]);
    for server in &servers {
        assert_eq!(
            whoami(&client, server, &live.access_token).await,
            401,
            "{}",
            server.base
        );
        assert_eq!(authenticate(&client, server, &api_key).await.status(), 401);
    }
}
