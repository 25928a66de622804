//! Projects and scopes: a token acts in its own project only, and only as far
//! as its scopes go.

use byok_core::{ProjectUser, ProviderId, Scope, Scopes};
use byok_store::{NewCredential, StoredCredential};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{TestApi, apis, error_code, send, sqlite_api};

const KEY: &str = "key_aaaa0000111122223333444455556666777788889999aaaabbbbccccddddeeee";

fn job_request(user: Uuid) -> Value {
    json!({
        "user_id": user,
        "provider": "runway",
        "model": "gen4.5",
        "prompt": "a lighthouse at dusk",
        "duration_seconds": 5,
    })
}

/// What project P can see of its user `user`: the summaries of the user's
/// keys and jobs, the job, and the history of the job. Compared before and
/// after another project's token tried everything on these ids.
async fn snapshot(api: &TestApi, owner: ProjectUser, job: Uuid) -> String {
    let credentials = api.store.credentials().list_for_user(owner).await.unwrap();
    let jobs = api
        .store
        .jobs()
        .list_for_user(owner, None, None, 100)
        .await
        .unwrap();
    let job = api.store.jobs().get(job).await.unwrap();
    let events = api
        .store
        .jobs()
        .events(job.as_ref().unwrap().id)
        .await
        .unwrap();
    format!("{credentials:?}\n{jobs:?}\n{job:?}\n{events:?}")
}

/// Every `/v1` call a producer can make about `user` and `job`, with a body
/// where the route takes one.
fn calls(user: Uuid, job: Uuid) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, format!("/v1/users/{user}/providers"), None),
        (
            Method::GET,
            format!("/v1/users/{user}/providers/runway"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/users/{user}/providers/runway/test"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/users/{user}/providers/runway"),
            None,
        ),
        (Method::GET, format!("/v1/users/{user}/jobs"), None),
        (Method::POST, "/v1/jobs".to_owned(), Some(job_request(user))),
        (Method::GET, format!("/v1/jobs/{job}"), None),
        (Method::GET, format!("/v1/jobs/{job}/video"), None),
        (Method::POST, format!("/v1/jobs/{job}/cancel"), None),
    ]
}

/// `user`'s stored Runway key in `project`, read from the store.
async fn stored_key(api: &TestApi, project: Uuid, user: Uuid) -> Option<StoredCredential> {
    let owner = ProjectUser::new(project, user);
    api.store
        .credentials()
        .get(owner, ProviderId::RUNWAY)
        .await
        .unwrap()
}

/// Stores `key` as `user`'s Runway key without a check, with `token`.
async fn put_key(api: &TestApi, token: &str, user: Uuid, key: &str) {
    let path = format!("/v1/users/{user}/providers/runway/credentials");
    let body = json!({ "credentials": { "api_key": key }, "validate": false });
    let (status, body) = call(api, token, &Method::PUT, &path, &Some(body)).await;
    assert_eq!(status, 200, "{}: {body}", api.backend);
}

/// `POST /v1/jobs` for `user`'s Runway key, with `token`.
async fn enqueue(api: &TestApi, token: &str, user: Uuid) -> (u16, Value) {
    call(
        api,
        token,
        &Method::POST,
        "/v1/jobs",
        &Some(job_request(user)),
    )
    .await
}

async fn call(
    api: &TestApi,
    token: &str,
    method: &Method,
    path: &str,
    body: &Option<Value>,
) -> (u16, Value) {
    let mut request = api.req_as(token, method.clone(), path);
    if let Some(body) = body {
        request = request.json(body);
    }
    send(request).await
}

