//! Enrollment over real HTTP: enrollment tokens made by the CLI binary (beside the
//! running server, on its store) and by the admin HTTP API, `POST
//! /api/fleet/agents/enroll` in both modes (a per-agent API key, or JWTs with
//! `X-Elastic-Agent-Accept-Auth: JWT`), re-enrollment revoking old credentials,
//! `max_uses`, the per-token rate limit, and refusals (4xx, never 5xx).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use fleetauth::clock::Clock;
use fleetauth::config::{EnrollmentSettings, Secret};
use serde_json::{json, Value};

use crate::common::process;
use crate::common::requests::basic;
use crate::helpers::{jwt_parts, metric_value, spawn_app_with, TestApp};

const ADMIN_PASSWORD: &str = "enroll-admin-s3cret";

async fn spawn() -> TestApp {
    spawn_app_with(|s| s.bootstrap_password = Some(Secret::new(ADMIN_PASSWORD))).await
}

fn elastic() -> String {
    basic("elastic", ADMIN_PASSWORD)
}

/// Runs the CLI on the app's data dir; returns its JSON output (it must succeed).
fn cli(app: &TestApp, args: &[&str]) -> Value {
    let data_dir = app.data_dir();
    let output = process::command()
        .args(args)
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .expect("fleetauth runs");
    process::json_output(&output).unwrap_or_else(|stderr| panic!("{args:?} failed: {stderr}"))
}

fn enroll_body(id: Option<&str>) -> Value {
    let mut body = json!({
        "type": "PERMANENT",
        "metadata": {
            "local": { "host": { "hostname": "web-1" }, "elastic": { "agent": { "version": "9.1.0" } } },
            "user_provided": { "team": "ops" },
            "tags": ["linux", "prod"]
        }
    });
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    body
}

async fn enroll(app: &TestApp, token: &str, body: &Value, jwt: bool) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/fleet/agents/enroll"))
        .header("Authorization", format!("ApiKey {token}"))
        .json(body);
    if jwt {
        request = request.header("X-Elastic-Agent-Accept-Auth", "JWT");
    }
    request.send().await.expect("request")
}

async fn enrolled_item(response: reqwest::Response) -> (reqwest::header::HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["action"], "created");
    (headers, body["item"].clone())
}

