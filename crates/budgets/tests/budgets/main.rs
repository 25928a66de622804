//! Budgets against real databases and a real Redis: every ledger (the database's on SQLite
//! and on PostgreSQL, Redis's) must hold the same figures under the same races.

use std::time::Duration;

use byok_budgets::{BudgetError, Budgets, Charge, RedisLedger};
use byok_core::{
    BudgetLimit, BudgetPeriod, DEFAULT_PROJECT_ID, ErrorCode, ErrorRecord, GenerationRequest,
    ProjectUser, ProviderId, Usd,
};
use byok_store::{Cancelled, Inserted, NewJob, Store, StoreOptions, UsagePlan};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

/// A ledger to test, and what keeps its services alive.
struct Ledger {
    name: &'static str,
    budgets: Budgets,
    store: Store,
    _guards: (
        Option<byok_testing::TestSqlite>,
        Option<byok_testing::TestDatabase>,
        Option<byok_testing::TestRedis>,
    ),
}

async fn connect(url: &str) -> Store {
    let store = Store::connect(&SecretString::from(url), &StoreOptions::default())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// The database ledger on SQLite and on PostgreSQL, and the Redis ledger (on PostgreSQL),
/// each whose holds outlive their jobs by `lifetime`.
async fn ledgers(lifetime: Duration) -> Vec<Ledger> {
    let mut out = Vec::new();
    let sqlite = byok_testing::test_sqlite();
    let store = connect(&sqlite.url).await;
    out.push(Ledger {
        name: "sqlite",
        budgets: Budgets::in_database(store.clone(), lifetime),
        store,
        _guards: (Some(sqlite), None, None),
    });
    if let Some(db) = byok_testing::test_database().await {
        let store = connect(&db.url).await;
        out.push(Ledger {
            name: "postgres",
            budgets: Budgets::in_database(store.clone(), lifetime),
            store,
            _guards: (None, Some(db), None),
        });
    }
    if let (Some(db), Some(redis)) = (
        byok_testing::test_database().await,
        byok_testing::test_redis().await,
    ) {
        let store = connect(&db.url).await;
        let ledger = RedisLedger::connect(&redis.url, redis.namespace.clone())
            .await
            .expect("redis");
        out.push(Ledger {
            name: "redis",
            budgets: Budgets::in_redis(store.clone(), ledger, lifetime),
            store,
            _guards: (None, Some(db), Some(redis)),
        });
    }
    out
}

const HOUR: Duration = Duration::from_secs(3600);

fn usd(text: &str) -> Usd {
    Usd::parse_decimal(text).unwrap()
}

fn monthly(limit: &str) -> Vec<BudgetLimit> {
    vec![BudgetLimit {
        provider: None,
        period: BudgetPeriod::Month,
        limit_usd: usd(limit),
    }]
}

/// A stored job of `user` at Runway costing `cost`.
async fn job(store: &Store, user: Uuid, cost: &str) -> Uuid {
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
            resolution: None,
            estimated_cost: Some(usd(cost)),
        },
    };
    match store.jobs().insert(&new).await.unwrap() {
        Inserted::Created(job) => job.id,
        other => panic!("{other:?}"),
    }
}

fn charge(job_id: Uuid, user: Uuid, cost: &str) -> Charge {
    Charge {
        job_id,
        owner: ProjectUser::new(DEFAULT_PROJECT_ID, user),
        provider: ProviderId::RUNWAY,
        estimate: Some(usd(cost)),
    }
}

async fn standing(budgets: &Budgets, user: Uuid) -> (Usd, Usd, Usd) {
    let view = budgets.view(DEFAULT_PROJECT_ID, Some(user)).await.unwrap();
    let limit = &view.limits[0];
    (limit.spent_usd, limit.reserved_usd, limit.remaining_usd)
}

