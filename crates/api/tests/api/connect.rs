//! "Connect your key": a single-use link to this service's own page, where the user types
//! the key; it is checked with the provider as `PUT …/credentials` checks it, stored, and
//! the user is sent back to an allowed URL of the app. Links cannot be reused, used after
//! expiry, or edited to another user or provider.

use byok_core::{DEFAULT_PROJECT_ID, ProjectUser, ProviderId};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{TestApi, error_code, runway_accepts, send, sqlite_api};

const GOOD: &str = "key_good0000111122223333444455556666777788889999aaaabbbbccccdddd";
const BAD: &str = "key_badd0000111122223333444455556666777788889999aaaabbbbccccdddd";
const RETURN: &str = "https://app.example.com/settings/keys";

/// A browser: no token, no redirects followed.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The form as a browser sends it (multipart, one text field).
fn form(field: &str, value: &str) -> (String, Vec<u8>) {
    let boundary = "byokTestBoundary7MA4YWxkTrZu0gW";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n--{boundary}--\r\n"
    );
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

async fn submit(url: &str, key: &str) -> reqwest::Response {
    let (content_type, body) = form("api_key", key);
    browser()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn new_link(api: &TestApi, user: Uuid) -> String {
    let (status, link) = send(
        api.req(
            Method::POST,
            &format!("/v1/users/{user}/providers/runway/connect-links"),
        )
        .json(&json!({ "return_url": format!("{RETURN}?from=byok") })),
    )
    .await;
    assert_eq!(status, 201, "{link}");
    link["url"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_link_connects_one_key_once_and_returns_to_the_app() {
    let api = sqlite_api().await;
    runway_accepts(&api.runway, &[GOOD]).await;
    let user = Uuid::new_v4();
    let links = format!("/v1/users/{user}/providers/runway/connect-links");

    // No return URLs on the project yet: refused, naming the field.
    let (status, refused) = send(
        api.req(Method::POST, &links)
            .json(&json!({ "return_url": RETURN })),
    )
    .await;
    assert_eq!(
        (status, error_code(&refused)),
        (422, "invalid_request"),
        "{refused}"
    );
    assert_eq!(refused["error"]["details"]["field"], "return_url");
    api.store
        .connect_links()
        .set_return_urls(
            DEFAULT_PROJECT_ID,
            &["https://app.example.com/settings".into()],
        )
        .await
        .unwrap();
    for elsewhere in [
        "https://evil.example.com/settings",
        "https://app.example.com/admin",
    ] {
        let (status, refused) = send(
            api.req(Method::POST, &links)
                .json(&json!({ "return_url": elsewhere })),
        )
        .await;
        assert_eq!(status, 422, "{elsewhere}: {refused}");
    }
    // A webhook endpoint hears about the connection.
    let (status, endpoint) =
        send(api.req(Method::POST, "/v1/webhooks").json(
            &json!({ "url": "https://127.0.0.1:9/hooks", "events": ["credential.connected"] }),
        ))
        .await;
    assert_eq!(status, 201, "{endpoint}");

    let url = new_link(&api, user).await;
    assert!(
        url.starts_with(&format!("{}/connect/runway/{user}/", api.base)),
        "{url}"
    );
    let page = browser().get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("form-action 'self' https://app.example.com"),
        "{csp}"
    );
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("Connect your Runway ML key"), "{html}");
    assert!(
        html.contains("name=\"api_key\"") && html.contains("type=\"password\""),
        "{html}"
    );
    assert!(html.contains("app.example.com"));
    assert!(
        !html.contains("<script") && !html.contains("http://") && !html.contains("https://cdn"),
        "no scripts, no third parties: {html}"
    );
    let css = browser()
        .get(format!("{}/assets/connect.css", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);

    // A key Runway rejects: the form again with Runway's reason; the key is not echoed.
    let rejected = submit(&url, BAD).await;
    assert_eq!(rejected.status(), 422);
    let html = rejected.text().await.unwrap();
    assert!(html.contains("The key was not accepted"), "{html}");
    assert!(
        html.contains("Invalid API key"),
        "the provider's reason: {html}"
    );
    assert!(!html.contains(BAD), "never the key");
    let owner = ProjectUser::new(DEFAULT_PROJECT_ID, user);
    assert!(
        api.store
            .credentials()
            .get(owner, ProviderId::RUNWAY)
            .await
            .unwrap()
            .is_none()
    );

    // The good key: stored (checked), and back to the app with what happened.
    let connected = submit(&url, GOOD).await;
    assert_eq!(connected.status(), 303);
    assert_eq!(
        connected.headers()["location"],
        "https://app.example.com/settings/keys?from=byok&byok_connected=runway"
    );
    let stored = api
        .store
        .credentials()
        .get(owner, ProviderId::RUNWAY)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.is_valid && stored.validated_at.is_some());
    assert!(!stored.sealed.contains(GOOD));
    let deliveries = api
        .store
        .webhooks()
        .deliveries(
            DEFAULT_PROJECT_ID,
            endpoint["id"].as_str().unwrap().parse().unwrap(),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].event_type, "credential.connected");

    // The same link again, to look or to store: the page for a link that does not work.
    for response in [
        browser().get(&url).send().await.unwrap(),
        submit(&url, GOOD).await,
    ] {
        assert_eq!(response.status(), 404);
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("This link does not work")
        );
    }
}

