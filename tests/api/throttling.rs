//! Credential-flood protection over real HTTP on loopback: failed credential checks
//! are limited per client address and per credential (429 with an honest
//! `Retry-After`, in each API family's format); a legitimate client — one whose secret
//! is cached, or one from another address — keeps working; argon2 waits for its turn
//! at most a bounded time, then answers busy; unknown, invalidated and expired ids cost
//! no argon2 by default (no existence oracle among them). Counts and times are small
//! and bounded; the flood at scale is `benches/flood.rs`.

use std::net::IpAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use fleetauth::config::{Secret, Settings};
use fleetauth::secrets::UnknownIdPolicy;
use serde_json::Value;

use crate::helpers::{spawn_app_with, TestApp};

const ADMIN_PASSWORD: &str = "bootstrap-s3cret";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn random_api_key(n: usize) -> String {
    format!(
        "ApiKey {}",
        STANDARD.encode(format!("no-such-id-{n}:guessed-secret-{n}"))
    )
}

/// A client whose requests come from `source` (any 127.0.0.0/8 address is loopback).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Small limits, so that a test needs few requests: `address_burst` failures per
/// address, then one per `refill`.
fn limits(settings: &mut Settings, address_burst: u32, credential_burst: u32, refill: Duration) {
    let checks = &mut settings.credential_checks;
    checks.per_address.burst = address_burst;
    checks.per_address.refill_interval = refill;
    checks.per_credential.burst = credential_burst;
    checks.per_credential.refill_interval = refill;
    settings.bootstrap_password = Some(Secret::new(ADMIN_PASSWORD));
}

async fn post_authenticate(
    app: &TestApp,
    client: &reqwest::Client,
    authorization: &str,
) -> reqwest::Response {
    client
        .post(app.url("/api/fleet/authenticate"))
        .header("Authorization", authorization)
        .send()
        .await
        .expect("request")
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("Retry-After on a 429")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

#[tokio::test]
async fn a_flood_of_random_api_keys_gets_429_while_legitimate_clients_keep_working() {
    let app = spawn_app_with(|s| limits(s, 5, 5, Duration::from_secs(30))).await;
    let cached = app.enroll("cached-agent").await;
    let first_timer = app.enroll("first-timer").await;
    let flooder = client_from("127.0.0.2");
    // The cached agent authenticates once from the flooding address before the flood.
    let ok = post_authenticate(&app, &flooder, &format!("ApiKey {}", cached.encoded)).await;
    assert_eq!(ok.status(), 200);
    let runs_before = app.services().secrets.argon2_runs();

    let mut statuses = Vec::new();
    for n in 0..12 {
        let response = post_authenticate(&app, &flooder, &random_api_key(n)).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let after = retry_after(&response);
            assert!((1..=30).contains(&after), "Retry-After {after}");
            assert_eq!(
                response.headers()["content-type"],
                "application/json",
                "Fleet's JSON error"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["statusCode"], 429);
            assert_eq!(body["error"], "temporarily_unavailable");
            assert!(body["message"]
                .as_str()
                .unwrap()
                .contains("too many failed credential checks from this address"));
        }
    }
    assert_eq!(&statuses[..5], &[401; 5], "the burst is refused as usual");
    assert_eq!(&statuses[5..], &[429; 7], "then throttled");
    assert_eq!(
        app.services().secrets.argon2_runs(),
        runs_before,
        "unknown ids cost no argon2"
    );
    // The cached agent still works from the throttled address ...
    let ok = post_authenticate(&app, &flooder, &format!("ApiKey {}", cached.encoded)).await;
    assert_eq!(ok.status(), 200, "a cached secret is not throttled");
    // ... but an uncached key from there is held back, while from another address a
    // first-time exchange goes through.
    let held = post_authenticate(&app, &flooder, &format!("ApiKey {}", first_timer.encoded)).await;
    assert_eq!(held.status(), 429);
    let elsewhere = client_from("127.0.0.3");
    let ok = post_authenticate(&app, &elsewhere, &format!("ApiKey {}", first_timer.encoded)).await;
    assert_eq!(ok.status(), 200);
    let metrics = app.metrics().await;
    assert!(
        crate::helpers::metric_value(
            &metrics,
            r#"fleetauth_credential_checks_throttled_total{credential="api_key",reason="client_address"}"#
        ) >= 8.0,
        "429s are counted by reason"
    );
}

