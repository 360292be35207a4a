//! `fleetauth keys` and `fleetauth tokens`: signing-key rotation and bulk revocation,
//! on the store the server uses (servers beside it see the change at their next key
//! poll, or at once for stored pairs).

use std::sync::Arc;

use clap::Subcommand;
use serde_json::json;

use super::{print_json, CliError, StoreArgs};
use crate::clock::Clock;
use crate::config::{self, Settings};
use crate::startup::Services;
use crate::tokens;

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

/// Runs `fleetauth keys ...`.
pub async fn run_keys(
    command: KeysCommand,
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<(), CliError> {
    match command {
        KeysCommand::Rotate { algorithm, .. } => {
            let algorithm = algorithm
                .map(|a| {
                    config::SigningAlgorithm::parse(&a).ok_or_else(|| {
                        CliError::Usage(format!(
                            "--algorithm {a:?} is not one of EdDSA, ES256, RS256"
                        ))
                    })
                })
                .transpose()?;
            let services = Services::for_admin(settings, clock.clone()).await?;
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
    }
    Ok(())
}

/// Runs `fleetauth tokens ...`.
pub async fn run_tokens(
    command: TokensCommand,
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Result<(), CliError> {
    match command {
        TokensCommand::Revoke {
            agent_id,
            client_id,
            kid,
            issued_before,
            ..
        } => {
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
            let services = Services::for_admin(settings, clock.clone()).await?;
            let revoked = services
                .tokens
                .revoke_bulk(criterion)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            print_json(json!({ "by": criterion.label(), "revoked": revoked }));
        }
    }
    Ok(())
}
