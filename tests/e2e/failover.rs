//! Explicit failover end to end: real `byok` processes on PostgreSQL + Redis with two
//! workers and the simulator. A job moves to its next fallback only when the provider never
//! accepted it and for a reason another provider can fix; every move is on the job.

use std::time::Duration;

use byok_client::{ErrorCode, Fallback, GenerationRequest, JobStatus, ProviderId, PutCredentials};
use serde_json::json;
use uuid::Uuid;

use crate::deploy::{DeployOptions, Deployment};

/// Runway gen4.5, falling back to Luma Ray 2 Flash at fal.
fn job(user: Uuid, prompt: &str) -> GenerationRequest {
    GenerationRequest {
        prompt: Some(prompt.to_owned()),
        duration_seconds: Some(5),
        fallbacks: vec![Fallback::new(ProviderId::FAL, "luma-ray-2-flash")],
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_move_on_only_before_acceptance_and_for_reasons_a_fallback_fixes() {
    let Some(d) = Deployment::distributed(DeployOptions {
        render_time: Duration::from_millis(300),
        // The simulator's 429 asks for 2 s; past 1 s a job moves on.
        extra_env: vec![("BYOK__WORKER__FALLBACK_AFTER_BLOCK".into(), "1s".into())],
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let client = d.client();
    let (dead_key, blocked, accepted) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // A Runway key the provider rejects (stored unchecked, as an app may), a key it keeps
    // throttling, and a good one; each user has a good fal key.
    let unchecked = PutCredentials {
        credentials: json!({ "api_key": "key_runway_revoked_0001" }),
        validate: false,
    };
    client
        .put_credentials(dead_key, "runway", &unchecked)
        .await
        .unwrap();
    d.put_credentials(
        blocked,
        "runway",
        json!({ "api_key": "sim_throttled_failover" }),
    )
    .await;
    d.put_credentials(accepted, "runway", json!({ "api_key": "sim_failover_ok" }))
        .await;
    for (n, user) in [dead_key, blocked, accepted].iter().enumerate() {
        d.put_credentials(
            *user,
            "fal",
            json!({ "api_key": format!("sim_fal_failover_{n}") }),
        )
        .await;
    }

    let moved_from_dead = d.submit(&job(dead_key, "a lighthouse")).await;
    let moved_from_blocked = d.submit(&job(blocked, "a harbour")).await;
    // Accepted by Runway, then refused by its moderation: no fallback after acceptance, and
    // none for `content_rejected` (another provider would be asked to make the same video).
    let rejected = d.submit(&job(accepted, "sim:moderate a storm")).await;
    let jobs = d
        .wait_all_final(
            &[moved_from_dead, moved_from_blocked, rejected],
            Duration::from_secs(60),
        )
        .await;

    let dead = &jobs[0];
    assert_eq!(dead.status, JobStatus::Succeeded, "{dead:?}");
    assert_eq!(
        (dead.provider.as_str(), dead.model.as_str()),
        ("fal", "luma-ray-2-flash")
    );
    assert_eq!(dead.route.len(), 1, "{dead:?}");
    assert_eq!(
        (
            dead.route[0].provider.as_str(),
            dead.route[0].model.as_str(),
            dead.route[0].reason.as_str()
        ),
        ("runway", "gen4.5", "credentials_invalid"),
        "{dead:?}"
    );
    // The job's request is now the fallback's, with none left.
    assert_eq!(dead.request.provider, ProviderId::FAL);
    assert!(dead.request.fallbacks.is_empty());

    let blocked_job = &jobs[1];
    assert_eq!(blocked_job.status, JobStatus::Succeeded, "{blocked_job:?}");
    assert_eq!(blocked_job.provider, "fal");
    assert_eq!(
        blocked_job.route[0].reason, "key_blocked",
        "{blocked_job:?}"
    );

    let rejected_job = &jobs[2];
    assert_eq!(rejected_job.status, JobStatus::Failed, "{rejected_job:?}");
    assert_eq!(
        rejected_job.error.as_ref().map(|e| e.code),
        Some(ErrorCode::ContentRejected),
        "{rejected_job:?}"
    );
    assert_eq!(rejected_job.provider, "runway");
    assert!(rejected_job.route.is_empty(), "{rejected_job:?}");

    let stats = d.sim.stats().await;
    let runway = |key: &str| {
        stats
            .runway
            .for_api_key(key)
            .map(|k| k.counters.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        runway("sim_failover_ok").submits,
        1,
        "one submit, never resent"
    );
    assert_eq!(runway("sim_failover_ok").accepted, 1);
    assert_eq!(runway("sim_throttled_failover").accepted, 0);
    let fal = |n: usize| {
        stats
            .fal
            .for_api_key(&format!("sim_fal_failover_{n}"))
            .map_or(0, |k| k.counters.accepted)
    };
    assert_eq!(
        (fal(0), fal(1), fal(2)),
        (1, 1, 0),
        "the fallback ran on each user's own fal key"
    );

    // Each move is counted by the worker that made it.
    let mut moves = 0;
    for url in &d.worker_metrics {
        let text = d.http.get(url).send().await.unwrap().text().await.unwrap();
        for line in text.lines() {
            if line.starts_with("byok_job_fallbacks_total{from=\"runway\"") {
                moves += line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
            }
        }
    }
    assert_eq!(
        moves, 2,
        "one move each for the dead key and the blocked one"
    );
}
