//! The simulator's own routes, under `/_sim`: stats, knobs, faults, reset, trust.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::ConfigError;
use crate::state::{Shared, lock};
use crate::stats::Provider;

fn error(status: StatusCode, message: &str) -> Response {
    crate::http::json(status, &json!({ "error": message }))
}

/// `GET /_sim/stats`.
pub(crate) async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    match serde_json::to_value(shared.stats()) {
        Ok(body) => crate::http::json(StatusCode::OK, &body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /_sim/config`.
pub(crate) async fn get_config(State(shared): State<Arc<Shared>>) -> Response {
    match serde_json::to_value(&*shared.config()) {
        Ok(body) => crate::http::json(StatusCode::OK, &body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `PUT /_sim/config` with a JSON object of the knobs to change; answers
/// the whole new configuration, or 400 naming the bad knob.
pub(crate) async fn put_config(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    let patch: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")),
    };
    match shared.config().merged(&patch) {
        Ok(config) => {
            shared.set_config(config);
            get_config(State(shared)).await
        }
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

/// A canned answer the simulator sends, before any handler, to a provider's next requests
/// instead of serving them: what no protocol produces on its own but every client meets —
/// a gateway's 502 page, an overloaded front end's 503, a 504, a 200 whose body is not
/// the API's. `POST /_sim/faults` or [`crate::RunningSim::inject_fault`]; `reset` drops the
/// pending ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Whose requests: a provider as [`crate::Stats`] names it (`runway`, `stability`,
    /// `vertex`, `replicate`, `fal`, `luma`, `synthesia`, `acme`). Every request under its
    /// prefixes counts, file downloads included.
    pub provider: String,
    /// The status, 200 to 599.
    pub status: u16,
    /// The body, sent as it is. Default empty.
    #[serde(default)]
    pub body: String,
    /// Its `Content-Type`. Default `text/html` (a gateway's error page).
    #[serde(default = "html")]
    pub content_type: String,
    /// How many requests in a row get it, 1 to 1000. Default 1.
    #[serde(default = "one")]
    pub count: u32,
}

fn html() -> String {
    "text/html".to_owned()
}

fn one() -> u32 {
    1
}

impl Fault {
    /// `status` with an empty `text/html` body, once, for `provider`.
    pub fn new(provider: &str, status: u16) -> Fault {
        Fault {
            provider: provider.to_owned(),
            status,
            body: String::new(),
            content_type: html(),
            count: 1,
        }
    }

    /// The provider it is for, or the knob that is wrong.
    fn check(&self) -> Result<Provider, ConfigError> {
        let bad = |field, message: String| Err(ConfigError { field, message });
        let Some(provider) = Provider::named(&self.provider) else {
            let names: Vec<&str> = Provider::ALL.iter().map(|p| p.name()).collect();
            return bad(
                "provider",
                format!("`{}` is not one of {}", self.provider, names.join(", ")),
            );
        };
        if !(200..=599).contains(&self.status) {
            return bad("status", format!("must be 200 to 599, got {}", self.status));
        }
        if HeaderValue::from_str(&self.content_type).is_err() {
            return bad("content_type", "is not a header value".to_owned());
        }
        if !(1..=1000).contains(&self.count) {
            return bad("count", format!("must be 1 to 1000, got {}", self.count));
        }
        Ok(provider)
    }

    fn response(&self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut response = (status, self.body.clone()).into_response();
        if let Ok(value) = HeaderValue::from_str(&self.content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    }
}

/// The faults waiting, per provider, in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct Faults(Mutex<HashMap<Provider, VecDeque<Fault>>>);

impl Faults {
    /// Queues `fault` after the provider's pending ones.
    pub(crate) fn add(&self, fault: Fault) -> Result<(), ConfigError> {
        let provider = fault.check()?;
        lock(&self.0).entry(provider).or_default().push_back(fault);
        Ok(())
    }

    /// The answer for a request to `provider` when a fault is waiting (one use of it).
    pub(crate) fn take(&self, provider: Provider) -> Option<Response> {
        let mut faults = lock(&self.0);
        let queue = faults.get_mut(&provider)?;
        let fault = queue.front_mut()?;
        let response = fault.response();
        fault.count -= 1;
        if fault.count == 0 {
            queue.pop_front();
        }
        Some(response)
    }

    /// Every pending fault (with the uses left as `count`).
    fn list(&self) -> Vec<Fault> {
        let faults = lock(&self.0);
        Provider::ALL
            .iter()
            .filter_map(|p| faults.get(p))
            .flatten()
            .cloned()
            .collect()
    }

    pub(crate) fn clear(&self) {
        lock(&self.0).clear();
    }
}

/// `GET /_sim/faults`: the pending faults, `{"faults": [...]}`.
pub(crate) async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    match serde_json::to_value(shared.faults.list()) {
        Ok(faults) => crate::http::json(StatusCode::OK, &json!({ "faults": faults })),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /_sim/faults` with a [`Fault`]: 204, or 400 naming the bad field.
pub(crate) async fn post_fault(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(fault) => fault,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not a fault: {e}")),
    };
    match shared.faults.add(fault) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// `POST /_sim/reset`: forget jobs, tokens and stats.
pub(crate) async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.reset();
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /_sim/service-accounts`: the trusted accounts (after reading any
/// new files in the trusted directory); never their keys.
pub(crate) async fn service_accounts(State(shared): State<Arc<Shared>>) -> Response {
    crate::oauth::rescan(&shared).await;
    let accounts: Vec<_> = shared
        .trust
        .list()
        .iter()
        .map(|a| {
            json!({"client_email": a.client_email, "project_id": a.project_id,
                   "private_key_id": a.private_key_id})
        })
        .collect();
    crate::http::json(StatusCode::OK, &json!({ "service_accounts": accounts }))
}

/// Any other path.
pub(crate) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_checked_and_used_up_in_order() {
        let faults = Faults::default();
        for (bad, field) in [
            (Fault::new("nobody", 503), "provider"),
            (Fault::new("luma", 99), "status"),
            (
                Fault {
                    count: 0,
                    ..Fault::new("luma", 503)
                },
                "count",
            ),
            (
                Fault {
                    content_type: "a\nb".into(),
                    ..Fault::new("luma", 503)
                },
                "content_type",
            ),
        ] {
            assert_eq!(faults.add(bad).unwrap_err().field, field);
        }
        faults
            .add(Fault {
                count: 2,
                ..Fault::new("luma", 503)
            })
            .unwrap();
        faults.add(Fault::new("luma", 200)).unwrap();
        assert_eq!(faults.list().len(), 2);
        assert!(faults.take(Provider::Synthesia).is_none());
        let statuses: Vec<u16> = std::iter::from_fn(|| faults.take(Provider::Luma))
            .map(|r| r.status().as_u16())
            .collect();
        assert_eq!(statuses, [503, 503, 200]);
        faults.add(Fault::new("acme", 502)).unwrap();
        faults.clear();
        assert!(faults.take(Provider::Acme).is_none());
    }
}
