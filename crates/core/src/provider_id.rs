//! The closed set of video providers this build knows how to talk to, and the defaults of
//! their settings. Everything that enumerates providers (configuration defaults and keys,
//! the registry of adapters, listings) derives from the one list at the top of this file.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

provider_ids! {
    /// Google Veo on Vertex AI.
    Veo = "veo" { base_url: "https://{location}-aiplatform.googleapis.com", per_minute: 10, per_hour: 100, poll_interval_secs: 10 },
    /// Runway's developer API (api.dev.runwayml.com, not api.runwayml.com:
    /// docs/provider-protocols.md §1.1).
    Runway = "runway" { base_url: "https://api.dev.runwayml.com", per_minute: 5, per_hour: 50, poll_interval_secs: 5 },
    /// Stability AI's hosted API (its video model retired on 2025-07-24; keys can still be
    /// stored and checked).
    Stability = "stability" { base_url: "https://api.stability.ai", per_minute: 3, per_hour: 30, poll_interval_secs: 10 },
    /// fal.ai's queue API: many vendors' video models behind one key. Requests over the
    /// account's concurrency wait in fal's queue, so polls stay 5 s apart.
    Fal = "fal" { base_url: "https://queue.fal.run", per_minute: 10, per_hour: 200, poll_interval_secs: 5 },
    /// Replicate's predictions API: official and community video models behind one token.
    Replicate = "replicate" { base_url: "https://api.replicate.com", per_minute: 10, per_hour: 200, poll_interval_secs: 5 },
}

/// The built-in defaults of one provider's settings (`providers.<id>.*`): the real host,
/// the default rate limits per user key (docs/rate-limits.md) and the provider's documented minimum
/// poll interval. IO-free data, shared by `byok-config` (its defaults layer) and
/// `byok-providers` (`RegistryOptions::defaults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderDefaults {
    /// `providers.<id>.base_url`. Veo's contains the literal `{location}`, replaced by the
    /// credentials' location.
    pub base_url: &'static str,
    /// `providers.<id>.rate_limit.*`.
    pub rate_limits: crate::RateLimits,
    /// `providers.<id>.poll_interval`.
    pub poll_interval: Duration,
}

/// Generates [`ProviderId`] (the enum, [`ProviderId::ALL`], [`ProviderId::NAMES`],
/// [`ProviderId::as_str`], [`ProviderId::defaults`], serde, and with `openapi` its schema) from one entry per provider:
/// `Variant = "wire name" { base_url: …, per_minute: …, per_hour: …, poll_interval_secs: … }`.
///
/// The wire name is matched as a token tree, not as a `literal` fragment: a fragment reaches
/// derive macros wrapped in an invisible group, which serde looks through but utoipa does
/// not (its schema would list the variant names instead of the wire names).
macro_rules! provider_ids {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $name:tt {
            base_url: $base_url:expr,
            per_minute: $per_minute:expr,
            per_hour: $per_hour:expr,
            poll_interval_secs: $poll:expr $(,)?
        }
    ),+ $(,)?) => {
        /// A provider the system can run jobs on. The string form (`veo`, `runway`,
        /// `stability`, …) is part of the contract: it appears in URLs, in the
        /// `provider_name` column, in configuration keys and in the AAD of sealed
        /// credentials, so it never changes once released.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum ProviderId {
            $(
                $(#[$doc])*
                #[serde(rename = $name)]
                $variant,
            )+
        }

        impl ProviderId {
            /// The stable names of every provider, in [`ProviderId::ALL`] order.
            pub const NAMES: [&'static str; [$($name),+].len()] = [$($name),+];

            /// Every provider, in the order listings show them.
            pub const ALL: [ProviderId; Self::NAMES.len()] = [$(ProviderId::$variant),+];

            /// The stable wire and storage name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ProviderId::$variant => $name,)+
                }
            }

            /// The built-in defaults of this provider's settings.
            pub const fn defaults(self) -> ProviderDefaults {
                match self {
                    $(ProviderId::$variant => ProviderDefaults {
                        base_url: $base_url,
                        rate_limits: crate::RateLimits {
                            per_minute: $per_minute,
                            per_hour: $per_hour,
                        },
                        poll_interval: Duration::from_secs($poll),
                    },)+
                }
            }
        }
    };
}
use provider_ids;

impl ProviderId {
    /// This provider's position in [`ProviderId::ALL`], for tables indexed by provider.
    pub const fn index(self) -> usize {
        // The variants are declared in `ALL` order with implicit discriminants 0, 1, ….
        self as usize
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider name that is not one of [`ProviderId::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{name}`; known providers: {}", ProviderId::NAMES.join(", "))]
pub struct UnknownProvider {
    /// What was asked for, truncated so that hostile input cannot flood a log line.
    pub name: String,
}

impl FromStr for ProviderId {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderId::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProvider {
                name: s.chars().take(64).collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_form_round_trips_and_matches_serde() {
        for (i, p) in ProviderId::ALL.into_iter().enumerate() {
            assert_eq!(p.as_str().parse::<ProviderId>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
            assert_eq!(
                serde_json::from_str::<ProviderId>(&format!("\"{p}\"")).unwrap(),
                p
            );
            assert_eq!(p.index(), i);
            assert_eq!(ProviderId::NAMES[i], p.as_str());
        }
        assert_eq!(
            ProviderId::NAMES,
            ["veo", "runway", "stability", "fal", "replicate"]
        );
    }

    #[test]
    fn unknown_names_are_rejected_and_truncated() {
        let long = "x".repeat(1000);
        let err = long.parse::<ProviderId>().unwrap_err();
        assert_eq!(err.name.len(), 64);
        assert!(
            "Runway".parse::<ProviderId>().is_err(),
            "names are case-sensitive"
        );
        assert_eq!(
            "sora".parse::<ProviderId>().unwrap_err().to_string(),
            "unknown provider `sora`; known providers: veo, runway, stability, fal, replicate"
        );
        let serde_err = serde_json::from_str::<ProviderId>("\"sora\"").unwrap_err();
        assert!(
            serde_err
                .to_string()
                .contains("expected one of `veo`, `runway`, `stability`, `fal`, `replicate`"),
            "{serde_err}"
        );
    }

    #[test]
    fn defaults_are_the_real_hosts_seed_limits_and_documented_poll_intervals() {
        let d = |base_url, per_minute, per_hour, poll| ProviderDefaults {
            base_url,
            rate_limits: crate::RateLimits {
                per_minute,
                per_hour,
            },
            poll_interval: Duration::from_secs(poll),
        };
        assert_eq!(
            ProviderId::Veo.defaults(),
            d("https://{location}-aiplatform.googleapis.com", 10, 100, 10)
        );
        assert_eq!(
            ProviderId::Runway.defaults(),
            d("https://api.dev.runwayml.com", 5, 50, 5)
        );
        assert_eq!(
            ProviderId::Stability.defaults(),
            d("https://api.stability.ai", 3, 30, 10)
        );
        assert_eq!(
            ProviderId::Fal.defaults(),
            d("https://queue.fal.run", 10, 200, 5)
        );
        assert_eq!(
            ProviderId::Replicate.defaults(),
            d("https://api.replicate.com", 10, 200, 5)
        );
        for p in ProviderId::ALL {
            let defaults = p.defaults();
            assert!(defaults.rate_limits.check().is_ok());
            assert!(!defaults.poll_interval.is_zero());
        }
    }
}
