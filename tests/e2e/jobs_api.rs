//! `POST /v1/jobs` and the job routes against real `byok api` and `byok
//! worker` processes on PostgreSQL and Redis: bad input is refused with its
//! status and code and leaves nothing stored or queued; idempotency keys
//! replay and conflict; cancels reach the provider once.

use std::time::Duration;

use byok_client::{
    ApiErrorCode, GenerationRequest, IdempotencyKey, JobStatus, ListJobs, ProviderId,
};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::deploy::{DeployOptions, Deployment};
use crate::helpers::poll_until;

/// Redis entries of the deployment's queue: due items plus delayed ones.
async fn queued_items(d: &Deployment) -> (u64, u64) {
    let (url, namespace) = (
        d.env_value("REDIS_URL"),
        d.env_value("BYOK__QUEUE__NAMESPACE"),
    );
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let due: u64 = redis::cmd("XLEN")
        .arg(format!("{{{namespace}}}:jobs"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let delayed: u64 = redis::cmd("ZCARD")
        .arg(format!("{{{namespace}}}:delayed"))
        .query_async(&mut conn)
        .await
        .unwrap();
    (due, delayed)
}

/// Waits (up to 20 s) until the deployment's queue holds nothing.
async fn wait_queue_empty(d: &Deployment) {
    let emptied = poll_until(Duration::from_secs(20), async || {
        (queued_items(d).await == (0, 0)).then_some(())
    })
    .await;
    assert!(emptied.is_some(), "the queue never emptied");
}

async fn user_jobs(d: &Deployment, user: Uuid) -> Vec<byok_client::JobView> {
    d.client()
        .list_jobs(user, &ListJobs::default())
        .await
        .unwrap()
        .jobs
}

/// A Runway request of `user` with `metadata`, typed.
fn runway_request(user: Uuid, metadata: Value) -> GenerationRequest {
    GenerationRequest {
        prompt: Some("a quiet harbour".into()),
        metadata,
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    }
}

/// A Runway request body of `user` with `extra` members, as raw JSON.
fn runway(user: Uuid, extra: Value) -> Value {
    let mut body = json!({ "user_id": user, "provider": "runway", "model": "gen4.5", "prompt": "a quiet harbour" });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body[k] = v;
        }
    }
    body
}

