//! When a call is tried again: the policy, and reading `Retry-After`.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// How calls that may be repeated are retried: the answers 429 (`rate_limited`) and 503
/// (`service_unavailable`, `provider_unavailable`, `timeout`), and connections that could
/// not be made (nothing was sent). A call that must not be repeated (`POST /v1/jobs`
/// without an `Idempotency-Key`, a cancel) is sent once whatever the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: never retry).
    pub max_attempts: u32,
    /// The longest wait before a retry. An answer whose `Retry-After` asks for longer is
    /// returned at once (its `retry_after` says when to come back): waiting less would only
    /// be refused again.
    pub max_delay: Duration,
    /// The wait before the first retry when the answer gives no `Retry-After` (and for a
    /// connection that failed); doubled for each further one, up to `max_delay`.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, waits of at most 30 s, 500 ms without `Retry-After`.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            max_delay: Duration::from_secs(30),
            backoff: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// One attempt: every error is returned as it comes.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (1 for the first) when no `Retry-After` says.
    pub(crate) fn backoff_for(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_delay)
    }
}

/// Whether an answer with `status` is worth repeating (for a call that may be repeated).
pub(crate) fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds, or an HTTP date (a date in the past is
/// no wait). `None` when absent or unreadable.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A number too large for u64 is a wait nobody takes: the longest one.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers(" 0 ")), Some(Duration::ZERO));
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        let wait = retry_after(&headers(&in_a_minute)).unwrap();
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO),
            "a past date is no wait"
        );
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
        assert_eq!(
            retry_after(&headers("99999999999999999999999")),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            max_delay: Duration::from_secs(3),
            backoff: Duration::from_millis(500),
        };
        let waits: Vec<u64> = (1..=5)
            .map(|n| policy.backoff_for(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 3000, 3000]);
        assert_eq!(policy.backoff_for(200), Duration::from_secs(3));
    }
}
