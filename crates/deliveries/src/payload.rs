//! The body of a delivery: `{"type", "timestamp", "data"}`, `data` being what the event
//! is about as the API shows it.

use byok_core::{BatchView, EventType, JobView, WebhookPayload};
use byok_store::{Job, Store, StoreError, StoredEvent};
use serde_json::Value;

/// The JSON body of `event`. Job events render the job as it was at the event (its stored
/// row) the way `GET /v1/jobs/{id}` renders a job; `batch.completed` reads the batch and
/// renders it as `GET /v1/batches/{id}` does (a complete batch no longer changes);
/// `credential.invalidated` stores its data ready. The same event always renders to the
/// same bytes, so every attempt of a delivery sends the same body.
pub async fn render(store: &Store, event: &StoredEvent) -> Result<Vec<u8>, StoreError> {
    let malformed = StoreError::Malformed("webhook_events.type");
    let kind: EventType = event.event_type.parse().map_err(|_| malformed)?;
    let data = match kind {
        _ if kind.is_job_event() => {
            let snapshot = event
                .data
                .clone()
                .ok_or(StoreError::Malformed("webhook_events.data"))?;
            serde_json::to_value(JobView::from(Job::from_snapshot(snapshot)?))
                .map_err(|_| StoreError::Malformed("webhook_events.data"))?
        }
        EventType::BatchCompleted => {
            let batch = event
                .subject_id
                .ok_or(StoreError::Malformed("webhook_events.subject_id"))?;
            let batch = store
                .batches()
                .get_by_id(batch)
                .await?
                .ok_or(StoreError::Malformed("webhook_events.subject_id"))?;
            serde_json::to_value(BatchView::from(batch))
                .map_err(|_| StoreError::Malformed("webhook_events.data"))?
        }
        _ => event.data.clone().unwrap_or(Value::Null),
    };
    let body = WebhookPayload {
        event_type: kind,
        timestamp: event.occurred_at,
        data,
    };
    serde_json::to_vec(&body).map_err(|_| StoreError::Malformed("webhook_events.data"))
}

#[cfg(test)]
mod tests {
    use byok_core::{BatchStatus, DEFAULT_PROJECT_ID, GenerationRequest, ProviderId};
    use byok_store::{BatchInserted, NewBatch, NewEndpoint, NewJob, StoreOptions};
    use secrecy::SecretString;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    /// `batch.completed` carries the batch exactly as `GET /v1/batches/{id}` shows it.
    #[tokio::test]
    async fn a_completed_batch_renders_as_the_api_shows_it() {
        let db = byok_testing::test_sqlite();
        let store = Store::connect(
            &SecretString::from(db.url.clone()),
            &StoreOptions::default(),
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let endpoint = Uuid::now_v7();
        store
            .webhooks()
            .create_endpoint(&NewEndpoint {
                id: endpoint,
                project_id: DEFAULT_PROJECT_ID,
                url: "https://hooks.example.com/byok".into(),
                description: String::new(),
                events: vec![EventType::BatchCompleted],
                sealed_secret: "v2:k:sealed".into(),
            })
            .await
            .unwrap();
        let user = Uuid::new_v4();
        let new = NewBatch {
            project_id: DEFAULT_PROJECT_ID,
            created_by_token: None,
            idempotency: None,
            metadata: json!({ "campaign": 3 }),
            jobs: vec![NewJob {
                project_id: DEFAULT_PROJECT_ID,
                user_id: user,
                provider: ProviderId::RUNWAY,
                model: "gen4_turbo".into(),
                request: GenerationRequest::new(user, ProviderId::RUNWAY, "gen4_turbo"),
                metadata: json!({}),
                created_by_token: None,
                idempotency: None,
                batch_id: None,
                usage: Default::default(),
            }],
        };
        let BatchInserted::Created(batch, jobs) = store.batches().create(new).await.unwrap() else {
            panic!("a new batch");
        };
        store.jobs().cancel(jobs[0].id, "stop").await.unwrap();
        let delivery = store
            .webhooks()
            .deliveries(DEFAULT_PROJECT_ID, endpoint, None, 10)
            .await
            .unwrap()
            .pop()
            .expect("one batch.completed delivery");
        let work = store.webhooks().work(delivery.id).await.unwrap().unwrap();
        let body: Value =
            serde_json::from_slice(&render(&store, &work.event).await.unwrap()).unwrap();
        let now = store.batches().get_by_id(batch.id).await.unwrap().unwrap();
        assert_eq!(body["type"], "batch.completed");
        assert_eq!(
            body["data"],
            serde_json::to_value(BatchView::from(now)).unwrap()
        );
        let view: BatchView = serde_json::from_value(body["data"].clone()).unwrap();
        assert_eq!(view.status, BatchStatus::Completed);
        assert_eq!(view.counts.cancelled, 1);
        assert_eq!(view.metadata, json!({ "campaign": 3 }));
        assert_eq!(
            serde_json::to_value(view.finished_at).unwrap(),
            body["timestamp"],
            "the event's time is the batch's end"
        );
    }
}
