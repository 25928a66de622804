//! Gemini Omni on Vertex AI: the Interactions API (docs/provider-protocols.md §3.10–3.15),
//! spoken by the Google adapter ([`crate::veo`], provider id `veo`) for the models whose
//! catalogue entry says `[models.wire] api = "interactions"`. Same service-account tokens
//! (refreshed once on a 401), pacing and error classification as Veo's calls.
//!
//! - create: `POST {base}/v1beta1/projects/{project}/locations/{location}/interactions` with
//!   `background: true`, `store: true` (the body of [`create_body`]) → the Interaction; its
//!   resource name `projects/{project}/locations/{location}/interactions/{id}` is the job's
//!   provider id ([`InteractionName`]);
//! - get: `GET …/interactions/{id}?stream=false&include_input=false` → the Interaction
//!   ([`parse_interaction`]);
//! - cancel: `POST …/interactions/{id}/cancel`, no body;
//! - output: the video inline (base64 `data`, we ask for `delivery: "inline"`), or a `gs://`
//!   URI, downloaded like Veo's Cloud Storage outputs.
//!
//! **The create is sent once.** google-genai retries it on 408, 409, 429 and 5xx (up to four
//! more times), and the API has no idempotency key, so a retried create whose first answer
//! was lost can start (and bill) a second video. Here a create that was sent and whose
//! answer was lost or unreadable, or that Google answered 504 / `DEADLINE_EXCEEDED` (its
//! deadline ran out while serving it), is `submit_outcome_unknown` and is never re-sent; only
//! a 401 is repeated, with a fresh token, because an unauthenticated request creates nothing.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT, URL_SAFE_NO_PAD};
use byok_core::{Catalogue, ErrorCode, JobError, Mode, ModelSpec};
use reqwest::header::{CONTENT_LENGTH, HeaderMap};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::credentials;
use crate::generation::internal;
use crate::http::{self, MAX_BODY_BYTES, MAX_VIDEO_BYTES};
use crate::veo::{self, LargeAnswer, VERTEX, VeoProvider};
use crate::vertex::AccessToken;
use crate::{
    CancelOutcome, ProviderId, RegistryError, RemoteStatus, ServiceAccountKey, SubmitRequest,
    Submitted, Video, VideoOutput,
};

/// The Interactions API's version on Vertex AI: google-genai's `api_version` in Vertex mode.
const API_VERSION: &str = "v1beta1";
/// Longest interaction id accepted from Vertex AI (real ones are about 40 characters).
const MAX_ID_LEN: usize = 512;
/// Longest stored provider id (`projects/…/locations/…/interactions/…`).
const MAX_NAME_LEN: usize = 1024;

/// Which Vertex AI API serves a model: `[models.wire] api`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Api {
    /// `predictLongRunning` (Veo), the default.
    #[default]
    Predict,
    /// The Interactions API (Gemini Omni).
    Interactions,
}

/// A video task of the Interactions API (`generation_config.video_config.task`,
/// google-genai `videoconfig.py`). Only `text_to_video` and `image_to_video` are ever sent:
/// a neutral request has no reference images, source video or edit instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Task {
    TextToVideo,
    ImageToVideo,
    ReferenceToVideo,
    Edit,
    Extend,
    Upscale,
}

impl Task {
    /// The task a job of `mode` asks for.
    fn of(mode: Mode) -> Task {
        match mode {
            Mode::TextToVideo => Task::TextToVideo,
            Mode::ImageToVideo => Task::ImageToVideo,
        }
    }

    fn wire(self) -> &'static str {
        match self {
            Task::TextToVideo => "text_to_video",
            Task::ImageToVideo => "image_to_video",
            Task::ReferenceToVideo => "reference_to_video",
            Task::Edit => "edit",
            Task::Extend => "extend",
            Task::Upscale => "upscale",
        }
    }
}

/// A model's `[models.wire]` table, as the Google adapter reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    api: Api,
    /// A location the model always runs in, whatever the credentials name (Omni is served
    /// in `global` only).
    #[serde(default)]
    location: Option<String>,
    /// Every task the model can do, including those jobs cannot ask for (reference
    /// images, extend, edit): it documents the model, and each of its `modes` must be one.
    #[serde(default)]
    tasks: Vec<Task>,
    /// How many reference images the model takes (documentation: none are sent).
    #[serde(default)]
    max_reference_images: Option<u32>,
}

/// How one Interactions model is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// The location of every call, instead of the credentials' one.
    location: Option<String>,
}

/// The models of the catalogue that the Interactions API serves, by id.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    models: HashMap<String, Route>,
}

impl Routes {
    /// Reads every model's `[models.wire]` and keeps the Interactions ones. Bad data is
    /// refused when the registry is built, naming the model and the field.
    pub(crate) fn of(catalogue: &Catalogue) -> Result<Routes, RegistryError> {
        let mut models = HashMap::new();
        for model in &catalogue.models {
            if let Some(route) = route_of(model).map_err(|reason| RegistryError::BadCatalogue {
                provider: ProviderId::VEO,
                reason: format!("model `{}`: {reason}", model.id),
            })? {
                models.insert(model.id.clone(), route);
            }
        }
        Ok(Routes { models })
    }

    /// The route of `model` when the Interactions API serves it.
    pub(crate) fn model(&self, model: &str) -> Option<&Route> {
        self.models.get(model)
    }
}

