//! The chaos suite (docs/chaos.md): a distributed byok — `byok api`, three `byok worker`
//! processes, PostgreSQL and Redis with AOF (or a Redis Cluster) of the suite's own, the
//! provider simulator — under a steady stream of jobs while a driver, at random times from a
//! seed, SIGKILLs and restarts workers and the API, restarts Redis (or kills the primary
//! serving the queue so its replica takes over) and stops PostgreSQL for a while. At the end
//! every accepted job is final, none lost, none submitted twice, no key over its rate limit,
//! no webhook event missing.
//!
//! `cargo test --workspace` runs the short form (35 s of faults per test, short outages).
//! `BYOK_CHAOS_SECONDS=600` is the long form (`just chaos`): that many seconds of faults,
//! PostgreSQL stopped 10–30 s at a time. `BYOK_CHAOS_SEED=<n>` replays a run's choices.

// The e2e suite's deployment harness, shared: this suite uses only part of it.
#[allow(dead_code)]
#[path = "../e2e/deploy.rs"]
mod deploy;
#[allow(dead_code)]
#[path = "../e2e/helpers.rs"]
mod helpers;

mod checks;
mod driver;
mod faults;
mod plan;
mod receiver;
mod system;

use std::time::{Duration, Instant};

use byok_client::{Client, EventType, NewWebhookEndpoint, RetryPolicy};
use serde_json::json;
use uuid::Uuid;

use crate::checks::{Run, User};
use crate::deploy::DeployOptions;
use crate::driver::Driver;
use crate::plan::Plan;
use crate::receiver::Receiver;
use crate::system::{System, Topology};

/// Runway's per-minute limit per key: small, so that the bursty user's jobs wait for their
/// key's window and the limiter is tested under every fault.
const PER_MINUTE: u32 = 6;

/// Users submitting jobs (the last one in bursts).
const USERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_redis_deployment_loses_nothing_under_faults() {
    chaos(Topology::SingleRedis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_deployment_loses_nothing_under_faults() {
    chaos(Topology::Cluster).await;
}

fn options() -> DeployOptions {
    DeployOptions {
        workers: 3,
        concurrency: 16,
        render_time: Duration::from_secs(2),
        runway_per_minute: PER_MINUTE,
        poll_interval: "500ms",
        shutdown_grace: "5s",
        extra_env: vec![
            // A submit left marked by a dead worker is decided after twice this plus 10 s.
            ("BYOK__WORKER__REQUEST_TIMEOUT".into(), "5s".into()),
            (
                "BYOK__WEBHOOKS__RETRY_SCHEDULE".into(),
                "1s, 2s, 5s, 10s, 10s, 10s".into(),
            ),
        ],
        ..DeployOptions::default()
    }
}

async fn chaos(topology: Topology) {
    let plan = Plan::from_env();
    println!(
        "chaos: {} — seed {} (replay: BYOK_CHAOS_SEED={}), {} s of faults",
        topology.describe(),
        plan.seed,
        plan.seed,
        plan.fault_phase.as_secs()
    );
    let Some(mut sys) = System::start(topology, options()).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let endpoint = sys
        .d
        .client()
        .create_webhook(&NewWebhookEndpoint {
            url: receiver.url.clone(),
            events: vec![
                EventType::JobSucceeded,
                EventType::JobFailed,
                EventType::JobCancelled,
            ],
            description: "chaos receiver".to_owned(),
        })
        .await
        .expect("a webhook endpoint");
    receiver.set_secret(&endpoint.secret);
    let users: Vec<User> = (0..USERS)
        .map(|n| User {
            id: Uuid::new_v4(),
            key: format!("sim_chaos_{}_{n}", plan.seed),
        })
        .collect();
    for user in &users {
        sys.d
            .put_credentials(user.id, "runway", json!({ "api_key": user.key }))
            .await;
    }

    // Each request once: the driver decides what to send again.
    let client = Client::builder(&sys.d.api, &sys.d.token)
        .retry(RetryPolicy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let started_ms = faults::now_ms();
    let give_up_at = Instant::now() + plan.fault_phase + Duration::from_secs(90);
    let ids: Vec<Uuid> = users.iter().map(|u| u.id).collect();
    let driver = Driver::start(&client, &ids, &plan, &format!("{topology:?}"), give_up_at);
    let faults = faults::inject(&mut sys, &plan, topology).await;
    let submissions = driver.finish().await;

    let report = checks::check(
        &mut sys,
        &Run {
            plan: &plan,
            topology,
            users: &users,
            faults: &faults,
            submissions: &submissions,
            receiver: &receiver,
            started_ms,
            per_minute: PER_MINUTE,
        },
    )
    .await;
    println!("{}", report.table());
    assert!(
        report.problems.is_empty(),
        "{} problem(s) (seed {}; replay with BYOK_CHAOS_SEED={}):\n{}\n\nfaults:\n{}\n\nlast lines of the API's log:\n{}",
        report.problems.len(),
        plan.seed,
        plan.seed,
        report.problems.join("\n"),
        report.timeline(),
        sys.d.log_tail("api")
    );
}
