//! `cargo bench --bench authenticate`: throughput and latency of fleetauth's hot
//! requests over loopback, against a trivial axum handler and a peer (node
//! oidc-provider) measured by the same load generator in the same run. See
//! docs/benchmarks.md for what it does, how to read it, and recorded results.
//!
//! Scenarios, in this order, each a warm-up then a fixed measured window:
//! 1. `trivial`: the trivial axum handler (a separate process, see [`servers`]);
//! 2. `whoami JWT stateless`: `GET /api/fleet/whoami` with a JWT, on a second fleetauth
//!    server on the same store with `jwt.stateless = true` (stopped afterwards);
//! 3. `whoami JWT stateful`: the same on the default server (each request reads the
//!    agent's state; the tokens are already promoted, so nothing is written);
//! 4. `whoami API key (cached)`: `Authorization: ApiKey`, after one untimed pass that
//!    uses every key once (so the verification cache is warm and argon2 is off the
//!    measured path);
//! 5. `API-key exchange (warm)`: `POST /api/fleet/authenticate` with those keys (each
//!    stores a new pending pair: a durable commit);
//! 6. `client_credentials`: `POST /oauth/token`, `grant_type=client_credentials`, the
//!    same agent keys as HTTP Basic;
//! 7. `refresh exchange`: every agent presents its latest refresh token and keeps the
//!    new one from the answer (each 2xx promotes the pending pair and stores a new one);
//! 8. `agent chain`: the same, and every third refresh the new access token is used on
//!    `whoami` (its first use: a promotion, also durable); both kinds are counted;
//! 9. `peer client_credentials`: node oidc-provider's `POST /token`, JWT access tokens,
//!    after warm-up passes until its CPU per answer settles;
//! 10. `trivial (again)`, to see how much the machine drifted during the run.
//!
//! Knobs (environment): `FLEETAUTH_BENCH_SECS` (measured seconds per scenario, 10),
//! `FLEETAUTH_BENCH_WARMUP_SECS` (2), `FLEETAUTH_BENCH_CONNECTIONS` (64),
//! `FLEETAUTH_BENCH_AGENTS` (10000; agents beyond `FLEETAUTH_BENCH_MEASURED_AGENTS`
//! (10000) are filler written straight into the store), `FLEETAUTH_BENCH_API_KEYS`
//! (1000), `FLEETAUTH_BENCH_ROTATIONS` (refreshes per agent during setup;
//! `MAX_RETIRED + 1`), `FLEETAUTH_BENCH_DIR` (parent of the temporary data dir; the
//! system temp dir), `FLEETAUTH_BENCH_SERVER_BIN` (run that fleetauth binary instead of
//! this checkout's library), `FLEETAUTH_BENCH_ONLY` (comma-separated scenario names to
//! run, e.g. `trivial,whoami JWT stateful`; all by default), `FLEETAUTH_BENCH_NO_PEER`
//! (skip the peer), `FLEETAUTH_BENCH_CALLGRIND` (the server runs under callgrind through
//! `FLEETAUTH_BENCH_SERVER_BIN`: zero its counters at each window's start, dump at its
//! end; see docs/benchmarks.md, "Profile"). Traffic goes to 127.0.0.1 only, and every scenario stops by itself.
//!
//! Layout: [`setup`] fills the store, [`servers`] runs the servers, [`load`] is the
//! load generator, [`stats`] reads CPU times, memory and server metrics; this file
//! orchestrates and prints the report.

// The server role runs the library exactly as src/main.rs does, allocator included.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod load;
mod servers;
mod setup;
mod stats;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fleetauth::tokens::rotation::MAX_RETIRED;
use hyper::header::HeaderValue;

use load::{Outcome, Rotation, Schedule, Target, Workload};
use servers::ServerProcess;
use stats::{Batches, Sample, Usage};

struct Config {
    measure: Duration,
    warmup: Duration,
    connections: usize,
    agents: usize,
    measured_agents: usize,
    api_keys: usize,
    rotations: usize,
    only: Option<Vec<String>>,
    peer: bool,
}