/// The route of `model`, `None` for a `predictLongRunning` model.
fn route_of(model: &ModelSpec) -> Result<Option<Route>, String> {
    let wire: Wire = serde_json::from_value(Value::Object(model.wire.clone()))
        .map_err(|e| format!("wire: {e}"))?;
    if wire.api == Api::Predict {
        let extra = [
            ("location", wire.location.is_some()),
            ("tasks", !wire.tasks.is_empty()),
            ("max_reference_images", wire.max_reference_images.is_some()),
        ];
        return match extra.iter().find(|(_, set)| *set) {
            Some((field, _)) => Err(format!(
                "wire.{field} is only for models with wire.api = \"interactions\""
            )),
            None => Ok(None),
        };
    }
    if let Some(location) = &wire.location
        && !credentials::is_location(location)
    {
        return Err("wire.location must be a Vertex AI location ([a-z0-9-]{1,40})".to_owned());
    }
    if wire.tasks.is_empty() {
        return Err("wire.tasks must list the model's Interactions video tasks".to_owned());
    }
    if let Some(mode) = model
        .modes
        .iter()
        .find(|mode| !wire.tasks.contains(&Task::of(**mode)))
    {
        return Err(format!(
            "wire.tasks has no `{}`, which one of the model's modes needs",
            Task::of(*mode).wire()
        ));
    }
    if model.negative_prompt || model.seed_max.is_some() {
        // The create body has no negative prompt; a seed (`generation_config.seed`) is
        // not documented for the video models. A catalogue offering them would accept
        // requests whose fields are then silently dropped.
        return Err("negative_prompt and seed_max are not sent to the Interactions API".into());
    }
    Ok(Some(Route {
        location: wire.location,
    }))
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

/// The provider id of an Interactions job: the interaction's resource name,
/// `projects/{project}/locations/{location}/interactions/{id}`. It names everything a
/// poll or a cancel needs (the credentials name the project too, but a job keeps the
/// location it was created in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InteractionName<'a> {
    project: &'a str,
    location: &'a str,
    id: &'a str,
}

