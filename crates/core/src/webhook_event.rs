//! The events a project's webhook endpoints subscribe to (crates/api/README.md, "Webhooks").

use std::fmt;
use std::str::FromStr;

/// What happened: the `type` of a webhook payload, and what an endpoint subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// The provider accepted a job's submit.
    JobRunning,
    /// A running job's progress moved (at most one per job per 5 s).
    JobProgress,
    /// A job finished with its video.
    JobSucceeded,
    /// A job failed.
    JobFailed,
    /// A job was cancelled.
    JobCancelled,
    /// A job moved to its next fallback provider (docs/failover.md).
    JobFallback,
    /// Every job of a batch reached a final status.
    BatchCompleted,
    /// A provider rejected a user's stored key: the app should ask the user for a new one.
    CredentialInvalidated,
    /// A user connected a key through a "connect your key" link (docs/connect.md).
    CredentialConnected,
}

impl EventType {
    /// Every type, in the order they are listed.
    pub const ALL: [EventType; 9] = [
        EventType::JobRunning,
        EventType::JobProgress,
        EventType::JobSucceeded,
        EventType::JobFailed,
        EventType::JobCancelled,
        EventType::JobFallback,
        EventType::BatchCompleted,
        EventType::CredentialInvalidated,
        EventType::CredentialConnected,
    ];

    /// The types a job's own `webhook_url` receives.
    pub const JOB: [EventType; 6] = [
        EventType::JobRunning,
        EventType::JobProgress,
        EventType::JobSucceeded,
        EventType::JobFailed,
        EventType::JobCancelled,
        EventType::JobFallback,
    ];

    /// The type's name, e.g. `job.succeeded` (a stored and wire format).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobRunning => "job.running",
            EventType::JobProgress => "job.progress",
            EventType::JobSucceeded => "job.succeeded",
            EventType::JobFailed => "job.failed",
            EventType::JobCancelled => "job.cancelled",
            EventType::JobFallback => "job.fallback",
            EventType::BatchCompleted => "batch.completed",
            EventType::CredentialInvalidated => "credential.invalidated",
            EventType::CredentialConnected => "credential.connected",
        }
    }

    /// Whether the event's `data` is a job.
    pub fn is_job_event(self) -> bool {
        EventType::JOB.contains(&self)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown event type `{0}`; types are job.running, job.progress, job.succeeded, job.failed, job.cancelled, job.fallback, batch.completed, credential.invalidated, credential.connected"
)]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.chars().take(64).collect()))
    }
}

impl serde::Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for EventType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(EventType::ALL.iter().map(|t| t.as_str())))
            .description(Some("A webhook event type"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for EventType {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<EventType>(&json).unwrap(), t);
        }
        assert_eq!(
            "job.started".parse::<EventType>().unwrap_err(),
            UnknownEventType("job.started".into())
        );
        assert!(EventType::JobFailed.is_job_event());
        assert!(!EventType::BatchCompleted.is_job_event());
    }
}
