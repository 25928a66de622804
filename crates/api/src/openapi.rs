//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json`.
//!
//! It is generated from the code: each handler carries its `#[utoipa::path]`
//! (route, parameters, body, success responses), the types it returns derive
//! their schemas, and [`Conventions`] adds what every route shares: the
//! bearer scheme on `/v1`, the error responses (one schema, each status
//! narrowed to the codes that route can answer with, from [`ERRORS`]) and
//! the `x-request-id` header. Types defined in other crates are described
//! here, in [`schemas`], beside checks that fail to compile when those types
//! gain a variant the document does not list.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use byok_core::{ErrorCode, JobStatus, ProviderId};
use serde_json::json;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder,
};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::error::ApiErrorCode;

/// The user id the document's examples use.
pub const EXAMPLE_USER_ID: &str = "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3";

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "byok",
        description = "The byok job queue: producers store users' own provider keys and \
            enqueue AI video generation jobs that run on those keys. JSON in and out; \
            `Authorization: Bearer <token>` on everything under `/v1`. Every error is \
            `{\"error\":{\"code\",\"message\",\"details\"}}`; every response carries \
            `x-request-id`. An unknown route is a 404 `not_found` and a known route with \
            another method a 405 `method_not_allowed`, in the same shape.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::health::healthz,
        crate::health::readyz,
        metrics,
        openapi_json,
        crate::providers::list,
        crate::credentials::list,
        crate::credentials::get_one,
        crate::credentials::put,
        crate::credentials::test,
        crate::credentials::delete,
        crate::jobs::create,
        crate::jobs::get,
        crate::jobs::cancel,
        crate::jobs::video,
        crate::jobs::list,
    ),
    modifiers(&Conventions),
    tags(
        (name = "health", description = "Liveness and readiness, without a token"),
        (name = "meta", description = "This document and the metrics, without a token"),
        (name = "providers", description = "What each provider offers"),
        (name = "credentials", description = "Users' own provider keys, sealed at rest"),
        (name = "jobs", description = "Generation jobs"),
    ),
)]
struct ApiDoc;

/// The OpenAPI document of [`crate::app`].
pub fn openapi() -> Document {
    ApiDoc::openapi()
}

/// The document as served: built once.
fn document_json() -> &'static [u8] {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    JSON.get_or_init(|| serde_json::to_vec(&openapi()).expect("the OpenAPI document serialises"))
}

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    summary = "This OpenAPI document",
    tag = "meta",
    responses((
        status = 200,
        description = "This document (OpenAPI 3.1)",
        content_type = "application/json",
        body = Object,
    )),
)]
pub(crate) async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document_json(),
    )
        .into_response()
}

/// `GET /metrics`, which the metrics handler in `health.rs` serves (the
/// Prometheus text format of `byok_metrics`).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    tag = "meta",
    responses((
        status = 200,
        description = "This process's metrics in the Prometheus text exposition format",
        content_type = "text/plain; version=0.0.4",
        body = String,
    )),
)]
#[allow(dead_code)] // documentation only
fn metrics() {}

/// The error codes each operation (by `operation_id`) can answer with,
/// beyond the ones every operation shares (`internal`; under `/v1` also
/// `unauthorized` and `service_unavailable`, which token checking can give).
const ERRORS: &[(&str, &[ApiErrorCode])] = {
    use ApiErrorCode::*;
    &[
        ("healthz", &[]),
        ("readyz", &[ServiceUnavailable]),
        ("metrics", &[]),
        ("openapi", &[]),
        ("list_providers", &[]),
        ("list_credentials", &[BadRequest]),
        ("get_credentials", &[BadRequest, NotFound]),
        (
            "put_credentials",
            &[
                BadRequest,
                NotFound,
                PayloadTooLarge,
                UnsupportedMediaType,
                InvalidRequest,
                CredentialsInvalid,
                ProviderUnavailable,
            ],
        ),
        (
            "test_credentials",
            &[BadRequest, NotFound, Conflict, ProviderUnavailable],
        ),
        ("delete_credentials", &[BadRequest, NotFound]),
        (
            "create_job",
            &[
                BadRequest,
                Conflict,
                PayloadTooLarge,
                UnsupportedMediaType,
                InvalidRequest,
                CredentialsMissing,
                CredentialsInvalid,
            ],
        ),
        ("get_job", &[BadRequest, NotFound]),
        ("cancel_job", &[BadRequest, NotFound, Conflict]),
        ("get_job_video", &[BadRequest, NotFound]),
        ("list_jobs", &[BadRequest]),
    ]
};

