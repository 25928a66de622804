//! `POST /v1/batches` and friends over real HTTP: every job checked as `POST /v1/jobs`
//! checks one, every bad job listed, nothing stored unless all are good, idempotent
//! replays, paging, cancelling, and other projects' batches unseen.

use byok_core::{DEFAULT_PROJECT_ID, JobResult, JobStatus, Scope, Scopes};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{TestApi, apis, error_code, send, sqlite_api, sqlite_api_with};

const KEY: &str = "key_aaaa0000111122223333444455556666777788889999aaaabbbbccccddddeeee";

pub(crate) fn job(user: Uuid, prompt: &str) -> Value {
    json!({
        "user_id": user,
        "provider": "runway",
        "model": "gen4.5",
        "prompt": prompt,
        "duration_seconds": 5,
    })
}

/// Stores `user`'s Runway key in the default project, unchecked.
pub(crate) async fn put_key(api: &TestApi, user: Uuid) {
    let path = format!("/v1/users/{user}/providers/runway/credentials");
    let body = json!({ "credentials": { "api_key": KEY }, "validate": false });
    let (status, body) = api.put_json(&path, &body).await;
    assert_eq!(status, 200, "{}: {body}", api.backend);
}

async fn post_batch(api: &TestApi, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = api.req(Method::POST, "/v1/batches").json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Rows of `table` (one of this file's literals), counted behind the API's back.
async fn rows(api: &TestApi, table: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"));
    if api.backend == "sqlite" {
        let pool = sqlx::SqlitePool::connect(&api.db_url).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    } else {
        let pool = sqlx::PgPool::connect(&api.db_url).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}

/// A batch of `n` jobs of `user` (whose key is stored): its resource.
async fn create(api: &TestApi, user: Uuid, n: usize) -> Value {
    let jobs: Vec<Value> = (0..n).map(|i| job(user, &format!("shot {i}"))).collect();
    let (status, body) =
        json_of(post_batch(api, &json!({ "jobs": jobs, "metadata": { "n": n } }), None).await)
            .await;
    assert_eq!(status, 202, "{}: {body}", api.backend);
    body
}

#[tokio::test]
async fn a_batch_is_stored_queued_and_pushed_and_reads_back_with_its_counts() {
    for api in apis().await {
        let user = Uuid::new_v4();
        put_key(&api, user).await;
        let jobs: Vec<Value> = (0..3).map(|i| job(user, &format!("shot {i}"))).collect();
        let response =
            post_batch(&api, &json!({ "jobs": jobs, "metadata": { "a": 1 } }), None).await;
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(response.headers().get("idempotent-replayed").is_none());
        let (status, batch) = json_of(response).await;
        assert_eq!(status, 202, "{}: {batch}", api.backend);
        let id = batch["id"].as_str().unwrap();
        assert_eq!(location, format!("/v1/batches/{id}"));
        assert_eq!(batch["status"], "running");
        assert_eq!(batch["total"], 3);
        assert_eq!(batch["progress"], 0.0);
        assert_eq!(batch["metadata"], json!({ "a": 1 }));
        assert_eq!(
            batch["counts"],
            json!({"queued": 3, "throttled": 0, "running": 0, "succeeded": 0, "failed": 0,
                   "cancelled": 0})
        );
        assert!(batch["finished_at"].is_null());
        let (status, read) = api.get(&location).await;
        assert_eq!((status, &read), (200, &batch), "{}", api.backend);
        // What is served is what the document describes: every member, each required.
        let (_, doc) = send(api.http.get(api.url("/openapi.json"))).await;
        for (schema, value) in [("Batch", &batch), ("BatchCounts", &batch["counts"])] {
            let schema = &doc["components"]["schemas"][schema];
            let mut documented: Vec<&str> = schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut required: Vec<&str> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            let mut served: Vec<&str> = value
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            documented.sort_unstable();
            required.sort_unstable();
            served.sort_unstable();
            assert_eq!(documented, served, "{schema}");
            assert_eq!(required, served, "{schema}");
        }

        // Paged in the batch's order; each job pushed to the queue before the answer.
        let (status, first) = api.get(&format!("/v1/batches/{id}/jobs?limit=2")).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["batch_id"], id);
        let cursor = first["next_cursor"].as_str().unwrap();
        let (_, second) = api
            .get(&format!("/v1/batches/{id}/jobs?limit=2&cursor={cursor}"))
            .await;
        assert!(second["next_cursor"].is_null(), "{second}");
        let listed: Vec<&Value> = first["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .chain(second["jobs"].as_array().unwrap())
            .collect();
        let prompts: Vec<&str> = listed
            .iter()
            .map(|j| j["request"]["prompt"].as_str().unwrap())
            .collect();
        assert_eq!(prompts, ["shot 0", "shot 1", "shot 2"], "{}", api.backend);
        for listed in listed {
            let job_id: Uuid = listed["id"].as_str().unwrap().parse().unwrap();
            let stored = api.store.jobs().get(job_id).await.unwrap().unwrap();
            assert_eq!(stored.batch_id.map(|b| b.to_string()).as_deref(), Some(id));
            assert!(
                !api.store.jobs().awaiting_push(job_id).await.unwrap(),
                "{}: pushed",
                api.backend
            );
            assert_eq!(stored.status, JobStatus::Queued);
        }

        // Bad paging parameters are 400s naming the parameter.
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("cursor=x", "cursor"),
        ] {
            let (status, body) = api.get(&format!("/v1/batches/{id}/jobs?{query}")).await;
            assert_eq!((status, error_code(&body)), (400, "bad_request"), "{query}");
            assert_eq!(body["error"]["details"]["field"], field);
        }
    }
}

#[tokio::test]
async fn every_bad_job_is_listed_and_nothing_is_stored() {
    for api in apis().await {
        let user = Uuid::new_v4();
        put_key(&api, user).await;
        let keyless = Uuid::new_v4();
        let mut jobs: Vec<Value> = (0..200).map(|i| job(user, &format!("shot {i}"))).collect();
        // A model the catalogue lacks, a user without a key, a member the shape lacks.
        jobs[7]["model"] = json!("no-such-model");
        jobs[42]["user_id"] = json!(keyless);
        jobs[199]["colour"] = json!("red");
        let (status, body) = json_of(post_batch(&api, &json!({ "jobs": jobs }), None).await).await;
        assert_eq!(
            (status, error_code(&body)),
            (422, "invalid_request"),
            "{body}"
        );
        let details = &body["error"]["details"];
        assert_eq!(details["field"], "jobs");
        let items = details["items"].as_array().unwrap();
        let listed: Vec<(u64, &str)> = items
            .iter()
            .map(|i| (i["index"].as_u64().unwrap(), i["code"].as_str().unwrap()))
            .collect();
        assert_eq!(
            listed,
            [
                (7, "invalid_request"),
                (42, "credentials_missing"),
                (199, "invalid_request")
            ],
            "{}: {body}",
            api.backend
        );
        assert_eq!(items[0]["field"], "model");
        assert!(items[1]["field"].is_null());
        assert!(
            items[2]["message"].as_str().unwrap().contains("colour"),
            "{body}"
        );
        for item in items {
            assert_eq!(item.as_object().unwrap().len(), 4, "{item}");
        }
        // Exactly what `POST /v1/jobs` answers for the same job.
        let (status, single) = send(api.req(Method::POST, "/v1/jobs").json(&jobs[42])).await;
        assert_eq!((status, error_code(&single)), (422, "credentials_missing"));
        assert_eq!(single["error"]["message"], items[1]["message"]);

        assert_eq!(rows(&api, "batches").await, 0, "{}", api.backend);
        assert_eq!(rows(&api, "generation_jobs").await, 0, "{}", api.backend);

        // A NUL character in the batch's own metadata, or in a job, is refused too.
        let (status, body) = json_of(
            post_batch(
                &api,
                &json!({ "jobs": [job(user, "a")], "metadata": { "k": "a\u{0}" } }),
                None,
            )
            .await,
        )
        .await;
        assert_eq!((status, error_code(&body)), (422, "invalid_request"));
        assert_eq!(body["error"]["details"]["field"], "metadata.k");
        let (status, body) =
            json_of(post_batch(&api, &json!({ "jobs": [job(user, "a\u{0}")] }), None).await).await;
        assert_eq!((status, error_code(&body)), (422, "invalid_request"));
        assert_eq!(body["error"]["details"]["items"][0]["field"], "prompt");
        assert_eq!(rows(&api, "generation_jobs").await, 0);
    }
}

#[tokio::test]
async fn a_batch_holds_one_to_a_thousand_jobs() {
    let api = sqlite_api().await;
    let user = Uuid::new_v4();
    put_key(&api, user).await;
    let too_many: Vec<Value> = (0..1001).map(|_| job(user, "x")).collect();
    let (status, body) = json_of(post_batch(&api, &json!({ "jobs": too_many }), None).await).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "invalid_request"),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("1000"),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["max_items"], 1000);
    assert_eq!(body["error"]["details"]["field"], "jobs");
    let (status, body) = json_of(post_batch(&api, &json!({ "jobs": [] }), None).await).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "invalid_request"),
        "{body}"
    );
    // A body of the wrong shape is refused before anything else.
    let (status, body) = json_of(post_batch(&api, &json!({ "job": [] }), None).await).await;
    assert_eq!(
        (status, error_code(&body)),
        (422, "invalid_request"),
        "{body}"
    );
    assert_eq!(rows(&api, "batches").await, 0);
    assert_eq!(rows(&api, "generation_jobs").await, 0);

    // Exactly 1,000 is a batch.
    let batch = create(&api, user, 1000).await;
    assert_eq!(batch["total"], 1000);
    assert_eq!(rows(&api, "generation_jobs").await, 1000);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_batch_or_conflicts() {
    for api in apis().await {
        let user = Uuid::new_v4();
        put_key(&api, user).await;
        let body = json!({ "jobs": [job(user, "a"), job(user, "b")], "metadata": { "m": 1 } });
        let (status, first) = json_of(post_batch(&api, &body, Some("batch-1")).await).await;
        assert_eq!(status, 202, "{first}");
        // The same batch with its members in another order is the same request.
        let reordered: Value = serde_json::from_str(
            &format!(
                r#"{{"metadata": {{"m": 1}}, "jobs": [{{"prompt": "a", "duration_seconds": 5, "model": "gen4.5", "provider": "runway", "user_id": "{user}"}}, {}]}}"#,
                job(user, "b")
            ),
        )
        .unwrap();
        let response = post_batch(&api, &reordered, Some("batch-1")).await;
        assert_eq!(response.headers()["idempotent-replayed"], "true");
        let (status, replay) = json_of(response).await;
        assert_eq!(status, 202);
        assert_eq!(replay["id"], first["id"], "{}", api.backend);
        let other = json!({ "jobs": [job(user, "c")] });
        let (status, conflict) = json_of(post_batch(&api, &other, Some("batch-1")).await).await;
        assert_eq!(
            (status, error_code(&conflict)),
            (409, "conflict"),
            "{conflict}"
        );
        assert_eq!(conflict["error"]["details"]["batch_id"], first["id"]);
        assert_eq!(rows(&api, "batches").await, 1, "{}", api.backend);
        assert_eq!(rows(&api, "generation_jobs").await, 2);
        // A malformed key is a 400.
        let (status, body) = json_of(post_batch(&api, &body, Some("")).await).await;
        assert_eq!((status, error_code(&body)), (400, "bad_request"), "{body}");
    }
}

