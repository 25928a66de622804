//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json`.
//!
//! It is generated from the code: each handler carries its `#[utoipa::path]`
//! (route, parameters, body, success responses), the types it returns derive
//! their schemas, and [`Conventions`] adds what every route shares: the
//! bearer scheme on `/v1`, the error responses (one schema, each status
//! narrowed to the codes that route can answer with, from [`ERRORS`]) and
//! the `x-request-id` header. The schemas of types from other crates are
//! derived on those types too (the `openapi` feature of `byok-core` and
//! `byok-providers`), so the document describes what is serialised and
//! cannot drift from it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder,
};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use byok_core::ApiErrorResponse as ErrorResponse;

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
        crate::projects::list,
        crate::credentials::list,
        crate::credentials::get_one,
        crate::credentials::put,
        crate::credentials::test,
        crate::credentials::delete,
        crate::connect::create_link,
        crate::connect::page,
        crate::connect::submit,
        crate::connect::style,
        crate::jobs::create,
        crate::jobs::get,
        crate::jobs::cancel,
        crate::jobs::video,
        crate::events::stream,
        crate::jobs::list,
        crate::batches::create,
        crate::batches::get,
        crate::batches::jobs,
        crate::batches::cancel,
        crate::webhooks::create,
        crate::webhooks::list,
        crate::webhooks::get_one,
        crate::webhooks::update,
        crate::webhooks::delete,
        crate::webhooks::rotate_secret,
        crate::webhooks::rotate_job_secret,
        crate::webhooks::deliveries,
        crate::webhooks::retry,
        crate::usage::project,
        crate::usage::user,
        crate::budgets::project,
        crate::budgets::put_project,
        crate::budgets::delete_project,
        crate::budgets::user,
        crate::budgets::put_user,
        crate::budgets::delete_user,
    ),
    modifiers(&Conventions),
    tags(
        (name = "health", description = "Liveness and readiness, without a token"),
        (name = "meta", description = "This document and the metrics, without a token"),
        (name = "providers", description = "What each provider offers"),
        (name = "projects", description = "Producer apps and environments (operator tokens)"),
        (name = "credentials", description = "Users' own provider keys, sealed at rest"),
        (name = "jobs", description = "Generation jobs"),
        (name = "batches", description = "Many generation jobs enqueued as one unit"),
        (name = "webhooks", description = "Signed event deliveries to the project's endpoints (Standard Webhooks)"),
        (name = "connect", description = "The page where a user connects their own key, from a link (no token: the link is the capability)"),
        (name = "usage", description = "What ended jobs made and cost, estimated from list prices"),
        (name = "budgets", description = "Spending limits per project or user, enforced before every submit"),
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
        ("connect_page", &[ServiceUnavailable]),
        ("connect_submit", &[PayloadTooLarge, ServiceUnavailable]),
        ("connect_page_style", &[]),
        ("metrics", &[]),
        ("openapi", &[]),
        ("list_providers", &[]),
        ("list_projects", &[]),
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
            "create_connect_link",
            &[
                BadRequest,
                NotFound,
                PayloadTooLarge,
                UnsupportedMediaType,
                InvalidRequest,
            ],
        ),
        (
            "create_job",
            &[
                BadRequest,
                Conflict,
                PayloadTooLarge,
                UnsupportedMediaType,
                InvalidRequest,
                ModelRetired,
                CredentialsMissing,
                CredentialsInvalid,
                BudgetExceeded,
                NoCapableProvider,
            ],
        ),
        ("get_job", &[BadRequest, NotFound]),
        ("cancel_job", &[BadRequest, NotFound, Conflict]),
        ("get_job_video", &[BadRequest, NotFound]),
        ("stream_job_events", &[BadRequest, NotFound]),
        ("list_jobs", &[BadRequest]),
        (
            "create_batch",
            &[
                BadRequest,
                Conflict,
                PayloadTooLarge,
                UnsupportedMediaType,
                InvalidRequest,
            ],
        ),
        ("get_batch", &[BadRequest, NotFound]),
        ("list_batch_jobs", &[BadRequest, NotFound]),
        ("cancel_batch", &[BadRequest, NotFound]),
        (
            "create_webhook",
            &[
                BadRequest,
                Conflict,
                PayloadTooLarge,
                UnsupportedMediaType,
                InvalidRequest,
            ],
        ),
        ("list_webhooks", &[]),
        ("get_webhook", &[BadRequest, NotFound]),
        (
            "update_webhook",
            &[
                BadRequest,
                NotFound,
                PayloadTooLarge,
                UnsupportedMediaType,
                InvalidRequest,
            ],
        ),
        ("delete_webhook", &[BadRequest, NotFound]),
        ("rotate_webhook_secret", &[BadRequest, NotFound]),
        ("rotate_job_webhook_secret", &[]),
        ("list_webhook_deliveries", &[BadRequest, NotFound]),
        ("retry_webhook_delivery", &[BadRequest, NotFound, Conflict]),
        ("get_usage", &[BadRequest]),
        ("get_user_usage", &[BadRequest]),
        ("get_budget", &[]),
        (
            "put_budget",
            &[
                BadRequest,
                PayloadTooLarge,
                UnsupportedMediaType,
                InvalidRequest,
            ],
        ),
        ("delete_budget", &[]),
        ("get_user_budget", &[BadRequest]),
        (
            "put_user_budget",
            &[
                BadRequest,
                PayloadTooLarge,
                UnsupportedMediaType,
                InvalidRequest,
            ],
        ),
        ("delete_user_budget", &[BadRequest]),
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
                        "A producer token from `byok token create`, acting in one project with \
                         the scopes it was given (credentials:read, credentials:write, \
                         jobs:read, jobs:write, webhooks, usage:read, budgets:write, dashboard:read, admin); each operation's security requirement \
                         names the scope it needs, and a token without it gets 403 \
                         `insufficient_scope`. Revoked with `byok token revoke`",
                    ))
                    .build(),
            ),
        );
        add_webhooks(doc);
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
                // The scope the route needs, from the table the router
                // enforces; none listed: any valid token.
                let id = operation.operation_id.as_deref().unwrap_or_default();
                let scope = crate::auth::route_scope(id).flatten();
                if v1 {
                    let scopes: Vec<&str> =
                        scope.map(byok_core::Scope::as_str).into_iter().collect();
                    operation.security = Some(vec![SecurityRequirement::new(BEARER, scopes)]);
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
                add_errors(operation, v1, scope.is_some());
                add_request_id(operation);
            }
        }
    }
}

