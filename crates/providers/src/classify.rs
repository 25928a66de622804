//! Classification of provider answers into stable codes and the three retry
//! classes of docs/job-lifecycle.md ("Failure classes"), shared by the adapters.
//!
//! Each adapter looks at its provider's own signals first (Runway's credit
//! message in a 400, Stability's `content_moderation` 403, Google's
//! `RESOURCE_EXHAUSTED`, …) and falls back to [`by_status`] for the rest.

use std::time::{Duration, SystemTime};

use byok_core::{ErrorCode, JobError};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::http::{Body, describe_transport_error, read_up_to, sanitize};
use crate::pace::Pace;

/// The wait used when a provider throttles without saying for how long.
/// Stability documents a 60-second lockout after its rate limit (docs/provider-protocols.md §2.5).
pub(crate) const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(60);

/// The longest wait a provider's retry header is believed for; beyond it
/// the job waits this long and asks again (a typo'd or hostile header must
/// not park a job for a year).
pub(crate) const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(6 * 3600);

/// An answer read from a provider: status, headers and the capped body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
}

/// Sends a **submit**. A failure before the request left (DNS, connect,
/// TLS handshake) is transient: the provider never saw it. Any failure after
/// that — a timeout, a connection cut mid-response, an unreadable body — is
/// `submit_outcome_unknown`: the job may exist and be billed, and no provider
/// offers an idempotency key, so it must never be re-sent blindly. So is a 504:
/// a gateway in front of the provider gave up waiting for the answer, which says
/// nothing about whether the job was created behind it.
pub(crate) async fn send_submit(
    pace: &Pace,
    request: reqwest::RequestBuilder,
    provider: &str,
    timeout: Duration,
    secrets: &[&str],
    limit: usize,
) -> Result<Answer, JobError> {
    let failed = |err: &reqwest::Error| {
        let what = sanitize(&describe_transport_error(err, timeout), secrets);
        if err.is_connect() {
            JobError::transient(
                ErrorCode::ProviderUnavailable,
                format!("{provider} could not be reached: {what}"),
            )
        } else {
            JobError::submit_outcome_unknown(format!(
                "the submit to {provider} was sent but its answer was lost ({what}); it is not re-sent, because it may have created a billable job"
            ))
        }
    };
    let response = pace.send(request).await.map_err(|e| failed(&e))?;
    let status = response.status();
    if status == StatusCode::GATEWAY_TIMEOUT {
        return Err(gateway_timeout(provider));
    }
    let headers = response.headers().clone();
    let body = read_up_to(response, limit).await.map_err(|e| failed(&e))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The error of a submit answered 504 Gateway Timeout (see [`send_submit`]).
pub(crate) fn gateway_timeout(provider: &str) -> JobError {
    JobError::submit_outcome_unknown(format!(
        "the submit to {provider} was answered 504 Gateway Timeout: a gateway gave up waiting \
         for it, so the job may exist; it is not re-sent, because it may have created a \
         billable job"
    ))
}

/// Sends a request that is safe to repeat (poll, cancel, key check):
/// every transport failure is transient.
pub(crate) async fn send_idempotent(
    pace: &Pace,
    request: reqwest::RequestBuilder,
    provider: &str,
    timeout: Duration,
    secrets: &[&str],
    limit: usize,
) -> Result<Answer, JobError> {
    let failed = |err: &reqwest::Error| {
        JobError::transient(
            ErrorCode::ProviderUnavailable,
            format!(
                "{provider} could not be reached: {}",
                sanitize(&describe_transport_error(err, timeout), secrets)
            ),
        )
    };
    let response = pace.send(request).await.map_err(|e| failed(&e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_up_to(response, limit).await.map_err(|e| failed(&e))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// How long a throttled request should wait, from the headers the
/// providers' SDKs honour: `retry-after-ms` (milliseconds), then
/// `retry-after` as delta-seconds or an HTTP date. `None` when absent or
/// unreadable. Capped at [`MAX_THROTTLE_WAIT`].
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let wait = if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        non_negative_secs(ms / 1000.0)?
    } else {
        let value = text("retry-after")?;
        if let Ok(secs) = value.parse::<f64>() {
            non_negative_secs(secs)?
        } else {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_THROTTLE_WAIT))
}

/// Google's `RetryInfo.retryDelay` from a `google.rpc.Status` body
/// (`{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"41s"}]}}`).
/// The delay is a protobuf Duration in JSON: decimal seconds with an `s`.
pub(crate) fn google_retry_delay(body: &Value) -> Option<Duration> {
    let details = body.get("error")?.get("details")?.as_array()?;
    let delay = details.iter().find(|d| {
        d.get("@type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
    })?;
    let text = delay.get("retryDelay")?.as_str()?;
    let secs: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    Some(non_negative_secs(secs)?.min(MAX_THROTTLE_WAIT))
}

fn non_negative_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_THROTTLE_WAIT.as_secs_f64())))
}

