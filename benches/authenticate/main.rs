//! `cargo bench --bench authenticate`: throughput and latency of
//! `POST /api/fleet/authenticate` over loopback, against a trivial axum handler measured
//! by the same load generator in the same run. See docs/benchmarks.md for what it
//! does, how to read it, and recorded results.
//!
//! Scenarios, in this order, each a warm-up then a fixed measured window:
//! 1. `baseline`: the trivial handler (a separate process, see [`servers`]);
//! 2. `refresh`: every agent presents its latest refresh token and keeps the new one
//!    from the answer (each 2xx promotes the pending pair and stores a new one: a
//!    durable SQLite commit);
//! 3. `api-key`: `Authorization: ApiKey`, after one untimed pass that uses every key
//!    once (so the verification cache is warm and argon2 is off the measured path);
//! 4. `baseline` again, to see how much the machine drifted during the run.
//!
//! Knobs (environment): `FLEETAUTH_BENCH_SECS` (measured seconds per scenario, 10),
//! `FLEETAUTH_BENCH_WARMUP_SECS` (2), `FLEETAUTH_BENCH_CONNECTIONS` (64),
//! `FLEETAUTH_BENCH_AGENTS` (10000), `FLEETAUTH_BENCH_API_KEYS` (1000),
//! `FLEETAUTH_BENCH_ROTATIONS` (refreshes per agent during setup; `MAX_RETIRED + 1`),
//! `FLEETAUTH_BENCH_DIR` (parent of the temporary data dir; the system temp dir),
//! `FLEETAUTH_BENCH_SERVER_BIN` (run that fleetauth binary instead of this checkout's
//! library). Traffic goes to 127.0.0.1 only, and every scenario stops by itself.
//!
//! Layout: [`setup`] fills the store, [`servers`] runs the two servers, [`load`] is the
//! load generator, [`stats`] reads CPU times and server metrics; this file orchestrates
//! and prints the report.

mod load;
mod servers;
mod setup;
mod stats;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fleetauth::tokens::rotation::MAX_RETIRED;
use hyper::header::HeaderValue;

use load::{Credentials, Outcome, Schedule};
use servers::ServerProcess;
use stats::{Batches, Sample, Usage};

struct Config {
    measure: Duration,
    warmup: Duration,
    connections: usize,
    agents: usize,
    api_keys: usize,
    rotations: usize,
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
        let agents = env_number("FLEETAUTH_BENCH_AGENTS", 10_000.0)? as usize;
        let config = Self {
            measure: Duration::from_secs_f64(env_number("FLEETAUTH_BENCH_SECS", 10.0)?.max(0.1)),
            warmup: Duration::from_secs_f64(env_number("FLEETAUTH_BENCH_WARMUP_SECS", 2.0)?),
            connections: (env_number("FLEETAUTH_BENCH_CONNECTIONS", 64.0)? as usize).max(1),
            agents: agents.max(1),
            api_keys: (env_number("FLEETAUTH_BENCH_API_KEYS", 1_000.0)? as usize)
                .clamp(1, agents.max(1)),
            rotations: env_number("FLEETAUTH_BENCH_ROTATIONS", (MAX_RETIRED + 1) as f64)? as usize,
        };
        Ok(config)
    }
}

