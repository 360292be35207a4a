//! `spawn_app()`: a real fleetauth server on an ephemeral loopback port, with its own
//! SQLite store in a temporary directory and a clock the test can move. Tests talk to
//! it over HTTP, as a client would. `spawn_app_for(settings, ..)` starts one on any
//! store (several servers may share one). The requests and answers every crate uses
//! (a pair, a JWT's parts, a metric) are `crate::common::requests`, re-exported here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use fleetauth::agents;
use fleetauth::api_keys::CreatedApiKey;
use fleetauth::clock::ManualClock;
use fleetauth::config::Settings;
use fleetauth::startup::Application;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::common::requests;
pub use crate::common::requests::{jwt_parts, metric_value, pair_from, Pair};

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub settings: Settings,
    app_services: fleetauth::startup::Services,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<Arc<tempfile::TempDir>>,
}

/// The settings every test server starts from: the defaults on a data dir, with a
/// long argon2 queue wait. The suite runs its many servers at once on a few shared
/// cores, where one argon2 verification can take far longer than in production; the
/// bounded wait itself is tested by `throttling`, which sets it.
pub fn test_settings(data_dir: &Path) -> Settings {
    let mut settings = crate::real_es::settings_for(data_dir);
    settings.credential_checks.max_queue_wait = std::time::Duration::from_secs(10);
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut settings = test_settings(dir.path());
    configure(&mut settings);
    start(settings, Arc::new(ManualClock::starting_now()), Some(dir)).await
}

/// Starts a server on an existing data dir (e.g. after a restart, or a second server
/// sharing the store).
pub async fn spawn_app_on(data_dir: &Path, clock: Arc<ManualClock>) -> TestApp {
    start(test_settings(data_dir), clock, None).await
}

/// Starts a server with these settings (e.g. one of several sharing an Elasticsearch
/// stand-in).
pub async fn spawn_app_for(settings: Settings, clock: Arc<ManualClock>) -> TestApp {
    start(settings, clock, None).await
}

async fn start(
    settings: Settings,
    clock: Arc<ManualClock>,
    dir: Option<Arc<tempfile::TempDir>>,
) -> TestApp {
    let app = Application::build(settings.clone(), clock.clone())
        .await
        .expect("server starts");
    let base = format!("{}://{}", app.scheme(), app.local_addr());
    let services = app.services().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    TestApp {
        base,
        client: reqwest::Client::new(),
        clock,
        settings,
        app_services: services,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.settings.data_dir.clone()
    }

    /// The services behind the server (what the library offers embedding code).
    pub fn services(&self) -> &fleetauth::startup::Services {
        &self.app_services
    }

    /// Keeps the temporary data dir alive beyond this app (for restarts).
    pub fn dir_guard(&self) -> Option<Arc<tempfile::TempDir>> {
        self._dir.clone()
    }

    /// Stops the server and waits until it has finished.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Enrolls an agent and creates an API key for it (what `fleetauth api-key create`
    /// does).
    pub async fn enroll(&self, agent_id: &str) -> CreatedApiKey {
        let key = self
            .app_services
            .api_keys
            .create("test", Some(agent_id), None)
            .await
            .expect("api key");
        agents::enroll(
            self.app_services.store.as_ref(),
            agent_id,
            self.app_services.tokens.now(),
        )
        .await
        .expect("enroll");
        key
    }

    /// Creates an API key that belongs to no agent: a plain OAuth2 client (as
    /// `POST /_security/api_key` would).
    pub async fn client_key(&self, name: &str) -> CreatedApiKey {
        self.app_services
            .api_keys
            .create(name, None, None)
            .await
            .expect("api key")
    }

    /// Posts a form to an OAuth2 endpoint, with an optional `Authorization` header.
    pub async fn post_form(
        &self,
        path: &str,
        authorization: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut request = self
            .client
            .post(self.url(path))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        request.send().await.expect("request")
    }

    /// The server's current signing key, read from its store (to forge tokens that
    /// are correctly signed but wrong in some other way).
    pub async fn signing_key(&self) -> fleetauth::tokens::SigningKey {
        let records = self
            .app_services
            .store
            .signing_keys(self.app_services.tokens.now())
            .await
            .expect("keys");
        let record = records
            .iter()
            .find(|r| r.retired_at.is_none())
            .expect("a signing key");
        fleetauth::tokens::SigningKey::from_record(record).expect("usable key")
    }

    pub async fn unenroll(&self, agent_id: &str) {
        agents::unenroll(
            self.app_services.store.as_ref(),
            agent_id,
            self.app_services.tokens.now(),
        )
        .await
        .expect("unenroll");
    }

    pub async fn invalidate_api_key(&self, id: &str) {
        assert!(self
            .app_services
            .api_keys
            .invalidate(id)
            .await
            .expect("invalidate"));
    }

    pub async fn authenticate(&self, authorization: &str) -> reqwest::Response {
        requests::authenticate(&self.client, &self.base, authorization).await
    }

    pub async fn authenticate_with_body(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/fleet/authenticate"))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn whoami(&self, authorization: &str) -> reqwest::Response {
        requests::whoami_with(&self.client, &self.base, authorization).await
    }

    /// `POST /api/fleet/authenticate` that must succeed.
    pub async fn pair(&self, authorization: &str) -> Pair {
        pair_from(self.authenticate(authorization).await).await
    }

    pub async fn pair_with_api_key(&self, key: &CreatedApiKey) -> Pair {
        self.pair(&format!("ApiKey {}", key.encoded)).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        requests::refresh(&self.client, &self.base, refresh_token).await
    }

    pub async fn whoami_status(&self, access_token: &str) -> u16 {
        requests::whoami(&self.client, &self.base, access_token).await
    }

    /// `GET path`, parsed as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        response.json().await.expect("a JSON body")
    }

    pub async fn metrics(&self) -> String {
        requests::metrics(&self.client, &self.base).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // On a real Elasticsearch, the last server of a temporary data dir deletes that
        // store's indices (the node is shared by every test).
        if let (Some(dir), crate::real_es::TestStore::Elasticsearch { url }) =
            (&self._dir, crate::real_es::selected_store())
        {
            if Arc::strong_count(dir) == 1 {
                if let Some(es) = &self.settings.elasticsearch {
                    crate::real_es::delete_indices_blocking(url, &es.index_prefix);
                }
            }
        }
    }
}

/// The pairs of the 200 answers of a race of refreshes; no answer may be a 5xx.
pub async fn race_winners(responses: Vec<reqwest::Response>) -> Vec<Pair> {
    let mut pairs: Vec<Pair> = Vec::new();
    for response in responses {
        let status = response.status().as_u16();
        assert!(status < 500, "no answer may be a 5xx: {status}");
        if status == 200 {
            pairs.push(pair_from(response).await);
        }
    }
    pairs
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
pub fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `Authorization: Basic` for an API key as an OAuth2 client.
pub fn basic(key: &CreatedApiKey) -> String {
    let raw = format!("{}:{}", form_encode(&key.id), form_encode(&key.api_key));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}