#[tokio::test]
async fn cancelling_a_batch_cancels_its_live_jobs_and_completes_it() {
    for api in apis().await {
        let user = Uuid::new_v4();
        put_key(&api, user).await;
        let batch = create(&api, user, 3).await;
        let id = batch["id"].as_str().unwrap();
        let (_, page) = api.get(&format!("/v1/batches/{id}/jobs")).await;
        let first: Uuid = page["jobs"][0]["id"].as_str().unwrap().parse().unwrap();
        let result: JobResult =
            serde_json::from_value(json!({ "bytes": 10, "content_type": "video/mp4" })).unwrap();
        assert!(api.store.jobs().succeed(first, &result).await.unwrap());
        let (_, running) = api.get(&format!("/v1/batches/{id}")).await;
        assert_eq!(running["counts"]["succeeded"], 1);
        assert!((running["progress"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);

        let (status, cancelled) = api.post(&format!("/v1/batches/{id}/cancel")).await;
        assert_eq!(status, 200, "{}: {cancelled}", api.backend);
        assert_eq!(cancelled["status"], "completed");
        assert_eq!(cancelled["progress"], 1.0);
        assert_eq!(cancelled["counts"]["succeeded"], 1);
        assert_eq!(cancelled["counts"]["cancelled"], 2);
        assert!(cancelled["finished_at"].is_string());
        let (_, page) = api.get(&format!("/v1/batches/{id}/jobs")).await;
        let statuses: Vec<&str> = page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["succeeded", "cancelled", "cancelled"]);
        // Cancelling a completed batch changes nothing.
        let (status, again) = api.post(&format!("/v1/batches/{id}/cancel")).await;
        assert_eq!((status, &again), (200, &cancelled), "{}", api.backend);
    }
}

#[tokio::test]
async fn another_projects_batch_is_a_missing_one() {
    let api = sqlite_api().await;
    let user = Uuid::new_v4();
    put_key(&api, user).await;
    let batch = create(&api, user, 2).await;
    let id = batch["id"].as_str().unwrap();
    let other = api.project("other").await;
    let stranger = api.token(other, Scopes::producer()).await;
    let missing = Uuid::now_v7();
    for (method, path) in [
        (Method::GET, format!("/v1/batches/{id}")),
        (Method::GET, format!("/v1/batches/{id}/jobs")),
        (Method::POST, format!("/v1/batches/{id}/cancel")),
    ] {
        let (status, body) = send(api.req_as(&stranger, method.clone(), &path)).await;
        assert_eq!((status, error_code(&body)), (404, "not_found"), "{path}");
        let mine = path.replace(id, &missing.to_string());
        let (status, same) = send(api.req(method.clone(), &mine)).await;
        assert_eq!(
            (status, &same["error"]["message"]),
            (404, &body["error"]["message"])
        );
        let bad = path.replace(id, "not-a-uuid");
        let (status, body) = send(api.req(method, &bad)).await;
        assert_eq!((status, error_code(&body)), (400, "bad_request"), "{bad}");
        assert_eq!(body["error"]["details"]["field"], "batch_id");
    }
    // The stranger's cancel changed nothing.
    let (_, read) = api.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(read, batch);
    // A token that may only read cannot create or cancel.
    let reader = api
        .token(DEFAULT_PROJECT_ID, [Scope::JobsRead].into_iter().collect())
        .await;
    let (status, body) = send(
        api.req_as(&reader, Method::POST, "/v1/batches")
            .json(&json!({ "jobs": [job(user, "x")] })),
    )
    .await;
    assert_eq!((status, error_code(&body)), (403, "insufficient_scope"));
    assert_eq!(rows(&api, "batches").await, 1);
}

/// An API whose queue (a Redis of the test's own) stopped after it started, and a user with a
/// key. `None` without `redis-server`.
pub(crate) async fn api_whose_queue_stopped() -> Option<(TestApi, Uuid)> {
    let redis = byok_testing::spawn_redis(&[])?;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let api = sqlite_api_with(|s| s.queue.url = secrecy::SecretString::from(url)).await;
    let user = Uuid::new_v4();
    put_key(&api, user).await;
    drop(redis);
    Some((api, user))
}

#[tokio::test]
async fn a_queue_failure_after_storing_answers_503_with_the_batch() {
    let Some((api, user)) = api_whose_queue_stopped().await else {
        return;
    };
    let body = json!({ "jobs": [job(user, "a"), job(user, "b")] });
    let (status, body) = json_of(post_batch(&api, &body, Some("retry-me")).await).await;
    assert_eq!(
        (status, error_code(&body)),
        (503, "service_unavailable"),
        "{body}"
    );
    let id: Uuid = body["error"]["details"]["batch_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Stored whole and unmarked: the sweeper pushes its jobs.
    let jobs = api
        .store
        .batches()
        .jobs(DEFAULT_PROJECT_ID, id, None, 10)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    for job in &jobs {
        assert!(api.store.jobs().awaiting_push(job.id).await.unwrap());
    }
    // A retry with the key gets the batch, without a second one.
    let again = json!({ "jobs": [job(user, "a"), job(user, "b")] });
    let response = post_batch(&api, &again, Some("retry-me")).await;
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let (status, replay) = json_of(response).await;
    assert_eq!(
        (status, replay["id"].as_str()),
        (202, Some(&*id.to_string()))
    );
    assert_eq!(rows(&api, "batches").await, 1);
}

/// A batch has a body limit of its own, above every other route's: a batch of 1,000 jobs
/// larger than `api.max_body_bytes` is taken, the same padding in one job is a 413, and a
/// batch over `api.max_batch_body_bytes` is a 413 with nothing stored.
#[tokio::test]
async fn a_batch_has_a_body_limit_of_its_own() {
    let api = sqlite_api_with(|s| {
        s.api.max_body_bytes = 1024 * 1024;
        s.api.max_batch_body_bytes = 2 * 1024 * 1024;
    })
    .await;
    let user = Uuid::new_v4();
    put_key(&api, user).await;
    let padded = |pad: usize| {
        let mut job = job(user, "a lighthouse");
        job["metadata"] = json!({ "notes": "n".repeat(pad) });
        job
    };
    let jobs: Vec<Value> = (0..1000).map(|_| padded(1300)).collect();
    let body = json!({ "jobs": jobs });
    assert!(serde_json::to_vec(&body).unwrap().len() > 1024 * 1024);
    let (status, batch) = json_of(post_batch(&api, &body, None).await).await;
    assert_eq!(status, 202, "{batch}");
    assert_eq!(batch["total"], 1000);

    let (status, one) = send(
        api.req(Method::POST, "/v1/jobs")
            .json(&padded(1024 * 1024 + 1)),
    )
    .await;
    assert_eq!(
        (status, error_code(&one)),
        (413, "payload_too_large"),
        "{one}"
    );

    let jobs: Vec<Value> = (0..1000).map(|_| padded(2200)).collect();
    let (status, refused) = json_of(post_batch(&api, &json!({ "jobs": jobs }), None).await).await;
    assert_eq!(
        (status, error_code(&refused)),
        (413, "payload_too_large"),
        "{refused}"
    );
    assert_eq!(rows(&api, "batches").await, 1);
    assert_eq!(rows(&api, "generation_jobs").await, 1000);
}