#[tokio::test]
async fn bad_enqueues_are_refused_with_their_status_and_code_and_nothing_is_queued() {
    let Some(d) = Deployment::distributed(DeployOptions {
        workers: 0,
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_bad_input_key" }))
        .await;
    // A Stability key can still be stored (and is checked at Stability); its video model
    // is retired.
    d.put_credentials(user, "stability", json!({ "api_key": "sim_bad_input_key" }))
        .await;
    let keyless = Uuid::new_v4();
    let url = format!("{}/v1/jobs", d.api);
    let valid = runway(user, json!({}));

    struct Case {
        name: &'static str,
        request: reqwest::RequestBuilder,
        status: u16,
        code: &'static str,
        field: Option<&'static str>,
    }
    let post = || d.req(Method::POST, "/v1/jobs");
    let json_body = |body: &Value| post().json(body);
    let cases = vec![
        Case {
            name: "no token",
            request: d.http.post(&url).json(&valid),
            status: 401,
            code: "unauthorized",
            field: None,
        },
        Case {
            name: "wrong token",
            request: d
                .http
                .post(&url)
                .bearer_auth(format!("byok_{}", "A".repeat(43)))
                .json(&valid),
            status: 401,
            code: "unauthorized",
            field: None,
        },
        Case {
            name: "malformed JSON",
            request: post()
                .header("content-type", "application/json")
                .body("{\"user_id\": "),
            status: 400,
            code: "bad_request",
            field: None,
        },
        Case {
            name: "wrong content type",
            request: post()
                .header("content-type", "text/plain")
                .body(valid.to_string()),
            status: 415,
            code: "unsupported_media_type",
            field: None,
        },
        Case {
            name: "oversized body",
            request: json_body(&runway(
                user,
                json!({ "metadata": { "blob": "x".repeat(1_100_000) } }),
            )),
            status: 413,
            code: "payload_too_large",
            field: None,
        },
        Case {
            name: "unknown provider",
            request: json_body(
                &json!({ "user_id": user, "provider": "sora", "model": "sora-2", "prompt": "x" }),
            ),
            status: 422,
            code: "invalid_request",
            field: Some("provider"),
        },
        Case {
            name: "unknown model",
            request: json_body(&runway(user, json!({ "model": "gen1" }))),
            status: 422,
            code: "invalid_request",
            field: Some("model"),
        },
        Case {
            name: "unsupported duration",
            request: json_body(&runway(user, json!({ "duration_seconds": 15 }))),
            status: 422,
            code: "invalid_request",
            field: Some("duration_seconds"),
        },
        Case {
            name: "unsupported aspect ratio",
            request: json_body(&runway(user, json!({ "aspect_ratio": "4:3" }))),
            status: 422,
            code: "invalid_request",
            field: Some("aspect_ratio"),
        },
        Case {
            name: "unknown field",
            request: json_body(&runway(user, json!({ "fps": 60 }))),
            status: 422,
            code: "invalid_request",
            field: None,
        },
        Case {
            name: "user id not a UUID",
            request: json_body(
                &json!({ "user_id": "bob", "provider": "runway", "model": "gen4.5", "prompt": "x" }),
            ),
            status: 422,
            code: "invalid_request",
            field: Some("user_id"),
        },
        Case {
            name: "file:// image",
            request: json_body(&runway(user, json!({ "image_url": "file:///etc/passwd" }))),
            status: 422,
            code: "invalid_request",
            field: Some("image_url"),
        },
        Case {
            name: "retired model",
            request: json_body(&json!({
                "user_id": user, "provider": "stability", "model": "stable-video-diffusion",
                "image_url": "https://images.example/a.png",
            })),
            status: 422,
            code: "model_retired",
            field: Some("model"),
        },
        Case {
            name: "no stored key",
            request: json_body(&runway(keyless, json!({}))),
            status: 422,
            code: "credentials_missing",
            field: None,
        },
        Case {
            name: "bad idempotency key",
            request: json_body(&valid).header("idempotency-key", "k".repeat(300)),
            status: 400,
            code: "bad_request",
            field: None,
        },
    ];
    for case in cases {
        let response = case.request.send().await.unwrap();
        let status = response.status().as_u16();
        assert!(
            response.headers().contains_key("x-request-id"),
            "{}",
            case.name
        );
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.name);
        assert!(
            body["error"]["message"].is_string(),
            "{}: {body}",
            case.name
        );
        if let Some(field) = case.field {
            let named = body["error"]["details"]["field"]
                .as_str()
                .unwrap_or_default();
            assert!(
                named.contains(field),
                "{}: names {field}: {body}",
                case.name
            );
        }
    }
    // A validation error lists what is allowed.
    let response = json_body(&runway(user, json!({ "duration_seconds": 15 })))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["details"]["allowed"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{body}"
    );

    // The retired model's answer says when, where it was announced, and where the family is
    // still offered.
    let response = json_body(&json!({
        "user_id": user, "provider": "stability", "model": "stable-video-diffusion",
        "image_url": "https://images.example/a.png",
    }))
    .send()
    .await
    .unwrap();
    let body: Value = response.json().await.unwrap();
    let details = &body["error"]["details"];
    assert_eq!(details["retired_on"], "2025-07-24", "{body}");
    assert_eq!(
        details["source"], "https://stability.ai/api-pricing-update-25",
        "{body}"
    );
    let alternatives: Vec<&str> = details["alternatives"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|a| a["provider"].as_str().unwrap())
        .collect();
    assert_eq!(alternatives, ["fal", "replicate"], "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2025-07-24") && message.contains("fal"),
        "{message}"
    );
    let stability = d.sim.stats().await.stability;
    assert_eq!(
        stability.totals.submits, 0,
        "nothing reached Stability: {stability:?}"
    );

    assert!(user_jobs(&d, user).await.is_empty(), "nothing was stored");
    assert!(user_jobs(&d, keyless).await.is_empty());
    assert_eq!(queued_items(&d).await, (0, 0), "nothing was queued");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_job_and_refuses_another_body() {
    let Some(d) = Deployment::distributed(DeployOptions {
        workers: 0,
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_idempotency_key" }))
        .await;
    let body = runway(
        user,
        json!({ "duration_seconds": 5, "metadata": { "scene": 1, "take": 2 } }),
    );
    let send = |body: &Value, key: &str| {
        d.req(Method::POST, "/v1/jobs")
            .header("idempotency-key", key)
            .json(body)
            .send()
    };

    let first = send(&body, "order-17").await.unwrap();
    assert_eq!(first.status(), 202);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/jobs/{}", first["id"].as_str().unwrap())
    );
    assert_eq!(
        (first["status"].as_str(), first["attempts"].as_u64()),
        (Some("queued"), Some(0))
    );
    assert_eq!(first["metadata"], json!({ "scene": 1, "take": 2 }));

    // The same request again (its keys in another order): the same job.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"metadata":{{"take":2,"scene":1}},"duration_seconds":5,"prompt":"a quiet harbour","model":"gen4.5","provider":"runway","user_id":"{user}"}}"#
    ))
    .unwrap();
    let replay = send(&reordered, "order-17").await.unwrap();
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"]);

    // Another request under the same key: a conflict naming the first job.
    let other = send(&runway(user, json!({ "duration_seconds": 10 })), "order-17")
        .await
        .unwrap();
    assert_eq!(other.status(), 409);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["error"]["code"], "conflict");
    assert_eq!(other["error"]["details"]["job_id"], first["id"]);

    // Another key is another job.
    let second = send(&body, "order-18").await.unwrap();
    assert_eq!(second.status(), 202);
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["id"], first["id"]);

    assert_eq!(user_jobs(&d, user).await.len(), 2);
    assert_eq!(queued_items(&d).await, (2, 0), "a replay queues nothing");

    // Both rows get their enqueued mark (written after the answer, batched),
    // so the sweeper will not push them again.
    let ids =
        [&first["id"], &second["id"]].map(|id| Uuid::parse_str(id.as_str().unwrap()).unwrap());
    let db = sqlx::PgPool::connect(&d.env_value("DATABASE_URL"))
        .await
        .unwrap();
    let marked = async || -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM generation_jobs WHERE id = ANY($1) AND enqueued_at IS NOT NULL",
        )
        .bind(&ids[..])
        .fetch_one(&db)
        .await
        .unwrap()
    };
    let both = poll_until(Duration::from_secs(10), async || {
        (marked().await == 2).then_some(())
    })
    .await;
    assert!(
        both.is_some(),
        "{} of 2 jobs marked enqueued",
        marked().await
    );
}

