//! Stability AI (`/stability`): the API of `api.stability.ai`, docs/provider-protocols.md §2.
//!
//! - `POST /v2beta/image-to-video`, `multipart/form-data` only: `image`
//!   (PNG or JPEG of exactly 1024×576, 576×1024 or 768×768, at most 10 MiB),
//!   optional `seed`, `cfg_scale`, `motion_bucket_id` → `{"id": <64 hex>}`.
//! - `GET /v2beta/image-to-video/result/{id}`: 202 `in-progress`, then 200
//!   with the MP4 (headers `finish-reason`, `seed`) or, with
//!   `accept: application/json`, `{"video","finish_reason","seed"}`.
//! - `GET /v1/user/balance`: the key check.
//!
//! v2beta errors are `{"id","name","errors":[…]}`; v1 errors are
//! `{"id","name","message"}` (S-SPEC).

use std::sync::Arc;

use axum::Router;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::json;

use crate::clock::ms;
use crate::http::{bearer, random_hex};
use crate::state::{KeyHash, Outcome, Phase, Shared, Timeline, chance, lock};
use crate::stats::{Event, Provider};
use crate::video;

/// "payloads cannot be larger than 10MiB in size" (S-SPEC 413).
const MAX_IMAGE: usize = 10 * 1024 * 1024;
/// The body may be a little larger than the image (the other fields and
/// the multipart framing); beyond this the request is cut off with 413.
const BODY_LIMIT: usize = MAX_IMAGE + 1024 * 1024;
const SIZES: [(u32, u32); 3] = [(1024, 576), (576, 1024), (768, 768)];
const MAX_SEED: u64 = 4_294_967_294;

/// A generation, as the simulator remembers it.
#[derive(Debug)]
pub(crate) struct Job {
    owner: KeyHash,
    timeline: Timeline,
    outcome: Outcome,
    seed: u64,
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v2beta/image-to-video", post(submit))
        .route("/v2beta/image-to-video/result/{id}", get(result))
        .route("/v1/user/balance", get(balance))
        .fallback(not_found_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// A v2beta error body.
fn error(status: StatusCode, name: &str, errors: &[String]) -> Response {
    crate::http::json(
        status,
        &json!({"id": random_hex(16), "name": name, "errors": errors}),
    )
}

async fn not_found_route() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &["The requested resource was not found.".to_owned()],
    )
}

/// The key's hash when it is a simulator key (`sim_…`), else the 401 (in
/// the v2beta or v1 shape).
fn authenticate(shared: &Shared, headers: &HeaderMap, v1: bool) -> Result<KeyHash, Response> {
    let key = bearer(headers);
    if let Some(key) = key.filter(|k| k.starts_with("sim_")) {
        return Ok(KeyHash::of(key));
    }
    let id = key.map(|k| KeyHash::of(k).id());
    shared.record(Provider::Stability, id.as_deref(), Event::Unauthorized);
    // The v2beta 401 shape is UNVERIFIED (docs/provider-protocols.md §2.4); the simulator
    // uses the documented v2beta error shape with name `unauthorized`.
    let message = if key.is_none() {
        "authorization: missing the API key (expected `authorization: Bearer sk-…`)"
    } else {
        "authorization: invalid API key"
    };
    Err(if v1 {
        crate::http::json(
            StatusCode::UNAUTHORIZED,
            &json!({"id": random_hex(16), "name": "unauthorized", "message": message}),
        )
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &[message.to_owned()],
        )
    })
}

/// The 429 of the burst limit and of simulated throttling. Stability
/// documents no Retry-After header (§2.5), so none is sent: clients must
/// wait on their own (the lockout lasts 60 s).
fn rate_limited(limit: u32) -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        &[format!(
            "You have exceeded the rate limit of {limit} requests within a 10 second period, and have been timed out for 60 seconds."
        )],
    )
}

