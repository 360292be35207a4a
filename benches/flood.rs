//! `cargo bench --bench flood`: the credential-guessing flood of issue 12, reproduced
//! over loopback, and what legitimate clients see meanwhile (docs/benchmarks.md).
//!
//! A fleetauth server runs in this process on its own runtime (2 worker threads); the
//! load runs on another. Phases, each measuring the same probes from 127.0.0.1:
//! - `quiet`: no flood;
//! - `flood-one-address`: 200 requests/s of `Authorization: ApiKey base64(<random
//!   id>:<random secret>)` from 127.0.0.2, for `FLEETAUTH_FLOOD_SECS` (30) seconds;
//! - `flood-many-addresses`: the same rate spread over 250 source addresses
//!   (127.0.1.1–127.0.1.250), so the per-address limits hold back little of it.
//!
//! Probes (sequential, in rounds of `FLEETAUTH_FLOOD_PROBE_MS`, 25 ms): a cached API-key
//! exchange and a JWT validation (`GET /api/fleet/whoami` with an access token) every
//! round, a first-time API-key exchange (a key never used before: argon2 on the path)
//! every 500 ms. The three phases run in turn `FLEETAUTH_FLOOD_REPEATS` (3) times, so
//! that a change in the load of the rest of a shared machine falls on every phase alike;
//! reported per phase (all its repetitions together): p50/p99/max of each probe, the
//! flood's answers by status, and each flood phase's p99 as a ratio to the quiet one.
//!
//! Knobs: `FLEETAUTH_FLOOD_SECS` (10 per phase and repetition), `FLEETAUTH_FLOOD_RATE`
//! (200 per second), `FLEETAUTH_FLOOD_PROBE_MS` (25), `FLEETAUTH_FLOOD_REPEATS` (3),
//! `FLEETAUTH_FLOOD_UNKNOWN_IDS` (`fail_fast`, or `dummy_hash` to make every
//! unknown id pay argon2). Traffic goes to 127.0.0.0/8 only; every phase ends by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use fleetauth::clock::SystemClock;
use fleetauth::config::Settings;
use fleetauth::secrets::UnknownIdPolicy;
use fleetauth::startup::Application;
use rand::RngCore;

struct Probe {
    name: &'static str,
    samples: Vec<Duration>,
    failures: usize,
}

impl Probe {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            samples: Vec::new(),
            failures: 0,
        }
    }

    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }

    fn report(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "{:<22} n={:<4} p50={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms  non-2xx={}",
            self.name,
            self.samples.len(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.quantile(1.0)),
            self.failures
        )
    }
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn random_api_key() -> String {
    let mut bytes = [0u8; 36];
    rand::rng().fill_bytes(&mut bytes);
    let id = STANDARD.encode(&bytes[..15]);
    let secret = STANDARD.encode(&bytes[15..]);
    format!("ApiKey {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().expect("an address"))
        .pool_max_idle_per_host(64)
        .build()
        .expect("a client")
}

#[derive(Default, Debug)]
struct FloodAnswers {
    sent: usize,
    by_status: std::collections::BTreeMap<u16, usize>,
    errors: usize,
}

/// Sends `rate` requests/s (open loop: one every 1/rate s, however slow the answers)
/// for `length`, from `sources` in turn.
async fn flood(
    base: String,
    sources: Vec<reqwest::Client>,
    rate: f64,
    length: Duration,
) -> FloodAnswers {
    let url = format!("{base}/api/fleet/authenticate");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<u16>>();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0usize;
    while started.elapsed() < length {
        ticker.tick().await;
        let client = sources[sent % sources.len()].clone();
        let url = url.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let status = tokio::time::timeout(
                Duration::from_secs(30),
                client
                    .post(url)
                    .header("Authorization", random_api_key())
                    .send(),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|r| r.status().as_u16());
            let _ = tx.send(status);
        });
        sent += 1;
    }
    drop(tx);
    let mut answers = FloodAnswers {
        sent,
        ..Default::default()
    };
    while let Some(status) = rx.recv().await {
        match status {
            Some(s) => *answers.by_status.entry(s).or_default() += 1,
            None => answers.errors += 1,
        }
    }
    answers
}

