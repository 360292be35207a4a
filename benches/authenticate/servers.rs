//! The servers under test, each run as its own process, and the code those processes
//! run (fleetauth, the trivial baseline) or how they are installed (the peer).
//!
//! The bench binary re-executes itself with `BENCH_AUTHENTICATE_ROLE` set:
//! - `fleetauth`: exactly what `src/main.rs` does (parse the command line, load the
//!   settings, install the log subscriber, multi-thread tokio runtime, `cli::run`), with
//!   `serve --listen 127.0.0.1:0 --data-dir DIR`. Running the library linked into this
//!   binary, rather than `target/release/fleetauth`, guarantees that the server measured
//!   is built from this checkout even when the target dir is shared with other
//!   checkouts (whose builds overwrite `target/release/fleetauth`).
//!   `FLEETAUTH_BENCH_SERVER_BIN=/path/to/fleetauth` runs that binary instead.
//! - `baseline`: a trivial axum 0.8 handler (fixed small JSON body, any method and
//!   path) on the same kind of runtime (`new_multi_thread().enable_all()`, one worker
//!   per core).
//!
//! The peer is node oidc-provider (`benches/peer/provider.js`), installed by `npm ci`
//! from `benches/peer/package-lock.json` into `benches/peer/node_modules` (ignored by
//! git) the first time the bench runs.
//!
//! All print one JSON line `{"status":"listening","listen":"ADDR"}` on stdout, which
//! is how the parent learns the port. All listen on 127.0.0.1 only.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that selects a server role for this binary.
pub const ROLE_VAR: &str = "BENCH_AUTHENTICATE_ROLE";

/// A child server process; killed (by its own pid) when dropped.
pub struct ServerProcess {
    pub addr: SocketAddr,
    /// From spawning the process to its "listening" line (for fleetauth: to its first
    /// 200 from `/readyz`).
    pub start_up: Duration,
    child: Child,
}

impl ServerProcess {
    /// Starts the fleetauth server on `data_dir` with extra `FLEETAUTH_*` settings in
    /// its environment; its stderr goes to `log`.
    pub fn fleetauth(
        data_dir: &Path,
        log: &Path,
        settings: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut command = match std::env::var_os("FLEETAUTH_BENCH_SERVER_BIN") {
            Some(bin) => Command::new(bin),
            None => {
                let mut c = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
                c.env(ROLE_VAR, "fleetauth");
                c
            }
        };
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        let spawned = Instant::now();
        let mut server = Self::spawn("fleetauth", command, log, settings)?;
        server.wait_ready()?;
        server.start_up = spawned.elapsed();
        Ok(server)
    }

    /// Starts node oidc-provider with one client_credentials client; installs it with
    /// npm first if `benches/peer/node_modules` does not have it.
    pub fn peer(log: &Path, client_id: &str, client_secret: &str) -> Result<Self, String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer");
        if !dir.join("node_modules/oidc-provider/package.json").exists() {
            eprintln!("  installing the peer: npm ci in {}", dir.display());
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run npm (needed for the peer): {e}"))?;
            if !status.success() {
                return Err(format!("npm ci in {} failed: {status}", dir.display()));
            }
        }
        let mut command = Command::new("node");
        command.arg(dir.join("provider.js")).current_dir(&dir);
        Self::spawn(
            "peer (node oidc-provider)",
            command,
            log,
            &[
                ("BENCH_PEER_CLIENT_ID", client_id),
                ("BENCH_PEER_CLIENT_SECRET", client_secret),
                ("NODE_ENV", "production"),
            ],
        )
    }

    /// Waits until `/readyz` answers 200 (the store is open and the keys loaded).
    fn wait_ready(&mut self) -> Result<(), String> {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let ready = std::net::TcpStream::connect(self.addr).and_then(|mut s| {
                s.write_all(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
                let mut answer = String::new();
                s.read_to_string(&mut answer)?;
                Ok(answer.starts_with("HTTP/1.1 200"))
            });
            if let Ok(true) = ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("fleetauth on {} never became ready", self.addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the trivial axum baseline server; its stderr goes to `log`.
    pub fn baseline(log: &Path) -> Result<Self, String> {
        let mut command = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
        command.env(ROLE_VAR, "baseline");
        Self::spawn("baseline", command, log, &[])
    }

    fn spawn(
        name: &'static str,
        mut command: Command,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        // The bench's own FLEETAUTH_BENCH_* variables are not server settings: the
        // server's settings loader rejects unknown FLEETAUTH_* keys.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FLEETAUTH_BENCH_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied());
        let stderr = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let spawned = Instant::now();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start the {name} server: {e}"))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        let start_up = spawned.elapsed();
        let addr = (read > 0)
            .then(|| serde_json::from_str::<serde_json::Value>(&line).ok())
            .flatten()
            .filter(|v| v["status"] == "listening")
            .and_then(|v| {
                v["listen"]
                    .as_str()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            });
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            let log_text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "the {name} server did not start (stdout {line:?}); its stderr:\n{log_text}"
            ));
        };
        if !addr.ip().is_loopback() {
            let _ = child.kill();
            return Err(format!(
                "the {name} server listens on {addr}, not on loopback"
            ));
        }
        // Keep draining stdout, so a later line can never hit a closed pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        Ok(Self {
            addr,
            start_up,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `fleetauth` role: the same steps as `src/main.rs`.
pub fn fleetauth_main() {
    use clap::Parser;
    use fleetauth::cli::{self, Cli};

    let cli = Cli::parse();
    let settings = match cli.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("fleetauth: {e}");
            std::process::exit(e.exit_code());
        }
    };
    fleetauth::telemetry::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(cli::run(cli, settings)) {
        eprintln!("fleetauth: {e}");
        std::process::exit(e.exit_code());
    }
}

/// The `baseline` role: every request (any method, any path) answers a fixed small
/// JSON body.
pub fn baseline_main() {
    use axum::{Json, Router};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let app = Router::new().fallback(|| async {
            Json(serde_json::json!({ "status": "ok", "token_type": "Bearer", "expires_in": 1200 }))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        println!(
            "{}",
            serde_json::json!({ "status": "listening", "listen": addr.to_string() })
        );
        axum::serve(listener, app)
            .await
            .expect("baseline server runs");
    });
}
