//! `GET /v1/jobs/{id}/events` over real HTTP: the job is moved with the store's own
//! transitions (as a worker does) while the test reads the Server-Sent Events as a browser
//! would, chunk by chunk.

use std::time::{Duration, Instant};

use byok_core::{
    DEFAULT_PROJECT_ID, ErrorCode, ErrorRecord, GenerationRequest, JobResult, ProviderId, Scope,
    Scopes,
};
use byok_store::{Inserted, NewJob};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{TestApi, apis, error_code, send, sqlite_api, sqlite_api_with};

/// How long a test waits for the next event (or the end) before it fails.
const WAIT: Duration = Duration::from_secs(20);

/// A new `queued` job of `project`, stored as `POST /v1/jobs` stores one.
async fn job_in(api: &TestApi, project: Uuid) -> Uuid {
    let user = Uuid::new_v4();
    let new = NewJob {
        project_id: project,
        user_id: user,
        provider: ProviderId::RUNWAY,
        model: "gen4_turbo".into(),
        request: GenerationRequest::new(user, ProviderId::RUNWAY, "gen4_turbo"),
        metadata: json!({ "scene": 7 }),
        created_by_token: None,
        batch_id: None,
        idempotency: None,
        usage: Default::default(),
    };
    match api.store.jobs().insert(&new).await.unwrap() {
        Inserted::Created(job) => job.id,
        other => panic!("expected a new job, got {other:?}"),
    }
}

/// The row ids of the job's history entries, oldest first.
async fn history_ids(api: &TestApi, job: Uuid) -> Vec<i64> {
    let entries = api.store.jobs().events_after(job, 0, 1000).await.unwrap();
    entries.into_iter().map(|(id, _)| id).collect()
}

fn result() -> JobResult {
    JobResult {
        provider_urls: vec!["https://cdn.example/out.mp4".into()],
        bytes: 1234,
        content_type: "video/mp4".into(),
        note: None,
        provider_usage: byok_core::ProviderUsage { compute_ms: None },
    }
}

/// One event as a client sees it.
#[derive(Debug)]
struct Received {
    event: String,
    id: String,
    data: Value,
}

/// An open event stream, read as it arrives.
struct Events {
    response: reqwest::Response,
    pending: Vec<u8>,
}

impl Events {
    /// Opens the job's stream (with `Last-Event-ID` when given) and checks that it is one.
    async fn open(api: &TestApi, job: Uuid, last_event_id: Option<&str>) -> Events {
        let mut request = api.req(Method::GET, &format!("/v1/jobs/{job}/events"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", api.backend);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert!(response.headers().contains_key("x-request-id"));
        Events {
            response,
            pending: Vec::new(),
        }
    }

    /// The next event, skipping comments; `None` once the body has ended. Fails the test
    /// when nothing comes within [`WAIT`] or the connection breaks.
    async fn next(&mut self) -> Option<Received> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("UTF-8 events");
                let (mut event, mut id, mut data) = (None, None, Vec::new());
                for line in block.lines() {
                    if line.is_empty() || line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "event" => event = Some(value.to_owned()),
                        "id" => id = Some(value.to_owned()),
                        "data" => data.push(value.to_owned()),
                        other => panic!("unexpected field {other}: {block}"),
                    }
                }
                let Some(event) = event else {
                    // A keep-alive comment.
                    assert!(id.is_none() && data.is_empty(), "{block}");
                    continue;
                };
                assert_eq!(data.len(), 1, "one line of JSON: {block}");
                return Some(Received {
                    event,
                    id: id.unwrap_or_else(|| panic!("every event has an id: {block}")),
                    data: serde_json::from_str(&data[0]).unwrap(),
                });
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("an event or the end of the stream in time")
                .expect("the stream ends cleanly, never cut");
            match chunk {
                Some(bytes) => self.pending.extend_from_slice(&bytes),
                None => {
                    assert!(
                        self.pending.iter().all(u8::is_ascii_whitespace),
                        "a partial event at the end: {:?}",
                        String::from_utf8_lossy(&self.pending)
                    );
                    return None;
                }
            }
        }
    }

    /// The next event, which must be there.
    async fn expect(&mut self, event: &str) -> Received {
        let received = self
            .next()
            .await
            .unwrap_or_else(|| panic!("the stream ended before {event}"));
        assert_eq!(received.event, event, "{received:?}");
        assert_eq!(received.data["type"], event, "{received:?}");
        received
    }

    async fn expect_end(&mut self) {
        if let Some(more) = self.next().await {
            panic!("the stream should have ended, got {more:?}");
        }
    }
}

