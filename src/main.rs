//! `fleetauth`: parse the command line, load settings once, run.

use clap::Parser;
use fleetauth::cli::{self, Cli};

/// mimalloc instead of the system allocator: the request paths allocate a lot of small,
/// short-lived buffers (JSON, base64, header values) on two or more worker threads
/// (docs/benchmarks.md measures the difference).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let settings = match cli.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("fleetauth: {e}");
            std::process::exit(e.exit_code());
        }
    };
    fleetauth::telemetry::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fleetauth: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(cli::run(cli, settings)) {
        eprintln!("fleetauth: {e}");
        std::process::exit(e.exit_code());
    }
}
