//! The Vault-compatible JWT auth method over HTTP, as Vault clients see it: admin-only
//! config and roles in Vault's shapes, logins with external JWTs signed by the test's
//! own keys (PEM keys, or a JWKS served by an OIDC provider that the test runs on
//! loopback, with key rotation), every binding refused when it does not match,
//! `num_uses` and `ttl` enforced, token exchange of external JWTs, and bad input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use fleetauth::clock::Clock;
use fleetauth::config::{Secret, SigningAlgorithm};
use fleetauth::store::SigningKeyRecord;
use fleetauth::tokens::SigningKey;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::requests::compact_jws;
use crate::helpers::{basic, jwt_parts, metric_value, spawn_app, spawn_app_with, TestApp};

const ADMIN: &str = "admin-token-0123456789";
const ISSUER: &str = "https://ci.example";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Extra form parameters of a token exchange.
type Form = Vec<(&'static str, String)>;

// ---- the test's own signing keys ----

/// A key pair of the test's external issuer.
struct ExternalKey {
    record: SigningKeyRecord,
    key: SigningKey,
}

impl ExternalKey {
    fn generate(algorithm: SigningAlgorithm) -> Self {
        let record = SigningKey::generate(algorithm, 0).expect("key");
        let key = SigningKey::from_record(&record).expect("key");
        Self { record, key }
    }

    fn alg(&self) -> &'static str {
        self.key.algorithm.as_str()
    }

    fn kid(&self) -> &str {
        &self.key.kid
    }

    /// The public key as a PEM SubjectPublicKeyInfo.
    fn pem(&self) -> String {
        let der = &self.record.private_der;
        let spki = match self.key.algorithm {
            SigningAlgorithm::RS256 => RsaKeyPair::from_pkcs8(der)
                .unwrap()
                .public_key()
                .as_der()
                .unwrap()
                .as_ref()
                .to_vec(),
            SigningAlgorithm::ES256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .unwrap()
                    .public_key()
                    .as_der()
                    .unwrap()
                    .as_ref()
                    .to_vec()
            }
            SigningAlgorithm::EdDSA => Ed25519KeyPair::from_pkcs8(der)
                .unwrap()
                .public_key()
                .as_der()
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        let body = STANDARD.encode(spki);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// The public JWK (with `kid`, `alg`, `use`).
    fn jwk(&self) -> Value {
        serde_json::to_value(&self.key.jwk).unwrap()
    }

    /// A JWT with this key's `alg` and `kid`.
    fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid()}),
            claims,
        )
    }

    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        compact_jws(header, claims, |input| self.key.sign(input))
    }
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    compact_jws(&json!({"alg": "HS256", "typ": "JWT"}), claims, |input| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(input);
        mac.finalize().into_bytes().to_vec()
    })
}

// ---- the test's own OIDC provider (the real protocol, over loopback HTTP) ----

#[derive(Clone)]
struct ProviderState {
    issuer: String,
    keys: Arc<Mutex<Vec<Value>>>,
    discovery_hits: Arc<AtomicUsize>,
    jwks_hits: Arc<AtomicUsize>,
}

struct Provider {
    state: ProviderState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Provider {
    async fn start(keys: &[&ExternalKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = ProviderState {
            issuer,
            keys: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk()).collect())),
            discovery_hits: Arc::default(),
            jwks_hits: Arc::default(),
        };
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<ProviderState>| async move {
                    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
                    Json(json!({
                        "issuer": s.issuer,
                        "jwks_uri": format!("{}/keys", s.issuer),
                        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
                    }))
                }),
            )
            .route(
                "/keys",
                get(|State(s): State<ProviderState>| async move {
                    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
                    let keys = s.keys.lock().unwrap().clone();
                    Json(json!({ "keys": keys }))
                }),
            )
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { state, task }
    }

    fn issuer(&self) -> &str {
        &self.state.issuer
    }

    fn serve(&self, keys: &[&ExternalKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }
}

// ---- talking to the server ----

async fn admin_app() -> TestApp {
    spawn_app_with(|s| s.vault.admin_token = Some(Secret::new(ADMIN))).await
}

/// A request to the Vault API: status and JSON body (`Null` when empty).
async fn vault(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.header("X-Vault-Token", token);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "{path} {status}"
    );
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    if status >= 400 {
        assert!(body["errors"].is_array(), "Vault error shape: {body}");
        assert!(status < 500, "{path}: {status} {body}");
    }
    (status, body)
}

async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    vault(app, method, path, Some(ADMIN), body).await
}

/// A write that must succeed (204, or 200 with warnings).
async fn write(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, answer) = admin(app, "POST", path, Some(body)).await;
    assert!(status == 204 || status == 200, "{path}: {status} {answer}");
    answer
}

async fn login(app: &TestApp, role: &str, jwt: &str) -> (u16, Value) {
    vault(
        app,
        "POST",
        "/v1/auth/jwt/login",
        None,
        Some(json!({"role": role, "jwt": jwt})),
    )
    .await
}

/// A login that must succeed; returns `auth`.
async fn logged_in(app: &TestApp, role: &str, jwt: &str) -> Value {
    let (status, body) = login(app, role, jwt).await;
    assert_eq!(status, 200, "{body}");
    body["auth"].clone()
}

/// The first error of a refused login, after checking its status.
async fn refused(app: &TestApp, role: &str, jwt: &str, status: u16) -> String {
    let (got, body) = login(app, role, jwt).await;
    assert_eq!(got, status, "{body}");
    body["errors"][0].as_str().unwrap().to_string()
}

async fn lookup_self(app: &TestApp, token: &str) -> (u16, Value) {
    vault(app, "GET", "/v1/auth/token/lookup-self", Some(token), None).await
}

