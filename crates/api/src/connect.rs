//! "Connect your key" (docs/connect.md): a producer asks for a single-use link
//! (`POST /v1/users/{user_id}/providers/{provider}/connect-links`) and sends its user there;
//! the user types the key into this service's own page, which checks it with the provider
//! exactly as `PUT …/credentials` does, stores it, and sends the user back to the app. The
//! app's servers never see the key.
//!
//! The link is `/connect/{provider}/{user_id}/{secret}`: the secret (256 random bits) is
//! the capability, and only its SHA-256 is stored; the provider and user in the path must be
//! the link's own. Every way a link can be wrong (unknown, used, expired, edited) gets the
//! same page, so the page tells nothing about other links.

use axum::Json;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use byok_core::{ConnectLinkView, NewConnectLink, ProjectUser, ProviderId};
use byok_crypto::SealContext;
use byok_providers::{CredentialCheck, VideoProvider, wipe_json};
use byok_store::{ConnectLink, NewCredential};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiErrorCode};
use crate::extract::{ApiJson, UserProviderPath};

/// How long a link works.
pub const LINK_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

const STYLE: &str = include_str!("../assets/connect.css");

/// `POST /v1/users/{user_id}/providers/{provider}/connect-links`
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/providers/{provider}/connect-links",
    operation_id = "create_connect_link",
    summary = "A single-use link where the user connects their own key",
    tag = "credentials",
    params(
        ("user_id" = Uuid, Path, description = "The user (a UUID; anything else is a 400)", example = json!(crate::openapi::EXAMPLE_USER_ID)),
        ("provider" = ProviderId, Path, description = "The provider (an unknown one is a 404)"),
    ),
    request_body(content = NewConnectLink, content_type = "application/json"),
    responses((
        status = 201,
        description = "Send the user to `url`: this service's page asks for the key, checks it \
            with the provider, stores it and sends the user to `return_url`. It works once, for \
            15 minutes. `return_url` must be one of the project's return URLs or under one",
        body = ConnectLinkView,
    )),
)]
pub(crate) async fn create_link(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    UserProviderPath(user, provider): UserProviderPath,
    ApiJson(body): ApiJson<NewConnectLink>,
) -> Result<(StatusCode, Json<ConnectLinkView>), ApiError> {
    crate::extract::adapter(&state, provider.0)?;
    let allowed = state
        .store()
        .connect_links()
        .return_urls(caller.project_id())
        .await
        .map_err(|e| ApiError::store(&e))?;
    check_return_url(&body.return_url, &allowed)?;

    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut secret[..]).map_err(|e| ApiError::internal(&e))?;
    let secret = zeroize::Zeroizing::new(URL_SAFE_NO_PAD.encode(&secret[..]));
    let owner = caller.user(user.0);
    let expires_at = byok_store::now() + LINK_LIFETIME;
    state
        .store()
        .connect_links()
        .create(&byok_store::NewConnectLink {
            id: Uuid::now_v7(),
            token_sha256: Sha256::digest(secret.as_bytes()).into(),
            owner,
            provider: provider.0,
            return_url: body.return_url.clone(),
            created_by_token: Some(caller.token_id()),
            expires_at,
        })
        .await
        .map_err(|e| ApiError::store(&e))?;
    let base = match state.public_url() {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        ApiErrorCode::InvalidRequest,
                        "no Host header to build the link from; set api.public_url",
                    )
                })?;
            format!("http://{host}")
        }
    };
    tracing::info!(user.id = %user.0, provider = %provider.0, "connect link made");
    Ok((
        StatusCode::CREATED,
        Json(ConnectLinkView {
            url: format!("{base}/connect/{}/{}/{}", provider.0, user.0, &*secret),
            expires_at,
            user_id: user.0,
            provider: provider.0.to_string(),
            return_url: body.return_url,
        }),
    ))
}

