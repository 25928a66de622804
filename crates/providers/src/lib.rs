#![doc = include_str!("../README.md")]

mod catalogue;
mod classify;
mod credentials;
mod data_uri;
pub mod declarative;
mod descriptor;
mod download;
mod fal;
pub mod fetch;
mod generation;
mod http;
mod interactions;
pub mod net;
mod options;
mod pace;
mod registry;
mod replicate;
mod runway;
mod sealed;
mod stability;
mod veo;
pub mod vertex;

pub use byok_core::{
    Catalogue, GenerationRequest, JobError, ProviderId, ValidatedRequest, ValidationError,
};
pub use catalogue::Capabilities;
pub use credentials::{
    CredentialCheck, Credentials, CredentialsError, CredentialsKind, ServiceAccountKey,
};
pub use descriptor::{CredentialField, ProviderDescriptor};
pub use fetch::{FetchError, FetchOptions, ImageFetcher, ImageWork};
pub use generation::{
    CancelOutcome, InputImage, RemoteStatus, SavedVideo, SubmitRequest, Submitted, Video,
    VideoOutput,
};
pub use http::wipe_json;
pub use options::{GOOGLE_TOKEN_URI, ProviderOptions, RegistryOptions};
pub use registry::{Pacing, Registry, RegistryError};
pub use sealed::{OpenError, open_credentials};

/// One video provider. Object-safe; used as `Arc<dyn VideoProvider>`.
///
/// The credential half describes the provider, checks the shape of a user's
/// credentials and asks the provider whether they work. The generation half
/// validates a neutral request against the catalogue, submits it, polls the
/// remote job, cancels it where the provider can, and downloads the result.
/// Every failure of the generation half is a [`JobError`]: a stable code and
/// one of the three retry classes (docs/job-lifecycle.md, "Failure classes").
#[async_trait::async_trait]
pub trait VideoProvider: Send + Sync + std::fmt::Debug {
    /// Which provider this is.
    fn id(&self) -> ProviderId;

    /// Static description for `GET /v1/providers`.
    fn descriptor(&self) -> &ProviderDescriptor;

    /// The models this deployment offers and what each accepts.
    fn catalogue(&self) -> &Catalogue;

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

    /// Checks a neutral request against this provider's catalogue and fills
    /// in the defaults; the error names the field and the allowed values.
    /// No network call: this runs at enqueue, before anything is stored.
    fn validate(&self, request: &GenerationRequest) -> Result<ValidatedRequest, ValidationError> {
        self.catalogue().validate(request)
    }

    /// Sends the job to the provider. On success the provider has accepted
    /// (and will bill) it: the caller must record `provider_job_id` before
    /// anything else. A submit whose answer was lost is
    /// `submit_outcome_unknown` and must never be re-sent.
    async fn submit(
        &self,
        credentials: &Credentials,
        request: SubmitRequest<'_>,
    ) -> Result<Submitted, JobError>;

    /// Asks where the remote job stands. Safe to repeat.
    async fn poll(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<RemoteStatus, JobError>;

    /// Cancels the remote job where the provider can.
    async fn cancel(
        &self,
        credentials: &Credentials,
        provider_job_id: &str,
    ) -> Result<CancelOutcome, JobError>;

    /// Downloads a finished video (URLs expire, so the worker copies it at once) into the
    /// file `dest`, created or truncated, streaming: a download is never held in memory
    /// (inline outputs already are, and are written out). The size limit (512 MiB) is
    /// enforced while streaming. On an error `dest` may hold part of the video and the
    /// caller removes it. A failure to write `dest` is `internal` and transient; every
    /// other error is the provider's, classified as for the other calls.
    async fn fetch_output(
        &self,
        credentials: &Credentials,
        output: &VideoOutput,
        dest: &std::path::Path,
    ) -> Result<SavedVideo, JobError>;
}