async fn introspect(app: &TestApp, token: &str) -> Value {
    let caller = app.client_key("resource-server").await;
    let response = app
        .post_form(
            "/oauth/introspect",
            Some(&basic(&caller)),
            &[("token", token)],
        )
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Claims of a CI job's token, valid now by the app's clock.
fn ci_claims(app: &TestApp) -> Value {
    let now = app.clock.now();
    json!({
        "iss": ISSUER,
        "sub": "repo:org/app:ref:main",
        "aud": ["fleet", "other"],
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "repo": "org/app",
        "env": "prod",
        "groups": ["builders", "", "deployers"],
    })
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

/// Config with PEM keys and a role `ci`.
async fn pem_setup(app: &TestApp, keys: &[&ExternalKey]) {
    let pems: Vec<String> = keys.iter().map(|k| k.pem()).collect();
    write(
        app,
        "/v1/auth/jwt/config",
        json!({"jwt_validation_pubkeys": pems, "bound_issuer": ISSUER}),
    )
    .await;
    write(
        app,
        "/v1/auth/jwt/role/ci",
        json!({
            "role_type": "jwt",
            "bound_audiences": "fleet",
            "user_claim": "sub",
            "bound_claims": {"repo": ["org/app", "org/lib"]},
            "claim_mappings": {"repo": "repository"},
            "groups_claim": "groups",
            "token_policies": ["deploy", "read"],
            "ttl": "10m",
        }),
    )
    .await;
}

// ---- config and roles ----

#[tokio::test]
async fn the_elastic_superuser_administers_the_auth_method_and_an_agent_key_does_not() {
    let password = "elastic-password-for-vault";
    let app = spawn_app_with(|s| s.bootstrap_password = Some(Secret::new(password))).await;
    let agent_key = app.enroll("vault-agent").await;
    let pem = ExternalKey::generate(SigningAlgorithm::EdDSA).pem();
    let config = json!({"jwt_validation_pubkeys": [pem]});
    let elastic = format!("Basic {}", STANDARD.encode(format!("elastic:{password}")));
    let wrong = format!("Basic {}", STANDARD.encode("elastic:not-the-password"));

    let post = |authorization: String| {
        app.client
            .post(app.url("/v1/auth/jwt/config"))
            .header("Authorization", authorization)
            .json(&config)
            .send()
    };

    assert_eq!(post(elastic.clone()).await.unwrap().status(), 204);
    for refused in [format!("ApiKey {}", agent_key.encoded), wrong] {
        let response = post(refused).await.unwrap();
        assert_eq!(response.status(), 403);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"errors": ["permission denied"]}));
    }
    let response = app
        .client
        .get(app.url("/v1/auth/jwt/config"))
        .header("Authorization", elastic)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // As every Vault client sends it: an access token of elastic (token API) in
    // X-Vault-Token administers; an agent's access token there does not.
    let response = app
        .client
        .post(app.url("/_security/oauth2/token"))
        .basic_auth("elastic", Some(password))
        .json(&json!({"grant_type": "password", "username": "elastic", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let elastic_token = response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = vault(
        &app,
        "GET",
        "/v1/auth/jwt/config",
        Some(&elastic_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = vault(
        &app,
        "POST",
        "/v1/auth/jwt/role/by-token",
        Some(&elastic_token),
        Some(json!({"role_type": "jwt", "bound_audiences": "a", "user_claim": "sub"})),
    )
    .await;
    assert_eq!(status, 204);
    let agent_token = app
        .pair(&format!("ApiKey {}", agent_key.encoded))
        .await
        .access_token;
    let (status, body) = vault(&app, "GET", "/v1/auth/jwt/config", Some(&agent_token), None).await;
    assert_eq!(
        (status, body),
        (403, json!({"errors": ["permission denied"]}))
    );
    let (status, _) = vault(&app, "GET", "/v1/auth/jwt/config", Some("garbage"), None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn an_oidc_role_is_stored_and_shown_but_cannot_log_in() {
    let app = admin_app().await;
    let key = ExternalKey::generate(SigningAlgorithm::ES256);
    pem_setup(&app, &[&key]).await;
    let fields = json!({
        "role_type": "oidc",
        "user_claim": "sub",
        "bound_audiences": "fleet",
        "allowed_redirect_uris": ["http://localhost:8250/oidc/callback"],
        "oidc_scopes": ["profile"],
        "verbose_oidc_logging": true,
        "max_age": "10m",
        "token_type": "default-service",
    });
    write(&app, "/v1/auth/jwt/role/browser", fields).await;
    let (status, body) = admin(&app, "GET", "/v1/auth/jwt/role/browser", None).await;
    assert_eq!(status, 200);
    let data = &body["data"];
    assert_eq!(data["role_type"], "oidc");
    assert_eq!(
        data["allowed_redirect_uris"],
        json!(["http://localhost:8250/oidc/callback"])
    );
    assert_eq!(data["oidc_scopes"], json!(["profile"]));
    assert_eq!(data["verbose_oidc_logging"], true);
    assert_eq!(data["max_age"], 600);
    assert_eq!(data["token_type"], "default-service");
    let jwt = key.sign(&ci_claims(&app));
    let error = refused(&app, "browser", &jwt, 400).await;
    assert!(error.contains("oidc role_type is not allowed"), "{error}");
    // The same JWT logs in through a jwt role.
    logged_in(&app, "ci", &jwt).await;
}

#[tokio::test]
async fn config_and_role_apis_are_admin_only() {
    // No admin token configured and no admin credential presented: nobody may.
    let app = spawn_app().await;
    for (method, path) in [
        ("POST", "/v1/auth/jwt/config"),
        ("GET", "/v1/auth/jwt/config"),
        ("POST", "/v1/auth/jwt/role/ci"),
        ("GET", "/v1/auth/jwt/role/ci"),
        ("LIST", "/v1/auth/jwt/role"),
    ] {
        let (status, body) = vault(&app, method, path, Some(ADMIN), Some(json!({}))).await;
        assert_eq!(status, 403, "{method} {path}");
        assert_eq!(body, json!({"errors": ["permission denied"]}));
    }

    let app = admin_app().await;
    let pem = ExternalKey::generate(SigningAlgorithm::EdDSA).pem();
    let config = json!({"jwt_validation_pubkeys": [pem]});
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let (status, _) = vault(
            &app,
            "POST",
            "/v1/auth/jwt/config",
            token,
            Some(config.clone()),
        )
        .await;
        assert_eq!(status, 403, "{token:?}");
        let (status, _) = vault(&app, "DELETE", "/v1/auth/jwt/role/ci", token, None).await;
        assert_eq!(status, 403);
    }
    // The admin token as X-Vault-Token, or as a Bearer token.
    let (status, _) = admin(&app, "POST", "/v1/auth/jwt/config", Some(config)).await;
    assert_eq!(status, 204);
    let response = app
        .client
        .get(app.url("/v1/auth/jwt/config"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn config_and_roles_are_read_listed_and_deleted_in_vaults_shapes() {
    let app = admin_app().await;
    let key = ExternalKey::generate(SigningAlgorithm::RS256);
    // Unconfigured: 404 with no errors, as Vault answers an absent entry.
    assert_eq!(
        admin(&app, "GET", "/v1/auth/jwt/config", None).await,
        (404, json!({"errors": []}))
    );
    write(
        &app,
        "/v1/auth/jwt/config",
        json!({
            "jwt_validation_pubkeys": [key.pem()],
            "bound_issuer": ISSUER,
            "jwt_supported_algs": "RS256,ES256",
            "default_role": "CI",
        }),
    )
    .await;
    let (status, body) = admin(&app, "GET", "/v1/auth/jwt/config", None).await;
    assert_eq!(status, 200);
    let data = &body["data"];
    assert_eq!(data["bound_issuer"], ISSUER);
    assert_eq!(data["jwt_supported_algs"], json!(["RS256", "ES256"]));
    assert_eq!(data["default_role"], "ci");
    assert_eq!(data["jwt_validation_pubkeys"][0], key.pem());
    assert_eq!(data["oidc_discovery_url"], "");

    write(
        &app,
        "/v1/auth/jwt/role/CI",
        json!({
            "role_type": "jwt",
            "bound_audiences": ["fleet"],
            "user_claim": "sub",
            "bound_subject": "repo:org/app",
            "bound_cidrs": "127.0.0.1, 10.0.0.0/8",
            "groups_claim": "groups",
            "policies": "deploy,Read",
            "ttl": "10m",
            "max_ttl": 1800,
            "num_uses": 3,
            "clock_skew_leeway": "-1",
        }),
    )
    .await;
    // A second write changes only what it names.
    write(&app, "/v1/auth/jwt/role/ci", json!({"token_ttl": "5m"})).await;
    let (status, body) = admin(&app, "GET", "/v1/auth/jwt/role/ci", None).await;
    assert_eq!(status, 200);
    let role = &body["data"];
    assert_eq!(role["role_type"], "jwt");
    assert_eq!(role["bound_audiences"], json!(["fleet"]));
    assert_eq!(role["user_claim"], "sub");
    assert_eq!(role["bound_subject"], "repo:org/app");
    assert_eq!(
        role["token_bound_cidrs"],
        json!(["127.0.0.1/32", "10.0.0.0/8"])
    );
    assert_eq!(role["token_policies"], json!(["deploy", "read"]));
    assert_eq!(role["policies"], role["token_policies"]);
    assert_eq!(
        (role["token_ttl"].as_u64(), role["ttl"].as_u64()),
        (Some(300), Some(300))
    );
    assert_eq!(role["token_max_ttl"], 1800);
    assert_eq!(role["token_num_uses"], 3);
    assert_eq!(role["clock_skew_leeway"], -1);
    assert_eq!(role["expiration_leeway"], 150);

    write(
        &app,
        "/v1/auth/jwt/role/ops",
        json!({"bound_audiences": "ops", "user_claim": "email"}),
    )
    .await;
    let expected = json!({"keys": ["ci", "ops"]});
    let (status, body) = admin(&app, "LIST", "/v1/auth/jwt/role", None).await;
    assert_eq!((status, &body["data"]), (200, &expected));
    let (status, body) = admin(&app, "GET", "/v1/auth/jwt/role?list=true", None).await;
    assert_eq!((status, &body["data"]), (200, &expected));
    let (status, body) = admin(&app, "LIST", "/v1/auth/jwt/role/", None).await;
    assert_eq!((status, &body["data"]), (200, &expected));

    assert_eq!(
        admin(&app, "DELETE", "/v1/auth/jwt/role/ops", None).await.0,
        204
    );
    assert_eq!(
        admin(&app, "DELETE", "/v1/auth/jwt/role/ops", None).await.0,
        204
    );
    assert_eq!(
        admin(&app, "GET", "/v1/auth/jwt/role/ops", None).await,
        (404, json!({"errors": []}))
    );
    assert_eq!(
        admin(&app, "DELETE", "/v1/auth/jwt/role/ci", None).await.0,
        204
    );
    assert_eq!(admin(&app, "LIST", "/v1/auth/jwt/role", None).await.0, 404);

    // Unknown parameters are ignored with a warning, as Vault does.
    let body = write(
        &app,
        "/v1/auth/jwt/role/w",
        json!({"bound_audiences": "a", "user_claim": "sub", "colour": "blue"}),
    )
    .await;
    assert!(
        body["warnings"][0].as_str().unwrap().contains("colour"),
        "{body}"
    );
}

#[tokio::test]
async fn role_and_config_writes_are_validated_with_clear_errors() {
    let app = admin_app().await;
    let valid = json!({"bound_audiences": "fleet", "user_claim": "sub"});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no audiences",
            json!({"user_claim": "sub"}),
            "bound_audiences",
        ),
        (
            "no user claim",
            json!({"bound_audiences": "a"}),
            "user claim",
        ),
        (
            "ttl over max_ttl",
            with(valid.clone(), json!({"ttl": "2h", "max_ttl": "1h"})),
            "max ttl",
        ),
        (
            "bad cidr",
            with(valid.clone(), json!({"bound_cidrs": ["10.0.0.0/33"]})),
            "10.0.0.0/33",
        ),
        (
            "bad cidr text",
            with(valid.clone(), json!({"token_bound_cidrs": "localhost"})),
            "localhost",
        ),
        (
            "bad duration",
            with(valid.clone(), json!({"ttl": "soon"})),
            "\"ttl\"",
        ),
        (
            "negative ttl",
            with(valid.clone(), json!({"token_ttl": -5})),
            "\"token_ttl\"",
        ),
        (
            "negative uses",
            with(valid.clone(), json!({"num_uses": -1})),
            "num_uses",
        ),
        (
            "period over the server max",
            with(valid.clone(), json!({"period": "2h"})),
            "period",
        ),
        (
            "oidc role",
            with(valid.clone(), json!({"role_type": "oidc"})),
            "oidc",
        ),
        (
            "bad role type",
            with(valid.clone(), json!({"role_type": "saml"})),
            "role_type",
        ),
        (
            "alias and name",
            with(valid.clone(), json!({"ttl": 60, "token_ttl": 60})),
            "both",
        ),
        (
            "reserved metadata",
            with(valid.clone(), json!({"claim_mappings": {"x": "role"}})),
            "reserved",
        ),
        (
            "bad policy",
            with(valid.clone(), json!({"policies": ["a b"]})),
            "policy",
        ),
        (
            "bad claims type",
            with(valid.clone(), json!({"bound_claims_type": "regex"})),
            "bound_claims_type",
        ),
        (
            "bad token type",
            with(valid.clone(), json!({"token_type": "forever"})),
            "token_type",
        ),
    ];
    for (case, body, expect) in cases {
        let (status, answer) = admin(&app, "POST", "/v1/auth/jwt/role/r", Some(body)).await;
        assert_eq!(status, 400, "{case}: {answer}");
        let error = answer["errors"][0].as_str().unwrap();
        assert!(error.contains(expect), "{case}: {error}");
    }
    let (status, answer) = admin(
        &app,
        "POST",
        "/v1/auth/jwt/role/bad%20name",
        Some(valid.clone()),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    // Lifetimes beyond the server's cap are accepted with a warning (they get cut).
    let body = write(
        &app,
        "/v1/auth/jwt/role/long",
        with(valid, json!({"max_ttl": "5h"})),
    )
    .await;
    assert!(body["warnings"][0]
        .as_str()
        .unwrap()
        .contains("jwt.max_access_ttl"));

    let pem = ExternalKey::generate(SigningAlgorithm::ES256).pem();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no key source",
            json!({"bound_issuer": ISSUER}),
            "exactly one",
        ),
        (
            "two key sources",
            json!({"jwt_validation_pubkeys": [pem.clone()], "oidc_discovery_url": "https://idp.example"}),
            "exactly one",
        ),
        (
            "not a key",
            json!({"jwt_validation_pubkeys": ["hello"]}),
            "public key",
        ),
        (
            "a private key",
            json!({"jwt_validation_pubkeys": ["-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----"]}),
            "private key",
        ),
        (
            "hmac",
            json!({"jwt_validation_pubkeys": [pem.clone()], "jwt_supported_algs": ["HS256"]}),
            "HS256",
        ),
        (
            "none",
            json!({"jwt_validation_pubkeys": [pem.clone()], "jwt_supported_algs": "none"}),
            "none",
        ),
        (
            "bad url",
            json!({"oidc_discovery_url": "ftp://idp"}),
            "oidc_discovery_url",
        ),
        (
            "unreachable provider",
            json!({"oidc_discovery_url": closed}),
            "error checking oidc discovery URL",
        ),
        (
            "bad CA",
            json!({"oidc_discovery_url": "https://idp.example", "oidc_discovery_ca_pem": "nope"}),
            "oidc_discovery_ca_pem",
        ),
    ];
    for (case, body, expect) in cases {
        let (status, answer) = admin(&app, "POST", "/v1/auth/jwt/config", Some(body)).await;
        assert_eq!(status, 400, "{case}: {answer}");
        let error = answer["errors"][0].as_str().unwrap();
        assert!(error.contains(expect), "{case}: {error}");
    }
}

// ---- logins ----

#[tokio::test]
async fn a_login_with_an_external_jwt_gives_an_access_token_of_this_server() {
    let app = admin_app().await;
    let rsa = ExternalKey::generate(SigningAlgorithm::RS256);
    let ed = ExternalKey::generate(SigningAlgorithm::EdDSA);
    pem_setup(&app, &[&rsa, &ed]).await;
    let before = app.metrics().await;

    let auth = logged_in(&app, "ci", &rsa.sign(&ci_claims(&app))).await;

    let client_token = auth["client_token"].as_str().unwrap();
    let (header, claims) = jwt_parts(client_token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], app.signing_key().await.kid.as_str());
    assert_eq!(claims["sub"], "repo:org/app:ref:main");
    assert_eq!(claims["client_id"], "auth/jwt/role/ci");
    assert_eq!(claims["vault_role"], "ci");
    assert_eq!(claims["scope"], "default deploy read");
    assert_eq!(claims["groups"], json!(["builders", "deployers"]));
    assert!(claims.get("max_uses").is_none());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    assert_eq!(auth["accessor"], claims["jti"]);
    assert_eq!(auth["policies"], json!(["default", "deploy", "read"]));
    assert_eq!(auth["token_policies"], auth["policies"]);
    assert_eq!(
        auth["metadata"],
        json!({"role": "ci", "repository": "org/app"})
    );
    assert_eq!(auth["lease_duration"], 600);
    assert_eq!(auth["renewable"], false);
    let series = r#"fleetauth_tokens_issued_total{endpoint="vault",grant="jwt_login",credential="external_jwt",kind="access"}"#;
    assert!(metric_value(&app.metrics().await, series) >= metric_value(&before, series) + 1.0);

    // Accepted where our access tokens are accepted for non-agent subjects.
    let introspected = introspect(&app, client_token).await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["sub"], "repo:org/app:ref:main");
    assert_eq!(introspected["client_id"], "auth/jwt/role/ci");
    assert_eq!(introspected["vault_role"], "ci");
    // It cannot be revoked alone (it expires with its exp), by anyone.
    let caller = app.client_key("someone").await;
    let response = app
        .post_form(
            "/oauth/revoke",
            Some(&basic(&caller)),
            &[("token", client_token)],
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_token_type");
    let (status, body) = lookup_self(&app, client_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["policies"],
        json!(["default", "deploy", "read"])
    );
    assert_eq!(body["data"]["meta"], json!({"role": "ci"}));
    assert_eq!(body["data"]["path"], "auth/jwt/login");
    assert_eq!(body["data"]["ttl"], 600);
    // Not an agent: the Fleet API says so, and will not trade it for an agent's pair.
    assert_eq!(app.whoami_status(client_token).await, 401);
    assert_eq!(
        app.authenticate(&format!("Bearer {client_token}"))
            .await
            .status(),
        401
    );
    // Nor can it be exchanged for a longer-lived token: log in again.
    let response = app
        .post_form(
            "/oauth/token",
            None,
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", client_token),
                ("subject_token_type", JWT_TOKEN_TYPE),
            ],
        )
        .await;
    assert_eq!(response.status(), 400);

    // An external subject named like an enrolled agent is still not that agent.
    let agent_key = app.enroll("agent-7").await;
    let agent_pair = app.pair_with_api_key(&agent_key).await;
    let auth = logged_in(
        &app,
        "ci",
        &rsa.sign(&with(ci_claims(&app), json!({"sub": "agent-7"}))),
    )
    .await;
    let lookalike = auth["client_token"].as_str().unwrap();
    assert_eq!(jwt_parts(lookalike).1["sub"], "agent-7");
    assert_eq!(app.whoami_status(lookalike).await, 401);
    assert_eq!(
        app.authenticate(&format!("Bearer {lookalike}"))
            .await
            .status(),
        401
    );
    assert_eq!(introspect(&app, lookalike).await["vault_role"], "ci");
    // ...and the agent's own tokens are untouched by it.
    assert_eq!(app.whoami_status(&agent_pair.access_token).await, 200);
    assert_eq!(app.refresh(&agent_pair.refresh_token).await.status(), 200);

    // Another algorithm, another configured key; a role without the `default` policy.
    write(
        &app,
        "/v1/auth/jwt/role/ci",
        json!({"token_no_default_policy": true}),
    )
    .await;
    let auth = logged_in(&app, "ci", &ed.sign(&ci_claims(&app))).await;
    assert_eq!(auth["policies"], json!(["deploy", "read"]));
    // A token without kid is tried against every configured key.
    let no_kid = rsa.sign_with_header(&json!({"alg": "RS256", "typ": "JWT"}), &ci_claims(&app));
    logged_in(&app, "CI", &no_kid).await;
}

#[tokio::test]
async fn every_binding_and_every_bad_token_is_refused() {
    let app = admin_app().await;
    let rsa = ExternalKey::generate(SigningAlgorithm::RS256);
    let ec = ExternalKey::generate(SigningAlgorithm::ES256);
    pem_setup(&app, &[&rsa, &ec]).await;
    write(
        &app,
        "/v1/auth/jwt/role/pinned",
        json!({
            "bound_audiences": "fleet", "user_claim": "sub", "bound_subject": "repo:org/other",
        }),
    )
    .await;
    let good = ci_claims(&app);
    let now = app.clock.now();
    logged_in(&app, "ci", &rsa.sign(&good)).await;
    logged_in(&app, "ci", &ec.sign(&good)).await;

    let stranger = ExternalKey::generate(SigningAlgorithm::RS256);
    let mut tampered = rsa.sign(&good);
    let payload =
        URL_SAFE_NO_PAD.encode(with(good.clone(), json!({"repo": "org/lib"})).to_string());
    let parts: Vec<&str> = tampered.split('.').collect();
    tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "issuer",
            "ci",
            rsa.sign(&with(good.clone(), json!({"iss": "https://evil.example"}))),
            "issuer",
        ),
        (
            "no issuer",
            "ci",
            rsa.sign(&with(good.clone(), json!({"iss": null}))),
            "issuer",
        ),
        (
            "audience",
            "ci",
            rsa.sign(&with(good.clone(), json!({"aud": "other"}))),
            "aud",
        ),
        (
            "no audience",
            "ci",
            rsa.sign(&with(good.clone(), json!({"aud": null}))),
            "aud",
        ),
        ("subject", "pinned", rsa.sign(&good), "subject"),
        (
            "bound claim",
            "ci",
            rsa.sign(&with(good.clone(), json!({"repo": "org/evil"}))),
            "repo",
        ),
        (
            "bound claim missing",
            "ci",
            rsa.sign(&with(good.clone(), json!({"repo": null}))),
            "repo",
        ),
        (
            "groups claim missing",
            "ci",
            rsa.sign(&with(good.clone(), json!({"groups": null}))),
            "groups",
        ),
        (
            "user claim missing",
            "ci",
            rsa.sign(&with(good.clone(), json!({"sub": null}))),
            "sub",
        ),
        (
            "user claim not a string",
            "ci",
            rsa.sign(&with(good.clone(), json!({"sub": 42}))),
            "sub",
        ),
        (
            "expired",
            "ci",
            rsa.sign(&with(
                good.clone(),
                json!({"exp": now - 3600, "iat": now - 7200, "nbf": null}),
            )),
            "expired",
        ),
        (
            "not yet valid",
            "ci",
            rsa.sign(&with(
                good.clone(),
                json!({"nbf": now + 3600, "exp": now + 7200}),
            )),
            "not yet valid",
        ),
        (
            "issued in the future",
            "ci",
            rsa.sign(&with(
                good.clone(),
                json!({"iat": now + 3600, "nbf": null, "exp": now + 7200}),
            )),
            "future",
        ),
        (
            "no time claims",
            "ci",
            rsa.sign(&with(
                good.clone(),
                json!({"iat": null, "nbf": null, "exp": null}),
            )),
            "exp",
        ),
        ("unknown key", "ci", stranger.sign(&good), "signature"),
        ("tampered", "ci", tampered, "signature"),
        (
            "alg none",
            "ci",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(good.to_string())
            ),
            "well-formed",
        ),
        (
            "HS256 with a guessed secret",
            "ci",
            hs256(b"secret", &good),
            "algorithm",
        ),
        (
            "HS256 keyed with the public key",
            "ci",
            hs256(rsa.pem().as_bytes(), &good),
            "algorithm",
        ),
        (
            "RS256 header on an EC signature",
            "ci",
            ec.sign_with_header(&json!({"alg": "RS256", "typ": "JWT"}), &good),
            "signature",
        ),
        ("garbage", "ci", "not-a-jwt".into(), "well-formed"),
        ("three garbage parts", "ci", "a.b.c".into(), "well-formed"),
        ("empty", "ci", String::new(), "missing token"),
        (
            "unknown role",
            "nope",
            rsa.sign(&good),
            "could not be found",
        ),
        ("no role", "", rsa.sign(&good), "missing role"),
        ("invalid role name", "../x", rsa.sign(&good), "role name"),
    ];
    for (case, role, jwt, expect) in cases {
        let error = refused(&app, role, &jwt, 400).await;
        assert!(error.contains(expect), "{case}: {error}");
    }

    // Algorithms outside jwt_supported_algs are refused even with a valid signature.
    write(
        &app,
        "/v1/auth/jwt/config",
        json!({
            "jwt_validation_pubkeys": [rsa.pem(), ec.pem()], "bound_issuer": ISSUER,
            "jwt_supported_algs": ["RS256"],
        }),
    )
    .await;
    let error = refused(&app, "ci", &ec.sign(&good), 400).await;
    assert!(error.contains("ES256 is not allowed"), "{error}");
    logged_in(&app, "ci", &rsa.sign(&good)).await;

    // bound_cidrs: the caller (127.0.0.1) must be inside one of the role's networks.
    write(
        &app,
        "/v1/auth/jwt/role/ci",
        json!({"bound_cidrs": ["10.0.0.0/8", "192.168.0.0/16"]}),
    )
    .await;
    let (status, body) = login(&app, "ci", &rsa.sign(&good)).await;
    assert_eq!(
        (status, body),
        (403, json!({"errors": ["permission denied"]}))
    );
    write(
        &app,
        "/v1/auth/jwt/role/ci",
        json!({"bound_cidrs": "10.0.0.0/8,127.0.0.0/8"}),
    )
    .await;
    logged_in(&app, "ci", &rsa.sign(&good)).await;
    write(
        &app,
        "/v1/auth/jwt/role/ci",
        json!({"bound_cidrs": "127.0.0.1"}),
    )
    .await;
    logged_in(&app, "ci", &rsa.sign(&good)).await;
}