/// `return_url` is an absolute http(s) URL with the scheme, host and port of one of the
/// project's return URLs and its path within that URL's path.
fn check_return_url(return_url: &str, allowed: &[String]) -> Result<(), ApiError> {
    let refuse = |why: String| {
        ApiError::new(ApiErrorCode::InvalidRequest, why)
            .with_details(json!({ "field": "return_url" }))
    };
    if allowed.is_empty() {
        return Err(refuse(
            "the project lists no return URLs; an operator adds them with \
             `byok project return-urls --project P URL…`"
                .into(),
        ));
    }
    let url = url::Url::parse(return_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.username().is_empty())
        .ok_or_else(|| refuse("return_url must be an absolute http(s) URL".into()))?;
    let fits = allowed
        .iter()
        .filter_map(|a| url::Url::parse(a).ok())
        .any(|a| {
            a.origin() == url.origin() && {
                let base = a.path().trim_end_matches('/');
                let path = url.path();
                path == base || path.starts_with(&format!("{base}/")) || base.is_empty()
            }
        });
    if !fits {
        return Err(refuse(format!(
            "return_url is not one of the project's return URLs ({}) nor under one",
            allowed.join(", ")
        )));
    }
    Ok(())
}

/// `GET /assets/connect.css`
#[utoipa::path(
    get,
    path = "/assets/connect.css",
    operation_id = "connect_page_style",
    summary = "The connect page's style sheet",
    tag = "connect",
    responses((status = 200, description = "CSS, embedded in the binary", content_type = "text/css")),
)]
pub(crate) async fn style() -> Response {
    crate::pages::asset("text/css; charset=utf-8", STYLE)
}

/// The link in the path, when it is one that works: the provider and user in the path are
/// its own, and it is unused and unexpired.
async fn usable_link(
    state: &AppState,
    provider: &str,
    user: &str,
    secret: &str,
) -> Result<Option<(ConnectLink, ProviderId)>, ApiError> {
    let (Ok(provider_id), Ok(user_id)) = (provider.parse::<ProviderId>(), user.parse::<Uuid>())
    else {
        return Ok(None);
    };
    let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let link = state
        .store()
        .connect_links()
        .find(&hash)
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(link
        .filter(|l| {
            l.provider == provider_id.as_str()
                && l.owner.user_id == user_id
                && l.used_at.is_none()
                && l.expires_at > byok_store::now()
        })
        .map(|l| (l, provider_id)))
}

/// `GET /connect/{provider}/{user_id}/{secret}`: the form.
#[utoipa::path(
    get,
    path = "/connect/{provider}/{user_id}/{secret}",
    operation_id = "connect_page",
    summary = "The page where a user connects their key (a link's URL)",
    tag = "connect",
    params(
        ("provider" = String, Path, description = "The link's provider"),
        ("user_id" = String, Path, description = "The link's user"),
        ("secret" = String, Path, description = "The link's secret"),
    ),
    responses(
        (status = 200, description = "The form: the provider's name and credential fields. Strict \
            Content-Security-Policy, no scripts, no third-party requests, `Referrer-Policy: \
            no-referrer`, `Cache-Control: no-store`", content_type = "text/html"),
        (status = 404, description = "The one page for every link that does not work: unknown, \
            used, expired, or edited to another user or provider", content_type = "text/html"),
    ),
)]
pub(crate) async fn page(
    State(state): State<AppState>,
    Path((provider, user, secret)): Path<(String, String, String)>,
) -> Response {
    match usable_link(&state, &provider, &user, &secret).await {
        Ok(Some((link, provider))) => match state.providers().get(provider) {
            Some(adapter) => render(&link, adapter.as_ref(), None, StatusCode::OK),
            None => invalid_page(),
        },
        Ok(None) => invalid_page(),
        Err(e) => e.into_response(),
    }
}

