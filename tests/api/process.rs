//! The `fleetauth` binary as an operator runs it: `serve` in its own process, the CLI
//! commands beside it on the same data dir, bad settings, and `kill -9`.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::Engine;
use fleetauth::clock::Clock;
use serde_json::Value;

use crate::common::process::{self, Server};
use crate::common::requests::{authenticate, whoami};
use crate::helpers::{jwt_parts, pair_from, spawn_app_with};

/// Runs a CLI command with a clean `FLEETAUTH_*` environment.
pub(crate) fn fleetauth(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = process::command();
    command.args(args);
    let data_dir = args
        .iter()
        .position(|a| *a == "--data-dir")
        .and_then(|i| args.get(i + 1).copied())
        .or_else(|| {
            env.iter()
                .find(|(k, _)| *k == "FLEETAUTH_DATA_DIR")
                .map(|(_, v)| *v)
        });
    if let Some(dir) = data_dir {
        // The selected test store (SQLite, or a real Elasticsearch: crate::real_es).
        command.envs(crate::real_es::env_for(Path::new(dir)));
    }
    command.envs(env.iter().copied());
    command.output().expect("fleetauth runs")
}

pub(crate) fn json_stdout(output: &Output) -> Value {
    process::json_output(output).unwrap_or_else(|stderr| panic!("failed: {stderr}"))
}

