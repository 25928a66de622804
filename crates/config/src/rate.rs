//! Request rates as the settings spell them: `"100/s, burst 200"`, `"600/min"`, `"off"`.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A rate of requests with a burst: on average `count` per `per`, and at most `burst` at
/// once after a quiet spell (a GCRA's parameters). `api.rate_limit` and
/// `api.auth_failure_limit` are written like `100/s, burst 200`; without a burst, the burst
/// is `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRate {
    /// Requests per `per`.
    pub count: NonZeroU32,
    /// The unit of time: one second, minute or hour.
    pub per: Duration,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
}

impl RequestRate {
    /// The time one request's share of the rate takes to come back (`per / count`).
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }

    /// Parses `N/s`, `N/min` or `N/h`, optionally followed by `, burst B`.
    pub fn parse(text: &str) -> Result<RequestRate, String> {
        let help = || {
            format!("`{text}` is not a rate; write it like `100/s, burst 200`, `600/min` or `off`")
        };
        let (rate, burst) = match text.split_once(',') {
            Some((rate, rest)) => {
                let burst = rest
                    .trim()
                    .strip_prefix("burst")
                    .ok_or_else(help)?
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| help())?;
                (rate, Some(burst))
            }
            None => (text, None),
        };
        let (count, unit) = rate.trim().split_once('/').ok_or_else(help)?;
        let count = count.trim().parse::<u32>().map_err(|_| help())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(help()),
        };
        let count = NonZeroU32::new(count)
            .ok_or_else(|| format!("`{text}`: the rate must be at least 1 (or `off`)"))?;
        let burst = match burst {
            None => count,
            Some(b) => NonZeroU32::new(b)
                .ok_or_else(|| format!("`{text}`: the burst must be at least 1"))?,
        };
        Ok(RequestRate { count, per, burst })
    }
}

impl fmt::Display for RequestRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}, burst {}", self.count, self.burst)
    }
}

/// Deserialises a rate, or `off` (no limit) as `None`.
pub(crate) fn deserialize_optional<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<RequestRate>, D::Error> {
    let text = String::deserialize(de)?;
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    RequestRate::parse(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, per: u64, burst: u32) -> RequestRate {
        RequestRate {
            count: NonZeroU32::new(count).unwrap(),
            per: Duration::from_secs(per),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn parses_rates_with_and_without_a_burst() {
        assert_eq!(
            RequestRate::parse("50/s, burst 100").unwrap(),
            rate(50, 1, 100)
        );
        assert_eq!(RequestRate::parse(" 600/min ").unwrap(), rate(600, 60, 600));
        assert_eq!(
            RequestRate::parse("10/h,burst 3").unwrap(),
            rate(10, 3600, 3)
        );
        assert_eq!(
            RequestRate::parse("100/s, burst 200").unwrap().to_string(),
            "100/s, burst 200"
        );
        assert_eq!(
            RequestRate::parse("100/s").unwrap().interval(),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "",
            "100",
            "100/d",
            "x/s",
            "0/s",
            "5/s, burst 0",
            "5/s, 10",
            "-1/s",
        ] {
            let err = RequestRate::parse(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }
}