impl<'a> InteractionName<'a> {
    /// Reads a stored provider id. It came from a provider answer (through the store) and
    /// becomes our request path, so every segment must be a plain one: unreserved URL
    /// characters (and `:` in the project, which domain-scoped project ids contain), not
    /// `.` or `..`; the location as credentials have it; at most [`MAX_NAME_LEN`].
    pub(crate) fn parse(name: &'a str) -> Option<InteractionName<'a>> {
        if name.len() > MAX_NAME_LEN {
            return None;
        }
        let segments: Vec<&str> = name.split('/').collect();
        let [
            "projects",
            project,
            "locations",
            location,
            "interactions",
            id,
        ] = segments[..]
        else {
            return None;
        };
        (http::plain_segment(project, true) && credentials::is_location(location) && id_ok(id))
            .then_some(InteractionName {
                project,
                location,
                id,
            })
    }

    /// `{base}/v1beta1/projects/{project}/locations/{location}/interactions/{id}[/cancel]`.
    fn url(&self, veo: &VeoProvider, cancel: bool) -> Result<url::Url, JobError> {
        let mut segments = vec![
            API_VERSION,
            "projects",
            self.project,
            "locations",
            self.location,
            "interactions",
            self.id,
        ];
        if cancel {
            segments.push("cancel");
        }
        Ok(http::with_segments(
            &veo.base_url(self.location)?,
            &segments,
        ))
    }
}

/// An interaction id as Vertex AI makes them (URL-safe base64 text, e.g.
/// `ChAzN2Y4OTlhNzAwZTczMDYzEAgaATAqBG1haW4`), checked as one plain path segment.
fn id_ok(id: &str) -> bool {
    id.len() <= MAX_ID_LEN && http::plain_segment(id, false)
}

// ---------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------

/// Creates the interaction of `submit` (docs/provider-protocols.md §3.11). The answer is
/// read up to [`MAX_VIDEO_BYTES`]: an Interaction may echo the input (a 20 MB image is
/// 27 MB of base64), and one that finished at once carries the video.
pub(crate) async fn submit(
    veo: &VeoProvider,
    account: &ServiceAccountKey,
    credentials_location: &str,
    route: &Route,
    submit: &SubmitRequest<'_>,
) -> Result<Submitted, JobError> {
    let location = route.location.as_deref().unwrap_or(credentials_location);
    let model = submit.request.model.as_str();
    let body = create_body(submit)?;
    let url = http::with_segments(
        &veo.base_url(location)?,
        &[
            API_VERSION,
            "projects",
            &account.project_id,
            "locations",
            location,
            "interactions",
        ],
    );
    let (answer, token) = veo
        .authorized(account, |token| {
            let request = veo.vertex_request(Method::POST, &url, &token).json(&body);
            async move { send_create(veo, request, &token).await }
        })
        .await?;
    let secrets = [token.secret().expose_secret()];
    if !answer.status.is_success() {
        return Err(classify(
            Call::Create { model },
            answer.status,
            &answer.headers,
            answer.json().as_ref(),
            &secrets,
        ));
    }
    // Vertex AI accepted the create, so the interaction may exist (and bill) even when
    // its answer is unreadable: never re-send it.
    let id = answer
        .body
        .as_deref()
        .and_then(|bytes| serde_json::from_slice::<Created<'_>>(bytes).ok())
        .and_then(|created| created.id)
        .filter(|id| id_ok(id));
    let name = id.map(|id| {
        format!(
            "projects/{}/locations/{location}/interactions/{id}",
            account.project_id
        )
    });
    match name {
        Some(name) if InteractionName::parse(&name).is_some() => Ok(Submitted {
            provider_job_id: name,
        }),
        _ => Err(JobError::submit_outcome_unknown(format!(
            "{VERTEX} accepted the interaction (HTTP {}) but its answer has no usable id; it \
             is not re-sent, because it may have created a billable job",
            answer.status.as_u16()
        ))),
    }
}

/// Sends the create once. A failure before the request left (DNS, connect, TLS) is
/// transient: Vertex AI never saw it. Any failure after that (a timeout, a cut
/// connection, a body that cannot be read) is `submit_outcome_unknown`.
async fn send_create(
    veo: &VeoProvider,
    request: reqwest::RequestBuilder,
    token: &AccessToken,
) -> Result<LargeAnswer, JobError> {
    let lost = |err: &reqwest::Error| {
        let what = http::sanitize(
            &http::describe_transport_error(err, veo.request_timeout),
            &[token.secret().expose_secret()],
        );
        if err.is_connect() {
            JobError::transient(
                ErrorCode::ProviderUnavailable,
                format!("{VERTEX} could not be reached: {what}"),
            )
        } else {
            JobError::submit_outcome_unknown(format!(
                "the submit to {VERTEX} was sent but its answer was lost ({what}); it is not \
                 re-sent, because it may have created a billable job"
            ))
        }
    };
    let response = veo.outbound.send(request).await.map_err(|e| lost(&e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let limit = if status.is_success() {
        MAX_VIDEO_BYTES
    } else {
        MAX_BODY_BYTES
    };
    let body = http::read_limited(response, limit)
        .await
        .map_err(|e| lost(&e))?;
    Ok(LargeAnswer {
        status,
        headers,
        body,
        video: None,
    })
}

/// What a create answer must say: the interaction's id (the rest is ignored, not copied).
#[derive(Deserialize)]
struct Created<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

/// The create body (docs/provider-protocols.md §3.11), snake_case as google-genai sends it:
///
/// ```json
/// {"model": "gemini-omni-1.2-flash", "background": true, "store": true,
///  "input": [{"type": "user_input", "content": [
///     {"type": "text", "text": "…"},
///     {"type": "image", "data": "<base64>", "mime_type": "image/png"}]}],
///  "generation_config": {"video_config": {"task": "image_to_video"}},
///  "response_format": {"type": "video", "duration": "8s", "aspect_ratio": "16:9",
///                      "resolution": "720p", "delivery": "inline"}}
/// ```
///
/// - `background: true` returns at once and leaves the work to Google; without it the
///   create would hold the connection for the whole render, and a timeout there would be
///   an unknown outcome. `store: true` keeps the interaction retrievable (a background
///   interaction is only reachable stored).
/// - The task is said, not left to the model to infer: the validated mode is what the
///   producer asked for.
/// - `delivery: "inline"`: the credentials name no Cloud Storage bucket, and `uri` delivery
///   needs one (`gcs_uri`) in the user's project; inline delivery needs nothing more, and
///   the poll's answer is read up to 512 MiB as Veo's inline videos are. Said explicitly
///   so that a change of Google's default does not change what we read.
/// - Only set fields are sent: no seed, no negative prompt (the catalogue refuses them).
fn create_body(submit: &SubmitRequest<'_>) -> Result<Value, JobError> {
    let request = submit.request;
    let mut content = Vec::new();
    if let Some(prompt) = &request.prompt {
        content.push(json!({"type": "text", "text": prompt}));
    }
    if let Some(image) = veo::image_of(submit)? {
        content.push(json!({
            "type": "image",
            "data": STANDARD.encode(&image.bytes),
            "mime_type": image.content_type,
        }));
    }
    if content.is_empty() {
        return Err(internal("an interaction needs a prompt or an image"));
    }

    let mut format = Map::new();
    format.insert("type".into(), "video".into());
    if let Some(duration) = request.duration_seconds {
        format.insert("duration".into(), format!("{duration}s").into());
    }
    if let Some(shape) = &request.format {
        format.insert("aspect_ratio".into(), shape.wire.as_str().into());
        if let Some(resolution) = &shape.resolution {
            format.insert("resolution".into(), resolution.as_str().into());
        }
    }
    format.insert("delivery".into(), "inline".into());

    Ok(json!({
        "model": request.model,
        "background": true,
        "store": true,
        "input": [{"type": "user_input", "content": content}],
        "generation_config": {"video_config": {"task": Task::of(request.mode).wire()}},
        "response_format": format,
    }))
}

// ---------------------------------------------------------------------------------------
// Get and cancel
// ---------------------------------------------------------------------------------------

/// `GET …/interactions/{id}?stream=false&include_input=false`: `stream=false` as
/// google-genai always sends it; `include_input=false` because a stored interaction may
/// echo its input (tens of megabytes of base64 image) and we have it already. The answer
/// may carry the video inline: read up to [`MAX_VIDEO_BYTES`]. See [`parse_interaction`].
pub(crate) async fn poll(
    veo: &VeoProvider,
    account: &ServiceAccountKey,
    name: &InteractionName<'_>,
) -> Result<RemoteStatus, JobError> {
    let mut url = name.url(veo, false)?;
    url.set_query(Some("stream=false&include_input=false"));
    veo.poll_large(
        account,
        |token| veo.vertex_request(Method::GET, &url, token),
        |answer, secrets| {
            classify(
                Call::Get,
                answer.status,
                &answer.headers,
                answer.json().as_ref(),
                secrets,
            )
        },
        parse_interaction,
    )
    .await
}

/// `POST …/interactions/{id}/cancel`, no body (google-genai's `interactions.cancel`).
///
/// 2xx: cancelled. 404: the interaction is gone, which is what a cancel wants (a second
/// cancel lands here too). A `FAILED_PRECONDITION` (400, or the Interactions API's
/// `failed_precondition`) or a 409: the interaction has already ended (Google cancels only
/// running background interactions), so nothing runs or bills any more; cancelled too, or
/// the worker would retry a cancel that can never apply. The rest is an error, which the
/// worker retries later.
pub(crate) async fn cancel(
    veo: &VeoProvider,
    account: &ServiceAccountKey,
    name: &InteractionName<'_>,
) -> Result<CancelOutcome, JobError> {
    let url = name.url(veo, true)?;
    let (answer, token) = veo
        .authorized(account, |token| {
            let request = veo
                .vertex_request(Method::POST, &url, &token)
                // An empty body said as one (`Content-Length: 0`), as google-genai's
                // client (httpx) sends it: Google's front ends answer a POST without a
                // length 411 Length Required.
                .header(CONTENT_LENGTH, "0");
            async move {
                veo.outbound
                    .idempotent(request, &[token.secret().expose_secret()])
                    .await
            }
        })
        .await?;
    let json = answer.body.json();
    let ended = || {
        error_name(json.as_ref())
            .is_some_and(|name| name.eq_ignore_ascii_case("FAILED_PRECONDITION"))
    };
    match answer.status.as_u16() {
        200..=299 | 404 | 409 => Ok(CancelOutcome::Cancelled),
        400 if ended() => Ok(CancelOutcome::Cancelled),
        _ => Err(classify(
            Call::Cancel,
            answer.status,
            &answer.headers,
            json.as_ref(),
            &[token.secret().expose_secret()],
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The Interaction
// ---------------------------------------------------------------------------------------

/// An Interaction (google-genai `interaction.py`), as far as it is read. The base64 of an
/// inline video (or of an echoed input) is borrowed from the body, not copied.
#[derive(Deserialize)]
struct Interaction<'a> {
    #[serde(default, borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    steps: Option<Vec<Step<'a>>>,
    /// The output list of earlier API revisions (content blocks, no steps): read too.
    #[serde(default, borrow)]
    outputs: Option<Vec<Content<'a>>>,
    #[serde(default)]
    errors: Option<Value>,
}

#[derive(Deserialize)]
struct Step<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Vec<Content<'a>>>,
    /// A `google.rpc.Status` when the model's output failed.
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    /// Empty when absent or null; borrowed from the body when it has no escapes.
    #[serde(default, borrow, deserialize_with = "nullable_text")]
    data: Cow<'a, str>,
    #[serde(default)]
    uri: Option<Value>,
    #[serde(default)]
    mime_type: Option<Value>,
    #[serde(default)]
    text: Option<Value>,
}

/// A string borrowed from the body where it can be (an inline video's base64 may be
/// hundreds of megabytes), `null` read as empty: one null field must not make a whole
/// interaction unreadable.
fn nullable_text<'de: 'a, 'a, D>(deserializer: D) -> Result<Cow<'a, str>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Cow<'de, str>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or null")
        }

        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }

        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
    }
    deserializer.deserialize_any(Text)
}

impl Step<'_> {
    fn is_model_output(&self) -> bool {
        self.kind.as_deref() == Some("model_output")
    }
}

impl Content<'_> {
    fn is(&self, kind: &str) -> bool {
        self.kind.as_deref() == Some(kind)
    }
}

