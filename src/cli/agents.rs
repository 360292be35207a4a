//! `fleetauth api-key` and `fleetauth agent`: an agent's API keys (creating one
//! enrolls the agent) and its unenrollment, on the store the server uses.

use std::sync::Arc;

use clap::Subcommand;
use serde_json::json;

use super::{parse_expiration, print_json, CliError, StoreArgs};
use crate::agents;
use crate::clock::Clock;
use crate::config::Settings;
use crate::startup::Services;

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

/// Runs `fleetauth api-key ...`.
pub async fn run_api_key(
    command: ApiKeyCommand,
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<(), CliError> {
    match command {
        ApiKeyCommand::Create {
            agent_id,
            name,
            expiration,
            ..
        } => {
            if !agents::valid_agent_id(&agent_id) {
                return Err(CliError::Usage(format!(
                    "--agent-id must be 1 to {} characters of A-Z a-z 0-9 - _ . : @",
                    agents::MAX_AGENT_ID_LEN
                )));
            }
            let lifetime = parse_expiration(expiration)?;
            let services = Services::for_admin(settings, clock.clone()).await?;
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
        ApiKeyCommand::Invalidate { id, .. } => {
            let services = Services::for_admin(settings, clock).await?;
            let invalidated = services
                .api_keys
                .invalidate(&id)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            print_json(json!({ "id": id, "invalidated": invalidated }));
        }
    }
    Ok(())
}

/// Runs `fleetauth agent ...`.
pub async fn run_agent(
    command: AgentCommand,
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<(), CliError> {
    match command {
        AgentCommand::Unenroll { agent_id, .. } => {
            let services = Services::for_admin(settings, clock.clone()).await?;
            let existed = agents::unenroll(services.store.as_ref(), &agent_id, clock.now())
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            print_json(json!({ "agent_id": agent_id, "unenrolled": existed }));
        }
    }
    Ok(())
}