fn env_number(name: &str, default: f64) -> Result<f64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| *n >= 0.0)
            .ok_or(format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let agents = (env_number("FLEETAUTH_BENCH_AGENTS", 10_000.0)? as usize).max(1);
        let measured_agents =
            (env_number("FLEETAUTH_BENCH_MEASURED_AGENTS", 10_000.0)? as usize).clamp(1, agents);
        let config = Self {
            measure: Duration::from_secs_f64(env_number("FLEETAUTH_BENCH_SECS", 10.0)?.max(0.1)),
            warmup: Duration::from_secs_f64(env_number("FLEETAUTH_BENCH_WARMUP_SECS", 2.0)?),
            connections: (env_number("FLEETAUTH_BENCH_CONNECTIONS", 64.0)? as usize).max(1),
            agents,
            measured_agents,
            api_keys: (env_number("FLEETAUTH_BENCH_API_KEYS", 1_000.0)? as usize)
                .clamp(1, measured_agents),
            rotations: env_number("FLEETAUTH_BENCH_ROTATIONS", (MAX_RETIRED + 1) as f64)? as usize,
            only: std::env::var("FLEETAUTH_BENCH_ONLY").ok().map(|v| {
                v.split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect()
            }),
            peer: std::env::var_os("FLEETAUTH_BENCH_NO_PEER").is_none(),
        };
        Ok(config)
    }
}

impl Config {
    fn wants(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|n| n == scenario))
            && (self.peer || scenario != PEER)
    }
}

const TRIVIAL: &str = "trivial";
const TRIVIAL_AGAIN: &str = "trivial (again)";
const STATELESS: &str = "whoami JWT stateless";
const STATEFUL: &str = "whoami JWT stateful";
const WHOAMI_API_KEY: &str = "whoami API key (cached)";
const API_KEY_EXCHANGE: &str = "API-key exchange (warm)";
const CLIENT_CREDENTIALS: &str = "client_credentials /oauth/token";
const REFRESH: &str = "refresh exchange";
const CHAIN: &str = "agent chain";
const PEER: &str = "peer client_credentials";

/// At most this many untimed passes over the API keys before their scenarios.
const API_KEY_WARM_UP_PASSES: usize = 20;

/// One untimed pass of the peer's warm-up.
const PEER_WARM_UP_PASS: Duration = Duration::from_secs(2);
/// The peer has settled when a pass's server CPU per answer is within this fraction
/// of the previous pass's...
const PEER_SETTLED: f64 = 0.05;
/// ...after at least this many passes, and at most this many passes in all.
const PEER_WARM_UP_PASSES: std::ops::RangeInclusive<usize> = 4..=30;

/// The peer's one client.
const PEER_CLIENT_ID: &str = "bench-client";
const PEER_CLIENT_SECRET: &str = "bench-client-secret-0123456789abcdef";

/// One measured scenario.
struct Scenario {
    name: &'static str,
    outcome: Outcome,
    seconds: f64,
    usage: Usage,
    /// Server metrics over the window (fleetauth only).
    metrics: Option<BTreeMap<String, f64>>,
    /// The server's resident and peak resident memory after the window (MiB).
    memory: Option<(f64, f64)>,
}

impl Scenario {
    fn rate(&self) -> f64 {
        self.outcome.ok as f64 / self.seconds
    }
}

