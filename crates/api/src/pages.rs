//! The HTML pages' templates and static files, embedded in the binary: no file, CDN or
//! build step at run time. Every template is `.html`, so minijinja escapes every value.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

static TEMPLATES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    for (name, source) in [
        ("connect.html", include_str!("../templates/connect.html")),
        (
            "dashboard/layout.html",
            include_str!("../templates/dashboard/layout.html"),
        ),
        (
            "dashboard/sign_in.html",
            include_str!("../templates/dashboard/sign_in.html"),
        ),
        (
            "dashboard/overview.html",
            include_str!("../templates/dashboard/overview.html"),
        ),
        (
            "dashboard/overview_live.html",
            include_str!("../templates/dashboard/overview_live.html"),
        ),
        (
            "dashboard/jobs.html",
            include_str!("../templates/dashboard/jobs.html"),
        ),
        (
            "dashboard/job.html",
            include_str!("../templates/dashboard/job.html"),
        ),
        (
            "dashboard/queues.html",
            include_str!("../templates/dashboard/queues.html"),
        ),
        (
            "dashboard/keys.html",
            include_str!("../templates/dashboard/keys.html"),
        ),
        (
            "dashboard/refused.html",
            include_str!("../templates/dashboard/refused.html"),
        ),
    ] {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name} parses: {e}"));
    }
    env
});

/// `template` rendered with `context` as a `text/html` response with `status`; a template
/// that fails to render is a 500 (a fault here, caught by the tests that render each page).
pub(crate) fn html(status: StatusCode, template: &str, context: minijinja::Value) -> Response {
    let body = TEMPLATES
        .get_template(template)
        .and_then(|t| t.render(context));
    match body {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

/// The headers every page carries besides its Content-Security-Policy: not framed, not
/// sniffed, not cached.
pub(crate) fn common_headers(response: &mut Response, policy: &str) {
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// A static asset of the pages.
pub(crate) fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
