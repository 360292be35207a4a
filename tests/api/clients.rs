//! Real third-party clients, installed from their registries by `scripts/client-deps.sh`
//! (pinned versions, into ignored folders; run here when missing), driven against a
//! real `fleetauth serve` process on loopback. Each client uses its library as the
//! library's documentation shows, with no switch that disables a check; the scripts are
//! under `tests/clients/`. A missing dependency fails the test, loudly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use crate::common::process;

const ELASTIC_PASSWORD: &str = "elastic-password-for-clients";
const VAULT_ADMIN_TOKEN: &str = "vault-admin-token-for-clients-0123456789";
/// The longest a client program may run (seconds, for `timeout`).
const CLIENT_TIME_LIMIT: &str = "600";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Installs the clients once per test run (the script is idempotent and cheap when
/// they are there). Panics, with the script's output, when it fails.
fn client_deps() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let result = INSTALLED.get_or_init(|| {
        let output = Command::new("bash")
            .arg(root().join("scripts/client-deps.sh"))
            .output()
            .map_err(|e| format!("cannot run scripts/client-deps.sh: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/client-deps.sh failed ({}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("the third-party clients could not be installed: {e}");
    }
}

/// A `fleetauth serve` process with its own data dir, on a loopback port that is also
/// its `public_url` (so the issuer is that URL), with the `elastic` password and a
/// Vault admin token set; over HTTP, or over HTTPS with a self-signed certificate.
struct Server {
    _process: process::Server,
    url: String,
    dir: tempfile::TempDir,
    /// With HTTPS: the self-signed certificate (`fleetauth tls self-signed`) that a
    /// client trusts as its CA.
    cert: Option<PathBuf>,
    /// The settings given to `serve`, given to the CLI commands too (they act on the
    /// same store with the same settings: a CLI run with another `jwt.algorithm` would
    /// rotate the signing key).
    env: Vec<(String, String)>,
}

impl Server {
    /// Over HTTP.
    fn start(env: &[(&str, &str)]) -> Self {
        Self::launch(false, env)
    }

    /// Over HTTPS: `fleetauth tls self-signed` writes a certificate for 127.0.0.1 into
    /// the data dir, and `tls.cert`/`tls.key` point `serve` at it.
    fn start_https(env: &[(&str, &str)]) -> Self {
        Self::launch(true, env)
    }

    fn launch(https: bool, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // The issuer must be known before start: take a free port, then give it back.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let scheme = if https { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let mut base: Vec<(String, String)> = [
            ("FLEETAUTH_PUBLIC_URL", url.as_str()),
            ("FLEETAUTH_BOOTSTRAP_PASSWORD", ELASTIC_PASSWORD),
            ("FLEETAUTH_VAULT__ADMIN_TOKEN", VAULT_ADMIN_TOKEN),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cert = https.then(|| {
            let tls = dir.path().join("tls");
            let output = process::command()
                .args(["tls", "self-signed", "--out", tls.to_str().unwrap()])
                .output()
                .expect("fleetauth tls self-signed");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let written: Value = serde_json::from_slice(&output.stdout).expect("JSON");
            assert!(
                written["subject_alt_names"]
                    .as_array()
                    .is_some_and(|sans| sans.iter().any(|san| san == "127.0.0.1")),
                "{written}"
            );
            let (cert, key) = (tls.join("cert.pem"), tls.join("key.pem"));
            for (name, path) in [("FLEETAUTH_TLS__CERT", &cert), ("FLEETAUTH_TLS__KEY", &key)] {
                base.push((name.to_string(), path.to_str().unwrap().to_string()));
            }
            cert
        });
        let env: Vec<(String, String)> = base
            .into_iter()
            .chain(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("log file");
        let mut command = process::command();
        command.envs(env.iter().map(|(k, v)| (k, v))).stderr(log);
        let process = process::Server::spawn_listening(
            command,
            &format!("127.0.0.1:{port}"),
            &["--data-dir", dir.path().to_str().unwrap()],
        );
        let started = &process.started;
        assert_eq!(started["listen"], format!("127.0.0.1:{port}"));
        assert_eq!(started["scheme"], scheme, "{started}");
        Self {
            _process: process,
            url,
            dir,
            cert,
            env,
        }
    }

    /// What the server logged (stderr), for a failure's report.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// `fleetauth api-key create` beside the running server: an agent's API key.
    fn agent_key(&self, agent: &str) -> Value {
        let output = process::command()
            .args(["api-key", "create", "--agent-id", agent])
            .args(["--data-dir", self.dir.path().to_str().unwrap()])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("fleetauth api-key create");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON")
    }
}

/// Runs a client program to completion; its output goes to the test's output, and a
/// non-zero exit fails the test (with the server's log).
fn run_client(server: &Server, program: &Path, args: &[&str], dir: &Path, env: &[(&str, &str)]) {
    // Bounded in time: coreutils' timeout ends a client that hangs (exit status 124).
    let output = Command::new("timeout")
        .arg(CLIENT_TIME_LIMIT)
        .arg(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{}",
        program.display(),
        output.status,
        server.log()
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

fn python(server: &Server, script: &str, env: &[(&str, &str)]) {
    client_deps();
    let venv_python = root().join("tests/clients/.venv/bin/python");
    run_client(
        server,
        &venv_python,
        &[script],
        &root().join("tests/clients/python"),
        env,
    );
}

fn node(server: &Server, script: &str, env: &[(&str, &str)]) {
    client_deps();
    let node = PathBuf::from("node");
    run_client(
        server,
        &node,
        &[script],
        &root().join("tests/clients/node"),
        env,
    );
}

// Each test blocks on a child process: a multi-threaded runtime is not needed, and a
// plain #[test] keeps the client's run off the async test pool.

#[test]
fn authlib_client_credentials_refresh_introspection_revocation_and_rfc9068_validation() {
    // Authlib's RFC 9068 validator accepts ES256/RS256 (not EdDSA) by default.
    let server = Server::start(&[("FLEETAUTH_JWT__ALGORITHM", "ES256")]);
    let key = server.agent_key("authlib-agent");
    python(
        &server,
        "test_authlib.py",
        &[
            ("FLEETAUTH_URL", &server.url),
            ("FLEETAUTH_CLIENT_ID", key["id"].as_str().unwrap()),
            ("FLEETAUTH_CLIENT_SECRET", key["api_key"].as_str().unwrap()),
        ],
    );
}

/// openid-client and jose over HTTPS, the server's own TLS with a certificate from
/// `fleetauth tls self-signed`, trusted by Node through NODE_EXTRA_CA_CERTS (its
/// documented way to add a CA; no check is switched off): RFC 8414 discovery with the
/// https issuer, client_credentials, jwtVerify (typ at+jwt, the RFC 9068 claims, a
/// foreign audience refused), refresh with rotation, introspection, token exchange,
/// revocation.
#[test]
fn openid_client_and_jose_over_the_servers_own_tls() {
    let server = Server::start_https(&[]);
    let cert = server
        .cert
        .clone()
        .expect("an https server has a certificate");
    let key = server.agent_key("openid-client-agent");
    node(
        &server,
        "openid_client.mjs",
        &[
            ("FLEETAUTH_URL", &server.url),
            ("FLEETAUTH_CLIENT_ID", key["id"].as_str().unwrap()),
            ("FLEETAUTH_CLIENT_SECRET", key["api_key"].as_str().unwrap()),
            ("NODE_EXTRA_CA_CERTS", cert.to_str().unwrap()),
        ],
    );
}

#[test]
fn elasticsearch_py_drives_every_security_api() {
    let server = Server::start(&[]);
    python(
        &server,
        "test_elasticsearch.py",
        &[
            ("FLEETAUTH_URL", &server.url),
            ("FLEETAUTH_ELASTIC_PASSWORD", ELASTIC_PASSWORD),
        ],
    );
}

#[test]
fn hvac_configures_roles_and_logs_in_with_pem_keys_and_oidc_discovery() {
    let server = Server::start(&[]);
    python(
        &server,
        "test_hvac.py",
        &[
            ("FLEETAUTH_URL", &server.url),
            ("FLEETAUTH_ELASTIC_PASSWORD", ELASTIC_PASSWORD),
            ("FLEETAUTH_VAULT_ADMIN_TOKEN", VAULT_ADMIN_TOKEN),
        ],
    );
}

/// The OpenAPI document (`docs/openapi.json`, served at `/openapi.json`) checked against
/// the running server by schemathesis: every answer's status is documented, its
/// content type and body match the documented schema, and no generated input (valid or
/// not) gets a 5xx. Bounded: a fixed seed and a few examples per operation.
#[test]
fn schemathesis_finds_the_server_true_to_its_openapi_document_and_never_5xx() {
    let server = Server::start(&[]);
    client_deps();
    let url = format!("{}/openapi.json", server.url);
    let served: Value = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { reqwest::get(&url).await?.json().await })
        .expect("GET /openapi.json");
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/openapi.json")).expect("docs/openapi.json"),
    )
    .expect("docs/openapi.json is JSON");
    assert_eq!(served, kept, "the served document is the one in docs/");
    assert_eq!(served["openapi"], "3.1.0");
    let schemathesis = root().join("tests/clients/.venv/bin/schemathesis");
    let report = server.dir.path().join("schemathesis");
    run_client(
        &server,
        &schemathesis,
        &[
            "run",
            &format!("{}/openapi.json", server.url),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "12",
            "--seed",
            "11",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--auth",
            &format!("elastic:{ELASTIC_PASSWORD}"),
            "--report-dir",
            report.to_str().unwrap(),
        ],
        // Its cache (.schemathesis/) goes to the server's temporary dir, not the repo.
        server.dir.path(),
        &[("SCHEMATHESIS_HOOKS", ""), ("NO_COLOR", "1")],
    );
}