/// Reads a get answer (docs/provider-protocols.md §3.13) into where the job
/// stands. Every status of the API (google-genai `InteractionStatus`) has its outcome:
///
/// | status | outcome | why |
/// |---|---|---|
/// | `queued` | `Queued` | accepted, not started |
/// | `in_progress` | `Running`, no progress | Google reports none |
/// | `completed` | the video: `Inline`, or `Gcs` for a `gs://` URI | see [`completed`] for one without a video |
/// | `failed` | `Failed`, by its reason ([`failed`]) | |
/// | `cancelled` | `Cancelled` | |
/// | `incomplete` | `provider_unavailable`, permanent | the model stopped before finishing (a limit such as output tokens): not the video asked for, and the same request stops again |
/// | `budget_exceeded` | `insufficient_credits`, permanent | the project's budget for the work ran out; its owner must raise it |
/// | `requires_action` | `provider_unavailable`, permanent | the model waits for a tool result or user action; we declare no tools and never answer, so it would wait forever |
/// | `requires_continuation` | `provider_unavailable`, permanent | continuing is a new create with the continuation token: another billable call, never made blindly (google-genai skips it for background interactions too) |
/// | `idle` | `Queued` | undocumented for background video; polling goes on, bounded by `worker.job_timeout` |
/// | anything else | transient error | an unknown status may be a new one; the next poll may tell more |
///
/// An unreadable answer is transient (the next poll may read fine); an undecodable or
/// unusable video is permanent (polling again returns the same one).
fn parse_interaction(bytes: &[u8], secrets: &[&str]) -> Result<RemoteStatus, JobError> {
    let interaction: Interaction<'_> = veo::poll_object(bytes, "interaction")?;
    let Some(status) = interaction.status.as_deref() else {
        return Err(veo::unreadable_poll("interaction"));
    };
    let ended = |code, why: &str| {
        Ok(RemoteStatus::Failed(JobError::permanent(
            code,
            format!("the {VERTEX} interaction ended `{status}`: {why}"),
        )))
    };
    match status {
        "queued" | "idle" => Ok(RemoteStatus::Queued),
        "in_progress" => Ok(RemoteStatus::Running { progress: None }),
        "completed" => completed(&interaction, secrets),
        "failed" => Ok(RemoteStatus::Failed(failed(&interaction, secrets))),
        "cancelled" => Ok(RemoteStatus::Cancelled),
        "incomplete" => ended(
            ErrorCode::ProviderUnavailable,
            "the model stopped before finishing the video",
        ),
        "budget_exceeded" => ended(
            ErrorCode::InsufficientCredits,
            "the budget for the work ran out; the project's owner must raise it",
        ),
        "requires_action" => ended(
            ErrorCode::ProviderUnavailable,
            "the model waits for an action (a tool result) that this integration never takes",
        ),
        "requires_continuation" => ended(
            ErrorCode::ProviderUnavailable,
            "continuing it would be a new billable request, which is not made blindly",
        ),
        other => Err(JobError::transient(
            ErrorCode::ProviderUnavailable,
            format!(
                "{VERTEX} reported the interaction in an unknown status `{}`",
                http::sanitize(other, secrets)
            ),
        )),
    }
}

