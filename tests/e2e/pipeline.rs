//! The generation pipeline end to end: producers enqueue over HTTP, worker
//! processes run the jobs against the provider simulator, and the
//! guarantees hold while workers are killed, stopped and rate limited.

use std::time::{Duration, Instant};

use byok_client::{
    ApiErrorCode, ErrorCode, GenerationRequest, JobStatus, JobView, ProviderId, PutCredentials,
};
use serde_json::json;
use uuid::Uuid;

use crate::deploy::{DeployOptions, Deployment};
use crate::helpers::poll_until;

fn runway_job(user: Uuid, prompt: &str) -> GenerationRequest {
    GenerationRequest {
        prompt: Some(prompt.to_owned()),
        duration_seconds: Some(5),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    }
}

/// A request for `model` of `provider` (built in, or declared by the deployment).
fn job_on(user: Uuid, provider: &str, model: &str, prompt: &str) -> GenerationRequest {
    GenerationRequest {
        prompt: Some(prompt.to_owned()),
        ..GenerationRequest::new(user, byok_client::provider_id(provider).unwrap(), model)
    }
}

async fn enqueue_many(d: &Deployment, requests: Vec<GenerationRequest>) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for request in &requests {
        ids.push(d.submit(request).await);
    }
    ids
}

fn statuses(jobs: &[JobView]) -> Vec<JobStatus> {
    jobs.iter().map(|j| j.status).collect()
}

