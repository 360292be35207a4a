//! Faults on a REAL Elasticsearch node: a node of the test's own
//! (`scripts/elasticsearch.sh` with `FLEETAUTH_ES_INSTANCE`, so that the node every other
//! test uses is not disturbed), killed with `kill -9` while a real `fleetauth serve`
//! process is under load, then started again on the same data. Never skipped: a node
//! that cannot start fails the test with its log tail.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::es::{get_json, request_timeout, OwnNode};
use crate::common::process::{Server, SharedStore};
use crate::common::requests::{
    authenticate, basic, blocking, get_status, jwks_kids, jwt_parts, pair_from,
    status_retry_after_body, Pair,
};

const ES_TIMEOUT: Duration = Duration::from_secs(2);
const BOOTSTRAP_PASSWORD: &str = "fault-test-password";

/// fleetauth on the node, without an index prefix.
fn fleetauth_on(node: &OwnNode) -> SharedStore {
    SharedStore::elasticsearch(&node.url, "")
        .with_env("FLEETAUTH_JWT__KEY_POLL_INTERVAL", "200ms")
        .with_env("FLEETAUTH_BOOTSTRAP_PASSWORD", BOOTSTRAP_PASSWORD)
        .with_env("FLEETAUTH_LOG", "error")
}

/// A CLI command; it creates the indices on the fresh node: generous bound.
fn cli(fleetauth: &SharedStore, args: &[&str]) -> Result<Value, String> {
    fleetauth.cli(&request_timeout(Duration::from_secs(60)), args)
}

/// `serve`, each request to the node bounded by [`ES_TIMEOUT`].
fn serve(fleetauth: &SharedStore) -> Server {
    fleetauth.serve_logging(&request_timeout(ES_TIMEOUT), Stdio::null())
}

async fn primary_term_of(client: &reqwest::Client, node: &str, doc: &str) -> i64 {
    let got = get_json(client, format!("{node}/{doc}")).await;
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
    let (status, retry_after, body) = status_retry_after_body(response).await;
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
    let node = Arc::new(blocking(|| OwnNode::start("faults", &[])).await);
    let fleetauth = Arc::new(fleetauth_on(&node));
    let created = {
        let f = fleetauth.clone();
        blocking(move || cli(&f, &["api-key", "create", "--agent-id", "weathered"]))
            .await
            .expect("api-key create")
    };
    let api_key = format!("ApiKey {}", created["encoded"].as_str().unwrap());
    let server = serve(&fleetauth);
    let base = server.base.clone();
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
        let kid = blocking(move || cli(&f, &["keys", "rotate"]))
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
    let n = node.clone();
    blocking(move || n.kill_9()).await;

    // /readyz says unavailable within elasticsearch.timeout (plus scheduling slack).
    loop {
        if get_status(&client, format!("{base}/readyz")).await == 503 {
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
        get_status(&client, format!("{base}/healthz")).await,
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
    assert_unavailable(
        "security",
        client
            .get(format!("{base}/_security/_authenticate"))
            .header("Authorization", basic("elastic", BOOTSTRAP_PASSWORD))
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
    let n = node.clone();
    blocking(move || n.resume()).await;
    let resumed_at = Instant::now();
    while get_status(&client, format!("{base}/readyz")).await != 200 {
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
    let kids = jwks_kids(&client, &base).await;
    for kid in &rotated {
        assert!(kids.contains(kid), "rotated key {kid} survived: {kids:?}");
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
    let (header, _) = jwt_parts(&fresh.access_token);
    assert_eq!(
        header["kid"],
        rotated.last().unwrap().as_str(),
        "the last acknowledged key signs"
    );
    drop(server);
    drop(fleetauth);
    drop(node);
}
