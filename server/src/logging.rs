//! Structured JSON logs. Handlers never log payloads, keys, tokens, signatures or phone
//! hashes; the request span carries the request id, method and route template only.

use tracing_subscriber::EnvFilter;

/// Installs the global JSON subscriber writing to stdout.
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .try_init();
}