/// One measured scenario.
struct Scenario {
    name: &'static str,
    outcome: Outcome,
    seconds: f64,
    usage: Usage,
    /// Server metrics over the window (fleetauth only).
    metrics: Option<BTreeMap<String, f64>>,
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
    println!("# POST /api/fleet/authenticate load benchmark");
    println!();
    println!(
        "- machine: {cores} cores (available_parallelism), CPU {}",
        cpu_model()
    );
    println!("- data dir file system: {}", filesystem_of(dir.path()));
    println!(
        "- {} connections (HTTP/1.1 keep-alive, closed loop), {:.0} s warm-up + {:.0} s measured per scenario",
        config.connections,
        config.warmup.as_secs_f64(),
        config.measure.as_secs_f64()
    );
    println!(
        "- {} agents enrolled, {} of them with an API key; each agent's pair rotated {} times before the run",
        config.agents, config.api_keys, config.rotations
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

    let baseline = ServerProcess::baseline(&dir.path().join("baseline.stderr"))?;
    let server = ServerProcess::fleetauth(&data_dir, &dir.path().join("fleetauth.stderr"))?;
    println!(
        "- servers: fleetauth pid {} on {}, baseline pid {} on {}",
        server.pid(),
        server.addr,
        baseline.pid(),
        baseline.addr
    );

    let header = |s: String| HeaderValue::try_from(s).map_err(|e| e.to_string());
    let api_keys: Vec<HeaderValue> = enrolled
        .api_keys
        .iter()
        .map(|k| header(format!("ApiKey {k}")))
        .collect::<Result<_, _>>()?;
    let refresh: Vec<HeaderValue> = enrolled
        .refresh_tokens
        .iter()
        .map(|t| header(format!("Bearer {t}")))
        .collect::<Result<_, _>>()?;
    let deal =
        |values: &[HeaderValue]| Credentials::deal(values.iter().cloned(), config.connections);

    let mut scenarios = Vec::new();
    runtime.block_on(async {
        // The baseline gets the same Authorization headers as the API-key scenario.
        scenarios.push(measure("baseline", &baseline, Credentials::Fixed(deal(&api_keys)), &config, false).await?);
        scenarios.push(measure("refresh", &server, Credentials::Rotating(deal(&refresh)), &config, true).await?);

        let warm = load::run(server.addr, Credentials::Fixed(deal(&api_keys)), Schedule::OnePass).await?;
        println!(
            "- API-key warm-up: each of the {} keys used once in {:.1} s (argon2id verification), {} failures",
            api_keys.len(),
            warm.elapsed.as_secs_f64(),
            warm.failures()
        );
        if let Some(failure) = &warm.sample_failure {
            println!("  - e.g. {failure}");
        }
        scenarios.push(measure("api-key (warm)", &server, Credentials::Fixed(deal(&api_keys)), &config, true).await?);
        scenarios.push(measure("baseline (again)", &baseline, Credentials::Fixed(deal(&api_keys)), &config, false).await?);
        Ok::<_, String>(())
    })?;
    drop(server);
    drop(baseline);
    report(&scenarios);
    Ok(())
}

/// Runs one scenario: warm-up, then the measured window, sampling CPU times and (for
/// fleetauth) the server's metrics at both ends of the window.
async fn measure(
    name: &'static str,
    server: &ServerProcess,
    credentials: Credentials,
    config: &Config,
    metrics: bool,
) -> Result<Scenario, String> {
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + config.warmup;
    let end = measure_from + config.measure;
    let load = tokio::spawn(load::run(
        server.addr,
        credentials,
        Schedule::Timed {
            start,
            measure_from,
            end,
        },
    ));

    tokio::time::sleep_until(measure_from.into()).await;
    let metrics_before = if metrics {
        Some(load::get_text(server.addr, "/metrics").await?)
    } else {
        None
    };
    let before = Sample::take(server.pid());
    tokio::time::sleep_until(end.into()).await;
    let after = Sample::take(server.pid());
    let metrics_after = if metrics {
        Some(load::get_text(server.addr, "/metrics").await?)
    } else {
        None
    };
    let outcome = load.await.map_err(|e| e.to_string())??;

    let metrics = metrics_before
        .zip(metrics_after)
        .map(|(b, a)| stats::delta(&stats::parse_prometheus(&b), &stats::parse_prometheus(&a)));
    let scenario = Scenario {
        name,
        outcome,
        seconds: config.measure.as_secs_f64(),
        usage: Usage::between(before, after),
        metrics,
    };
    eprintln!("  {name}: {:.0} req/s", scenario.rate());
    Ok(scenario)
}

fn ms(h: &hdrhistogram::Histogram<u64>, quantile: f64) -> String {
    if h.is_empty() {
        return "-".into();
    }
    format!("{:.2}", h.value_at_quantile(quantile) as f64 / 1000.0)
}

fn report(scenarios: &[Scenario]) {
    let baselines: Vec<f64> = scenarios
        .iter()
        .filter(|s| s.name.starts_with("baseline"))
        .map(Scenario::rate)
        .collect();
    let baseline = baselines.iter().sum::<f64>() / baselines.len().max(1) as f64;
    println!();
    println!("Ratios are against the mean of the two baseline runs ({baseline:.0} req/s).");
    println!("CPU and disk: per request, over the measured window; 'other' is the rest of the machine, in cores.");
    println!();
    println!("| scenario | req/s | × baseline | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | non-2xx | transport errors | server CPU µs/req | client CPU µs/req | other CPU (cores) | server disk writes KB/req |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
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
            "| {} | {:.0} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |",
            s.name,
            s.rate(),
            s.rate() / baseline,
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
        println!(
            "- {} — SQLite group commit: {}",
            s.name,
            Batches::from_delta(metrics).describe(s.seconds)
        );
        for grant in ["refresh_token", "api_key"] {
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
    let each_baseline: Vec<String> = baselines.iter().map(|b| format!("{b:.0}")).collect();
    for s in scenarios.iter().filter(|s| !s.name.starts_with("baseline")) {
        let ratios: Vec<String> = baselines
            .iter()
            .map(|b| format!("{:.1}%", 100.0 * s.rate() / b))
            .collect();
        println!(
            "- {}: {} of the baseline runs' req/s ({})",
            s.name,
            ratios.join(", "),
            each_baseline.join(", ")
        );
    }
    // CPU per request is far less sensitive to other load than req/s: it bounds the
    // ratio a CPU-bound machine could reach.
    let cpu_per_request =
        |s: &Scenario| (s.usage.server + s.usage.client) * 1e6 / s.outcome.sent.max(1) as f64;
    let baseline_cpu = scenarios
        .iter()
        .filter(|s| s.name.starts_with("baseline"))
        .map(cpu_per_request)
        .sum::<f64>()
        / baselines.len().max(1) as f64;
    for s in scenarios.iter().filter(|s| !s.name.starts_with("baseline")) {
        println!(
            "- {}: {:.0} µs of CPU per request (server + load generator) vs {baseline_cpu:.0} µs for the baseline: \
             on a CPU-bound machine at most {:.1}% of the baseline's req/s",
            s.name,
            cpu_per_request(s),
            100.0 * baseline_cpu / cpu_per_request(s)
        );
    }
    if let Some(refresh) = scenarios.iter().find(|s| s.name == "refresh") {
        let ratio = refresh.rate() / baseline;
        let p99_ms = refresh.outcome.latency.value_at_quantile(0.99) as f64 / 1000.0;
        let met = ratio >= 0.30 && p99_ms < 10.0 && refresh.outcome.failures() == 0;
        println!();
        println!(
            "Target (refresh ≥ 30% of baseline req/s, p99 < 10 ms): {} (ratio {:.1}%, p99 {:.2} ms)",
            if met { "MET" } else { "NOT MET" },
            ratio * 100.0,
            p99_ms
        );
    }
}
