//! Outbound pacing: `providers.<id>.max_requests_per_second` caps every request this
//! process sends to one provider (submits, polls, cancels, downloads, key checks) by
//! making the request wait for its turn; a paced request is never refused.
//!
//! This is a cap per process on the provider as a whole, for operators whose account or
//! network wants a ceiling (a shared egress, a provider's per-IP limit). It is not the
//! per-user-key quota: the sliding windows of `byok-ratelimit` stay the authority on
//! submits, across every process.

use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Mutex;

/// One provider's outbound pace; cheap to clone (the adapters of a provider share one).
#[derive(Debug, Clone, Default)]
pub(crate) struct Pace {
    inner: Option<Arc<Paced>>,
}

#[derive(Debug)]
struct Paced {
    /// A GCRA of burst 1: requests leave evenly spaced, never in a clump.
    limiter: DefaultDirectRateLimiter,
    /// Waiters queue here, first come first served. Without it every waiter would
    /// sleep until the same instant, wake together, and all but one would go back to
    /// sleep: a herd per slot, and no order among them.
    turn: Mutex<()>,
}

impl Pace {
    /// At most `per_second` requests a second; `None`: no pacing.
    pub(crate) fn new(per_second: Option<f64>) -> Pace {
        let inner = per_second
            .filter(|rate| rate.is_finite() && *rate > 0.0)
            // A rate so small that its period overflows a Duration paces nothing rather
            // than panicking (the configuration refuses such rates before they get here).
            .and_then(|rate| Duration::try_from_secs_f64(1.0 / rate).ok())
            .and_then(Quota::with_period)
            .map(|quota| {
                Arc::new(Paced {
                    limiter: RateLimiter::direct(quota),
                    turn: Mutex::new(()),
                })
            });
        Pace { inner }
    }

    /// Waits until the next request may leave.
    pub(crate) async fn ready(&self) {
        let Some(paced) = &self.inner else { return };
        let _turn = paced.turn.lock().await;
        paced.limiter.until_ready().await;
    }

    /// Waits for the turn, then sends `request`.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.ready().await;
        request.send().await
    }
}

/// How an adapter sends to its provider: paced, with the provider's name for messages and
/// the request timeout they quote. One per adapter.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    pace: Pace,
    /// The provider as messages name it.
    provider: Arc<str>,
    timeout: Duration,
    /// The most of an answer read ([`crate::http::MAX_BODY_BYTES`] unless raised).
    answer_limit: usize,
}

impl Outbound {
    pub(crate) fn new(pace: Pace, provider: impl Into<Arc<str>>, timeout: Duration) -> Outbound {
        Outbound {
            pace,
            provider: provider.into(),
            timeout,
            answer_limit: crate::http::MAX_BODY_BYTES,
        }
    }

    /// Reads submit and poll answers up to `limit` bytes instead of
    /// [`crate::http::MAX_BODY_BYTES`] (providers whose answers may echo large inputs).
    pub(crate) fn with_answer_limit(mut self, limit: usize) -> Outbound {
        self.answer_limit = limit;
        self
    }

    /// Waits for the turn, then sends `request` as it is.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.pace.send(request).await
    }

    /// A key check ([`crate::http::send_check`]).
    pub(crate) async fn check(
        &self,
        request: reqwest::RequestBuilder,
        secrets: &[&str],
    ) -> Result<(reqwest::StatusCode, crate::http::Body), crate::CredentialCheck> {
        crate::http::send_check(&self.pace, request, &self.provider, self.timeout, secrets).await
    }

    /// A submit ([`crate::classify::send_submit`]).
    pub(crate) async fn submit(
        &self,
        request: reqwest::RequestBuilder,
        secrets: &[&str],
    ) -> Result<crate::classify::Answer, byok_core::JobError> {
        crate::classify::send_submit(
            &self.pace,
            request,
            &self.provider,
            self.timeout,
            secrets,
            self.answer_limit,
        )
        .await
    }

    /// A poll, cancel or other repeatable call ([`crate::classify::send_idempotent`]).
    pub(crate) async fn idempotent(
        &self,
        request: reqwest::RequestBuilder,
        secrets: &[&str],
    ) -> Result<crate::classify::Answer, byok_core::JobError> {
        crate::classify::send_idempotent(
            &self.pace,
            request,
            &self.provider,
            self.timeout,
            secrets,
            self.answer_limit,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_that_cannot_pace_mean_no_pacing_not_a_panic() {
        for rate in [None, Some(0.0), Some(-1.0), Some(f64::NAN), Some(1e-30)] {
            assert!(Pace::new(rate).inner.is_none(), "{rate:?}");
        }
        assert!(Pace::new(Some(10.0)).inner.is_some());
    }
}
