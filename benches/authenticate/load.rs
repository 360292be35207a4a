//! The closed-loop load generator: `connections` HTTP/1.1 keep-alive connections
//! (hyper 1 client, `TCP_NODELAY`), each driven by its own task that sends one request
//! at a time and waits for the whole response before the next. Each request's latency
//! (send to last body byte) goes into an HDR histogram (microseconds, 3 significant
//! digits).
//!
//! Each connection owns a disjoint set of credentials (`slots`) and goes round them, so
//! no two requests for one agent are ever in flight together. What a connection sends
//! is a [`Workload`]: one [`Target`] (method, path, body) and what to do with each
//! answer ([`Rotation`]): nothing, keep the new refresh token, or keep it and use the
//! new access token on `whoami` every few refreshes (the agent chain).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One kind of request.
#[derive(Clone)]
pub struct Target {
    pub method: Method,
    pub path: &'static str,
    /// A form body (`application/x-www-form-urlencoded`), or none.
    pub form: Option<&'static str>,
}

impl Target {
    pub const AUTHENTICATE: Target = Target {
        method: Method::POST,
        path: "/api/fleet/authenticate",
        form: None,
    };
    pub const WHOAMI: Target = Target {
        method: Method::GET,
        path: "/api/fleet/whoami",
        form: None,
    };
    /// `POST path` with `grant_type=client_credentials`.
    pub const fn client_credentials(path: &'static str) -> Target {
        Target {
            method: Method::POST,
            path,
            form: Some("grant_type=client_credentials"),
        }
    }
}

/// What to do with each 2xx answer.
#[derive(Clone, Copy)]
pub enum Rotation {
    /// Present the same `Authorization` value again next time (API keys, JWTs, Basic).
    Fixed,
    /// The slot is `Bearer <refresh token>`; replace it with the answer's
    /// `X-Fleet-Refresh-Token`.
    Refresh,
    /// As `Refresh`, and after every `every`-th refresh of the connection, one
    /// `GET /api/fleet/whoami` with the answer's `X-Fleet-Access-Token` (its first use,
    /// so it promotes the pending pair). Both requests are counted.
    Chain { every: usize },
}

/// What one connection sends.
#[derive(Clone)]
pub struct Workload {
    pub target: Target,
    pub rotation: Rotation,
}

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

    /// Records one answer (or transport failure) to a request sent at `sent_at`.
    fn record(&mut self, measured: bool, latency: Duration, answer: &Result<Answer, String>) {
        match answer {
            Ok(a) if a.status.is_success() => {
                if measured {
                    self.sent += 1;
                    self.ok += 1;
                    self.response_bytes += a.bytes as u64;
                    self.latency
                        .saturating_record(latency.as_micros().max(1) as u64);
                }
            }
            Ok(a) => {
                if self.sample_failure.is_none() {
                    self.sample_failure = Some(format!(
                        "{}: {}",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    ));
                }
                if measured {
                    self.sent += 1;
                    *self.non_2xx.entry(a.status.as_u16()).or_default() += 1;
                } else {
                    self.warmup_failures += 1;
                }
            }
            Err(e) => {
                if self.sample_failure.is_none() {
                    self.sample_failure = Some(format!("transport: {e}"));
                }
                if measured {
                    self.sent += 1;
                    self.transport_errors += 1;
                } else {
                    self.warmup_failures += 1;
                }
            }
        }
    }
}