/// 50 jobs of $0.50 reserving at once against $10: exactly 20 hold, 30 are refused with
/// what is left, on every ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_racing_reservations_hold_exactly_twenty() {
    for ledger in ledgers(HOUR).await {
        let user = Uuid::new_v4();
        ledger
            .budgets
            .set(DEFAULT_PROJECT_ID, Some(user), &monthly("10"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let budgets = ledger.budgets.clone();
            let id = job(&ledger.store, user, "0.5").await;
            tasks.push(tokio::spawn(async move {
                budgets.reserve(&charge(id, user, "0.5")).await
            }));
        }
        let (mut held, mut refused) = (0, 0);
        for task in futures::future::join_all(tasks).await {
            match task.unwrap() {
                Ok(()) => held += 1,
                Err(BudgetError::Exceeded(refusal)) => {
                    assert_eq!(refusal.remaining, Usd::ZERO, "{}", ledger.name);
                    assert_eq!(refusal.user_id, Some(user));
                    refused += 1;
                }
                Err(e) => panic!("{}: {e}", ledger.name),
            }
        }
        assert_eq!((held, refused), (20, 30), "{}", ledger.name);
        assert_eq!(
            standing(&ledger.budgets, user).await,
            (Usd::ZERO, usd("10"), Usd::ZERO),
            "{}",
            ledger.name
        );
    }
}

/// A job's end settles its hold by its recorded cost: nothing when the provider never
/// accepted it (a cancel), its price when it succeeded, the whole hold when its cost is
/// unknown. Settling twice, or reserving twice, changes nothing.
#[tokio::test]
async fn a_jobs_end_settles_its_hold_by_what_it_cost() {
    for ledger in ledgers(HOUR).await {
        let (store, budgets) = (&ledger.store, &ledger.budgets);
        let user = Uuid::new_v4();
        budgets
            .set(DEFAULT_PROJECT_ID, Some(user), &monthly("10"))
            .await
            .unwrap();
        let (cancelled, succeeded, lost) = (
            job(store, user, "0.5").await,
            job(store, user, "1.25").await,
            job(store, user, "2").await,
        );
        for (id, cost) in [(cancelled, "0.5"), (succeeded, "1.25"), (lost, "2")] {
            budgets.reserve(&charge(id, user, cost)).await.unwrap();
            budgets.reserve(&charge(id, user, cost)).await.unwrap();
        }
        assert_eq!(
            standing(budgets, user).await,
            (Usd::ZERO, usd("3.75"), usd("6.25")),
            "{}",
            ledger.name
        );

        // Settling a job still running changes nothing.
        budgets.settle(cancelled).await.unwrap();
        assert!(budgets.holds(cancelled).await.unwrap());

        assert!(matches!(
            store.jobs().cancel(cancelled, "test").await.unwrap(),
            Cancelled::Now(_)
        ));
        budgets.settle(cancelled).await.unwrap();
        assert!(!budgets.holds(cancelled).await.unwrap(), "{}", ledger.name);
        assert_eq!(
            standing(budgets, user).await,
            (Usd::ZERO, usd("3.25"), usd("6.75")),
            "{}",
            ledger.name
        );

        for id in [succeeded, lost] {
            assert!(store.jobs().begin_submit(id).await.unwrap());
            assert!(store.jobs().submitted(id, "task", 1).await.unwrap());
        }
        let result =
            serde_json::from_value(json!({"bytes": 1, "content_type": "video/mp4"})).unwrap();
        assert!(store.jobs().succeed(succeeded, &result).await.unwrap());
        let failure = ErrorRecord {
            code: ErrorCode::ProviderUnavailable,
            message: "gone".into(),
            retryable: true,
        };
        assert!(store.jobs().fail(lost, &failure, 1).await.unwrap());
        for _ in 0..2 {
            budgets.settle(succeeded).await.unwrap();
            budgets.settle(lost).await.unwrap();
        }
        assert_eq!(
            standing(budgets, user).await,
            (usd("3.25"), Usd::ZERO, usd("6.75")),
            "{}",
            ledger.name
        );
    }
}