#[tokio::test]
async fn edited_and_expired_links_do_not_work() {
    let api = sqlite_api().await;
    runway_accepts(&api.runway, &[GOOD]).await;
    api.store
        .connect_links()
        .set_return_urls(DEFAULT_PROJECT_ID, &[RETURN.into()])
        .await
        .unwrap();
    let user = Uuid::new_v4();
    let url = new_link(&api, user).await;
    let other = Uuid::new_v4();
    for edited in [
        url.replace(&user.to_string(), &other.to_string()),
        url.replace("/connect/runway/", "/connect/stability/"),
        format!("{}x", url),
        url.replace("/connect/runway/", "/connect/nope/"),
    ] {
        let page = browser().get(&edited).send().await.unwrap();
        assert_eq!(page.status(), 404, "{edited}");
        let stored = submit(&edited, GOOD).await;
        assert_eq!(stored.status(), 404, "{edited}");
    }
    for owner in [user, other] {
        let owner = ProjectUser::new(DEFAULT_PROJECT_ID, owner);
        assert!(
            api.store
                .credentials()
                .get(owner, ProviderId::RUNWAY)
                .await
                .unwrap()
                .is_none()
        );
    }

    // Past its 15 minutes.
    let secret = "expiredexpiredexpiredexpiredexpiredexpired";
    api.store
        .connect_links()
        .create(&byok_store::NewConnectLink {
            id: Uuid::now_v7(),
            token_sha256: sha256(secret),
            owner: ProjectUser::new(DEFAULT_PROJECT_ID, user),
            provider: ProviderId::RUNWAY,
            return_url: RETURN.into(),
            created_by_token: None,
            expires_at: chrono::Utc::now() - chrono::TimeDelta::seconds(1),
        })
        .await
        .unwrap();
    let expired = format!("{}/connect/runway/{user}/{secret}", api.base);
    assert_eq!(browser().get(&expired).send().await.unwrap().status(), 404);
    assert_eq!(submit(&expired, GOOD).await.status(), 404);

    // Making a link needs credentials:write.
    let reader = api
        .token(
            DEFAULT_PROJECT_ID,
            byok_core::Scopes::parse_list("credentials:read").unwrap(),
        )
        .await;
    let (status, body) = send(
        api.req_as(
            &reader,
            Method::POST,
            &format!("/v1/users/{user}/providers/runway/connect-links"),
        )
        .json(&json!({ "return_url": RETURN })),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "insufficient_scope"),
        "{body}"
    );
    let _: Value = body;
}

fn sha256(text: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).into()
}