#[tokio::test]
async fn another_projects_ids_answer_exactly_as_missing_ones_and_change_nothing() {
    for api in apis().await {
        let (p1, p2) = (
            api.project("sceneflow-prod").await,
            api.project("other-app").await,
        );
        let t1 = api.token(p1, Scopes::producer()).await;
        let t2 = api.token(p2, Scopes::producer()).await;

        // Project 1's user with a key and a job.
        let user = Uuid::new_v4();
        put_key(&api, &t1, user, KEY).await;
        let (status, body) = enqueue(&api, &t1, user).await;
        assert_eq!(status, 202, "{}: {body}", api.backend);
        let job: Uuid = body["id"].as_str().unwrap().parse().unwrap();
        // The API notes the push as enqueued in the background: let that
        // land first, so the snapshot holds still.
        byok_testing::poll_until("the job marked enqueued", async || {
            let waiting = api.store.jobs().awaiting_push(job).await.unwrap();
            (!waiting).then_some(())
        })
        .await;
        let owner = ProjectUser::new(p1, user);
        let before = snapshot(&api, owner, job).await;

        // Project 2's token, on project 1's ids and on ids nobody has.
        let (missing_user, missing_job) = (Uuid::new_v4(), Uuid::now_v7());
        for ((method, path, body), (_, missing_path, missing_body)) in calls(user, job)
            .into_iter()
            .zip(calls(missing_user, missing_job))
        {
            let theirs = call(&api, &t2, &method, &path, &body).await;
            let missing = call(&api, &t2, &method, &missing_path, &missing_body).await;
            // The only difference allowed is the id the caller sent.
            let missing_as_theirs = (
                missing.0,
                serde_json::from_str::<Value>(
                    &missing
                        .1
                        .to_string()
                        .replace(&missing_user.to_string(), &user.to_string())
                        .replace(&missing_job.to_string(), &job.to_string()),
                )
                .unwrap(),
            );
            assert_eq!(
                theirs, missing_as_theirs,
                "{}: {method} {path}",
                api.backend
            );
            assert!(
                [200, 404, 422].contains(&theirs.0),
                "{}: {method} {path} -> {theirs:?}",
                api.backend
            );
            if theirs.0 == 200 {
                // Listings answer for project 2's user of that id, who has nothing.
                let text = theirs.1.to_string();
                assert!(!text.contains("key_…"), "{method} {path}: {text}");
                assert!(!text.contains(&job.to_string()), "{method} {path}: {text}");
            }
        }
        assert_eq!(snapshot(&api, owner, job).await, before, "{}", api.backend);

        // Project 1 still sees its own.
        let (status, body) = call(&api, &t1, &Method::GET, &format!("/v1/jobs/{job}"), &None).await;
        assert_eq!(status, 200, "{}: {body}", api.backend);
        let (status, _) = call(
            &api,
            &t1,
            &Method::GET,
            &format!("/v1/users/{user}/providers/runway"),
            &None,
        )
        .await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn the_same_user_id_in_two_projects_is_two_users() {
    let api = sqlite_api().await;
    let (p1, p2) = (api.project("app-one").await, api.project("app-two").await);
    let (t1, t2) = (
        api.token(p1, Scopes::producer()).await,
        api.token(p2, Scopes::producer()).await,
    );
    let user = Uuid::new_v4();
    for (token, key) in [(&t1, KEY), (&t2, &KEY.replace("key_a", "key_b")[..])] {
        put_key(&api, token, user, key).await;
    }
    let one = stored_key(&api, p1, user).await.unwrap();
    let two = stored_key(&api, p2, user).await.unwrap();
    assert_ne!(one.id, two.id);
    assert_eq!(one.credential_hint.as_deref(), Some("key_…eeee"));

    // Deleting in project 2 leaves project 1's key alone.
    let (status, _) = call(
        &api,
        &t2,
        &Method::DELETE,
        &format!("/v1/users/{user}/providers/runway"),
        &None,
    )
    .await;
    assert_eq!(status, 204);
    assert!(stored_key(&api, p1, user).await.is_some());
}

#[tokio::test]
async fn a_sealed_value_moved_to_another_project_does_not_open_and_is_never_sent() {
    let api = sqlite_api().await;
    let (p1, p2) = (api.project("first").await, api.project("second").await);
    let t1 = api.token(p1, Scopes::producer()).await;
    let t2 = api.token(p2, Scopes::producer()).await;
    let user = Uuid::new_v4();
    put_key(&api, &t1, user, KEY).await;
    let original = stored_key(&api, p1, user).await.unwrap();
    assert!(original.sealed.starts_with("v2:"), "{}", original.sealed);

    // An insider copies the sealed value to the same user id in project 2.
    api.store
        .credentials()
        .upsert(&NewCredential {
            owner: ProjectUser::new(p2, user),
            provider: ProviderId::RUNWAY,
            sealed: original.sealed.clone(),
            credential_hint: "key_…eeee".into(),
            validated_at: None,
        })
        .await
        .unwrap();
    let (status, body) = call(
        &api,
        &t2,
        &Method::POST,
        &format!("/v1/users/{user}/providers/runway/test"),
        &None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["check"]["result"], "unreadable", "{body}");
    assert_eq!(body["is_valid"], false, "{body}");
    assert!(
        api.runway
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty(),
        "the copied key went to the provider"
    );
    // Marked invalid in project 2, a job there is refused before it is queued.
    let (status, body) = enqueue(&api, &t2, user).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "credentials_invalid"),
        "{body}"
    );
}