/// The default meaning of an HTTP status for a provider call, when the
/// provider's own signals said nothing more specific:
/// 400/422 invalid request, 401/403 bad key, 402 credits, 404/410 gone (a
/// retired model on submit), 413 too large, 408 and 5xx transient, 429
/// throttled (with the header wait or [`DEFAULT_THROTTLE_WAIT`]).
pub(crate) fn by_status(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    detail: Option<String>,
) -> JobError {
    let code = status.as_u16();
    let detail = detail.filter(|d| !d.is_empty());
    let message = |what: &str| match &detail {
        Some(d) => format!("{provider} {what} (HTTP {code}): {d}"),
        _ => format!("{provider} {what} (HTTP {code})"),
    };
    match code {
        400 | 413 | 422 => {
            JobError::permanent(ErrorCode::InvalidRequest, message("refused the request"))
        }
        401 | 403 => {
            JobError::permanent(ErrorCode::CredentialsInvalid, message("rejected the key"))
        }
        402 => JobError::permanent(
            ErrorCode::InsufficientCredits,
            message("reports no credits left"),
        ),
        404 | 410 => JobError::permanent(
            ErrorCode::ModelRetired,
            message("no longer serves this model or endpoint"),
        ),
        429 => JobError::retry_after(
            retry_after(headers, SystemTime::now()).unwrap_or(DEFAULT_THROTTLE_WAIT),
            message("is throttling this key"),
        ),
        408 | 500..=599 => JobError::transient(ErrorCode::ProviderUnavailable, message("failed")),
        _ => JobError::permanent(
            ErrorCode::ProviderUnavailable,
            message("answered unexpectedly"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_reads_every_header_form() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1500")]), now),
            Some(Duration::from_millis(1500))
        );
        // retry-after-ms wins when both are sent, as in the providers' SDKs.
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "9"), ("retry-after-ms", "250")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &past)]), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-5")]), now), None);
        assert_eq!(retry_after(&headers(&[]), now), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "99999999")]), now),
            Some(MAX_THROTTLE_WAIT)
        );
    }

    #[test]
    fn google_retry_info_is_read_from_status_details() {
        let body = serde_json::json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"}
        ]}});
        assert_eq!(google_retry_delay(&body), Some(Duration::from_secs(41)));
        let fractional = serde_json::json!({"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}});
        assert_eq!(
            google_retry_delay(&fractional),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            google_retry_delay(&serde_json::json!({"error": {"details": []}})),
            None
        );
        assert_eq!(
            google_retry_delay(
                &serde_json::json!({"error": {"details": [{"@type": "x.RetryInfo", "retryDelay": "abc"}]}})
            ),
            None
        );
    }

    #[test]
    fn statuses_map_to_codes_and_classes() {
        let h = HeaderMap::new();
        let cases = [
            (400, ErrorCode::InvalidRequest, false),
            (401, ErrorCode::CredentialsInvalid, false),
            (403, ErrorCode::CredentialsInvalid, false),
            (402, ErrorCode::InsufficientCredits, false),
            (404, ErrorCode::ModelRetired, false),
            (429, ErrorCode::ProviderUnavailable, true),
            (500, ErrorCode::ProviderUnavailable, true),
            (503, ErrorCode::ProviderUnavailable, true),
            (408, ErrorCode::ProviderUnavailable, true),
        ];
        for (status, code, retryable) in cases {
            let e = by_status(
                "Runway",
                StatusCode::from_u16(status).unwrap(),
                &h,
                Some("why".into()),
            );
            assert_eq!((e.code, e.is_retryable()), (code, retryable), "{status}");
            assert!(e.message.contains(&format!("HTTP {status}")) && e.message.ends_with("why"));
        }
        let throttled = by_status("X", StatusCode::TOO_MANY_REQUESTS, &h, None);
        assert_eq!(
            throttled.class,
            byok_core::RetryClass::RetryAfter(DEFAULT_THROTTLE_WAIT)
        );
    }
}
