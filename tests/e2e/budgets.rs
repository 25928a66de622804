//! Budgets end to end: real `byok` processes on PostgreSQL + Redis with two workers and the
//! simulator. Concurrent jobs can never spend past a budget, and a job cancelled before the
//! provider accepted it gives its hold back.

use std::time::Duration;

use byok_client::{
    ApiErrorCode, BudgetLimit, BudgetPeriod, ErrorCode, GenerationRequest, JobStatus, ProviderId,
    Usd,
};
use byok_sim::Fault;
use serde_json::json;
use uuid::Uuid;

use crate::deploy::{DeployOptions, Deployment};
use crate::helpers::poll_until;

/// Runway's gen4.5 at $0.10 a second for these tests: a 5-second job costs $0.50.
const PRICED: &str = r#"
[[providers.runway.prices]]
model = "gen4.5"
per_second = [{ usd = 0.1 }]
source = "https://docs.dev.runwayml.com/guides/pricing/"
as_of = "2026-12-04"
"#;

fn usd(text: &str) -> Usd {
    Usd::parse_decimal(text).unwrap()
}

fn job(user: Uuid, i: usize) -> GenerationRequest {
    GenerationRequest {
        prompt: Some(format!("shot {i}")),
        duration_seconds: Some(5),
        ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4.5")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_racing_jobs_spend_exactly_a_ten_dollar_budget_and_a_cancel_gives_its_hold_back() {
    let Some(d) = Deployment::distributed(DeployOptions {
        config: PRICED,
        extra_env: vec![
            // A job whose submit fails waits in the queue, holding, long enough to be
            // cancelled there.
            ("BYOK__WORKER__RETRY_MIN_DELAY".into(), "20s".into()),
            ("BYOK__WORKER__RETRY_MAX_DELAY".into(), "20s".into()),
            ("BYOK__WORKER__MAX_ATTEMPTS".into(), "100".into()),
        ],
        ..DeployOptions::default()
    })
    .await
    else {
        return;
    };
    let user = Uuid::new_v4();
    let key = "sim_budget_key_0001";
    d.put_credentials(user, "runway", json!({ "api_key": key }))
        .await;
    let month = |limit: &str| BudgetLimit {
        provider: None,
        period: BudgetPeriod::Month,
        limit_usd: usd(limit),
    };
    d.client()
        .set_user_budget(user, &[month("10")])
        .await
        .unwrap();

    // Fifty at once: those enqueued after the workers began holding may be refused at
    // once; the rest are refused by the reservation before their submit.
    let enqueues = (0..50).map(|i| {
        let client = d.client().clone();
        tokio::spawn(async move { client.create_job(&job(user, i), None).await })
    });
    let (mut accepted, mut refused_at_enqueue) = (Vec::new(), 0);
    for enqueued in futures::future::join_all(enqueues).await {
        match enqueued.unwrap() {
            Ok(created) => accepted.push(created.job.id),
            Err(e) if e.code() == Some(ApiErrorCode::BudgetExceeded) => refused_at_enqueue += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let ended = poll_until(Duration::from_secs(120), async || {
        let mut views = Vec::new();
        for id in &accepted {
            let view = d.client().get_job(*id).await.unwrap();
            if !view.status.is_terminal() {
                return None;
            }
            views.push(view);
        }
        Some(views)
    })
    .await
    .expect("every job ends");
    let succeeded = ended
        .iter()
        .filter(|j| j.status == JobStatus::Succeeded)
        .count();
    let refused_before_submit = ended
        .iter()
        .filter(|j| {
            j.status == JobStatus::Failed
                && j.error.as_ref().map(|e| e.code) == Some(ErrorCode::BudgetExceeded)
        })
        .count();
    assert_eq!(
        (succeeded, refused_before_submit + refused_at_enqueue),
        (20, 30),
        "{refused_at_enqueue} refused at enqueue; {ended:?}"
    );
    let stats = d.sim.stats().await;
    let submits = stats
        .runway
        .for_api_key(key)
        .map_or(0, |k| k.counters.submits);
    assert_eq!(
        submits, 20,
        "the provider saw exactly the jobs the budget paid for"
    );
    let view = d.client().user_budget(user).await.unwrap();
    let standing = &view.limits[0];
    assert_eq!(
        (
            standing.spent_usd,
            standing.reserved_usd,
            standing.remaining_usd
        ),
        (usd("10"), Usd::ZERO, Usd::ZERO),
        "{view:?}"
    );

    // A job whose submit keeps failing holds its estimate while it waits to retry; cancelled
    // there (the provider never accepted it), it gives the hold back.
    let other = Uuid::new_v4();
    d.put_credentials(other, "runway", json!({ "api_key": "sim_budget_key_0002" }))
        .await;
    d.client()
        .set_user_budget(other, &[month("1")])
        .await
        .unwrap();
    d.sim
        .inject_fault(Fault {
            count: 1000,
            ..Fault::new("runway", 503)
        })
        .unwrap();
    let waiting = d
        .client()
        .create_job(&job(other, 0), None)
        .await
        .unwrap()
        .job
        .id;
    poll_until(Duration::from_secs(30), async || {
        let job = d.client().get_job(waiting).await.unwrap();
        (job.attempts >= 1 && job.status == JobStatus::Queued).then_some(())
    })
    .await
    .expect("the submit failed and the job waits to retry");
    let held = d.client().user_budget(other).await.unwrap();
    assert_eq!(held.limits[0].reserved_usd, usd("0.5"), "{held:?}");
    let cancelled = d.client().cancel_job(waiting).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let released = d.client().user_budget(other).await.unwrap();
    assert_eq!(
        (
            released.limits[0].spent_usd,
            released.limits[0].reserved_usd,
            released.limits[0].remaining_usd
        ),
        (Usd::ZERO, Usd::ZERO, usd("1")),
        "{released:?}"
    );
}
