//! The `fleetauth` binary in processes of its own, as an operator runs it: a command
//! with a clean environment ([`command`]), `serve` started and its listening line read
//! ([`Server`]: the one way every test and bench that runs the real server starts it),
//! and a group of processes, CLI commands and servers, on one store ([`SharedStore`]).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::es;

/// The binary cargo built for this test or bench crate.
pub const BIN: &str = env!("CARGO_BIN_EXE_fleetauth");

/// The binary with no inherited `FLEETAUTH_*` variable: the harness's own
/// (`FLEETAUTH_TEST_*`) are no settings, and a developer's settings are not the test's.
pub fn command() -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FLEETAUTH_")) {
        command.env_remove(key);
    }
    command
}

/// The JSON a CLI command printed on stdout, or what it printed on stderr if it failed.
pub fn json_output(output: &Output) -> Result<Value, String> {
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&output.stdout).expect("JSON on stdout"))
}

/// A running `fleetauth serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    /// `SCHEME://ADDRESS`, as the listening line names them.
    pub base: String,
    /// The listening line: `{"listen": ..., "scheme": ...}`.
    pub started: Value,
    /// The rest of its stdout (see [`Server::take_stdout`]).
    stdout: Option<BufReader<ChildStdout>>,
    /// A data dir of its own, removed after the process ends.
    data_dir: Option<tempfile::TempDir>,
}

impl Server {
    /// `command serve --listen 127.0.0.1:0 <args>`, once it has printed the address it
    /// listens on. Its stderr goes where `command` sends it (inherited if not set).
    pub fn spawn(command: Command, args: &[&str]) -> Self {
        Self::spawn_listening(command, "127.0.0.1:0", args)
    }

    /// `command serve --listen <listen> <args>` (see [`Server::spawn`]).
    pub fn spawn_listening(mut command: Command, listen: &str, args: &[&str]) -> Self {
        command.args(["serve", "--listen", listen]).args(args);
        Self::started(command)
    }