#[tokio::test]
async fn leeways_follow_the_role() {
    let app = admin_app().await;
    let rsa = ExternalKey::generate(SigningAlgorithm::RS256);
    pem_setup(&app, &[&rsa]).await;
    let now = app.clock.now();
    // Expired 100 s ago: inside the default leeways (150 s + 60 s of clock skew).
    let recently_expired = rsa.sign(&with(
        ci_claims(&app),
        json!({"exp": now - 100, "nbf": null, "iat": now - 400}),
    ));
    logged_in(&app, "ci", &recently_expired).await;
    // With leeways disabled (-1) it is refused.
    write(
        &app,
        "/v1/auth/jwt/role/ci",
        json!({
            "clock_skew_leeway": -1, "expiration_leeway": "-1", "not_before_leeway": -1,
        }),
    )
    .await;
    let error = refused(&app, "ci", &recently_expired, 400).await;
    assert!(error.contains("expired"), "{error}");
    let soon = rsa.sign(&with(
        ci_claims(&app),
        json!({"nbf": now + 30, "iat": null}),
    ));
    assert!(refused(&app, "ci", &soon, 400)
        .await
        .contains("not yet valid"));
    write(
        &app,
        "/v1/auth/jwt/role/ci",
        json!({"not_before_leeway": 60}),
    )
    .await;
    logged_in(&app, "ci", &soon).await;
}

