#![doc = include_str!("../README.md")]

mod credentials;
mod descriptor;
mod http;
pub mod net;
mod options;
mod registry;
mod runway;
mod stability;
mod veo;
pub mod vertex;

pub use byok_core::ProviderId;
pub use credentials::{
    CredentialCheck, Credentials, CredentialsError, CredentialsKind, ServiceAccountKey,
};
pub use descriptor::{CredentialField, ProviderDescriptor, RateLimits};
pub use options::{ProviderOptions, RegistryOptions};
pub use registry::{Registry, RegistryError};

/// One video provider. Object-safe; used as `Arc<dyn VideoProvider>`.
///
/// This is the credential half of an adapter: describing the provider, checking the
/// shape of a user's credentials and asking the provider whether they work. The
/// generation half (submit, poll, cancel) is added to the same adapters later.
#[async_trait::async_trait]
pub trait VideoProvider: Send + Sync + std::fmt::Debug {
    /// Which provider this is.
    fn id(&self) -> ProviderId;

    /// Static description for `GET /v1/providers`.
    fn descriptor(&self) -> &ProviderDescriptor;

    /// Checks the shape of credentials as a producer submits them (the JSON object under
    /// `"credentials"` in `PUT …/credentials`) and equally as they were stored (the same
    /// JSON, re-read after decryption). Errors name the offending field.
    ///
    /// This makes no network call.
    fn parse_credentials(&self, raw: &serde_json::Value) -> Result<Credentials, CredentialsError>;

    /// Asks the provider whether the key works (cheap, non-billable call).
    ///
    /// Never fails: the outcome, including "could not tell", is in [`CredentialCheck`].
    async fn check_credentials(&self, credentials: &Credentials) -> CredentialCheck;
}
