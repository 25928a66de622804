//! Errors of the queue.

/// A queue operation failed. Workers never see these: their backend logs,
/// backs off and retries. Producers and operator tools do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// Redis answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] sqlx::Error),
    /// A payload could not be encoded.
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// An argument was refused.
    #[error("invalid: {0}")]
    Invalid(String),
}
