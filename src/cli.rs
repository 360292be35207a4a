//! The command line: `serve`, and the admin commands (`api-key`, `agent`, `keys`,
//! `enrollment-token`) that act on the same store the server uses, safely while it
//! runs. Whatever a script reads is printed as JSON on stdout; errors go to stderr as
//! one line.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::agents;
use crate::clock::{Clock, SystemClock};
use crate::config::{self, EsOverrides, Overrides, Settings};
use crate::startup::{self, Application, Services};
use crate::tokens;

#[derive(Debug, Parser)]
#[command(
    name = "fleetauth",
    version,
    about = "An OAuth2 authorization server for fleets of agents"
)]
pub struct Cli {
    /// TOML config file (default: config/fleetauth.toml if it exists).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Default)]
pub struct StoreArgs {
    /// Directory of the embedded store.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// embedded | elasticsearch
        #[arg(long)]
        store: Option<String>,
        #[arg(long, value_name = "URL")]
        es_url: Option<String>,
    },
    /// Manage API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Manage agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Revoke tokens in bulk.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Manage enrollment tokens (for POST /api/fleet/agents/enroll).
    #[command(subcommand)]
    EnrollmentToken(EnrollmentTokenCommand),
    /// Inspect the settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// TLS certificates.
    #[command(subcommand)]
    Tls(TlsCommand),
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Write a self-signed certificate (cert.pem) and its key (key.pem, mode 0600) into
    /// DIR, for a first try of HTTPS: clients must be told to trust cert.pem.
    SelfSigned {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A DNS name or IP address the certificate is valid for (repeatable; default:
        /// localhost, 127.0.0.1, ::1).
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the settings and print the effective values as JSON.
    Check {
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key for an agent (enrolling or re-activating the agent).
    Create {
        /// May start with `-` (ids are base64url).
        #[arg(long, allow_hyphen_values = true)]
        agent_id: String,
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 30d; without it the key does not expire.
        #[arg(long)]
        expiration: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Invalidate an API key at once.
    Invalidate {
        /// May start with `-` (API key ids are random base64url).
        #[arg(long, allow_hyphen_values = true)]
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Unenroll an agent: all its tokens and keys stop working at once.
    Unenroll {
        /// May start with `-` (ids are base64url).
        #[arg(long, allow_hyphen_values = true)]
        agent_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnrollmentTokenCommand {
    /// Create an enrollment token for a policy; prints it (with `encoded`) as JSON.
    Create {
        #[arg(long, allow_hyphen_values = true)]
        policy_id: String,
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 30d; without it the token does not expire.
        #[arg(long)]
        expiration: Option<String>,
        /// How many agents it may enroll; without it, any number.
        #[arg(long)]
        max_uses: Option<u32>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List enrollment tokens (never their secrets).
    List {
        #[arg(long, allow_hyphen_values = true)]
        policy_id: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke an enrollment token at once (agents it enrolled keep working).
    Revoke {
        /// May start with `-` (ids are random base64url).
        #[arg(long, allow_hyphen_values = true)]
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// A new signing key signs from now on; old keys verify until their tokens expire.
    /// The new key has the algorithm of the key that signs now, unless `--algorithm`
    /// says otherwise (this command's own `jwt.algorithm` is not used: it may differ
    /// from the server's).
    Rotate {
        /// EdDSA, ES256 or RS256.
        #[arg(long)]
        algorithm: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Revoke every token of an agent, of a client (API key id), of a signing key, or
    /// issued before a time; prints how many token-state records and pairs lost tokens.
    /// Exactly one criterion.
    Revoke {
        #[arg(long, allow_hyphen_values = true)]
        agent_id: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        client_id: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        kid: Option<String>,
        /// Epoch seconds, an RFC 3339 time, or `now`.
        #[arg(long)]
        issued_before: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// A failure of a command, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Settings(#[from] config::SettingsError),
    #[error(transparent)]
    Start(#[from] startup::StartError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Settings(_) | Self::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl Cli {
    fn overrides(&self) -> Overrides {
        let store_dir = |s: &StoreArgs| Overrides {
            data_dir: s.data_dir.clone(),
            ..Default::default()
        };
        match &self.command {
            Command::Serve {
                listen,
                data_dir,
                store,
                es_url,
            } => Overrides {
                listen: listen.clone(),
                data_dir: data_dir.clone(),
                store: store.clone(),
                elasticsearch: es_url.clone().map(|url| EsOverrides { url }),
            },
            Command::ApiKey(
                ApiKeyCommand::Create { store, .. } | ApiKeyCommand::Invalidate { store, .. },
            )
            | Command::Agent(AgentCommand::Unenroll { store, .. })
            | Command::Keys(KeysCommand::Rotate { store, .. })
            | Command::Tokens(TokensCommand::Revoke { store, .. })
            | Command::EnrollmentToken(
                EnrollmentTokenCommand::Create { store, .. }
                | EnrollmentTokenCommand::List { store, .. }
                | EnrollmentTokenCommand::Revoke { store, .. },
            ) => store_dir(store),
            Command::Config(ConfigCommand::Check { listen, data_dir }) => Overrides {
                listen: listen.clone(),
                data_dir: data_dir.clone(),
                ..Default::default()
            },
            Command::Tls(_) => Overrides::default(),
        }
    }

    /// Runs a command that needs no settings (it touches no store and no server), so a
    /// broken config file does not stop it; `None`: the command needs settings.
    pub fn run_without_settings(&self) -> Option<Result<(), CliError>> {
        match &self.command {
            Command::Tls(TlsCommand::SelfSigned { out, sans, force }) => {
                Some(tls_self_signed(out, sans, *force))
            }
            _ => None,
        }
    }

    /// Loads the settings every command shares.
    pub fn settings(&self) -> Result<Settings, CliError> {
        Ok(config::load(self.config.as_deref(), &self.overrides())?)
    }
}

fn print_json(value: serde_json::Value) {
    println!("{value}");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}

/// Writes `contents` to a new file (or over an old one with `force`); `private`: mode
/// 0600 from the start on Unix.
fn write_new_file(
    path: &std::path::Path,
    contents: &str,
    force: bool,
    private: bool,
) -> Result<(), CliError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
            " (--force replaces it)"
        } else {
            ""
        };
        CliError::Failed(format!("cannot write {}: {e}{hint}", path.display()))
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))
}

/// `fleetauth tls self-signed`: prints `{"cert","key","subject_alt_names"}`.
pub fn tls_self_signed(
    out: &std::path::Path,
    sans: &[String],
    force: bool,
) -> Result<(), CliError> {
    let sans: Vec<String> = if sans.is_empty() {
        crate::http::tls::DEFAULT_SANS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        sans.to_vec()
    };
    if let Some(bad) = sans
        .iter()
        .find(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        return Err(CliError::Usage(format!(
            "--san {bad:?} is not a DNS name or IP address"
        )));
    }
    let generated =
        crate::http::tls::self_signed(&sans).map_err(|e| CliError::Failed(e.to_string()))?;
    std::fs::create_dir_all(out)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", out.display())))?;
    let cert = out.join("cert.pem");
    let key = out.join("key.pem");
    write_new_file(&key, &generated.key_pem, force, true)?;
    write_new_file(&cert, &generated.cert_pem, force, false)?;
    print_json(json!({
        "cert": cert,
        "key": key,
        "subject_alt_names": sans,
    }));
    Ok(())
}

/// Runs a parsed command line with loaded settings.
pub async fn run(cli: Cli, settings: Settings) -> Result<(), CliError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match cli.command {
        Command::Tls(TlsCommand::SelfSigned { out, sans, force }) => {
            tls_self_signed(&out, &sans, force)?;
        }
        Command::Serve { .. } => {
            let app = Application::build(settings, clock).await?;
            let addr = app.local_addr();
            let scheme = app.scheme();
            tracing::info!(%addr, scheme, "fleetauth listening");
            print_json(
                json!({ "status": "listening", "listen": addr.to_string(), "scheme": scheme }),
            );
            app.run_until(shutdown_signal())
                .await
                .map_err(|e| CliError::Failed(format!("server failed: {e}")))?;
        }
        Command::ApiKey(ApiKeyCommand::Create {
            agent_id,
            name,
            expiration,
            ..
        }) => {
            if !agents::valid_agent_id(&agent_id) {
                return Err(CliError::Usage(format!(
                    "--agent-id must be 1 to {} characters of A-Z a-z 0-9 - _ . : @",
                    agents::MAX_AGENT_ID_LEN
                )));
            }
            let lifetime = expiration
                .map(|e| {
                    humantime::parse_duration(&e).map_err(|err| {
                        CliError::Usage(format!(
                            "--expiration {e:?} is not a duration like 30d: {err}"
                        ))
                    })
                })
                .transpose()?;
            let services = Services::for_admin(&settings, clock.clone()).await?;
            let now = clock.now();
            let expires_at = lifetime.map(|d| now + d.as_secs() as i64);
            let name = name.unwrap_or_else(|| format!("agent-{agent_id}"));
            let created = services
                .api_keys
                .create(&name, Some(&agent_id), expires_at)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            agents::enroll(services.store.as_ref(), &agent_id, now)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            print_json(
                serde_json::to_value(&created).map_err(|e| CliError::Failed(e.to_string()))?,
            );
        }
        Command::ApiKey(ApiKeyCommand::Invalidate { id, .. }) => {
            let services = Services::for_admin(&settings, clock).await?;
            let invalidated = services
                .api_keys
                .invalidate(&id)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            print_json(json!({ "id": id, "invalidated": invalidated }));
        }
        Command::Agent(AgentCommand::Unenroll { agent_id, .. }) => {
            let services = Services::for_admin(&settings, clock.clone()).await?;
            let existed = agents::unenroll(services.store.as_ref(), &agent_id, clock.now())
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            print_json(json!({ "agent_id": agent_id, "unenrolled": existed }));
        }
        Command::Keys(KeysCommand::Rotate { algorithm, .. }) => {
            let algorithm = algorithm
                .map(|a| {
                    config::SigningAlgorithm::parse(&a).ok_or_else(|| {
                        CliError::Usage(format!(
                            "--algorithm {a:?} is not one of EdDSA, ES256, RS256"
                        ))
                    })
                })
                .transpose()?;
            let services = Services::for_admin(&settings, clock.clone()).await?;
            let algorithm = algorithm.unwrap_or_else(|| services.tokens.signing_algorithm());
            let kid = tokens::rotate_signing_key(
                services.store.as_ref(),
                clock.now(),
                &settings.jwt,
                algorithm,
            )
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
            crate::telemetry::metrics::signing_key_rotated("manual");
            print_json(json!({ "kid": kid, "algorithm": algorithm.as_str() }));
        }
        Command::Tokens(TokensCommand::Revoke {
            agent_id,
            client_id,
            kid,
            issued_before,
            ..
        }) => {
            let now = clock.now();
            let issued_before = issued_before
                .map(|text| match text.trim() {
                    "now" => Ok(now),
                    t => {
                        let value = t
                            .parse::<i64>()
                            .map(serde_json::Value::from)
                            .unwrap_or_else(|_| serde_json::Value::from(t));
                        tokens::revocation::parse_issued_before(&value, now)
                            .map_err(CliError::Usage)
                    }
                })
                .transpose()?;
            let mut criteria: Vec<tokens::Criterion> = Vec::new();
            criteria.extend(agent_id.map(tokens::Criterion::Agent));
            criteria.extend(client_id.map(tokens::Criterion::Client));
            criteria.extend(kid.map(tokens::Criterion::Kid));
            criteria.extend(issued_before.map(tokens::Criterion::IssuedBefore));
            let [criterion] = criteria.as_slice() else {
                return Err(CliError::Usage(
                    "give exactly one of --agent-id, --client-id, --kid, --issued-before".into(),
                ));
            };
            let services = Services::for_admin(&settings, clock.clone()).await?;
            let revoked = services
                .tokens
                .revoke_bulk(criterion)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            print_json(json!({ "by": criterion.label(), "revoked": revoked }));
        }
        Command::EnrollmentToken(command) => {
            run_enrollment_token(command, &settings, clock).await?
        }
        Command::Config(ConfigCommand::Check { .. }) => print_json(settings.describe()),
    }
    Ok(())
}

async fn run_enrollment_token(
    command: EnrollmentTokenCommand,
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<(), CliError> {
    let failed = |e: crate::enrollment::EnrollmentError| match e {
        crate::enrollment::EnrollmentError::BadRequest(m) => CliError::Usage(m),
        other => CliError::Failed(other.to_string()),
    };
    match command {
        EnrollmentTokenCommand::Create {
            policy_id,
            name,
            expiration,
            max_uses,
            ..
        } => {
            let lifetime = expiration
                .map(|e| {
                    humantime::parse_duration(&e).map_err(|err| {
                        CliError::Usage(format!(
                            "--expiration {e:?} is not a duration like 30d: {err}"
                        ))
                    })
                })
                .transpose()?;
            let services = Services::for_admin(settings, clock.clone()).await?;
            let request = crate::enrollment::NewEnrollmentToken {
                policy_id,
                name,
                expires_at: lifetime.map(|d| clock.now() + d.as_secs() as i64),
                max_uses,
            };
            let created = services
                .enrollment
                .create_token(&crate::enrollment::Creator::cli(), request)
                .await
                .map_err(failed)?;
            print_json(
                serde_json::to_value(&created).map_err(|e| CliError::Failed(e.to_string()))?,
            );
        }
        EnrollmentTokenCommand::List { policy_id, .. } => {
            let services = Services::for_admin(settings, clock).await?;
            let items = services
                .enrollment
                .list_tokens(policy_id.as_deref())
                .await
                .map_err(failed)?;
            print_json(json!({ "items": items, "total": items.len() }));
        }
        EnrollmentTokenCommand::Revoke { id, .. } => {
            let services = Services::for_admin(settings, clock).await?;
            let revoked = services
                .enrollment
                .revoke_token(&id)
                .await
                .map_err(failed)?;
            match revoked {
                Some(revoked) => print_json(json!({ "id": id, "revoked": revoked })),
                None => {
                    return Err(CliError::Failed(format!(
                        "no enrollment token with id {id}"
                    )))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_start_with_a_hyphen_are_values_not_flags() {
        let cli = Cli::try_parse_from(["fleetauth", "api-key", "invalidate", "--id", "-ZgmALNRrk"])
            .expect("a hyphen-leading id parses");
        assert!(
            matches!(cli.command, Command::ApiKey(ApiKeyCommand::Invalidate { id, .. }) if id == "-ZgmALNRrk")
        );
        for command in [["agent", "unenroll"], ["api-key", "create"]] {
            let args = ["fleetauth", command[0], command[1], "--agent-id", "-a1"];
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
        let args = ["fleetauth", "enrollment-token", "revoke", "--id", "-Zg1"];
        assert!(
            matches!(Cli::try_parse_from(args).unwrap().command, Command::EnrollmentToken(EnrollmentTokenCommand::Revoke { id, .. }) if id == "-Zg1")
        );
        let args = [
            "fleetauth",
            "enrollment-token",
            "create",
            "--policy-id",
            "p-1",
            "--max-uses",
            "3",
            "--expiration",
            "30d",
        ];
        assert!(matches!(
            Cli::try_parse_from(args).unwrap().command,
            Command::EnrollmentToken(EnrollmentTokenCommand::Create {
                max_uses: Some(3),
                ..
            })
        ));
    }
}
