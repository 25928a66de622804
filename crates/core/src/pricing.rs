//! What a video costs, as data: a catalogue model's list prices, with where and when they
//! were read, and the estimate of one request from them.
//!
//! Money is kept as a whole number of millionths of a US dollar ([`Usd`]): sums of many jobs
//! are exact, and a budget compares integers, never floating-point values that drift. In
//! JSON and TOML it is a plain decimal number of dollars (`0.05`), read to the micro-dollar.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of US dollars, to the millionth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(i64);

/// The largest amount read from data: a hundred million dollars. Anything larger is a
/// mistake (or an attempt to overflow a sum), refused when read.
const MAX_MICROS: i64 = 100_000_000 * 1_000_000;

impl Usd {
    /// Nothing.
    pub const ZERO: Usd = Usd(0);

    /// `micros` millionths of a dollar.
    pub const fn from_micros(micros: i64) -> Usd {
        Usd(micros)
    }

    /// In millionths of a dollar.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// `self × n`, `None` on overflow.
    pub fn times(self, n: u32) -> Option<Usd> {
        self.0.checked_mul(i64::from(n)).map(Usd)
    }

    /// `self + other`, `None` on overflow.
    pub fn plus(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).map(Usd)
    }

    /// Dollars as a decimal text with at most six decimals, `0.05`, `12`, `-0.5`: exact.
    pub fn to_decimal(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (whole, fraction) = (abs / 1_000_000, abs % 1_000_000);
        if fraction == 0 {
            return format!("{sign}{whole}");
        }
        let fraction = format!("{fraction:06}");
        format!("{sign}{whole}.{}", fraction.trim_end_matches('0'))
    }

    /// Reads a decimal amount of dollars (`"0.05"`, `"12"`, at most six decimals, within
    /// ± a hundred million dollars); `None` otherwise.
    pub fn parse_decimal(text: &str) -> Option<Usd> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || whole.len() > 9
            || fraction.len() > 6
            || !all_digits(whole)
            || !all_digits(fraction)
            || (digits.contains('.') && fraction.is_empty())
        {
            return None;
        }
        let whole: i64 = whole.parse().ok()?;
        let fraction: i64 = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<6}").parse().ok()?
        };
        let micros = whole.checked_mul(1_000_000)?.checked_add(fraction)?;
        if micros > MAX_MICROS {
            return None;
        }
        Some(Usd(if negative { -micros } else { micros }))
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.to_decimal())
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Exact to the micro-dollar below 2^53 micro-dollars (nine billion dollars).
        serializer.serialize_f64(self.0 as f64 / 1_000_000.0)
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Usd;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount of US dollars with at most six decimals")
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Usd, E> {
                // Through the shortest decimal text of the number: 0.05 reads as 0.05,
                // not as the binary value just below it.
                let text = v.to_string();
                Usd::parse_decimal(&text)
                    .ok_or_else(|| E::custom(format!("{text} is not an amount of dollars")))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Usd, E> {
                Usd::parse_decimal(&v.to_string())
                    .ok_or_else(|| E::custom(format!("{v} is not an amount of dollars")))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Usd, E> {
                Usd::parse_decimal(&v.to_string())
                    .ok_or_else(|| E::custom(format!("{v} is not an amount of dollars")))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Usd, E> {
                Usd::parse_decimal(v).ok_or_else(|| {
                    E::custom("not an amount of dollars (digits, at most six decimals)")
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Usd {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some("US dollars, to the millionth"))
            .examples([serde_json::json!(0.25)])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Usd {}

/// A model's list prices: per second of output (one rate, or one per resolution) and/or
/// per video, with the page they were read from and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// Per second of output video: one rate without a resolution, or one per resolution
    /// the model makes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_second: Vec<SecondRate>,
    /// Per video, whatever its length (added to the per-second part, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub per_video: Option<Usd>,
    /// The provider's public price page (a URL).
    pub source: String,
    /// The day the prices were read there, `YYYY-MM-DD`.
    pub as_of: String,
}

/// One model's prices set by configuration (`[[providers.<id>.prices]]`): they replace the
/// catalogue's for that model (an operator's negotiated prices, or a price change that
/// came before a release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// The model's id in the provider's catalogue.
    pub model: String,
    /// Its prices.
    #[serde(flatten)]
    pub pricing: Pricing,
}

/// A price per second of output, at one resolution or at any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecondRate {
    /// The resolution it applies to (`720p`); absent: every resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub resolution: Option<String>,
    /// Dollars per second.
    pub usd: Usd,
}

impl Pricing {
    /// Checks the prices against the model's formats: [`Pricing::check_own`], and each
    /// resolution one the model makes.
    pub fn check(&self, resolutions: &[&str]) -> Result<(), String> {
        self.check_own()?;
        for rate in &self.per_second {
            if let Some(r) = rate.resolution.as_deref()
                && !resolutions.contains(&r)
            {
                return Err(format!(
                    "pricing.per_second names resolution `{r}`, which the model does not make"
                ));
            }
        }
        Ok(())
    }

    /// Checks the prices on their own: a source URL and a date, at least one price, none
    /// negative, no resolution named twice, and not both one rate for every resolution
    /// and rates for some.
    pub fn check_own(&self) -> Result<(), String> {
        if !(self.source.starts_with("https://") || self.source.starts_with("http://")) {
            return Err("pricing.source must be the URL of the price page".into());
        }
        if !crate::catalogue::is_iso_date(&self.as_of) {
            return Err("pricing.as_of must be YYYY-MM-DD".into());
        }
        if self.per_second.is_empty() && self.per_video.is_none() {
            return Err("pricing needs per_second or per_video".into());
        }
        let negative = |usd: Usd| usd < Usd::ZERO;
        if self.per_video.is_some_and(negative) || self.per_second.iter().any(|r| negative(r.usd)) {
            return Err("a price cannot be negative".into());
        }
        let mut seen: Vec<Option<&str>> = Vec::new();
        for rate in &self.per_second {
            let resolution = rate.resolution.as_deref();
            if seen.contains(&resolution) {
                return Err("pricing.per_second names a resolution twice".into());
            }
            seen.push(resolution);
        }
        if seen.contains(&None) && seen.len() > 1 {
            return Err(
                "pricing.per_second has a rate for every resolution and rates for some".into(),
            );
        }
        Ok(())
    }

    /// The list price of a video of `seconds` at `resolution`: `None` when a per-second
    /// price applies but the length is unknown, or no rate covers the resolution.
    pub fn estimate(&self, seconds: Option<u32>, resolution: Option<&str>) -> Option<Usd> {
        let per_second = if self.per_second.is_empty() {
            Usd::ZERO
        } else {
            let rate = self
                .per_second
                .iter()
                .find(|r| r.resolution.is_none() || r.resolution.as_deref() == resolution)?;
            rate.usd.times(seconds?)?
        };
        per_second.plus(self.per_video.unwrap_or(Usd::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_and_write_exactly_to_the_micro_dollar() {
        for (text, micros) in [
            ("0.05", 50_000),
            ("12", 12_000_000),
            ("0.000001", 1),
            ("1.5", 1_500_000),
            ("-0.25", -250_000),
        ] {
            let usd = Usd::parse_decimal(text).unwrap();
            assert_eq!(usd.micros(), micros, "{text}");
            assert_eq!(usd.to_decimal(), text);
        }
        for bad in [
            "",
            ".5",
            "5.",
            "0.0000001",
            "1e3",
            "abc",
            "1,5",
            "100000001",
            " 1",
            "--1",
        ] {
            assert_eq!(Usd::parse_decimal(bad), None, "{bad:?}");
        }
        // JSON numbers read through their decimal text: 0.05 is 50,000 micro-dollars.
        let read: Vec<Usd> = serde_json::from_str("[0.05, 0.1, 3, \"0.07\"]").unwrap();
        assert_eq!(
            read.iter().map(|u| u.micros()).collect::<Vec<_>>(),
            [50_000, 100_000, 3_000_000, 70_000]
        );
        assert_eq!(
            serde_json::to_string(&Usd::from_micros(50_000)).unwrap(),
            "0.05"
        );
        assert!(serde_json::from_str::<Usd>("1e300").is_err());
        assert!(serde_json::from_str::<Usd>("true").is_err());
    }

    fn pricing(per_second: &[(Option<&str>, i64)], per_video: Option<i64>) -> Pricing {
        Pricing {
            per_second: per_second
                .iter()
                .map(|(resolution, micros)| SecondRate {
                    resolution: resolution.map(str::to_owned),
                    usd: Usd::from_micros(*micros),
                })
                .collect(),
            per_video: per_video.map(Usd::from_micros),
            source: "https://example.com/pricing".into(),
            as_of: "2026-12-01".into(),
        }
    }

    #[test]
    fn estimates_follow_the_length_and_resolution() {
        let flat = pricing(&[(None, 50_000)], None);
        assert_eq!(flat.estimate(Some(10), Some("720p")), Some(Usd(500_000)));
        assert_eq!(flat.estimate(None, None), None, "length unknown");
        let by_resolution = pricing(&[(Some("720p"), 100_000), (Some("1080p"), 150_000)], None);
        assert_eq!(
            by_resolution.estimate(Some(8), Some("1080p")),
            Some(Usd(1_200_000))
        );
        assert_eq!(by_resolution.estimate(Some(8), Some("4k")), None);
        let base_and_seconds = pricing(&[(None, 280_000)], Some(0));
        assert_eq!(
            base_and_seconds.estimate(Some(5), None),
            Some(Usd(1_400_000))
        );
        let per_video = pricing(&[], Some(200_000));
        assert_eq!(per_video.estimate(None, None), Some(Usd(200_000)));
    }

    #[test]
    fn incoherent_prices_are_refused() {
        let resolutions = ["720p", "1080p"];
        assert!(pricing(&[(None, 1)], None).check(&resolutions).is_ok());
        for (bad, why) in [
            (pricing(&[], None), "needs"),
            (pricing(&[(None, -1)], None), "negative"),
            (pricing(&[(Some("4k"), 1)], None), "does not make"),
            (
                pricing(&[(Some("720p"), 1), (Some("720p"), 2)], None),
                "twice",
            ),
            (
                pricing(&[(None, 1), (Some("720p"), 2)], None),
                "every resolution",
            ),
            (
                Pricing {
                    source: "see the website".into(),
                    ..pricing(&[(None, 1)], None)
                },
                "URL",
            ),
            (
                Pricing {
                    as_of: "Dec 2026".into(),
                    ..pricing(&[(None, 1)], None)
                },
                "YYYY-MM-DD",
            ),
        ] {
            let error = bad.check(&resolutions).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
    }
}
