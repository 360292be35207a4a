//! The Elasticsearch-compatible security APIs over HTTP: the built-in `elastic` and
//! its bootstrap password, `_authenticate`, the token API (independent token families,
//! refresh, invalidation), API keys (creation, listing, invalidation, the creator's
//! limits, retention), service-account tokens, users and roles, the authentication
//! chain's order, 403s for what a caller may not do, and bad input (4xx, never 5xx).

use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use fleetauth::clock::{Clock, ManualClock};
use fleetauth::config::{ElasticsearchSettings, Secret, StoreKind};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::process;
use crate::common::requests::basic;
use crate::es_standin::EsStandIn;
use crate::helpers::{metric_value, spawn_app_for, spawn_app_with, TestApp};

const ADMIN_PASSWORD: &str = "bootstrap-s3cret";
const DAY: i64 = 86_400;

async fn spawn() -> TestApp {
    spawn_app_with(|s| s.bootstrap_password = Some(Secret::new(ADMIN_PASSWORD))).await
}

fn admin() -> String {
    basic("elastic", ADMIN_PASSWORD)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn api_key(encoded: &str) -> String {
    format!("ApiKey {encoded}")
}

/// One request to the server; the status and the JSON body (`Null` if none).
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

async fn whoami_es(app: &TestApp, authorization: &str) -> (u16, Value) {
    call(
        app,
        Method::GET,
        "/_security/_authenticate",
        Some(authorization),
        None,
    )
    .await
}

/// Asserts Elasticsearch's error shape and type; returns the reason.
fn es_error(status: u16, body: &Value, want_status: u16, want_type: &str) -> String {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["status"], want_status, "{body}");
    assert_eq!(body["error"]["type"], want_type, "{body}");
    assert_eq!(body["error"]["root_cause"][0]["type"], want_type, "{body}");
    body["error"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn put_role(app: &TestApp, name: &str, cluster: &[&str]) {
    let (status, body) = call(
        app,
        Method::PUT,
        &format!("/_security/role/{name}"),
        Some(&admin()),
        Some(json!({ "cluster": cluster, "indices": [{ "names": ["logs-*"], "privileges": ["read"] }] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn put_user(app: &TestApp, name: &str, password: &str, roles: &[&str]) {
    let (status, body) = call(
        app,
        Method::PUT,
        &format!("/_security/user/{name}"),
        Some(&admin()),
        Some(json!({ "password": password, "roles": roles, "full_name": format!("User {name}") })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn password_grant(app: &TestApp, user: &str, password: &str) -> Value {
    let (status, body) = call(
        app,
        Method::POST,
        "/_security/oauth2/token",
        Some(&admin()),
        Some(json!({ "grant_type": "password", "username": user, "password": password })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn refresh_grant(app: &TestApp, refresh_token: &Value) -> (u16, Value) {
    call(
        app,
        Method::POST,
        "/_security/oauth2/token",
        Some(&admin()),
        Some(json!({ "grant_type": "refresh_token", "refresh_token": refresh_token })),
    )
    .await
}

async fn create_api_key(app: &TestApp, authorization: &str, body: Value) -> Value {
    let (status, created) = call(
        app,
        Method::POST,
        "/_security/api_key",
        Some(authorization),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    created
}

async fn invalidate_tokens(app: &TestApp, body: Value) -> (u16, Value) {
    call(
        app,
        Method::DELETE,
        "/_security/oauth2/token",
        Some(&admin()),
        Some(body),
    )
    .await
}

// ---- elastic and _authenticate ----

#[tokio::test]
async fn elastic_is_the_superuser_with_the_bootstrap_password() {
    let app = spawn().await;

    let (status, me) = whoami_es(&app, &admin()).await;

    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "elastic");
    assert_eq!(me["roles"], json!(["superuser"]));
    assert_eq!(me["authentication_type"], "realm");
    assert_eq!(
        me["authentication_realm"],
        json!({ "name": "reserved", "type": "reserved" })
    );
    assert_eq!(me["lookup_realm"]["name"], "reserved");
    assert_eq!(me["enabled"], true);
    assert!(me.get("api_key").is_none());
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_elasticsearchs_401() {
    let app = spawn().await;

    let response = app
        .client
        .get(app.url("/_security/_authenticate"))
        .send()
        .await
        .unwrap();
    let challenges: Vec<String> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();

    let reason = es_error(status, &body, 401, "security_exception");
    assert!(
        reason.contains(
            "missing authentication credentials for REST request [/_security/_authenticate]"
        ),
        "{reason}"
    );
    assert_eq!(
        challenges,
        [
            "Basic realm=\"security\" charset=\"UTF-8\"",
            "Bearer realm=\"security\"",
            "ApiKey"
        ]
    );
    assert_eq!(
        body["error"]["root_cause"][0]["header"]["WWW-Authenticate"][2],
        "ApiKey"
    );

    let (status, body) = whoami_es(&app, &basic("elastic", "not-the-password")).await;
    let reason = es_error(status, &body, 401, "security_exception");
    assert!(
        reason.contains("unable to authenticate user [elastic]"),
        "{reason}"
    );
    assert!(!body.to_string().contains("not-the-password"));
    let (status, body) = whoami_es(&app, &bearer("not-a-token")).await;
    es_error(status, &body, 401, "security_exception");
    let (status, body) = whoami_es(&app, "Digest abc").await;
    es_error(status, &body, 401, "security_exception");
}

// ---- users and roles ----

#[tokio::test]
async fn users_and_roles_can_be_managed_by_the_superuser() {
    let app = spawn().await;
    put_role(&app, "key_maker", &["manage_own_api_key"]).await;

    let (status, created) = call(
        &app,
        Method::POST,
        "/_security/user/alice",
        Some(&admin()),
        Some(json!({ "password": "alice-pw-1", "roles": ["key_maker"], "email": "a@example.com", "metadata": { "team": "blue" } })),
    )
    .await;
    assert_eq!((status, created), (200, json!({ "created": true })));

    let (status, me) = whoami_es(&app, &basic("alice", "alice-pw-1")).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["roles"], json!(["key_maker"]));
    assert_eq!(me["email"], "a@example.com");
    assert_eq!(me["metadata"]["team"], "blue");
    assert_eq!(
        me["authentication_realm"],
        json!({ "name": "default_native", "type": "native" })
    );

    // An update without a password keeps the password.
    let (status, updated) = call(
        &app,
        Method::PUT,
        "/_security/user/alice",
        Some(&admin()),
        Some(json!({ "roles": ["key_maker", "viewer"], "full_name": "Alice" })),
    )
    .await;
    assert_eq!((status, updated), (200, json!({ "created": false })));
    let (status, users) = call(
        &app,
        Method::GET,
        "/_security/user/alice",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(users["alice"]["full_name"], "Alice");
    assert_eq!(users["alice"]["roles"], json!(["key_maker", "viewer"]));
    assert!(!users.to_string().contains("argon2"), "no hash is shown");
    let (status, all) = call(&app, Method::GET, "/_security/user", Some(&admin()), None).await;
    assert_eq!(status, 200);
    assert!(all.get("elastic").is_some() && all.get("alice").is_some());
    let (status, roles) = call(
        &app,
        Method::GET,
        "/_security/role/key_maker",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(roles["key_maker"]["cluster"], json!(["manage_own_api_key"]));
    assert_eq!(roles["key_maker"]["indices"][0]["names"], json!(["logs-*"]));

    // A user changes its own password; the old one stops working.
    let (status, _) = call(
        &app,
        Method::POST,
        "/_security/user/_password",
        Some(&basic("alice", "alice-pw-1")),
        Some(json!({ "password": "alice-pw-2" })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(whoami_es(&app, &basic("alice", "alice-pw-1")).await.0, 401);
    assert_eq!(whoami_es(&app, &basic("alice", "alice-pw-2")).await.0, 200);

    // Disabled users cannot authenticate.
    call(
        &app,
        Method::PUT,
        "/_security/user/alice",
        Some(&admin()),
        Some(json!({ "roles": [], "enabled": false })),
    )
    .await;
    assert_eq!(whoami_es(&app, &basic("alice", "alice-pw-2")).await.0, 401);

    let (status, found) = call(
        &app,
        Method::DELETE,
        "/_security/user/alice",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!((status, found), (200, json!({ "found": true })));
    let (status, found) = call(
        &app,
        Method::DELETE,
        "/_security/user/alice",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!((status, found), (404, json!({ "found": false })));
    let (status, none) = call(
        &app,
        Method::GET,
        "/_security/user/alice",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!((status, none), (404, json!({})));
    let (status, found) = call(
        &app,
        Method::DELETE,
        "/_security/role/key_maker",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!((status, found), (200, json!({ "found": true })));
    let (status, _) = call(
        &app,
        Method::GET,
        "/_security/role/key_maker",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_deleted_users_tokens_do_not_pass_to_a_new_user_of_the_same_name() {
    let app = spawn().await;
    put_user(&app, "zoe", "zoe-pw-123", &["superuser"]).await;
    let token = password_grant(&app, "zoe", "zoe-pw-123").await;
    let access = bearer(token["access_token"].as_str().unwrap());
    assert_eq!(whoami_es(&app, &access).await.0, 200);

    let (status, _) = call(
        &app,
        Method::DELETE,
        "/_security/user/zoe",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(whoami_es(&app, &access).await.0, 401, "the user is gone");
    put_user(&app, "zoe", "another-pw-1", &["superuser"]).await;

    assert_eq!(
        whoami_es(&app, &access).await.0,
        401,
        "revoked with the user"
    );
    assert_eq!(refresh_grant(&app, &token["refresh_token"]).await.0, 400);
}

#[tokio::test]
async fn the_built_in_user_and_role_are_reserved() {
    let app = spawn().await;

    let (status, body) = call(
        &app,
        Method::PUT,
        "/_security/user/elastic",
        Some(&admin()),
        Some(json!({ "password": "whatever-1", "roles": [] })),
    )
    .await;
    es_error(status, &body, 400, "action_request_validation_exception");
    let (status, body) = call(
        &app,
        Method::DELETE,
        "/_security/user/elastic",
        Some(&admin()),
        None,
    )
    .await;
    es_error(status, &body, 400, "action_request_validation_exception");
    let (status, body) = call(
        &app,
        Method::PUT,
        "/_security/role/superuser",
        Some(&admin()),
        Some(json!({ "cluster": [] })),
    )
    .await;
    es_error(status, &body, 400, "illegal_argument_exception");

    // Only its password can change.
    let (status, _) = call(
        &app,
        Method::POST,
        "/_security/user/elastic/_password",
        Some(&admin()),
        Some(json!({ "password": "a-new-admin-pw" })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(whoami_es(&app, &admin()).await.0, 401);
    assert_eq!(
        whoami_es(&app, &basic("elastic", "a-new-admin-pw")).await.0,
        200
    );
}

// ---- admin-only APIs ----

#[tokio::test]
async fn callers_without_the_privilege_get_403() {
    let app = spawn().await;
    put_user(&app, "carol", "carol-pw-1", &[]).await;
    let carol = basic("carol", "carol-pw-1");

    let attempts = [
        (
            Method::PUT,
            "/_security/user/dave",
            Some(json!({ "password": "dave-pw-1", "roles": [] })),
            "cluster:admin/xpack/security/user/put",
        ),
        (
            Method::GET,
            "/_security/user",
            None,
            "cluster:admin/xpack/security/user/get",
        ),
        (
            Method::DELETE,
            "/_security/user/elastic",
            None,
            "cluster:admin/xpack/security/user/delete",
        ),
        (
            Method::PUT,
            "/_security/role/r",
            Some(json!({ "cluster": ["all"] })),
            "cluster:admin/xpack/security/role/put",
        ),
        (
            Method::POST,
            "/_security/oauth2/token",
            Some(json!({ "grant_type": "client_credentials" })),
            "cluster:admin/xpack/security/token/create",
        ),
        (
            Method::DELETE,
            "/_security/oauth2/token",
            Some(json!({ "username": "elastic" })),
            "cluster:admin/xpack/security/token/invalidate",
        ),
        (
            Method::POST,
            "/_security/api_key",
            Some(json!({ "name": "k" })),
            "cluster:admin/xpack/security/api_key/create",
        ),
        (
            Method::GET,
            "/_security/api_key",
            None,
            "cluster:admin/xpack/security/api_key/get",
        ),
        (
            Method::DELETE,
            "/_security/api_key",
            Some(json!({ "name": "k" })),
            "cluster:admin/xpack/security/api_key/invalidate",
        ),
        (
            Method::POST,
            "/_security/service/elastic/fleet-server/credential/token/t1",
            None,
            "cluster:admin/xpack/security/service_account/token/create",
        ),
        (
            Method::GET,
            "/_security/service/elastic/fleet-server/credential",
            None,
            "cluster:admin/xpack/security/service_account/credential/get",
        ),
        (
            Method::DELETE,
            "/_security/service/elastic/fleet-server/credential/token/t1",
            None,
            "cluster:admin/xpack/security/service_account/token/delete",
        ),
        (
            Method::POST,
            "/_security/user/elastic/_password",
            Some(json!({ "password": "hijacked-1" })),
            "cluster:admin/xpack/security/user/change_password",
        ),
    ];
    for (method, path, body, action) in attempts {
        let (status, answer) = call(&app, method.clone(), path, Some(&carol), body).await;
        let reason = es_error(status, &answer, 403, "security_exception");
        assert!(
            reason.starts_with(&format!(
                "action [{action}] is unauthorized for user [carol]"
            )),
            "{method} {path}: {reason}"
        );
    }
    // Nothing changed; carol can still say who she is.
    assert_eq!(whoami_es(&app, &admin()).await.0, 200);
    assert_eq!(whoami_es(&app, &carol).await.0, 200);
}

// ---- the token API ----

#[tokio::test]
async fn the_password_grant_gives_each_login_its_own_token_family() {
    let app = spawn().await;
    put_user(&app, "tess", "tess-pw-1", &["superuser"]).await;
    let series = r#"fleetauth_tokens_issued_total{endpoint="elasticsearch",grant="password",credential="password",kind="refresh"}"#;
    let before = metric_value(&app.metrics().await, series);

    let first = password_grant(&app, "tess", "tess-pw-1").await;
    let second = password_grant(&app, "tess", "tess-pw-1").await;

    for token in [&first, &second] {
        assert_eq!(token["type"], "Bearer");
        assert_eq!(token["expires_in"], 1200, "20 minutes by default");
        assert!(token["refresh_token"].is_string());
        assert_eq!(token["authentication"]["username"], "tess");
        assert_eq!(token["authentication"]["authentication_type"], "realm");
    }
    assert!(
        metric_value(&app.metrics().await, series) >= before + 2.0,
        "counted with every other issuance"
    );
    // Both work at once, independently.
    for token in [&first, &second] {
        let (status, me) = whoami_es(&app, &bearer(token["access_token"].as_str().unwrap())).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["username"], "tess");
        assert_eq!(me["authentication_type"], "token");
        assert_eq!(me["roles"], json!(["superuser"]));
        assert_eq!(me["authentication_realm"]["name"], "default_native");
    }
    // Refreshing one family leaves the other alone.
    let (status, refreshed) = refresh_grant(&app, &first["refresh_token"]).await;
    assert_eq!(status, 200, "{refreshed}");
    assert!(refreshed["refresh_token"].is_string());
    assert_eq!(refreshed["authentication"]["username"], "tess");
    let new_access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(whoami_es(&app, &bearer(new_access)).await.0, 200);
    assert_eq!(
        whoami_es(&app, &bearer(second["access_token"].as_str().unwrap()))
            .await
            .0,
        200
    );
    let (status, _) = refresh_grant(&app, &second["refresh_token"]).await;
    assert_eq!(status, 200);

    // The used refresh token is spent (its pair was superseded by the new one's use):
    // presenting it again is reuse, which revokes that family only.
    let (status, body) = refresh_grant(&app, &first["refresh_token"]).await;
    let reason = es_error(status, &body, 400, "security_exception");
    assert_eq!(reason, "invalid_grant");
    assert_eq!(
        body["error"]["header"]["error_description"],
        "could not refresh the requested token"
    );
    assert_eq!(
        whoami_es(&app, &bearer(new_access)).await.0,
        401,
        "family revoked"
    );
    let (status, _) = refresh_grant(&app, &refreshed["refresh_token"]).await;
    assert_eq!(status, 400);
    // A new login starts a new family.
    let third = password_grant(&app, "tess", "tess-pw-1").await;
    assert_eq!(
        whoami_es(&app, &bearer(third["access_token"].as_str().unwrap()))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn the_client_credentials_grant_gives_the_caller_a_token_without_refresh() {
    let app = spawn().await;

    let (status, token) = call(
        &app,
        Method::POST,
        "/_security/oauth2/token",
        Some(&admin()),
        Some(json!({ "grant_type": "client_credentials" })),
    )
    .await;

    assert_eq!(status, 200, "{token}");
    assert!(token.get("refresh_token").is_none(), "{token}");
    assert_eq!(token["type"], "Bearer");
    let (status, me) = whoami_es(&app, &bearer(token["access_token"].as_str().unwrap())).await;
    assert_eq!((status, me["username"].clone()), (200, json!("elastic")));
    // A token may ask for another token.
    let (status, again) = call(
        &app,
        Method::POST,
        "/_security/oauth2/token",
        Some(&bearer(token["access_token"].as_str().unwrap())),
        Some(json!({ "grant_type": "client_credentials" })),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    // An API key is not a user: no client_credentials token for it.
    let key = create_api_key(&app, &admin(), json!({ "name": "admin-key" })).await;
    let (status, body) = call(
        &app,
        Method::POST,
        "/_security/oauth2/token",
        Some(&api_key(key["encoded"].as_str().unwrap())),
        Some(json!({ "grant_type": "client_credentials" })),
    )
    .await;
    es_error(status, &body, 400, "illegal_argument_exception");
}

#[tokio::test]
async fn a_wrong_password_in_the_password_grant_is_401() {
    let app = spawn().await;
    put_user(&app, "uma", "uma-pw-12", &[]).await;

    for (user, password) in [("uma", "wrong-pw"), ("nobody", "uma-pw-12")] {
        let (status, body) = call(
            &app,
            Method::POST,
            "/_security/oauth2/token",
            Some(&admin()),
            Some(json!({ "grant_type": "password", "username": user, "password": password })),
        )
        .await;
        let reason = es_error(status, &body, 401, "security_exception");
        assert!(
            reason.contains(&format!("unable to authenticate user [{user}]")),
            "{reason}"
        );
    }
}

async fn token_invalidation_flow(app: &TestApp) {
    put_user(app, "vic", "vic-pw-123", &[]).await;
    put_user(app, "wes", "wes-pw-123", &[]).await;
    let vic: Vec<Value> =
        futures::future::join_all((0..3).map(|_| password_grant(app, "vic", "vic-pw-123"))).await;
    let wes = password_grant(app, "wes", "wes-pw-123").await;
    let access = |t: &Value| bearer(t["access_token"].as_str().unwrap());

    // By access token: that token (its pair) only.
    let (status, result) = invalidate_tokens(app, json!({ "token": vic[0]["access_token"] })).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        (
            result["invalidated_tokens"].clone(),
            result["previously_invalidated_tokens"].clone(),
            result["error_count"].clone()
        ),
        (json!(1), json!(0), json!(0))
    );
    assert_eq!(whoami_es(app, &access(&vic[0])).await.0, 401);
    assert_eq!(whoami_es(app, &access(&vic[1])).await.0, 200);
    let (status, result) = invalidate_tokens(app, json!({ "token": vic[0]["access_token"] })).await;
    assert_eq!(
        (status, result["previously_invalidated_tokens"].clone()),
        (200, json!(1))
    );

    // By refresh token: its family.
    let (status, result) =
        invalidate_tokens(app, json!({ "refresh_token": vic[1]["refresh_token"] })).await;
    assert_eq!(
        (status, result["invalidated_tokens"].clone()),
        (200, json!(1)),
        "{result}"
    );
    assert_eq!(whoami_es(app, &access(&vic[1])).await.0, 401);
    assert_eq!(refresh_grant(app, &vic[1]["refresh_token"]).await.0, 400);

    // By username: every family of the user, found by listing; others untouched.
    let (status, result) = invalidate_tokens(app, json!({ "username": "vic" })).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["invalidated_tokens"], 1, "{result}");
    assert_eq!(result["previously_invalidated_tokens"], 2, "{result}");
    assert_eq!(whoami_es(app, &access(&vic[2])).await.0, 401);
    assert_eq!(whoami_es(app, &access(&wes)).await.0, 200);

    // By realm.
    let (status, result) = invalidate_tokens(
        app,
        json!({ "realm_name": "default_native", "username": "wes" }),
    )
    .await;
    assert_eq!(
        (status, result["invalidated_tokens"].clone()),
        (200, json!(1)),
        "{result}"
    );
    assert_eq!(whoami_es(app, &access(&wes)).await.0, 401);
    let (status, result) = invalidate_tokens(app, json!({ "realm_name": "no_such_realm" })).await;
    assert_eq!(status, 404, "nothing found: {result}");
    assert_eq!(result["invalidated_tokens"], 0);

    // Unknown tokens are not found.
    let (status, _) = invalidate_tokens(app, json!({ "token": "eyJ.eyJ.sig" })).await;
    assert_eq!(status, 404);
    let (status, _) = invalidate_tokens(app, json!({ "refresh_token": "nonsense" })).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn tokens_are_invalidated_by_token_refresh_token_username_or_realm() {
    let app = spawn().await;
    token_invalidation_flow(&app).await;
}

#[tokio::test]
async fn tokens_are_invalidated_the_same_way_on_the_elasticsearch_store() {
    let standin = EsStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::helpers::test_settings(dir.path());
    settings.store = StoreKind::Elasticsearch;
    settings.elasticsearch = Some(ElasticsearchSettings::for_url(&standin.url()).unwrap());
    settings.bootstrap_password = Some(Secret::new(ADMIN_PASSWORD));
    let app = spawn_app_for(settings, Arc::new(ManualClock::starting_now())).await;

    token_invalidation_flow(&app).await;
    api_key_flow(&app).await;
}

/// RFC 8725 §2.8 (issue 12 item 3): where the token API expects a refresh token (the
/// refresh grant, invalidation by `refresh_token`), an access token is not one, and
/// neither is an agent's Fleet refresh token.
#[tokio::test]
async fn the_token_api_takes_only_its_own_refresh_tokens_where_one_is_expected() {
    let app = spawn().await;
    let token = password_grant(&app, "elastic", ADMIN_PASSWORD).await;
    let key = app.enroll("agent-es-confusion").await;
    let fleet_pair = app.pair_with_api_key(&key).await;

    for not_ours in [
        token["access_token"].clone(),
        json!(fleet_pair.refresh_token),
    ] {
        let (status, answer) = refresh_grant(&app, &not_ours).await;
        es_error(status, &answer, 400, "security_exception");
        let (status, answer) = invalidate_tokens(&app, json!({ "refresh_token": not_ours })).await;
        assert_eq!(status, 404, "{answer}");
        assert_eq!(answer["invalidated_tokens"], 0, "{answer}");
    }

    // Nothing was consumed or revoked: each token still works where it belongs.
    let access = bearer(token["access_token"].as_str().unwrap());
    assert_eq!(whoami_es(&app, &access).await.0, 200);
    let (status, refreshed) = refresh_grant(&app, &token["refresh_token"]).await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(app.refresh(&fleet_pair.refresh_token).await.status(), 200);
}

#[tokio::test]
async fn invalidating_tokens_needs_exactly_one_criterion() {
    let app = spawn().await;

    for body in [
        json!({}),
        json!({ "token": "a", "refresh_token": "b" }),
        json!({ "token": "a", "username": "b" }),
    ] {
        let (status, answer) = invalidate_tokens(&app, body).await;
        es_error(status, &answer, 400, "action_request_validation_exception");
    }
}

// ---- API keys ----

async fn api_key_flow(app: &TestApp) {
    let created = create_api_key(
        app,
        &admin(),
        json!({
            "name": "deploy",
            "expiration": "1d",
            "role_descriptors": { "r1": { "cluster": ["manage_own_api_key"] } },
            "metadata": { "env": "prod", "tags": ["a"] }
        }),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "deploy");
    let now_ms = app.clock_now() * 1000;
    assert_eq!(created["expiration"], json!(now_ms + DAY * 1000));
    let secret = created["api_key"].as_str().unwrap();
    assert_eq!(
        created["encoded"],
        json!(STANDARD.encode(format!("{id}:{secret}")))
    );
    let other = create_api_key(app, &admin(), json!({ "name": "other" })).await;
    assert!(
        other.get("expiration").is_none(),
        "no expiration: never expires"
    );

    let (status, me) = whoami_es(app, &api_key(created["encoded"].as_str().unwrap())).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["authentication_type"], "api_key");
    assert_eq!(me["username"], "elastic");
    assert_eq!(me["api_key"], json!({ "id": id, "name": "deploy" }));
    assert_eq!(me["authentication_realm"]["name"], "_es_api_key");

    let (status, listed) = call(
        app,
        Method::GET,
        &format!("/_security/api_key?id={id}"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let key = &listed["api_keys"][0];
    assert_eq!(key["id"], json!(id));
    assert_eq!(key["name"], "deploy");
    assert_eq!(key["creation"], json!(now_ms));
    assert_eq!(key["expiration"], json!(now_ms + DAY * 1000));
    assert_eq!(key["invalidated"], false);
    assert_eq!(key["username"], "elastic");
    assert_eq!(key["realm"], "reserved");
    assert_eq!(key["metadata"], json!({ "env": "prod", "tags": ["a"] }));
    assert_eq!(
        key["role_descriptors"]["r1"]["cluster"],
        json!(["manage_own_api_key"])
    );
    assert!(key.get("limited_by").is_none());
    assert!(
        !listed.to_string().contains(secret),
        "the secret is never listed"
    );
    let (status, listed) = call(
        app,
        Method::GET,
        "/_security/api_key?name=deploy&with_limited_by=true",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["api_keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        listed["api_keys"][0]["limited_by"][0]["superuser"]["cluster"],
        json!(["all"])
    );
    let (status, mine) = call(
        app,
        Method::GET,
        "/_security/api_key?owner=true",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(mine["api_keys"].as_array().unwrap().len(), 2);
    let (status, prefixed) = call(
        app,
        Method::GET,
        "/_security/api_key?name=dep*",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(
        (status, prefixed["api_keys"].as_array().unwrap().len()),
        (200, 1)
    );

    let (status, result) = call(
        app,
        Method::DELETE,
        "/_security/api_key",
        Some(&admin()),
        Some(json!({ "ids": [id] })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        result,
        json!({ "invalidated_api_keys": [id], "previously_invalidated_api_keys": [], "error_count": 0 })
    );
    assert_eq!(
        whoami_es(app, &api_key(created["encoded"].as_str().unwrap()))
            .await
            .0,
        401
    );
    let (_, listed) = call(
        app,
        Method::GET,
        &format!("/_security/api_key?id={id}"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(listed["api_keys"][0]["invalidated"], true);
    let (_, active) = call(
        app,
        Method::GET,
        "/_security/api_key?owner=true&active_only=true",
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(active["api_keys"].as_array().unwrap().len(), 1);
    let (status, result) = call(
        app,
        Method::DELETE,
        "/_security/api_key",
        Some(&admin()),
        Some(json!({ "name": "deploy" })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(result["previously_invalidated_api_keys"], json!([id]));
    let (status, result) = call(
        app,
        Method::DELETE,
        "/_security/api_key",
        Some(&admin()),
        Some(json!({ "name": "other" })),
    )
    .await;
    assert_eq!(
        (status, result["invalidated_api_keys"].clone()),
        (200, json!([other["id"]]))
    );
    let (status, result) = call(
        app,
        Method::DELETE,
        "/_security/api_key",
        Some(&admin()),
        Some(json!({ "ids": ["no-such-key"] })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(result["invalidated_api_keys"], json!([]));
}

trait ClockNow {
    fn clock_now(&self) -> i64;
}

impl ClockNow for TestApp {
    fn clock_now(&self) -> i64 {
        use fleetauth::clock::Clock;
        self.clock.now()
    }
}

#[tokio::test]
async fn api_keys_are_created_listed_and_invalidated() {
    let app = spawn().await;
    api_key_flow(&app).await;
}

/// A key can never do what its creator cannot, whatever its role descriptors ask for;
/// nor more than its own descriptors allow, whatever its creator can.
#[tokio::test]
async fn an_api_key_is_limited_by_its_creators_privileges() {
    let app = spawn().await;
    put_role(&app, "key_maker", &["manage_own_api_key"]).await;
    put_user(&app, "bob", "bob-pw-123", &["key_maker"]).await;
    let bob = basic("bob", "bob-pw-123");

    let greedy = create_api_key(
        &app,
        &bob,
        json!({ "name": "greedy", "role_descriptors": { "admin": { "cluster": ["all"] } } }),
    )
    .await;
    let greedy_key = api_key(greedy["encoded"].as_str().unwrap());

    let (status, body) = call(
        &app,
        Method::PUT,
        "/_security/user/mallory",
        Some(&greedy_key),
        Some(json!({ "password": "mallory-1", "roles": ["superuser"] })),
    )
    .await;
    let reason = es_error(status, &body, 403, "security_exception");
    assert!(
        reason.contains(&format!(
            "API key id [{}] of user [bob]",
            greedy["id"].as_str().unwrap()
        )),
        "{reason}"
    );
    let (status, body) = call(
        &app,
        Method::GET,
        "/_security/api_key",
        Some(&greedy_key),
        None,
    )
    .await;
    es_error(status, &body, 403, "security_exception");
    // What the creator could do, the key can: look at itself.
    let (status, itself) = call(
        &app,
        Method::GET,
        "/_security/api_key?owner=true",
        Some(&greedy_key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{itself}");
    assert_eq!(itself["api_keys"][0]["id"], greedy["id"]);
    assert_eq!(itself["api_keys"].as_array().unwrap().len(), 1);

    // Bob sees and invalidates only his own keys, and only when he says so.
    let (status, body) = call(&app, Method::GET, "/_security/api_key", Some(&bob), None).await;
    es_error(status, &body, 403, "security_exception");
    let admin_key = create_api_key(&app, &admin(), json!({ "name": "admins" })).await;
    let (status, mine) = call(
        &app,
        Method::GET,
        "/_security/api_key?owner=true",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(mine["api_keys"].as_array().unwrap().len(), 1);
    assert_eq!(mine["api_keys"][0]["username"], "bob");
    assert_eq!(mine["api_keys"][0]["realm"], "default_native");
    let (status, body) = call(
        &app,
        Method::DELETE,
        "/_security/api_key",
        Some(&bob),
        Some(json!({ "ids": [admin_key["id"]] })),
    )
    .await;
    es_error(status, &body, 403, "security_exception");
    let (status, result) = call(
        &app,
        Method::DELETE,
        "/_security/api_key",
        Some(&bob),
        Some(json!({ "ids": [admin_key["id"]], "owner": true })),
    )
    .await;
    assert_eq!(
        (status, result["invalidated_api_keys"].clone()),
        (200, json!([])),
        "not his"
    );
    assert_eq!(
        whoami_es(&app, &api_key(admin_key["encoded"].as_str().unwrap()))
            .await
            .0,
        200
    );

    // The other side: a superuser's key restricted by its descriptors.
    let narrow = create_api_key(
        &app,
        &admin(),
        json!({ "name": "narrow", "role_descriptors": { "only_keys": { "cluster": ["manage_own_api_key"] } } }),
    )
    .await;
    let (status, body) = call(
        &app,
        Method::GET,
        "/_security/user",
        Some(&api_key(narrow["encoded"].as_str().unwrap())),
        None,
    )
    .await;
    es_error(status, &body, 403, "security_exception");
    // A superuser's key without descriptors has the superuser's privileges.
    let full = create_api_key(&app, &admin(), json!({ "name": "full" })).await;
    let (status, _) = call(
        &app,
        Method::GET,
        "/_security/user",
        Some(&api_key(full["encoded"].as_str().unwrap())),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Keys do not create keys here.
    let (status, body) = call(
        &app,
        Method::POST,
        "/_security/api_key",
        Some(&api_key(full["encoded"].as_str().unwrap())),
        Some(json!({ "name": "derived" })),
    )
    .await;
    es_error(status, &body, 400, "illegal_argument_exception");
}

/// Keys without expiration never expire; expired and invalidated keys are kept for
/// `api_keys.retention` (7 days) and then removed by the remover.
#[tokio::test]
async fn expired_and_invalidated_keys_are_removed_after_the_retention() {
    let app = spawn().await;
    let expiring = create_api_key(
        &app,
        &admin(),
        json!({ "name": "expiring", "expiration": "1d" }),
    )
    .await;
    let invalidated = create_api_key(&app, &admin(), json!({ "name": "invalidated" })).await;
    let forever = create_api_key(&app, &admin(), json!({ "name": "forever" })).await;
    let (status, _) = call(
        &app,
        Method::DELETE,
        "/_security/api_key",
        Some(&admin()),
        Some(json!({ "ids": [invalidated["id"]] })),
    )
    .await;
    assert_eq!(status, 200);
    let listed = |app: &TestApp| {
        let client = app.client.clone();
        let url = app.url("/_security/api_key?owner=true");
        async move {
            let body: Value = client
                .get(url)
                .header("Authorization", admin())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mut names: Vec<String> = body["api_keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["name"].as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        }
    };
    let remover = app.services().security_api.clone();

    app.clock.advance(DAY + 1);
    assert_eq!(
        whoami_es(&app, &api_key(expiring["encoded"].as_str().unwrap()))
            .await
            .0,
        401,
        "expired"
    );
    assert_eq!(remover.remove_expired().await.unwrap().api_keys, 0);
    assert_eq!(listed(&app).await, ["expiring", "forever", "invalidated"]);

    app.clock.advance(6 * DAY); // invalidated 7 days + 1 s ago, expired 6 days ago
    let removed = remover.remove_expired().await.unwrap();
    assert_eq!(removed.api_keys, 1);
    assert_eq!(listed(&app).await, ["expiring", "forever"]);

    app.clock.advance(DAY); // expired 7 days ago
    assert_eq!(remover.remove_expired().await.unwrap().api_keys, 1);
    assert_eq!(listed(&app).await, ["forever"]);

    app.clock.advance(365 * DAY);
    assert_eq!(remover.remove_expired().await.unwrap().api_keys, 0);
    assert_eq!(
        whoami_es(&app, &api_key(forever["encoded"].as_str().unwrap()))
            .await
            .0,
        200,
        "never expires"
    );
}

#[tokio::test]
async fn the_retention_is_a_setting_and_token_families_are_removed_when_spent() {
    let app = spawn_app_with(|s| {
        s.bootstrap_password = Some(Secret::new(ADMIN_PASSWORD));
        s.api_key_retention = std::time::Duration::from_secs(3600);
    })
    .await;
    let key = create_api_key(
        &app,
        &admin(),
        json!({ "name": "short", "expiration": "1h" }),
    )
    .await;
    let token = password_grant(&app, "elastic", ADMIN_PASSWORD).await;
    let remover = app.services().security_api.clone();

    app.clock.advance(2 * 3600);
    let removed = remover.remove_expired().await.unwrap();
    assert_eq!(removed.api_keys, 1, "expired 1 h ago, retention 1 h");
    assert_eq!(removed.token_families, 0, "its refresh token lives 24 h");
    let (_, listed) = call(
        &app,
        Method::GET,
        &format!("/_security/api_key?id={}", key["id"].as_str().unwrap()),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(listed["api_keys"], json!([]));

    app.clock.advance(DAY);
    let removed = remover.remove_expired().await.unwrap();
    assert_eq!(removed.token_families, 1);
    let (status, _) = refresh_grant(&app, &token["refresh_token"]).await;
    assert_eq!(status, 400);
}

// ---- service accounts ----

#[tokio::test]
async fn service_tokens_are_created_used_listed_and_deleted() {
    let app = spawn().await;
    let path = "/_security/service/elastic/fleet-server/credential";

    let (status, created) = call(
        &app,
        Method::POST,
        &format!("{path}/token/token1"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["created"], true);
    assert_eq!(created["token"]["name"], "token1");
    let value = created["token"]["value"].as_str().unwrap().to_string();
    assert!(
        value.starts_with("AAEAAWVsYXN0aWMvZmxlZXQtc2VydmVyL3Rva2VuMT"),
        "{value}"
    );
    let decoded = STANDARD_NO_PAD
        .decode(&value)
        .expect("standard base64 without padding");
    assert_eq!(&decoded[..4], &[0, 1, 0, 1]);
    let text = String::from_utf8(decoded[4..].to_vec()).unwrap();
    let secret = text
        .strip_prefix("elastic/fleet-server/token1:")
        .expect("qualified name");
    assert!(secret.len() >= 43, "256 bits of secret");

    let (status, me) = whoami_es(&app, &bearer(&value)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["username"], "elastic/fleet-server");
    assert_eq!(me["authentication_type"], "token");
    assert_eq!(
        me["authentication_realm"],
        json!({ "name": "_service_account", "type": "_service_account" })
    );
    assert_eq!(me["token"]["name"], "token1");
    assert_eq!(me["metadata"]["_elastic_service_account"], true);

    let (status, generated) = call(
        &app,
        Method::POST,
        &format!("{path}/token"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let generated_name = generated["token"]["name"].as_str().unwrap().to_string();
    assert!(generated_name.starts_with("token_"), "{generated_name}");
    let (status, put) = call(
        &app,
        Method::PUT,
        &format!("{path}/token/token2"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!(
        (status, put["token"]["name"].clone()),
        (200, json!("token2"))
    );
    let (status, body) = call(
        &app,
        Method::POST,
        &format!("{path}/token/token1"),
        Some(&admin()),
        None,
    )
    .await;
    es_error(status, &body, 409, "version_conflict_engine_exception");

    let (status, credentials) = call(&app, Method::GET, path, Some(&admin()), None).await;
    assert_eq!(status, 200);
    assert_eq!(credentials["service_account"], "elastic/fleet-server");
    assert_eq!(credentials["count"], 3);
    assert_eq!(credentials["tokens"]["token1"], json!({}));
    assert_eq!(credentials["tokens"][generated_name.as_str()], json!({}));
    assert_eq!(credentials["nodes_credentials"]["file_tokens"], json!({}));
    assert!(!credentials.to_string().contains(secret));

    let (status, found) = call(
        &app,
        Method::DELETE,
        &format!("{path}/token/token1"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!((status, found), (200, json!({ "found": true })));
    assert_eq!(
        whoami_es(&app, &bearer(&value)).await.0,
        401,
        "deleted at once"
    );
    let (status, found) = call(
        &app,
        Method::DELETE,
        &format!("{path}/token/token1"),
        Some(&admin()),
        None,
    )
    .await;
    assert_eq!((status, found), (404, json!({ "found": false })));

    let (status, body) = call(
        &app,
        Method::POST,
        "/_security/service/elastic/no-such/credential/token/t",
        Some(&admin()),
        None,
    )
    .await;
    let reason = es_error(status, &body, 400, "illegal_argument_exception");
    assert!(
        reason.contains("service account [elastic/no-such] does not exist"),
        "{reason}"
    );
    let (status, body) = call(
        &app,
        Method::POST,
        &format!("{path}/token/_hidden"),
        Some(&admin()),
        None,
    )
    .await;
    es_error(status, &body, 400, "action_request_validation_exception");
}

/// `elastic/fleet-server` may authenticate and manage its own API keys (as in
/// Elasticsearch: `monitor`, `manage_own_api_key`), and nothing else here.
#[tokio::test]
async fn fleet_server_creates_its_own_api_keys_and_nothing_more() {
    let app = spawn().await;
    let (_, created) = call(
        &app,
        Method::POST,
        "/_security/service/elastic/fleet-server/credential/token/fs",
        Some(&admin()),
        None,
    )
    .await;
    let fleet = bearer(created["token"]["value"].as_str().unwrap());

    let key = create_api_key(
        &app,
        &fleet,
        json!({ "name": "agent-42", "metadata": { "agent_id": "42" } }),
    )
    .await;

    let (status, me) = whoami_es(&app, &api_key(key["encoded"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    assert_eq!(me["username"], "elastic/fleet-server");
    let (status, own) = call(
        &app,
        Method::GET,
        "/_security/api_key?owner=true",
        Some(&fleet),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(own["api_keys"][0]["realm"], "_service_account");
    let (status, result) = call(
        &app,
        Method::DELETE,
        "/_security/api_key",
        Some(&fleet),
        Some(json!({ "owner": true, "name": "agent-42" })),
    )
    .await;
    assert_eq!(
        (status, result["invalidated_api_keys"].clone()),
        (200, json!([key["id"]]))
    );
    for (method, path, body) in [
        (
            Method::PUT,
            "/_security/user/x",
            Some(json!({ "password": "xxxxxx", "roles": [] })),
        ),
        (
            Method::POST,
            "/_security/oauth2/token",
            Some(json!({ "grant_type": "client_credentials" })),
        ),
        (
            Method::POST,
            "/_security/service/elastic/fleet-server/credential/token/another",
            None,
        ),
        (Method::GET, "/_security/api_key", None),
    ] {
        let (status, answer) = call(&app, method, path, Some(&fleet), body).await;
        es_error(status, &answer, 403, "security_exception");
    }
}

// ---- the authentication chain ----

/// SPEC §2's order, observably: a service token is decided by the service accounts, a
/// JWT by the token service, an API key by the API key service; Basic is a user's
/// password when such a user exists, else an API key. The Fleet API keeps working.
#[tokio::test]
async fn each_credential_is_resolved_by_its_stage_of_the_chain() {
    let app = spawn().await;
    let (_, created) = call(
        &app,
        Method::POST,
        "/_security/service/elastic/fleet-server/credential/token/chain",
        Some(&admin()),
        None,
    )
    .await;
    let service_token = created["token"]["value"].as_str().unwrap().to_string();
    let user_token = password_grant(&app, "elastic", ADMIN_PASSWORD).await;
    let es_key = create_api_key(&app, &admin(), json!({ "name": "chain" })).await;
    // (A username cannot start with `_`; a random key id may.)
    let mut agent_key = app.enroll("agent-chain").await;
    while agent_key.id.starts_with('_') {
        agent_key = app.enroll("agent-chain").await;
    }
    let agent_pair = app.pair_with_api_key(&agent_key).await;

    let expect = [
        (
            bearer(&service_token),
            "token",
            "_service_account",
            "elastic/fleet-server",
        ),
        (
            bearer(user_token["access_token"].as_str().unwrap()),
            "token",
            "reserved",
            "elastic",
        ),
        (
            bearer(&agent_pair.access_token),
            "token",
            "_fleetauth",
            "agent-chain",
        ),
        (
            api_key(es_key["encoded"].as_str().unwrap()),
            "api_key",
            "_es_api_key",
            "elastic",
        ),
        (
            api_key(&agent_key.encoded),
            "api_key",
            "_es_api_key",
            "agent-chain",
        ),
        (
            format!("Basic {}", agent_key.encoded),
            "api_key",
            "_es_api_key",
            "agent-chain",
        ),
        (admin(), "realm", "reserved", "elastic"),
    ];
    for (authorization, kind, realm, username) in &expect {
        let (status, me) = whoami_es(&app, authorization).await;
        assert_eq!(status, 200, "{authorization}: {me}");
        assert_eq!(
            (
                me["authentication_type"].as_str(),
                me["authentication_realm"]["name"].as_str(),
                me["username"].as_str()
            ),
            (Some(*kind), Some(*realm), Some(*username)),
            "{me}"
        );
    }
    // The agent's credentials still work at the Fleet API, Basic included.
    assert_eq!(
        app.whoami(&format!("Basic {}", agent_key.encoded))
            .await
            .status(),
        200
    );
    assert_eq!(app.whoami_status(&agent_pair.access_token).await, 200);
    // A user's or service account's credential is not an agent's.
    assert_eq!(app.whoami(&admin()).await.status(), 401);
    assert_eq!(app.whoami(&bearer(&service_token)).await.status(), 401);
    assert_eq!(
        app.whoami(&bearer(user_token["access_token"].as_str().unwrap()))
            .await
            .status(),
        401
    );
    // ... nor can a user's token or refresh token buy Fleet or OAuth2 tokens.
    assert_eq!(
        app.authenticate(&bearer(user_token["access_token"].as_str().unwrap()))
            .await
            .status(),
        401
    );
    assert_eq!(
        app.authenticate(&bearer(user_token["refresh_token"].as_str().unwrap()))
            .await
            .status(),
        401
    );

    // A value in the service-token format is decided by the service accounts only.
    let forged = STANDARD_NO_PAD.encode(b"\x00\x01\x00\x01elastic/fleet-server/chain:wrong-secret");
    let (status, body) = whoami_es(&app, &bearer(&forged)).await;
    es_error(status, &body, 401, "security_exception");

    // Basic: once a user with the key's id exists, Basic means that user's password.
    let key_id = agent_key.id.clone();
    put_user(&app, &key_id, "a-user-pw-1", &[]).await;
    assert_eq!(
        whoami_es(&app, &format!("Basic {}", agent_key.encoded))
            .await
            .0,
        401
    );
    let (status, me) = whoami_es(&app, &basic(&key_id, "a-user-pw-1")).await;
    assert_eq!(
        (status, me["authentication_type"].as_str()),
        (200, Some("realm"))
    );
    assert_eq!(
        whoami_es(&app, &api_key(&agent_key.encoded)).await.0,
        200,
        "ApiKey is unambiguous"
    );
}

// ---- bad input ----

/// Method, path, content type, body, expected status and error type.
type BadCase<'a> = (Method, &'a str, Option<&'a str>, String, u16, &'a str);

#[tokio::test]
async fn bad_input_gets_a_4xx_in_elasticsearchs_format() {
    let app = spawn().await;
    let send = |method: Method, path: &str, content_type: Option<&str>, body: &str| {
        let mut request = app
            .client
            .request(method, app.url(path))
            .header("Authorization", admin())
            .body(body.to_string());
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let json_type = Some("application/json");

    let cases: Vec<BadCase> = vec![
        (
            Method::POST,
            "/_security/api_key",
            json_type,
            "{not json".into(),
            400,
            "parse_exception",
        ),
        (
            Method::POST,
            "/_security/api_key",
            json_type,
            "[1, 2]".into(),
            400,
            "parse_exception",
        ),
        (
            Method::POST,
            "/_security/api_key",
            json_type,
            r#"{"name": 5}"#.into(),
            400,
            "parse_exception",
        ),
        (
            Method::POST,
            "/_security/api_key",
            json_type,
            r#"{"name": "k", "colour": "red"}"#.into(),
            400,
            "parse_exception",
        ),
        (
            Method::POST,
            "/_security/api_key",
            json_type,
            r#"{"expiration": "1d"}"#.into(),
            400,
            "action_request_validation_exception",
        ),
        (
            Method::POST,
            "/_security/api_key",
            json_type,
            r#"{"name": "_k"}"#.into(),
            400,
            "action_request_validation_exception",
        ),
        (
            Method::POST,
            "/_security/api_key",
            json_type,
            r#"{"name": "k", "expiration": "tomorrow"}"#.into(),
            400,
            "parse_exception",
        ),
        (
            Method::POST,
            "/_security/api_key",
            json_type,
            r#"{"name": "k", "role_descriptors": {"r": {"cluster": ["fly"]}}}"#.into(),
            400,
            "illegal_argument_exception",
        ),
        (
            Method::POST,
            "/_security/api_key",
            json_type,
            r#"{"name": "k", "role_descriptors": {"r": {"cluster": "all", "bogus": 1}}}"#.into(),
            400,
            "parse_exception",
        ),
        (
            Method::POST,
            "/_security/api_key",
            json_type,
            r#"{"name": "k", "metadata": [1]}"#.into(),
            400,
            "parse_exception",
        ),
        (
            Method::POST,
            "/_security/oauth2/token",
            json_type,
            r#"{"grant_type": "magic"}"#.into(),
            400,
            "action_request_validation_exception",
        ),
        (
            Method::POST,
            "/_security/oauth2/token",
            json_type,
            r#"{}"#.into(),
            400,
            "action_request_validation_exception",
        ),
        (
            Method::POST,
            "/_security/oauth2/token",
            json_type,
            r#"{"grant_type": "password", "username": "elastic"}"#.into(),
            400,
            "action_request_validation_exception",
        ),
        (
            Method::POST,
            "/_security/oauth2/token",
            json_type,
            r#"{"grant_type": "refresh_token", "refresh_token": "fr1.bogus"}"#.into(),
            400,
            "security_exception",
        ),
        (
            Method::POST,
            "/_security/oauth2/token",
            json_type,
            r#"{"grant_type": ["password"]}"#.into(),
            400,
            "parse_exception",
        ),
        (
            Method::PUT,
            "/_security/user/new",
            json_type,
            r#"{"password": "short", "roles": []}"#.into(),
            400,
            "action_request_validation_exception",
        ),
        (
            Method::PUT,
            "/_security/user/new",
            json_type,
            r#"{"roles": []}"#.into(),
            400,
            "action_request_validation_exception",
        ),
        (
            Method::PUT,
            "/_security/user/_bad",
            json_type,
            r#"{"password": "long-enough", "roles": []}"#.into(),
            400,
            "action_request_validation_exception",
        ),
        (
            Method::PUT,
            "/_security/user/new",
            json_type,
            r#"{"password": "long-enough", "roles": "superuser"}"#.into(),
            400,
            "parse_exception",
        ),
        (
            Method::PUT,
            "/_security/role/r",
            json_type,
            r#"{"cluster": ["all"], "indices": "everything"}"#.into(),
            400,
            "parse_exception",
        ),
        (
            Method::GET,
            "/_security/api_key?owner=maybe",
            None,
            String::new(),
            400,
            "illegal_argument_exception",
        ),
        (
            Method::GET,
            "/_security/api_key?colour=red",
            None,
            String::new(),
            400,
            "illegal_argument_exception",
        ),
        (
            Method::GET,
            "/_security/no/such/api",
            None,
            String::new(),
            400,
            "illegal_argument_exception",
        ),
    ];
    for (method, path, content_type, body, want_status, want_type) in cases {
        let (status, answer) = send(method.clone(), path, content_type, &body).await;
        es_error(status, &answer, want_status, want_type);
        assert!(status < 500, "{method} {path} {body}");
    }

    let (status, answer) = send(
        Method::POST,
        "/_security/api_key",
        Some("text/plain"),
        r#"{"name":"k"}"#,
    )
    .await;
    assert_eq!(status, 406, "{answer}");
    assert_eq!(
        answer["error"],
        "Content-Type header [text/plain] is not supported"
    );
    let huge = format!(r#"{{"name": "{}"}}"#, "k".repeat(200 * 1024));
    let (status, _) = send(Method::POST, "/_security/api_key", json_type, &huge).await;
    assert_eq!(status, 413);
    for garbage in ["AAEAAX!!", "AAEAAWVsYXN0aWM", "ft1.a.b.c", "eyJ.eyJ.x"] {
        let (status, body) = whoami_es(&app, &bearer(garbage)).await;
        es_error(status, &body, 401, "security_exception");
    }
}

// ---- bootstrap: the binary ----

/// Runs the CLI with no `FLEETAUTH_*` variable but `env`; returns (success, stdout, stderr).
fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = process::command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("fleetauth runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `fleetauth serve` on `data_dir` until the returned guard drops: its base URL and a
/// reader of what it printed to stderr so far.
struct Served {
    _process: process::Server,
    base: String,
    stderr: std::path::PathBuf,
}

impl Served {
    fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let stderr = data_dir.with_extension("stderr");
        let mut command = process::command();
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data_dir.to_str().unwrap(),
            ])
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let process = process::Server::try_started(command).unwrap_or_else(|e| {
            panic!(
                "{e}; stderr: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        Self {
            base: process.base.clone(),
            _process: process,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    async fn authenticate(&self, authorization: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{}/_security/_authenticate", self.base))
            .header("Authorization", authorization)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Without `FLEETAUTH_BOOTSTRAP_PASSWORD`, the process that creates the store (here the
/// CLI) generates `elastic`'s password and prints it once, to stderr; nothing prints it
/// again.
#[tokio::test]
async fn a_generated_password_is_printed_once_by_whoever_creates_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();

    let (ok, stdout, stderr) = run_cli(
        &[
            "api-key",
            "create",
            "--agent-id",
            "a1",
            "--data-dir",
            data_arg,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("generated password"))
        .unwrap_or_else(|| panic!("the password is printed: {stderr}"));
    let password = line.rsplit(": ").next().unwrap().trim().to_string();
    assert!(password.len() >= 24, "{line}");
    assert!(
        !stdout.contains(&password),
        "stdout stays the command's JSON"
    );
    serde_json::from_str::<Value>(&stdout).expect("JSON on stdout");

    let (ok, _, stderr) = run_cli(
        &[
            "api-key",
            "create",
            "--agent-id",
            "a2",
            "--data-dir",
            data_arg,
        ],
        &[],
    );
    assert!(ok);
    assert!(
        !stderr.contains(&password) && !stderr.contains("generated password"),
        "{stderr}"
    );
    let served = Served::start(
        &data,
        &[("FLEETAUTH_BOOTSTRAP_PASSWORD", "too-late-password")],
    );
    assert!(!served.stderr().contains(&password), "never printed again");
    assert_eq!(served.authenticate(&basic("elastic", &password)).await, 200);
    assert_eq!(
        served
            .authenticate(&basic("elastic", "too-late-password"))
            .await,
        401,
        "the variable counts only when the store is created"
    );
}

#[tokio::test]
async fn the_bootstrap_password_comes_from_the_environment_and_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let served = Served::start(
        &data,
        &[("FLEETAUTH_BOOTSTRAP_PASSWORD", "from-the-env-123")],
    );

    let stderr = served.stderr();
    assert!(!stderr.contains("from-the-env-123"), "{stderr}");
    assert!(!stderr.contains("generated password"), "{stderr}");
    assert!(
        stderr.contains("created the built-in superuser `elastic` with the password from FLEETAUTH_BOOTSTRAP_PASSWORD"),
        "says how to obtain the admin credential: {stderr}"
    );
    assert_eq!(
        served
            .authenticate(&basic("elastic", "from-the-env-123"))
            .await,
        200
    );
    drop(served);

    // A password Elasticsearch would refuse stops the start of a new store, naming why.
    let other = dir.path().join("other");
    let (ok, _, stderr) = run_cli(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            other.to_str().unwrap(),
        ],
        &[("FLEETAUTH_BOOTSTRAP_PASSWORD", "short")],
    );
    assert!(!ok);
    assert!(
        stderr.contains("FLEETAUTH_BOOTSTRAP_PASSWORD") && stderr.contains("at least [6]"),
        "{stderr}"
    );
    assert!(!stderr.contains("short\n"), "{stderr}");
}

// ---- answering as Elasticsearch (SPEC §7; elasticsearch_api.product_header) ----

#[tokio::test]
async fn the_family_answers_as_elasticsearch_with_the_product_header_and_info() {
    let app = spawn().await;
    let send = |method: Method, path: &str, headers: &[(&str, &str)]| {
        let mut request = app.client.request(method, app.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let product = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-elastic-product")
            .map(|v| v.to_str().unwrap().to_string())
    };

    // GET / without a credential: Elasticsearch's info shape, as the clients read it.
    let response = send(Method::GET, "/", &[]).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(product(&response).as_deref(), Some("Elasticsearch"));
    let info: Value = response.json().await.unwrap();
    for field in ["name", "cluster_name", "cluster_uuid", "tagline"] {
        assert!(info[field].is_string(), "{field}: {info}");
    }
    assert_eq!(info["tagline"], "You Know, for Search");
    assert_eq!(info["cluster_uuid"].as_str().unwrap().len(), 22);
    let version = &info["version"];
    assert_eq!(version["build_flavor"], "default");
    for field in [
        "number",
        "minimum_wire_compatibility_version",
        "minimum_index_compatibility_version",
    ] {
        assert!(version[field].is_string(), "{field}: {info}");
    }
    // The cluster UUID is stable: the deployment's.
    let again: Value = send(Method::GET, "/", &[])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["cluster_uuid"], info["cluster_uuid"]);
    // HEAD / is the clients' ping.
    let response = send(Method::HEAD, "/", &[]).await.unwrap();
    assert_eq!(response.status(), 200);

    // Successes and errors of the family carry the header; other families do not.
    let admin = admin();
    let response = send(
        Method::GET,
        "/_security/_authenticate",
        &[("Authorization", &admin)],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(product(&response).as_deref(), Some("Elasticsearch"));
    let response = send(Method::GET, "/_security/_authenticate", &[])
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(product(&response).as_deref(), Some("Elasticsearch"));
    let response = send(Method::GET, "/_security/nope", &[("Authorization", &admin)])
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(product(&response).as_deref(), Some("Elasticsearch"));
    // Answers of the HTTP layers too (a body over max_body_bytes).
    let response = app
        .client
        .post(app.url("/_security/api_key"))
        .header("Authorization", &admin)
        .header("Content-Type", "application/json")
        .body(vec![b' '; app.settings.max_body_bytes + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(product(&response).as_deref(), Some("Elasticsearch"));
    for path in ["/healthz", "/.well-known/jwks.json", "/v1/auth/jwt/config"] {
        let response = send(Method::GET, path, &[]).await.unwrap();
        assert_eq!(product(&response), None, "{path}");
    }
}

#[tokio::test]
async fn the_official_clients_compatible_with_media_types_are_accepted() {
    let app = spawn().await;
    for version in ["8", "9"] {
        let media_type = format!("application/vnd.elasticsearch+json; compatible-with={version}");
        let response = app
            .client
            .post(app.url("/_security/api_key"))
            .header("Authorization", admin())
            .header("Accept", &media_type)
            .header("Content-Type", &media_type)
            .body(json!({"name": format!("compat-{version}")}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "compatible-with={version}");
        assert_eq!(
            response.headers()["content-type"],
            format!("application/vnd.elasticsearch+json;compatible-with={version}")
        );
        let key: Value = response.json().await.unwrap();
        assert!(key["encoded"].is_string(), "{key}");
    }
    // A version this server does not speak: Elasticsearch's 400, in its error format.
    let response = app
        .client
        .get(app.url("/_security/_authenticate"))
        .header("Authorization", admin())
        .header(
            "Accept",
            "application/vnd.elasticsearch+json; compatible-with=6",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["type"], "media_type_header_exception",
        "{body}"
    );
    assert_eq!(body["status"], 400);
}

#[tokio::test]
async fn without_the_product_header_setting_the_family_does_not_claim_to_be_elasticsearch() {
    let app = spawn_app_with(|s| {
        s.bootstrap_password = Some(Secret::new(ADMIN_PASSWORD));
        s.es_product_header = false;
    })
    .await;
    let response = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = app
        .client
        .get(app.url("/_security/_authenticate"))
        .header("Authorization", admin())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-elastic-product").is_none());
}

/// The coarse "last used" time of an API key (Elasticsearch #54789): `last_used` in the
/// get API key answer, written at most once per key per `api_keys.last_used_interval`
/// (here 1 h on a manual clock), never once per request.
#[tokio::test]
async fn an_api_keys_last_use_is_shown_and_written_at_most_once_per_interval() {
    let app = spawn().await;
    let created = create_api_key(&app, &admin(), json!({ "name": "used" })).await;
    let id = created["id"].as_str().unwrap().to_string();
    let key = api_key(created["encoded"].as_str().unwrap());
    let get = || async {
        let (status, listed) = call(
            &app,
            Method::GET,
            &format!("/_security/api_key?id={id}"),
            Some(&admin()),
            None,
        )
        .await;
        assert_eq!(status, 200, "{listed}");
        listed["api_keys"][0]["last_used"].clone()
    };
    assert_eq!(get().await, Value::Null, "never used");

    let first_use = app.clock.now();
    assert_eq!(whoami_es(&app, &key).await.0, 200);
    // Written in the background, off the request.
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = get().await;
        if !shown.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(shown, json!(first_use * 1000));

    // Uses within the interval write nothing: the time stays that of the first use.
    app.clock.advance(1800);
    for _ in 0..5 {
        assert_eq!(whoami_es(&app, &key).await.0, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(get().await, json!(first_use * 1000));

    // Past the interval, the next use is written.
    app.clock.advance(1801);
    assert_eq!(whoami_es(&app, &key).await.0, 200);
    let later = (first_use + 3601) * 1000;
    for _ in 0..100 {
        if get().await == json!(later) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(get().await, json!(later));
    // A failed check is not a use.
    let wrong = api_key(&STANDARD.encode(format!("{id}:not-the-secret")));
    app.clock.advance(7200);
    assert_eq!(whoami_es(&app, &wrong).await.0, 401);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(get().await, json!(later));
}
