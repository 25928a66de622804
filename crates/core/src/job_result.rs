//! What a succeeded job produced.

use serde::{Deserialize, Serialize};

/// What a succeeded job produced, as the worker stores it.
// Where to download the video is not part of it: the API adds `video_url`, a route of its
// own made from the job id. Rows written before this type existed carry a `video_url` too,
// which is ignored on read.
// In the schema every field is `required`: all are always serialised (`default` is only
// for reading rows of older builds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobResult {
    /// The provider's own URLs of the output, where it gives any (they expire).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub provider_urls: Vec<String>,
    /// The size of the stored video.
    pub bytes: u64,
    /// The stored video's media type.
    #[cfg_attr(feature = "openapi", schema(example = "video/mp4"))]
    pub content_type: String,
    /// What the provider said about the output, if anything (e.g. Stability's
    /// `CONTENT_FILTERED`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub note: Option<String>,
    /// What the provider itself reported about the work, where it reports anything
    /// (the basis of its bill for compute-priced models).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub provider_usage: ProviderUsage,
}

/// What a provider reported about a finished job's work, as far as it reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderUsage {
    /// Compute time the provider measured, in milliseconds (Replicate's
    /// `metrics.predict_time`, fal's `metrics.inference_time`); `null` when it gives none.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required))]
    pub compute_ms: Option<u64>,
}

impl ProviderUsage {
    /// Nothing reported.
    pub const NONE: ProviderUsage = ProviderUsage { compute_ms: None };

    /// From a provider's figure in seconds; a negative, infinite or absurd (over a
    /// day) figure is not believed.
    pub fn from_compute_seconds(seconds: Option<f64>) -> ProviderUsage {
        let compute_ms = seconds
            .filter(|s| s.is_finite() && (0.0..=86_400.0).contains(s))
            .map(|s| (s * 1000.0).round() as u64);
        ProviderUsage { compute_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_figures_are_believed_only_when_plausible() {
        let ms = |s| ProviderUsage::from_compute_seconds(s).compute_ms;
        assert_eq!(ms(Some(41.2)), Some(41_200));
        assert_eq!(ms(Some(0.0004)), Some(0));
        assert_eq!(ms(None), None);
        assert_eq!(ms(Some(-1.0)), None);
        assert_eq!(ms(Some(f64::NAN)), None);
        assert_eq!(ms(Some(1e12)), None);
    }

    #[test]
    fn a_result_stored_with_a_video_url_still_reads() {
        let stored = serde_json::json!({
            "video_url": "/v1/jobs/01890a5d-ac96-774b-bcce-b302099a8057/video",
            "provider_urls": ["https://cdn.example/out.mp4"],
            "bytes": 1234, "content_type": "video/mp4", "note": null,
        });
        let result: JobResult = serde_json::from_value(stored).unwrap();
        assert_eq!(result.bytes, 1234);
        assert_eq!(result.provider_usage, ProviderUsage::NONE);
        assert_eq!(result.provider_urls, ["https://cdn.example/out.mp4"]);
        assert!(
            !serde_json::to_string(&result)
                .unwrap()
                .contains("video_url")
        );
    }
}
