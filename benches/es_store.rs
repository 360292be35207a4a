//! `cargo bench --bench es_store`: fleetauth on a real Elasticsearch node, against the
//! node's own ceiling, in the same run (docs/benchmarks.md, "Elasticsearch store").
//!
//! For 1 and then 3 `fleetauth serve` processes (the release binary) on one node, and
//! alternating, `FLEETAUTH_BENCH_ROUNDS` (2) times:
//! - `refresh`: every agent runs its refresh chain (present the latest refresh token,
//!   keep the new one), its requests spread over the instances;
//! - `ceiling`: a minimal client (the official `elasticsearch` crate, as fleetauth uses)
//!   sends the same number of compare-and-set pairs the refresh run made issuances: a
//!   real-time `GET` of a document and an `index` of it with
//!   `if_seq_no`/`if_primary_term`, one per agent document, the same concurrency;
//! - `api-key exchange`: every agent presents its API key (`Authorization: ApiKey`),
//!   after an untimed pass that warms every instance's key-verification cache.
//!
//! Each run reports issuances (or pairs) per second, p50/p99 latency, the node's
//! operation counts per issuance (`_nodes/stats`: index, get, search), and the CPU
//! seconds used by fleetauth, by the node and by this load generator, with the load
//! average before and after.
//!
//! Knobs: `FLEETAUTH_BENCH_ES_URL` (a node to use; else `scripts/elasticsearch.sh
//! ensure` starts or reuses the default one, whose PID gives the node's CPU),
//! `FLEETAUTH_BENCH_SECS` (measured seconds per run, 10), `FLEETAUTH_BENCH_AGENTS`
//! (concurrent agents, 16), `FLEETAUTH_BENCH_ROUNDS` (2). Traffic stays on 127.0.0.1.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elasticsearch::http::transport::Transport;
use elasticsearch::{Elasticsearch, GetParts, IndexParts};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[path = "../tests/common/mod.rs"]
mod common;

use common::es;
use common::process::{Server, SharedStore};
use common::requests;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// The node: its URL and, when this bench found it through the script, its PID.
fn node() -> (String, Option<u32>) {
    if let Ok(url) = std::env::var("FLEETAUTH_BENCH_ES_URL") {
        return (url, None);
    }
    let url = es::ensure_default_node()
        .unwrap_or_else(|stderr| panic!("no Elasticsearch node: {stderr}"));
    (url, es::default_node_pid())
}

/// `n` servers on the store.
fn servers(store: &SharedStore, n: usize) -> Vec<Server> {
    (0..n).map(|_| store.serve(&[])).collect()
}

/// The CPU seconds the servers have used so far.
fn servers_cpu_seconds(servers: &[Server]) -> f64 {
    servers.iter().map(|s| cpu_seconds(s.child.id())).sum()
}

