//! Bulk revocation through `POST /api/fleet/tokens/revoke` and `fleetauth tokens
//! revoke`, with real `fleetauth serve` processes on one store (a SQLite file; the real
//! Elasticsearch node): by agent, by signing key, issued before a time; effective at
//! once on the other instance (stateful), the watermark reaching a stateless instance;
//! the answer's counts; refusals in the Fleet error format.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::process::{Server, SharedStore};
use crate::common::requests::{self, whoami};
use crate::helpers::jwt_parts;
use crate::key_rotation::{counter, real_node_store, sqlite_store};

const PASSWORD: &str = "bulk-revocation-admin-pw";

fn settings() -> Vec<(&'static str, String)> {
    vec![
        ("FLEETAUTH_BOOTSTRAP_PASSWORD", PASSWORD.to_string()),
        ("FLEETAUTH_JWT__KEY_POLL_INTERVAL", "200ms".into()),
    ]
}

struct Pair {
    access: String,
    refresh: String,
}

/// `POST /api/fleet/authenticate` that must give a pair.
async fn authenticate(client: &reqwest::Client, server: &Server, authorization: &str) -> Pair {
    let pair =
        requests::pair_from(requests::authenticate(client, &server.base, authorization).await)
            .await;
    Pair {
        access: pair.access_token,
        refresh: pair.refresh_token,
    }
}

async fn refresh(client: &reqwest::Client, server: &Server, token: &str) -> u16 {
    requests::refresh(client, &server.base, token)
        .await
        .status()
        .as_u16()
}

async fn revoke(
    client: &reqwest::Client,
    server: &Server,
    auth: Option<(&str, &str)>,
    body: Value,
) -> (u16, Value) {
    let mut request = client
        .post(server.url("/api/fleet/tokens/revoke"))
        .json(&body);
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.expect("revoke");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls until `check` holds (the watermark or a key reaches another instance within
/// its poll interval), failing after 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn bulk_revocation_on(store: SharedStore) {
    let base = settings();
    let keys: Vec<String> = ["a1", "a2", "a3"]
        .iter()
        .map(|agent| {
            let created = store.cli_ok(&base, &["api-key", "create", "--agent-id", agent]);
            format!("ApiKey {}", created["encoded"].as_str().unwrap())
        })
        .collect();
    let one = store.serve(&base);
    let two = store.serve(&base);
    let mut stateless_settings = base.clone();
    stateless_settings.push(("FLEETAUTH_JWT__STATELESS", "true".into()));
    let stateless = store.serve(&stateless_settings);
    let client = reqwest::Client::new();
    let admin = Some(("elastic", PASSWORD));

    let a1 = authenticate(&client, &one, &keys[0]).await;
    let a2 = authenticate(&client, &one, &keys[1]).await;
    assert_eq!(whoami(&client, &two.base, &a1.access).await, 200);
    assert_eq!(whoami(&client, &two.base, &a2.access).await, 200);

    // Refusals: no credential, a credential without the privilege, bad bodies.
    let (status, body) = revoke(&client, &one, None, json!({ "agent_id": "a1" })).await;
    assert_eq!(status, 401, "{body}");
    let no_privilege = client
        .post(one.url("/api/fleet/tokens/revoke"))
        .header("Authorization", &keys[2])
        .json(&json!({ "agent_id": "a1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(no_privilege.status(), 403);
    for bad in [
        json!({}),
        json!({ "agent_id": "a1", "kid": "k" }),
        json!({ "issued_before": 4_000_000_000u64 }),
        json!({ "issued_before": "yesterday" }),
        json!({ "agent_id": "" }),
        json!({ "agent": "a1" }),
    ] {
        let (status, body) = revoke(&client, &one, admin, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["statusCode"], 400, "Fleet's error format: {body}");
    }
    let (status, _) = revoke(&client, &one, admin, json!({ "kid": "no-such-key" })).await;
    assert_eq!(status, 404);

    // By agent, on one instance: the other refuses its tokens at once (stateful).
    let (status, body) = revoke(&client, &one, admin, json!({ "agent_id": "a1" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["by"], "agent");
    assert_eq!(body["revoked"]["families"], 1);
    assert_eq!(body["revoked"]["pairs"], 1, "its current pair");
    assert_eq!(whoami(&client, &two.base, &a1.access).await, 401);
    assert_eq!(refresh(&client, &two, &a1.refresh).await, 401);
    assert_eq!(
        whoami(&client, &two.base, &a2.access).await,
        200,
        "a2 untouched"
    );
    // Its API key still works: it may authenticate again.
    let a1_again = authenticate(&client, &two, &keys[0]).await;
    assert_eq!(whoami(&client, &one.base, &a1_again.access).await, 200);

    // A stateless instance learns of an agent revocation through the watermark.
    let a3 = authenticate(&client, &stateless, &keys[2]).await;
    assert_eq!(whoami(&client, &stateless.base, &a3.access).await, 200);
    let (status, body) = revoke(&client, &two, admin, json!({ "agent_id": "a3" })).await;
    assert_eq!(status, 200, "{body}");
    eventually(
        "the stateless instance refuses a revoked agent's token",
        || async { whoami(&client, &stateless.base, &a3.access).await == 401 },
    )
    .await;

    // By signing key: the key leaves every JWKS, a new key signs, its tokens are refused.
    let kid = jwt_parts(&a2.access).0["kid"].as_str().unwrap().to_string();
    let (status, body) = revoke(&client, &one, admin, json!({ "kid": kid })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"]["signing_keys"], 1);
    assert!(
        body["revoked"]["pairs"].as_u64().unwrap() >= 2,
        "a2's and a1's new pair were signed by it: {body}"
    );
    assert_eq!(
        whoami(&client, &two.base, &a2.access).await,
        401,
        "at once, stateful"
    );
    eventually(
        "the revoked key leaves the other instance's JWKS",
        || async {
            let jwks: Value = client
                .get(two.url("/.well-known/jwks.json"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            !jwks.to_string().contains(&kid)
        },
    )
    .await;
    let fresh = authenticate(&client, &two, &keys[1]).await;
    assert_ne!(jwt_parts(&fresh.access).0["kid"], kid.as_str());
    assert_eq!(whoami(&client, &one.base, &fresh.access).await, 200);

    // Issued before a time, by the CLI beside the servers.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revoked = store.cli_ok(&base, &["tokens", "revoke", "--issued-before", "now"]);
    assert_eq!(revoked["by"], "issued_before", "{revoked}");
    assert!(
        revoked["revoked"]["pairs"].as_u64().unwrap() >= 1,
        "{revoked}"
    );
    assert_eq!(whoami(&client, &one.base, &fresh.access).await, 401);
    assert_eq!(refresh(&client, &two, &fresh.refresh).await, 401);
    let after = authenticate(&client, &one, &keys[1]).await;
    assert_eq!(
        whoami(&client, &two.base, &after.access).await,
        200,
        "new tokens work"
    );

    assert!(
        counter(
            &client,
            &one,
            "fleetauth_bulk_revocations_total",
            "by=\"agent\""
        )
        .await
            >= 1.0
    );
    assert!(counter(&client, &one, "fleetauth_revoked_pairs_total", "by=\"kid\"").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_revocation_on_one_sqlite_file() {
    bulk_revocation_on(sqlite_store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_revocation_on_the_real_node() {
    bulk_revocation_on(real_node_store("bulk-revocation")).await;
}
