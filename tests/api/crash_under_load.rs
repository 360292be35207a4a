//! `kill -9` under load (issue 12 item 8): 16 agents refresh concurrently through a real
//! `fleetauth serve` process that is killed with SIGKILL 20 times and restarted on the
//! same data (on a new port, the clients follow). Every rotation answered 2xx before a
//! kill is honoured after it: an agent always refreshes with the refresh token of its
//! LAST 2xx answer (current or pending pair, by the rotation protocol), so any answer
//! but 200 — a 401 (lost rotation, reuse revocation) or a 5xx — fails the test. Only
//! "no answer" (connection refused/reset, a body cut by the kill) is retried. On SQLite
//! and on the real Elasticsearch node.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::es;
use crate::common::process::Server;
use crate::common::requests::{authenticate, authenticate_request, pair_from};
use crate::process::{fleetauth, json_stdout, serve_with_env};

const AGENTS: usize = 16;
const KILLS: usize = 20;

/// What one agent saw.
#[derive(Default)]
struct Agent {
    /// The refresh token of its last 2xx answer.
    refresh: String,
    acknowledged: usize,
    lost: usize,
    /// Every HTTP answer that was not 200, with the token sent.
    bad: Vec<String>,
}

async fn refresh(client: &reqwest::Client, base: &str, token: &str) -> Result<(u16, String), ()> {
    let response = authenticate_request(client, base, &format!("Bearer {token}"))
        .send()
        .await
        .map_err(|_| ())?;
    let status = response.status().as_u16();
    // A body cut by the kill is no answer: the agent never saw the pair.
    let body = response.text().await.map_err(|_| ())?;
    Ok((status, body))
}

fn start(dir: &Path, env: &[(&'static str, String)]) -> Server {
    serve_with_env(dir, env)
}

async fn run(env: Vec<(&'static str, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let cli_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // reqwest's rustls backend needs the process crypto provider.
    fleetauth::startup::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let keys: Vec<Value> = (0..AGENTS)
        .map(|i| {
            let agent = format!("crash-{i}");
            json_stdout(&fleetauth(
                &[
                    "api-key",
                    "create",
                    "--agent-id",
                    &agent,
                    "--data-dir",
                    data_dir.to_str().unwrap(),
                ],
                &cli_env,
            ))
        })
        .collect();

    let server = {
        let (d, e) = (data_dir.clone(), env.clone());
        tokio::task::spawn_blocking(move || start(&d, &e))
            .await
            .unwrap()
    };
    let base = Arc::new(Mutex::new(server.base.clone()));
    let mut agents = Vec::new();
    for key in &keys {
        let response = authenticate(
            &client,
            &server.base,
            &format!("ApiKey {}", key["encoded"].as_str().unwrap()),
        )
        .await;
        assert_eq!(response.status(), 200);
        let pair = pair_from(response).await;
        agents.push(Arc::new(Mutex::new(Agent {
            refresh: pair.refresh_token,
            ..Agent::default()
        })));
    }

    // The load: each agent refreshes with the token of its last 2xx answer, forever.
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = agents
        .iter()
        .map(|agent| {
            let (agent, client, base, stop) =
                (agent.clone(), client.clone(), base.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let token = agent.lock().unwrap().refresh.clone();
                    let at = base.lock().unwrap().clone();
                    match refresh(&client, &at, &token).await {
                        Ok((200, body)) => {
                            let body: Value = serde_json::from_str(&body).expect("JSON pair");
                            let mut agent = agent.lock().unwrap();
                            agent.refresh = body["refresh_token"].as_str().unwrap().to_string();
                            agent.acknowledged += 1;
                        }
                        Ok((status, body)) => {
                            agent
                                .lock()
                                .unwrap()
                                .bad
                                .push(format!("{status} for {token}: {body}"));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(()) => {
                            agent.lock().unwrap().lost += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();

    // Kill -9 and restart, 20 times, after 100–400 ms of load each.
    let started = Instant::now();
    let mut server = server;
    let mut acknowledged_at_kill = Vec::new();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rand::random_range(100..400))).await;
        server.kill_9();
        // Every token acknowledged before this kill (later ones are newer rotations of it).
        acknowledged_at_kill.push(
            agents
                .iter()
                .map(|a| a.lock().unwrap().acknowledged)
                .sum::<usize>(),
        );
        let (d, e) = (data_dir.clone(), env.clone());
        server = tokio::task::spawn_blocking(move || start(&d, &e))
            .await
            .unwrap();
        *base.lock().unwrap() = server.base.clone();
    }
    // Load on the last server, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.unwrap();
    }
    let elapsed = started.elapsed();

    // After the last restart: every agent's newest acknowledged refresh token works.
    let base = server.base.clone();
    let mut total_acknowledged = 0;
    let mut total_lost = 0;
    let mut bad = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let (token, acknowledged, lost, seen) = {
            let a = agent.lock().unwrap();
            (a.refresh.clone(), a.acknowledged, a.lost, a.bad.clone())
        };
        total_acknowledged += acknowledged;
        total_lost += lost;
        bad.extend(seen.into_iter().map(|b| format!("agent crash-{i}: {b}")));
        let (status, body) = refresh(&client, &base, &token)
            .await
            .expect("the last server answers");
        if status != 200 {
            bad.push(format!(
                "agent crash-{i}: final refresh with its last acknowledged token: {status}: {body}"
            ));
        }
    }
    eprintln!(
        "crash under load: {KILLS} kills in {elapsed:?}; {total_acknowledged} acknowledged \
         rotations ({acknowledged_at_kill:?} by each kill), {total_lost} requests without an answer"
    );
    assert!(
        bad.is_empty(),
        "an acknowledged rotation was not honoured, or a non-200 answer:\n{}",
        bad.join("\n")
    );
    assert!(
        total_acknowledged >= AGENTS * 2,
        "the load ran: {total_acknowledged}"
    );
    assert!(total_lost > 0, "the kills were seen by the clients");
    let _ = server.child.kill();
    let _ = server.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_under_load_sqlite_honours_every_acknowledged_rotation() {
    run(vec![
        ("FLEETAUTH_STORE", "embedded".to_string()),
        ("FLEETAUTH_LOG", "error".to_string()),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_under_load_real_elasticsearch_honours_every_acknowledged_rotation() {
    let url = tokio::task::spawn_blocking(crate::real_es::url)
        .await
        .unwrap();
    let prefix = crate::real_es::unique_prefix("crash");
    let mut env = es::store_env(&url, &prefix, Duration::from_secs(30));
    env.push(("FLEETAUTH_LOG", "error".to_string()));
    run(env).await;
    tokio::task::spawn_blocking(move || crate::real_es::delete_indices_blocking(&url, &prefix))
        .await
        .unwrap();
}
