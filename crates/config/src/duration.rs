//! Durations in configuration are humantime strings: `500ms`, `5s`, `30m`, `1h 30m`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Deserialises a humantime string. Bare numbers are refused on purpose:
/// `timeout = 30` could mean seconds or milliseconds, and a wrong guess is
/// worse than an error that names the setting.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// [`deserialize`] of an optional setting.
pub(crate) fn deserialize_option<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<Duration>, D::Error> {
    match Option::<String>::deserialize(de)? {
        Some(text) => parse(&text).map(Some).map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write it like 500ms, 5s, 30m or 1h")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_humantime_and_refuses_bare_numbers() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse(" 5s ").unwrap(), Duration::from_secs(5));
        assert!(parse("30").unwrap_err().contains("like 500ms"));
        assert!(parse("soon").is_err());
    }
}