async fn submit(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let key = match authenticate(&shared, &headers, false) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let id = key.id();
    let config = shared.config();
    if shared.stability_burst_exceeded(&key, config.stability_requests_per_10s) {
        shared.record(
            Provider::Stability,
            Some(&id),
            Event::Throttled { submit: true },
        );
        return rate_limited(config.stability_requests_per_10s);
    }
    let special = bearer(&headers).is_some_and(|k| k.starts_with("sim_throttled"));
    if shared.throttle_submit(Provider::Stability, &id, special) {
        shared.record(
            Provider::Stability,
            Some(&id),
            Event::Throttled { submit: true },
        );
        return rate_limited(config.stability_requests_per_10s);
    }
    let form = match read_form(multipart).await {
        Ok(form) => form,
        Err(response) => {
            shared.record(Provider::Stability, Some(&id), Event::Rejected);
            return response;
        }
    };
    if form.seed.is_some_and(|s| s == config.moderation_seed) {
        shared.record(Provider::Stability, Some(&id), Event::Rejected);
        return error(
            StatusCode::FORBIDDEN,
            "content_moderation",
            &["Your request was flagged by our content moderation system, as a result your request was denied and you were not charged.".to_owned()],
        );
    }
    let outcome = if form.seed.is_some_and(|s| s == config.filtered_seed) {
        Outcome::Moderated
    } else if chance(config.failure_rate) {
        Outcome::Failed
    } else {
        Outcome::Success
    };
    // `seed` 0 or absent means "random" (S-SPEC); the result reports the
    // seed actually used.
    let seed = match form.seed {
        Some(seed) if seed != 0 => seed,
        _ => rand::random_range(1..=MAX_SEED),
    };
    let job_id = random_hex(32);
    let job = Job {
        owner: key,
        timeline: Timeline::starting_now(&shared, &config),
        outcome,
        seed,
    };
    let now = shared.now_ms();
    lock(&shared.stability).insert(job_id.clone(), job, now, ms(config.retention));
    shared.record(Provider::Stability, Some(&id), Event::Accepted);
    tracing::debug!(generation = %job_id, key = %id, "stability generation started");
    crate::http::json(StatusCode::OK, &json!({ "id": job_id }))
}

/// The validated form.
#[derive(Debug)]
struct Form {
    seed: Option<u64>,
}

/// Reads and validates the multipart form; an `Err` is the response.
async fn read_form(multipart: Result<Multipart, MultipartRejection>) -> Result<Form, Response> {
    let mut multipart = multipart.map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &["content-type: the body of the request must be multipart/form-data".to_owned()],
        )
    })?;
    let mut errors = Vec::new();
    let mut image = None;
    let mut seed = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e.status(), &e.body_text())),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e.status(), &e.body_text()))?;
        match name.as_str() {
            "image" => image = Some(bytes),
            "seed" => match text(&bytes).parse::<u64>() {
                Ok(s) if s <= MAX_SEED => seed = Some(s),
                _ => errors.push(format!("seed: must be an integer between 0 and {MAX_SEED}")),
            },
            "cfg_scale" => match text(&bytes).parse::<f64>() {
                Ok(c) if (0.0..=10.0).contains(&c) => {}
                _ => errors.push("cfg_scale: must be a number between 0 and 10".to_owned()),
            },
            "motion_bucket_id" => match text(&bytes).parse::<u64>() {
                Ok(m) if (1..=255).contains(&m) => {}
                _ => {
                    errors
                        .push("motion_bucket_id: must be an integer between 1 and 255".to_owned());
                }
            },
            // Whether Stability ignores unknown fields is UNVERIFIED; the
            // safe reading refuses them, so a misspelt field is noticed.
            other => errors.push(format!("{other}: unrecognized field")),
        }
    }
    match image {
        None => errors.push("image: is required".to_owned()),
        Some(image) if image.len() > MAX_IMAGE => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &["image: payloads cannot be larger than 10MiB in size".to_owned()],
            ));
        }
        Some(image) => {
            if let Err(message) = check_image(&image) {
                errors.push(message);
            }
        }
    }
    if errors.is_empty() {
        Ok(Form { seed })
    } else {
        Err(error(StatusCode::BAD_REQUEST, "bad_request", &errors))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

fn multipart_error(status: StatusCode, detail: &str) -> Response {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &["payloads cannot be larger than 10MiB in size".to_owned()],
        )
    } else {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &[format!(
                "the multipart/form-data body could not be read: {detail}"
            )],
        )
    }
}

