//! The per-key submit quota of a provider: the one type the configuration, the provider
//! registry, the listing and the limiters share.

use serde::{Deserialize, Serialize};

/// Submits per user key the system lets through to a provider, in two sliding windows
/// (`providers.<id>.rate_limit.*`). Both are at least 1, and the hour's at least the
/// minute's: a quota that can never grant anything would leave jobs waiting forever
/// without anyone noticing.
// `RateLimits::check` enforces that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Submits per rolling minute.
    pub per_minute: u32,
    /// Submits per rolling hour.
    pub per_hour: u32,
}

impl RateLimits {
    /// The limits, or which field is wrong (`per_minute` or `per_hour`) and why.
    pub fn check(self) -> Result<RateLimits, (&'static str, &'static str)> {
        if self.per_minute == 0 {
            return Err(("per_minute", "must be at least 1"));
        }
        if self.per_hour < self.per_minute {
            return Err(("per_hour", "must be at least per_minute"));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_that_can_never_grant_is_refused() {
        let ok = RateLimits {
            per_minute: 5,
            per_hour: 50,
        };
        assert_eq!(ok.check(), Ok(ok));
        let zero = RateLimits {
            per_minute: 0,
            per_hour: 50,
        };
        assert_eq!(zero.check().unwrap_err().0, "per_minute");
        let small_hour = RateLimits {
            per_minute: 5,
            per_hour: 4,
        };
        assert_eq!(small_hour.check().unwrap_err().0, "per_hour");
    }
}