    /// A command that runs `serve` itself (e.g. through a shell that sets limits
    /// first), once it has printed its listening line.
    pub fn started(command: Command) -> Self {
        Self::try_started(command).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Server::started`], or why the process did not start (it is then ended): for
    /// a caller that adds what it knows, e.g. the log the process wrote.
    pub fn try_started(mut command: Command) -> Result<Self, String> {
        let child = command
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("serve does not start: {e}"))?;
        Self::try_from_child(child)
    }

    /// A `serve` process spawned with its stdout piped (e.g. one whose stderr the
    /// caller reads from the start), once it has printed its listening line.
    pub fn from_child(child: Child) -> Self {
        Self::try_from_child(child).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Server::from_child`], or why the process did not start (it is then ended).
    pub fn try_from_child(mut child: Child) -> Result<Self, String> {
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let started = read
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_str::<Value>(&line).map_err(|e| e.to_string()));
        let started = match started {
            Ok(started) if started["listen"].is_string() => started,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let why = other.err().unwrap_or_else(|| "no listen address".into());
                return Err(format!("serve did not start ({why}): {line:?}"));
            }
        };
        let base = format!(
            "{}://{}",
            started["scheme"].as_str().unwrap_or("http"),
            started["listen"].as_str().unwrap()
        );
        Ok(Self {
            child,
            base,
            started,
            stdout: Some(stdout),
            data_dir: None,
        })
    }

    /// Keeps `dir` (the process's own data dir) until the process has ended.
    pub fn keeping(mut self, dir: Option<tempfile::TempDir>) -> Self {
        self.data_dir = dir;
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything it prints on stdout after the listening line.
    pub fn take_stdout(&mut self) -> BufReader<ChildStdout> {
        self.stdout.take().expect("stdout taken once")
    }

    /// `kill -9`, and waits until the process is gone.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the process ends");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a group of processes keeps its state.
pub enum StoreAt {
    /// One SQLite data dir, which every process opens.
    Sqlite(tempfile::TempDir),
    /// An Elasticsearch node (or cluster) and an index prefix (`""`: none); every
    /// process gets a data dir of its own.
    Elasticsearch { url: String, prefix: String },
}

/// `fleetauth` processes, CLI commands and servers, on one store (as behind a load
/// balancer), each with the settings given to the group and its own. On the shared
/// node, the prefix's indices are deleted when the group is dropped.
pub struct SharedStore {
    pub at: StoreAt,
    env: Vec<(String, String)>,
    delete_indices_at_end: bool,
}

impl SharedStore {
    pub fn sqlite() -> Self {
        Self::at(StoreAt::Sqlite(tempfile::tempdir().expect("temp dir")))
    }

    /// On the node at `url`, under `prefix`; its indices stay (a node of a test's own
    /// goes with them), unless [`SharedStore::deleting_indices_at_end`].
    pub fn elasticsearch(url: &str, prefix: &str) -> Self {
        Self::at(StoreAt::Elasticsearch {
            url: url.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// On the node every test shares ([`es::shared_node_url`]), under a fresh prefix
    /// whose indices are deleted at the end.
    pub fn on_shared_node(label: &str) -> Self {
        Self::elasticsearch(&es::shared_node_url(), &es::unique_prefix(label))
            .deleting_indices_at_end()
    }

    /// Deletes the prefix's indices when dropped.
    pub fn deleting_indices_at_end(mut self) -> Self {
        assert!(!self.prefix().is_empty(), "an empty prefix is every index");
        self.delete_indices_at_end = true;
        self
    }

    fn at(at: StoreAt) -> Self {
        Self {
            at,
            env: Vec::new(),
            delete_indices_at_end: false,
        }
    }

    /// With a setting for every process of the group (a later one wins).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The index prefix (Elasticsearch only).
    pub fn prefix(&self) -> &str {
        match &self.at {
            StoreAt::Elasticsearch { prefix, .. } => prefix,
            StoreAt::Sqlite(_) => panic!("a SQLite store has no index prefix"),
        }
    }

    /// The binary on this store, with the group's settings and then `extra`; and the
    /// process's own data dir, if it has one (keep it while the process runs).
    pub fn command(&self, extra: &[(&str, String)]) -> (Command, Option<tempfile::TempDir>) {
        let mut command = command();
        let own_dir = match &self.at {
            StoreAt::Sqlite(dir) => {
                command.env("FLEETAUTH_DATA_DIR", dir.path());
                None
            }
            StoreAt::Elasticsearch { url, prefix } => {
                let dir = tempfile::tempdir().expect("temp dir");
                command
                    .env("FLEETAUTH_DATA_DIR", dir.path())
                    .envs(es::store_env(url, prefix, Duration::from_secs(30)));
                Some(dir)
            }
        };
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.envs(extra.iter().map(|(k, v)| (k, v)));
        (command, own_dir)
    }

    /// A CLI command on the store: its JSON output, or its stderr.
    pub fn cli(&self, extra: &[(&str, String)], args: &[&str]) -> Result<Value, String> {
        let (mut command, _dir) = self.command(extra);
        json_output(&command.args(args).output().expect("fleetauth runs"))
    }

    /// A CLI command that must succeed: its JSON output.
    pub fn cli_ok(&self, extra: &[(&str, String)], args: &[&str]) -> Value {
        self.cli(extra, args)
            .unwrap_or_else(|stderr| panic!("{args:?}: {stderr}"))
    }

    /// `Authorization: ApiKey ...` of a new API key for `agent` (`api-key create`).
    pub fn enroll(&self, extra: &[(&str, String)], agent: &str) -> String {
        let created = self.cli_ok(extra, &["api-key", "create", "--agent-id", agent]);
        format!("ApiKey {}", created["encoded"].as_str().unwrap())
    }

    /// A `fleetauth serve` on the store; its stderr inherited.
    pub fn serve(&self, extra: &[(&str, String)]) -> Server {
        let (command, dir) = self.command(extra);
        Server::spawn(command, &[]).keeping(dir)
    }

    /// A `fleetauth serve` on the store with its stderr sent to `stderr`.
    pub fn serve_logging(&self, extra: &[(&str, String)], stderr: impl Into<Stdio>) -> Server {
        let (mut command, dir) = self.command(extra);
        command.stderr(stderr);
        Server::spawn(command, &[]).keeping(dir)
    }
}

impl Drop for SharedStore {
    fn drop(&mut self) {
        if let (StoreAt::Elasticsearch { url, prefix }, true) =
            (&self.at, self.delete_indices_at_end)
        {
            es::delete_indices_blocking(url, prefix);
        }
    }
}
