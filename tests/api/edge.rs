//! The HTTP edge over raw TCP on loopback: slow and idle connections are closed by
//! their timeouts, connections beyond the cap wait until one closes, `EMFILE` neither
//! stops nor spins the accept loop, every error the HTTP layers answer is in its API
//! family's format, and keep-alive never silently loses an answer. Every wait is
//! bounded; a bound that is exceeded fails the test.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::common::process::{self, Server};
use crate::common::requests::get_status;
use crate::helpers::{spawn_app_with, TestApp};

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// A response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} {:?}",
                self.headers,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` (at most 10 s).
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let read = async {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed before a response: {buffer:?}");
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_string(), value.trim().to_string())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = buffer[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "connection closed inside a body");
            body.extend_from_slice(&chunk[..n]);
        }
        RawResponse {
            status,
            headers,
            body,
        }
    };
    timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s")
}

/// Waits (at most `bound`) until the server closes the connection; returns how long
/// that took. Whatever the server sends before is ignored.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Duration {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match timeout(
            bound.saturating_sub(start.elapsed()),
            stream.read(&mut chunk),
        )
        .await
        {
            Err(_) => panic!("still open after {bound:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_slowloris_connection_is_closed_at_the_header_timeout() {
    let app = spawn_app_with(|s| {
        s.connections.header_read_timeout = Duration::from_secs(1);
        s.connections.idle_timeout = Duration::from_secs(20);
    })
    .await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    let start = Instant::now();
    // One header byte every 200 ms, never finishing the head.
    let mut closed = false;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 64];
        match timeout(Duration::from_millis(200), stream.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => panic!("an answer to an incomplete head"),
            Err(_) => {}
        }
        assert!(start.elapsed() < Duration::from_secs(6), "still open after 6 s");
    }
    assert!(closed, "the slow head was never cut off");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed too early: {elapsed:?}"
    );

    // The same for a connection that opens and sends nothing at all.
    let mut silent = TcpStream::connect(addr(&app)).await.unwrap();
    let elapsed = closed_within(&mut silent, Duration::from_secs(6)).await;
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    // The server answers normally meanwhile.
    assert_eq!(get_status(&app.client, app.url("/healthz")).await, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let app = spawn_app_with(|s| {
        s.connections.header_read_timeout = Duration::from_secs(20);
        s.connections.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    for _ in 0..2 {
        // Requests well within the idle timeout keep the connection.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let response = read_response(&mut stream).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), None);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let elapsed = closed_within(&mut stream, Duration::from_secs(6)).await;
    // 300 ms already slept; the header timeout (20 s) cannot be what closed it.
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = spawn_app_with(|s| {
        s.connections.max_connections = 2;
        s.connections.header_read_timeout = Duration::from_secs(30);
        s.connections.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let mut first = TcpStream::connect(addr(&app)).await.unwrap();
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut first).await.status, 200);
    let second = TcpStream::connect(addr(&app)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The third is queued in the listen backlog: connected, but not served.
    let mut third = TcpStream::connect(addr(&app)).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut probe = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(1500), third.read(&mut probe))
            .await
            .is_err(),
        "a connection beyond the cap was served"
    );
    // Once one of the two closes, the queued one is served.
    drop(second);
    let response = read_response(&mut third).await;
    assert_eq!(response.status, 200);
    drop(first);
}

#[tokio::test]
async fn too_many_open_files_pauses_accept_without_spinning_and_recovers() {
    // Its own process, with a small hard limit of open files (fleetauth raises the soft
    // limit to the hard one at start-up), many connections allowed and long timeouts, so
    // that `accept` fails with EMFILE while the test holds connections open.
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {} serve --listen 127.0.0.1:0 --data-dir {}",
            process::BIN,
            data.path().display()
        ))
        .env("FLEETAUTH_CONNECTIONS__HEADER_READ_TIMEOUT", "60s")
        .env("FLEETAUTH_CONNECTIONS__IDLE_TIMEOUT", "60s")
        .env("FLEETAUTH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let stderr = child.stderr.take().unwrap();
    let server = Server::from_child(child);
    let address = server.started["listen"].as_str().unwrap().to_string();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    let saw_emfile = (|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match lines_rx.recv_timeout(left) {
                Ok(line) if line.contains("accept failed") => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    })();
    assert!(saw_emfile, "accept never reported EMFILE");

    // While out of descriptors, the loop must not spin: the server uses well under
    // half a core over two seconds (a spinning accept loop uses all of one).
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    };
    let before = cpu(server.child.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu(server.child.id()) - before;
    assert!(used < 1.0, "the accept loop spun: {used} s of CPU in 2 s");

    // Closing the connections frees descriptors; the server serves again.
    held.clear();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.get(format!("http://{address}/healthz")).send().await {
            Ok(response) if response.status() == 200 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("the server did not recover: {other:?}"),
        }
    }
    drop(server);
}

#[test]
fn plain_http_on_a_non_loopback_address_warns_once_at_start_up() {
    for (listen, warns) in [("0.0.0.0:0", true), ("127.0.0.1:0", false)] {
        let data = tempfile::tempdir().unwrap();
        let mut command = Command::new(process::BIN);
        command.env("FLEETAUTH_LOG", "warn").stderr(Stdio::piped());
        let mut server = Server::spawn_listening(
            command,
            listen,
            &["--data-dir", data.path().to_str().unwrap()],
        );
        assert_eq!(server.started["scheme"], "http");
        let mut stderr = server.child.stderr.take().unwrap();
        server.kill_9();
        let mut stderr_text = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut stderr_text).unwrap();
        let stderr = String::from_utf8_lossy(&stderr_text);
        let warnings = stderr.matches("serving plain HTTP").count();
        assert_eq!(warnings, usize::from(warns), "{listen}: {stderr}");
    }
}

/// One endpoint of each API family, and how to recognise its error format.
#[derive(Clone, Copy, Debug)]
enum Family {
    Fleet,
    OAuth,
    Elasticsearch,
    Vault,
    Other,
}

impl Family {
    /// A POST endpoint of the family and an unknown path under its prefix.
    fn paths(self) -> (&'static str, &'static str) {
        match self {
            Self::Fleet => ("/api/fleet/authenticate", "/api/fleet/nope"),
            Self::OAuth => ("/oauth/token", "/.well-known/nope"),
            Self::Elasticsearch => ("/_security/oauth2/token", "/_security/nope"),
            Self::Vault => ("/v1/auth/jwt/login", "/v1/nope"),
            Self::Other => ("/healthz", "/nope"),
        }
    }

    fn assert_format(self, response: &RawResponse, status: u16, what: &str) {
        assert_eq!(response.status, status, "{self:?} {what}");
        let json = response.json();
        match self {
            Self::Fleet | Self::Other => {
                assert_eq!(json["statusCode"], status, "{self:?} {what}: {json}");
                assert!(
                    json["error"].is_string() && json["message"].is_string(),
                    "{json}"
                );
            }
            Self::OAuth => {
                assert!(json["error"].is_string(), "{self:?} {what}: {json}");
                assert!(json["error_description"].is_string(), "{json}");
            }
            Self::Elasticsearch => {
                assert_eq!(json["status"], status, "{self:?} {what}: {json}");
                assert!(
                    json["error"]["type"].is_string() || json["error"].is_string(),
                    "{json}"
                );
            }
            Self::Vault => {
                assert!(json["errors"].is_array(), "{self:?} {what}: {json}");
            }
        }
    }
}

const FAMILIES: [Family; 5] = [
    Family::Fleet,
    Family::OAuth,
    Family::Elasticsearch,
    Family::Vault,
    Family::Other,
];

/// Sends `request` on a new connection and reads the answer.
async fn exchange(app: &TestApp, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr(app)).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_response(&mut stream).await
}

#[tokio::test]
async fn errors_of_the_http_layers_are_in_each_familys_format() {
    let app = spawn_app_with(|s| {
        s.request_timeout = Duration::from_millis(500);
        s.connections.max_uri_bytes = 1024;
        s.connections.max_header_bytes = 4096;
    })
    .await;
    for family in FAMILIES {
        let (endpoint, unknown) = family.paths();

        // 404 (Elasticsearch answers an unknown path under /_security with its 400).
        let response = exchange(
            &app,
            format!("GET {unknown} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        let status = if matches!(family, Family::Elasticsearch) {
            400
        } else {
            404
        };
        family.assert_format(&response, status, "unknown path");

        // 405 (the Vault API takes every method and decides itself, after its
        // permission check, as Vault does: no layer answers for it).
        if !matches!(family, Family::Vault) {
            let method = if matches!(family, Family::Other) {
                "POST"
            } else {
                "PATCH"
            };
            let response = exchange(
                &app,
                format!("{method} {endpoint} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                    .as_bytes(),
            )
            .await;
            family.assert_format(&response, 405, "wrong method");
            if !matches!(family, Family::Other) {
                assert!(response.header("allow").is_some(), "{family:?}: Allow kept");
            }
        }

        // 413: a declared length over max_body_bytes.
        let response = exchange(
            &app,
            format!(
                "POST {endpoint} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                app.settings.max_body_bytes + 1
            )
            .as_bytes(),
        )
        .await;
        family.assert_format(&response, 413, "large body");
        assert_eq!(
            response.header("connection"),
            Some("close"),
            "the body was not read"
        );

        // 414: a request target over max_uri_bytes.
        let long = format!("{endpoint}?q={}", "a".repeat(2000));
        let response = exchange(
            &app,
            format!("GET {long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        family.assert_format(&response, 414, "long target");

        // 431: headers over max_header_bytes.
        let response = exchange(
            &app,
            format!(
                "GET {endpoint} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(5000)
            )
            .as_bytes(),
        )
        .await;
        family.assert_format(&response, 431, "large headers");

        // 408: a body that does not arrive within request_timeout.
        if matches!(family, Family::Other) {
            continue; // no POST endpoint there
        }
        let response = exchange(
            &app,
            format!(
                "POST {endpoint} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await;
        family.assert_format(&response, 408, "slow body");
    }
}

#[tokio::test]
async fn a_body_sent_to_an_unknown_route_never_costs_the_next_answer() {
    let app = spawn_app_with(|_| {}).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    for path in [
        "/v1/no/such/route",
        "/api/fleet/nope",
        "/_security/nope",
        "/nope",
    ] {
        // The head first, the body a little later (as under load, where the server
        // answers before the body has arrived).
        let body = "x".repeat(20_000);
        stream
            .write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(body.as_bytes()).await.unwrap();
        let response = read_response(&mut stream).await;
        assert!(
            response.status == 404 || response.status == 400,
            "{path}: {}",
            response.status
        );
        assert_eq!(
            response.header("connection"),
            None,
            "{path}: drained, kept open"
        );
        // The next request on the same connection is answered.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut stream).await.status, 200, "after {path}");
    }

    // An answer given before its body was read says `Connection: close`, so the client
    // knows not to send another request on that connection.
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    stream
        .write_all(
            b"GET /api/fleet/authenticate HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        )
        .await
        .unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("connection"), Some("close"));
    closed_within(&mut stream, Duration::from_secs(5)).await;
}
