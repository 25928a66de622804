//! The knobs: how long jobs take, how often they fail or are throttled, what
//! counts as moderated content, how long tokens live. Set at start and at
//! run time (`PUT /_sim/config` with a partial JSON object, or
//! [`RunningSim::set_config`](crate::RunningSim::set_config)).
//!
//! A job takes the knobs in force when it is submitted: changing the render
//! time does not speed up jobs already running.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The simulator's run-time knobs. The JSON form (`GET`/`PUT /_sim/config`)
/// names durations with their unit (`render_time_ms`, `token_lifetime_secs`…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// From submit to done. `0` finishes a job at once. Default 3 s.
    #[serde(rename = "render_time_ms", with = "millis")]
    pub render_time: Duration,
    /// Whether a running Runway task reports `progress` (0–1), and a processing
    /// Replicate prediction a tqdm bar in its `logs`; without it clients must cope
    /// with a running job that says nothing more. Default true.
    pub report_progress: bool,
    /// Share (0–1) of jobs that end in failure: Runway `FAILED` with
    /// `failureCode: INTERNAL`, Vertex an operation `error` with code 13,
    /// Stability a 500 on the result, Replicate a prediction `failed` with
    /// "Prediction interrupted; please retry (code: PA)". Default 0.
    pub failure_rate: f64,
    /// Share (0–1) of submits answered 429 with the provider's own body and
    /// retry hint. Default 0.
    pub throttle_rate: f64,
    /// The retry delay of every simulated 429 (`Retry-After` for Runway,
    /// `RetryInfo.retryDelay` for Vertex, "resets in ~Ns" in Replicate's text;
    /// Stability sends none). Default 2 s.
    #[serde(rename = "retry_after_ms", with = "millis")]
    pub retry_after: Duration,
    /// A prompt containing this text is moderated: the Runway task fails
    /// with `SAFETY.INPUT.TEXT`, the Vertex operation ends RAI-filtered, the
    /// Replicate prediction fails with "flagged as sensitive (E005)".
    /// Empty disables it. Default `sim:moderate`.
    pub moderation_trigger: String,
    /// Stability has no prompt: a submit with this `seed` is refused with
    /// 403 `content_moderation`. Default 666.
    pub moderation_seed: u64,
    /// A Stability job with this `seed` succeeds with
    /// `finish-reason: CONTENT_FILTERED` (output moderation). Default 667.
    pub filtered_seed: u64,
    /// `expires_in` of issued Vertex access tokens; tokens stop working
    /// after it. Default 3599 s.
    #[serde(rename = "token_lifetime_secs", with = "secs")]
    pub token_lifetime: Duration,
    /// Stability's documented limit: more than this many requests within
    /// 10 s from one key get 429, then every request from that key gets 429
    /// for 60 s. `0` disables it. Default 150.
    pub stability_requests_per_10s: u32,
    /// How long finished jobs stay retrievable (real providers keep results
    /// 24–48 h); older jobs are forgotten and answer 404. Default 24 h.
    #[serde(rename = "retention_secs", with = "secs")]
    pub retention: Duration,
    /// Vertex model ids that exist; any other model is 404 `NOT_FOUND`, as
    /// a retired model is. The `gemini-` ones are served by the Interactions API.
    /// Default: the Veo 3.1 models and the Gemini Omni models.
    pub vertex_models: Vec<String>,
    /// Bytes appended to every *downloaded* video (Runway's `/files`, Cloud Storage
    /// `alt=media`) as a trailing MP4 `free` box, streamed, never built in memory: large
    /// outputs for download tests. `0` (the default) or 8 (the box header) to 1 GiB.
    /// Read when a download is served. Inline videos (Stability, Vertex base64) are not
    /// padded.
    pub video_padding_bytes: u64,
    /// fal's per-account concurrency: each key runs at most this many requests at once, and
    /// the rest wait `IN_QUEUE` with a `queue_position` (fal queues, never refuses). Default
    /// 2, what fal gives a new account; `0` runs everything at once (benchmarks).
    pub fal_concurrency: u32,
}

