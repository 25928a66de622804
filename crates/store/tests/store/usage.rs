//! Usage: each final transition writes its job's usage row in the same statement, with
//! what the provider will have charged as far as it is known; the sums are the sums of
//! those rows, on both databases.

use byok_core::{
    DEFAULT_PROJECT_ID, ErrorCode, ErrorRecord, GenerationRequest, JobResult, ProviderId,
    UsageGroupBy, Usd,
};
use byok_store::{CostBasis, Inserted, Job, NewJob, Store, UsagePlan, UsageQuery};
use serde_json::json;
use uuid::Uuid;

use crate::backends;

async fn job(store: &Store, user: Uuid, cost: Option<i64>) -> Job {
    let new = NewJob {
        project_id: DEFAULT_PROJECT_ID,
        user_id: user,
        provider: ProviderId::RUNWAY,
        model: "gen4_turbo".into(),
        request: GenerationRequest {
            prompt: Some("a lighthouse".into()),
            ..GenerationRequest::new(user, ProviderId::RUNWAY, "gen4_turbo")
        },
        metadata: json!({}),
        created_by_token: None,
        idempotency: None,
        batch_id: None,
        usage: UsagePlan {
            video_seconds: Some(5),
            resolution: Some("720p".into()),
            estimated_cost: cost.map(Usd::from_micros),
        },
    };
    match store.jobs().insert(&new).await.unwrap() {
        Inserted::Created(job) => job,
        other => panic!("{other:?}"),
    }
}

async fn accepted(store: &Store, id: Uuid) {
    assert!(store.jobs().begin_submit(id).await.unwrap());
    assert!(store.jobs().submitted(id, "task_1", 1).await.unwrap());
}

fn result(compute_ms: Option<u64>) -> JobResult {
    serde_json::from_value(json!({
        "bytes": 10, "content_type": "video/mp4",
        "provider_usage": { "compute_ms": compute_ms },
    }))
    .unwrap()
}

fn refused() -> ErrorRecord {
    ErrorRecord {
        code: ErrorCode::CredentialsInvalid,
        message: "401".into(),
        retryable: false,
    }
}

