//! Integration tests of the provider adapters, in one binary to keep link time low.
//! Most provider calls go to a local wiremock server, where requests are asserted exactly
//! (method, path, headers, body) and every class of answer is covered; `sim_lifecycle`
//! runs each adapter against the simulator, an independent implementation of the
//! protocols.

mod declarative;
mod declarative_conformance;
mod download_memory;
mod fal;
mod fal_generation;
mod fetch;
mod omni_generation;
mod pacing;
mod parsing;
mod registry;
mod replicate;
mod replicate_generation;
mod runway;
mod runway_generation;
mod sealed;
mod sim_lifecycle;
mod stability;
mod stability_generation;
mod support;
mod token_cache;
mod url_policy;
mod veo;
mod veo_generation;
