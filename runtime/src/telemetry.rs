//! Logging set-up: one call for binaries, examples and tests.

use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,ractor=warn";

/// Installs a `tracing` subscriber that prints to stderr, filtered by
/// `RUST_LOG` (default `info,ractor=warn`). Calling it twice is harmless:
/// the second call keeps the first subscriber.
///
/// ractor opens an info-level span per actor that lives as long as the
/// actor; with one actor per client session, the default filter keeps
/// them off so that they cost no memory.
pub fn init_tracing() {
    init_tracing_at("info");
}

/// As [`init_tracing`], with `level` (`error`, `warn`, `info`, `debug` or
/// `trace`) in place of the default's `info` when `RUST_LOG` is not set:
/// for a binary whose configuration file names its log level.
pub fn init_tracing_at(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},ractor=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
