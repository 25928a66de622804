//! Storage errors. Their text may name tables and rows but never values of
//! sealed credentials or tokens; the API still shows callers only a generic
//! message and logs the detail.

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached (connect failure, pool timeout, closed
    /// connection): the caller should answer 503 and may retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The schema is older than this build and migrations were not applied.
    #[error(
        "the database schema is not up to date ({pending} migration(s) pending): run `byok migrate`"
    )]
    SchemaOutdated {
        /// Migrations not yet applied.
        pending: usize,
    },
    /// A stored row holds a value this build cannot read (the column is
    /// named): refused rather than guessed at.
    #[error("a stored row holds an unreadable value in {0}")]
    Malformed(&'static str),
    /// An argument was refused before reaching the database.
    #[error("invalid input: {0}")]
    Invalid(&'static str),
    /// The row would collide with an existing one (a name already taken).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database URL is not one this build supports.
    #[error("unsupported database URL: expected postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl,
    /// Preparing local storage (the SQLite file's directory) failed.
    #[error("cannot prepare the database file: {0}")]
    Io(#[source] std::io::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error),
            other => StoreError::Database(other),
        }
    }
}

impl StoreError {
    /// Whether the database is (temporarily) unreachable rather than the
    /// request being wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
