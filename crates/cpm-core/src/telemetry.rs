//! Logging setup: tracing to stderr as text or JSON; stdout stays free for command output.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;

/// Installs the global subscriber on stderr. `RUST_LOG`, when set, wins over `level`.
/// Calling it twice is harmless (the second call does nothing), which keeps tests simple.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().ok();
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing::subscriber::set_global_default(subscriber(
        format,
        level,
        filter,
        ansi,
        std::io::stderr,
    ));
}

/// A subscriber writing to `writer`: `filter` if given, else `level` (falling back to `info`).
pub fn subscriber<W>(
    format: LogFormat,
    level: &str,
    filter: Option<EnvFilter>,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .finish(),
        ),
    }
}

#[cfg(test)]
mod tests;