fn create_key(data_dir: &Path, agent: &str) -> Value {
    json_stdout(&fleetauth(
        &[
            "api-key",
            "create",
            "--agent-id",
            agent,
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
    ))
}

/// `serve` on `data_dir` on the selected test store.
fn serve(data_dir: &Path) -> Server {
    serve_with_env(data_dir, &crate::real_es::env_for(data_dir))
}

/// `serve` on `data_dir` with exactly the store environment `env` (not the selected
/// test store's).
pub(crate) fn serve_with_env(data_dir: &Path, env: &[(&'static str, String)]) -> Server {
    let mut command = process::command();
    command
        .env("FLEETAUTH_JWT__KEY_POLL_INTERVAL", "100ms")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    Server::spawn(command, &["--data-dir", data_dir.to_str().unwrap()])
}

#[test]
fn api_key_create_prints_the_key_as_json() {
    let dir = tempfile::tempdir().unwrap();

    let key = create_key(dir.path(), "cli-1");

    for field in ["id", "name", "agent_id", "api_key", "encoded", "expiration"] {
        assert!(key.get(field).is_some(), "missing {field}");
    }
    let encoded = base64::engine::general_purpose::STANDARD
        .decode(key["encoded"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(encoded).unwrap(),
        format!(
            "{}:{}",
            key["id"].as_str().unwrap(),
            key["api_key"].as_str().unwrap()
        )
    );
    assert_eq!(key["agent_id"], "cli-1");
    assert!(key["expiration"].is_null());

    let expiring = json_stdout(&fleetauth(
        &[
            "api-key",
            "create",
            "--agent-id",
            "cli-1",
            "--expiration",
            "30d",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    ));
    assert!(expiring["expiration"].as_i64().unwrap() > 0);
}

#[test]
fn an_invalid_setting_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    for (env, setting) in [
        (("FLEETAUTH_JWT__ACCESS_TTL", "2h"), "jwt.access_ttl"),
        (("FLEETAUTH_JWT__ALGORITHM", "HS256"), "jwt.algorithm"),
        (("FLEETAUTH_LISTEN", "not-an-address"), "listen"),
        (("FLEETAUTH_STORE", "postgres"), "store"),
        (("FLEETAUTH_JWT__LEEWAY", "soon"), "jwt.leeway"),
    ] {
        let output = fleetauth(&["serve", "--data-dir", dir], &[env]);
        assert_eq!(output.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(setting), "{stderr} should name {setting}");
    }
}

#[test]
fn settings_layer_defaults_then_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleetauth.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1111\"\n[jwt]\naccess_ttl = \"5m\"\nleeway = \"10s\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let effective = json_stdout(&fleetauth(
        &[
            "--config",
            file,
            "config",
            "check",
            "--listen",
            "127.0.0.1:3333",
        ],
        &[
            ("FLEETAUTH_LISTEN", "127.0.0.1:2222"),
            ("FLEETAUTH_JWT__ACCESS_TTL", "7m"),
        ],
    ));

    assert_eq!(
        effective["listen"], "127.0.0.1:3333",
        "a flag beats the environment"
    );
    assert_eq!(
        effective["jwt"]["access_ttl_secs"], 420.0,
        "the environment beats the file"
    );
    assert_eq!(
        effective["jwt"]["leeway_secs"], 10.0,
        "the file beats the defaults"
    );
    assert_eq!(
        effective["jwt"]["refresh_ttl_secs"], 86400.0,
        "defaults fill the rest"
    );
}

#[tokio::test]
async fn cli_commands_act_at_once_on_a_running_server() {
    let app = spawn_app_with(|s| s.jwt.key_poll_interval = Duration::from_millis(100)).await;
    let data_dir = app.data_dir();
    let dir = data_dir.to_str().unwrap();

    // api-key create while the server runs: the key works immediately.
    let key = create_key(&data_dir, "cli-2");
    let pair = app
        .pair(&format!("ApiKey {}", key["encoded"].as_str().unwrap()))
        .await;
    assert_eq!(app.whoami_status(&pair.access_token).await, 200);
    let old_kid = jwt_parts(&pair.access_token).0["kid"].clone();

    // keys rotate: new tokens are signed by the new key; the old token still verifies.
    let rotated = json_stdout(&fleetauth(&["keys", "rotate", "--data-dir", dir], &[]));
    // A key signs from its `created_at` by each instance's clock: bring the server's
    // manual clock up to the CLI's wall clock.
    let behind = fleetauth::clock::SystemClock.now() - app.clock.now();
    app.clock.advance(behind.max(0) + 1);
    let mut new_kid = old_kid.clone();
    for _ in 0..100 {
        let next = app
            .pair(&format!("ApiKey {}", key["encoded"].as_str().unwrap()))
            .await;
        new_kid = jwt_parts(&next.access_token).0["kid"].clone();
        if new_kid != old_kid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(new_kid, rotated["kid"]);
    assert_eq!(
        app.whoami_status(&pair.access_token).await,
        200,
        "a token of the old key still verifies"
    );
    let jwks: Value = app.get_json("/.well-known/jwks.json").await;
    let kids: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert!(
        kids.contains(&&old_kid) && kids.contains(&&new_kid),
        "{kids:?}"
    );

    // api-key invalidate: refused at once.
    let second = create_key(&data_dir, "cli-3");
    let second_auth = format!("ApiKey {}", second["encoded"].as_str().unwrap());
    app.pair(&second_auth).await;
    json_stdout(&fleetauth(
        &[
            "api-key",
            "invalidate",
            "--id",
            second["id"].as_str().unwrap(),
            "--data-dir",
            dir,
        ],
        &[],
    ));
    assert_eq!(app.authenticate(&second_auth).await.status(), 401);

    // agent unenroll: every credential refused at once.
    let pair = app
        .pair(&format!("ApiKey {}", key["encoded"].as_str().unwrap()))
        .await;
    app.whoami_status(&pair.access_token).await;
    json_stdout(&fleetauth(
        &[
            "agent",
            "unenroll",
            "--agent-id",
            "cli-2",
            "--data-dir",
            dir,
        ],
        &[],
    ));
    assert_eq!(app.whoami_status(&pair.access_token).await, 401);
    assert_eq!(app.refresh(&pair.refresh_token).await.status(), 401);
}

#[tokio::test]
async fn state_survives_a_restart_of_the_server() {
    let app = spawn_app_with(|_| {}).await;
    let guard = app.dir_guard();
    let clock = app.clock.clone();
    let key = app.enroll("persist-1").await;
    let current = app.pair_with_api_key(&key).await;
    app.whoami_status(&current.access_token).await;
    let pending = pair_from(app.refresh(&current.refresh_token).await).await;
    let data_dir = app.data_dir();
    app.stop().await;

    let app = crate::helpers::spawn_app_on(&data_dir, clock).await;

    assert_eq!(
        app.whoami_status(&current.access_token).await,
        200,
        "same key and issuer after restart"
    );
    assert_eq!(
        app.whoami_status(&pending.access_token).await,
        200,
        "the pending pair survived"
    );
    assert_eq!(
        app.whoami_status(&current.access_token).await,
        401,
        "and its use retired the old one"
    );
    assert_eq!(app.refresh(&pending.refresh_token).await.status(), 200);
    drop(guard);
}

#[tokio::test]
async fn every_2xx_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "durable-1");
    // reqwest's rustls backend needs the process crypto provider (spawn_app installs it).
    fleetauth::startup::install_crypto_provider();
    let client = reqwest::Client::new();
    let mut server = serve(dir.path());
    let first = pair_from(
        authenticate(
            &client,
            &server.base,
            &format!("ApiKey {}", key["encoded"].as_str().unwrap()),
        )
        .await,
    )
    .await;
    assert_eq!(
        whoami(&client, &server.base, &first.access_token).await,
        200
    );
    // The last answer before the crash: a pending pair that must not be lost.
    let response = authenticate(
        &client,
        &server.base,
        &format!("Bearer {}", first.refresh_token),
    )
    .await;
    assert_eq!(response.status(), 200);
    let pending = pair_from(response).await;

    server.kill_9();
    let server = serve(dir.path());

    assert_eq!(
        whoami(&client, &server.base, &pending.access_token).await,
        200
    );
    assert_eq!(
        whoami(&client, &server.base, &first.access_token).await,
        401,
        "promotion retired the first pair"
    );
    let next = authenticate(
        &client,
        &server.base,
        &format!("Bearer {}", pending.refresh_token),
    )
    .await;
    assert_eq!(next.status(), 200);
}
