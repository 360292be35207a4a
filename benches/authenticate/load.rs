//! The closed-loop load generator: `connections` HTTP/1.1 keep-alive connections
//! (hyper 1 client, `TCP_NODELAY`), each driven by its own task that sends one
//! `POST /api/fleet/authenticate` at a time and waits for the whole response before
//! the next. Each request's latency (send to last body byte) goes into an HDR
//! histogram (microseconds, 3 significant digits).
//!
//! Each connection owns a disjoint set of credentials (`slots`) and goes round them, so
//! no two requests for one agent are ever in flight together. With
//! [`Credentials::Rotating`] a slot holds an agent's latest refresh token and is
//! replaced by the `X-Fleet-Refresh-Token` of each 2xx answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub const PATH: &str = "/api/fleet/authenticate";

/// What each connection presents, slot by slot.
pub enum Credentials {
    /// The same `Authorization` values again and again (API keys, baseline).
    Fixed(Vec<Vec<HeaderValue>>),
    /// `Authorization: Bearer <refresh token>`, replaced by each answer's new token.
    Rotating(Vec<Vec<HeaderValue>>),
}

impl Credentials {
    /// Deals `values` round-robin onto `connections` connections.
    pub fn deal(
        values: impl IntoIterator<Item = HeaderValue>,
        connections: usize,
    ) -> Vec<Vec<HeaderValue>> {
        let mut dealt = vec![Vec::new(); connections];
        for (i, value) in values.into_iter().enumerate() {
            dealt[i % connections].push(value);
        }
        dealt.retain(|slots| !slots.is_empty());
        dealt
    }
}

/// When to send: a warm-up, then the measured window; or one pass over every slot.
#[derive(Clone, Copy)]
pub enum Schedule {
    Timed {
        start: Instant,
        measure_from: Instant,
        end: Instant,
    },
    OnePass,
}

/// What one run measured.
pub struct Outcome {
    /// Latencies of 2xx answers to requests sent in the measured window (µs).
    pub latency: Histogram<u64>,
    /// Requests sent in the measured window (any outcome).
    pub sent: u64,
    pub ok: u64,
    /// Bytes of the measured 2xx answers: body plus header lines (status line excluded).
    pub response_bytes: u64,
    /// Non-2xx answers in the measured window, by status.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Connection-level failures in the measured window.
    pub transport_errors: u64,
    /// Non-2xx answers and failures during the warm-up (reported, not measured).
    pub warmup_failures: u64,
    /// Wall time of a one-pass run.
    pub elapsed: Duration,
    /// The credentials as they are after the run (new refresh tokens).
    pub slots: Vec<Vec<HeaderValue>>,
    /// An example of a failed answer's body, to show in the report.
    pub sample_failure: Option<String>,
}

impl Outcome {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            sent: 0,
            ok: 0,
            response_bytes: 0,
            non_2xx: BTreeMap::new(),
            transport_errors: 0,
            warmup_failures: 0,
            elapsed: Duration::ZERO,
            slots: Vec::new(),
            sample_failure: None,
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
        self.sent += other.sent;
        self.ok += other.ok;
        self.response_bytes += other.response_bytes;
        for (status, n) in other.non_2xx {
            *self.non_2xx.entry(status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.warmup_failures += other.warmup_failures;
        self.slots.extend(other.slots);
        if self.sample_failure.is_none() {
            self.sample_failure = other.sample_failure;
        }
    }

    pub fn failures(&self) -> u64 {
        self.non_2xx.values().sum::<u64>() + self.transport_errors
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Runs the load; returns when every connection has stopped.
pub async fn run(
    addr: SocketAddr,
    credentials: Credentials,
    schedule: Schedule,
) -> Result<Outcome, String> {
    let (rotate, per_connection) = match credentials {
        Credentials::Fixed(c) => (false, c),
        Credentials::Rotating(c) => (true, c),
    };
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(per_connection.len());
    for slots in per_connection {
        let sender = connect(addr).await?;
        tasks.push(tokio::spawn(connection_loop(
            addr, sender, slots, rotate, schedule,
        )));
    }
    let mut total = Outcome::new();
    for task in tasks {
        total.merge(task.await.map_err(|e| format!("load task: {e}"))??);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

async fn connection_loop(
    addr: SocketAddr,
    mut sender: SendRequest<Empty<Bytes>>,
    mut slots: Vec<HeaderValue>,
    rotate: bool,
    schedule: Schedule,
) -> Result<Outcome, String> {
    let mut outcome = Outcome::new();
    let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
    if let Schedule::Timed { start, .. } = schedule {
        tokio::time::sleep_until(start.into()).await;
    }
    let mut next = 0usize;
    loop {
        let slot = next % slots.len();
        match schedule {
            Schedule::OnePass if next == slots.len() => break,
            Schedule::Timed { end, .. } if Instant::now() >= end => break,
            _ => {}
        }
        next += 1;
        let request = Request::post(PATH)
            .header(HOST, host.clone())
            .header(AUTHORIZATION, slots[slot].clone())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        if sender.ready().await.is_err() {
            sender = connect(addr).await?;
        }
        let sent_at = Instant::now();
        let measured = match schedule {
            Schedule::Timed { measure_from, .. } => sent_at >= measure_from,
            Schedule::OnePass => true,
        };
        let answer = match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                let new_token = response.headers().get("x-fleet-refresh-token").cloned();
                // "name: value\r\n" per header line.
                let header_bytes: usize = response
                    .headers()
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len() + 4)
                    .sum();
                match response.into_body().collect().await {
                    Ok(body) => Ok((status, new_token, header_bytes, body.to_bytes())),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let latency = sent_at.elapsed();
        match answer {
            Ok((status, new_token, header_bytes, body)) if status.is_success() => {
                if rotate {
                    let token = new_token.ok_or("a 2xx answer without X-Fleet-Refresh-Token")?;
                    let mut bearer = b"Bearer ".to_vec();
                    bearer.extend_from_slice(token.as_bytes());
                    slots[slot] = HeaderValue::from_bytes(&bearer).map_err(|e| e.to_string())?;
                }
                if measured {
                    outcome.sent += 1;
                    outcome.ok += 1;
                    outcome.response_bytes += (header_bytes + body.len()) as u64;
                    outcome
                        .latency
                        .saturating_record(latency.as_micros().max(1) as u64);
                }
            }
            Ok((status, _, _, body)) => {
                if outcome.sample_failure.is_none() {
                    outcome.sample_failure =
                        Some(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
                if measured {
                    outcome.sent += 1;
                    *outcome.non_2xx.entry(status.as_u16()).or_default() += 1;
                } else {
                    outcome.warmup_failures += 1;
                }
            }
            Err(e) => {
                if outcome.sample_failure.is_none() {
                    outcome.sample_failure = Some(format!("transport: {e}"));
                }
                if measured {
                    outcome.sent += 1;
                    outcome.transport_errors += 1;
                } else {
                    outcome.warmup_failures += 1;
                }
                sender = connect(addr).await?;
            }
        }
    }
    outcome.slots = vec![slots];
    Ok(outcome)
}

/// `GET path` on a fresh connection; the body as text (for `/metrics`).
pub async fn get_text(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut sender = connect(addr).await?;
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("GET {path}: {status}"));
    }
    String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
}
