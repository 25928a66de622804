//! Logging: human-readable by default, JSON with `BYOK_LOG_FORMAT=json`;
//! the level comes from `RUST_LOG` when set. Logs go to stderr so that
//! stdout carries only a command's result (a token, a key, a table).
//!
//! `RUST_LOG` is a list of `level` and `target=level` directives
//! (`info,byok_worker=debug,sqlx=warn`). tracing-subscriber's `EnvFilter`
//! also filters on spans and field values, which nobody here uses and which
//! costs the binary a regular-expression engine; [`Targets`] reads the
//! target/level form with the same syntax.

use std::str::FromStr as _;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Parses a log filter in `RUST_LOG`'s syntax.
pub fn parse_filter(value: &str) -> Result<Targets, String> {
    Targets::from_str(value).map_err(|e| format!("`{value}` is not a log filter: {e}"))
}

/// `default` is the level when `RUST_LOG` is not set. A `RUST_LOG` that does
/// not parse is reported on stderr and `default` is used: a typo in a log
/// setting must not keep a worker from starting.
pub fn init(default: &str) {
    let fallback = || parse_filter(default).unwrap_or_default();
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => parse_filter(&value).unwrap_or_else(|error| {
            eprintln!("RUST_LOG: {error}; logging at `{default}`");
            fallback()
        }),
        _ => fallback(),
    };
    let json = std::env::var("BYOK_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
    });
    let json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    // try_init: a second initialisation (tests) is not an error worth dying for.
    let _ = tracing_subscriber::registry()
        .with(text)
        .with(json)
        .with(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn filters_read_levels_per_target_and_refuse_nonsense() {
        let filter = parse_filter("warn,byok_worker=debug").unwrap();
        assert!(filter.would_enable("byok_worker::poll", &Level::DEBUG));
        assert!(!filter.would_enable("sqlx::query", &Level::INFO));
        assert!(filter.would_enable("sqlx::query", &Level::WARN));
        let error = parse_filter("byok=loud").unwrap_err();
        assert!(error.contains("`byok=loud` is not a log filter"), "{error}");
    }
}
