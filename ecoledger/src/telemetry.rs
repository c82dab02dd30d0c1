use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr; `ECOLEDGER_LOG` (or `RUST_LOG`) filters, default `info`. Colours only on a
/// terminal: in a log file or a collector, escape codes are noise around every field.
pub fn init() {
    let filter = std::env::var("ECOLEDGER_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
