//! The two servers under test, each run as its own process, and the code those
//! processes run.
//!
//! The bench binary re-executes itself with `BENCH_AUTHENTICATE_ROLE` set:
//! - `fleetauth`: exactly what `src/main.rs` does (parse the command line, load the
//!   settings, install the log subscriber, multi-thread tokio runtime, `cli::run`), with
//!   `serve --listen 127.0.0.1:0 --data-dir DIR`. Running the library linked into this
//!   binary, rather than `target/release/fleetauth`, guarantees that the server measured
//!   is built from this checkout even when the target dir is shared with other
//!   checkouts (whose builds overwrite `target/release/fleetauth`).
//!   `FLEETAUTH_BENCH_SERVER_BIN=/path/to/fleetauth` runs that binary instead.
//! - `baseline`: a trivial axum 0.8 handler (fixed small JSON body) on the same kind of
//!   runtime (`new_multi_thread().enable_all()`, one worker per core).
//!
//! Both print one JSON line `{"status":"listening","listen":"ADDR"}` on stdout, which
//! is how the parent learns the port. Both listen on 127.0.0.1 only.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The environment variable that selects a server role for this binary.
pub const ROLE_VAR: &str = "BENCH_AUTHENTICATE_ROLE";

/// A child server process; killed (by its own pid) when dropped.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    /// Starts the fleetauth server on `data_dir`; its stderr goes to `log`.
    pub fn fleetauth(data_dir: &Path, log: &Path) -> Result<Self, String> {
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
        Self::spawn("fleetauth", command, log)
    }

    /// Starts the trivial axum baseline server; its stderr goes to `log`.
    pub fn baseline(log: &Path) -> Result<Self, String> {
        let mut command = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
        command.env(ROLE_VAR, "baseline");
        Self::spawn("baseline", command, log)
    }

    fn spawn(name: &'static str, mut command: Command, log: &Path) -> Result<Self, String> {
        // The bench's own FLEETAUTH_BENCH_* variables are not server settings: the
        // server's settings loader rejects unknown FLEETAUTH_* keys.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FLEETAUTH_BENCH_") {
                command.env_remove(key);
            }
        }
        let stderr = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start the {name} server: {e}"))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line).map_err(|e| e.to_string())?;
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
        Ok(Self { addr, child })
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

/// The `baseline` role: `POST /api/fleet/authenticate` answers a fixed small JSON body.
pub fn baseline_main() {
    use axum::routing::post;
    use axum::{Json, Router};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let app = Router::new().route(
            "/api/fleet/authenticate",
            post(|| async { Json(serde_json::json!({ "status": "ok", "token_type": "Bearer", "expires_in": 1200 })) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        println!("{}", serde_json::json!({ "status": "listening", "listen": addr.to_string() }));
        axum::serve(listener, app).await.expect("baseline server runs");
    });
}