fn errors_of(operation_id: &str) -> Option<&'static [ApiErrorCode]> {
    ERRORS
        .iter()
        .find(|(id, _)| *id == operation_id)
        .map(|(_, codes)| *codes)
}

/// What every operation shares; see the module documentation.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        // The error schema is referenced by name from every error response.
        let mut error_schemas = vec![(ErrorResponse::name().into_owned(), ErrorResponse::schema())];
        ErrorResponse::schemas(&mut error_schemas);
        components.schemas.extend(error_schemas);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("byok_…")
                    .description(Some(
                        "A producer token from `byok token create`; revoked with `byok token revoke`",
                    ))
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let v1 = path.starts_with("/v1/");
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                if v1 {
                    operation.security =
                        Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                }
                for parameter in operation.parameters.iter_mut().flatten() {
                    // An optional header or query parameter is absent, never null.
                    if parameter.parameter_in != ParameterIn::Path
                        && let Some(RefOr::T(Schema::Object(object))) = &mut parameter.schema
                        && let SchemaType::Array(types) = &object.schema_type
                        && let [only] = &types
                            .iter()
                            .filter(|t| **t != Type::Null)
                            .cloned()
                            .collect::<Vec<_>>()[..]
                    {
                        object.schema_type = SchemaType::Type(only.clone());
                    }
                }
                add_errors(operation, v1);
                add_request_id(operation);
            }
        }
    }
}

fn add_errors(operation: &mut Operation, v1: bool) {
    let id = operation.operation_id.clone().unwrap_or_default();
    // A handler without an entry gets no error responses, which the tests
    // catch: every operation has one.
    let own = errors_of(&id).unwrap_or(&[]);
    let shared: &[ApiErrorCode] = if v1 {
        &[
            ApiErrorCode::Unauthorized,
            ApiErrorCode::ServiceUnavailable,
            ApiErrorCode::Internal,
        ]
    } else {
        &[ApiErrorCode::Internal]
    };
    let mut by_status: BTreeMap<u16, Vec<ApiErrorCode>> = BTreeMap::new();
    for code in ApiErrorCode::ALL {
        if own.contains(&code) || shared.contains(&code) {
            by_status
                .entry(code.status().as_u16())
                .or_default()
                .push(code);
        }
    }
    for (status, codes) in by_status {
        let description = codes
            .iter()
            .map(|c| format!("`{}`: {}", c.as_str(), c.meaning()))
            .collect::<Vec<_>>()
            .join("; ");
        let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
        // The one error schema, with `code` narrowed to this status's codes.
        let narrowed = AllOfBuilder::new()
            .item(Ref::from_schema_name(ErrorResponse::name()))
            .item(
                ObjectBuilder::new().property(
                    "error",
                    ObjectBuilder::new().property(
                        "code",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(names.clone())),
                    ),
                ),
            );
        let example = json!({ "error": {
            "code": names[0],
            "message": codes[0].meaning(),
            "details": null,
        }});
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(narrowed))
                .example(Some(example))
                .build(),
        );
        if codes.contains(&ApiErrorCode::Unauthorized) {
            response = response.header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some(["Bearer"])),
                    )
                    .description(Some("`Bearer`"))
                    .build(),
            );
        }
        operation
            .responses
            .responses
            .insert(status.to_string(), RefOr::T(response.build()));
    }
}

fn add_request_id(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response.headers.insert(
                crate::REQUEST_ID_HEADER.to_owned(),
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some(
                        "The caller's x-request-id, or a fresh UUID: every log line of the \
                         request carries it",
                    ))
                    .build(),
            );
        }
    }
}