// ---- OIDC discovery ----

#[tokio::test]
async fn oidc_discovery_keys_rotate_with_a_bounded_refresh() {
    let app = admin_app().await;
    let first = ExternalKey::generate(SigningAlgorithm::RS256);
    let second = ExternalKey::generate(SigningAlgorithm::ES256);
    let provider = Provider::start(&[&first]).await;
    write(
        &app,
        "/v1/auth/jwt/config",
        json!({
            "oidc_discovery_url": provider.issuer(),
            "bound_issuer": provider.issuer(),
        }),
    )
    .await;
    // The config write checked the provider: one discovery, one JWKS.
    assert_eq!((provider.discovery_hits(), provider.jwks_hits()), (1, 1));
    write(
        &app,
        "/v1/auth/jwt/role/ci",
        json!({"bound_audiences": "fleet", "user_claim": "sub"}),
    )
    .await;
    let claims = |app: &TestApp| with(ci_claims(app), json!({"iss": provider.issuer()}));

    logged_in(&app, "ci", &first.sign(&claims(&app))).await;
    assert_eq!(provider.jwks_hits(), 1, "known keys are cached");

    // The provider rotates to a new key. Right after a fetch, a token of the new key
    // is refused without asking the provider; so is a flood of unknown kids.
    provider.serve(&[&second]);
    let error = refused(&app, "ci", &second.sign(&claims(&app)), 400).await;
    assert!(error.contains("kid"), "{error}");
    for i in 0..25 {
        let forged = second.sign_with_header(
            &json!({"alg": "ES256", "typ": "JWT", "kid": format!("unknown-{i}")}),
            &claims(&app),
        );
        refused(&app, "ci", &forged, 400).await;
    }
    assert_eq!(
        provider.jwks_hits(),
        1,
        "unknown kids must not hammer the provider"
    );

    // Once the refresh interval (vault.jwks_min_refresh_interval) has passed, the next
    // unknown kid fetches the JWKS once, and the new key logs in.
    let interval = app.settings.vault.jwks_min_refresh_interval.as_secs() as i64;
    app.clock.advance(interval + 1);
    let auth = logged_in(&app, "ci", &second.sign(&claims(&app))).await;
    assert_eq!(provider.jwks_hits(), 2);
    assert!(auth["client_token"].as_str().is_some());
    // The removed key no longer verifies, and asking again does not fetch again.
    let error = refused(&app, "ci", &first.sign(&claims(&app)), 400).await;
    assert!(error.contains("kid"), "{error}");
    assert_eq!(provider.jwks_hits(), 2);
    // A token without kid is checked against the provider's keys of its algorithm.
    let no_kid = second.sign_with_header(&json!({"alg": "ES256", "typ": "JWT"}), &claims(&app));
    logged_in(&app, "ci", &no_kid).await;
    assert_eq!(provider.discovery_hits(), 1);

    // The bound issuer still applies to tokens the provider's keys verify.
    let error = refused(&app, "ci", &second.sign(&ci_claims(&app)), 400).await;
    assert!(error.contains("issuer"), "{error}");
}