struct Fixtures {
    fresh_keys: Vec<String>,
    cached_keys: Vec<String>,
    access_tokens: Vec<String>,
}

/// One probe of each kind, collecting the samples of every repetition of a phase.
struct PhaseProbes {
    first_time: Probe,
    cached: Probe,
    jwt: Probe,
}

impl PhaseProbes {
    fn new() -> Self {
        Self {
            first_time: Probe::new("first-time API key"),
            cached: Probe::new("cached API key"),
            jwt: Probe::new("JWT validation"),
        }
    }
}

async fn probes(
    base: &str,
    fixtures: &mut Fixtures,
    length: Duration,
    round_length: Duration,
    into: &mut PhaseProbes,
) {
    let client = client_from("127.0.0.1");
    let PhaseProbes {
        first_time,
        cached,
        jwt,
    } = into;
    let first_time_every = (Duration::from_millis(500).as_secs_f64() / round_length.as_secs_f64())
        .round()
        .max(1.0) as usize;
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < length {
        let round = Instant::now();
        let cached_request = client
            .post(format!("{base}/api/fleet/authenticate"))
            .header(
                "Authorization",
                fixtures.cached_keys[n % fixtures.cached_keys.len()].clone(),
            );
        let jwt_request = client.get(format!("{base}/api/fleet/whoami")).header(
            "Authorization",
            format!(
                "Bearer {}",
                fixtures.access_tokens[n % fixtures.access_tokens.len()]
            ),
        );
        let mut requests = vec![(&mut *cached, cached_request), (&mut *jwt, jwt_request)];
        // A first-time exchange every 500 ms (each needs a key never used before).
        if n.is_multiple_of(first_time_every) {
            let fresh = fixtures.fresh_keys.pop().expect("enough fresh keys");
            requests.push((
                &mut *first_time,
                client
                    .post(format!("{base}/api/fleet/authenticate"))
                    .header("Authorization", fresh),
            ));
        }
        for (probe, request) in requests {
            let t = Instant::now();
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    probe.samples.push(t.elapsed());
                }
                _ => probe.failures += 1,
            }
        }
        n += 1;
        let pause = round_length.saturating_sub(round.elapsed());
        tokio::time::sleep(pause).await;
    }
}