/// A `completed` interaction: its video is the first `video` block of the last
/// `model_output` step that has one (or of the older `outputs` list).
///
/// Without a video: a step's `error` (a `google.rpc.Status`) or the interaction's
/// `errors` say why, as for `failed`; a text answer instead of a video is the model
/// declining (`content_rejected`, with its words); with nothing at all, the poll is
/// answered with a transient error so that it is asked again, because Vertex AI has been
/// seen answering `completed` without the output it had already written (a report on
/// Google's developer forum), and `worker.job_timeout` bounds the wait.
fn completed(interaction: &Interaction<'_>, secrets: &[&str]) -> Result<RemoteStatus, JobError> {
    let outputs = model_outputs(interaction);
    if let Some(video) = outputs.iter().rev().find_map(|content| {
        content
            .iter()
            .find(|c| c.is("video") && (!c.data.is_empty() || c.uri.is_some()))
    }) {
        return video_output(video)
            .map(|output| RemoteStatus::Succeeded(output, byok_core::ProviderUsage::NONE));
    }
    if let Some(error) = step_error(interaction) {
        return Ok(RemoteStatus::Failed(status_error(error, secrets)));
    }
    if let Some(error) = errors_reason(interaction, secrets) {
        return Ok(RemoteStatus::Failed(error));
    }
    let said: Vec<&str> = outputs
        .iter()
        .flat_map(|content| content.iter())
        .filter(|c| c.is("text"))
        .filter_map(|c| c.text.as_ref()?.as_str())
        .collect();
    if !said.is_empty() {
        return Ok(RemoteStatus::Failed(JobError::permanent(
            ErrorCode::ContentRejected,
            http::with_detail(
                format!("the {VERTEX} interaction completed with text instead of a video"),
                Some(http::sanitize(&said.join(" "), secrets)),
            ),
        )));
    }
    Err(JobError::transient(
        ErrorCode::ProviderUnavailable,
        format!("{VERTEX} reported the interaction completed but sent no video yet"),
    ))
}

