//! Why a system could not be assembled or stopped with an error.

use byok_config::ConfigError;

/// Why a system could not start, or how it stopped. Messages name the
/// setting to look at and never carry a secret: store, queue and limiter
/// errors name their kind, not their URL.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A setting is wrong; the operator fixes the configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be reached or prepared.
    #[error("{what} (database.url): {source}")]
    Database {
        /// What was being done.
        what: &'static str,
        /// The store's error.
        #[source]
        source: byok_store::StoreError,
    },
    /// The queue could not be reached.
    #[error("cannot connect to the queue ({setting}): {source}")]
    Queue {
        /// `queue.url`, or `database.url` for the embedded queue.
        setting: &'static str,
        /// The queue's error.
        #[source]
        source: byok_queue::QueueError,
    },
    /// The shared rate limiter could not be reached.
    #[error("cannot reach Redis for the rate limiter (queue.url): {0}")]
    Limiter(#[source] byok_ratelimit::RateLimitError),
    /// The budget ledger could not be reached.
    #[error("cannot reach Redis for the budget ledger (queue.url): {0}")]
    Budgets(#[source] byok_budgets::BudgetError),
    /// A provider definition is refused (the message names its file, provider and field).
    #[error("{0}")]
    Definition(#[source] byok_providers::declarative::DefinitionError),
    /// The provider adapters could not be set up.
    #[error("cannot set up the provider adapters: {0}")]
    Providers(#[source] byok_providers::RegistryError),
    /// The guarded image fetcher could not be set up.
    #[error("cannot set up the image fetcher: {0}")]
    Fetcher(#[source] byok_providers::FetchError),
    /// The video store could not be opened.
    #[error("cannot open the video store (output.url): {0}")]
    VideoStore(#[source] byok_video_store::VideoStoreError),
    /// A listening socket could not be opened.
    #[error("cannot listen on {address} ({setting}): {source}")]
    Listen {
        /// The setting that names the address.
        setting: &'static str,
        /// The address.
        address: std::net::SocketAddr,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The API server stopped with an error.
    #[error("the API server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The worker stopped with an error.
    #[error("the worker failed: {0}")]
    Worker(#[source] byok_worker::RunError),
    /// The webhook delivery worker stopped with an error.
    #[error("the webhook delivery worker failed: {0}")]
    Deliveries(String),
    /// No HTTP client for webhook deliveries could be built.
    #[error("cannot set up the webhook HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// A task of the system panicked.
    #[error("a task of the system ended abnormally: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl AppError {
    /// Whether the operator's configuration is at fault (a setting, or a provider
    /// definition): the CLI says so and exits with its configuration code (64).
    pub fn is_configuration(&self) -> bool {
        matches!(self, AppError::Config(_) | AppError::Definition(_))
    }
}