/// The OpenAPI 3.1 `webhooks` section: one entry per event type, the POST byok makes to
/// a project's endpoints (utoipa has no field for it, so it goes in as a top-level member).
fn add_webhooks(doc: &mut Document) {
    use utoipa::PartialSchema as _;
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert(
        "WebhookPayload".to_owned(),
        byok_core::WebhookPayload::schema(),
    );
    let header = |name: &str, description: &str| {
        serde_json::json!({
            "name": name, "in": "header", "required": true,
            "description": description, "schema": { "type": "string" },
        })
    };
    let parameters = [
        header(
            "webhook-id",
            "The event's id, `msg_<hex>`: the same on every attempt and for every endpoint; \
             receivers drop repeats by it",
        ),
        header(
            "webhook-timestamp",
            "Seconds since the Unix epoch when this attempt was signed; refuse one more than \
             5 minutes away from your clock",
        ),
        header(
            "webhook-signature",
            "Space-separated `v1,<base64 HMAC-SHA256>` signatures of `{webhook-id}.{webhook-timestamp}.{body}` \
             with the endpoint's secret (two during the 24 h after a rotation). Verify with a \
             Standard Webhooks library",
        ),
    ];
    let what = |event: byok_core::EventType| match event {
        byok_core::EventType::JobRunning => "The provider accepted a job; `data` is the job",
        byok_core::EventType::JobProgress => {
            "A running job's progress moved (at most one per job per 5 s); `data` is the job"
        }
        byok_core::EventType::JobSucceeded => "A job finished with its video; `data` is the job",
        byok_core::EventType::JobFailed => "A job failed; `data` is the job, with its `error`",
        byok_core::EventType::JobCancelled => "A job was cancelled; `data` is the job",
        byok_core::EventType::JobFallback => {
            "A job left its provider for its next fallback before any provider accepted it; \
             `data` is the job on its new provider, `route` saying which it left and why"
        }
        byok_core::EventType::BatchCompleted => {
            "Every job of a batch is final; `data` is the batch (sent exactly once)"
        }
        byok_core::EventType::CredentialConnected => {
            "A user connected a key through a connect link. `data` has `user_id`, `provider`, \
             `credential_hint`, `connected_at`; never key material"
        }
        byok_core::EventType::CredentialInvalidated => {
            "A provider rejected a user's stored key: ask the user for a new one. `data` has \
             `user_id`, `provider`, `credential_hint`, `reason`, `invalidated_at`; never key material"
        }
    };
    let webhooks: serde_json::Map<String, serde_json::Value> = byok_core::EventType::ALL
        .into_iter()
        .map(|event| {
            let name = event.as_str();
            let operation = serde_json::json!({
                "post": {
                    "operationId": format!("webhook_{}", name.replace('.', "_")),
                    "summary": what(event),
                    "tags": ["webhooks"],
                    "parameters": parameters,
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": {
                            "schema": { "$ref": "#/components/schemas/WebhookPayload" }
                        } }
                    },
                    "responses": {
                        "2XX": { "description": "Delivered" },
                        "410": { "description": "Gone: the endpoint is disabled, nothing more is sent" },
                        "default": { "description": "Retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h, then failed; redirects are not followed; 10 s to answer" }
                    }
                }
            });
            (name.to_owned(), operation)
        })
        .collect();
    doc.extensions
        .get_or_insert_with(Default::default)
        .insert("webhooks".to_owned(), serde_json::Value::Object(webhooks));
}

