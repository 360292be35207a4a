//! `fleetauth enrollment-token`: the enrollment tokens agents trade at
//! `POST /api/fleet/agents/enroll`, on the store the server uses.

use std::sync::Arc;

use clap::Subcommand;
use serde_json::json;

use super::{parse_expiration, print_json, CliError, StoreArgs};
use crate::clock::Clock;
use crate::config::Settings;
use crate::startup::Services;

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

/// Runs `fleetauth enrollment-token ...`.
pub async fn run_enrollment_token(
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
            let lifetime = parse_expiration(expiration)?;
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