#[tokio::test]
async fn retry_after_is_honest() {
    let app = spawn_app_with(|s| limits(s, 2, 100, Duration::from_secs(2))).await;
    let flooder = client_from("127.0.0.4");
    for n in 0..2 {
        assert_eq!(
            post_authenticate(&app, &flooder, &random_api_key(n))
                .await
                .status(),
            401
        );
    }
    let refused = post_authenticate(&app, &flooder, &random_api_key(2)).await;
    assert_eq!(refused.status(), 429);
    let after = retry_after(&refused);
    assert!((1..=2).contains(&after), "Retry-After {after}");
    tokio::time::sleep(Duration::from_secs(after) + Duration::from_millis(100)).await;
    // Exactly one more failure fits after the wait.
    assert_eq!(
        post_authenticate(&app, &flooder, &random_api_key(3))
            .await
            .status(),
        401
    );
    assert_eq!(
        post_authenticate(&app, &flooder, &random_api_key(4))
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn wrong_passwords_for_one_user_are_limited_across_addresses_in_the_elasticsearch_format() {
    let app = spawn_app_with(|s| limits(s, 100, 3, Duration::from_secs(60))).await;
    let url = app.url("/_security/_authenticate");
    let mut last = None;
    for (n, source) in ["127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"]
        .iter()
        .enumerate()
    {
        let response = client_from(source)
            .get(&url)
            .header("Authorization", basic("elastic", &format!("wrong-{n}")))
            .send()
            .await
            .unwrap();
        last = Some(response);
        if n < 3 {
            assert_eq!(last.as_ref().unwrap().status(), 401);
        }
    }
    let refused = last.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused) >= 1);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(body["error"]["type"], "security_exception");
    assert!(body["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("too many failed checks of this credential"));
    assert_eq!(body["error"]["root_cause"][0]["type"], "security_exception");
    // The right password, not cached yet, is held back too (an attack on a user delays
    // its first login until Retry-After; a cached secret would pass).
    let held = app
        .client
        .get(&url)
        .header("Authorization", basic("elastic", ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), 429);
}

#[tokio::test]
async fn oauth_and_vault_answer_429_in_their_own_formats() {
    let app = spawn_app_with(|s| limits(s, 1, 100, Duration::from_secs(60))).await;
    let client = app.client_key("oauth-client").await;
    // OAuth: a wrong client secret, then the address is out of failures.
    let oauth = client_from("127.0.0.9");
    let token = |secret: &str| {
        oauth
            .post(app.url("/oauth/token"))
            .header("Authorization", basic(&client.id, secret))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
    };
    assert_eq!(token("wrong").await.unwrap().status(), 401);
    let refused = token("wrong again").await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused) >= 1);
    assert_eq!(refused.headers()["cache-control"], "no-store");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("retry after"));

    // Vault: the admin check of the config API (Basic, the elastic user).
    let vault = client_from("127.0.0.10");
    let config = |password: &str| {
        vault
            .get(app.url("/v1/auth/jwt/config"))
            .header("Authorization", basic("elastic", password))
            .send()
    };
    assert_eq!(config("wrong").await.unwrap().status(), 403);
    let refused = config("wrong again").await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused) >= 1);
    let body: Value = refused.json().await.unwrap();
    let errors = body["errors"].as_array().expect("Vault's errors list");
    assert!(errors[0].as_str().unwrap().contains("too many failed"));
}

#[tokio::test]
async fn argon2_waits_a_bounded_time_then_answers_busy() {
    // One argon2 at a time, a 1 ms wait, and unknown ids paying the dummy hash: a
    // burst of concurrent first-time checks finds the budget spent.
    let app = spawn_app_with(|s| {
        limits(s, 1000, 1000, Duration::from_secs(60));
        s.credential_checks.max_concurrent_hashes = 1;
        s.credential_checks.max_queue_wait = Duration::from_millis(1);
        s.credential_checks.unknown_ids = UnknownIdPolicy::DummyHash;
    })
    .await;
    let requests = (0..8).map(|n| {
        let client = app.client.clone();
        let url = app.url("/_security/_authenticate");
        async move {
            client
                .get(url)
                .header("Authorization", random_api_key(n))
                .send()
                .await
                .unwrap()
        }
    });
    let responses = futures::future::join_all(requests).await;
    let mut busy = 0;
    for response in responses {
        match response.status().as_u16() {
            401 => {}
            429 => {
                busy += 1;
                assert!(retry_after(&response) >= 1);
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["type"], "es_rejected_execution_exception");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(busy >= 1, "at least one check found the budget spent");
}

#[tokio::test]
async fn unknown_invalidated_and_expired_ids_cost_no_argon2_and_answer_alike() {
    let app = spawn_app_with(|s| limits(s, 1000, 1000, Duration::from_secs(60))).await;
    let invalidated = app.enroll("gone").await;
    app.invalidate_api_key(&invalidated.id).await;
    let expiring = app
        .services()
        .api_keys
        .create(
            "short",
            Some("brief"),
            Some(app.services().tokens.now() + 60),
        )
        .await
        .unwrap();
    app.clock.advance(61);
    let runs = app.services().secrets.argon2_runs();
    let mut bodies = Vec::new();
    for authorization in [
        random_api_key(0),
        format!("ApiKey {}", invalidated.encoded),
        format!("ApiKey {}", expiring.encoded),
    ] {
        let response = app.authenticate(&authorization).await;
        assert_eq!(response.status(), 401);
        bodies.push(response.text().await.unwrap());
    }
    assert_eq!(
        app.services().secrets.argon2_runs(),
        runs,
        "no argon2 for any of them"
    );
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
}