#[tokio::test]
async fn a_discovery_document_for_another_issuer_is_refused() {
    let app = admin_app().await;
    let key = ExternalKey::generate(SigningAlgorithm::EdDSA);
    let provider = Provider::start(&[&key]).await;
    // The same provider under another name: its discovery document names another issuer.
    let alias = provider.issuer().replace("127.0.0.1", "localhost");
    let (status, body) = admin(
        &app,
        "POST",
        "/v1/auth/jwt/config",
        Some(json!({"oidc_discovery_url": alias})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0].as_str().unwrap().contains("issuer"),
        "{body}"
    );
    // An empty JWKS is refused too.
    provider.serve(&[]);
    let (status, body) = admin(
        &app,
        "POST",
        "/v1/auth/jwt/config",
        Some(json!({"oidc_discovery_url": provider.issuer()})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("no usable signing key"),
        "{body}"
    );
}

// ---- num_uses and ttl ----

#[tokio::test]
async fn num_uses_limits_how_often_the_token_may_be_used() {
    let app = admin_app().await;
    let rsa = ExternalKey::generate(SigningAlgorithm::RS256);
    pem_setup(&app, &[&rsa]).await;
    write(&app, "/v1/auth/jwt/role/ci", json!({"num_uses": 2})).await;

    let auth = logged_in(&app, "ci", &rsa.sign(&ci_claims(&app))).await;
    assert_eq!(auth["num_uses"], 2);
    let token = auth["client_token"].as_str().unwrap();
    assert_eq!(jwt_parts(token).1["max_uses"], 2);

    // Each authenticated request is a use; introspection (a look) is not.
    let (status, body) = lookup_self(&app, token).await;
    assert_eq!((status, &body["data"]["num_uses"]), (200, &json!(1)));
    assert_eq!(introspect(&app, token).await["active"], true);
    let (status, body) = lookup_self(&app, token).await;
    assert_eq!((status, &body["data"]["num_uses"]), (200, &json!(0)));
    // The third use is refused, and the token is no longer active.
    assert_eq!(
        lookup_self(&app, token).await,
        (403, json!({"errors": ["permission denied"]}))
    );
    assert_eq!(introspect(&app, token).await, json!({"active": false}));

    // Any resource that authenticates the token counts a use, even one that then
    // refuses it (whoami is for agents only), as Vault counts a use before policy.
    write(&app, "/v1/auth/jwt/role/ci", json!({"num_uses": 1})).await;
    let auth = logged_in(&app, "ci", &rsa.sign(&ci_claims(&app))).await;
    let token = auth["client_token"].as_str().unwrap();
    assert_eq!(app.whoami_status(token).await, 401);
    assert_eq!(lookup_self(&app, token).await.0, 403);

    // Concurrent uses never exceed the limit.
    write(&app, "/v1/auth/jwt/role/ci", json!({"num_uses": 5})).await;
    let auth = logged_in(&app, "ci", &rsa.sign(&ci_claims(&app))).await;
    let token = auth["client_token"].as_str().unwrap().to_string();
    let uses = futures::future::join_all((0..12).map(|_| {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/v1/auth/token/lookup-self"),
            token.clone(),
        );
        async move {
            client
                .get(url)
                .header("X-Vault-Token", token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    }))
    .await;
    assert_eq!(uses.iter().filter(|s| **s == 200).count(), 5, "{uses:?}");
    assert_eq!(uses.iter().filter(|s| **s == 403).count(), 7, "{uses:?}");

    // Without num_uses, a token may be used any number of times.
    write(&app, "/v1/auth/jwt/role/ci", json!({"num_uses": 0})).await;
    let auth = logged_in(&app, "ci", &rsa.sign(&ci_claims(&app))).await;
    let token = auth["client_token"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(lookup_self(&app, token).await.0, 200);
    }
}

#[tokio::test]
async fn ttl_max_ttl_and_period_set_the_lifetime_within_the_server_cap() {
    let app = admin_app().await;
    let rsa = ExternalKey::generate(SigningAlgorithm::RS256);
    pem_setup(&app, &[&rsa]).await;
    let lifetime = |auth: &Value| {
        let (_, claims) = jwt_parts(auth["client_token"].as_str().unwrap());
        let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert_eq!(auth["lease_duration"].as_i64(), Some(lifetime));
        lifetime
    };

    write(&app, "/v1/auth/jwt/role/ci", json!({"ttl": 300})).await;
    let auth = logged_in(&app, "ci", &rsa.sign(&ci_claims(&app))).await;
    assert_eq!(lifetime(&auth), 300);
    let token = auth["client_token"].as_str().unwrap().to_string();
    // ttl 0: the server's jwt.access_ttl (20 minutes); max_ttl caps it.
    write(
        &app,
        "/v1/auth/jwt/role/ci",
        json!({"ttl": 0, "max_ttl": "15m"}),
    )
    .await;
    assert_eq!(
        lifetime(&logged_in(&app, "ci", &rsa.sign(&ci_claims(&app))).await),
        900
    );
    write(&app, "/v1/auth/jwt/role/ci", json!({"max_ttl": 0})).await;
    assert_eq!(
        lifetime(&logged_in(&app, "ci", &rsa.sign(&ci_claims(&app))).await),
        1200
    );
    // Beyond the server's jwt.max_access_ttl (1 hour): cut to it.
    write(&app, "/v1/auth/jwt/role/ci", json!({"ttl": "3h"})).await;
    assert_eq!(
        lifetime(&logged_in(&app, "ci", &rsa.sign(&ci_claims(&app))).await),
        3600
    );
    // A periodic role: the token lives one period (it is not renewable).
    write(
        &app,
        "/v1/auth/jwt/role/ci",
        json!({"ttl": "5m", "period": "45m"}),
    )
    .await;
    assert_eq!(
        lifetime(&logged_in(&app, "ci", &rsa.sign(&ci_claims(&app))).await),
        2700
    );

    // The first token (ttl 300) works until its exp (plus the server's leeway)...
    assert_eq!(lookup_self(&app, &token).await.0, 200);
    app.clock.advance(290);
    assert_eq!(lookup_self(&app, &token).await.0, 200);
    // ...and not after.
    let leeway = app.settings.jwt.leeway.as_secs() as i64;
    app.clock.advance(10 + leeway + 1);
    assert_eq!(lookup_self(&app, &token).await.0, 403);
    assert_eq!(introspect(&app, &token).await, json!({"active": false}));
}

// ---- token exchange ----

#[tokio::test]
async fn token_exchange_accepts_external_jwts_through_the_same_checks() {
    let app = admin_app().await;
    let rsa = ExternalKey::generate(SigningAlgorithm::RS256);
    pem_setup(&app, &[&rsa]).await;
    write(
        &app,
        "/v1/auth/jwt/config",
        json!({
            "jwt_validation_pubkeys": [rsa.pem()], "bound_issuer": ISSUER, "default_role": "ci",
        }),
    )
    .await;
    write(
        &app,
        "/v1/auth/jwt/role/ops",
        json!({
            "bound_audiences": "other", "user_claim": "repo", "ttl": "2m", "policies": "ops",
        }),
    )
    .await;
    write(
        &app,
        "/v1/auth/jwt/role/far",
        json!({
            "bound_audiences": "fleet", "user_claim": "sub", "bound_cidrs": "10.0.0.0/8",
        }),
    )
    .await;
    let external = rsa.sign(&ci_claims(&app));
    let exchange = |extra: Form| {
        let app = &app;
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE.to_string()),
            ("subject_token_type", JWT_TOKEN_TYPE.to_string()),
        ];
        form.extend(extra);
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let response = app.post_form("/oauth/token", None, &form).await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    // The default role.
    let (status, body) = exchange(vec![("subject_token", external.clone())]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["scope"], "default deploy read");
    assert!(body.get("refresh_token").is_none());
    let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap());
    assert_eq!(
        (claims["sub"].as_str(), claims["vault_role"].as_str()),
        (Some("repo:org/app:ref:main"), Some("ci"))
    );
    assert_eq!(
        introspect(&app, body["access_token"].as_str().unwrap()).await["active"],
        true
    );
    // An authenticated client may exchange too; the token is still the subject's,
    // obtained through the role.
    let client = app.client_key("exchanger").await;
    let response = app
        .post_form(
            "/oauth/token",
            Some(&basic(&client)),
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &external),
                ("subject_token_type", JWT_TOKEN_TYPE),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap());
    assert_eq!(claims["client_id"], "auth/jwt/role/ci");

    // `audience` names the role; a narrower scope may be asked for, not a wider one.
    let (status, body) = exchange(vec![
        ("subject_token", external.clone()),
        ("audience", "ops".into()),
        ("scope", "ops".into()),
    ])
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap());
    assert_eq!(
        (claims["sub"].as_str(), claims["vault_role"].as_str()),
        (Some("org/app"), Some("ops"))
    );
    assert_eq!(
        (body["expires_in"].as_u64(), body["scope"].as_str()),
        (Some(120), Some("ops"))
    );
    let (status, body) = exchange(vec![
        ("subject_token", external.clone()),
        ("audience", "ops".into()),
        ("scope", "deploy".into()),
    ])
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );

    // The same checks as a login, refused the RFC 8693 way.
    let now = app.clock.now();
    let cases: Vec<(&str, Form, &str)> = vec![
        (
            "no such role",
            vec![
                ("subject_token", external.clone()),
                ("audience", "nope".into()),
            ],
            "invalid_target",
        ),
        (
            "expired",
            vec![(
                "subject_token",
                rsa.sign(&with(
                    ci_claims(&app),
                    json!({"exp": now - 3600, "iat": now - 7200, "nbf": null}),
                )),
            )],
            "invalid_request",
        ),
        (
            "wrong audience claim",
            vec![(
                "subject_token",
                rsa.sign(&with(ci_claims(&app), json!({"aud": "x"}))),
            )],
            "invalid_request",
        ),
        (
            "caller outside bound_cidrs",
            vec![
                ("subject_token", external.clone()),
                ("audience", "far".into()),
            ],
            "invalid_request",
        ),
        (
            "unknown key",
            vec![(
                "subject_token",
                ExternalKey::generate(SigningAlgorithm::EdDSA).sign(&ci_claims(&app)),
            )],
            "invalid_request",
        ),
        (
            "hs256",
            vec![("subject_token", hs256(b"secret", &ci_claims(&app)))],
            "invalid_request",
        ),
    ];
    for (case, extra, code) in cases {
        let (status, body) = exchange(extra).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{case}: {body}"
        );
    }
    // Without a default role, the role must be named.
    write(
        &app,
        "/v1/auth/jwt/config",
        json!({"jwt_validation_pubkeys": [rsa.pem()], "bound_issuer": ISSUER}),
    )
    .await;
    let (status, body) = exchange(vec![("subject_token", external)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("audience"),
        "{body}"
    );
}

