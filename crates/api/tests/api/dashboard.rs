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

/// Stores `key` as `user`'s Runway key (default project), unchecked.
async fn store_runway_key(api: &TestApi, user: Uuid, key: &str) {
    let (status, body) = api
        .put_json(
            &format!("/v1/users/{user}/providers/runway/credentials"),
            &serde_json::json!({ "credentials": { "api_key": key }, "validate": false }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A job stored as the API stores one.
async fn stored_job(api: &TestApi) -> Uuid {
    let user = Uuid::new_v4();
    let new = byok_store::NewJob {
        project_id: DEFAULT_PROJECT_ID,
        user_id: user,
        provider: byok_core::ProviderId::RUNWAY,
        model: "gen4.5".into(),
        request: byok_core::GenerationRequest {
            prompt: Some("a red fox at dawn".into()),
            ..byok_core::GenerationRequest::new(user, byok_core::ProviderId::RUNWAY, "gen4.5")
        },
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
    store_runway_key(&api, user, key).await;
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

/// `count` queue items made dead as a worker makes them (a consumer settles them `Dead`),
/// by consumer `worker`; their references, newest first as the queues page lists them.
async fn dead_items(api: &TestApi, worker: &str, ids: &[String]) -> Vec<String> {
    let items: Vec<byok_queue::NewItem> = ids
        .iter()
        .map(|id| byok_queue::NewItem::now(id.clone(), format!("{{\"job_id\":\"{id}\"}}")))
        .collect();
    api.engine.push(&items).await.unwrap();
    let consumer = api.engine.consumer(worker).await.unwrap();
    let mut fetched = Vec::new();
    while fetched.len() < ids.len() {
        fetched.extend(consumer.fetch(ids.len()).await.unwrap());
    }
    let settle: Vec<_> = fetched
        .into_iter()
        .map(|d| {
            let settlement = byok_queue::Settlement::Dead {
                error: format!("provider answered 500 for {}", d.item_id),
            };
            (d, settlement)
        })
        .collect();
    consumer.settle(&settle).await.unwrap();
    api.engine
        .list(byok_queue::ItemState::Dead, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect()
}

async fn post_raw(api: &TestApi, path: &str, cookie: &str, body: String) -> (u16, String) {
    let response = browser()
        .post(format!("{}{path}", api.base))
        .header(COOKIE, cookie)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// `POST /dashboard/queues/retry` with `csrf` and `fields` (names may repeat).
async fn retry_items(
    api: &TestApi,
    cookie: &str,
    csrf: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let mut body = format!("csrf={}", form_value(csrf));
    for (name, value) in fields {
        body.push_str(&format!("&{name}={}", form_value(value)));
    }
    post_raw(api, "/dashboard/queues/retry", cookie, body).await
}

fn form_value(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The queues page (dead items retried one, selected and all; purge only with its typed
/// confirmation; running refused), the keys page (hint, validity, the limiter's windows and
/// block), workers seen on the overview, and retry of a failed job as a new job — on each
/// store and queue; and no page or fragment carries key material, sealed text or the token.
#[tokio::test]
async fn queues_keys_workers_and_retry_for_operators() {
    for api in crate::apis().await {
        operator_pages(&api).await;
    }
}

async fn operator_pages(api: &TestApi) {
    let key = "key_opsp4ge000111122223333444455556666777788889999aaaabbbbccccdd";
    let failed = stored_job(api).await;
    let job = api.store.jobs().get(failed).await.unwrap().unwrap();
    let user = job.user_id;
    store_runway_key(api, user, key).await;
    let sealed = api
        .store
        .credentials()
        .get(job.owner(), byok_core::ProviderId::RUNWAY)
        .await
        .unwrap()
        .unwrap()
        .sealed;
    let error = byok_core::ErrorRecord {
        code: byok_core::ErrorCode::ProviderUnavailable,
        message: "the provider failed".into(),
        retryable: false,
    };
    assert!(api.store.jobs().fail(failed, &error, 1).await.unwrap());

    let admin = api
        .token(DEFAULT_PROJECT_ID, Scopes::parse_list("admin").unwrap())
        .await;
    let cookie = sign_in(api, &admin).await.unwrap();
    let reader = api
        .token(
            DEFAULT_PROJECT_ID,
            Scopes::parse_list("dashboard:read").unwrap(),
        )
        .await;
    let read_cookie = sign_in(api, &reader).await.unwrap();
    let mut pages = Vec::new();

    // --- Queues: three dead items, each retried one way.
    let ids = [failed.to_string(), "item-b".into(), "item-c".into()];
    let refs = dead_items(api, "test-worker-1", &ids).await;
    assert_eq!(refs.len(), 3);
    let (status, html, _) = get(api, "/dashboard/queues?state=dead", Some(&cookie)).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(&format!("href=\"/dashboard/jobs/{failed}\"")),
        "a job's item links to its page"
    );
    assert!(html.contains("provider answered 500 for item-b"));
    for r in &refs {
        assert!(html.contains(&format!("name=\"ref\" value=\"{r}\"")), "{r}");
        assert!(html.contains(&format!("name=\"one\" value=\"{r}\"")), "{r}");
    }
    assert!(html.contains("Retry all 3 dead") && html.contains("Purge 3 dead"));
    let csrf = csrf_of(&html);
    pages.push(html);
    let (_, html, _) = get(api, "/dashboard/queues?state=dead", Some(&read_cookie)).await;
    assert!(
        !html.contains("name=\"one\"") && !html.contains("Purge") && !html.contains("Retry all"),
        "read-only: no action"
    );
    let read_csrf = csrf_of(&html);
    pages.push(html);
    let (status, html, _) = get(api, "/dashboard/queues?state=nope", Some(&cookie)).await;
    assert_eq!(status, 400, "{html}");

    let dead = || async { api.engine.stats().await.unwrap().dead };
    assert_eq!(
        retry_items(api, &read_cookie, &read_csrf, &[("one", &refs[0])])
            .await
            .0,
        403
    );
    assert_eq!(
        retry_items(api, &cookie, "forged", &[("one", &refs[0])])
            .await
            .0,
        403
    );
    assert_eq!(dead().await, 3, "refused retries change nothing");
    // A row's own button wins over the boxes checked.
    let (status, _) =
        retry_items(api, &cookie, &csrf, &[("ref", &refs[1]), ("one", &refs[0])]).await;
    assert_eq!(status, 303);
    assert_eq!(dead().await, 2);
    let (status, html) =
        retry_items(api, &cookie, &csrf, &[("ref", "0-1"), ("ref", "not-a-ref")]).await;
    assert_eq!(status, 409, "references that are no dead item: {html}");
    assert!(html.contains("None of the selected items is dead now"));
    pages.push(html);
    let (status, _) = retry_items(api, &cookie, &csrf, &[]).await;
    assert_eq!(status, 422, "nothing selected");
    let (status, _) =
        retry_items(api, &cookie, &csrf, &[("ref", &refs[1]), ("ref", &refs[2])]).await;
    assert_eq!(status, 303);
    assert_eq!(dead().await, 0);
    assert_eq!(api.engine.stats().await.unwrap().pending, 3);

    // Purge: a wrong confirmation deletes nothing; the right one deletes every pending item.
    let purge = |confirm: &'static str, state: &'static str| {
        post_raw(
            api,
            "/dashboard/queues/purge",
            &cookie,
            format!(
                "csrf={}&state={state}&confirm={}",
                form_value(&csrf),
                form_value(confirm)
            ),
        )
    };
    let (status, html) = purge("yes", "pending").await;
    assert_eq!(status, 422, "{html}");
    assert!(html.contains("Type `pending`") && html.contains("nothing was deleted"));
    assert_eq!(api.engine.stats().await.unwrap().pending, 3);
    assert_eq!(purge("running", "running").await.0, 409);
    let (status, _) = post_raw(
        api,
        "/dashboard/queues/purge",
        &read_cookie,
        format!(
            "csrf={}&state=pending&confirm=pending",
            form_value(&read_csrf)
        ),
    )
    .await;
    assert_eq!(status, 403, "read-only");
    assert_eq!(purge("pending", "pending").await.0, 303);
    assert_eq!(api.engine.stats().await.unwrap().pending, 0);

    // --- Keys: the limiter's windows and block beside the key's summary.
    let limit = byok_ratelimit::LimitKey::new(byok_core::ProviderId::RUNWAY, job.owner());
    let quota = byok_core::RateLimits {
        per_minute: 5,
        per_hour: 50,
    };
    for sent in [true, false] {
        let byok_ratelimit::Acquire::Granted(permit) =
            api.limiter.acquire(&limit, quota).await.unwrap()
        else {
            panic!("within quota")
        };
        if sent {
            api.limiter.finish(permit, true).await.unwrap();
        } else {
            // Never settled: it counts as a submit still on its way.
            drop(permit);
        }
    }
    api.limiter
        .block(&limit, std::time::Duration::from_secs(600))
        .await
        .unwrap();
    let (status, html, _) = get(api, "/dashboard/keys", Some(&cookie)).await;
    assert_eq!(status, 200, "{html}");
    let row_at = html
        .find(&user.to_string())
        .expect("the user's key is listed");
    let row = &html[row_at..row_at + html[row_at..].find("</tr>").unwrap()];
    assert!(row.contains("runway") && row.contains("valid"), "{row}");
    assert!(row.contains("…"), "the hint: {row}");
    assert!(
        row.contains("2 / 5") && row.contains("2 / 50"),
        "both windows against the quota: {row}"
    );
    assert!(
        row.contains("(600 s)") || row.contains("(599 s)"),
        "blocked: {row}"
    );
    pages.push(html);
    let (_, html, _) = get(
        api,
        &format!("/dashboard/keys?user={user}&provider=runway"),
        Some(&read_cookie),
    )
    .await;
    assert!(html.contains(&user.to_string()));
    pages.push(html);
    let (_, html, _) = get(api, "/dashboard/keys?provider=veo", Some(&cookie)).await;
    assert!(!html.contains(&user.to_string()) && html.contains("No stored keys match"));
    let (_, html, _) = get(api, "/dashboard/keys?user=nobody", Some(&cookie)).await;
    assert!(html.contains("user: not an id"));

    // --- Workers seen: the consumer that made the dead items.
    let (_, html, _) = get(api, "/dashboard", Some(&cookie)).await;
    assert!(
        html.contains("Workers seen recently") && html.contains("test-worker-1"),
        "{html}"
    );
    pages.push(html);
    let (_, html, _) = get(api, "/dashboard/overview/live", Some(&cookie)).await;
    assert!(html.contains("test-worker-1"));
    pages.push(html);

    // --- Retry of a failed job: a new job with its request, each history naming the other.
    let (_, html, _) = get(api, &format!("/dashboard/jobs/{failed}"), Some(&cookie)).await;
    assert!(html.contains("Retry as a new job"), "{html}");
    pages.push(html);
    let (_, html, _) = get(
        api,
        &format!("/dashboard/jobs/{failed}"),
        Some(&read_cookie),
    )
    .await;
    assert!(!html.contains("Retry as a new job"));
    let retry_path = format!("/dashboard/jobs/{failed}/retry");
    assert_eq!(
        post(api, &retry_path, &read_cookie, &[("csrf", &read_csrf)]).await,
        403
    );
    assert_eq!(
        post(api, &retry_path, &cookie, &[]).await,
        403,
        "no CSRF token"
    );
    let response = browser()
        .post(api.url(&retry_path))
        .header(COOKIE, &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let to = response.headers()[LOCATION].to_str().unwrap().to_owned();
    let new_id: Uuid = to.trim_start_matches("/dashboard/jobs/").parse().unwrap();
    let new = api.store.jobs().get(new_id).await.unwrap().unwrap();
    assert_eq!(new.status, byok_core::JobStatus::Queued);
    assert_eq!(
        (new.project_id, new.user_id, &new.request),
        (job.project_id, job.user_id, &job.request)
    );
    let old = api.store.jobs().get(failed).await.unwrap().unwrap();
    assert_eq!(
        old.status,
        byok_core::JobStatus::Failed,
        "a final job stays final"
    );
    let history = |id| async move { api.store.jobs().events(id).await.unwrap() };
    assert!(
        history(failed)
            .await
            .iter()
            .any(|e| e.message == format!("retried from the dashboard as job {new_id}"))
    );
    assert!(
        history(new_id)
            .await
            .iter()
            .any(|e| e.message == format!("a retry of job {failed}, from the dashboard"))
    );
    let pending = api
        .engine
        .list(byok_queue::ItemState::Pending, 10)
        .await
        .unwrap();
    assert!(
        pending.iter().any(|i| i.item_id == new_id.to_string()),
        "the new job is queued: {pending:?}"
    );
    let (status, html, _) = get(api, &to, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("a retry of job {failed}")));
    pages.push(html);
    // A job that did not end without a video is not retried.
    let (status, html) = post_raw(
        api,
        &format!("/dashboard/jobs/{new_id}/retry"),
        &cookie,
        format!("csrf={}", form_value(&csrf)),
    )
    .await;
    assert_eq!(status, 409, "{html}");
    pages.push(html);
    // Without a valid key the retry is refused with the reason, and nothing is made.
    assert!(
        api.store
            .credentials()
            .delete(job.owner(), byok_core::ProviderId::RUNWAY)
            .await
            .unwrap()
    );
    let before = api
        .store
        .jobs()
        .search(&Default::default(), 100)
        .await
        .unwrap()
        .len();
    let (status, html) = post_raw(
        api,
        &retry_path,
        &cookie,
        format!("csrf={}", form_value(&csrf)),
    )
    .await;
    assert_eq!(status, 422, "{html}");
    assert!(html.contains("credentials_missing"), "{html}");
    assert_eq!(
        api.store
            .jobs()
            .search(&Default::default(), 100)
            .await
            .unwrap()
            .len(),
        before
    );

    for html in pages {
        assert!(
            !html.contains(key) && !html.contains(&sealed) && !html.contains(&admin),
            "no key material, no sealed text, no token: {html}"
        );
    }
}
