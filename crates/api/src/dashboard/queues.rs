//! The queues page: the items in each state, retry of dead items (one, selected, all) and
//! purge with a typed confirmation. The queue engine is the authority: this page reads and
//! changes it through the same calls as `byok queue list|retry|purge`.

use axum::Form;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use byok_queue::{ItemState, ListedItem};
use serde::{Deserialize, Serialize};

use super::{CsrfForm, Signed, admin_action, page, refused, see_other_to, session_or, to_sign_in};
use crate::AppState;
use crate::error::ApiError;

/// How many items a state's list shows.
const ITEMS_SHOWN: usize = 200;

#[derive(Deserialize, Default)]
pub(crate) struct QueuesQuery {
    #[serde(default)]
    state: String,
}

/// One item as the page shows it.
#[derive(Serialize)]
struct ItemView {
    reference: String,
    item_id: String,
    /// The item's job, when its id is one (every item the product pushes is).
    job_id: Option<String>,
    attempts: u32,
    deliveries: u32,
    consumer: Option<String>,
    at: String,
    error: Option<String>,
}

impl From<ListedItem> for ItemView {
    fn from(item: ListedItem) -> Self {
        let at = i64::try_from(item.at_ms)
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or_else(String::new, super::time_text);
        ItemView {
            job_id: item
                .item_id
                .parse::<uuid::Uuid>()
                .ok()
                .map(|id| id.to_string()),
            reference: item.reference,
            item_id: item.item_id,
            attempts: item.attempts,
            deliveries: item.deliveries,
            consumer: item.consumer,
            at,
            error: item.error,
        }
    }
}

/// `GET /dashboard/queues?state=…`
pub(crate) async fn queues(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<QueuesQuery>,
) -> Response {
    let signed = match session_or(&state, &headers, to_sign_in).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let shown = match query.state.as_str() {
        "" => ItemState::Pending,
        other => match other.parse::<ItemState>() {
            Ok(shown) => shown,
            Err(why) => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "No such queue state",
                    &why,
                    "/dashboard/queues",
                );
            }
        },
    };
    let engine = state.engine();
    let (stats, items) = match tokio::try_join!(engine.stats(), engine.list(shown, ITEMS_SHOWN)) {
        Ok(found) => found,
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    let count = |s: ItemState| match s {
        ItemState::Pending => stats.pending,
        ItemState::Scheduled => stats.scheduled,
        ItemState::Running => stats.running,
        ItemState::Dead => stats.dead,
    };
    let tabs: Vec<_> = ItemState::ALL
        .iter()
        .map(|s| minijinja::context! { name => s.as_str(), count => count(*s) })
        .collect();
    let items: Vec<ItemView> = items.into_iter().map(ItemView::from).collect();
    page(
        StatusCode::OK,
        "dashboard/queues.html",
        minijinja::context! {
            page => "queues",
            session => signed.view(),
            tabs => tabs,
            shown => shown.as_str(),
            total => count(shown),
            items => minijinja::Value::from_serialize(&items),
            limit => ITEMS_SHOWN,
            purgeable => shown != ItemState::Running,
        },
    )
}

/// `POST /dashboard/queues/retry-dead`: every dead item back to pending (admin).
pub(crate) async fn retry_dead(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let signed = match admin_action(&state, &headers, &form.csrf).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    retried(&signed, state.engine().retry_dead(None).await)
}

/// The answer to a retry of dead items: back to the dead items, the count logged with the
/// session's token id (never the token).
fn retried(signed: &Signed, moved: Result<u64, byok_queue::QueueError>) -> Response {
    match moved {
        Ok(n) => {
            tracing::info!(token.id = %signed.session.token_id, items = n, "dead items retried from the dashboard");
            see_other_to("/dashboard/queues?state=dead")
        }
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

/// `POST /dashboard/queues/retry` (admin, CSRF): the dead items named by `one` (a row's own
/// button) or else by every checked `ref`, back to pending. A reference that is not a dead
/// item now (retried or dropped meanwhile, or made up) is left out, never sent to the engine.
pub(crate) async fn retry_items(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Checkboxes repeat one field name, which a struct cannot take: read the pairs.
    let (mut csrf, mut one, mut checked) = (String::new(), None, Vec::new());
    for (name, value) in url::form_urlencoded::parse(&body) {
        match &*name {
            "csrf" => csrf = value.into_owned(),
            "one" => one = Some(value.into_owned()),
            "ref" => checked.push(value.into_owned()),
            _ => {}
        }
    }
    let signed = match admin_action(&state, &headers, &csrf).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let wanted = one.map_or(checked, |one| vec![one]);
    if wanted.is_empty() {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Nothing to retry",
            "Select the dead items to retry first.",
            "/dashboard/queues?state=dead",
        );
    }
    let engine = state.engine();
    // Dead items are bounded by queue.dead_retention, so reading them all to check the
    // references is a bounded read.
    let retention = usize::try_from(engine.config().dead_retention).unwrap_or(usize::MAX);
    let dead = match engine.list(ItemState::Dead, retention.max(1)).await {
        Ok(dead) => dead,
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    let refs: Vec<String> = dead
        .into_iter()
        .map(|item| item.reference)
        .filter(|r| wanted.contains(r))
        .collect();
    if refs.is_empty() {
        return refused(
            StatusCode::CONFLICT,
            "Nothing to retry",
            "None of the selected items is dead now (retried or dropped meanwhile).",
            "/dashboard/queues?state=dead",
        );
    }
    retried(&signed, engine.retry_dead(Some(&refs)).await)
}

#[derive(Deserialize)]
pub(crate) struct PurgeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /dashboard/queues/purge` (admin, CSRF): deletes every item in `state` once
/// `confirm` repeats the state's name. Running items belong to live workers and are
/// refused, as the engine refuses them.
pub(crate) async fn purge(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<PurgeForm>,
) -> Response {
    let signed = match admin_action(&state, &headers, &form.csrf).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let target = match form.state.parse::<ItemState>() {
        Ok(ItemState::Running) => {
            return refused(
                StatusCode::CONFLICT,
                "Running items cannot be purged",
                "They belong to live workers: stop the workers first, or wait for their leases to expire.",
                "/dashboard/queues?state=running",
            );
        }
        Ok(target) => target,
        Err(why) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "No such queue state",
                &why,
                "/dashboard/queues",
            );
        }
    };
    let back = format!("/dashboard/queues?state={target}");
    if form.confirm.trim() != target.as_str() {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Purge not confirmed",
            &format!(
                "Type `{target}` in the confirmation box to purge every {target} item; nothing was deleted."
            ),
            &back,
        );
    }
    match state.engine().purge(target).await {
        Ok(n) => {
            tracing::warn!(token.id = %signed.session.token_id, state = %target, items = n, "queue items purged from the dashboard");
            see_other_to(&back)
        }
        Err(e) => ApiError::internal(&e).into_response(),
    }
}