/// `POST /connect/{provider}/{user_id}/{secret}`: the form sent (multipart, so a service
/// account JSON can be a file). A key the provider rejects shows its reason on the form
/// again, and the link keeps working; a stored key sends the user to the return URL.
#[utoipa::path(
    post,
    path = "/connect/{provider}/{user_id}/{secret}",
    operation_id = "connect_submit",
    summary = "The page's form: check the key with the provider, store it, return to the app",
    tag = "connect",
    params(
        ("provider" = String, Path, description = "The link's provider"),
        ("user_id" = String, Path, description = "The link's user"),
        ("secret" = String, Path, description = "The link's secret"),
    ),
    request_body(content_type = "multipart/form-data", description = "The provider's \
        credential fields by name; a JSON field may come as a file part `<name>__file`"),
    responses(
        (status = 303, description = "Stored: to the link's return URL with \
            `byok_connected=<provider>` added"),
        (status = 400, description = "The form could not be read: the form again", content_type = "text/html"),
        (status = 404, description = "The link does not work (as for the page)", content_type = "text/html"),
        (status = 422, description = "The fields do not make a key, or the provider rejected \
            it: the form again with the provider's reason; the link keeps working", content_type = "text/html"),
        (status = 503, description = "The provider could not be asked: the form again", content_type = "text/html"),
    ),
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Path((provider, user, secret)): Path<(String, String, String)>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let (link, provider) = match usable_link(&state, &provider, &user, &secret).await {
        Ok(Some(found)) => found,
        Ok(None) => return invalid_page(),
        Err(e) => return e.into_response(),
    };
    let Some(adapter) = state.providers().get(provider) else {
        return invalid_page();
    };
    let again = |message: String, status| render(&link, adapter.as_ref(), Some(&message), status);
    let Ok(form) = form else {
        return again(
            "The form could not be read; try again.".into(),
            StatusCode::BAD_REQUEST,
        );
    };
    let mut fields = match read_fields(form, adapter.as_ref()).await {
        Ok(fields) => fields,
        Err(message) => return again(message, StatusCode::BAD_REQUEST),
    };
    let parsed = adapter.parse_credentials(&fields);
    wipe_json(&mut fields);
    let credentials = match parsed {
        Ok(credentials) => credentials,
        Err(e) => return again(format!("{e}"), StatusCode::UNPROCESSABLE_ENTITY),
    };
    match adapter.check_credentials(&credentials).await {
        CredentialCheck::Valid => {}
        CredentialCheck::Rejected { reason } => {
            return again(
                format!("The key was not accepted. {reason}"),
                StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
        CredentialCheck::Unavailable { reason } => {
            return again(
                format!(
                    "{} could not be asked right now ({reason}); nothing was stored. Try again \
                     in a moment.",
                    adapter.descriptor().display_name
                ),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
    }
    let owner: ProjectUser = link.owner;
    let sealed = match state.key_ring().seal(
        &SealContext::new(owner, provider),
        &credentials.to_plaintext(),
    ) {
        Ok(sealed) => sealed,
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    state.keys_changed(owner);
    let stored = state
        .store()
        .connect_links()
        .connect(
            link.id,
            &NewCredential {
                owner,
                provider,
                sealed,
                credential_hint: credentials.hint(),
                validated_at: Some(byok_store::now()),
            },
        )
        .await;
    match stored {
        Ok(Some(_)) => {
            tracing::info!(user.id = %owner.user_id, provider = %provider, "key connected through a link");
            back_to_app(&link.return_url, provider)
        }
        // Used (or expired) while the key was being checked: nothing stored.
        Ok(None) => invalid_page(),
        Err(e) => ApiError::store(&e).into_response(),
    }
}

/// The form's credential fields as the adapter's `credentials` object: each field's text, or
/// for a JSON field its uploaded file when one was chosen. Unknown parts are ignored.
async fn read_fields(mut form: Multipart, adapter: &dyn VideoProvider) -> Result<Value, String> {
    let names: Vec<String> = adapter
        .descriptor()
        .credential_fields
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    let mut values = Map::new();
    let mut files = Map::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => return Err("The form could not be read; try again.".into()),
        };
        let Some(name) = field.name().map(str::to_owned) else {
            continue;
        };
        let (name, into) = match name.strip_suffix("__file") {
            Some(base) => (base.to_owned(), &mut files),
            None => (name, &mut values),
        };
        if !names.contains(&name) {
            continue;
        }
        let text = field
            .text()
            .await
            .map_err(|_| "The form could not be read; try again.".to_owned())?;
        if !text.trim().is_empty() {
            into.insert(name, Value::String(text));
        }
    }
    // A chosen file wins over the text box.
    for (name, file) in files {
        values.insert(name, file);
    }
    Ok(Value::Object(values))
}

/// 303 to the app's return URL, saying what happened.
fn back_to_app(return_url: &str, provider: ProviderId) -> Response {
    let Ok(mut url) = url::Url::parse(return_url) else {
        return invalid_page();
    };
    url.query_pairs_mut()
        .append_pair("byok_connected", provider.as_str());
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(url.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    secure_headers(&mut response, Some(return_url));
    response
}

fn render(
    link: &ConnectLink,
    adapter: &dyn VideoProvider,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let provider = crate::providers::listing_of(adapter.descriptor());
    let return_host = url::Url::parse(&link.return_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let context = minijinja::context! {
        invalid => false,
        provider => provider,
        return_host => return_host,
        error => error,
        expires_at => link.expires_at.format("%Y-%m-%d %H:%M").to_string(),
    };
    html(status, context, Some(&link.return_url))
}

/// The one page for every link that does not work.
fn invalid_page() -> Response {
    html(
        StatusCode::NOT_FOUND,
        minijinja::context! { invalid => true, provider => minijinja::context! { display_name => "provider" } },
        None,
    )
}

fn html(status: StatusCode, context: minijinja::Value, return_url: Option<&str>) -> Response {
    let mut response = crate::pages::html(status, "connect.html", context);
    secure_headers(&mut response, return_url);
    response
}

/// No script, frame, foreign style or image; forms post only here (and, after the store,
/// the redirect to the app's origin); nothing cached; the secret in the URL never leaves
/// in a `Referer`.
fn secure_headers(response: &mut Response, return_url: Option<&str>) {
    let app_origin = return_url
        .and_then(|u| url::Url::parse(u).ok())
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null");
    let form_action = match app_origin {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    let policy = format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    crate::pages::common_headers(response, &policy);
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A request path as logged: a link's secret never reaches the logs.
pub(crate) fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/connect/") {
        Some(rest) => {
            let kept: Vec<&str> = rest.splitn(3, '/').take(2).collect();
            std::borrow::Cow::Owned(format!("/connect/{}/…", kept.join("/")))
        }
        None => std::borrow::Cow::Borrowed(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_must_stay_under_an_allowed_one() {
        let allowed = vec![
            "https://app.example.com/settings".to_owned(),
            "http://127.0.0.1:8080".to_owned(),
        ];
        for ok in [
            "https://app.example.com/settings",
            "https://app.example.com/settings/keys?tab=2",
            "http://127.0.0.1:8080/anything",
        ] {
            assert!(check_return_url(ok, &allowed).is_ok(), "{ok}");
        }
        for bad in [
            "https://app.example.com/settingsX",
            "https://app.example.com/",
            "https://evil.example.com/settings",
            "http://app.example.com/settings",
            "https://app.example.com:444/settings",
            "https://user@app.example.com/settings",
            "javascript:alert(1)",
            "/settings",
            "http://127.0.0.1:8081/",
        ] {
            assert!(check_return_url(bad, &allowed).is_err(), "{bad}");
        }
        assert!(check_return_url("https://app.example.com/settings", &[]).is_err());
    }

    #[test]
    fn secrets_never_reach_the_logged_path() {
        assert_eq!(
            loggable_path("/connect/runway/0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3/SECRETsecret"),
            "/connect/runway/0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3/…"
        );
        assert_eq!(loggable_path("/v1/jobs"), "/v1/jobs");
    }
}
