//! `search-service`: see the README's "A real service" section.
//!
//! ```sh
//! DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
//! CACHED_REDIS_URL=redis://127.0.0.1:6379/0 \
//! cargo run --release -p search-service
//! ```

use std::process::ExitCode;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[tokio::main]
async fn main() -> ExitCode {
    // RUST_LOG as `target=level,...` (e.g. `info,cached_runtime=debug`).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| f.parse::<Targets>().ok())
        .unwrap_or_else(|| "info,cached_runtime=warn".parse().expect("valid filter"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .finish()
        .with(filter)
        .init();
    let settings = match search_service::Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("search-service: {e}");
            return ExitCode::from(2);
        }
    };
    let on_listening = |addr| {
        // One line on stdout, for scripts and tests that start the service.
        println!("search-service listening on http://{addr}");
    };
    match search_service::run(settings, on_listening, search_service::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("search-service: {e}");
            ExitCode::FAILURE
        }
    }
}