/// The content lists of the `model_output` steps, in order (the older `outputs` list when
/// there are no steps).
fn model_outputs<'i>(interaction: &'i Interaction<'_>) -> Vec<&'i [Content<'i>]> {
    let from_steps: Vec<&[Content<'_>]> = interaction
        .steps
        .iter()
        .flatten()
        .filter(|step| step.is_model_output())
        .filter_map(|step| step.content.as_deref())
        .collect();
    if from_steps.is_empty() {
        interaction.outputs.as_deref().into_iter().collect()
    } else {
        from_steps
    }
}

/// The `error` of the last `model_output` step that has one.
fn step_error<'i>(interaction: &'i Interaction<'_>) -> Option<&'i Value> {
    interaction
        .steps
        .iter()
        .flatten()
        .rev()
        .filter(|step| step.is_model_output())
        .find_map(|step| step.error.as_ref().filter(|e| e.is_object()))
}

/// A video block as an output: inline base64 `data` (any `video/*` type, MP4 when none is
/// said), or a `gs://bucket/object` `uri`. Anything else is permanent: polling again
/// returns the same block.
fn video_output(video: &Content<'_>) -> Result<VideoOutput, JobError> {
    let unusable = |what: &str| {
        JobError::permanent(ErrorCode::ProviderUnavailable, format!("{VERTEX} {what}"))
    };
    if !video.data.is_empty() {
        let content_type = veo::inline_video_type(video.mime_type.as_ref())
            .ok_or_else(|| unusable("sent an output that is not a video (mime_type)"))?;
        let encoded = video.data.as_bytes();
        // Standard base64 as google-genai sends it; URL-safe too, as protobuf JSON allows.
        let bytes = STANDARD_PAD_INDIFFERENT
            .decode(encoded)
            .or_else(|_| URL_SAFE_NO_PAD.decode(video.data.trim_end_matches('=')))
            .map_err(|_| unusable("sent a video that is not valid base64"))?;
        if bytes.is_empty() {
            return Err(unusable("sent an empty video"));
        }
        return Ok(VideoOutput::Inline(Video {
            bytes,
            content_type,
            note: None,
        }));
    }
    match video.uri.as_ref().and_then(Value::as_str) {
        Some(uri) if veo::parse_gcs_uri(uri).is_some() => {
            Ok(VideoOutput::Gcs(vec![uri.to_owned()]))
        }
        _ => Err(unusable(
            "named a video that is not a usable gs://bucket/object URI",
        )),
    }
}

/// Why a `failed` interaction failed: a `model_output` step's `error` (a
/// `google.rpc.Status`, mapped by its gRPC code as Veo's operation errors are), else the
/// first of the interaction's `errors` ([`errors_reason`]), else no reason at all
/// (`provider_unavailable`, permanent: nothing says another try would do better).
fn failed(interaction: &Interaction<'_>, secrets: &[&str]) -> JobError {
    if let Some(error) = step_error(interaction) {
        return status_error(error, secrets);
    }
    errors_reason(interaction, secrets).unwrap_or_else(|| {
        JobError::permanent(
            ErrorCode::ProviderUnavailable,
            format!("the {VERTEX} interaction failed without saying why"),
        )
    })
}

/// A `google.rpc.Status` of a step: Veo's mapping of gRPC codes. A code 1 (CANCELLED) in
/// a failed interaction is reported as a failure all the same: the job did not end by our
/// cancel.
fn status_error(error: &Value, secrets: &[&str]) -> JobError {
    match veo::operation_error(error, secrets) {
        RemoteStatus::Failed(error) => error,
        _ => JobError::permanent(
            ErrorCode::ProviderUnavailable,
            format!("the {VERTEX} interaction's output was cancelled"),
        ),
    }
}

/// The first entry of an interaction's `errors` (`{code, message}`; the code is a URI
/// naming the error type, or one of the Interactions API's error codes), mapped by the
/// code's last path segment:
///
/// | code | outcome |
/// |---|---|
/// | a blocked-generation code (`safety`, `recitation`, `prohibited_content`, `spii`, `blocklist`, `image_*`, `content_blocked`, `language`, …) | `content_rejected`, permanent |
/// | `invalid_request`, `parameter_unknown`, `out_of_range`, `failed_precondition`, `invalid_argument` | `invalid_request`, permanent |
/// | `authentication`, `permission_denied`, `unauthenticated` | `credentials_invalid`, permanent |
/// | `payment_required` | `insufficient_credits`, permanent |
/// | `api_error`, `internal`, `service_unavailable`, `unavailable`, `deadline_exceeded`, `rate_limit_exceeded`, `quota_exceeded`, `resource_exhausted` | `provider_unavailable`, transient: a new submit may work (the worker's choice; this one failed and is not retried in place) |
/// | anything else | `provider_unavailable`, permanent |
fn errors_reason(interaction: &Interaction<'_>, secrets: &[&str]) -> Option<JobError> {
    let first = interaction.errors.as_ref()?.as_array()?.first()?;
    let code = first.get("code").and_then(Value::as_str).unwrap_or("");
    let message = first
        .get("message")
        .and_then(Value::as_str)
        .map(|m| http::sanitize(m, secrets))
        .filter(|m| !m.is_empty());
    let name = code_name(code).to_ascii_lowercase();
    let label = if name.is_empty() {
        "no code".to_owned()
    } else {
        http::sanitize(&name, secrets)
    };
    let text = |what: &str| {
        http::with_detail(
            format!("the {VERTEX} interaction {what} ({label})"),
            message.clone(),
        )
    };
    Some(match name.as_str() {
        n if is_blocked(n) => JobError::permanent(
            ErrorCode::ContentRejected,
            text("was blocked by Google's content policies"),
        ),
        "invalid_request"
        | "parameter_unknown"
        | "out_of_range"
        | "failed_precondition"
        | "invalid_argument" => {
            JobError::permanent(ErrorCode::InvalidRequest, text("refused the request"))
        }
        "authentication" | "permission_denied" | "unauthenticated" => JobError::permanent(
            ErrorCode::CredentialsInvalid,
            text("was refused to the service account"),
        ),
        "payment_required" => {
            JobError::permanent(ErrorCode::InsufficientCredits, text("was not paid for"))
        }
        "api_error"
        | "internal"
        | "service_unavailable"
        | "unavailable"
        | "deadline_exceeded"
        | "rate_limit_exceeded"
        | "quota_exceeded"
        | "resource_exhausted" => {
            JobError::transient(ErrorCode::ProviderUnavailable, text("failed"))
        }
        _ => JobError::permanent(ErrorCode::ProviderUnavailable, text("failed")),
    })
}

/// The last path segment of an error-type URI (`https://…/errors/safety` → `safety`), or
/// the code itself.
fn code_name(code: &str) -> &str {
    let code = code.trim().trim_end_matches('/');
    code.rsplit(['/', '#']).next().unwrap_or(code)
}

/// The Interactions API's blocked-generation codes (Gemini API error reference), plus
/// `jailbreak`, which its safety-settings page names as an input block.
fn is_blocked(code: &str) -> bool {
    matches!(
        code,
        "safety"
            | "recitation"
            | "language"
            | "prohibited_content"
            | "spii"
            | "blocklist"
            | "image_safety"
            | "image_prohibited_content"
            | "image_recitation"
            | "image_other"
            | "content_blocked"
            | "jailbreak"
    )
}

// ---------------------------------------------------------------------------------------
// HTTP errors
// ---------------------------------------------------------------------------------------

/// Which call an HTTP error answered.
#[derive(Debug, Clone, Copy)]
enum Call<'a> {
    Create { model: &'a str },
    Get,
    Cancel,
}

/// The error's name: a `google.rpc.Status` `status` (`RESOURCE_EXHAUSTED`), else the
/// Interactions API's string `code` (`rate_limit_exceeded`).
fn error_name(json: Option<&Value>) -> Option<&str> {
    let error = json?.get("error")?;
    error
        .get("status")
        .and_then(Value::as_str)
        .or_else(|| error.get("code").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

/// Classifies a non-2xx answer. Vertex AI answers `google.rpc.Status` bodies as for Veo;
/// the Interactions API documents its own shape, `{"error": {"code": "<name>", "message"}}`,
/// so both are read:
///
/// - a blocked-generation code (`safety`, …; see [`is_blocked`]): `content_rejected`,
///   permanent — the input was refused, and the same input is refused again;
/// - 404 on a get or a cancel: the interaction is unknown (expired, or of another
///   project), permanent `provider_unavailable`;
/// - 409 (google-genai retries it): Google refused the request for a conflict, nothing was
///   created, so it is transient;
/// - 416 (`out_of_range`): `invalid_request`, permanent;
/// - 504 or `DEADLINE_EXCEEDED` on a create: `submit_outcome_unknown` — the deadline ran
///   out while Google served it, and the create may have completed all the same;
/// - the rest as Veo's answers ([`veo::classify_answer`]): 401 after a refresh and 403
///   `credentials_invalid`, 404 on create `model_retired`, 429 retry-after
///   (`RetryInfo.retryDelay`, `retry-after-ms`, `Retry-After`, else 60 s), 400
///   `invalid_request`, 402 `insufficient_credits`, 408/5xx transient (a create's 504 excepted).
fn classify(
    call: Call<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    json: Option<&Value>,
    secrets: &[&str],
) -> JobError {
    let name = error_name(json).map(|n| http::sanitize(n, secrets));
    let message = json
        .and_then(|j| j.get("error")?.get("message")?.as_str())
        .map(|m| http::sanitize(m, secrets))
        .filter(|m| !m.is_empty());
    let code = status.as_u16();
    let label = match &name {
        Some(name) => format!("HTTP {code}, {name}"),
        None => format!("HTTP {code}"),
    };
    let with = |prefix: String| http::with_detail(prefix, message.clone());
    if name
        .as_deref()
        .is_some_and(|n| is_blocked(&n.to_ascii_lowercase()))
    {
        return JobError::permanent(
            ErrorCode::ContentRejected,
            with(format!(
                "{VERTEX} refused the request under Google's content policies ({label})"
            )),
        );
    }
    let out_of_time = code == 504
        || name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case("DEADLINE_EXCEEDED"));
    match (code, call) {
        // Google's deadline ran out while the create was being served: it may have
        // completed all the same (gRPC DEADLINE_EXCEEDED), so it is not re-sent.
        (_, Call::Create { .. }) if out_of_time => JobError::submit_outcome_unknown(with(format!(
            "{VERTEX} ran out of time serving the create ({label}); it is not re-sent, because \
             it may have created a billable job"
        ))),
        (404, Call::Get | Call::Cancel) => JobError::permanent(
            ErrorCode::ProviderUnavailable,
            with(format!("{VERTEX} does not know the interaction ({label})")),
        ),
        (409, _) => JobError::transient(
            ErrorCode::ProviderUnavailable,
            with(format!(
                "{VERTEX} refused the request for a conflict ({label})"
            )),
        ),
        (416, _) => JobError::permanent(
            ErrorCode::InvalidRequest,
            with(format!("{VERTEX} refused the request ({label})")),
        ),
        _ => {
            // Veo's classifier reads `status`; give it the Interactions API's name there.
            let normalized = json.map(|j| with_status(j, name.as_deref()));
            let veo_call = match call {
                Call::Create { model } => veo::Call::Submit { model },
                Call::Get | Call::Cancel => veo::Call::Poll,
            };
            veo::classify_answer(veo_call, status, headers, normalized.as_ref(), secrets)
        }
    }
}

/// `json` with `error.status` set to `name` when it has none (an Interactions API error
/// names itself in `error.code`).
fn with_status(json: &Value, name: Option<&str>) -> Value {
    let mut json = json.clone();
    if let (Some(name), Some(error)) = (name, json.get_mut("error").and_then(Value::as_object_mut))
        && !error.contains_key("status")
    {
        error.insert("status".into(), name.into());
    }
    json
}

#[cfg(test)]
mod tests {
    use byok_core::RetryClass::{Permanent, Transient};

    use super::*;

    fn parse(value: &Value) -> Result<RemoteStatus, JobError> {
        parse_interaction(value.to_string().as_bytes(), &["tok"])
    }

    fn failure(value: &Value) -> JobError {
        match parse(value) {
            Ok(RemoteStatus::Failed(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_are_split_and_checked() {
        let name = "projects/p-1/locations/global/interactions/ChAzN2Y4OTlh_-A";
        assert_eq!(
            InteractionName::parse(name),
            Some(InteractionName {
                project: "p-1",
                location: "global",
                id: "ChAzN2Y4OTlh_-A"
            })
        );
        assert!(
            InteractionName::parse("projects/example.com:p/locations/us/interactions/x").is_some()
        );
        for bad in [
            "",
            "projects/p/locations/global/interactions",
            "projects/p/locations/global/interactions/",
            "projects/p/locations/global/interactions/a/b",
            "projects/p/locations/Global/interactions/a",
            "projects/p/locations/global/interactions/..",
            "projects/p/locations/global/interactions/a b",
            "projects/p/locations/global/interactions/a:cancel",
            "projects/p?x/locations/global/interactions/a",
            "projects/p/locations/global/operations/a",
            "projects/p/locations/l/publishers/google/models/m/operations/1",
        ] {
            assert_eq!(InteractionName::parse(bad), None, "{bad}");
        }
        let long = format!(
            "projects/p/locations/global/interactions/{}",
            "a".repeat(600)
        );
        assert_eq!(InteractionName::parse(&long), None);
    }

    #[test]
    fn every_status_has_its_outcome() {
        assert_eq!(
            parse(&json!({"status": "queued"})),
            Ok(RemoteStatus::Queued)
        );
        assert_eq!(parse(&json!({"status": "idle"})), Ok(RemoteStatus::Queued));
        assert_eq!(
            parse(&json!({"status": "in_progress"})),
            Ok(RemoteStatus::Running { progress: None })
        );
        assert_eq!(
            parse(&json!({"status": "cancelled"})),
            Ok(RemoteStatus::Cancelled)
        );
        for (status, code) in [
            ("incomplete", ErrorCode::ProviderUnavailable),
            ("budget_exceeded", ErrorCode::InsufficientCredits),
            ("requires_action", ErrorCode::ProviderUnavailable),
            ("requires_continuation", ErrorCode::ProviderUnavailable),
        ] {
            let e = failure(&json!({"status": status}));
            assert_eq!((e.code, e.class), (code, Permanent), "{status}");
            assert!(e.message.contains(status), "{}", e.message);
        }
        let unknown = parse(&json!({"status": "tok-dreaming"})).unwrap_err();
        assert_eq!(
            (unknown.code, unknown.class),
            (ErrorCode::ProviderUnavailable, Transient)
        );
        assert!(unknown.message.contains("[REDACTED]-dreaming"), "{unknown}");
        for unreadable in [json!({}), json!({"status": 3}), json!([1])] {
            let e = parse(&unreadable).unwrap_err();
            assert_eq!(e.class, Transient, "{unreadable}");
        }
        assert!(parse_interaction(b"{\"status\": \"comp", &[]).is_err());
    }

    #[test]
    fn the_video_is_read_inline_or_as_a_gcs_uri() {
        let inline = parse(&json!({"status": "completed", "steps": [
            {"type": "user_input", "content": [{"type": "image", "data": "AAAA", "mime_type": "image/png"}]},
            {"type": "model_output", "content": [{"type": "text", "text": "here"},
                {"type": "video", "data": "AAEC", "mime_type": "video/mp4"}]},
        ]}));
        assert_eq!(
            inline,
            Ok(RemoteStatus::Succeeded(
                VideoOutput::Inline(Video {
                    bytes: vec![0, 1, 2],
                    content_type: "video/mp4".into(),
                    note: None
                }),
                byok_core::ProviderUsage::NONE
            ))
        );
        // Borrowed, not copied.
        let body = br#"{"status": "completed", "steps": [{"type": "model_output", "content": [{"type": "video", "data": "AAEC"}]}]}"#;
        let interaction: Interaction<'_> = serde_json::from_slice(body).unwrap();
        let steps = interaction.steps.unwrap();
        let content = steps[0].content.as_ref().unwrap();
        assert!(matches!(content[0].data, Cow::Borrowed("AAEC")));
        // Escaped (`\/`), or null beside the video: still read.
        let escaped = parse(
            &json!({"status": "completed", "steps": [{"type": "model_output",
            "content": [{"type": "text", "text": "here", "data": null},
                        {"type": "video", "data": "AA/+", "mime_type": "video/mp4"}]}]}),
        );
        let Ok(RemoteStatus::Succeeded(VideoOutput::Inline(video), _)) = escaped else {
            panic!("{escaped:?}")
        };
        assert_eq!(video.bytes, vec![0, 15, 254]);
        let body = br#"{"status": "completed", "steps": [{"type": "model_output", "content": [{"type": "video", "data": "AA\/+"}]}]}"#;
        let Ok(RemoteStatus::Succeeded(VideoOutput::Inline(video), _)) =
            parse_interaction(body, &[])
        else {
            panic!("escaped base64")
        };
        assert_eq!(video.bytes, vec![0, 15, 254]);
        assert!(
            parse_interaction(br#"{"status": "completed", "steps": [{"type": "model_output", "content": [{"type": "video", "data": 3}]}]}"#, &[])
                .is_err()
        );

        let gcs = parse(
            &json!({"status": "completed", "steps": [{"type": "model_output",
            "content": [{"type": "video", "uri": "gs://out-bucket/omni/x/sample_0.mp4", "mime_type": "video/mp4"}]}]}),
        );
        assert_eq!(
            gcs,
            Ok(RemoteStatus::Succeeded(
                VideoOutput::Gcs(vec!["gs://out-bucket/omni/x/sample_0.mp4".into()]),
                byok_core::ProviderUsage::NONE
            ))
        );
        // The older `outputs` list; URL-safe base64 without padding.
        let legacy =
            parse(&json!({"status": "completed", "outputs": [{"type": "video", "data": "-_8"}]}));
        let Ok(RemoteStatus::Succeeded(VideoOutput::Inline(video), _)) = legacy else {
            panic!("{legacy:?}")
        };
        assert_eq!(video.bytes, vec![0xfb, 0xff]);

        for (bad, what) in [
            (json!({"type": "video", "data": "!!"}), "base64"),
            (
                json!({"type": "video", "data": "AAEC", "mime_type": "text/html"}),
                "mime_type",
            ),
            (
                json!({"type": "video", "uri": "https://files.example/v.mp4"}),
                "gs://",
            ),
        ] {
            // An error of the poll, not a failed job: polling again returns the same block.
            let e = parse(&json!({"status": "completed", "steps": [{"type": "model_output", "content": [bad]}]}))
                .unwrap_err();
            assert_eq!(
                (e.code, e.class),
                (ErrorCode::ProviderUnavailable, Permanent)
            );
            assert!(e.message.contains(what), "{e}");
        }
    }

    #[test]
    fn a_completed_interaction_without_a_video_says_why_or_is_asked_again() {
        let declined = failure(
            &json!({"status": "completed", "steps": [{"type": "model_output",
            "content": [{"type": "text", "text": "I can't make that tok video."}]}]}),
        );
        assert_eq!(
            (declined.code, declined.class),
            (ErrorCode::ContentRejected, Permanent)
        );
        assert!(
            declined
                .message
                .ends_with(": I can't make that [REDACTED] video."),
            "{declined}"
        );
        let step_error = failure(
            &json!({"status": "completed", "steps": [{"type": "model_output",
            "error": {"code": 3, "message": "bad"}}]}),
        );
        assert_eq!(step_error.code, ErrorCode::InvalidRequest);
        // Only the input came back: ask again.
        let nothing = parse(
            &json!({"status": "completed", "steps": [{"type": "user_input",
            "content": [{"type": "text", "text": "a cat"}]}]}),
        )
        .unwrap_err();
        assert_eq!(
            (nothing.code, nothing.class),
            (ErrorCode::ProviderUnavailable, Transient)
        );
    }

    #[test]
    fn failures_are_mapped_by_their_reason() {
        let cases = [
            ("safety", ErrorCode::ContentRejected, Permanent),
            (
                "https://ai.google.dev/errors/prohibited_content",
                ErrorCode::ContentRejected,
                Permanent,
            ),
            ("IMAGE_SAFETY", ErrorCode::ContentRejected, Permanent),
            ("invalid_request", ErrorCode::InvalidRequest, Permanent),
            (
                "permission_denied",
                ErrorCode::CredentialsInvalid,
                Permanent,
            ),
            (
                "payment_required",
                ErrorCode::InsufficientCredits,
                Permanent,
            ),
            ("api_error", ErrorCode::ProviderUnavailable, Transient),
            ("quota_exceeded", ErrorCode::ProviderUnavailable, Transient),
            ("something_new", ErrorCode::ProviderUnavailable, Permanent),
        ];
        for (code, expected, class) in cases {
            let e = failure(
                &json!({"status": "failed", "errors": [{"code": code, "message": "why tok"}]}),
            );
            assert_eq!((e.code, e.class), (expected, class), "{code}");
            assert!(e.message.ends_with(": why [REDACTED]"), "{e}");
        }
        let step = failure(&json!({"status": "failed", "errors": [{"code": "safety"}],
            "steps": [{"type": "model_output", "error": {"code": 13, "message": "Internal"}}]}));
        assert_eq!(
            (step.code, step.class),
            (ErrorCode::ProviderUnavailable, Transient)
        );
        let cancelled = failure(&json!({"status": "failed",
            "steps": [{"type": "model_output", "error": {"code": 1}}]}));
        assert_eq!(cancelled.code, ErrorCode::ProviderUnavailable);
        let silent = failure(&json!({"status": "failed"}));
        assert_eq!(
            (silent.code, silent.class),
            (ErrorCode::ProviderUnavailable, Permanent)
        );
    }

    #[test]
    fn error_codes_name_their_last_segment() {
        assert_eq!(code_name("safety"), "safety");
        assert_eq!(code_name("https://x.example/errors/spii/"), "spii");
        assert_eq!(code_name("type#recitation"), "recitation");
        assert_eq!(code_name(""), "");
    }
}
