//! Integration tests of the credential half of the provider adapters, in one binary to
//! keep link time low. Every provider call goes to a local wiremock server; requests are
//! asserted exactly (method, path, headers, body) and every class of answer is covered.

mod parsing;
mod registry;
mod runway;
mod stability;
mod support;
mod token_cache;
mod url_policy;
mod veo;
