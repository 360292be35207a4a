//! The command line: `serve`, and the admin commands (`api-key`, `agent`, `keys`,
//! `tokens`, `enrollment-token`) that act on the same store the server uses, safely
//! while it runs. Whatever a script reads is printed as JSON on stdout; errors go to
//! stderr as one line.
//!
//! This file is the clap tree, the settings every command shares and the dispatch; one
//! file per command family: [`serve`], [`agents`] (`api-key`, `agent`), [`tokens`]
//! (`keys`, `tokens`), [`enrollment`] (`enrollment-token`), [`tls`].

pub mod agents;
pub mod enrollment;
pub mod serve;
pub mod tls;
pub mod tokens;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

pub use agents::{AgentCommand, ApiKeyCommand};
pub use enrollment::EnrollmentTokenCommand;
pub use tls::TlsCommand;
pub use tokens::{KeysCommand, TokensCommand};

use crate::clock::{Clock, SystemClock};
use crate::config::{self, EsOverrides, Overrides, Settings};
use crate::startup;

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
pub enum ConfigCommand {
    /// Validate the settings and print the effective values as JSON.
    Check {
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
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
                Some(tls::tls_self_signed(out, sans, *force))
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

/// A lifetime given as `--expiration` (a duration like `30d`).
fn parse_expiration(expiration: Option<String>) -> Result<Option<std::time::Duration>, CliError> {
    expiration
        .map(|e| {
            humantime::parse_duration(&e).map_err(|err| {
                CliError::Usage(format!(
                    "--expiration {e:?} is not a duration like 30d: {err}"
                ))
            })
        })
        .transpose()
}

/// Runs a parsed command line with loaded settings.
pub async fn run(cli: Cli, settings: Settings) -> Result<(), CliError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match cli.command {
        Command::Tls(TlsCommand::SelfSigned { out, sans, force }) => {
            tls::tls_self_signed(&out, &sans, force)
        }
        Command::Serve { .. } => serve::serve(settings, clock).await,
        Command::ApiKey(command) => agents::run_api_key(command, &settings, clock).await,
        Command::Agent(command) => agents::run_agent(command, &settings, clock).await,
        Command::Keys(command) => tokens::run_keys(command, &settings, clock).await,
        Command::Tokens(command) => tokens::run_tokens(command, &settings, clock).await,
        Command::EnrollmentToken(command) => {
            enrollment::run_enrollment_token(command, &settings, clock).await
        }
        Command::Config(ConfigCommand::Check { .. }) => {
            print_json(settings.describe());
            Ok(())
        }
    }
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
