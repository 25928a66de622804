//! Provider ids a client meets.
//!
//! A job's `request.provider` (and a catalogue's `alternatives`) is a
//! [`ProviderId`], which parses only built-in ids and ids declared in this process. A
//! server's operator may define more providers (`providers.definitions_dir`); a client
//! process has no definitions, so it declares the ids its server names when it meets them,
//! which is what lets a job on such a provider decode. Only ids that failed to decode are
//! looked at, only where a provider id belongs, and at most [`MAX_LEARNED`] of them per
//! process: a server cannot make a client intern names without bound.

use std::sync::atomic::{AtomicUsize, Ordering};

use byok_core::{InvalidProviderId, ProviderId};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The most ids this process declares from answers.
const MAX_LEARNED: usize = 256;

static LEARNED: AtomicUsize = AtomicUsize::new(0);

/// The [`ProviderId`] of `name`: a built-in one, or one the server defines (declared in
/// this process), for building a [`GenerationRequest`](byok_core::GenerationRequest) for a
/// provider this program does not know. Whether the server offers it is the server's to
/// say: an unknown one is a 422 `invalid_request` on `provider`.
pub fn provider_id(name: &str) -> Result<ProviderId, InvalidProviderId> {
    match name.parse() {
        Ok(id) => Ok(id),
        Err(_) => ProviderId::declare(name),
    }
}

/// Declares the id at `value`, if it is a string no known id has (within the bound).
/// Whether it was declared.
fn learn(value: &Value) -> bool {
    let Some(name) = value.as_str() else {
        return false;
    };
    if name.parse::<ProviderId>().is_ok() || ProviderId::check_name(name).is_err() {
        return false;
    }
    // Reserve a slot first, so that concurrent decodes cannot pass the bound together.
    if LEARNED.fetch_add(1, Ordering::Relaxed) >= MAX_LEARNED {
        LEARNED.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    ProviderId::declare(name).is_ok()
}

/// Where provider ids sit in an answer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// A job: `request.provider`.
    Job,
    /// A page of jobs: each of `jobs`.
    JobPage,
    /// The provider listing: each provider's `id` and its models' retirement alternatives.
    Providers,
}

fn learn_in(value: &Value, shape: Shape) -> bool {
    let mut learned = false;
    match shape {
        Shape::Job => learned |= learn(&value["request"]["provider"]),
        Shape::JobPage => {
            for job in value["jobs"].as_array().into_iter().flatten() {
                learned |= learn_in(job, Shape::Job);
            }
        }
        Shape::Providers => {
            for provider in value["providers"].as_array().into_iter().flatten() {
                learned |= learn(&provider["id"]);
                for model in provider["models"].as_array().into_iter().flatten() {
                    let alternatives = &model["retirement"]["alternatives"];
                    for alternative in alternatives.as_array().into_iter().flatten() {
                        learned |= learn(&alternative["provider"]);
                    }
                }
            }
        }
    }
    learned
}

/// `bytes` as a `T` of `shape`, declaring the provider ids it names that this process did
/// not know. The common case (every id known) parses once.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], shape: Shape) -> serde_json::Result<T> {
    let first = match serde_json::from_slice(bytes) {
        Ok(decoded) => return Ok(decoded),
        Err(e) => e,
    };
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return Err(first);
    };
    decode_value(value, shape).map_err(|_| first)
}

/// [`decode`] of a value already parsed.
pub(crate) fn decode_value<T: DeserializeOwned>(
    value: Value,
    shape: Shape,
) -> serde_json::Result<T> {
    if let Ok(decoded) = T::deserialize(&value) {
        return Ok(decoded);
    }
    learn_in(&value, shape);
    serde_json::from_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_the_server_names_are_declared_where_ids_belong_only() {
        let value = serde_json::json!({
            "request": { "provider": "client-test-declared" },
            "metadata": { "provider": "client-test-not-an-id-place" },
        });
        assert!(learn_in(&value, Shape::Job));
        assert!("client-test-declared".parse::<ProviderId>().is_ok());
        assert!("client-test-not-an-id-place".parse::<ProviderId>().is_err());
        // Built-in ids, bad names and reserved ones are left alone.
        for name in ["runway", "Not Valid", "definitions"] {
            assert!(!learn(&Value::from(name)), "{name}");
        }
        assert_eq!(provider_id("runway"), Ok(ProviderId::RUNWAY));
        assert_eq!(
            provider_id("client-test-explicit").unwrap().as_str(),
            "client-test-explicit"
        );
        assert!(provider_id("UPPER").is_err());
    }
}