/// The largest [`SimConfig::video_padding_bytes`].
pub const MAX_VIDEO_PADDING: u64 = 1 << 30;

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            render_time: Duration::from_secs(3),
            report_progress: true,
            failure_rate: 0.0,
            throttle_rate: 0.0,
            retry_after: Duration::from_secs(2),
            moderation_trigger: "sim:moderate".to_owned(),
            moderation_seed: 666,
            filtered_seed: 667,
            token_lifetime: Duration::from_secs(3599),
            stability_requests_per_10s: 150,
            retention: Duration::from_secs(24 * 3600),
            vertex_models: [
                "veo-3.1-generate-001",
                "veo-3.1-fast-generate-001",
                "veo-3.1-generate-preview",
                "veo-3.1-fast-generate-preview",
                "veo-3.1-lite-generate-001",
                // Gemini Omni, served by the Interactions API.
                "gemini-omni-1.2-flash",
                "gemini-omni-1.1-flash-preview",
                "gemini-omni-flash-preview",
            ]
            .map(str::to_owned)
            .to_vec(),
            video_padding_bytes: 0,
            fal_concurrency: 2,
        }
    }
}

/// A knob out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The JSON name of the knob.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl SimConfig {
    /// Checks the ranges (shares within 0–1, a token lifetime of at least
    /// one second).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, share) in [
            ("failure_rate", self.failure_rate),
            ("throttle_rate", self.throttle_rate),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(ConfigError {
                    field,
                    message: format!("must be between 0 and 1, got {share}"),
                });
            }
        }
        if self.video_padding_bytes != 0
            && !(8..=MAX_VIDEO_PADDING).contains(&self.video_padding_bytes)
        {
            return Err(ConfigError {
                field: "video_padding_bytes",
                message: format!(
                    "must be 0 or between 8 and {MAX_VIDEO_PADDING}, got {}",
                    self.video_padding_bytes
                ),
            });
        }
        if self.token_lifetime < Duration::from_secs(1) {
            return Err(ConfigError {
                field: "token_lifetime_secs",
                message: "must be at least 1".to_owned(),
            });
        }
        Ok(())
    }

    /// This configuration with the fields of `patch` (a JSON object holding
    /// any subset of the knobs) replaced.
    pub fn merged(&self, patch: &serde_json::Value) -> Result<SimConfig, String> {
        let serde_json::Value::Object(patch) = patch else {
            return Err("the body must be a JSON object of knobs".to_owned());
        };
        let mut current = serde_json::to_value(self).map_err(|e| e.to_string())?;
        if let serde_json::Value::Object(fields) = &mut current {
            for (name, value) in patch {
                fields.insert(name.clone(), value.clone());
            }
        }
        let merged: SimConfig = serde_json::from_value(current).map_err(|e| e.to_string())?;
        merged.validate().map_err(|e| e.to_string())?;
        Ok(merged)
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_patch_changes_only_its_fields() {
        let base = SimConfig::default();
        let merged = base
            .merged(&serde_json::json!({"render_time_ms": 0, "failure_rate": 0.5}))
            .unwrap();
        assert_eq!(merged.render_time, Duration::ZERO);
        assert!((merged.failure_rate - 0.5).abs() < f64::EPSILON);
        assert_eq!(merged.token_lifetime, base.token_lifetime);
    }

    #[test]
    fn bad_patches_are_refused_with_the_field_named() {
        let base = SimConfig::default();
        let e = base
            .merged(&serde_json::json!({"failure_rate": 2}))
            .unwrap_err();
        assert!(e.contains("failure_rate"), "{e}");
        let e = base
            .merged(&serde_json::json!({"render_time": 1}))
            .unwrap_err();
        assert!(e.contains("render_time"), "{e}");
        assert!(base.merged(&serde_json::json!([1])).is_err());
        assert!(
            base.merged(&serde_json::json!({"token_lifetime_secs": 0}))
                .is_err()
        );
        for padding in [1, 7, MAX_VIDEO_PADDING + 1] {
            let e = base
                .merged(&serde_json::json!({ "video_padding_bytes": padding }))
                .unwrap_err();
            assert!(e.contains("video_padding_bytes"), "{e}");
        }
        assert!(
            base.merged(&serde_json::json!({"video_padding_bytes": 8}))
                .is_ok()
        );
    }
}
