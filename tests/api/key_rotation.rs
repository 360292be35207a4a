//! Automatic signing-key rotation (`jwt.key_rotation_period`, `jwt.key_prepublish`) with
//! several real `fleetauth serve` processes on one store: a SQLite file shared by three
//! processes, and the real Elasticsearch node the tests share (`crate::common::es`; never
//! skipped). Short periods, so that a few rotations happen within the test.
//!
//! What is checked, from the outside only (JWKS, minted tokens, `/metrics`):
//! - a verifier that caches any instance's JWKS for up to [`CACHE_AGE`] never meets an
//!   unknown `kid` (the next key is published `key_prepublish` before it signs);
//! - a retired key stays in every instance's JWKS until every token it signed expired;
//! - exactly one instance performs each rotation (the rotation counters of all
//!   instances add up to the number of new keys), and the others follow.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::common::process::{Server, SharedStore, StoreAt};
use crate::common::requests::{authenticate, jwks_kids, metric_sum, metrics, whoami};
use crate::helpers::jwt_parts;

const PERIOD_SECS: u64 = 6;
const PREPUBLISH_SECS: u64 = 3;
/// How long the simulated verifiers keep a JWKS: less than the prepublication, with
/// room for the poll interval (200 ms) and a loaded machine.
const CACHE_AGE: f64 = 2.0;
const ACCESS_TTL_SECS: u64 = 2;

/// A SQLite file shared by every process, which logs warnings only.
pub(crate) fn sqlite_store() -> SharedStore {
    SharedStore::sqlite().with_env("FLEETAUTH_LOG", "warn")
}

/// The real node under a fresh prefix (deleted at the end); every process logs
/// warnings only.
pub(crate) fn real_node_store(label: &str) -> SharedStore {
    SharedStore::on_shared_node(label).with_env("FLEETAUTH_LOG", "warn")
}

fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn rotation_settings() -> Vec<(&'static str, String)> {
    vec![
        (
            "FLEETAUTH_JWT__KEY_ROTATION_PERIOD",
            format!("{PERIOD_SECS}s"),
        ),
        (
            "FLEETAUTH_JWT__KEY_PREPUBLISH",
            format!("{PREPUBLISH_SECS}s"),
        ),
        ("FLEETAUTH_JWT__KEY_POLL_INTERVAL", "200ms".into()),
        ("FLEETAUTH_JWT__ACCESS_TTL", format!("{ACCESS_TTL_SECS}s")),
        (
            "FLEETAUTH_JWT__MAX_ACCESS_TTL",
            format!("{ACCESS_TTL_SECS}s"),
        ),
        ("FLEETAUTH_JWT__LEEWAY", "0s".into()),
    ]
}

/// The sum of a counter's samples with `label` in their label set.
pub(crate) async fn counter(
    client: &reqwest::Client,
    server: &Server,
    name: &str,
    label: &str,
) -> f64 {
    metric_sum(&metrics(client, &server.base).await, name, label)
}

struct Minted {
    at: f64,
    server: usize,
    kid: String,
    exp: f64,
}

