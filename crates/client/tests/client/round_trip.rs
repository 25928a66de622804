//! Every method, typed, against the real API: what goes in comes back.

use std::time::Duration;

use byok_client::{
    ApiErrorCode, ClientError, CredentialCheckResult, GenerationRequest, IdempotencyKey, JobStatus,
    ListJobs, ProviderId, PutCredentials,
};
use futures::StreamExt as _;
use serde_json::json;
use uuid::Uuid;

use crate::{TestApi, apis};

const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

fn runway(user: Uuid, prompt: &str) -> GenerationRequest {
    GenerationRequest {
        prompt: Some(prompt.to_owned()),
        duration_seconds: Some(5),
        metadata: json!({ "scene": prompt }),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    }
}

#[tokio::test]
async fn every_method_round_trips_typed() {
    for api in apis().await {
        round_trip(&api).await;
    }
}

async fn round_trip(api: &TestApi) {
    let client = api.client();
    let backend = api.backend;

    // The listing, typed down to the models.
    let listing = client.providers().await.unwrap();
    let runway_listing = listing
        .providers
        .iter()
        .find(|p| p.id == "runway")
        .unwrap_or_else(|| panic!("{backend}: {listing:?}"));
    assert!(runway_listing.models.iter().any(|m| m.id == "gen4.5"));
    assert_eq!(runway_listing.credential_fields[0].name, "api_key");
    assert!(runway_listing.capabilities.text_to_video);

    // Keys: stored after the provider's check, read, listed, re-checked.
    let user = Uuid::new_v4();
    let stored = client
        .put_credentials(
            user,
            "runway",
            &PutCredentials::new(json!({ "api_key": "sim_client_round_trip" })),
        )
        .await
        .unwrap();
    assert!(stored.connected && stored.is_valid, "{backend}: {stored:?}");
    assert!(stored.validated_at.is_some());
    let hint = stored.credential_hint.clone().unwrap();
    assert!(
        !hint.contains("client_round"),
        "a hint, not the key: {hint}"
    );
    assert_eq!(
        client.get_credentials(user, "runway").await.unwrap(),
        stored
    );
    let unchecked = client
        .put_credentials(
            user,
            "fal",
            &PutCredentials::new(json!({ "api_key": "sim_unchecked" })).without_validation(),
        )
        .await
        .unwrap();
    assert_eq!(unchecked.validated_at, None, "{unchecked:?}");
    let listed = client.list_credentials(user).await.unwrap();
    assert_eq!(listed.user_id, user);
    assert_eq!(listed.providers.len(), listing.providers.len());
    let connected: Vec<&str> = listed
        .providers
        .iter()
        .filter(|s| s.connected)
        .map(|s| s.provider.as_str())
        .collect();
    assert_eq!(connected, ["runway", "fal"], "{backend}");
    let test = client.test_credentials(user, "runway").await.unwrap();
    assert_eq!(test.check.result, CredentialCheckResult::Valid);
    assert_eq!(test.summary.provider, "runway");

    // A job with a key, replayed by the same key.
    let key = IdempotencyKey::random();
    let request = runway(user, "a lighthouse at dusk");
    let enqueued = client.create_job(&request, Some(&key)).await.unwrap();
    assert!(!enqueued.replayed);
    assert_eq!(enqueued.job.request, request);
    assert_eq!(
        enqueued.job.metadata,
        json!({ "scene": "a lighthouse at dusk" })
    );
    let again = client.create_job(&request, Some(&key)).await.unwrap();
    assert!(again.replayed, "{backend}");
    assert_eq!(again.job.id, enqueued.job.id);
    let id = enqueued.job.id;

    // Its events until the end, then the final job by polling: the same.
    let mut events = client.job_events(id, None).await.unwrap();
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        assert_eq!(event.job.id, id);
        seen.push(event);
    }
    let last = seen
        .last()
        .unwrap_or_else(|| panic!("{backend}: no events"));
    assert_eq!(last.event_type, "job.succeeded", "{backend}: {seen:?}");
    assert_eq!(seen[0].event_type, "job.queued");
    let done = client.wait_for_job(id, POLL, WAIT).await.unwrap();
    assert_eq!(done.status, JobStatus::Succeeded, "{backend}: {done:?}");
    assert_eq!(done.id, last.job.id);
    // Resuming after the last event: nothing follows a final job.
    let after = client.job_events(id, Some(&last.id)).await.unwrap();
    assert_eq!(after.count().await, 0);

    // The video, to a file and as a stream: the bytes the job reports.
    let result = done.result.clone().unwrap();
    assert_eq!(result.video_url, format!("/v1/jobs/{id}/video"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.mp4");
    let size = client.download_video(id, &path).await.unwrap();
    assert_eq!(size, result.stored.bytes);
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[4..8], b"ftyp", "an MP4");
    assert!(!dir.path().join("out.mp4.part").exists());
    let mut stream = client.video_stream(id).await.unwrap();
    assert_eq!(stream.content_length(), Some(size));
    let mut streamed = Vec::new();
    while let Some(chunk) = stream.next().await {
        streamed.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(streamed, file);

    // A second job without a key, and the user's jobs page by page, newest first.
    let second = client
        .create_job(&runway(user, "a second take"), None)
        .await
        .unwrap();
    assert!(!second.replayed);
    client
        .wait_for_job(second.job.id, POLL, WAIT)
        .await
        .unwrap();
    let query = ListJobs {
        limit: Some(1),
        ..ListJobs::default()
    };
    let first_page = client.list_jobs(user, &query).await.unwrap();
    assert_eq!(first_page.user_id, user);
    assert_eq!(first_page.jobs[0].id, second.job.id);
    let next = query.after(&first_page).expect("a second page");
    let second_page = client.list_jobs(user, &next).await.unwrap();
    assert_eq!(second_page.jobs[0].id, id);
    assert_eq!(next.after(&second_page), None, "{backend}: the last page");
    let queued = ListJobs {
        status: Some(JobStatus::Queued),
        ..ListJobs::default()
    };
    assert!(
        client
            .list_jobs(user, &queued)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );

    // A job cancelled while the provider renders it; cancelling it again is a conflict.
    let slow = byok_sim::SimConfig {
        render_time: Duration::from_secs(60),
        ..api.sim.config()
    };
    api.sim.set_config(slow).unwrap();
    let long = client
        .create_job(&runway(user, "a long take"), None)
        .await
        .unwrap();
    let cancelled = client.cancel_job(long.job.id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let error = cancelled.error.unwrap();
    assert_eq!(error.code, byok_client::ErrorCode::Cancelled);
    let conflict = client.cancel_job(long.job.id).await.unwrap_err();
    assert_eq!(conflict.code(), Some(ApiErrorCode::Conflict), "{conflict}");
    assert_eq!(conflict.details()["status"], "cancelled");
    // The video of a job that did not succeed: a 404 saying what the job is.
    let no_video = client.video_stream(long.job.id).await.unwrap_err();
    assert_eq!(no_video.code(), Some(ApiErrorCode::NotFound), "{no_video}");
    let waited = client.wait_for_job(long.job.id, POLL, WAIT).await.unwrap();
    assert_eq!(waited.status, JobStatus::Cancelled);

    // Deleting a key: gone, and deleting it again is a 404.
    client.delete_credentials(user, "fal").await.unwrap();
    let gone = client.get_credentials(user, "fal").await.unwrap_err();
    assert_eq!(gone.code(), Some(ApiErrorCode::NotFound), "{gone}");
    let twice = client.delete_credentials(user, "fal").await.unwrap_err();
    assert_eq!(twice.code(), Some(ApiErrorCode::NotFound));

    // Projects: for operator tokens only.
    let admin = api.builder(&api.token("admin").await).build().unwrap();
    let projects = admin.projects().await.unwrap();
    assert!(
        projects.projects.iter().any(|p| p.name == "default"),
        "{projects:?}"
    );
    let refused = client.projects().await.unwrap_err();
    assert_eq!(refused.code(), Some(ApiErrorCode::InsufficientScope));
    assert_eq!(refused.details()["scope"], "admin");
}

#[tokio::test]
async fn waiting_gives_up_with_the_jobs_last_state() {
    let api = crate::sqlite_api_with(|_| {}).await;
    let client = api.client();
    let user = Uuid::new_v4();
    client
        .put_credentials(
            user,
            "runway",
            &PutCredentials::new(json!({ "api_key": "sim_client_wait" })),
        )
        .await
        .unwrap();
    api.sim
        .set_config(byok_sim::SimConfig {
            render_time: Duration::from_secs(60),
            ..api.sim.config()
        })
        .unwrap();
    let job = client
        .create_job(&runway(user, "never finished"), None)
        .await
        .unwrap()
        .job;
    match client
        .wait_for_job(job.id, POLL, Duration::from_millis(300))
        .await
    {
        Err(ClientError::WaitTimedOut { job: last, waited }) => {
            assert_eq!(last.id, job.id);
            assert!(!last.status.is_terminal(), "{last:?}");
            assert_eq!(waited, Duration::from_millis(300));
        }
        other => panic!("{other:?}"),
    }
}