/// A period's counter starts from what its ended jobs cost: a budget set after spending
/// knows the spending, and so does a Redis that lost its data.
#[tokio::test]
async fn a_new_counter_starts_from_the_recorded_usage() {
    for ledger in ledgers(HOUR).await {
        let (store, budgets) = (&ledger.store, &ledger.budgets);
        let user = Uuid::new_v4();
        let done = job(store, user, "0.8").await;
        assert!(store.jobs().begin_submit(done).await.unwrap());
        assert!(store.jobs().submitted(done, "task", 1).await.unwrap());
        let result =
            serde_json::from_value(json!({"bytes": 1, "content_type": "video/mp4"})).unwrap();
        assert!(store.jobs().succeed(done, &result).await.unwrap());

        budgets
            .set(DEFAULT_PROJECT_ID, Some(user), &monthly("1"))
            .await
            .unwrap();
        let owner = ProjectUser::new(DEFAULT_PROJECT_ID, user);
        let refusal = match budgets
            .check(owner, ProviderId::RUNWAY, Some(usd("0.5")))
            .await
        {
            Err(BudgetError::Exceeded(refusal)) => refusal,
            other => panic!("{}: {other:?}", ledger.name),
        };
        assert_eq!(refusal.remaining, usd("0.2"), "{}", ledger.name);
        assert!(refusal.to_string().contains("$0.2"), "{refusal}");
        let next = job(store, user, "0.5").await;
        assert!(matches!(
            budgets.reserve(&charge(next, user, "0.5")).await,
            Err(BudgetError::Exceeded(_))
        ));
        budgets
            .check(owner, ProviderId::RUNWAY, Some(usd("0.2")))
            .await
            .unwrap();
        // Another provider's jobs are not under a Runway-only limit, but are under an
        // overall one; a model without a price is refused wherever a limit applies.
        budgets
            .set(
                DEFAULT_PROJECT_ID,
                Some(user),
                &[BudgetLimit {
                    provider: Some(ProviderId::RUNWAY),
                    period: BudgetPeriod::Day,
                    limit_usd: usd("1"),
                }],
            )
            .await
            .unwrap();
        budgets.check(owner, ProviderId::VEO, None).await.unwrap();
        match budgets.check(owner, ProviderId::RUNWAY, None).await {
            Err(BudgetError::Exceeded(refusal)) => {
                assert_eq!(refusal.estimate, None);
                assert_eq!(refusal.provider.as_deref(), Some("runway"));
                assert!(refusal.to_string().contains("no price"), "{refusal}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A hold whose job's end is never settled (its worker died) counts as spent once it
/// outlives the job's longest life: the safe side. The database ledger looks for lapsed
/// holds when a counter would refuse; Redis's at every reservation.
#[tokio::test]
async fn a_hold_never_settled_counts_as_spent() {
    for ledger in ledgers(Duration::ZERO).await {
        let (store, budgets) = (&ledger.store, &ledger.budgets);
        let user = Uuid::new_v4();
        budgets
            .set(DEFAULT_PROJECT_ID, Some(user), &monthly("1"))
            .await
            .unwrap();
        let orphan = job(store, user, "0.5").await;
        budgets.reserve(&charge(orphan, user, "0.5")).await.unwrap();
        if ledger.name == "redis" {
            // Its record lapses with the hold (a millisecond on the server's clock).
            byok_testing::poll_until("the hold to lapse", async || {
                (!budgets.holds(orphan).await.unwrap()).then_some(())
            })
            .await;
        }
        let next = job(store, user, "0.5").await;
        budgets.reserve(&charge(next, user, "0.5")).await.unwrap();
        let third = job(store, user, "0.5").await;
        match budgets.reserve(&charge(third, user, "0.5")).await {
            Err(BudgetError::Exceeded(refusal)) => assert_eq!(refusal.remaining, Usd::ZERO),
            other => panic!("{}: {other:?}", ledger.name),
        }
        assert!(!budgets.holds(orphan).await.unwrap(), "{}", ledger.name);
        // The orphan's hold is spent; the second job's lapsed too (this ledger's jobs live
        // no time) or still holds, depending on the clock: together a dollar.
        let (spent, reserved, _) = standing(budgets, user).await;
        assert!(spent >= usd("0.5"), "{}: {spent}", ledger.name);
        assert_eq!(spent.plus(reserved), Some(usd("1")), "{}", ledger.name);
        // The orphan's end, settled late, changes nothing: its hold is already spent.
        assert!(matches!(
            store.jobs().cancel(orphan, "late").await.unwrap(),
            Cancelled::Now(_)
        ));
        budgets.settle(orphan).await.unwrap();
        assert_eq!(standing(budgets, user).await.0, spent, "{}", ledger.name);
    }
}
