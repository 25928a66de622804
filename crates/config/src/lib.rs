#![doc = include_str!("../README.md")]

mod duration;
mod encryption;
mod error;
mod load;
mod rate;
mod settings;

pub use encryption::{KeyRingSource, load_key_ring};
pub use error::ConfigError;
pub use load::{ENV_PREFIX, Environment, defaults, is_base_url, load, load_from};
pub use rate::RequestRate;
pub use settings::{
    ApiSettings, DatabaseSettings, DeclaredProviderSettings, EncryptionSettings, FetchSettings,
    InlineDefinition, OutputSettings, ProviderSettings, ProvidersSettings, QueueSettings, QueueUrl,
    Settings, Shape, WebhooksSettings, WorkerSettings,
};