fn add_errors(operation: &mut Operation, v1: bool, scoped: bool) {
    let id = operation.operation_id.clone().unwrap_or_default();
    // A handler without an entry gets no error responses, which the tests
    // catch: every operation has one.
    let own = errors_of(&id).unwrap_or(&[]);
    let shared: &[ApiErrorCode] = if v1 && scoped {
        &[
            ApiErrorCode::Unauthorized,
            ApiErrorCode::InsufficientScope,
            ApiErrorCode::RateLimited,
            ApiErrorCode::ServiceUnavailable,
            ApiErrorCode::Timeout,
            ApiErrorCode::Internal,
        ]
    } else if v1 {
        &[
            ApiErrorCode::Unauthorized,
            ApiErrorCode::RateLimited,
            ApiErrorCode::ServiceUnavailable,
            ApiErrorCode::Timeout,
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
        if codes.contains(&ApiErrorCode::RateLimited) {
            for (name, description) in [
                ("Retry-After", "Seconds until a request may succeed again"),
                (
                    "RateLimit-Policy",
                    "The limit that refused the request, as draft-ietf-httpapi-ratelimit-headers \
                     writes it: `\"token\";q=200;w=2` (per token) or `\"auth-failures\";q=20;w=120` \
                     (failed authentications per client address)",
                ),
                (
                    "RateLimit",
                    "`\"token\";r=0;t=<seconds>`: nothing left until then",
                ),
            ] {
                response = response.header(
                    name,
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some(description))
                        .build(),
                );
            }
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

/// A video file: the body of `GET /v1/jobs/{job_id}/video`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

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

    /// Every `$ref` anywhere in the document names a schema it holds (a type whose schema
    /// is written by hand must still be registered).
    #[test]
    fn every_reference_resolves() {
        fn walk(doc: &serde_json::Value, value: &serde_json::Value, found: &mut usize) {
            match value {
                serde_json::Value::Object(members) => {
                    if let Some(reference) = members.get("$ref").and_then(|r| r.as_str()) {
                        let name = reference
                            .strip_prefix("#/components/schemas/")
                            .unwrap_or_else(|| {
                                panic!("a reference outside the schemas: {reference}")
                            });
                        assert!(
                            doc["components"]["schemas"][name].is_object(),
                            "no schema {name}"
                        );
                        *found += 1;
                    }
                    for member in members.values() {
                        walk(doc, member, found);
                    }
                }
                serde_json::Value::Array(items) => {
                    for item in items {
                        walk(doc, item, found);
                    }
                }
                _ => {}
            }
        }
        let doc = serde_json::to_value(openapi()).unwrap();
        let mut found = 0;
        walk(&doc, &doc, &mut found);
        assert!(found > 50, "{found} references");
        assert_eq!(doc["components"]["schemas"]["Usd"]["type"], "number");
    }

    /// Checks `value` against `schema` (resolving `$ref`s in `doc`): its
    /// type, `enum`, `oneOf`/`anyOf`/`allOf`, array items, and for objects
    /// that every member is among the schema's properties (all of an
    /// `allOf`'s together: `part` is set for one of them) and every required
    /// one is there.
    fn conforms(
        doc: &serde_json::Value,
        schema: &serde_json::Value,
        value: &serde_json::Value,
        at: &str,
        part: bool,
    ) -> Result<(), String> {
        use serde_json::Value;
        let schema = resolve(doc, schema);
        if let Some(alternatives) = schema.get("oneOf").or(schema.get("anyOf")) {
            let errors: Vec<String> = alternatives
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|alternative| conforms(doc, alternative, value, at, part).err())
                .collect();
            if errors.len() == alternatives.as_array().unwrap().len() {
                return Err(format!("{at}: no alternative fits: {errors:?}"));
            }
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
                other => panic!("{at}: type {other}"),
            };
            let fits = |t: &str| match t {
                "null" => value.is_null(),
                "boolean" => value.is_boolean(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "string" => value.is_string(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                other => panic!("{at}: type {other}"),
            };
            if !types.iter().any(|t| fits(t)) {
                return Err(format!("{at}: {value} is not of type {types:?}"));
            }
        }
        if let Some(allowed) = schema.get("enum")
            && !allowed.as_array().unwrap().contains(value)
        {
            return Err(format!("{at}: {value} is not one of {allowed}"));
        }
        if let Some(parts) = schema.get("allOf") {
            for part in parts.as_array().unwrap() {
                conforms(doc, part, value, at, true)?;
            }
        }
        if let (Some(items), Value::Array(elements)) = (schema.get("items"), value) {
            for (i, element) in elements.iter().enumerate() {
                conforms(doc, items, element, &format!("{at}[{i}]"), false)?;
            }
        }
        if let Value::Object(members) = value {
            let (properties, required) = object_members(doc, schema);
            if properties.is_empty() {
                // A free-form object (e.g. `metadata`).
                return Ok(());
            }
            for (name, member) in members {
                match properties.get(name) {
                    Some(property) => {
                        conforms(doc, property, member, &format!("{at}.{name}"), false)?;
                    }
                    None if part => {}
                    None => return Err(format!("{at}: `{name}` is not in the schema")),
                }
            }
            if let Some(missing) = required.iter().find(|r| !members.contains_key(*r)) {
                return Err(format!("{at}: the schema requires `{missing}`"));
            }
        }
        Ok(())
    }

    fn resolve<'a>(
        doc: &'a serde_json::Value,
        schema: &'a serde_json::Value,
    ) -> &'a serde_json::Value {
        match schema.get("$ref").and_then(|r| r.as_str()) {
            Some(reference) => {
                let name = reference.strip_prefix("#/components/schemas/").unwrap();
                let target = &doc["components"]["schemas"][name];
                assert!(target.is_object(), "no schema {name}");
                resolve(doc, target)
            }
            None => schema,
        }
    }

    /// The properties and required members of an object schema, an `allOf`'s
    /// parts' together.
    fn object_members(
        doc: &serde_json::Value,
        schema: &serde_json::Value,
    ) -> (BTreeMap<String, serde_json::Value>, Vec<String>) {
        let schema = resolve(doc, schema);
        let mut properties = BTreeMap::new();
        let mut required = Vec::new();
        if let Some(own) = schema.get("properties").and_then(|p| p.as_object()) {
            properties.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(own) = schema.get("required").and_then(|r| r.as_array()) {
            required.extend(own.iter().map(|r| r.as_str().unwrap().to_owned()));
        }
        for part in schema
            .get("allOf")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            let (p, r) = object_members(doc, part);
            properties.extend(p);
            required.extend(r);
        }
        (properties, required)
    }

    fn assert_conforms(doc: &serde_json::Value, name: &str, value: &impl serde::Serialize) {
        let value = serde_json::to_value(value).unwrap();
        let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
        if let Err(why) = conforms(doc, &schema, &value, name, false) {
            panic!("the serialised {name} does not fit its schema: {why}\n{value:#}");
        }
    }

    /// A job with every optional member set, or none.
    fn sample_job(full: bool) -> byok_store::Job {
        use byok_core::{
            ErrorCode, ErrorRecord, GenerationRequest, JobResult, JobStatus, ProviderId,
        };
        let user_id = uuid::Uuid::now_v7();
        let now = chrono::Utc::now();
        let mut request = GenerationRequest::new(user_id, ProviderId::RUNWAY, "gen4.5");
        if full {
            request = GenerationRequest {
                prompt: Some("a lighthouse".into()),
                negative_prompt: Some("fog".into()),
                image_url: Some("https://example.com/frame.png".into()),
                duration_seconds: Some(5),
                aspect_ratio: Some("16:9".into()),
                resolution: Some("720p".into()),
                seed: Some(u64::MAX),
                metadata: json!({ "order": [1, "two", null] }),
                ..request
            };
        }
        byok_store::Job {
            id: uuid::Uuid::now_v7(),
            project_id: byok_core::DEFAULT_PROJECT_ID,
            user_id,
            provider_name: "runway".into(),
            model: "gen4.5".into(),
            status: if full {
                JobStatus::Succeeded
            } else {
                JobStatus::Queued
            },
            progress: full.then_some(1.0),
            attempts: u32::from(full),
            provider_job_id: full.then(|| "task-1".into()),
            metadata: request.metadata.clone(),
            request,
            result: full.then(|| JobResult {
                provider_urls: vec!["https://cdn.example/out.mp4".into()],
                bytes: 1234,
                content_type: "video/mp4".into(),
                note: Some("CONTENT_FILTERED".into()),
                provider_usage: byok_core::ProviderUsage {
                    compute_ms: Some(41_200),
                },
            }),
            error: full.then(|| ErrorRecord {
                code: ErrorCode::Timeout,
                message: "late".into(),
                retryable: false,
            }),
            created_by_token: None,
            idempotency_key: full.then(|| "k".into()),
            request_sha256: None,
            created_at: now,
            updated_at: now,
            started_at: full.then_some(now),
            finished_at: full.then_some(now),
            enqueued_at: None,
            submit_started_at: None,
            cancel_sent_at: None,
            batch_id: None,
            estimated_cost: None,
            route: vec![byok_core::RouteStep {
                provider: "runway".into(),
                model: "gen4.5".into(),
                reason: "credentials_invalid".into(),
                message: "the provider rejected the key".into(),
                at: chrono::Utc::now(),
            }],
        }
    }

    #[test]
    fn what_the_api_serialises_fits_the_schemas() {
        let doc = serde_json::to_value(openapi()).unwrap();
        for full in [true, false] {
            let job = sample_job(full);
            assert_conforms(&doc, "GenerationRequest", &job.request);
            assert_conforms(&doc, "Job", &byok_core::JobView::from(job));
        }
        let result =
            serde_json::to_value(byok_core::JobView::from(sample_job(true))).unwrap()["result"]
                .clone();
        assert_eq!(
            result["video_url"].as_str().map(|u| u.ends_with("/video")),
            Some(true),
            "{result}"
        );
        assert_conforms(&doc, "JobResult", &result);

        let registry =
            byok_providers::Registry::new(&byok_providers::RegistryOptions::defaults()).unwrap();
        for provider in registry.all() {
            assert_conforms(&doc, "Provider", provider.descriptor());
        }
    }

    #[tokio::test]
    async fn error_responses_fit_the_error_schema() {
        let doc = serde_json::to_value(openapi()).unwrap();
        for error in [
            ApiError::new(ApiErrorCode::Conflict, "taken").with_details(json!({ "job_id": "x" })),
            ApiError::new(ApiErrorCode::NotFound, "no such job"),
        ] {
            let body = axum::body::to_bytes(error.into_response().into_body(), usize::MAX)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_conforms(&doc, "Error", &body);
        }
    }
}
