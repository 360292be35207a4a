//! No secret in logs (SPEC §4 "Operations", issue 12 item 9): the real binary serves at
//! `trace` level (`FLEETAUTH_LOG=trace`: every event of every crate that emits any:
//! ours, tower-http's request spans, axum's connection events) while one representative
//! flow runs through every kind of secret the server handles:
//! API keys (created by the CLI and by the API), refresh tokens, access tokens, client
//! secrets (Basic and form), passwords (the bootstrap one, a user's, a changed one,
//! wrong ones), service tokens, the Vault admin token, external JWTs and Vault client
//! tokens, and the server's own signing key. Every secret the test handled, in clear
//! and in its base64 forms, is then looked for in everything the server (and the CLI)
//! wrote to stdout and stderr.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use fleetauth::config::{Settings, SigningAlgorithm};
use fleetauth::tokens::SigningKey;
use serde_json::{json, Value};

use crate::common::process::{self, Server};
use crate::common::requests::{basic, compact_jws};

const PASSWORD: &str = "bootstrap-Pa55word-for-the-log-test";
const VAULT_ADMIN: &str = "vault-admin-token-for-the-log-test-0123";
const ISSUER: &str = "https://ci.example";

/// Every secret the test handled, by what it is.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: &str, secret: impl Into<String>) {
        let secret = secret.into();
        assert!(
            secret.len() >= 8,
            "{what} is too short to look for: {secret:?}"
        );
        self.0.push((what.to_string(), secret));
    }

    /// A JWT: the whole token, and its signature (what makes it usable).
    fn add_jwt(&mut self, what: &str, token: &str) {
        self.add(what, token);
        let signature = token.rsplit('.').next().unwrap();
        self.add(&format!("{what} (signature)"), signature);
    }

    /// A refresh token, and its 256-bit secret part.
    fn add_refresh(&mut self, what: &str, token: &str) {
        self.add(what, token);
        let secret = token.rsplit('.').next().unwrap();
        self.add(&format!("{what} (secret part)"), secret);
    }

    /// Each secret, in clear and in every base64 form.
    fn forms(&self) -> Vec<(String, String)> {
        let mut forms = Vec::new();
        for (what, secret) in &self.0 {
            forms.push((what.clone(), secret.clone()));
            for (name, encoded) in [
                ("base64", STANDARD.encode(secret)),
                ("base64 unpadded", STANDARD_NO_PAD.encode(secret)),
                ("base64url", URL_SAFE.encode(secret)),
                ("base64url unpadded", URL_SAFE_NO_PAD.encode(secret)),
            ] {
                forms.push((format!("{what} ({name})"), encoded));
            }
        }
        forms
    }
}

/// Output captured from a child process, as it is written.
type Captured = Arc<Mutex<Vec<u8>>>;

fn capture(mut from: impl Read + Send + 'static) -> (Captured, JoinHandle<()>) {
    let captured: Captured = Arc::default();
    let sink = captured.clone();
    let thread = std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&buffer[..n]),
            }
        }
    });
    (captured, thread)
}

fn command(data_dir: &Path) -> Command {
    let mut command = process::command();
    command
        .env_remove("RUST_LOG")
        .env("FLEETAUTH_LOG", "trace")
        .env("FLEETAUTH_BOOTSTRAP_PASSWORD", PASSWORD)
        .env("FLEETAUTH_VAULT__ADMIN_TOKEN", VAULT_ADMIN)
        .env("FLEETAUTH_DATA_DIR", data_dir);
    command
}

/// `fleetauth serve` at trace level, its stdout and stderr captured.
struct TracedServer {
    process: Server,
    base: String,
    stdout: (Captured, JoinHandle<()>),
    stderr: (Captured, JoinHandle<()>),
}

impl TracedServer {
    fn start(data_dir: &Path) -> Self {
        let mut child = command(data_dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        // Read from the start: a full pipe would stop the server before it listens.
        let stderr = capture(child.stderr.take().unwrap());
        let mut process = Server::from_child(child);
        let stdout = capture(process.take_stdout());
        let line = format!("{}\n", process.started);
        stdout.0.lock().unwrap().extend_from_slice(line.as_bytes());
        Self {
            base: process.base.clone(),
            process,
            stdout,
            stderr,
        }
    }

    /// Stops the server and returns everything it wrote.
    fn stop(mut self) -> String {
        self.process.kill_9();
        let mut all = Vec::new();
        for (captured, thread) in [self.stdout, self.stderr] {
            thread.join().unwrap();
            all.extend_from_slice(&captured.lock().unwrap());
        }
        without_ansi_escapes(&String::from_utf8_lossy(&all))
    }
}

/// The text without terminal colour codes (`ESC [ ... m`), which could otherwise sit
/// between the characters looked for.
fn without_ansi_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

struct Flow<'a> {
    client: reqwest::Client,
    base: &'a str,
}

