//! The OpenAPI document: served without a token, OpenAPI 3.1, and in step
//! with the router both ways: every documented operation is routed and
//! answers only with documented statuses and media types, every other method
//! on a documented path is a 405, and every route the router's source
//! registers is documented. (The document's validity against the official
//! OpenAPI 3.1 schema, and a fuzz run against it, are end-to-end tests:
//! `tests/e2e/api_fuzz.rs`.)

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{send, sqlite_api};

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// `(method, path)` of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                out.push((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_document_is_served_without_a_token_as_openapi_3_1() {
    let api = sqlite_api().await;
    let response = api.http.get(api.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("x-request-id"));
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc, serde_json::to_value(byok_api::openapi()).unwrap());
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "byok_…",
            "description": "A producer token from `byok token create`, acting in one project with \
                the scopes it was given (credentials:read, credentials:write, jobs:read, \
                jobs:write, webhooks, usage:read, budgets:write, dashboard:read, admin); each operation's security requirement names the scope it \
                needs, and a token without it gets 403 `insufficient_scope`. Revoked with \
                `byok token revoke`",
        })
    );

    let codes: Vec<&str> = byok_api::ApiErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(
        doc["components"]["schemas"]["ApiErrorCode"]["enum"],
        json!(codes)
    );
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let operation = &doc["paths"][&path][&method];
        let id = operation["operationId"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        assert!(operation["summary"].is_string(), "{method} {path}: summary");
        // The bearer token on /v1 (with the scope the route needs, at most
        // one; tenancy.rs checks each against the server), nothing elsewhere.
        let scopes = operation["security"][0]["bearer"].as_array();
        let secured = scopes.is_some_and(|s| s.len() <= 1)
            && operation["security"].as_array().map(Vec::len) == Some(1);
        assert_eq!(
            secured,
            path.starts_with("/v1/"),
            "{method} {path}: security"
        );
        let responses = operation["responses"].as_object().unwrap();
        if secured {
            assert!(responses.contains_key("401"), "{method} {path}: 401");
            let scoped = scopes.is_some_and(|s| s.len() == 1);
            assert_eq!(
                responses.contains_key("403"),
                scoped,
                "{method} {path}: 403"
            );
        }
        assert!(responses.contains_key("500"), "{method} {path}: 500");
        for (status, response) in responses {
            assert!(
                response["headers"].get("x-request-id").is_some(),
                "{method} {path} {status}: x-request-id"
            );
            // The connect page answers its own errors as pages, for a person's browser.
            let page =
                path.starts_with("/connect/") && response["content"].get("text/html").is_some();
            if (status.starts_with('4') || status.starts_with('5')) && !page {
                // The one error schema, with the code narrowed per status.
                let schema = &response["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["allOf"][0]["$ref"], "#/components/schemas/Error",
                    "{method} {path} {status}"
                );
                let allowed =
                    schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
                        .as_array()
                        .unwrap();
                for code in allowed {
                    let code = byok_api::ApiErrorCode::ALL
                        .into_iter()
                        .find(|c| c.as_str() == code)
                        .unwrap();
                    assert_eq!(code.status().as_str(), status, "{method} {path}: {code:?}");
                }
            }
        }
        // Every path parameter is declared.
        for name in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let declared = operation["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
            assert!(declared, "{method} {path}: parameter {name}");
        }
    }
}

/// A concrete URL for a documented path.
fn concrete(path: &str) -> String {
    path.replace("{user_id}", byok_api::EXAMPLE_USER_ID)
        .replace("{provider}", "runway")
        .replace("{job_id}", "01890a5d-ac96-774b-bcce-b302099a8057")
}

fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_answers_as_documented() {
    let api = sqlite_api().await;
    let doc = serde_json::to_value(byok_api::openapi()).unwrap();
    for (method, path) in operations(&doc) {
        let url = concrete(&path);
        let mut request = api.req(method.to_uppercase().parse().unwrap(), &url);
        if doc["paths"][&path][&method].get("requestBody").is_some() {
            request = request.json(&json!({}));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path} is not routed: {body}");
        assert!(
            !(status == 404 && body.contains("no such route")),
            "{method} {path} is not routed"
        );
        let documented = &doc["paths"][&path][&method]["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "{method} {url}: {status} is not documented: {body}"
        );
        match (documented.get("content"), content_type) {
            (None, None) => {}
            (Some(content), Some(content_type)) => assert!(
                content
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|k| essence(k) == essence(&content_type)),
                "{method} {url}: {content_type} is not documented for {status}"
            ),
            (content, content_type) => {
                panic!("{method} {url} {status}: documented {content:?}, got {content_type:?}")
            }
        }
    }

    // Every other method on a documented path is a 405 in the error shape:
    // a method added to a route without a document entry fails here.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                continue;
            }
            let (status, body) = send(api.req(
                method.to_uppercase().parse::<Method>().unwrap(),
                &concrete(path),
            ))
            .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (405, Some("method_not_allowed")),
                "{method} {path} answers but is not documented: {body}"
            );
        }
    }
}

/// The string literal after each `needle` in `source`.
fn literals_after<'a>(source: &'a str, needle: &str) -> Vec<&'a str> {
    source
        .match_indices(needle)
        .filter_map(|(at, _)| {
            let rest = source[at + needle.len()..].trim_start();
            let rest = rest.strip_prefix('"')?;
            Some(&rest[..rest.find('"')?])
        })
        .collect()
}

#[test]
fn every_route_in_the_router_source_is_documented() {
    let doc = serde_json::to_value(byok_api::openapi()).unwrap();
    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();

    let mut sources = String::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            sources.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    let mut prefixes = vec![""];
    prefixes.extend(literals_after(&sources, ".nest("));
    prefixes.extend(literals_after(&sources, ".nest_service("));
    let mut routes = literals_after(&sources, ".route(");
    routes.extend(literals_after(&sources, ".route_service("));

    let mut seen = BTreeSet::new();
    // The operator dashboard is pages for people, not API: docs/dashboard.md describes it.
    routes.retain(|r| !r.starts_with("/dashboard") && !r.starts_with("/assets/dashboard"));
    for route in &routes {
        let full: Vec<String> = prefixes
            .iter()
            .map(|prefix| format!("{prefix}{route}"))
            .filter(|p| documented.contains(p.as_str()))
            .collect();
        assert_eq!(
            full.len(),
            1,
            "the router registers `{route}` (under one of {prefixes:?}), which the OpenAPI \
             document does not describe: add a #[utoipa::path] and list it in openapi.rs"
        );
        seen.insert(full[0].clone());
    }
    // And the other way round: the scan saw every documented path, so it
    // cannot silently miss routes registered in some other way.
    let unseen: Vec<&&str> = documented.iter().filter(|p| !seen.contains(**p)).collect();
    assert!(
        unseen.is_empty(),
        "documented but not found in the router's source: {unseen:?}"
    );
}

#[test]
fn the_example_job_fits_the_built_in_catalogue() {
    let doc = serde_json::to_value(byok_api::openapi()).unwrap();
    let example = doc["components"]["schemas"]["GenerationRequest"]["example"].clone();
    let request: byok_core::GenerationRequest = serde_json::from_value(example).unwrap();
    assert_eq!(request.user_id.to_string(), byok_api::EXAMPLE_USER_ID);
    let registry =
        byok_providers::Registry::new(&byok_providers::RegistryOptions::defaults()).unwrap();
    registry
        .get(request.provider)
        .unwrap()
        .validate(&request)
        .expect("the document's example job is valid");
}