fn main() {
    match std::env::var(servers::ROLE_VAR).as_deref() {
        Ok("fleetauth") => return servers::fleetauth_main(),
        Ok("baseline") => return servers::baseline_main(),
        Ok(other) => {
            eprintln!("unknown {}={other:?}", servers::ROLE_VAR);
            std::process::exit(2);
        }
        Err(_) => {}
    }
    // `cargo bench` passes --bench; anything else (e.g. a test run) only gets a hint.
    if !std::env::args().any(|a| a == "--bench") {
        println!("authenticate: a load benchmark; run it with `cargo bench --bench authenticate`");
        return;
    }
    if let Err(e) = Config::from_env().and_then(run) {
        eprintln!("authenticate bench failed: {e}");
        std::process::exit(1);
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The file system type that holds `path` (longest mount point prefix in /proc/mounts).
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {} ({})", f[2], f[1], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs)| fs)
}

fn run(config: Config) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let parent =
        std::env::var_os("FLEETAUTH_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::Builder::new()
        .prefix("fleetauth-bench-")
        .tempdir_in(&parent)
        .map_err(|e| e.to_string())?;
    let data_dir = dir.path().join("data");
    println!("# fleetauth load benchmark");
    println!();
    println!(
        "- machine: {cores} cores (available_parallelism), CPU {}; load average at start: {}",
        cpu_model(),
        load_average()
    );
    println!("- data dir file system: {}", filesystem_of(dir.path()));
    println!(
        "- {} connections (HTTP/1.1 keep-alive, closed loop), {:.0} s warm-up + {:.0} s measured per scenario",
        config.connections,
        config.warmup.as_secs_f64(),
        config.measure.as_secs_f64()
    );
    println!(
        "- {} agents enrolled ({} measured, the rest filler written straight into the store); {} with an API key; \
         each measured agent's pair rotated {} times before the run",
        config.agents, config.measured_agents, config.api_keys, config.rotations
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let settings = fleetauth::config::Settings::for_data_dir(&data_dir);
    let started = Instant::now();
    let enrolled = runtime.block_on(setup::enroll(
        &settings,
        config.agents,
        config.measured_agents,
        config.api_keys,
        config.rotations,
    ))?;
    println!(
        "- setup (in-process, before the server starts): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (step, took) in &enrolled.timings {
        println!("  - {step}: {:.1} s", took.as_secs_f64());
    }
    println!(
        "- groups: {} API keys, {} JWTs (jwt group), {} refresh tokens (refresh group), {} (chain group)",
        enrolled.api_keys.len(),
        enrolled.access_tokens.len(),
        enrolled.refresh_tokens.len(),
        enrolled.chain_tokens.len()
    );
    if let Ok(meta) = std::fs::metadata(data_dir.join("fleetauth.db")) {
        println!(
            "- store file: {:.1} MiB",
            meta.len() as f64 / (1024.0 * 1024.0)
        );
    }

    let header = |s: String| HeaderValue::try_from(s).map_err(|e| e.to_string());
    let headers = |prefix: &str, values: &[String]| -> Result<Vec<HeaderValue>, String> {
        values
            .iter()
            .map(|v| header(format!("{prefix} {v}")))
            .collect()
    };
    let api_keys = headers("ApiKey", &enrolled.api_keys)?;
    let basic = headers("Basic", &enrolled.api_keys)?;
    let jwts = headers("Bearer", &enrolled.access_tokens)?;
    let refresh = headers("Bearer", &enrolled.refresh_tokens)?;
    let chain = headers("Bearer", &enrolled.chain_tokens)?;
    let peer_basic = {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{PEER_CLIENT_ID}:{PEER_CLIENT_SECRET}"));
        vec![header(format!("Basic {encoded}"))?; config.connections]
    };
    let deal = |values: &[HeaderValue]| load::deal(values.iter().cloned(), config.connections);
    let fixed = |target: Target| Workload {
        target,
        rotation: Rotation::Fixed,
    };

    let baseline = ServerProcess::baseline(&dir.path().join("baseline.stderr"))?;
    println!(
        "- trivial server: pid {} on {}",
        baseline.pid(),
        baseline.addr
    );
    let mut scenarios = Vec::new();
    runtime.block_on(async {
        // The trivial handler gets the same Authorization headers as the API-key scenario.
        if config.wants(TRIVIAL) {
            scenarios.push(measure(TRIVIAL, &baseline, &fixed(Target::AUTHENTICATE), deal(&api_keys), &config, false).await?);
        }

        if config.wants(STATELESS) && !jwts.is_empty() {
            let stateless = ServerProcess::fleetauth(
                &data_dir,
                &dir.path().join("fleetauth-stateless.stderr"),
                &[("FLEETAUTH_JWT__STATELESS", "true")],
            )?;
            println!(
                "- fleetauth (jwt.stateless = true): pid {} on {}, start-up {:.2} s",
                stateless.pid(),
                stateless.addr,
                stateless.start_up.as_secs_f64()
            );
            scenarios.push(measure(STATELESS, &stateless, &fixed(Target::WHOAMI), deal(&jwts), &config, true).await?);
        }

        let server = ServerProcess::fleetauth(&data_dir, &dir.path().join("fleetauth.stderr"), &[])?;
        println!(
            "- fleetauth: pid {} on {}, start-up (spawn to first 200 from /readyz) {:.2} s, memory {}",
            server.pid(),
            server.addr,
            server.start_up.as_secs_f64(),
            stats::memory_mib(server.pid()).map_or("-".into(), |(rss, _)| format!("{rss:.0} MiB RSS"))
        );
        if config.wants(STATEFUL) && !jwts.is_empty() {
            scenarios.push(measure(STATEFUL, &server, &fixed(Target::WHOAMI), deal(&jwts), &config, true).await?);
        }

        let key_scenarios = [WHOAMI_API_KEY, API_KEY_EXCHANGE, CLIENT_CREDENTIALS];
        if key_scenarios.iter().any(|s| config.wants(s)) {
            // Passes until one has no failure: a pass that outruns the argon2 queue
            // (`credential_checks.max_queue_wait`) is answered 429 for some keys, and a
            // key left cold would pay argon2 inside the measured windows.
            for pass in 1..=API_KEY_WARM_UP_PASSES {
                let warm = load::run(server.addr, &fixed(Target::WHOAMI), deal(&api_keys), Schedule::OnePass).await?;
                println!(
                    "- API-key warm-up, pass {pass}: each of the {} keys used once in {:.1} s (argon2id verification), {} failures",
                    api_keys.len(),
                    warm.elapsed.as_secs_f64(),
                    warm.failures()
                );
                if let Some(failure) = &warm.sample_failure {
                    println!("  - e.g. {failure}");
                }
                if warm.failures() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if config.wants(WHOAMI_API_KEY) {
            scenarios.push(measure(WHOAMI_API_KEY, &server, &fixed(Target::WHOAMI), deal(&api_keys), &config, true).await?);
        }
        if config.wants(API_KEY_EXCHANGE) {
            scenarios.push(measure(API_KEY_EXCHANGE, &server, &fixed(Target::AUTHENTICATE), deal(&api_keys), &config, true).await?);
        }
        if config.wants(CLIENT_CREDENTIALS) {
            let target = Target::client_credentials("/oauth/token");
            scenarios.push(measure(CLIENT_CREDENTIALS, &server, &fixed(target), deal(&basic), &config, true).await?);
        }
        if config.wants(REFRESH) && !refresh.is_empty() {
            let workload = Workload { target: Target::AUTHENTICATE, rotation: Rotation::Refresh };
            scenarios.push(measure(REFRESH, &server, &workload, deal(&refresh), &config, true).await?);
        }
        if config.wants(CHAIN) && !chain.is_empty() {
            let workload = Workload { target: Target::AUTHENTICATE, rotation: Rotation::Chain { every: 3 } };
            scenarios.push(measure(CHAIN, &server, &workload, deal(&chain), &config, true).await?);
        }
        drop(server);

        if config.wants(PEER) {
            let peer = ServerProcess::peer(&dir.path().join("peer.stderr"), PEER_CLIENT_ID, PEER_CLIENT_SECRET)?;
            println!("- peer (node oidc-provider {}): pid {} on {}", peer_version(), peer.pid(), peer.addr);
            let target = Target::client_credentials("/token");
            // node compiles its hot code while it runs (V8's JIT), and oidc-provider's CPU
            // per answer keeps falling for tens of seconds (docs/benchmarks.md, "The
            // peer's steady state"): untimed passes until it has settled, so the window
            // measures the warmed-up peer.
            warm_up_peer(&peer, &fixed(target.clone()), deal(&peer_basic)).await?;
            scenarios.push(measure(PEER, &peer, &fixed(target), deal(&peer_basic), &config, false).await?);
        }
        if config.wants(TRIVIAL_AGAIN) {
            scenarios.push(measure(TRIVIAL_AGAIN, &baseline, &fixed(Target::AUTHENTICATE), deal(&api_keys), &config, false).await?);
        }
        Ok::<_, String>(())
    })?;
    drop(baseline);
    println!("- load average at the end: {}", load_average());
    report(&scenarios);
    Ok(())
}

/// Runs untimed passes of `PEER_WARM_UP_PASS` against the peer until its server CPU
/// per answer settles (`PEER_SETTLED`), and prints each pass.
async fn warm_up_peer(
    peer: &ServerProcess,
    workload: &Workload,
    slots: Vec<Vec<HeaderValue>>,
) -> Result<(), String> {
    let started = Instant::now();
    let mut previous: Option<f64> = None;
    for pass in 1..=*PEER_WARM_UP_PASSES.end() {
        let start = Instant::now();
        let end = start + PEER_WARM_UP_PASS;
        let before = Sample::take(peer.pid());
        let outcome = load::run(
            peer.addr,
            workload,
            slots.clone(),
            Schedule::Timed {
                start,
                measure_from: start,
                end,
            },
        )
        .await?;
        let usage = Usage::between(before, Sample::take(peer.pid()));
        let cpu_per_answer = usage.server * 1e6 / outcome.ok.max(1) as f64;
        println!(
            "- peer warm-up pass {pass}: {:.0} req/s, {cpu_per_answer:.1} µs server CPU per answer, {} failures",
            outcome.ok as f64 / PEER_WARM_UP_PASS.as_secs_f64(),
            outcome.failures()
        );
        let settled = previous.is_some_and(|p| (cpu_per_answer - p).abs() <= PEER_SETTLED * p);
        if settled && pass >= *PEER_WARM_UP_PASSES.start() {
            println!(
                "- peer warm-up: settled after {pass} passes, {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        previous = Some(cpu_per_answer);
    }
    println!(
        "- peer warm-up: NOT settled after {} passes, {:.1} s (a loaded machine?)",
        PEER_WARM_UP_PASSES.end(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn peer_version() -> String {
    let package = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/peer/node_modules/oidc-provider/package.json");
    std::fs::read_to_string(package)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Runs one scenario: warm-up, then the measured window, sampling CPU times and (for
/// fleetauth) the server's metrics at both ends of the window.
async fn measure(
    name: &'static str,
    server: &ServerProcess,
    workload: &Workload,
    slots: Vec<Vec<HeaderValue>>,
    config: &Config,
    metrics: bool,
) -> Result<Scenario, String> {
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + config.warmup;
    let end = measure_from + config.measure;
    let load = tokio::spawn({
        let workload = workload.clone();
        let addr = server.addr;
        async move {
            load::run(
                addr,
                &workload,
                slots,
                Schedule::Timed {
                    start,
                    measure_from,
                    end,
                },
            )
            .await
        }
    });

    tokio::time::sleep_until(measure_from.into()).await;
    let metrics_before = if metrics {
        Some(load::get_text(server.addr, "/metrics").await?)
    } else {
        None
    };
    let profiled = metrics && std::env::var_os("FLEETAUTH_BENCH_CALLGRIND").is_some();
    if profiled {
        callgrind_control(server.pid(), &["--zero"])?;
    }
    let before = Sample::take(server.pid());
    tokio::time::sleep_until(end.into()).await;
    let after = Sample::take(server.pid());
    if profiled {
        // callgrind_control hands the description to a shell: letters, digits and _ only.
        let label: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        callgrind_control(server.pid(), &[&format!("--dump={label}")])?;
    }
    let memory = stats::memory_mib(server.pid());
    let metrics_after = if metrics {
        Some(load::get_text(server.addr, "/metrics").await?)
    } else {
        None
    };
    let outcome = load.await.map_err(|e| e.to_string())??;

    let metrics = metrics_before
        .zip(metrics_after)
        .map(|(b, a)| stats::delta(&stats::parse_prometheus(&b), &stats::parse_prometheus(&a)));
    if profiled {
        eprintln!(
            "  callgrind: {name}: {} requests sent in the window ({} 2xx) between zero and dump",
            outcome.sent, outcome.ok
        );
    }
    let scenario = Scenario {
        name,
        outcome,
        seconds: config.measure.as_secs_f64(),
        usage: Usage::between(before, after),
        metrics,
        memory,
    };
    eprintln!("  {name}: {:.0} req/s", scenario.rate());
    Ok(scenario)
}

/// `FLEETAUTH_BENCH_CALLGRIND`: the fleetauth server runs under
/// `valgrind --tool=callgrind` (through `FLEETAUTH_BENCH_SERVER_BIN`, a wrapper
/// script); its counters are zeroed when a measured window opens and dumped when it
/// closes, so a dump's instructions divided by the window's requests is the cost of
/// one request (docs/benchmarks.md, "Profile").
fn callgrind_control(pid: u32, args: &[&str]) -> Result<(), String> {
    let status = std::process::Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or(format!("callgrind_control {args:?} {pid}: {status}"))
}

fn ms(h: &hdrhistogram::Histogram<u64>, quantile: f64) -> String {
    if h.is_empty() {
        return "-".into();
    }
    format!("{:.2}", h.value_at_quantile(quantile) as f64 / 1000.0)
}

fn report(scenarios: &[Scenario]) {
    let find = |name: &str| scenarios.iter().find(|s| s.name == name);
    let trivials: Vec<f64> = scenarios
        .iter()
        .filter(|s| s.name.starts_with(TRIVIAL))
        .map(Scenario::rate)
        .collect();
    let trivial = trivials.iter().sum::<f64>() / trivials.len().max(1) as f64;
    let peer = find(PEER).map(Scenario::rate);
    let ratio = |rate: f64, of: Option<f64>| match of {
        Some(of) if of > 0.0 => format!("{:.2}", rate / of),
        _ => "-".into(),
    };
    println!();
    println!(
        "Ratios are against the mean of the trivial runs ({trivial:.0} req/s) and against the peer ({}).",
        peer.map_or("not run".into(), |p| format!("{p:.0} req/s"))
    );
    println!("CPU and disk: per request, over the measured window; 'other' is the rest of the machine, in cores.");
    println!();
    println!("| scenario | req/s | × trivial | × peer | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | non-2xx | transport errors | server CPU µs/req | client CPU µs/req | other CPU (cores) | server disk writes KB/req | server RSS / peak MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in scenarios {
        let h = &s.outcome.latency;
        let per_request = |total: f64, scale: f64| {
            if s.outcome.sent == 0 {
                "-".into()
            } else {
                format!("{:.1}", total * scale / s.outcome.sent as f64)
            }
        };
        let non_2xx = if s.outcome.non_2xx.is_empty() {
            "0".to_string()
        } else {
            s.outcome
                .non_2xx
                .iter()
                .map(|(status, n)| format!("{n} × {status}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |",
            s.name,
            s.rate(),
            ratio(s.rate(), Some(trivial)),
            ratio(s.rate(), peer),
            ms(h, 0.5),
            ms(h, 0.9),
            ms(h, 0.99),
            ms(h, 0.999),
            if h.is_empty() {
                "-".into()
            } else {
                format!("{:.2}", h.max() as f64 / 1000.0)
            },
            non_2xx,
            s.outcome.transport_errors,
            per_request(s.usage.server, 1e6),
            per_request(s.usage.client, 1e6),
            s.usage.other / s.seconds,
            per_request(s.usage.server_writes as f64, 1.0 / 1024.0),
            s.memory
                .map_or("-".into(), |(rss, peak)| format!("{rss:.0} / {peak:.0}")),
        );
    }
    println!();
    for s in scenarios {
        if s.outcome.warmup_failures > 0 {
            println!(
                "- {}: {} failures during the warm-up",
                s.name, s.outcome.warmup_failures
            );
        }
        if let Some(bytes) = s.outcome.response_bytes.checked_div(s.outcome.ok) {
            println!("- {}: {bytes} bytes per answer (headers + body)", s.name);
        }
        if let Some(failure) = &s.outcome.sample_failure {
            println!("- {}: first failure: {failure}", s.name);
        }
        let Some(metrics) = &s.metrics else { continue };
        let batches = Batches::from_delta(metrics);
        if batches.commits > 0.0 {
            println!(
                "- {} — SQLite group commit: {}",
                s.name,
                batches.describe(s.seconds)
            );
        }
        for grant in ["refresh_token", "api_key", "client_credentials"] {
            let labels = format!("{{grant=\"{grant}\"}}");
            if let Some(mean) =
                stats::histogram_mean(metrics, "fleetauth_token_issue_seconds", &labels)
            {
                println!(
                    "- {} — server-side time to issue ({grant} grant, mean): {:.2} ms",
                    s.name,
                    mean * 1000.0
                );
            }
        }
    }
    // CPU per request is far less sensitive to other load than req/s: it bounds the
    // ratio a CPU-bound machine could reach.
    let cpu_per_request =
        |s: &Scenario| (s.usage.server + s.usage.client) * 1e6 / s.outcome.sent.max(1) as f64;
    let trivial_cpu = scenarios
        .iter()
        .filter(|s| s.name.starts_with(TRIVIAL))
        .map(cpu_per_request)
        .sum::<f64>()
        / trivials.len().max(1) as f64;
    for s in scenarios.iter().filter(|s| !s.name.starts_with(TRIVIAL)) {
        println!(
            "- {}: {:.0} µs of CPU per request (server + load generator) vs {trivial_cpu:.0} µs for the trivial handler: \
             on a CPU-bound machine at most {:.1}% of its req/s",
            s.name,
            cpu_per_request(s),
            100.0 * trivial_cpu / cpu_per_request(s)
        );
    }

    println!();
    println!("Targets (issue 10; ratios to the trivial handler in this run, p99 < 5 ms at these connections):");
    let p99 = |s: &Scenario| s.outcome.latency.value_at_quantile(0.99) as f64 / 1000.0;
    let verdict = |met: bool| if met { "MET" } else { "NOT MET" };
    let at_least = |name: &str, share: f64| {
        if let Some(s) = find(name) {
            let r = s.rate() / trivial;
            let share_verdict = if share > 0.0 {
                format!(
                    " ≥ {:.0}% of trivial: {}",
                    share * 100.0,
                    verdict(r >= share)
                )
            } else {
                String::new()
            };
            println!(
                "- {name}{share_verdict} ({:.1}% of trivial); p99 {:.2} ms: {}; failures {}",
                r * 100.0,
                p99(s),
                verdict(p99(s) < 5.0),
                s.outcome.failures()
            );
        }
    };
    at_least(STATEFUL, 0.50);
    if let (Some(jwt), Some(key)) = (find(STATEFUL), find(WHOAMI_API_KEY)) {
        println!(
            "- {STATEFUL} never slower than {WHOAMI_API_KEY}: {} ({:.0} vs {:.0} req/s; server CPU {:.1} vs {:.1} µs/req)",
            verdict(jwt.rate() >= key.rate()),
            jwt.rate(),
            key.rate(),
            jwt.usage.server * 1e6 / jwt.outcome.sent.max(1) as f64,
            key.usage.server * 1e6 / key.outcome.sent.max(1) as f64,
        );
    }
    at_least(STATELESS, 0.60);
    at_least(REFRESH, 0.33);
    at_least(CHAIN, 0.25);
    at_least(API_KEY_EXCHANGE, 0.33);
    at_least(WHOAMI_API_KEY, 0.0);
    if let Some(cc) = find(CLIENT_CREDENTIALS) {
        let vs = peer.map(|p| cc.rate() / p);
        println!(
            "- {CLIENT_CREDENTIALS} ≥ 5 × peer: {} ({}); p99 {:.2} ms: {}; {:.1}% of trivial",
            vs.map_or("peer not run", |v| verdict(v >= 5.0)),
            vs.map_or("-".into(), |v| format!("{v:.2} ×")),
            p99(cc),
            verdict(p99(cc) < 5.0),
            100.0 * cc.rate() / trivial
        );
    }
}
