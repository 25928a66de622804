//! Reading the provider's answers by the definition's JSON pointers (RFC 6901).

use std::time::Duration;

use byok_core::{ErrorCode, JobError};
use serde_json::Value;

use super::{Definition, ErrorRule, Retry, State};
use base64::Engine as _;

use crate::generation::{RemoteStatus, Video, VideoOutput};

/// The wait of a `retry_after` rule when the provider says nothing.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// What a poll answer says, read by the definition's pointers.
#[derive(Debug, Clone, PartialEq)]
pub struct PollReading {
    /// The provider's own state value.
    pub provider_state: String,
    /// Where the job stands: `Succeeded` carries the video URL, `Failed` the classified
    /// failure.
    pub status: RemoteStatus,
}

/// The value at `pointer` as text: strings as they are, numbers written out; `None` when
/// absent, `null`, empty or of another type.
fn text(answer: &Value, pointer: &str) -> Option<String> {
    match answer.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn unavailable(message: String) -> JobError {
    JobError::transient(ErrorCode::ProviderUnavailable, message)
}

/// The error of `rule`, with `wait` for `retry_after`.
pub(super) fn job_error(rule: ErrorRule, wait: Option<Duration>, message: String) -> JobError {
    match rule.retry {
        Retry::Permanent => JobError::permanent(rule.code, message),
        Retry::Transient => JobError::transient(rule.code, message),
        Retry::RetryAfter => JobError::retry_after(wait.unwrap_or(DEFAULT_WAIT), message),
    }
}

/// At most 300 characters of provider text, without control characters.
fn tidy(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

impl Definition {
    /// The provider's job id in a submit answer (`submit.job_id`). Without one the job
    /// may still exist, so the outcome is unknown (never re-sent).
    pub fn job_id(&self, answer: &Value) -> Result<String, JobError> {
        match text(answer, &self.submit.job_id) {
            Some(id) if id.len() <= 512 && !id.chars().any(char::is_control) => Ok(id),
            _ => Err(JobError::submit_outcome_unknown(format!(
                "{} accepted the submit but its answer has no job id at `{}`; it is not \
                 re-sent, because it may have created a billable job",
                self.id, self.submit.job_id
            ))),
        }
    }

    /// Reads a poll answer: the state (mapped by `poll.states`), the progress, the video
    /// URL of a succeeded job and the classified failure of a failed one. An answer without
    /// a state, with a state the definition does not map, or succeeded without a video URL
    /// is `provider_unavailable` (transient: asked again).
    pub fn read_poll(&self, answer: &Value) -> Result<PollReading, JobError> {
        let provider_state = text(answer, &self.poll.state).ok_or_else(|| {
            unavailable(format!(
                "{} answered a poll without a state at `{}`",
                self.id, self.poll.state
            ))
        })?;
        let state = self
            .poll
            .states
            .get(&provider_state)
            .and_then(|s| State::parse(s))
            .ok_or_else(|| {
                unavailable(format!(
                    "{} answered the unknown state `{}`",
                    self.id,
                    tidy(&provider_state)
                ))
            })?;
        let status = match state {
            State::Queued => RemoteStatus::Queued,
            State::Running => RemoteStatus::Running {
                progress: self.progress(answer),
            },
            State::Succeeded => RemoteStatus::Succeeded(self.video_of(answer)?, Default::default()),
            State::Failed => RemoteStatus::Failed(self.failure(answer, &provider_state)),
            State::Cancelled => RemoteStatus::Cancelled,
        };
        Ok(PollReading {
            provider_state,
            status,
        })
    }

    /// Where a succeeded job's video is: its URL (`poll.video_url`) or its bytes, decoded
    /// (`poll.video_base64`; a `data:` URI is accepted too). Missing or undecodable is
    /// `provider_unavailable`, transient: the next poll may carry it.
    fn video_of(&self, answer: &Value) -> Result<VideoOutput, JobError> {
        if let Some(pointer) = &self.poll.video_base64 {
            let encoded = text(answer, pointer).ok_or_else(|| {
                unavailable(format!(
                    "{} reports the job done but gives no video at `{pointer}`",
                    self.id
                ))
            })?;
            let encoded = match encoded.split_once(";base64,") {
                Some((_, data)) if encoded.starts_with("data:") => data,
                _ => encoded.as_str(),
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| {
                    unavailable(format!(
                        "{} gave a video at `{pointer}` that is not base64",
                        self.id
                    ))
                })?;
            return Ok(VideoOutput::Inline(Video {
                bytes,
                content_type: "video/mp4".to_owned(),
                note: None,
            }));
        }
        let pointer = self.poll.video_url.as_deref().unwrap_or_default();
        let url = text(answer, pointer).ok_or_else(|| {
            unavailable(format!(
                "{} reports the job done but gives no video URL at `{pointer}`",
                self.id
            ))
        })?;
        Ok(VideoOutput::Urls(vec![url]))
    }

    /// The progress in 0..=1, when the definition has a pointer and the answer a number.
    pub fn progress(&self, answer: &Value) -> Option<f64> {
        let pointer = self.poll.progress.as_deref()?;
        let value = answer.pointer(pointer)?.as_f64()?;
        value
            .is_finite()
            .then(|| (value / self.poll.progress_scale).clamp(0.0, 1.0))
    }

    /// The classified failure of a failed job: its code (at `poll.failure_code`, else the
    /// provider's state) mapped by `poll.failure_codes`, else `poll.failure_default`.
    pub fn failure(&self, answer: &Value, provider_state: &str) -> JobError {
        let code = self
            .poll
            .failure_code
            .as_deref()
            .and_then(|p| text(answer, p))
            .unwrap_or_else(|| provider_state.to_owned());
        let rule = self
            .poll
            .failure_codes
            .get(&code)
            .copied()
            .unwrap_or(self.poll.failure_default);
        let reason = self
            .poll
            .failure_message
            .as_deref()
            .and_then(|p| text(answer, p));
        let message = match reason {
            Some(r) => format!("{} failed the job ({}): {}", self.id, tidy(&code), tidy(&r)),
            None => format!("{} failed the job ({})", self.id, tidy(&code)),
        };
        job_error(rule, None, message)
    }

    /// The error of a failed HTTP answer: the rule for `status` (`errors.status`, else the
    /// common table), the provider's message at `errors.message` when the body has one,
    /// and `wait` (read by the caller from the headers) for a `retry_after` rule.
    pub fn classify_status(
        &self,
        status: u16,
        body: Option<&Value>,
        wait: Option<Duration>,
    ) -> JobError {
        let rule = self.errors.rule(status);
        let detail = self
            .errors
            .message
            .as_deref()
            .zip(body)
            .and_then(|(p, b)| text(b, p));
        let message = match detail {
            Some(d) => format!("{} answered HTTP {status}: {}", self.id, tidy(&d)),
            None => format!("{} answered HTTP {status}", self.id),
        };
        job_error(rule, wait, message)
    }
}