/// One answer, as far as the load generator reads it.
struct Answer {
    status: hyper::StatusCode,
    refresh_token: Option<HeaderValue>,
    access_token: Option<HeaderValue>,
    /// Header lines plus body.
    bytes: usize,
    body: Bytes,
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
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
    workload: &Workload,
    per_connection: Vec<Vec<HeaderValue>>,
    schedule: Schedule,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(per_connection.len());
    for slots in per_connection {
        let sender = connect(addr).await?;
        tasks.push(tokio::spawn(connection_loop(
            addr,
            sender,
            slots,
            workload.clone(),
            schedule,
        )));
    }
    let mut total = Outcome::new();
    for task in tasks {
        total.merge(task.await.map_err(|e| format!("load task: {e}"))??);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// Sends one request on `sender` (reconnecting first if the connection was closed)
/// and reads the whole answer.
async fn send(
    addr: SocketAddr,
    sender: &mut SendRequest<Full<Bytes>>,
    host: &HeaderValue,
    target: &Target,
    authorization: &HeaderValue,
) -> Result<Result<Answer, String>, String> {
    let mut request = Request::builder()
        .method(target.method.clone())
        .uri(target.path)
        .header(HOST, host.clone())
        .header(AUTHORIZATION, authorization.clone());
    if target.form.is_some() {
        request = request.header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    let request = request
        .body(Full::new(Bytes::from_static(
            target.form.unwrap_or("").as_bytes(),
        )))
        .map_err(|e| e.to_string())?;
    if sender.ready().await.is_err() {
        *sender = connect(addr).await?;
    }
    let answer = match sender.send_request(request).await {
        Ok(response) => {
            let status = response.status();
            let refresh_token = response.headers().get("x-fleet-refresh-token").cloned();
            let access_token = response.headers().get("x-fleet-access-token").cloned();
            // "name: value\r\n" per header line.
            let header_bytes: usize = response
                .headers()
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum();
            match response.into_body().collect().await {
                Ok(body) => {
                    let body = body.to_bytes();
                    Ok(Answer {
                        status,
                        refresh_token,
                        access_token,
                        bytes: header_bytes + body.len(),
                        body,
                    })
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    if answer.is_err() {
        *sender = connect(addr).await?;
    }
    Ok(answer)
}

fn bearer(token: &HeaderValue) -> Result<HeaderValue, String> {
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(token.as_bytes());
    HeaderValue::from_bytes(&value).map_err(|e| e.to_string())
}

async fn connection_loop(
    addr: SocketAddr,
    mut sender: SendRequest<Full<Bytes>>,
    mut slots: Vec<HeaderValue>,
    workload: Workload,
    schedule: Schedule,
) -> Result<Outcome, String> {
    let mut outcome = Outcome::new();
    let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
    if let Schedule::Timed { start, .. } = schedule {
        tokio::time::sleep_until(start.into()).await;
    }
    let measured_at = |at: Instant| match schedule {
        Schedule::Timed { measure_from, .. } => at >= measure_from,
        Schedule::OnePass => true,
    };
    let mut next = 0usize;
    loop {
        let slot = next % slots.len();
        match schedule {
            Schedule::OnePass if next == slots.len() => break,
            Schedule::Timed { end, .. } if Instant::now() >= end => break,
            _ => {}
        }
        next += 1;
        let sent_at = Instant::now();
        let answer = send(addr, &mut sender, &host, &workload.target, &slots[slot]).await?;
        outcome.record(measured_at(sent_at), sent_at.elapsed(), &answer);
        let Ok(answer) = answer else { continue };
        if !answer.status.is_success() {
            continue;
        }
        match workload.rotation {
            Rotation::Fixed => {}
            Rotation::Refresh | Rotation::Chain { .. } => {
                let token = answer
                    .refresh_token
                    .as_ref()
                    .ok_or("a 2xx answer without X-Fleet-Refresh-Token")?;
                slots[slot] = bearer(token)?;
            }
        }
        if let Rotation::Chain { every } = workload.rotation {
            if next.is_multiple_of(every.max(1)) {
                let access = answer
                    .access_token
                    .as_ref()
                    .ok_or("a 2xx answer without X-Fleet-Access-Token")?;
                let sent_at = Instant::now();
                let used =
                    send(addr, &mut sender, &host, &Target::WHOAMI, &bearer(access)?).await?;
                outcome.record(measured_at(sent_at), sent_at.elapsed(), &used);
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
        .body(Full::new(Bytes::new()))
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
