//! Logging: human-readable by default, JSON with `BYOK_LOG_FORMAT=json`;
//! the level comes from `RUST_LOG` when set. Logs go to stderr so that
//! stdout carries only a command's result (a token, a key, a table).

use tracing_subscriber::EnvFilter;

/// `default` is the level when `RUST_LOG` is not set.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let json = std::env::var("BYOK_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // try_init: a second initialisation (tests) is not an error worth dying for.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
