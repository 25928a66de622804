//! The closed set of video providers this build knows how to talk to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A provider the system can run jobs on. The string form (`veo`, `runway`,
/// `stability`) is part of the contract: it appears in URLs, in the
/// `provider_name` column, in configuration keys and in the AAD of sealed
/// credentials, so it never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderId {
    /// Google Veo on Vertex AI.
    Veo,
    /// Runway's developer API.
    Runway,
    /// Stability AI's hosted API.
    Stability,
}

impl ProviderId {
    /// Every provider, in the order listings show them.
    pub const ALL: [ProviderId; 3] = [ProviderId::Veo, ProviderId::Runway, ProviderId::Stability];

    /// The stable wire and storage name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProviderId::Veo => "veo",
            ProviderId::Runway => "runway",
            ProviderId::Stability => "stability",
        }
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider name that is not one of [`ProviderId::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{name}`; known providers: veo, runway, stability")]
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
        for p in ProviderId::ALL {
            assert_eq!(p.as_str().parse::<ProviderId>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
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
    }
}