/// Checks the payload of a history event: type, RFC 3339 timestamp, message, the job.
fn check_history(received: &Received, id: i64, message: &str, job: Uuid, status: &str) {
    assert_eq!(received.id, id.to_string(), "{received:?}");
    let data = &received.data;
    assert_eq!(data["message"], message, "{data}");
    let timestamp = data["timestamp"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(timestamp).unwrap();
    assert_eq!(data["data"]["id"], job.to_string(), "{data}");
    assert_eq!(data["data"]["status"], status, "{data}");
    let members: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(members, ["data", "message", "timestamp", "type"], "{data}");
}

/// Checks a progress event: its id, the progress in the job, no message.
fn check_progress(received: &Received, id: &str, progress: f64) {
    assert_eq!(received.id, id, "{received:?}");
    let data = &received.data;
    assert_eq!(data["data"]["progress"], progress, "{data}");
    assert_eq!(data["data"]["status"], "running", "{data}");
    assert!(data.get("message").is_none(), "{data}");
    chrono::DateTime::parse_from_rfc3339(data["timestamp"].as_str().unwrap()).unwrap();
}

#[tokio::test]
async fn a_job_is_followed_from_queued_to_succeeded_and_the_stream_ends() {
    for api in apis().await {
        let jobs = api.store.jobs();
        let job = job_in(&api, DEFAULT_PROJECT_ID).await;
        let mut events = Events::open(&api, job, None).await;

        let queued = events.expect("job.queued").await;
        let ids = history_ids(&api, job).await;
        check_history(&queued, ids[0], "accepted", job, "queued");
        assert_eq!(queued.data["data"]["metadata"], json!({ "scene": 7 }));

        assert!(jobs.set_throttled(job).await.unwrap());
        let throttled = events.expect("job.throttled").await;
        let ids = history_ids(&api, job).await;
        check_history(
            &throttled,
            ids[1],
            "waiting for the key's rate-limit window",
            job,
            "throttled",
        );

        assert!(jobs.begin_submit(job).await.unwrap());
        assert!(jobs.submitted(job, "task-1", 1).await.unwrap());
        let running = events.expect("job.running").await;
        let ids = history_ids(&api, job).await;
        check_history(
            &running,
            ids[2],
            "accepted by the provider as task-1",
            job,
            "running",
        );
        assert_eq!(running.data["data"]["provider_job_id"], "task-1");

        for (progress, thousandths) in [(0.25, 250), (0.5, 500)] {
            assert!(jobs.set_progress(job, progress).await.unwrap());
            let moved = events.expect("job.progress").await;
            check_progress(&moved, &format!("{}.p{thousandths}", ids[2]), progress);
        }

        assert!(jobs.succeed(job, &result()).await.unwrap());
        let succeeded = events.expect("job.succeeded").await;
        let ids = history_ids(&api, job).await;
        assert_eq!(ids.len(), 4, "{}", api.backend);
        check_history(&succeeded, ids[3], "succeeded", job, "succeeded");
        // `data` is the job exactly as GET returns it.
        let (status, got) = api.get(&format!("/v1/jobs/{job}")).await;
        assert_eq!(status, 200);
        assert_eq!(succeeded.data["data"], got, "{}", api.backend);
        assert_eq!(
            got["result"]["video_url"],
            format!("/v1/jobs/{job}/video").as_str()
        );
        events.expect_end().await;
    }
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_exactly_the_rest() {
    for api in apis().await {
        let jobs = api.store.jobs();
        let job = job_in(&api, DEFAULT_PROJECT_ID).await;
        assert!(jobs.set_throttled(job).await.unwrap());
        assert!(jobs.begin_submit(job).await.unwrap());
        assert!(jobs.submitted(job, "task-1", 1).await.unwrap());
        assert!(jobs.set_progress(job, 0.4).await.unwrap());
        let ids = history_ids(&api, job).await;
        let running = ids[2];

        // After `throttled`: `running`, then the progress, then what comes.
        let mut events = Events::open(&api, job, Some(&ids[1].to_string())).await;
        let event = events.expect("job.running").await;
        check_history(
            &event,
            running,
            "accepted by the provider as task-1",
            job,
            "running",
        );
        check_progress(
            &events.expect("job.progress").await,
            &format!("{running}.p400"),
            0.4,
        );
        assert!(jobs.set_progress(job, 0.6).await.unwrap());
        let last = events.expect("job.progress").await;
        check_progress(&last, &format!("{running}.p600"), 0.6);
        drop(events);

        // From the last id: nothing seen is sent again; the next event is the next change.
        let mut resumed = Events::open(&api, job, Some(&last.id)).await;
        assert!(jobs.set_progress(job, 0.7).await.unwrap());
        check_progress(
            &resumed.expect("job.progress").await,
            &format!("{running}.p700"),
            0.7,
        );
        // From the `running` entry: the progress since then is news to that client.
        let mut from_entry = Events::open(&api, job, Some(&running.to_string())).await;
        check_progress(
            &from_entry.expect("job.progress").await,
            &format!("{running}.p700"),
            0.7,
        );

        let error = ErrorRecord {
            code: ErrorCode::Timeout,
            message: "late".into(),
            retryable: false,
        };
        assert!(jobs.fail(job, &error, 1).await.unwrap());
        let ids = history_ids(&api, job).await;
        for stream in [&mut resumed, &mut from_entry] {
            let failed = stream.expect("job.failed").await;
            check_history(&failed, ids[3], "failed: timeout: late", job, "failed");
            assert_eq!(failed.data["data"]["error"]["code"], "timeout");
            stream.expect_end().await;
        }
    }
}

#[tokio::test]
async fn a_final_job_sends_its_history_then_ends_and_nothing_more_is_a_204() {
    for api in apis().await {
        let job = job_in(&api, DEFAULT_PROJECT_ID).await;
        api.store
            .jobs()
            .cancel(job, "no longer needed")
            .await
            .unwrap();
        let ids = history_ids(&api, job).await;
        assert_eq!(ids.len(), 2);

        let mut events = Events::open(&api, job, None).await;
        check_history(
            &events.expect("job.queued").await,
            ids[0],
            "accepted",
            job,
            "cancelled",
        );
        check_history(
            &events.expect("job.cancelled").await,
            ids[1],
            "no longer needed",
            job,
            "cancelled",
        );
        events.expect_end().await;

        let mut rest = Events::open(&api, job, Some(&ids[0].to_string())).await;
        rest.expect("job.cancelled").await;
        rest.expect_end().await;

        // Nothing after the last event: 204, which stops an EventSource from reconnecting.
        let response = api
            .req(Method::GET, &format!("/v1/jobs/{job}/events"))
            .header("last-event-id", ids[1].to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{}", api.backend);
        assert_eq!(response.text().await.unwrap(), "");
    }
}

#[tokio::test]
async fn another_projects_job_is_the_404_of_get_and_bad_requests_are_refused() {
    let api = sqlite_api().await;
    let other = api.project("other").await;
    let theirs = job_in(&api, other).await;
    let mine = job_in(&api, DEFAULT_PROJECT_ID).await;
    for job in [theirs, Uuid::now_v7()] {
        let (status, get) = api.get(&format!("/v1/jobs/{job}")).await;
        let (events_status, events) = api.get(&format!("/v1/jobs/{job}/events")).await;
        assert_eq!((status, error_code(&get)), (404, "not_found"), "{get}");
        assert_eq!((events_status, &events), (status, &get));
    }

    // jobs:read is the scope it needs.
    let all_but: Scopes = Scope::ALL
        .into_iter()
        .filter(|s| *s != Scope::JobsRead)
        .collect();
    let token = api.token(DEFAULT_PROJECT_ID, all_but).await;
    let (status, body) =
        send(api.req_as(&token, Method::GET, &format!("/v1/jobs/{mine}/events"))).await;
    assert_eq!((status, error_code(&body)), (403, "insufficient_scope"));
    assert_eq!(body["error"]["details"]["scope"], "jobs:read");

    for bad in ["abc", "-1", "3.p2000", "3.p", "3.5"] {
        let (status, body) = send(
            api.req(Method::GET, &format!("/v1/jobs/{mine}/events"))
                .header("last-event-id", bad),
        )
        .await;
        assert_eq!((status, error_code(&body)), (400, "bad_request"), "{bad:?}");
        assert_eq!(
            body["error"]["details"]["header"], "Last-Event-ID",
            "{body}"
        );
    }
    let (status, body) = api.get("/v1/jobs/not-a-uuid/events").await;
    assert_eq!((status, error_code(&body)), (400, "bad_request"));
    // Another project's job with a bad header is still refused for the header only.
    let (status, _) = send(
        api.req(Method::GET, &format!("/v1/jobs/{theirs}/events"))
            .header("last-event-id", "x"),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_stream_outlives_the_request_timeout() {
    let timeout = Duration::from_millis(300);
    let api = sqlite_api_with(|s| s.api.request_timeout = timeout).await;
    let job = job_in(&api, DEFAULT_PROJECT_ID).await;
    let opened = Instant::now();
    let mut events = Events::open(&api, job, None).await;
    events.expect("job.queued").await;
    assert!(api.store.jobs().set_throttled(job).await.unwrap());
    // The stream reads the job again only after 0.5 s: this event comes past the timeout.
    events.expect("job.throttled").await;
    assert!(opened.elapsed() > timeout, "{:?}", opened.elapsed());
    api.store.jobs().cancel(job, "done").await.unwrap();
    events.expect("job.cancelled").await;
    events.expect_end().await;
}

#[tokio::test]
async fn a_database_failure_mid_stream_ends_the_stream_cleanly() {
    let api = sqlite_api().await;
    let job = job_in(&api, DEFAULT_PROJECT_ID).await;
    let mut events = Events::open(&api, job, None).await;
    events.expect("job.queued").await;
    // The API's own pool: every read the stream makes from now on fails.
    api.store.close().await;
    // `next` fails the test if the connection is cut rather than the body ended.
    events.expect_end().await;
}