/// The one error shape of the API.
#[derive(ToSchema)]
#[schema(as = Error)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only: `ApiError` serialises it
pub(crate) struct ErrorResponse {
    error: ErrorBody,
}

/// The error object.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub(crate) struct ErrorBody {
    code: ApiErrorCode,
    /// For people; never a secret.
    message: String,
    /// Machine-readable details (e.g. `field`, `allowed`, `job_id`,
    /// `provider_reason`), or `null`.
    #[schema(required, value_type = Value)]
    details: Option<serde_json::Value>,
}

impl PartialSchema for ApiErrorCode {
    fn schema() -> RefOr<Schema> {
        string_enum(
            ApiErrorCode::ALL.iter().map(|c| c.as_str()),
            "Stable error code of the HTTP API; each goes with one HTTP status",
        )
    }
}

impl ToSchema for ApiErrorCode {}

/// A string schema taking one of `values`.
pub(crate) fn string_enum<'a>(
    values: impl IntoIterator<Item = &'a str>,
    description: &str,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.into_iter().collect::<Vec<_>>()))
        .description(Some(description))
        .into()
}

/// Schemas of the types other crates define, as the API serialises them.
pub(crate) mod schemas {
    use super::*;

    /// A video file.
    #[derive(Debug)]
    pub(crate) struct Video;