#[tokio::test]
async fn without_config_external_jwts_are_not_accepted() {
    let app = admin_app().await;
    let rsa = ExternalKey::generate(SigningAlgorithm::RS256);
    let error = refused(&app, "ci", &rsa.sign(&ci_claims(&app)), 400).await;
    assert_eq!(error, "could not load configuration");
    let response = app
        .post_form(
            "/oauth/token",
            None,
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &rsa.sign(&ci_claims(&app))),
                ("subject_token_type", JWT_TOKEN_TYPE),
            ],
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

// ---- bad input ----

#[tokio::test]
async fn bad_input_gets_a_vault_4xx_never_a_5xx() {
    let app = admin_app().await;
    let rsa = ExternalKey::generate(SigningAlgorithm::RS256);
    pem_setup(&app, &[&rsa]).await;
    let raw = |method: &'static str, path: &'static str, body: &'static [u8]| {
        let app = &app;
        async move {
            let response = app
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    app.url(path),
                )
                .header("X-Vault-Token", ADMIN)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("a JSON error");
            (status, body)
        }
    };
    for (method, path, body, status) in [
        ("POST", "/v1/auth/jwt/login", &b"{not json"[..], 400),
        ("POST", "/v1/auth/jwt/login", b"[1, 2]", 400),
        ("POST", "/v1/auth/jwt/login", b"\"jwt\"", 400),
        (
            "POST",
            "/v1/auth/jwt/login",
            b"{\"role\": 5, \"jwt\": \"x\"}",
            400,
        ),
        (
            "POST",
            "/v1/auth/jwt/login",
            b"{\"role\": \"ci\", \"jwt\": {}}",
            400,
        ),
        ("POST", "/v1/auth/jwt/login", b"{\"role\": \"ci\"}", 400),
        ("POST", "/v1/auth/jwt/login", b"", 400),
        ("POST", "/v1/auth/jwt/login", b"\xff\xfe", 400),
        (
            "POST",
            "/v1/auth/jwt/login",
            b"{\"role\":\"ci\",\"jwt\":\"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.AAAA\"}",
            400,
        ),
        (
            "POST",
            "/v1/auth/jwt/login",
            b"{\"role\":\"ci\",\"jwt\":\"e30.e30.e30\"}",
            400,
        ),
        (
            "POST",
            "/v1/auth/jwt/config",
            b"{\"jwt_validation_pubkeys\": 5}",
            400,
        ),
        ("POST", "/v1/auth/jwt/config", b"{not json", 400),
        ("POST", "/v1/auth/jwt/role/ci", b"{\"ttl\": [1]}", 400),
        (
            "POST",
            "/v1/auth/jwt/role/ci",
            b"{\"bound_claims\": \"x\"}",
            400,
        ),
        (
            "POST",
            "/v1/auth/jwt/role/ci",
            b"{\"bound_claims\": {\"a\": {\"b\": 1}}}",
            400,
        ),
        ("GET", "/v1/auth/jwt/login", b"", 405),
        ("LIST", "/v1/auth/jwt/config", b"", 405),
        ("PATCH", "/v1/auth/jwt/role/ci", b"{}", 405),
        ("GET", "/v1/auth/jwt/role", b"", 405),
        ("DELETE", "/v1/auth/token/lookup-self", b"", 405),
        ("GET", "/v1/auth/nope", b"", 404),
        ("GET", "/v1/sys/health", b"", 404),
        ("GET", "/v1", b"", 404),
    ] {
        let (got, answer) = raw(method, path, body).await;
        assert_eq!(
            got,
            status,
            "{method} {path} {:?}: {answer}",
            String::from_utf8_lossy(body)
        );
        assert!(answer["errors"].is_array(), "{answer}");
    }
    // A token that is not ours at lookup-self: permission denied.
    for token in ["garbage", "a.b.c", &rsa.sign(&ci_claims(&app))] {
        assert_eq!(lookup_self(&app, token).await.0, 403);
    }
    let response = app
        .client
        .get(app.url("/v1/auth/token/lookup-self"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // Oversized bodies: 413 (from the server's body limit, as for every API family; the
    // client may see the connection closed while it is still sending).
    let huge = json!({"role": "ci", "jwt": "x".repeat(app.settings.max_body_bytes + 1)});
    let response = app
        .client
        .post(app.url("/v1/auth/jwt/login"))
        .body(huge.to_string())
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
    }
    // The server still answers.
    logged_in(&app, "ci", &rsa.sign(&ci_claims(&app))).await;
}
