//! Which video provider a key, a job or a setting belongs to.
//!
//! The providers built into this program are constants ([`ProviderId::VEO`], …, listed in
//! [`ProviderId::BUILT_IN`]) with the defaults of their settings. An operator adds more with
//! declarative definitions; each definition's id is *declared* once at start-up
//! ([`ProviderId::declare`]) and from then on parses, serializes and compares like a built-in
//! one. The set is process-wide and only grows: ids are interned as `&'static str`, so a
//! `ProviderId` stays `Copy` and comparing two is comparing two short strings.

use std::fmt;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::Duration;

/// A provider the system can run jobs on. The string form (`veo`, `runway`, a declared
/// `luma`, …) is part of the contract: it appears in URLs, in the `provider_name` column, in
/// configuration keys and in the AAD of sealed credentials, so it never changes once used.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId(&'static str);

/// The built-in defaults of one provider's settings (`providers.<id>.*`): the real host,
/// the default rate limits per user key (docs/rate-limits.md) and the provider's documented
/// minimum poll interval. IO-free data, shared by `byok-config` (its defaults layer) and
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

/// One line per built-in provider: its constant, its name and its defaults.
macro_rules! built_in {
    ($(
        $(#[$doc:meta])*
        $constant:ident = $name:literal {
            base_url: $base_url:expr,
            per_minute: $per_minute:expr,
            per_hour: $per_hour:expr,
            poll_interval_secs: $poll:expr $(,)?
        }
    ),+ $(,)?) => {
        impl ProviderId {
            $(
                $(#[$doc])*
                pub const $constant: ProviderId = ProviderId($name);
            )+

            /// The providers built into this program, in the order listings show them.
            pub const BUILT_IN: [ProviderId; [$($name),+].len()] = [$(ProviderId::$constant),+];

            /// The names of [`ProviderId::BUILT_IN`], in the same order.
            pub const BUILT_IN_NAMES: [&'static str; Self::BUILT_IN.len()] = [$($name),+];

            /// The defaults of the built-in providers, in [`ProviderId::BUILT_IN`] order.
            const BUILT_IN_DEFAULTS: [ProviderDefaults; Self::BUILT_IN.len()] = [$(
                ProviderDefaults {
                    base_url: $base_url,
                    rate_limits: crate::RateLimits {
                        per_minute: $per_minute,
                        per_hour: $per_hour,
                    },
                    poll_interval: Duration::from_secs($poll),
                }
            ),+];
        }
    };
}

built_in! {
    /// Google Veo on Vertex AI.
    VEO = "veo" { base_url: "https://{location}-aiplatform.googleapis.com", per_minute: 10, per_hour: 100, poll_interval_secs: 10 },
    /// Runway's developer API (api.dev.runwayml.com, not api.runwayml.com:
    /// docs/provider-protocols.md §1.1).
    RUNWAY = "runway" { base_url: "https://api.dev.runwayml.com", per_minute: 5, per_hour: 50, poll_interval_secs: 5 },
    /// Stability AI's hosted API (its video model retired on 2025-07-24; keys can still be
    /// stored and checked).
    STABILITY = "stability" { base_url: "https://api.stability.ai", per_minute: 3, per_hour: 30, poll_interval_secs: 10 },
    /// fal.ai's queue API: many vendors' video models behind one key. Requests over the
    /// account's concurrency wait in fal's queue, so polls stay 5 s apart.
    FAL = "fal" { base_url: "https://queue.fal.run", per_minute: 10, per_hour: 200, poll_interval_secs: 5 },
    /// Replicate's predictions API: official and community video models behind one token.
    REPLICATE = "replicate" { base_url: "https://api.replicate.com", per_minute: 10, per_hour: 200, poll_interval_secs: 5 },
}

/// The ids declared at run time, interned. Only definitions loaded at start-up declare
/// ids (an operator's files, bounded); input from outside only looks ids up, so hostile
/// requests cannot grow this set.
static DECLARED: RwLock<Vec<&'static str>> = RwLock::new(Vec::new());

/// Names that cannot be declared: `providers.<name>` keys the configuration uses itself.
const RESERVED: [&str; 2] = ["definitions", "definitions_dir"];

/// The longest provider id.
pub const MAX_PROVIDER_ID_LEN: usize = 40;

impl ProviderId {
    /// The stable wire and storage name.
    pub const fn as_str(self) -> &'static str {
        self.0
    }

    /// Whether this provider is built into the program (else it was declared).
    pub fn is_built_in(self) -> bool {
        Self::BUILT_IN.contains(&self)
    }

    /// The built-in defaults of a built-in provider's settings; `None` for a declared one
    /// (its definition holds them).
    pub fn defaults(self) -> Option<ProviderDefaults> {
        Self::BUILT_IN
            .iter()
            .position(|p| *p == self)
            .map(|i| Self::BUILT_IN_DEFAULTS[i])
    }

    /// Declares the id of a provider defined by configuration, so that it parses and
    /// deserializes from now on. Declaring a declared id again returns it (definitions are
    /// loaded once per system, and a process may build several).
    pub fn declare(name: &str) -> Result<ProviderId, InvalidProviderId> {
        Self::check_name(name)?;
        // A poisoned lock still holds a consistent list: pushes are the only writes.
        let mut declared = DECLARED.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = declared.iter().find(|d| **d == name) {
            return Ok(ProviderId(existing));
        }
        // Leaked on purpose: an interned id lives as long as the process (a few bytes per
        // operator definition).
        let interned: &'static str = Box::leak(name.to_owned().into_boxed_str());
        declared.push(interned);
        Ok(ProviderId(interned))
    }

    /// Whether `name` could be declared: the rules of [`ProviderId::declare`], without
    /// declaring it.
    pub fn check_name(name: &str) -> Result<(), InvalidProviderId> {
        let syntax_ok = (1..=MAX_PROVIDER_ID_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !syntax_ok {
            return Err(InvalidProviderId::Syntax);
        }
        if Self::BUILT_IN.iter().any(|p| p.as_str() == name) {
            return Err(InvalidProviderId::BuiltIn);
        }
        if RESERVED.contains(&name) {
            return Err(InvalidProviderId::Reserved);
        }
        Ok(())
    }

    /// The built-in providers, then every declared one in declaration order.
    pub fn known() -> Vec<ProviderId> {
        let declared = DECLARED.read().unwrap_or_else(|e| e.into_inner());
        Self::BUILT_IN
            .into_iter()
            .chain(declared.iter().map(|name| ProviderId(name)))
            .collect()
    }

    fn lookup(name: &str) -> Option<ProviderId> {
        if let Some(p) = Self::BUILT_IN.iter().find(|p| p.as_str() == name) {
            return Some(*p);
        }
        let declared = DECLARED.read().unwrap_or_else(|e| e.into_inner());
        declared
            .iter()
            .find(|d| **d == name)
            .map(|name| ProviderId(name))
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderId({})", self.0)
    }
}

/// Why a name cannot be declared as a provider id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProviderId {
    /// Not 1 to 40 of `a-z`, `0-9`, `_`, `-`.
    #[error("must be 1 to 40 of a-z, 0-9, `_` and `-`")]
    Syntax,
    /// A built-in provider's id.
    #[error("is a built-in provider's id")]
    BuiltIn,
    /// A name the configuration uses for itself.
    #[error("is reserved (`providers.definitions` and `providers.definitions_dir` are settings)")]
    Reserved,
}

/// A provider name that is neither built in nor declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{name}`; known providers: {}", known_names())]
pub struct UnknownProvider {
    /// What was asked for, truncated so that hostile input cannot flood a log line.
    pub name: String,
}

fn known_names() -> String {
    ProviderId::known()
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for ProviderId {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderId::lookup(s).ok_or_else(|| UnknownProvider {
            name: s.chars().take(64).collect(),
        })
    }
}

impl serde::Serialize for ProviderId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ProviderId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = ProviderId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a provider id")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProviderId, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ProviderId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        let built_in = ProviderId::BUILT_IN
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ");
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .pattern(Some("^[a-z0-9_-]{1,40}$"))
            .examples([serde_json::json!("runway")])
            .description(Some(format!(
                "A provider's id: a built-in one ({built_in}) or one this deployment declares \
                 by a definition. `GET /v1/providers` lists the providers of this deployment."
            )))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ProviderId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_form_round_trips_and_matches_serde() {
        for p in ProviderId::BUILT_IN {
            assert_eq!(p.as_str().parse::<ProviderId>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
            assert_eq!(
                serde_json::from_str::<ProviderId>(&format!("\"{p}\"")).unwrap(),
                p
            );
            assert!(p.is_built_in());
        }
        assert_eq!(
            ProviderId::BUILT_IN.map(ProviderId::as_str),
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
        let message = "sora".parse::<ProviderId>().unwrap_err().to_string();
        assert!(
            message.starts_with(
                "unknown provider `sora`; known providers: veo, runway, stability, fal, replicate"
            ),
            "{message}"
        );
        let serde_err = serde_json::from_str::<ProviderId>("\"sora\"").unwrap_err();
        assert!(
            serde_err.to_string().contains("unknown provider `sora`"),
            "{serde_err}"
        );
        assert!(serde_json::from_str::<ProviderId>("7").is_err());
    }

    #[test]
    fn a_declared_id_parses_and_serializes_like_a_built_in_one() {
        assert!("unit-test-acme".parse::<ProviderId>().is_err());
        let acme = ProviderId::declare("unit-test-acme").unwrap();
        assert_eq!(acme.as_str(), "unit-test-acme");
        assert!(!acme.is_built_in());
        assert_eq!(acme.defaults(), None);
        assert_eq!("unit-test-acme".parse::<ProviderId>().unwrap(), acme);
        assert_eq!(
            serde_json::from_str::<ProviderId>("\"unit-test-acme\"").unwrap(),
            acme
        );
        assert_eq!(ProviderId::declare("unit-test-acme").unwrap(), acme);
        assert!(ProviderId::known().contains(&acme));
        assert_eq!(
            ProviderId::known()[..ProviderId::BUILT_IN.len()],
            ProviderId::BUILT_IN
        );
    }

    #[test]
    fn built_in_reserved_and_malformed_names_cannot_be_declared() {
        assert_eq!(
            ProviderId::declare("runway"),
            Err(InvalidProviderId::BuiltIn)
        );
        assert_eq!(
            ProviderId::declare("definitions_dir"),
            Err(InvalidProviderId::Reserved)
        );
        for bad in ["", "Luma", "a b", "ü", &"x".repeat(41)] {
            assert_eq!(
                ProviderId::declare(bad),
                Err(InvalidProviderId::Syntax),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_are_the_real_hosts_seed_limits_and_documented_poll_intervals() {
        let d = |base_url, per_minute, per_hour, poll| {
            Some(ProviderDefaults {
                base_url,
                rate_limits: crate::RateLimits {
                    per_minute,
                    per_hour,
                },
                poll_interval: Duration::from_secs(poll),
            })
        };
        assert_eq!(
            ProviderId::VEO.defaults(),
            d("https://{location}-aiplatform.googleapis.com", 10, 100, 10)
        );
        assert_eq!(
            ProviderId::RUNWAY.defaults(),
            d("https://api.dev.runwayml.com", 5, 50, 5)
        );
        assert_eq!(
            ProviderId::STABILITY.defaults(),
            d("https://api.stability.ai", 3, 30, 10)
        );
        assert_eq!(
            ProviderId::FAL.defaults(),
            d("https://queue.fal.run", 10, 200, 5)
        );
        assert_eq!(
            ProviderId::REPLICATE.defaults(),
            d("https://api.replicate.com", 10, 200, 5)
        );
        for p in ProviderId::BUILT_IN {
            let defaults = p.defaults().unwrap();
            assert!(defaults.rate_limits.check().is_ok());
            assert!(!defaults.poll_interval.is_zero());
        }
    }
}
