//! The distributed system on a real Redis Cluster (three primaries, three replicas, started
//! by the harness on loopback): jobs run end to end, and killing the primary that serves the
//! queue's slot mid-run loses nothing and submits nothing twice.

use std::time::Duration;

use byok_client::{GenerationRequest, JobStatus, ProviderId};
use serde_json::json;
use uuid::Uuid;

use crate::deploy::{DeployOptions, Deployment};

#[tokio::test]
async fn jobs_finish_on_a_redis_cluster_whose_queue_primary_is_killed_mid_run() {
    let Some(mut d) = Deployment::distributed_on_cluster(DeployOptions {
        render_time: Duration::from_secs(3),
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    d.put_credentials(user, "runway", json!({ "api_key": "sim_cluster_0001" }))
        .await;
    let request = |i: usize| GenerationRequest {
        prompt: Some(format!("harbour at dusk, take {i}")),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    };
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(d.submit(&request(i)).await);
    }
    // Every job is at the provider, its queue item held by a worker, when the primary
    // serving the namespace's slot dies; its replica takes over within seconds.
    let polling = d
        .wait_until(&ids, Duration::from_secs(30), |jobs| {
            jobs.iter().all(|j| j.provider_job_id.is_some())
        })
        .await;
    assert!(polling.iter().all(|j| j.status == JobStatus::Running));
    let cluster = d.cluster.as_mut().expect("a cluster deployment");
    let primary = cluster
        .primary_of("{byok-e2e}:jobs")
        .expect("the slot's primary");
    cluster.kill(primary);
    assert!(
        cluster.wait_healthy(Duration::from_secs(30)),
        "a replica took over"
    );
    // A job enqueued after the failover runs too.
    ids.push(d.submit(&request(10)).await);
    let jobs = d.wait_all_final(&ids, Duration::from_secs(90)).await;
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Succeeded),
        "{:?}\n{}\n{}",
        jobs.iter().map(|j| j.status).collect::<Vec<_>>(),
        d.log_tail("worker-0"),
        d.log_tail("api")
    );
    assert_eq!(
        d.sim.stats().await.runway.totals.accepted,
        ids.len() as u64,
        "the simulator saw exactly one submit per job"
    );
}