#[tokio::test]
async fn a_cli_token_enrolls_an_agent_that_gets_its_own_api_key() {
    let app = spawn().await;
    let created = cli(
        &app,
        &[
            "enrollment-token",
            "create",
            "--policy-id",
            "policy-linux",
            "--max-uses",
            "5",
        ],
    );
    assert_eq!(created["policy_id"], "policy-linux");
    assert_eq!(created["max_uses"], 5);
    let token = created["encoded"].as_str().unwrap().to_string();
    let before = metric_value(
        &app.metrics().await,
        "fleetauth_enrollments_total{result=\"created\",auth=\"api_key\"}",
    );

    let (_, item) = enrolled_item(enroll(&app, &token, &enroll_body(None), false).await).await;
    let agent_id = item["id"].as_str().unwrap().to_string();
    assert_eq!(item["active"], true);
    assert_eq!(item["policy_id"], "policy-linux");
    assert_eq!(item["type"], "PERMANENT");
    assert_eq!(item["tags"], json!(["linux", "prod"]));
    assert_eq!(item["user_provided_metadata"]["team"], "ops");
    assert_eq!(item["local_metadata"]["host"]["hostname"], "web-1");
    assert!(item["enrolled_at"].as_str().unwrap().ends_with('Z'));
    assert!(item.get("access_token").is_none());

    // The agent's own key works at the Fleet door, as the agent's.
    let access_key = item["access_api_key"].as_str().unwrap();
    let pair = app.pair(&format!("ApiKey {access_key}")).await;
    let (_, claims) = jwt_parts(&pair.access_token);
    assert_eq!(claims["sub"], agent_id.as_str());
    assert_eq!(claims["client_id"], item["access_api_key_id"]);

    // The enrollment token itself is good for enrollment only.
    assert_eq!(
        app.authenticate(&format!("ApiKey {token}")).await.status(),
        401
    );
    assert_eq!(app.whoami(&format!("ApiKey {token}")).await.status(), 401);
    let oauth = app
        .client
        .post(app.url("/oauth/token"))
        .header("Authorization", format!("ApiKey {token}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(oauth.status(), 401);

    // The CLI lists it with the use taken, and no secret.
    let listed = cli(
        &app,
        &["enrollment-token", "list", "--policy-id", "policy-linux"],
    );
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["uses_left"], 4);
    assert!(listed["items"][0].get("api_key").is_none());
    assert!(!listed
        .to_string()
        .contains(created["api_key"].as_str().unwrap()));
    let after = metric_value(
        &app.metrics().await,
        "fleetauth_enrollments_total{result=\"created\",auth=\"api_key\"}",
    );
    assert!(after >= before + 1.0);

    // Revoked by the CLI, beside the running server: refused at once.
    let id = created["id"].as_str().unwrap();
    let revoked = cli(&app, &["enrollment-token", "revoke", "--id", id]);
    assert_eq!(revoked["revoked"], true);
    assert_eq!(
        enroll(&app, &token, &enroll_body(None), false)
            .await
            .status(),
        401
    );
    // The agent it enrolled keeps working.
    assert_eq!(
        app.whoami(&format!("ApiKey {access_key}")).await.status(),
        200
    );
}

#[tokio::test]
async fn an_agent_that_accepts_jwts_gets_a_pending_pair_and_no_api_key() {
    let app = spawn().await;
    let created = cli(&app, &["enrollment-token", "create", "--policy-id", "p1"]);
    let token = created["encoded"].as_str().unwrap();
    let response = enroll(&app, token, &enroll_body(Some("agent-jwt-1")), true).await;
    let (headers, item) = enrolled_item(response).await;
    assert_eq!(item["id"], "agent-jwt-1");
    assert!(item.get("access_api_key").is_none());
    assert!(item.get("access_api_key_id").is_none());
    assert_eq!(item["token_type"], "Bearer");
    let access = item["access_token"].as_str().unwrap();
    let refresh = item["refresh_token"].as_str().unwrap();
    assert_eq!(headers["x-fleet-access-token"], access);
    assert_eq!(headers["x-fleet-refresh-token"], refresh);
    assert_eq!(
        headers["x-fleet-token-expires-in"].to_str().unwrap(),
        item["expires_in"].to_string()
    );
    assert_eq!(headers["cache-control"], "no-store");
    let (_, claims) = jwt_parts(access);
    assert_eq!(claims["sub"], "agent-jwt-1");
    assert_eq!(claims["client_id"], created["id"]);

    // No API key was made for the agent.
    let keys = app
        .services()
        .store
        .api_keys_where(&Default::default())
        .await
        .unwrap();
    assert!(keys
        .iter()
        .all(|k| k.agent_id.as_deref() != Some("agent-jwt-1")));

    // Pending until used: its refresh token rotates like any Fleet pair.
    let next = app.refresh(refresh).await;
    assert_eq!(next.status(), 200);
    let next = crate::helpers::pair_from(next).await;
    assert_eq!(app.whoami_status(&next.access_token).await, 200);
    assert_eq!(
        app.whoami_status(access).await,
        401,
        "using the next pair retired the first"
    );
}

#[tokio::test]
async fn re_enrolling_an_agent_id_revokes_its_old_credentials() {
    let app = spawn().await;
    let created = cli(&app, &["enrollment-token", "create", "--policy-id", "p1"]);
    let token = created["encoded"].as_str().unwrap();
    let body = enroll_body(Some("agent-re"));
    let (_, first) = enrolled_item(enroll(&app, token, &body, false).await).await;
    let old_key = first["access_api_key"].as_str().unwrap().to_string();
    let old_pair = app.pair(&format!("ApiKey {old_key}")).await;
    assert_eq!(app.whoami_status(&old_pair.access_token).await, 200);

    let (_, second) = enrolled_item(enroll(&app, token, &body, true).await).await;
    assert_eq!(second["id"], "agent-re");
    // Everything of the first enrollment stops at once.
    assert_eq!(app.whoami(&format!("ApiKey {old_key}")).await.status(), 401);
    assert_eq!(app.whoami_status(&old_pair.access_token).await, 401);
    assert_eq!(app.refresh(&old_pair.refresh_token).await.status(), 401);
    // The new pair works.
    assert_eq!(
        app.whoami_status(second["access_token"].as_str().unwrap())
            .await,
        200
    );

    // An agent of another policy, or one made by the CLI, is not replaced.
    let other = cli(&app, &["enrollment-token", "create", "--policy-id", "p2"]);
    let conflict = enroll(&app, other["encoded"].as_str().unwrap(), &body, false).await;
    assert_eq!(conflict.status(), 409);
    app.enroll("cli-agent").await;
    let conflict = enroll(&app, token, &enroll_body(Some("cli-agent")), false).await;
    assert_eq!(conflict.status(), 409);
    let error: Value = conflict.json().await.unwrap();
    assert_eq!(error["statusCode"], 409);
}

#[tokio::test]
async fn a_replace_token_guards_re_enrollment() {
    let app = spawn().await;
    let created = cli(&app, &["enrollment-token", "create", "--policy-id", "p1"]);
    let token = created["encoded"].as_str().unwrap();
    let mut body = enroll_body(Some("agent-guarded"));
    body["replace_token"] = json!("only-the-agent-knows");
    enrolled_item(enroll(&app, token, &body, false).await).await;
    let mut wrong = body.clone();
    wrong["replace_token"] = json!("someone-else");
    assert_eq!(enroll(&app, token, &wrong, false).await.status(), 409);
    let mut missing = body.clone();
    missing.as_object_mut().unwrap().remove("replace_token");
    assert_eq!(enroll(&app, token, &missing, false).await.status(), 409);
    enrolled_item(enroll(&app, token, &body, false).await).await;
}

/// A throttled enrollment-token check says why: failed checks of this token (or from
/// this address), not "too many enrollments".
#[tokio::test]
async fn a_throttled_token_check_says_its_cause() {
    let app = spawn_app_with(|s| {
        s.bootstrap_password = Some(Secret::new(ADMIN_PASSWORD));
        s.credential_checks.per_credential.burst = 2;
        s.credential_checks.per_address.burst = 1000;
    })
    .await;
    let token = cli(&app, &["enrollment-token", "create", "--policy-id", "p"]);
    let id = token["id"].as_str().unwrap();
    let wrong = STANDARD.encode(format!("{id}:wrong-secret"));
    let mut throttled = None;
    for _ in 0..5 {
        let response = enroll(&app, &wrong, &enroll_body(None), false).await;
        if response.status() == 429 {
            throttled = Some(response.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(response.status(), 401);
    }
    let body = throttled.expect("the failed checks of one token are throttled");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("too many failed checks of this enrollment token; retry in"),
        "{body}"
    );
}

#[tokio::test]
async fn max_uses_and_the_rate_limit_bound_a_token() {
    let app = spawn_app_with(|s| {
        s.bootstrap_password = Some(Secret::new(ADMIN_PASSWORD));
        s.enrollment = EnrollmentSettings {
            refill_per_second: 1.0 / 60.0,
            burst: 2,
        };
    })
    .await;
    let limited = cli(
        &app,
        &[
            "enrollment-token",
            "create",
            "--policy-id",
            "p",
            "--max-uses",
            "1",
        ],
    );
    let limited = limited["encoded"].as_str().unwrap();
    enrolled_item(enroll(&app, limited, &enroll_body(None), false).await).await;
    let used_up = enroll(&app, limited, &enroll_body(None), false).await;
    assert_eq!(used_up.status(), 401);

    let open = cli(&app, &["enrollment-token", "create", "--policy-id", "p"]);
    let open = open["encoded"].as_str().unwrap();
    for _ in 0..2 {
        enrolled_item(enroll(&app, open, &enroll_body(None), false).await).await;
    }
    let limited_now = enroll(&app, open, &enroll_body(None), false).await;
    assert_eq!(limited_now.status(), 429);
    let retry: u64 = limited_now.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = limited_now.json().await.unwrap();
    assert_eq!(body["statusCode"], 429);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("too many enrollments with this token"),
        "{body}"
    );
    // A minute later the bucket holds one more.
    app.clock.advance(60);
    enrolled_item(enroll(&app, open, &enroll_body(None), false).await).await;
}

#[tokio::test]
async fn the_admin_api_creates_lists_and_revokes_tokens_for_manage_security_only() {
    let app = spawn().await;
    let url = app.url("/api/fleet/enrollment_api_keys");
    let created: Value = app
        .client
        .post(&url)
        .header("Authorization", elastic())
        .json(&json!({ "policy_id": "policy-win", "name": "windows", "expiration": "30d", "max_uses": 10 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["action"], "created");
    let item = &created["item"];
    assert_eq!(item["policy_id"], "policy-win");
    assert_eq!(item["name"], "windows");
    assert_eq!(item["active"], true);
    assert!(item["expiration"].as_i64().unwrap() > app.clock.now() * 1000);
    let token = item["api_key"].as_str().unwrap().to_string();
    let id = item["id"].as_str().unwrap().to_string();

    let listed: Value = app
        .client
        .get(format!("{url}?policy_id=policy-win"))
        .header("Authorization", elastic())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert!(listed["items"][0].get("api_key").is_none());

    // An agent's key, or a user without manage_security, may not.
    let agent_key = app.enroll("some-agent").await;
    let refused = app
        .client
        .get(&url)
        .header("Authorization", format!("ApiKey {}", agent_key.encoded))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    enrolled_item(enroll(&app, &token, &enroll_body(None), false).await).await;
    let deleted = app
        .client
        .delete(format!("{url}/{id}"))
        .header("Authorization", elastic())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        enroll(&app, &token, &enroll_body(None), false)
            .await
            .status(),
        401
    );
    let got: Value = app
        .client
        .get(format!("{url}/{id}"))
        .header("Authorization", elastic())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["item"]["active"], false);
    let missing = app
        .client
        .delete(format!("{url}/no-such-id"))
        .header("Authorization", elastic())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn bad_enrollment_requests_are_4xx_in_the_fleet_format() {
    let app = spawn().await;
    let created = cli(&app, &["enrollment-token", "create", "--policy-id", "p"]);
    let token = created["encoded"].as_str().unwrap();
    let url = app.url("/api/fleet/agents/enroll");
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (app.client.post(&url).json(&enroll_body(None)), 401),
        (
            app.client
                .post(&url)
                .header("Authorization", "ApiKey !!!")
                .json(&enroll_body(None)),
            401,
        ),
        (
            app.client
                .post(&url)
                .header("Authorization", format!("ApiKey {}", STANDARD.encode("nope:wrong")))
                .json(&enroll_body(None)),
            401,
        ),
        (
            app.client
                .post(&url)
                .header("Authorization", format!("ApiKey {token}"))
                .body("type=PERMANENT"),
            415,
        ),
        (
            app.client
                .post(&url)
                .header("Authorization", format!("ApiKey {token}"))
                .header("Content-Type", "application/json")
                .body("{not json"),
            400,
        ),
        (
            app.client
                .post(&url)
                .header("Authorization", format!("ApiKey {token}"))
                .json(&json!({ "type": "SOMETIMES", "metadata": { "local": {} } })),
            400,
        ),
        (
            app.client
                .post(&url)
                .header("Authorization", format!("ApiKey {token}"))
                .json(&json!({ "type": "PERMANENT" })),
            400,
        ),
        (
            app.client
                .post(&url)
                .header("Authorization", format!("ApiKey {token}"))
                .json(&json!({ "type": "PERMANENT", "id": "bad id with spaces", "metadata": { "local": {} } })),
            400,
        ),
    ];
    for (i, (request, status)) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "case {i}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["statusCode"], status, "case {i}");
    }
    // The API key API refuses the reserved metadata that marks enrollment tokens.
    let forged = app
        .client
        .post(app.url("/_security/api_key"))
        .header("Authorization", elastic())
        .json(&json!({ "name": "forged", "metadata": { "_fleetauth_enrollment": { "policy_id": "p" } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
}

/// The same life on the Elasticsearch store (an in-process stand-in, not
/// Elasticsearch): tokens with `max_uses` counted in the store, enrollment records
/// kept, re-enrollment revoking.
#[tokio::test]
async fn enrollment_works_on_the_elasticsearch_store() {
    let standin = crate::es_standin::EsStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = fleetauth::config::Settings::for_data_dir(dir.path());
    settings.store = fleetauth::config::StoreKind::Elasticsearch;
    settings.elasticsearch =
        Some(fleetauth::config::ElasticsearchSettings::for_url(&standin.url()).unwrap());
    settings.bootstrap_password = Some(Secret::new(ADMIN_PASSWORD));
    let app = crate::helpers::spawn_app_for(
        settings,
        std::sync::Arc::new(fleetauth::clock::ManualClock::starting_now()),
    )
    .await;
    let created: Value = app
        .client
        .post(app.url("/api/fleet/enrollment_api_keys"))
        .header("Authorization", elastic())
        .json(&json!({ "policy_id": "es-policy", "max_uses": 2 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["item"]["api_key"].as_str().unwrap().to_string();
    let body = enroll_body(Some("es-agent"));
    let (_, first) = enrolled_item(enroll(&app, &token, &body, true).await).await;
    let first_access = first["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.whoami_status(&first_access).await, 200);
    let (_, second) = enrolled_item(enroll(&app, &token, &body, false).await).await;
    assert_eq!(app.whoami_status(&first_access).await, 401);
    let key = second["access_api_key"].as_str().unwrap();
    assert_eq!(app.whoami(&format!("ApiKey {key}")).await.status(), 200);
    // Two uses taken: the third is refused.
    assert_eq!(
        enroll(&app, &token, &enroll_body(None), false)
            .await
            .status(),
        401
    );
    let record = app
        .services()
        .store
        .typed_record::<fleetauth::enrollment::EnrolledAgentRecord>("es-agent")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.policy_id, "es-policy");
    assert_eq!(record.auth, "api_key");
}
