//! What a test does when a service cannot be had: skip loudly, or fail.

/// `BYOK_TEST_SERVICES=required` (set by `.ci/run`) turns every skip into a
/// failure, so CI can never go green by skipping the real-service tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServicePolicy {
    /// Print a SKIPPED line and let the test return early.
    SkipWhenMissing,
    /// Panic: the service must be there.
    Required,
}

impl ServicePolicy {
    /// Reads `BYOK_TEST_SERVICES`.
    pub fn from_env() -> ServicePolicy {
        match std::env::var("BYOK_TEST_SERVICES").as_deref() {
            Ok("required") => ServicePolicy::Required,
            _ => ServicePolicy::SkipWhenMissing,
        }
    }
}

/// Reports a missing service: panics under `BYOK_TEST_SERVICES=required`,
/// otherwise prints a loud SKIPPED line naming what to install.
pub fn skip_or_fail(service: &str, why: &str, install: &str) {
    let line = format!(
        "SKIPPED: {service} is not available ({why}). Install {install}, or set the URL variable; BYOK_TEST_SERVICES=required makes this a failure."
    );
    match ServicePolicy::from_env() {
        ServicePolicy::Required => panic!("{line}"),
        ServicePolicy::SkipWhenMissing => eprintln!("\n*** {line}\n"),
    }
}