fn main() {
    // `cargo bench` passes --bench; anything else (e.g. a test run) only gets a hint.
    if !std::env::args().any(|a| a == "--bench") {
        println!("flood: a load benchmark; run it with `cargo bench --bench flood`");
        return;
    }
    let flood_secs = env_f64("FLEETAUTH_FLOOD_SECS", 10.0);
    let repeats = env_f64("FLEETAUTH_FLOOD_REPEATS", 3.0).max(1.0) as usize;
    let round_length = Duration::from_secs_f64(env_f64("FLEETAUTH_FLOOD_PROBE_MS", 25.0) / 1000.0);
    let rate = env_f64("FLEETAUTH_FLOOD_RATE", 200.0);
    let unknown_ids = match std::env::var("FLEETAUTH_FLOOD_UNKNOWN_IDS").as_deref() {
        Ok("dummy_hash") => UnknownIdPolicy::DummyHash,
        _ => UnknownIdPolicy::FailFast,
    };
    let length = Duration::from_secs_f64(flood_secs);
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut settings = Settings::for_data_dir(dir.path());
    settings.credential_checks.unknown_ids = unknown_ids;
    settings.bootstrap_password = Some(fleetauth::config::Secret::new("flood-bench-password"));

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let (app, services) = server_rt.block_on(async {
        let app = Application::build(settings, Arc::new(SystemClock))
            .await
            .expect("server starts");
        let services = app.services().clone();
        (app, services)
    });
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server_rt.spawn(async move {
        app.run_until(async {
            let _ = stopped.await;
        })
        .await
    });

    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("load runtime");
    load_rt.block_on(async {
        // Fixtures: keys never used (one per first-time probe of every phase), keys used
        // once (cached), and access tokens of those agents.
        let probes_per_phase = (flood_secs * 2.0) as usize + 10;
        let phases = 3 * repeats;
        let now = services.tokens.now();
        let mut fresh_keys = Vec::new();
        for n in 0..probes_per_phase * phases {
            let agent = format!("fresh-{n}");
            let key = services.api_keys.create("bench", Some(&agent), None).await.expect("key");
            fleetauth::agents::enroll(services.store.as_ref(), &agent, now).await.expect("enroll");
            fresh_keys.push(format!("ApiKey {}", key.encoded));
        }
        let client = client_from("127.0.0.1");
        let mut cached_keys = Vec::new();
        let mut access_tokens = Vec::new();
        for n in 0..20 {
            let agent = format!("cached-{n}");
            let key = services.api_keys.create("bench", Some(&agent), None).await.expect("key");
            fleetauth::agents::enroll(services.store.as_ref(), &agent, now).await.expect("enroll");
            let authorization = format!("ApiKey {}", key.encoded);
            let pair: serde_json::Value = client
                .post(format!("{base}/api/fleet/authenticate"))
                .header("Authorization", &authorization)
                .send()
                .await
                .expect("exchange")
                .json()
                .await
                .expect("a pair");
            let access = pair["access_token"].as_str().expect("an access token").to_string();
            // Promote the pair, so the token validated below is the current one.
            client
                .get(format!("{base}/api/fleet/whoami"))
                .header("Authorization", format!("Bearer {access}"))
                .send()
                .await
                .expect("whoami");
            cached_keys.push(authorization);
            access_tokens.push(access);
        }
        let mut fixtures = Fixtures {
            fresh_keys,
            cached_keys,
            access_tokens,
        };
        println!(
            "flood bench: {rate} req/s for {flood_secs} s per flood phase; unknown_ids = {}; argon2 budget = {} at once",
            unknown_ids.as_str(),
            fleetauth::config::Settings::for_data_dir(dir.path()).credential_checks.max_concurrent_hashes,
        );
        let one = vec![client_from("127.0.0.2")];
        let many: Vec<_> = (1..=250).map(|n| client_from(&format!("127.0.1.{n}"))).collect();
        let phases = [
            ("quiet", None),
            ("flood-one-address", Some(one)),
            ("flood-many-addresses", Some(many)),
        ];
        let mut results: Vec<(PhaseProbes, FloodAnswers, u64)> = (0..phases.len())
            .map(|_| (PhaseProbes::new(), FloodAnswers::default(), 0))
            .collect();
        for repetition in 1..=repeats {
            for ((phase, sources), (phase_probes, phase_answers, argon2_runs)) in
                phases.iter().zip(results.iter_mut())
            {
                let runs_before = services.secrets.argon2_runs();
                let started = Instant::now();
                let flooding = sources
                    .clone()
                    .map(|sources| tokio::spawn(flood(base.clone(), sources, rate, length)));
                probes(&base, &mut fixtures, length, round_length, phase_probes).await;
                if let Some(handle) = flooding {
                    let answers = handle.await.expect("flood task");
                    phase_answers.sent += answers.sent;
                    phase_answers.errors += answers.errors;
                    for (status, count) in answers.by_status {
                        *phase_answers.by_status.entry(status).or_default() += count;
                    }
                }
                *argon2_runs += services.secrets.argon2_runs() - runs_before;
                println!(
                    "   ran {phase} {repetition}/{repeats} ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                // Let the per-address buckets of the flood refill between phases.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        let quiet_p99 = |pick: fn(&PhaseProbes) -> &Probe| pick(&results[0].0).quantile(0.99);
        for ((phase, sources), (phase_probes, answers, argon2_runs)) in phases.iter().zip(&results) {
            println!("== {phase} ({repeats} × {flood_secs} s)");
            let picks: [fn(&PhaseProbes) -> &Probe; 3] = [|p| &p.first_time, |p| &p.cached, |p| &p.jwt];
            for pick in picks {
                let probe = pick(phase_probes);
                let ratio = probe.quantile(0.99).as_secs_f64() / quiet_p99(pick).as_secs_f64().max(1e-9);
                println!("   {}  p99 = {ratio:.2} × quiet", probe.report());
            }
            if sources.is_some() {
                println!(
                    "   flood: sent {} answers by status {:?}, transport errors {}",
                    answers.sent, answers.by_status, answers.errors
                );
            }
            println!("   argon2 verifications in the phase: {argon2_runs}");
        }
    });
    let _ = stop.send(());
    let _ = server_rt.block_on(server);
}
