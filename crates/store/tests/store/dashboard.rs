//! The operator dashboard's reads: the jobs search with each filter and its cursor, the jobs
//! ended per minute and the failures by code, on both databases.

use byok_core::{
    DEFAULT_PROJECT_ID, ErrorCode, ErrorRecord, JobResult, JobStatus, ProjectUser, ProviderId,
};
use byok_store::{JobFilter, Store};
use chrono::{TimeDelta, Utc};
use uuid::Uuid;

use crate::{backends, jobs};

/// A job of `user` in `project_id` at `provider` (Runway's or Veo's model).
async fn create(store: &Store, project_id: Uuid, user: Uuid, provider: ProviderId) -> Uuid {
    let model = if provider == ProviderId::VEO {
        "veo-3.0-generate-001"
    } else {
        "gen4_turbo"
    };
    let mut new = jobs::new_job(user, None, None);
    new.project_id = project_id;
    new.provider = provider;
    new.model = model.into();
    new.request.provider = provider;
    new.request.model = model.into();
    jobs::create(store, &new).await.id
}

fn error(code: ErrorCode) -> ErrorRecord {
    ErrorRecord {
        code,
        message: "x".into(),
        retryable: false,
    }
}

async fn search(store: &Store, filter: &JobFilter, limit: u32) -> Vec<Uuid> {
    store
        .jobs()
        .search(filter, limit)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect()
}

/// `ids` newest first (ids are UUIDv7, in creation order).
fn newest_first(ids: &[Uuid]) -> Vec<Uuid> {
    ids.iter().rev().copied().collect()
}

