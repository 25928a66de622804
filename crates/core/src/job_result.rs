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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_stored_with_a_video_url_still_reads() {
        let stored = serde_json::json!({
            "video_url": "/v1/jobs/01890a5d-ac96-774b-bcce-b302099a8057/video",
            "provider_urls": ["https://cdn.example/out.mp4"],
            "bytes": 1234, "content_type": "video/mp4", "note": null,
        });
        let result: JobResult = serde_json::from_value(stored).unwrap();
        assert_eq!(result.bytes, 1234);
        assert_eq!(result.provider_urls, ["https://cdn.example/out.mp4"]);
        assert!(
            !serde_json::to_string(&result)
                .unwrap()
                .contains("video_url")
        );
    }
}