async fn rotation_with_three_instances(store: SharedStore) {
    let settings = rotation_settings();
    let created = store.cli_ok(&settings, &["api-key", "create", "--agent-id", "rotating"]);
    let api_key = format!("ApiKey {}", created["encoded"].as_str().unwrap());
    let servers: Vec<Server> = (0..3).map(|_| store.serve(&settings)).collect();
    let client = reqwest::Client::new();

    // Observe for three periods: every instance's JWKS, and a token minted by each.
    let mut snapshots: Vec<(f64, usize, BTreeSet<String>)> = Vec::new();
    let mut minted: Vec<Minted> = Vec::new();
    let until = wall() + (3 * PERIOD_SECS) as f64 + 1.0;
    while wall() < until {
        for (i, server) in servers.iter().enumerate() {
            snapshots.push((wall(), i, jwks_kids(&client, &server.base).await));
            let response = authenticate(&client, &server.base, &api_key).await;
            assert_eq!(response.status(), 200, "instance {i}");
            let at = wall();
            let body: Value = response.json().await.unwrap();
            let token = body["access_token"].as_str().unwrap().to_string();
            let (header, claims) = jwt_parts(&token);
            minted.push(Minted {
                at,
                server: i,
                kid: header["kid"].as_str().unwrap().to_string(),
                exp: claims["exp"].as_f64().unwrap(),
            });
            // Another instance accepts it at once (it has the key too).
            let other = &servers[(i + 1) % servers.len()];
            assert_eq!(
                whoami(&client, &other.base, &token).await,
                200,
                "a token of instance {i} elsewhere"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let signing: BTreeSet<&str> = minted.iter().map(|m| m.kid.as_str()).collect();
    assert!(
        signing.len() >= 3,
        "at least two rotations in three periods: {signing:?}"
    );

    for token in &minted {
        // A verifier that refreshes its cache of any instance's JWKS every CACHE_AGE
        // may hold any JWKS answered up to CACHE_AGE before the token was minted: each
        // of them knows its kid.
        for (at, server, kids) in &snapshots {
            if *at >= token.at - CACHE_AGE && *at <= token.at {
                assert!(
                    kids.contains(&token.kid),
                    "a token of instance {} at {:.2} has kid {}, unknown to instance {server}'s \
                     JWKS of {at:.2}: {kids:?}",
                    token.server,
                    token.at,
                    token.kid,
                );
            }
        }
        // Every instance publishes its key until the token expires.
        for (at, server, kids) in &snapshots {
            if *at >= token.at && *at < token.exp - 0.3 {
                assert!(
                    kids.contains(&token.kid),
                    "kid {} of a token valid until {} is missing from instance {server}'s JWKS \
                     at {at:.2}",
                    token.kid,
                    token.exp
                );
            }
        }
    }

    // Exactly one instance stored each new key: the instances' counters add up to the
    // number of keys that appeared after the first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: BTreeSet<String> = snapshots.iter().flat_map(|(_, _, k)| k.clone()).collect();
    for server in &servers {
        seen.extend(jwks_kids(&client, &server.base).await);
    }
    let mut rotations = 0.0;
    let mut per_instance = HashMap::new();
    for (i, server) in servers.iter().enumerate() {
        let n = counter(
            &client,
            server,
            "fleetauth_signing_key_rotations_total",
            "trigger=\"scheduled\"",
        )
        .await;
        per_instance.insert(i, n);
        rotations += n;
    }
    assert_eq!(
        rotations as usize,
        seen.len() - 1,
        "one rotation per new key ({per_instance:?}, keys {seen:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_sqlite_file_rotate_once_per_period() {
    rotation_with_three_instances(sqlite_store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_the_real_node_rotate_once_per_period() {
    rotation_with_three_instances(real_node_store("rotation")).await;
}

/// `keys rotate` and the other admin commands run with another `jwt.algorithm` than
/// the server's leave the ring's algorithm alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_with_another_algorithm_leaves_the_signing_key_alone() {
    let store = sqlite_store();
    let es256 = [("FLEETAUTH_JWT__ALGORITHM", "ES256".to_string())];
    let server = store.serve(&es256);
    let client = reqwest::Client::new();
    let before = jwks_kids(&client, &server.base).await;

    // The CLI runs with the default algorithm (EdDSA).
    let eddsa = [("FLEETAUTH_JWT__ALGORITHM", "EdDSA".to_string())];
    let created = store.cli_ok(&eddsa, &["api-key", "create", "--agent-id", "a-1"]);
    store.cli_ok(&eddsa, &["enrollment-token", "list"]);
    assert_eq!(
        jwks_kids(&client, &server.base).await,
        before,
        "no admin command rotated"
    );

    let rotated = store.cli_ok(&eddsa, &["keys", "rotate"]);
    assert_eq!(
        rotated["algorithm"], "ES256",
        "keys rotate keeps the signing key's algorithm"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let response = authenticate(
        &client,
        &server.base,
        &format!("ApiKey {}", created["encoded"].as_str().unwrap()),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let (header, _) = jwt_parts(body["access_token"].as_str().unwrap());
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], rotated["kid"]);

    // An explicit --algorithm changes it.
    let changed = store.cli_ok(&eddsa, &["keys", "rotate", "--algorithm", "EdDSA"]);
    assert_eq!(changed["algorithm"], "EdDSA");
    assert!(matches!(store.at, StoreAt::Sqlite(_)));
}