    impl PartialSchema for Video {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .content_media_type("video/mp4")
                .description(Some("The MP4 bytes"))
                .into()
        }
    }

    impl ToSchema for Video {}

    /// `byok_core::ProviderId`.
    #[derive(Debug)]
    pub(crate) struct ProviderIdSchema;

    impl PartialSchema for ProviderIdSchema {
        fn schema() -> RefOr<Schema> {
            string_enum(
                ProviderId::ALL.iter().map(|p| p.as_str()),
                "A provider: its stable id",
            )
        }
    }

    impl ToSchema for ProviderIdSchema {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("ProviderId")
        }
    }

    /// `byok_core::JobStatus`.
    #[derive(Debug)]
    pub(crate) struct JobStatusSchema;

    impl PartialSchema for JobStatusSchema {
        fn schema() -> RefOr<Schema> {
            string_enum(
                JobStatus::ALL.iter().map(|s| s.as_str()),
                "Where a job stands: `queued`, `throttled` (waiting for the key's rate-limit \
                 window), `running` (accepted by the provider), then one of the final \
                 `succeeded`, `failed`, `cancelled`",
            )
        }
    }

    impl ToSchema for JobStatusSchema {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("JobStatus")
        }
    }

    /// Every `byok_core::ErrorCode`; a new code does not compile until it
    /// is listed here.
    const JOB_ERROR_CODES: [ErrorCode; 11] = [
        ErrorCode::CredentialsMissing,
        ErrorCode::CredentialsInvalid,
        ErrorCode::InvalidRequest,
        ErrorCode::ContentRejected,
        ErrorCode::InsufficientCredits,
        ErrorCode::ModelRetired,
        ErrorCode::ProviderUnavailable,
        ErrorCode::SubmitOutcomeUnknown,
        ErrorCode::Timeout,
        ErrorCode::Cancelled,
        ErrorCode::Internal,
    ];

    const _: fn(ErrorCode) = |code| match code {
        ErrorCode::CredentialsMissing
        | ErrorCode::CredentialsInvalid
        | ErrorCode::InvalidRequest
        | ErrorCode::ContentRejected
        | ErrorCode::InsufficientCredits
        | ErrorCode::ModelRetired
        | ErrorCode::ProviderUnavailable
        | ErrorCode::SubmitOutcomeUnknown
        | ErrorCode::Timeout
        | ErrorCode::Cancelled
        | ErrorCode::Internal => {}
    };

    /// `byok_core::ErrorCode`.
    #[derive(Debug)]
    pub(crate) struct JobErrorCode;

    impl PartialSchema for JobErrorCode {
        fn schema() -> RefOr<Schema> {
            string_enum(
                JOB_ERROR_CODES.iter().map(|c| c.as_str()),
                "Why a job failed: a stable code producers branch on",
            )
        }
    }

    impl ToSchema for JobErrorCode {}

    /// `byok_core::ErrorRecord`: the `error` of a job.
    #[derive(ToSchema)]
    #[schema(as = JobError)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(crate) struct JobErrorSchema {
        code: JobErrorCode,
        /// For people.
        message: String,
        /// Whether the failure was of a retryable class.
        retryable: bool,
    }

    /// The `result` of a succeeded job.
    #[derive(ToSchema)]
    #[schema(as = JobResult)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(crate) struct JobResultSchema {
        /// Where to download the video from this API.
        #[schema(example = "/v1/jobs/01890a5d-ac96-774b-bcce-b302099a8057/video")]
        video_url: String,
        /// The provider's own URLs of the output, where it gives any (they expire).
        provider_urls: Vec<String>,
        /// The size of the stored video.
        bytes: u64,
        /// The stored video's media type.
        #[schema(example = "video/mp4")]
        content_type: String,
        /// What the provider said about the output, if anything.
        #[schema(required)]
        note: Option<String>,
    }

    /// `byok_core::GenerationRequest`: the body of `POST /v1/jobs`, and the
    /// `request` of a job as accepted.
    #[derive(ToSchema)]
    #[schema(
        as = GenerationRequest,
        example = json!({
            "user_id": EXAMPLE_USER_ID,
            "provider": "runway",
            "model": "gen4.5",
            "prompt": "A lighthouse at dawn, waves rolling in",
            "duration_seconds": 5,
            "aspect_ratio": "16:9",
            "resolution": "720p",
            "seed": 42,
            "metadata": {"order": 42},
        }),
    )]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(crate) struct GenerationRequestSchema {
        /// The user whose stored key pays for the job.
        #[schema(value_type = uuid::Uuid)]
        user_id: String,
        provider: ProviderIdSchema,
        /// A model id from the provider's catalogue (`GET /v1/providers`).
        model: String,
        /// What to generate (required, allowed or refused per the model and mode).
        prompt: Option<String>,
        /// What to avoid, where the model supports it.
        negative_prompt: Option<String>,
        /// First frame: an https URL (or http to a private address when
        /// `fetch.allow_private_networks`); makes the job image-to-video.
        image_url: Option<String>,
        /// Length in seconds: one of the model's `durations`.
        #[schema(minimum = 0, maximum = 4294967295_u64)]
        duration_seconds: Option<u32>,
        /// One of the model's aspect ratios, e.g. `16:9`.
        aspect_ratio: Option<String>,
        /// One of the model's resolutions, e.g. `720p`.
        resolution: Option<String>,
        /// Reproducibility seed, up to the model's `seed_max`.
        #[schema(minimum = 0, maximum = 18446744073709551615_u64)]
        seed: Option<u64>,
        /// The producer's own JSON, stored and returned untouched (default `{}`).
        #[serde(default)]
        #[schema(value_type = Value)]
        metadata: Option<serde_json::Value>,
    }

    /// `byok_providers::ProviderDescriptor`: one entry of `GET /v1/providers`.
    #[derive(ToSchema)]
    #[schema(as = Provider)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(crate) struct ProviderSchema {
        id: ProviderIdSchema,
        /// Human name, e.g. `Runway ML`.
        display_name: String,
        /// One sentence on what the provider is and how it is reached.
        description: String,
        /// A stable icon slug the UI maps to an image.
        icon: String,
        /// The models and what each accepts (the capability catalogue).
        models: Vec<ModelSchema>,
        capabilities: CapabilitiesSchema,
        /// The fields of the `credentials` object a user stores, in display order.
        credential_fields: Vec<CredentialFieldSchema>,
        rate_limits: RateLimitsSchema,
    }

    /// `byok_core::Mode`.
    #[derive(ToSchema)]
    #[schema(as = Mode)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    pub(crate) enum ModeSchema {
        TextToVideo,
        ImageToVideo,
    }

    const _: fn(byok_core::Mode) = |mode| match mode {
        byok_core::Mode::TextToVideo | byok_core::Mode::ImageToVideo => {}
    };

    /// `byok_core::Requirement`: whether a field must, may or must not be given.
    #[derive(ToSchema)]
    #[schema(as = Requirement)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    pub(crate) enum RequirementSchema {
        Required,
        Optional,
        Unsupported,
    }

    const _: fn(byok_core::Requirement) = |requirement| match requirement {
        byok_core::Requirement::Required
        | byok_core::Requirement::Optional
        | byok_core::Requirement::Unsupported => {}
    };

    /// `byok_core::ModelSpec`: what one model accepts.
    #[derive(ToSchema)]
    #[schema(as = Model)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(crate) struct ModelSchema {
        /// The model id to use in requests.
        id: String,
        /// For people.
        display_name: String,
        /// Modes the model supports.
        modes: Vec<ModeSchema>,
        prompt: PromptRulesSchema,
        /// Durations in whole seconds; empty when the length is not selectable.
        durations: Vec<u32>,
        /// Used when a request names none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        default_duration: Option<u32>,
        /// Output shapes, the default first.
        formats: Vec<FormatSchema>,
        /// Without an `aspect_ratio`, the shape nearest the input image's is used.
        format_from_image: bool,
        /// Whether `negative_prompt` is accepted.
        negative_prompt: bool,
        /// Largest accepted seed; absent when the model takes no seed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        seed_max: Option<u64>,
    }

    /// `byok_core::PromptRules`.
    #[derive(ToSchema)]
    #[schema(as = PromptRules)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(crate) struct PromptRulesSchema {
        text_to_video: RequirementSchema,
        image_to_video: RequirementSchema,
        /// Longest prompt, in characters.
        max_chars: u32,
    }

    /// `byok_core::Format`: one output shape of a model.
    #[derive(ToSchema)]
    #[schema(as = Format)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(crate) struct FormatSchema {
        /// Neutral aspect ratio, e.g. `16:9`.
        aspect_ratio: String,
        /// Neutral resolution, e.g. `720p`; absent when the model has no choice.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        resolution: Option<String>,
        /// The provider's own value for this shape.
        wire: String,
        /// Modes this shape is offered in; absent means all of the model's.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        modes: Vec<ModeSchema>,
        /// Durations allowed with this shape; absent means all of the model's.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        durations: Vec<u32>,
    }

    /// `byok_providers::Capabilities`: the union of a provider's models.
    #[derive(ToSchema)]
    #[schema(as = Capabilities)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(crate) struct CapabilitiesSchema {
        text_to_video: bool,
        image_to_video: bool,
        durations: Vec<u32>,
        aspect_ratios: Vec<String>,
        resolutions: Vec<String>,
        negative_prompt: bool,
        seed: bool,
    }

    /// `byok_providers::CredentialField`: one field of a provider's `credentials`.
    #[derive(ToSchema)]
    #[schema(as = CredentialField)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(crate) struct CredentialFieldSchema {
        /// The JSON member name, e.g. `api_key`.
        name: String,
        /// Form label.
        label: String,
        /// Whether a `credentials` object without it is refused.
        required: bool,
        /// Whether the value is a secret (mask it; it is never shown back).
        secret: bool,
        /// `string`, or `json` (a JSON object, or a string containing one).
        #[schema(example = "string")]
        kind: String,
        /// Help text.
        description: String,
    }

    /// `byok_providers::RateLimits`: requests per user key this deployment lets through.
    #[derive(ToSchema)]
    #[schema(as = RateLimits)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(crate) struct RateLimitsSchema {
        per_minute: u32,
        per_hour: u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_lists_its_errors() {
        let doc = openapi();
        let mut ids = Vec::new();
        for item in doc.paths.paths.values() {
            for operation in [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
            {
                let id = operation.operation_id.clone().unwrap();
                assert!(errors_of(&id).is_some(), "errors_of has no entry for {id}");
                ids.push(id);
            }
        }
        for (id, _) in ERRORS {
            assert!(
                ids.iter().any(|i| i == id),
                "errors_of names {id}, which is no operation"
            );
        }
    }
}
