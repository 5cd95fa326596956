//! Log set-up: JSON lines (default) or text on stderr; level from LOCK_EXEC_LOG or RUST_LOG.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The default filter: our own info lines, only errors from the AWS SDK and HTTP stack
/// (their warnings repeat, at length, what lock-exec reports in one line).
const DEFAULT_FILTER: &str = "error,lock_exec=info";

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let directive = std::env::var("LOCK_EXEC_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| DEFAULT_FILTER.to_string());
    // A bare level such as "debug" applies to lock-exec only; the SDK stays at error.
    let directive = if directive.contains('=') || directive.contains(',') {
        directive
    } else {
        format!("error,lock_exec={directive}")
    };
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}
