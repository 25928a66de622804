//! The operator dashboard over HTTP: sign-in makes an HttpOnly, SameSite=Strict session; the
//! overview renders; every state-changing form needs the session's CSRF token and an admin
//! session; a session ends at sign-out and with its token.

use byok_core::{DEFAULT_PROJECT_ID, JobResult, Scopes};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use uuid::Uuid;

use crate::{TestApi, sqlite_api};

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `token`; the session cookie (`name=value`) on success.
async fn sign_in(api: &TestApi, token: &str) -> Result<String, (u16, String)> {
    let response = browser()
        .post(format!("{}/dashboard/sign-in", api.base))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    if response.status() != 303 {
        let status = response.status().as_u16();
        return Err((status, response.text().await.unwrap()));
    }
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(set.contains(attribute), "{set}");
    }
    Ok(set.split(';').next().unwrap().to_owned())
}

async fn get(
    api: &TestApi,
    path: &str,
    cookie: Option<&str>,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut request = browser().get(format!("{}{path}", api.base));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, response.text().await.unwrap(), headers)
}

async fn post(api: &TestApi, path: &str, cookie: &str, form: &[(&str, &str)]) -> u16 {
    browser()
        .post(format!("{}{path}", api.base))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn sign_in_shows_the_overview_and_forms_need_csrf_and_admin() {
    let api = sqlite_api().await;
    // Without a session: to the sign-in page.
    let (status, _, headers) = get(&api, "/dashboard", None).await;
    assert_eq!(
        (status, headers[LOCATION].to_str().unwrap()),
        (303, "/dashboard/sign-in")
    );
    let (status, html, headers) = get(&api, "/dashboard/sign-in", None).await;
    assert_eq!(status, 200);
    assert!(html.contains("Sign in"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    // Tokens that may not, and garbage.
    let producer = api.token(DEFAULT_PROJECT_ID, Scopes::producer()).await;
    assert_eq!(sign_in(&api, &producer).await.unwrap_err().0, 403);
    assert_eq!(sign_in(&api, "byok_not_a_token").await.unwrap_err().0, 401);

    // A job that ended shows in the chart.
    let job = stored_job(&api).await;
    let result: JobResult =
        serde_json::from_value(serde_json::json!({ "bytes": 10, "content_type": "video/mp4" }))
            .unwrap();
    let jobs = api.store.jobs();
    assert!(jobs.begin_submit(job).await.unwrap());
    assert!(jobs.submitted(job, "task-1", 1).await.unwrap());
    assert!(jobs.succeed(job, &result).await.unwrap());

    let admin = api
        .token(DEFAULT_PROJECT_ID, Scopes::parse_list("admin").unwrap())
        .await;
    let cookie = sign_in(&api, &admin).await.unwrap();
    let (status, html, _) = get(&api, "/dashboard", Some(&cookie)).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("<h1>Overview</h1>") && html.contains("<svg"),
        "{html}"
    );
    assert!(
        html.contains("succeeded 1"),
        "the job in the totals: {html}"
    );
    assert!(!html.contains(&admin), "never the token");
    let csrf = csrf_of(&html);
    let (status, live, _) = get(&api, "/dashboard/overview/live", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(live.contains("1 succeeded"), "{live}");
    assert_eq!(get(&api, "/dashboard/overview/live", None).await.0, 401);
    for asset in ["/assets/dashboard.css", "/assets/dashboard.js"] {
        assert_eq!(get(&api, asset, None).await.0, 200, "{asset}");
    }

    // An action: refused without the CSRF token, with a wrong one, from another origin.
    assert_eq!(
        post(&api, "/dashboard/queues/retry-dead", &cookie, &[]).await,
        403
    );
    assert_eq!(
        post(
            &api,
            "/dashboard/queues/retry-dead",
            &cookie,
            &[("csrf", "forged")]
        )
        .await,
        403
    );
    let cross = browser()
        .post(format!("{}/dashboard/queues/retry-dead", api.base))
        .header(COOKIE, &cookie)
        .header("origin", "https://evil.example.com")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert_eq!(
        post(
            &api,
            "/dashboard/queues/retry-dead",
            &cookie,
            &[("csrf", &csrf)]
        )
        .await,
        303
    );

    // A read-only session: pages yes, actions no, even with its own CSRF token.
    let reader = api
        .token(
            DEFAULT_PROJECT_ID,
            Scopes::parse_list("dashboard:read").unwrap(),
        )
        .await;
    let read_cookie = sign_in(&api, &reader).await.unwrap();
    let (status, html, _) = get(&api, "/dashboard", Some(&read_cookie)).await;
    assert_eq!(status, 200);
    assert!(html.contains("read-only"));
    let read_csrf = csrf_of(&html);
    assert_eq!(
        post(
            &api,
            "/dashboard/queues/retry-dead",
            &read_cookie,
            &[("csrf", &read_csrf)]
        )
        .await,
        403
    );

    // Sign-out ends the session; a revoked token ends its sessions.
    assert_eq!(
        post(&api, "/dashboard/sign-out", &cookie, &[("csrf", &csrf)]).await,
        303
    );
    assert_eq!(get(&api, "/dashboard", Some(&cookie)).await.0, 303);
    let reader_id = api
        .store
        .tokens()
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.scopes.contains(byok_core::Scope::DashboardRead))
        .unwrap()
        .id;
    api.store.tokens().revoke(reader_id).await.unwrap();
    assert_eq!(get(&api, "/dashboard", Some(&read_cookie)).await.0, 303);
}

/// A job stored as the API stores one.
async fn stored_job(api: &TestApi) -> Uuid {
    let user = Uuid::new_v4();
    let new = byok_store::NewJob {
        project_id: DEFAULT_PROJECT_ID,
        user_id: user,
        provider: byok_core::ProviderId::RUNWAY,
        model: "gen4.5".into(),
        request: byok_core::GenerationRequest::new(user, byok_core::ProviderId::RUNWAY, "gen4.5"),
        metadata: serde_json::json!({}),
        created_by_token: None,
        idempotency: None,
        batch_id: None,
        usage: Default::default(),
    };
    match api.store.jobs().insert(&new).await.unwrap() {
        byok_store::Inserted::Created(job) => job.id,
        other => panic!("{other:?}"),
    }
}