#[tokio::test]
async fn the_jobs_search_matches_every_filter_set_and_pages_by_id() {
    for b in backends().await {
        let jobs = b.store.jobs();
        let other = b.store.projects().create("other").await.unwrap().id;
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        // In creation order: ann in both projects (two users with one id), bob in the default.
        let j0 = create(&b.store, DEFAULT_PROJECT_ID, ann, ProviderId::RUNWAY).await;
        let j1 = create(&b.store, DEFAULT_PROJECT_ID, bob, ProviderId::VEO).await;
        let j2 = create(&b.store, other, ann, ProviderId::RUNWAY).await;
        let j3 = create(&b.store, DEFAULT_PROJECT_ID, bob, ProviderId::RUNWAY).await;
        let j4 = create(&b.store, other, ann, ProviderId::VEO).await;
        let j5 = create(&b.store, DEFAULT_PROJECT_ID, ann, ProviderId::RUNWAY).await;
        let all = [j0, j1, j2, j3, j4, j5];
        assert!(
            jobs.fail(j0, &error(ErrorCode::ContentRejected), 1)
                .await
                .unwrap()
        );
        assert!(jobs.fail(j3, &error(ErrorCode::Timeout), 1).await.unwrap());
        assert!(
            jobs.fail(j4, &error(ErrorCode::ContentRejected), 1)
                .await
                .unwrap()
        );
        jobs.cancel(j1, "by the producer").await.unwrap();
        assert!(jobs.begin_submit(j2).await.unwrap());
        assert!(jobs.submitted(j2, "task-2", 1).await.unwrap());

        let filter = |f: fn(&mut JobFilter)| {
            let mut filter = JobFilter::default();
            f(&mut filter);
            filter
        };
        let cases: Vec<(&str, JobFilter, Vec<Uuid>)> = vec![
            ("none", JobFilter::default(), newest_first(&all)),
            (
                "status",
                filter(|f| f.status = Some(JobStatus::Failed)),
                vec![j4, j3, j0],
            ),
            (
                "live status",
                filter(|f| f.status = Some(JobStatus::Running)),
                vec![j2],
            ),
            (
                "provider",
                filter(|f| f.provider = Some("veo".into())),
                vec![j4, j1],
            ),
            (
                "unknown provider",
                filter(|f| f.provider = Some("nobody' OR '1'='1".into())),
                vec![],
            ),
            (
                "user in any project",
                JobFilter {
                    user_id: Some(ann),
                    ..JobFilter::default()
                },
                vec![j5, j4, j2, j0],
            ),
            (
                "project",
                JobFilter {
                    project_id: Some(other),
                    ..JobFilter::default()
                },
                vec![j4, j2],
            ),
            (
                "error code",
                filter(|f| f.error_code = Some("content_rejected".into())),
                vec![j4, j0],
            ),
            (
                "cancelled's code",
                filter(|f| f.error_code = Some("cancelled".into())),
                vec![j1],
            ),
            (
                "status, provider and project",
                JobFilter {
                    status: Some(JobStatus::Failed),
                    provider: Some("runway".into()),
                    project_id: Some(DEFAULT_PROJECT_ID),
                    ..JobFilter::default()
                },
                vec![j3, j0],
            ),
            (
                "user and project",
                JobFilter {
                    user_id: Some(ann),
                    project_id: Some(DEFAULT_PROJECT_ID),
                    ..JobFilter::default()
                },
                vec![j5, j0],
            ),
            (
                "since an hour ago",
                filter(|f| f.since = Some(Utc::now() - TimeDelta::hours(1))),
                newest_first(&all),
            ),
            (
                "since later",
                filter(|f| f.since = Some(Utc::now() + TimeDelta::minutes(1))),
                vec![],
            ),
            (
                "before a job",
                JobFilter {
                    before: Some(j3),
                    ..JobFilter::default()
                },
                vec![j2, j1, j0],
            ),
        ];
        for (name, filter, expected) in cases {
            assert_eq!(
                search(&b.store, &filter, 50).await,
                expected,
                "{}: {name}",
                b.name
            );
        }

        // Pages of two, each from the last id of the one before, with a filter kept.
        let mut filter = JobFilter {
            user_id: Some(ann),
            ..JobFilter::default()
        };
        let mut pages = Vec::new();
        loop {
            let page = search(&b.store, &filter, 2).await;
            let Some(last) = page.last().copied() else {
                break;
            };
            pages.push(page);
            filter.before = Some(last);
        }
        assert_eq!(pages, [vec![j5, j4], vec![j2, j0]], "{}", b.name);

        // The producer API's listing of a user stays in its project (the index it reads
        // names the user alone).
        let listed: Vec<Uuid> = jobs
            .list_for_user(ProjectUser::new(other, ann), None, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(listed, [j4, j2], "{}", b.name);
        let failed: Vec<Uuid> = jobs
            .list_for_user(
                ProjectUser::new(DEFAULT_PROJECT_ID, ann),
                Some(JobStatus::Failed),
                None,
                10,
            )
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(failed, [j0], "{}", b.name);
    }
}

#[tokio::test]
async fn the_overview_counts_ended_jobs_per_minute_and_failures_per_code() {
    for b in backends().await {
        let jobs = b.store.jobs();
        let user = Uuid::new_v4();
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(create(&b.store, DEFAULT_PROJECT_ID, user, ProviderId::RUNWAY).await);
        }
        let started = Utc::now() - TimeDelta::minutes(1);
        assert!(
            jobs.fail(ids[0], &error(ErrorCode::Timeout), 1)
                .await
                .unwrap()
        );
        assert!(
            jobs.fail(ids[1], &error(ErrorCode::ContentRejected), 1)
                .await
                .unwrap()
        );
        assert!(
            jobs.fail(ids[2], &error(ErrorCode::ContentRejected), 1)
                .await
                .unwrap()
        );
        jobs.cancel(ids[3], "by the producer").await.unwrap();
        assert!(jobs.begin_submit(ids[4]).await.unwrap());
        assert!(jobs.submitted(ids[4], "task-4", 1).await.unwrap());
        let result = JobResult {
            provider_urls: Vec::new(),
            bytes: 3,
            content_type: "video/mp4".to_owned(),
            note: None,
            provider_usage: byok_core::ProviderUsage::NONE,
        };
        assert!(jobs.succeed(ids[4], &result).await.unwrap());
        // ids[5] stays queued: it has not ended.

        let ended = jobs.ended_per_minute(started).await.unwrap();
        // Summed over the minutes: the run may cross a minute's end.
        let total = |status| {
            ended
                .iter()
                .filter(|(_, s, _)| *s == status)
                .map(|(_, _, n)| n)
                .sum::<u64>()
        };
        assert_eq!(
            (
                total(JobStatus::Succeeded),
                total(JobStatus::Failed),
                total(JobStatus::Cancelled),
                total(JobStatus::Queued)
            ),
            (1, 3, 1, 0),
            "{}: {ended:?}",
            b.name
        );
        let minutes: Vec<_> = ended.iter().map(|(m, _, _)| *m).collect();
        assert!(
            minutes.windows(2).all(|w| w[0] <= w[1])
                && minutes
                    .iter()
                    .all(|m| *m >= started - TimeDelta::minutes(1) && *m <= Utc::now()),
            "{}: oldest minute first, each a minute of the run: {ended:?}",
            b.name
        );

        assert_eq!(
            jobs.failures_since(started).await.unwrap(),
            [
                ("content_rejected".to_owned(), 2),
                ("timeout".to_owned(), 1)
            ],
            "{}: most first, cancelled jobs not counted",
            b.name
        );
        let later = Utc::now() + TimeDelta::minutes(1);
        assert!(
            jobs.ended_per_minute(later).await.unwrap().is_empty()
                && jobs.failures_since(later).await.unwrap().is_empty(),
            "{}: nothing ended after now",
            b.name
        );
    }
}