#[tokio::test]
async fn two_workers_keep_one_keys_window_and_use_its_quota() {
    let Some(d) = Deployment::distributed(DeployOptions {
        runway_per_minute: 6,
        render_time: Duration::from_millis(100),
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    let key = "sim_rate_limited_key_0001";
    d.put_credentials(user, "runway", json!({ "api_key": key }))
        .await;
    let _ids = enqueue_many(
        &d,
        (0..20)
            .map(|i| runway_job(user, &format!("shot {i}")))
            .collect(),
    )
    .await;

    // Two full windows and a bit: enough to see both the cap and the use.
    let started = Instant::now();
    let thirteen_submits = poll_until(Duration::from_secs(200), async || {
        let stats = d.sim.stats().await;
        let submits = stats
            .runway
            .for_api_key(key)
            .map_or(0, |k| k.submit_times_ms.len());
        (submits >= 13).then_some(stats)
    })
    .await;
    let stats = match thirteen_submits {
        Some(stats) => stats,
        None => d.sim.stats().await,
    };
    let times = stats
        .runway
        .for_api_key(key)
        .expect("the key submitted")
        .submit_times_ms
        .clone();
    assert!(
        times.len() >= 13,
        "only {} submits in {:?}",
        times.len(),
        started.elapsed()
    );
    let worst = stats
        .runway
        .for_api_key(key)
        .unwrap()
        .max_submits_in_window(60_000);
    assert!(
        worst <= 6,
        "a 60-second window at the simulator's clock held {worst} submits: {times:?}"
    );
    let first = times[0];
    let in_first_61s = times.iter().filter(|t| **t - first < 61_000).count();
    assert!(
        in_first_61s >= 5,
        "the quota was used: {in_first_61s} submits in the first 61 s"
    );
    assert!(
        stats.runway.totals.throttled == 0,
        "the limiter kept every submit under Runway's limit"
    );
}

/// Enqueues `bodies` (of `provider`, whose key is `key`), SIGKILLs worker 0 while every job
/// polls, and checks that all succeed with their videos and that the simulator saw one submit
/// per job (`accepted` reads its count for the provider).
async fn kill_a_worker_mid_poll(
    provider: &str,
    key: &str,
    bodies: impl Fn(Uuid) -> Vec<GenerationRequest>,
    accepted: fn(&byok_sim::Stats) -> u64,
) {
    let Some(mut d) = Deployment::distributed(DeployOptions {
        render_time: Duration::from_secs(6),
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    d.put_credentials(user, provider, json!({ "api_key": key }))
        .await;
    let ids = enqueue_many(&d, bodies(user)).await;
    let polling = d
        .wait_until(&ids, Duration::from_secs(30), |jobs| {
            jobs.iter().all(|j| j.provider_job_id.is_some())
        })
        .await;
    assert!(
        polling.iter().all(|j| j.status == JobStatus::Running),
        "all were polling: {:?}",
        statuses(&polling)
    );

    // Worker 0 dies holding its share (SIGKILL: nothing handed back); worker 1 takes them
    // over after the visibility timeout and polls on from the recorded provider job ids.
    d.kill_worker(0).await;
    let jobs = d.wait_all_final(&ids, Duration::from_secs(60)).await;
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Succeeded),
        "{:?}\n{}",
        statuses(&jobs),
        d.log_tail("worker-1")
    );
    assert_eq!(
        accepted(&d.sim.stats().await),
        ids.len() as u64,
        "the simulator saw exactly one submit per job"
    );
    for id in &ids {
        let video = d.dir.path().join("videos").join(format!("{id}.mp4"));
        assert!(
            std::fs::metadata(&video)
                .map(|m| m.len() > 0)
                .unwrap_or(false),
            "{video:?}"
        );
    }
}

#[tokio::test]
async fn a_worker_killed_while_jobs_poll_loses_nothing_and_submits_nothing_twice() {
    kill_a_worker_mid_poll(
        "runway",
        "sim_kill_test",
        |user| {
            (0..10)
                .map(|i| runway_job(user, &format!("take {i}")))
                .collect()
        },
        |stats| stats.runway.totals.accepted,
    )
    .await;
}

#[tokio::test]
async fn a_job_on_a_declared_provider_survives_a_worker_sigkill_mid_poll() {
    kill_a_worker_mid_poll(
        "luma",
        "sim_luma_kill_test",
        |user| {
            (0..4)
                .map(|i| GenerationRequest {
                    duration_seconds: Some(5),
                    ..job_on(user, "luma", "ray-3.2", &format!("a declared take {i}"))
                })
                .collect()
        },
        |stats| stats.luma.totals.accepted,
    )
    .await;
}

#[tokio::test]
async fn sigterm_stops_a_worker_within_its_grace_and_the_other_finishes_its_jobs() {
    let Some(mut d) = Deployment::distributed(DeployOptions {
        render_time: Duration::from_secs(3),
        shutdown_grace: "5s",
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_sigterm_test" }))
        .await;
    let ids = enqueue_many(
        &d,
        (0..8)
            .map(|i| runway_job(user, &format!("scene {i}")))
            .collect(),
    )
    .await;
    d.wait_until(&ids, Duration::from_secs(30), |jobs| {
        jobs.iter()
            .filter(|j| j.status == JobStatus::Running)
            .count()
            >= 4
    })
    .await;

    let (took, status) = d.terminate_worker(0, Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "clean exit: {status:?}\n{}",
        d.log_tail("worker-0")
    );
    assert!(
        took < Duration::from_secs(5) + Duration::from_secs(2),
        "exited within the grace period: {took:?}"
    );

    let jobs = d.wait_all_final(&ids, Duration::from_secs(60)).await;
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Succeeded),
        "{:?}\n{}",
        statuses(&jobs),
        d.log_tail("worker-1")
    );
    assert_eq!(
        d.sim.stats().await.runway.totals.accepted,
        8,
        "nothing submitted twice"
    );
}

#[tokio::test]
async fn jobs_parked_at_a_slow_provider_do_not_hold_the_slots() {
    let Some(d) = Deployment::distributed(DeployOptions {
        workers: 1,
        concurrency: 2,
        render_time: Duration::from_secs(60),
        poll_interval: "1s",
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_slow_provider" }))
        .await;
    let other = Uuid::new_v4();
    let account = d.sim.new_service_account("e2e-project").unwrap();
    d.put_credentials(other, "veo", json!({ "service_account": account }))
        .await;

    // As many jobs as the worker has slots, all waiting at the slow provider.
    let parked = enqueue_many(
        &d,
        vec![runway_job(user, "slow one"), runway_job(user, "slow two")],
    )
    .await;
    let jobs = d
        .wait_until(&parked, Duration::from_secs(20), |jobs| {
            jobs.iter().all(|j| j.status == JobStatus::Running)
        })
        .await;
    assert_eq!(statuses(&jobs), [JobStatus::Running, JobStatus::Running]);

    let enqueued = Instant::now();
    let fresh = d
        .submit(&GenerationRequest {
            duration_seconds: Some(4),
            ..job_on(other, "veo", "veo-3.1-fast-generate-001", "a fox in snow")
        })
        .await;
    let started = d
        .wait_until(&[fresh], Duration::from_secs(1), |jobs| {
            jobs[0].provider_job_id.is_some()
        })
        .await;
    assert!(
        started[0].provider_job_id.is_some(),
        "the fresh job started within a second: {:?}",
        started[0]
    );
    assert!(enqueued.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn the_queue_and_redis_hold_ids_only_never_key_material() {
    let Some(d) = Deployment::distributed(DeployOptions::default()).await else {
        return;
    };
    let user = Uuid::new_v4();
    let api_key = "sim_secret_material_4f3c2b1a0f9e8d7c";
    d.put_credentials(user, "runway", json!({ "api_key": api_key }))
        .await;
    let account = d.sim.new_service_account("secret-project").unwrap();
    let private_key_line = account["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    d.put_credentials(user, "veo", json!({ "service_account": account }))
        .await;
    let ids = enqueue_many(
        &d,
        vec![
            runway_job(user, "a"),
            job_on(user, "veo", "veo-3.1-generate-001", "b"),
        ],
    )
    .await;
    // While they are in flight, and after, nothing in Redis is a secret.
    for _ in 0..2 {
        let dump = dump_namespace(&d).await;
        assert!(
            !dump.contains(api_key) && !dump.contains("sim_secret_material"),
            "API key in Redis"
        );
        assert!(!dump.contains(&private_key_line), "private key in Redis");
        for payload in payloads(&dump) {
            let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
            assert_eq!(
                value
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>()),
                Some(vec!["job_id".to_owned()]),
                "{payload}"
            );
        }
        d.wait_all_final(&ids, Duration::from_secs(30)).await;
    }
}

/// Every key of the deployment's namespace and its contents, as text.
async fn dump_namespace(d: &Deployment) -> String {
    let url = d.env_value("REDIS_URL");
    let namespace = d.env_value("BYOK__QUEUE__NAMESPACE");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{namespace}}}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let value: redis::Value = match kind.as_str() {
            "stream" => redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query_async(&mut conn)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "string" => redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            other => panic!("unexpected key type {other} for {key}"),
        };
        out.push_str(&format!("{key} {value:?}\n"));
    }
    out
}

/// The JSON payloads (`{"job_id":…}`) found in a dump.
fn payloads(dump: &str) -> Vec<String> {
    dump.match_indices("{\\\"job_id\\\"")
        .filter_map(|(at, _)| {
            dump[at..]
                .find('}')
                .map(|end| dump[at..=at + end].replace("\\\"", "\""))
        })
        .collect()
}

#[tokio::test]
async fn the_embedded_shape_runs_the_same_lifecycle() {
    let d = Deployment::embedded(DeployOptions {
        render_time: Duration::from_millis(300),
        ..DeployOptions::default()
    })
    .await;
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_embedded_key" }))
        .await;
    let account = d.sim.new_service_account("embedded-project").unwrap();
    d.put_credentials(user, "veo", json!({ "service_account": account }))
        .await;
    let throttled_user = Uuid::new_v4();
    d.put_credentials(
        throttled_user,
        "runway",
        json!({ "api_key": "sim_throttled_embedded" }),
    )
    .await;

    let ok = d.submit(&runway_job(user, "a calm sea")).await;
    let veo = d
        .submit(&GenerationRequest {
            duration_seconds: Some(4),
            ..job_on(user, "veo", "veo-3.1-generate-001", "a calm sea")
        })
        .await;
    let moderated = d
        .submit(&runway_job(user, "please sim:moderate this"))
        .await;
    let throttled = d.submit(&runway_job(throttled_user, "a storm")).await;
    let jobs = d
        .wait_all_final(&[ok, veo, moderated, throttled], Duration::from_secs(60))
        .await;
    use JobStatus::{Failed, Succeeded};
    assert_eq!(
        statuses(&jobs),
        [Succeeded, Succeeded, Failed, Succeeded],
        "{}",
        d.log_tail("run")
    );
    assert_eq!(
        jobs[2].error.as_ref().map(|e| e.code),
        Some(ErrorCode::ContentRejected)
    );
    // The throttled key met one 429, waited it out, and the submit that went
    // through was still the job's first attempt.
    let throttled_key = d
        .sim
        .stats()
        .await
        .runway
        .for_api_key("sim_throttled_embedded")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (
            throttled_key.counters.throttled,
            throttled_key.counters.accepted
        ),
        (1, 1),
        "{throttled_key:?}"
    );
    assert_eq!(
        jobs[3].attempts, 1,
        "waiting out a 429 is not an attempt: {:?}",
        jobs[3]
    );

    let bytes = d.video(ok).await;
    assert_eq!(&bytes[4..8], b"ftyp", "an MP4 came back");
    assert_eq!(
        jobs[0].result.as_ref().unwrap().stored.bytes,
        bytes.len() as u64
    );
    assert!(
        d.dir.path().join("data/byok.db").is_file(),
        "everything in one SQLite file"
    );
}

#[tokio::test]
async fn aggregator_jobs_keep_their_videos_usage_and_wait_out_a_429() {
    let d = Deployment::embedded(DeployOptions {
        render_time: Duration::from_millis(300),
        ..DeployOptions::default()
    })
    .await;
    let user = Uuid::new_v4();
    d.put_credentials(
        user,
        "replicate",
        json!({ "api_key": "sim_throttled_replicate_embedded" }),
    )
    .await;
    d.put_credentials(user, "fal", json!({ "api_key": "sim_fal_embedded" }))
        .await;
    let replicate = d
        .submit(&job_on(
            user,
            "replicate",
            "bytedance/seedance-2.0-fast",
            "a fox in fresh snow",
        ))
        .await;
    let fal = d
        .submit(&job_on(user, "fal", "luma-ray-2-flash", "waves at dusk"))
        .await;
    let jobs = d
        .wait_all_final(&[replicate, fal], Duration::from_secs(60))
        .await;
    assert_eq!(
        statuses(&jobs),
        [JobStatus::Succeeded, JobStatus::Succeeded],
        "{}",
        d.log_tail("run")
    );
    // Replicate's own compute figure (`metrics.predict_time`) is kept on the job.
    let compute_ms = jobs[0]
        .result
        .as_ref()
        .and_then(|r| r.stored.provider_usage.compute_ms)
        .unwrap_or_else(|| panic!("no compute figure: {:?}", jobs[0]));
    assert!(compute_ms > 0, "{:?}", jobs[0]);
    // The throttled token met one 429 whose wait is only in its text ("resets in ~2s"),
    // waited it out through the limiter, and its one submit was the job's first attempt.
    let key = d
        .sim
        .stats()
        .await
        .replicate
        .for_api_key("sim_throttled_replicate_embedded")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (key.counters.throttled, key.counters.accepted),
        (1, 1),
        "{key:?}"
    );
    assert_eq!(jobs[0].attempts, 1, "{:?}", jobs[0]);
    for id in [replicate, fal] {
        let bytes = d.video(id).await;
        assert_eq!(&bytes[4..8], b"ftyp", "an MP4 came back");
    }
}

/// The shipped definitions, loaded by `byok run` from `providers.definitions_dir`, are
/// providers like the built-in ones: listed with their forms and models, keys checked and
/// stored, requests validated against their catalogues, jobs run to a stored video and
/// cancelled at the provider.
#[tokio::test]
async fn declared_providers_are_listed_keyed_validated_run_and_cancelled() {
    let d = Deployment::embedded(DeployOptions {
        render_time: Duration::from_millis(300),
        ..DeployOptions::default()
    })
    .await;
    let client = d.client();

    let listed = client.providers().await.unwrap();
    let ids: Vec<&str> = listed.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "veo",
            "runway",
            "stability",
            "fal",
            "replicate",
            "luma",
            "synthesia"
        ]
    );
    let luma = &listed.providers[5];
    assert_eq!(luma.display_name, "Luma Agents");
    assert_eq!(luma.status, byok_client::ModelStatus::Available);
    assert_eq!(luma.credential_fields[0].name, "api_key");
    assert!(luma.credential_fields[0].secret);
    assert_eq!(luma.models[0].id, "ray-3.2");
    assert_eq!(listed.providers[6].models[0].id, "anna");

    let user = Uuid::new_v4();
    let keys = client.list_credentials(user).await.unwrap();
    assert_eq!(keys.providers.len(), 7, "{keys:?}");

    // A key the provider refuses is not stored, and the answer does not repeat it.
    let refused = client
        .put_credentials(
            user,
            "synthesia",
            &PutCredentials::new(json!({ "api_key": "not-a-sim-key" })),
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ApiErrorCode::CredentialsInvalid),
        "{refused}"
    );
    assert!(
        !format!("{refused:?}").contains("not-a-sim-key"),
        "{refused:?}"
    );
    let missing = client.get_credentials(user, "synthesia").await.unwrap_err();
    assert_eq!(missing.code(), Some(ApiErrorCode::NotFound));

    d.put_credentials(user, "synthesia", json!({ "api_key": "sim_synthesia_e2e" }))
        .await;
    d.put_credentials(user, "luma", json!({ "api_key": "sim_luma_e2e" }))
        .await;
    let summary = client.get_credentials(user, "luma").await.unwrap();
    assert_eq!(
        summary.credential_hint.as_deref(),
        Some("sim_…_e2e"),
        "{summary:?}"
    );

    // The catalogue of the definition is the one enforced.
    let lighthouse = job_on(user, "luma", "ray-3.2", "a lighthouse");
    let too_long = client
        .create_job(
            &GenerationRequest {
                duration_seconds: Some(7),
                ..lighthouse.clone()
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), Some(ApiErrorCode::InvalidRequest));
    assert_eq!(too_long.details()["field"], "duration_seconds");

    let luma_job = d
        .submit(&GenerationRequest {
            prompt: Some("a lighthouse at dusk".into()),
            duration_seconds: Some(5),
            aspect_ratio: Some("9:16".into()),
            ..lighthouse
        })
        .await;
    let synthesia_job = d
        .submit(&job_on(
            user,
            "synthesia",
            "mia",
            "Welcome to the quarterly update.",
        ))
        .await;
    let jobs = d
        .wait_all_final(&[luma_job, synthesia_job], Duration::from_secs(60))
        .await;
    for job in &jobs {
        assert_eq!(
            job.status,
            JobStatus::Succeeded,
            "{job:?}\n{}",
            d.log_tail("run")
        );
        assert_eq!(job.request.provider.as_str(), job.provider);
        let bytes = d.video(job.id).await;
        assert_eq!(&bytes[4..8], b"ftyp", "an MP4");
    }
    let luma_stats = d.sim.stats().await.luma;
    assert_eq!(luma_stats.totals.accepted, 1);

    // Synthesia has a cancel (a delete of the video); it reaches the simulator.
    d.sim
        .set_config(byok_sim::SimConfig {
            render_time: Duration::from_secs(60),
            ..d.sim.config()
        })
        .unwrap();
    let long = d
        .submit(&job_on(user, "synthesia", "anna", "A long script."))
        .await;
    d.wait_until(&[long], Duration::from_secs(20), |jobs| {
        jobs[0].provider_job_id.is_some()
    })
    .await;
    let cancelled = client.cancel_job(long).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let reached = poll_until(Duration::from_secs(20), async || {
        (d.sim.stats().await.synthesia.totals.cancels > 0).then_some(())
    })
    .await;
    assert!(reached.is_some(), "{}", d.log_tail("run"));
}