/// PNG or JPEG, of one of the three sizes (read from the header only).
fn check_image(bytes: &[u8]) -> Result<(), String> {
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| matches!(f, image::ImageFormat::Png | image::ImageFormat::Jpeg))
        .ok_or_else(|| "image: must be a png or jpeg image".to_owned())?;
    let (w, h) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|_| "image: could not be decoded".to_owned())?;
    if SIZES.contains(&(w, h)) {
        Ok(())
    } else {
        Err(format!(
            "image: invalid dimensions {w}x{h}; supported dimensions are 1024x576, 576x1024 and 768x768"
        ))
    }
}

async fn result(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Response {
    let key = match authenticate(&shared, &headers, false) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let id = key.id();
    let config = shared.config();
    if shared.stability_burst_exceeded(&key, config.stability_requests_per_10s) {
        shared.record(
            Provider::Stability,
            Some(&id),
            Event::Throttled { submit: false },
        );
        return rate_limited(config.stability_requests_per_10s);
    }
    shared.record(Provider::Stability, Some(&id), Event::Poll);
    let now = shared.now_ms();
    let found = lock(&shared.stability)
        .get(&job_id, now, ms(config.retention))
        .filter(|job| job.owner == key)
        .map(|job| (job.timeline.phase(now), job.outcome, job.seed));
    let Some((phase, outcome, seed)) = found else {
        // Unknown, expired, or another key's generation (S-SPEC 404).
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &[format!(
                "generation `{job_id}` does not exist or has expired"
            )],
        );
    };
    if phase != Phase::Done {
        return crate::http::json(
            StatusCode::ACCEPTED,
            &json!({"id": job_id, "status": "in-progress"}),
        );
    }
    let finish_reason = match outcome {
        Outcome::Success => "SUCCESS",
        Outcome::Moderated => "CONTENT_FILTERED",
        Outcome::Failed => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                &["An unexpected server error has occurred, please try again later.".to_owned()],
            );
        }
    };
    let video = video::mp4_for(&job_id);
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        let body = json!({
            "video": base64::engine::general_purpose::STANDARD.encode(&video),
            "finish_reason": finish_reason,
            "seed": seed,
        });
        let mut response = crate::http::json(StatusCode::OK, &body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; type=video/mp4"),
        );
        return response;
    }
    let mut response = video.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert("finish-reason", HeaderValue::from_static(finish_reason));
    h.insert("seed", HeaderValue::from(seed));
    response
}

/// `GET /v1/user/balance` (§2.7).
async fn balance(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let key = match authenticate(&shared, &headers, true) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let config = shared.config();
    if shared.stability_burst_exceeded(&key, config.stability_requests_per_10s) {
        shared.record(
            Provider::Stability,
            Some(&key.id()),
            Event::Throttled { submit: false },
        );
        return rate_limited(config.stability_requests_per_10s);
    }
    crate::http::json(StatusCode::OK, &json!({ "credits": 1000.0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        image::RgbImage::new(w, h)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn only_the_three_sizes_of_png_or_jpeg_pass() {
        assert!(check_image(&png(1024, 576)).is_ok());
        assert!(check_image(&png(768, 768)).is_ok());
        let e = check_image(&png(1024, 577)).unwrap_err();
        assert!(e.contains("1024x577"), "{e}");
        assert!(check_image(b"GIF89a....").is_err());
        assert!(check_image(b"").is_err());
        // A PNG signature with a broken header.
        assert!(check_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").is_err());
    }
}