/// The node's operation counters: (index, get, search queries), summed over nodes.
async fn node_ops(http: &reqwest::Client, url: &str) -> (u64, u64, u64) {
    let stats: Value = http
        .get(format!("{url}/_nodes/stats/indices/indexing,get,search"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut sum = (0, 0, 0);
    for node in stats["nodes"].as_object().unwrap().values() {
        let indices = &node["indices"];
        sum.0 += indices["indexing"]["index_total"].as_u64().unwrap_or(0);
        sum.1 += indices["get"]["total"].as_u64().unwrap_or(0);
        sum.2 += indices["search"]["query_total"].as_u64().unwrap_or(0);
    }
    sum
}

struct Run {
    name: String,
    done: u64,
    failed: u64,
    seconds: f64,
    latency: Histogram<u64>,
    ops: (u64, u64, u64),
    cpu_fleetauth: f64,
    cpu_node: Option<f64>,
    cpu_loadgen: f64,
    load_before: String,
    load_after: String,
}

impl Run {
    fn row(&self) -> String {
        let per = |n: u64| n as f64 / self.done.max(1) as f64;
        format!(
            "| {} | {} | {:.0}/s | {:.1} | {:.1} | {:.2} / {:.2} / {:.2} | {:.1} s | {} | {:.1} s | {} → {} |{}",
            self.name,
            self.done,
            self.done as f64 / self.seconds,
            self.latency.value_at_quantile(0.5) as f64 / 1000.0,
            self.latency.value_at_quantile(0.99) as f64 / 1000.0,
            per(self.ops.0),
            per(self.ops.1),
            per(self.ops.2),
            self.cpu_fleetauth,
            self.cpu_node
                .map(|c| format!("{c:.1} s"))
                .unwrap_or_else(|| "n/a".into()),
            self.cpu_loadgen,
            self.load_before,
            self.load_after,
            if self.failed > 0 {
                format!(" {} failed", self.failed)
            } else {
                String::new()
            }
        )
    }
}

/// Runs `agents` concurrent loops of `step` for `seconds` (or until `limit` steps in
/// all), measuring each step.
async fn measure<S, F>(
    name: String,
    ctx: &Context,
    cpu_fleetauth: &dyn Fn() -> f64,
    limit: Option<u64>,
    states: Vec<S>,
    step: F,
) -> Run
where
    S: Send + 'static,
    F: Fn(S) -> std::pin::Pin<Box<dyn std::future::Future<Output = (S, bool)> + Send>>
        + Send
        + Sync
        + 'static,
{
    let step = Arc::new(step);
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap(),
    ));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load_before = load_average();
    let ops_before = node_ops(&ctx.http, &ctx.url).await;
    let (cpu_f, cpu_n, cpu_l) = (
        cpu_fleetauth(),
        ctx.node_pid.map(cpu_seconds),
        cpu_seconds(std::process::id()),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for state in states {
        let (step, stop, total, latency, failed) = (
            step.clone(),
            stop.clone(),
            total.clone(),
            latency.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut state = state;
            while !stop.load(Ordering::Relaxed) {
                if let Some(limit) = limit {
                    if total.fetch_add(1, Ordering::Relaxed) >= limit {
                        break;
                    }
                }
                let at = Instant::now();
                let (next, ok) = step(state).await;
                state = next;
                let micros = at.elapsed().as_micros() as u64;
                latency.lock().unwrap().record(micros.max(1)).unwrap();
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let window = Duration::from_secs(ctx.seconds);
    while started.elapsed() < window && !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let ops_after = node_ops(&ctx.http, &ctx.url).await;
    let latency = latency.lock().unwrap().clone();
    let failed = failed.load(Ordering::Relaxed);
    Run {
        name,
        done: latency.len() - failed,
        failed,
        seconds,
        latency,
        ops: (
            ops_after.0 - ops_before.0,
            ops_after.1 - ops_before.1,
            ops_after.2 - ops_before.2,
        ),
        cpu_fleetauth: cpu_fleetauth() - cpu_f,
        cpu_node: ctx.node_pid.map(|p| cpu_seconds(p) - cpu_n.unwrap_or(0.0)),
        cpu_loadgen: cpu_seconds(std::process::id()) - cpu_l,
        load_before,
        load_after: load_average(),
    }
}

struct Context {
    url: String,
    node_pid: Option<u32>,
    http: reqwest::Client,
    seconds: u64,
}

#[derive(Clone)]
struct Agent {
    api_key: String,
    refresh_token: String,
}

/// Each agent with its number, the state of its loop in [`measure`].
fn numbered(agents: &[Agent]) -> Vec<(Agent, usize)> {
    agents.iter().cloned().zip(0..).collect()
}

async fn authenticate(http: &reqwest::Client, base: &str, authorization: &str) -> Option<Value> {
    let response = requests::authenticate_request(http, base, authorization)
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        eprintln!(
            "a non-200 answer: {status} {}",
            body.chars().take(300).collect::<String>()
        );
        return None;
    }
    response.json().await.ok()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("es_store: a load benchmark; run it with `cargo bench --bench es_store`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let (url, node_pid) = node();
    let ctx = Context {
        url: url.clone(),
        node_pid,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build()
            .unwrap(),
        seconds: knob("FLEETAUTH_BENCH_SECS", 10),
    };
    let agents_n = knob("FLEETAUTH_BENCH_AGENTS", 16) as usize;
    let rounds = knob("FLEETAUTH_BENCH_ROUNDS", 2);
    let prefix = format!("bench-{}", std::process::id());
    eprintln!("es_store bench: node {url}, {agents_n} agents, prefix {prefix}");

    // Every process on the node under the bench's prefix, deleted at the end.
    let store = SharedStore::elasticsearch(&url, &prefix)
        .deleting_indices_at_end()
        .with_env("FLEETAUTH_LOG", "error");

    // Agents: an API key each (the CLI), then a first pair.
    let mut agents = Vec::new();
    for a in 0..agents_n {
        agents.push(Agent {
            api_key: store.enroll(&[], &format!("bench-agent-{a}")),
            refresh_token: String::new(),
        });
    }

    // The ceiling's documents: one per agent, of an agent record's size, in an index
    // made like fleetauth's (one shard, auto-expanded replicas).
    let ceiling_index = format!("{prefix}.ceiling");
    let es = Elasticsearch::new(Transport::single_node(&url).unwrap());
    ctx.http
        .put(format!("{url}/{ceiling_index}"))
        .json(&json!({ "settings": { "index": { "number_of_shards": 1, "auto_expand_replicas": "0-1", "hidden": true } } }))
        .send()
        .await
        .unwrap();
    let filler = "0".repeat(43);
    let doc = |n: u64| {
        json!({ "agent_id": "x", "active": true, "updated_at": n,
                "current": { "jti": filler, "refresh_hash": filler, "access_expires_at": n, "refresh_expires_at": n },
                "pending": { "jti": filler, "refresh_hash": filler, "access_expires_at": n, "refresh_expires_at": n } })
    };
    for a in 0..agents_n {
        es.index(IndexParts::IndexId(&ceiling_index, &format!("doc-{a}")))
            .body(doc(0))
            .send()
            .await
            .unwrap();
    }

    let mut rows = Vec::new();
    for instances in [1usize, 3] {
        let servers = servers(&store, instances);
        let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.base.clone()).collect());
        let cpu = || servers_cpu_seconds(&servers);
        // First pairs, and a warm key-verification cache on every instance (else the
        // exchanges below would run argon2 and meet its budget: 429s).
        for agent in agents.iter_mut() {
            for base in bases.iter() {
                let pair = authenticate(&ctx.http, base, &agent.api_key)
                    .await
                    .expect("a first pair");
                agent.refresh_token = pair["refresh_token"].as_str().unwrap().to_string();
            }
        }
        for round in 1..=rounds {
            // refresh chains
            let states = numbered(&agents);
            let (http, b) = (ctx.http.clone(), bases.clone());
            let refresh = measure(
                format!("refresh, {instances} instance(s), round {round}"),
                &ctx,
                &cpu,
                None,
                states,
                move |(mut agent, n): (Agent, usize)| {
                    let (http, bases) = (http.clone(), b.clone());
                    Box::pin(async move {
                        let base = &bases[n % bases.len()];
                        let auth = format!("Bearer {}", agent.refresh_token);
                        match authenticate(&http, base, &auth).await {
                            Some(pair) => {
                                agent.refresh_token =
                                    pair["refresh_token"].as_str().unwrap().to_string();
                                ((agent, n + 1), true)
                            }
                            None => ((agent, n + 1), false),
                        }
                    })
                },
            )
            .await;
            let issued = refresh.done;
            eprintln!("{}", refresh.row());
            rows.push(refresh);
            // The chains' agents carry on from the tokens they hold: re-read them
            // by exchanging the API keys once (untimed).
            for (a, agent) in agents.iter_mut().enumerate() {
                let pair = authenticate(&ctx.http, &bases[a % instances], &agent.api_key)
                    .await
                    .expect("a pair");
                agent.refresh_token = pair["refresh_token"].as_str().unwrap().to_string();
            }

            // the node's ceiling: as many CAS pairs, the same concurrency
            let es2 = es.clone();
            let index = ceiling_index.clone();
            let states: Vec<(usize, u64)> = (0..agents_n).map(|a| (a, 0)).collect();
            let ceiling = measure(
                format!("ceiling (GET + CAS index), round {round}"),
                &ctx,
                &|| 0.0,
                Some(issued),
                states,
                move |(a, n): (usize, u64)| {
                    let (es, index) = (es2.clone(), index.clone());
                    Box::pin(async move {
                        let id = format!("doc-{a}");
                        let ok = cas_pair(&es, &index, &id, n).await;
                        ((a, n + 1), ok)
                    })
                },
            )
            .await;
            eprintln!("{}", ceiling.row());
            rows.push(ceiling);

            // API-key exchanges
            let states = numbered(&agents);
            let (http, b) = (ctx.http.clone(), bases.clone());
            let exchange = measure(
                format!("API-key exchange, {instances} instance(s), round {round}"),
                &ctx,
                &cpu,
                None,
                states,
                move |(agent, n): (Agent, usize)| {
                    let (http, bases) = (http.clone(), b.clone());
                    Box::pin(async move {
                        let base = &bases[n % bases.len()];
                        let ok = authenticate(&http, base, &agent.api_key).await.is_some();
                        ((agent, n + 1), ok)
                    })
                },
            )
            .await;
            eprintln!("{}", exchange.row());
            rows.push(exchange);
            for (a, agent) in agents.iter_mut().enumerate() {
                let pair = authenticate(&ctx.http, &bases[a % instances], &agent.api_key)
                    .await
                    .expect("a pair");
                agent.refresh_token = pair["refresh_token"].as_str().unwrap().to_string();
            }
        }
        drop(servers);
    }

    println!(
        "| run | done | rate | p50 ms | p99 ms | per op: index / get / search | CPU fleetauth | CPU node | CPU load generator | load average |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{}", row.row());
    }
}

/// One compare-and-set pair: a real-time GET and a conditional index of the document.
async fn cas_pair(es: &Elasticsearch, index: &str, id: &str, n: u64) -> bool {
    let Ok(response) = es.get(GetParts::IndexId(index, id)).send().await else {
        return false;
    };
    let Ok(got) = response.json::<Value>().await else {
        return false;
    };
    let (Some(seq_no), Some(term)) = (got["_seq_no"].as_i64(), got["_primary_term"].as_i64())
    else {
        return false;
    };
    let mut body = got["_source"].clone();
    body["updated_at"] = json!(n);
    match es
        .index(IndexParts::IndexId(index, id))
        .if_seq_no(seq_no)
        .if_primary_term(term)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status_code().is_success(),
        Err(_) => false,
    }
}