#[tokio::test]
async fn ended_jobs_record_what_they_cost_and_the_sums_add_up() {
    for b in backends().await {
        let store = &b.store;
        let (a, other) = (Uuid::new_v4(), Uuid::new_v4());

        let succeeded = job(store, a, Some(250_000)).await;
        accepted(store, succeeded.id).await;
        assert!(
            store
                .jobs()
                .succeed(succeeded.id, &result(Some(41_200)))
                .await
                .unwrap()
        );

        let refused_at_submit = job(store, a, Some(500_000)).await;
        assert!(
            store
                .jobs()
                .begin_submit(refused_at_submit.id)
                .await
                .unwrap()
        );
        assert!(
            store
                .jobs()
                .fail(refused_at_submit.id, &refused(), 1)
                .await
                .unwrap()
        );

        let failed_after_accept = job(store, a, Some(1_000_000)).await;
        accepted(store, failed_after_accept.id).await;
        assert!(
            store
                .jobs()
                .fail(failed_after_accept.id, &refused(), 1)
                .await
                .unwrap()
        );

        let unpriced = job(store, a, None).await;
        accepted(store, unpriced.id).await;
        assert!(
            store
                .jobs()
                .succeed(unpriced.id, &result(None))
                .await
                .unwrap()
        );

        let cancelled_queued = job(store, a, Some(300_000)).await;
        store
            .jobs()
            .cancel(cancelled_queued.id, "stop")
            .await
            .unwrap();

        let others = job(store, other, Some(100_000)).await;
        accepted(store, others.id).await;
        assert!(
            store
                .jobs()
                .succeed(others.id, &result(None))
                .await
                .unwrap()
        );

        let live = job(store, a, Some(900_000)).await;

        let usage = store.usage();
        let row = |id| async move { usage.of_job(id).await.unwrap() };
        let first = row(succeeded.id).await.expect("a usage row");
        assert_eq!(
            (first.cost, first.cost_basis, first.provider_compute_ms),
            (
                Some(Usd::from_micros(250_000)),
                CostBasis::ListPrice,
                Some(41_200)
            ),
            "{}",
            b.name
        );
        assert_eq!(
            (first.video_seconds, first.resolution.as_deref()),
            (Some(5), Some("720p"))
        );
        assert_eq!(first.outcome, "succeeded");
        for (id, cost, basis) in [
            (
                refused_at_submit.id,
                Some(Usd::ZERO),
                CostBasis::NotAccepted,
            ),
            (failed_after_accept.id, None, CostBasis::Unknown),
            (unpriced.id, None, CostBasis::Unknown),
            (cancelled_queued.id, Some(Usd::ZERO), CostBasis::NotAccepted),
            (
                others.id,
                Some(Usd::from_micros(100_000)),
                CostBasis::ListPrice,
            ),
        ] {
            let usage = row(id)
                .await
                .unwrap_or_else(|| panic!("{}: no row for {id}", b.name));
            assert_eq!(
                (usage.cost, usage.cost_basis),
                (cost, basis),
                "{}: {id}",
                b.name
            );
        }
        assert_eq!(row(live.id).await, None, "a live job has no usage yet");

        let now = chrono::Utc::now();
        let query = |group_by, user_id| UsageQuery {
            project_id: Some(DEFAULT_PROJECT_ID),
            user_id,
            from: now - chrono::Duration::hours(1),
            to: now + chrono::Duration::hours(1),
            group_by,
        };
        let by_provider = usage
            .summary(&query(UsageGroupBy::Provider, None))
            .await
            .unwrap();
        assert_eq!(by_provider.len(), 1, "{}: {by_provider:?}", b.name);
        let all = &by_provider[0].totals;
        assert_eq!(by_provider[0].provider.as_deref(), Some("runway"));
        assert_eq!((all.jobs, all.succeeded, all.video_seconds), (6, 3, 15));
        assert_eq!(all.cost_usd, Usd::from_micros(350_000), "{}", b.name);
        assert_eq!(all.jobs_cost_unknown, 2);
        assert_eq!(all.provider_compute_ms, 41_200);

        // The sums are the sums of the rows, however they are grouped.
        let mut known = Usd::ZERO;
        for id in [
            succeeded.id,
            refused_at_submit.id,
            failed_after_accept.id,
            unpriced.id,
            cancelled_queued.id,
            others.id,
        ] {
            known = known
                .plus(row(id).await.unwrap().cost.unwrap_or(Usd::ZERO))
                .unwrap();
        }
        for group_by in [
            UsageGroupBy::Provider,
            UsageGroupBy::Model,
            UsageGroupBy::Day,
            UsageGroupBy::User,
        ] {
            let groups = usage.summary(&query(group_by, None)).await.unwrap();
            let total = groups
                .iter()
                .fold(Usd::ZERO, |sum, g| sum.plus(g.totals.cost_usd).unwrap());
            assert_eq!(total, known, "{}: {group_by:?}", b.name);
            assert_eq!(groups.iter().map(|g| g.totals.jobs).sum::<u64>(), 6);
        }
        let by_user = usage
            .summary(&query(UsageGroupBy::User, None))
            .await
            .unwrap();
        assert_eq!(by_user.len(), 2);
        let mine = usage
            .summary(&query(UsageGroupBy::Model, Some(a)))
            .await
            .unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!(
            (mine[0].model.as_deref(), mine[0].totals.jobs),
            (Some("gen4_turbo"), 5)
        );
        assert_eq!(mine[0].totals.cost_usd, Usd::from_micros(250_000));
        let days = usage
            .summary(&query(UsageGroupBy::Day, None))
            .await
            .unwrap();
        let today = first.ended_at.format("%Y-%m-%d").to_string();
        assert!(
            days.iter()
                .any(|d| d.day.as_deref() == Some(today.as_str())),
            "{}: {days:?}",
            b.name
        );
        let earlier = UsageQuery {
            to: now - chrono::Duration::minutes(30),
            ..query(UsageGroupBy::Provider, None)
        };
        assert!(usage.summary(&earlier).await.unwrap().is_empty());
    }
}