impl Flow<'_> {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.put(format!("{}{path}", self.base))
    }

    /// A write of the Vault API: 204, or 200 with warnings.
    async fn vault_write(&self, path: &str, body: Value) {
        let (status, answer) = self
            .send(
                self.post(path)
                    .header("X-Vault-Token", VAULT_ADMIN)
                    .json(&body),
            )
            .await;
        assert!(status == 204 || status == 200, "{path}: {status} {answer}");
    }

    async fn ok(&self, request: reqwest::RequestBuilder) -> Value {
        let (status, body) = self.send(request).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An external issuer's Ed25519 key: (PEM public key, private key).
fn external_key() -> (String, SigningKey, Vec<u8>) {
    let record = SigningKey::generate(SigningAlgorithm::EdDSA, 0).expect("key");
    let key = SigningKey::from_record(&record).expect("key");
    let public = Ed25519KeyPair::from_pkcs8(&record.private_der)
        .unwrap()
        .public_key()
        .as_der()
        .unwrap()
        .as_ref()
        .to_vec();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(public)
    );
    (pem, key, record.private_der)
}

fn external_jwt(key: &SigningKey, claims: &Value) -> String {
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid});
    compact_jws(&header, claims, |input| key.sign(input))
}

#[tokio::test]
async fn no_secret_reaches_the_servers_output_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let mut secrets = Secrets::default();
    secrets.add("bootstrap password", PASSWORD);
    secrets.add("vault admin token", VAULT_ADMIN);

    // An agent's API key, from the CLI (which creates the store).
    let cli = command(dir.path())
        .args(["api-key", "create", "--agent-id", "log-agent"])
        .output()
        .expect("CLI runs");
    assert!(cli.status.success());
    let mut output = String::from_utf8_lossy(&cli.stderr).into_owned();
    let key: Value = serde_json::from_slice(&cli.stdout).expect("JSON on stdout");
    let (key_id, api_key) = (
        key["id"].as_str().unwrap(),
        key["api_key"].as_str().unwrap(),
    );
    let encoded = key["encoded"].as_str().unwrap();
    secrets.add("agent API key", api_key);
    secrets.add("agent API key (encoded)", encoded);

    let server = TracedServer::start(dir.path());
    let flow = Flow {
        client: reqwest::Client::new(),
        base: &server.base,
    };

    // Fleet: API key -> pair; refresh by header and by body; whoami; a retired refresh
    // token presented again (reuse detection: logged and counted).
    let first = flow
        .ok(flow
            .post("/api/fleet/authenticate")
            .header("Authorization", format!("ApiKey {encoded}")))
        .await;
    let second = flow
        .ok(flow
            .post("/api/fleet/authenticate")
            .bearer_auth(first["refresh_token"].as_str().unwrap()))
        .await;
    let third = flow
        .ok(flow
            .post("/api/fleet/authenticate")
            .json(&json!({ "refresh_token": second["refresh_token"] })))
        .await;
    flow.ok(flow
        .get("/api/fleet/whoami")
        .bearer_auth(third["access_token"].as_str().unwrap()))
        .await;
    let (reused, _) = flow
        .send(
            flow.post("/api/fleet/authenticate")
                .bearer_auth(first["refresh_token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(reused, 401);
    for (name, pair) in [("first", &first), ("second", &second), ("third", &third)] {
        secrets.add_jwt(
            &format!("{name} access token"),
            pair["access_token"].as_str().unwrap(),
        );
        secrets.add_refresh(
            &format!("{name} refresh token"),
            pair["refresh_token"].as_str().unwrap(),
        );
    }
    // Wrong secrets are secrets too (a typo of the real one, often).
    let wrong_key = format!("{api_key}-typo");
    let (status, _) = flow
        .send(flow.post("/api/fleet/authenticate").header(
            "Authorization",
            format!(
                "ApiKey {}",
                STANDARD.encode(format!("{key_id}:{wrong_key}"))
            ),
        ))
        .await;
    assert_eq!(status, 401);
    secrets.add("wrong API key", wrong_key);
    // A body that does not parse, around a refresh token.
    let cut = format!(
        "{{\"refresh_token\": \"{}",
        third["refresh_token"].as_str().unwrap()
    );
    let (status, _) = flow
        .send(
            flow.post("/api/fleet/authenticate")
                .header("Content-Type", "application/json")
                .body(cut),
        )
        .await;
    assert_eq!(status, 400);

    // OAuth2: client_credentials by Basic and by form (client_secret_post), refresh,
    // token exchange, introspection and revocation.
    let by_basic = flow
        .ok(flow
            .post("/oauth/token")
            .header("Authorization", basic(key_id, api_key))
            .form(&[("grant_type", "client_credentials")]))
        .await;
    let by_form = flow
        .ok(flow.post("/oauth/token").form(&[
            ("grant_type", "client_credentials"),
            ("client_id", key_id),
            ("client_secret", api_key),
        ]))
        .await;
    let refreshed = flow
        .ok(flow.post("/oauth/token").form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", by_form["refresh_token"].as_str().unwrap()),
        ]))
        .await;
    let exchanged = flow
        .ok(flow.post("/oauth/token").form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", refreshed["access_token"].as_str().unwrap()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
        ]))
        .await;
    let introspected = flow
        .ok(flow
            .post("/oauth/introspect")
            .header("Authorization", basic(key_id, api_key))
            .form(&[("token", exchanged["access_token"].as_str().unwrap())]))
        .await;
    assert_eq!(introspected["active"], true);
    flow.ok(flow
        .post("/oauth/revoke")
        .header("Authorization", basic(key_id, api_key))
        .form(&[("token", exchanged["refresh_token"].as_str().unwrap())]))
        .await;
    for (name, body) in [
        ("oauth basic", &by_basic),
        ("oauth form", &by_form),
        ("oauth refreshed", &refreshed),
        ("oauth exchanged", &exchanged),
    ] {
        secrets.add_jwt(
            &format!("{name} access token"),
            body["access_token"].as_str().unwrap(),
        );
        if let Some(refresh) = body["refresh_token"].as_str() {
            secrets.add_refresh(&format!("{name} refresh token"), refresh);
        }
    }

    // Elasticsearch-compatible APIs: elastic's password, a wrong one, the token API
    // (password and refresh grants), an API key, a service token, a user and its
    // password change.
    let elastic = basic("elastic", PASSWORD);
    flow.ok(flow
        .get("/_security/_authenticate")
        .header("Authorization", &elastic))
        .await;
    let wrong_password = format!("{PASSWORD}-wrong");
    let (status, _) = flow
        .send(
            flow.get("/_security/_authenticate")
                .header("Authorization", basic("elastic", &wrong_password)),
        )
        .await;
    assert_eq!(status, 401);
    secrets.add("wrong password", wrong_password);
    let es_token = flow
        .ok(flow
            .post("/_security/oauth2/token")
            .header("Authorization", &elastic)
            .json(&json!({"grant_type": "password", "username": "elastic", "password": PASSWORD})))
        .await;
    let es_refreshed = flow
        .ok(flow
            .post("/_security/oauth2/token")
            .header("Authorization", &elastic)
            .json(
                &json!({"grant_type": "refresh_token", "refresh_token": es_token["refresh_token"]}),
            ))
        .await;
    flow.ok(flow
        .get("/_security/_authenticate")
        .bearer_auth(es_refreshed["access_token"].as_str().unwrap()))
        .await;
    for (name, body) in [
        ("token API", &es_token),
        ("token API refreshed", &es_refreshed),
    ] {
        secrets.add_jwt(
            &format!("{name} access token"),
            body["access_token"].as_str().unwrap(),
        );
        secrets.add_refresh(
            &format!("{name} refresh token"),
            body["refresh_token"].as_str().unwrap(),
        );
    }
    let es_key = flow
        .ok(flow
            .post("/_security/api_key")
            .header("Authorization", &elastic)
            .json(&json!({"name": "log-key", "role_descriptors": {"r": {"cluster": ["monitor"]}}})))
        .await;
    secrets.add(
        "API key (security API)",
        es_key["api_key"].as_str().unwrap(),
    );
    secrets.add(
        "API key (security API, encoded)",
        es_key["encoded"].as_str().unwrap(),
    );
    flow.ok(flow.get("/_security/_authenticate").header(
        "Authorization",
        format!("ApiKey {}", es_key["encoded"].as_str().unwrap()),
    ))
    .await;
    let service = flow
        .ok(flow
            .post("/_security/service/elastic/fleet-server/credential/token/log-token")
            .header("Authorization", &elastic))
        .await;
    let service_token = service["token"]["value"].as_str().unwrap();
    secrets.add("service token", service_token);
    flow.ok(flow
        .get("/_security/_authenticate")
        .bearer_auth(service_token))
        .await;
    let user_password = "user-Pa55word-for-the-log-test";
    let changed_password = "changed-Pa55word-for-the-log-test";
    secrets.add("user password", user_password);
    secrets.add("changed password", changed_password);
    flow.ok(flow
        .put("/_security/user/log-user")
        .header("Authorization", &elastic)
        .json(&json!({"password": user_password, "roles": ["superuser"]})))
        .await;
    flow.ok(flow
        .get("/_security/_authenticate")
        .header("Authorization", basic("log-user", user_password)))
        .await;
    flow.ok(flow
        .post("/_security/user/log-user/_password")
        .header("Authorization", &elastic)
        .json(&json!({"password": changed_password})))
        .await;
    flow.ok(flow
        .get("/_security/_authenticate")
        .header("Authorization", basic("log-user", changed_password)))
        .await;

    // Vault-compatible JWT auth: config and role by the admin token, a login with an
    // external JWT, the client token used, and a token exchange of the external JWT.
    let (pem, external, external_private) = external_key();
    secrets.add(
        "external issuer's private key (DER, base64)",
        STANDARD.encode(&external_private),
    );
    flow.vault_write(
        "/v1/auth/jwt/config",
        json!({"jwt_validation_pubkeys": [pem], "bound_issuer": ISSUER}),
    )
    .await;
    flow.vault_write(
        "/v1/auth/jwt/role/ci",
        json!({"role_type": "jwt", "bound_audiences": "fleet", "user_claim": "sub", "ttl": "10m"}),
    )
    .await;
    let now = now();
    let external_token = external_jwt(
        &external,
        &json!({"iss": ISSUER, "sub": "repo:org/app", "aud": "fleet", "iat": now, "exp": now + 300}),
    );
    secrets.add_jwt("external JWT", &external_token);
    let login = flow
        .ok(flow
            .post("/v1/auth/jwt/login")
            .json(&json!({"role": "ci", "jwt": external_token})))
        .await;
    let client_token = login["auth"]["client_token"].as_str().unwrap();
    secrets.add_jwt("Vault client token", client_token);
    flow.ok(flow
        .get("/v1/auth/token/lookup-self")
        .header("X-Vault-Token", client_token))
        .await;
    let external_exchanged = flow
        .ok(flow.post("/oauth/token").form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", external_token.as_str()),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("audience", "ci"),
        ]))
        .await;
    secrets.add_jwt(
        "exchanged external JWT",
        external_exchanged["access_token"].as_str().unwrap(),
    );

    output.push_str(&server.stop());

    // The server's own signing keys, from its store.
    let mut settings = Settings::for_data_dir(dir.path());
    settings.bootstrap_password = None;
    let (store, _) = fleetauth::startup::open_store(&settings)
        .await
        .expect("store");
    let keys = store.signing_keys(0).await.expect("signing keys");
    assert!(!keys.is_empty());
    for key in &keys {
        secrets.add(
            "server signing key (DER, base64)",
            STANDARD.encode(&key.private_der),
        );
    }

    // The output is real trace-level output, not nothing: every request was logged.
    assert!(
        output.contains("TRACE"),
        "no trace-level events were captured"
    );
    for path in [
        "/api/fleet/authenticate",
        "/oauth/token",
        "/_security/oauth2/token",
        "/v1/auth/jwt/login",
    ] {
        assert!(output.contains(path), "no event names {path}");
    }
    assert!(
        output.len() > 5_000,
        "suspiciously little output: {} bytes",
        output.len()
    );
    let leaks: Vec<String> = secrets
        .forms()
        .into_iter()
        .filter(|(_, form)| output.contains(form.as_str()))
        .map(|(what, _)| what)
        .collect();
    assert!(
        leaks.is_empty(),
        "secrets in the server's output ({} bytes): {leaks:?}",
        output.len()
    );
}