/// Fills the path parameters of an OpenAPI path with values that parse.
fn concrete(path: &str) -> String {
    path.replace("{user_id}", &Uuid::new_v4().to_string())
        .replace("{job_id}", &Uuid::now_v7().to_string())
        .replace("{provider}", "runway")
}

#[tokio::test]
async fn each_route_refuses_a_token_without_its_scope_as_the_document_says() {
    let api = sqlite_api().await;
    let project = api.project("scoped").await;
    let (status, doc) = send(api.http.get(api.url("/openapi.json"))).await;
    assert_eq!(status, 200);
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let required: Vec<&str> = operation["security"][0]["bearer"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path}: no bearer requirement"))
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            let request_body = (method == Method::POST || method == Method::PUT).then(|| json!({}));
            match required[..] {
                [] => {
                    // Any valid token, even one with a single unrelated scope.
                    let token = api
                        .token(project, [Scope::JobsRead].into_iter().collect())
                        .await;
                    let (status, body) =
                        call(&api, &token, &method, &concrete(path), &request_body).await;
                    assert_eq!(status, 200, "{method} {path}: {body}");
                }
                [scope] => {
                    let scope: Scope = scope.parse().unwrap();
                    let all_but: Scopes = Scope::ALL.into_iter().filter(|s| *s != scope).collect();
                    let token = api.token(project, all_but).await;
                    let response = {
                        let mut request = api.req_as(&token, method.clone(), &concrete(path));
                        if let Some(body) = &request_body {
                            request = request.json(body);
                        }
                        request.send().await.unwrap()
                    };
                    let challenge = response.headers()["www-authenticate"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(
                        (status, error_code(&body)),
                        (403, "insufficient_scope"),
                        "{method} {path}: {body}"
                    );
                    assert_eq!(body["error"]["details"]["scope"], scope.as_str());
                    assert_eq!(
                        challenge,
                        format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")
                    );
                    // With only that scope the route gets past the check.
                    let token = api.token(project, [scope].into_iter().collect()).await;
                    let (status, body) =
                        call(&api, &token, &method, &concrete(path), &request_body).await;
                    assert!(
                        ![401, 403].contains(&status),
                        "{method} {path}: {status} {body}"
                    );
                    checked += 1;
                }
                _ => panic!("{method} {path}: one scope per route, got {required:?}"),
            }
        }
    }
    assert_eq!(checked, 34, "every scoped /v1 operation was tried");
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_refused_and_admin_sees_projects() {
    let api = sqlite_api().await;
    let project = api.project("expiring").await;
    let token = api.token(project, Scopes::producer()).await;
    let (status, _) = call(&api, &token, &Method::GET, "/v1/providers", &None).await;
    assert_eq!(status, 200);
    // Expire it in the database, as time would.
    let pool = sqlx::SqlitePool::connect(&api.db_url).await.unwrap();
    sqlx::query("UPDATE api_tokens SET expires_at = $1 WHERE project_id = $2")
        .bind(byok_store::now() - chrono::Duration::seconds(1))
        .bind(project.hyphenated().to_string())
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = call(&api, &token, &Method::GET, "/v1/providers", &None).await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    // Projects are an operator's view: admin only.
    let (status, body) = call(
        &api,
        &api.token.clone(),
        &Method::GET,
        "/v1/projects",
        &None,
    )
    .await;
    assert_eq!((status, error_code(&body)), (403, "insufficient_scope"));
    let admin = api
        .token(project, [Scope::Admin].into_iter().collect())
        .await;
    let (status, body) = call(&api, &admin, &Method::GET, "/v1/projects", &None).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "expiring"]);
}
