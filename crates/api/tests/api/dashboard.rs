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
    succeed(&api, job, "task-1").await;

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

/// The jobs pages: filters, search by id, a job's detail with its timeline and request behind
/// a click, cancel for admins only; no key material anywhere.
#[tokio::test]
async fn jobs_are_filtered_shown_and_cancelled_by_admins_only() {
    let api = sqlite_api().await;
    let key = "key_dashb0000111122223333444455556666777788889999aaaabbbbccccdddd";
    let done = stored_job(&api).await;
    let waiting = stored_job(&api).await;
    let user = api.store.jobs().get(done).await.unwrap().unwrap().user_id;
    let (status, body) = api
        .put_json(
            &format!("/v1/users/{user}/providers/runway/credentials"),
            &serde_json::json!({ "credentials": { "api_key": key }, "validate": false }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    succeed(&api, done, "task-77").await;

    let admin = api
        .token(DEFAULT_PROJECT_ID, Scopes::parse_list("admin").unwrap())
        .await;
    let cookie = sign_in(&api, &admin).await.unwrap();
    let mut pages = Vec::new();

    let (status, html, _) = get(&api, "/dashboard/jobs", Some(&cookie)).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(&done.to_string()) && html.contains(&waiting.to_string()),
        "{html}"
    );
    pages.push(html);
    let (_, html, _) = get(
        &api,
        "/dashboard/jobs?status=succeeded&since=1h",
        Some(&cookie),
    )
    .await;
    assert!(html.contains(&done.to_string()) && !html.contains(&waiting.to_string()));
    let (_, html, _) = get(
        &api,
        &format!("/dashboard/jobs?user={user}&provider=runway"),
        Some(&cookie),
    )
    .await;
    assert!(html.contains(&done.to_string()) && !html.contains(&waiting.to_string()));
    let (_, html, _) = get(&api, "/dashboard/jobs?user=nobody", Some(&cookie)).await;
    assert!(html.contains("user: not an id"), "{html}");
    let (status, _, headers) = get(&api, &format!("/dashboard/jobs?q={done}"), Some(&cookie)).await;
    assert_eq!(
        (status, headers[LOCATION].to_str().unwrap()),
        (303, format!("/dashboard/jobs/{done}").as_str())
    );

    let (status, html, _) = get(&api, &format!("/dashboard/jobs/{done}"), Some(&cookie)).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("task-77") && html.contains("accepted by the provider"),
        "the timeline: {html}"
    );
    assert!(html.contains("<details>") && html.contains("Request (shows the prompt)"));
    assert!(html.contains(&format!("/dashboard/jobs/{done}/video")));
    assert!(
        !html.contains("Cancel this job"),
        "a final job has no cancel"
    );
    pages.push(html);
    let (status, html, _) = get(&api, &format!("/dashboard/jobs/{waiting}"), Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(html.contains("Cancel this job"));
    let csrf = csrf_of(&html);
    pages.push(html);
    assert_eq!(
        get(
            &api,
            &format!("/dashboard/jobs/{}", Uuid::new_v4()),
            Some(&cookie)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        get(
            &api,
            &format!("/dashboard/jobs/{waiting}/video"),
            Some(&cookie)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        get(&api, &format!("/dashboard/jobs/{waiting}"), None)
            .await
            .0,
        303
    );

    // Read-only: no cancel button, a forged cancel refused.
    let reader = api
        .token(
            DEFAULT_PROJECT_ID,
            Scopes::parse_list("dashboard:read").unwrap(),
        )
        .await;
    let read_cookie = sign_in(&api, &reader).await.unwrap();
    let (_, html, _) = get(
        &api,
        &format!("/dashboard/jobs/{waiting}"),
        Some(&read_cookie),
    )
    .await;
    assert!(!html.contains("Cancel this job"));
    let read_csrf = csrf_of(&html);
    let cancel = format!("/dashboard/jobs/{waiting}/cancel");
    assert_eq!(
        post(&api, &cancel, &read_cookie, &[("csrf", &read_csrf)]).await,
        403
    );
    assert_eq!(
        post(&api, &cancel, &cookie, &[]).await,
        403,
        "no CSRF token"
    );
    assert_eq!(post(&api, &cancel, &cookie, &[("csrf", &csrf)]).await, 303);
    let cancelled = api.store.jobs().get(waiting).await.unwrap().unwrap();
    assert_eq!(cancelled.status, byok_core::JobStatus::Cancelled);

    for html in pages {
        assert!(
            !html.contains(key) && !html.contains(&admin),
            "no key material, no token"
        );
    }
}

/// Walks job `id` to `succeeded` as a worker would, the provider calling it `task`.
async fn succeed(api: &TestApi, id: Uuid, task: &str) {
    let result: JobResult =
        serde_json::from_value(serde_json::json!({ "bytes": 10, "content_type": "video/mp4" }))
            .unwrap();
    let jobs = api.store.jobs();
    assert!(jobs.begin_submit(id).await.unwrap());
    assert!(jobs.submitted(id, task, 1).await.unwrap());
    assert!(jobs.succeed(id, &result).await.unwrap());
}
