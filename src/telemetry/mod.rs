//! Logs (tracing, to stderr) and metrics (a Prometheus recorder). Both are process
//! globals, installed once even when tests start many servers in one process. Every
//! metric series, its description and its buckets are in [`metrics`].

pub mod metrics;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber; `FLEETAUTH_LOG` (or `RUST_LOG`) sets the filter.
pub fn init_tracing() {
    let filter = std::env::var("FLEETAUTH_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (series, buckets) in metrics::buckets() {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(series.into()), buckets)
                    .expect("bucket lists are not empty");
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by an embedding program);
            // then this handle renders only what is recorded through it.
            if ::metrics::set_global_recorder(recorder).is_ok() {
                metrics::recorder_installed();
                metrics::describe();
            }
            handle
        })
        .clone()
}
