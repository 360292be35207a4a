//! `fleetauth serve`: the server, until SIGINT or SIGTERM.

use std::sync::Arc;

use serde_json::json;

use super::{print_json, CliError};
use crate::clock::Clock;
use crate::config::Settings;
use crate::startup::Application;

/// Runs the server; prints `{"status": "listening", "listen", "scheme"}` once bound.
pub async fn serve(settings: Settings, clock: Arc<dyn Clock>) -> Result<(), CliError> {
    let app = Application::build(settings, clock).await?;
    let addr = app.local_addr();
    let scheme = app.scheme();
    tracing::info!(%addr, scheme, "fleetauth listening");
    print_json(json!({ "status": "listening", "listen": addr.to_string(), "scheme": scheme }));
    app.run_until(shutdown_signal())
        .await
        .map_err(|e| CliError::Failed(format!("server failed: {e}")))?;
    Ok(())
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