/// The API writes concurrent requests' jobs in shared statements; each
/// request must still get its own answer, and a key raced by many requests
/// must still make one job.
#[tokio::test]
async fn concurrent_enqueues_each_get_their_own_job_and_a_raced_key_makes_one() {
    let Some(d) = Deployment::distributed(DeployOptions {
        workers: 0,
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_concurrent_key" }))
        .await;
    let raced = runway_request(user, json!({ "raced": true }));
    let raced_key = IdempotencyKey::new("raced").unwrap();
    let client = d.client();
    let requests = (0..90).map(|i| {
        let (request, key) = match i % 3 {
            0 => (raced.clone(), Some(raced_key.clone())),
            1 => (runway_request(user, json!({ "i": i })), None),
            _ => (
                runway_request(user, json!({ "i": i })),
                Some(IdempotencyKey::new(format!("own-{i}")).unwrap()),
            ),
        };
        async move {
            let answer = client.create_job(&request, key.as_ref()).await;
            (i, answer.unwrap_or_else(|e| panic!("request {i}: {e}")))
        }
    });
    let answers = futures::future::join_all(requests).await;

    let mut raced_ids = std::collections::HashSet::new();
    let mut replays = 0;
    let mut own_ids = std::collections::HashSet::new();
    for (i, enqueued) in &answers {
        let job = &enqueued.job;
        if i % 3 == 0 {
            assert_eq!(job.metadata, json!({ "raced": true }));
            raced_ids.insert(job.id);
            replays += usize::from(enqueued.replayed);
        } else {
            assert_eq!(
                job.metadata,
                json!({ "i": i }),
                "request {i} got another's job"
            );
            assert!(!enqueued.replayed);
            assert!(own_ids.insert(job.id), "request {i} shares a job");
        }
    }
    assert_eq!(raced_ids.len(), 1, "one job for the raced key");
    assert_eq!(replays, 29, "the other 29 requests with it are replays");
    assert!(own_ids.is_disjoint(&raced_ids));
    assert_eq!(user_jobs_count(&d, user).await, 61);
    assert_eq!(queued_items(&d).await, (61, 0), "each job queued once");
}

async fn user_jobs_count(d: &Deployment, user: Uuid) -> usize {
    let mut count = 0;
    let mut query = ListJobs {
        limit: Some(100),
        ..ListJobs::default()
    };
    loop {
        let page = d.client().list_jobs(user, &query).await.unwrap();
        count += page.jobs.len();
        match query.after(&page) {
            Some(next) if !page.jobs.is_empty() => query = next,
            _ => return count,
        }
    }
}

#[tokio::test]
async fn cancels_reach_the_provider_once_and_final_jobs_refuse_them() {
    let Some(mut d) = Deployment::distributed(DeployOptions {
        workers: 1,
        render_time: Duration::from_secs(60),
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_cancel_key" }))
        .await;
    let client = d.client().clone();
    let id = d
        .submit(&GenerationRequest {
            duration_seconds: Some(5),
            ..runway_request(user, json!({}))
        })
        .await;
    let running = d
        .wait_until(&[id], Duration::from_secs(20), |jobs| {
            jobs[0].provider_job_id.is_some()
        })
        .await;
    assert_eq!(running[0].status, JobStatus::Running, "{:?}", running[0]);

    let cancelled = client.cancel_job(id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(
        cancelled.error.as_ref().map(|e| e.code),
        Some(byok_client::ErrorCode::Cancelled)
    );

    let reached = poll_until(Duration::from_secs(20), async || {
        (d.sim.stats().await.runway.totals.cancels > 0).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "the cancel never reached the provider\n{}",
        d.log_tail("worker-0")
    );
    let again = client.cancel_job(id).await.unwrap_err();
    assert_eq!(
        (again.code(), again.details()["status"].as_str()),
        (Some(ApiErrorCode::Conflict), Some("cancelled")),
        "a final job cannot be cancelled again: {again}"
    );
    let unknown = client.cancel_job(Uuid::new_v4()).await.unwrap_err();
    assert_eq!(unknown.code(), Some(ApiErrorCode::NotFound));
    // A path id that is not a UUID: only a raw request can send it.
    let not_a_uuid = d
        .req(Method::POST, "/v1/jobs/not-a-uuid/cancel")
        .send()
        .await
        .unwrap();
    assert_eq!(not_a_uuid.status(), 400);
    let video = client.video_stream(id).await.unwrap_err();
    assert_eq!(
        video.code(),
        Some(ApiErrorCode::NotFound),
        "a cancelled job has no video"
    );

    // Once the cancelled job's items have ended, a job cancelled before any
    // worker took it is never submitted.
    wait_queue_empty(&d).await;
    d.kill_worker(0).await;
    let parked = d
        .submit(&GenerationRequest {
            prompt: Some("never made".into()),
            ..runway_request(user, json!({}))
        })
        .await;
    assert_eq!(
        client.cancel_job(parked).await.unwrap().status,
        JobStatus::Cancelled
    );
    let stats_before = d.sim.stats().await.runway.totals.submits;
    d.start_worker();
    // The new worker takes the item and drops it: the queue empties.
    wait_queue_empty(&d).await;
    assert_eq!(
        d.sim.stats().await.runway.totals.submits,
        stats_before,
        "nothing submitted"
    );
    assert_eq!(d.job_view(parked).await.status, JobStatus::Cancelled);
    assert_eq!(
        d.sim.stats().await.runway.totals.cancels,
        1,
        "one cancel in all"
    );

    // The user's jobs, newest first, one page at a time.
    let query = ListJobs {
        limit: Some(1),
        ..ListJobs::default()
    };
    let page = client.list_jobs(user, &query).await.unwrap();
    assert_eq!(page.jobs[0].id, parked);
    let next = ListJobs {
        status: Some(JobStatus::Cancelled),
        ..query.after(&page).expect("a next page")
    };
    let page = client.list_jobs(user, &next).await.unwrap();
    assert_eq!(page.jobs[0].id, id);
    assert!(page.next_cursor.is_none());
    // A status that is none: only a raw request can send it.
    let bad = d
        .req(Method::GET, &format!("/v1/users/{user}/jobs?status=done"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
