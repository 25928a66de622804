//! `"provider": "auto"` (docs/routing.md): the API turns a job that names its needs into a
//! job with a provider, a model and fallbacks, keeping the decision on the job. A body with
//! any other provider is read as a plain job request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use byok_core::{
    ApiErrorCode, AutoRequest, Exclusion, GenerationRequest, MAX_FALLBACKS, RoutedChoice,
    RoutingDecision, RoutingStrategy, Usd,
};
use byok_store::UsagePlan;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// How far back `fastest` looks, and at most how many jobs.
const HISTORY: Duration = Duration::from_secs(7 * 24 * 3600);
const HISTORY_JOBS: u32 = 5_000;
/// How long a process keeps the medians it computed.
const MEDIANS_TTL: Duration = Duration::from_secs(60);

/// A job request as enqueued: the request to check and store, and the JSON its
/// Idempotency-Key fingerprint is taken of (for `auto`, the body as sent: a retry must
/// replay even when prices or keys changed the choice meanwhile).
#[derive(Debug)]
pub(crate) struct Routed {
    pub(crate) request: GenerationRequest,
    pub(crate) fingerprint: Option<Value>,
}

/// Reads one job body: with `"provider": "auto"` the chain is built here; otherwise it is
/// a [`GenerationRequest`], which may not carry a `routing` decision of its own.
pub(crate) async fn read_job(
    state: &AppState,
    caller: &Caller,
    body: Value,
    what: &str,
) -> Result<Routed, ApiError> {
    if body.get("provider").and_then(Value::as_str) != Some("auto") {
        if body.get("routing").is_some() {
            return Err(invalid(
                "routing",
                "`routing` is for \"provider\": \"auto\"; a job naming its provider runs there",
            ));
        }
        let request = serde_path_to_error::deserialize::<_, GenerationRequest>(body)
            .map_err(|e| crate::extract::shape_error(e, what))?;
        return Ok(Routed {
            request,
            fingerprint: None,
        });
    }
    for (field, why) in [
        (
            "model",
            "\"provider\": \"auto\" chooses each provider's model",
        ),
        (
            "fallbacks",
            "\"provider\": \"auto\" builds the chain of providers itself; name a provider to \
             give fallbacks",
        ),
    ] {
        if body.get(field).is_some() {
            return Err(invalid(field, why));
        }
    }
    let auto = serde_path_to_error::deserialize::<_, AutoRequest>(body.clone())
        .map_err(|e| crate::extract::shape_error(e, what))?;
    let decision = route(state, caller, &auto).await?;
    let request = auto
        .routed(decision)
        .ok_or_else(|| ApiError::internal(&"a routing decision without a choice"))?;
    Ok(Routed {
        request,
        fingerprint: Some(body),
    })
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::new(ApiErrorCode::InvalidRequest, message).with_details(json!({ "field": field }))
}

/// The providers where the user has a valid key and a model fits, each with its cheapest
/// fitting model, ordered by the strategy; 422 `no_capable_provider` with every exclusion
/// when there is none.
async fn route(
    state: &AppState,
    caller: &Caller,
    auto: &AutoRequest,
) -> Result<RoutingDecision, ApiError> {
    let owner = caller.user(auto.user_id);
    let mut chain = Vec::new();
    let mut excluded = Vec::new();
    for adapter in state.providers().all() {
        let provider = adapter.id();
        let exclude = |reason: String| Exclusion {
            provider: provider.as_str().to_owned(),
            reason,
        };
        let key = state
            .key_validity(owner, provider)
            .await
            .map_err(|e| ApiError::store(&e))?;
        match key {
            None => {
                excluded.push(exclude("the user has no stored key".into()));
                continue;
            }
            Some(row) if !row.is_valid => {
                excluded.push(exclude("the user's stored key is not valid".into()));
                continue;
            }
            Some(_) => {}
        }
        let mut best: Option<(String, Option<Usd>)> = None;
        let mut first_misfit = None;
        for model in adapter
            .catalogue()
            .models
            .iter()
            .filter(|m| m.status == byok_core::ModelStatus::Available)
        {
            match adapter.validate(&auto.on(provider, &model.id)) {
                Ok(validated) => {
                    let cost = UsagePlan::of(Some(model), &validated).estimated_cost;
                    if best.as_ref().is_none_or(|(_, c)| cheaper(cost, *c)) {
                        best = Some((model.id.clone(), cost));
                    }
                }
                Err(e) if first_misfit.is_none() => {
                    first_misfit = Some(format!("{}: {e}", model.id));
                }
                Err(_) => {}
            }
        }
        match best {
            Some((model, cost)) => chain.push(RoutedChoice {
                provider,
                model,
                estimated_cost_usd: cost,
                median_finish_seconds: None,
            }),
            None => excluded.push(exclude(match first_misfit {
                Some(misfit) => format!("no model fits the request (e.g. {misfit})"),
                None => "no model available".into(),
            })),
        }
    }
    if chain.is_empty() {
        return Err(ApiError::new(
            ApiErrorCode::NoCapableProvider,
            "no provider can run this job: none has both a valid key of the user's and a model \
             that fits the request (details.excluded says why for each)",
        )
        .with_details(json!({ "excluded": excluded })));
    }
    let strategy = auto.routing;
    let reason = match strategy {
        RoutingStrategy::Cheapest => {
            chain.sort_by(|a, b| order_by_cost(a.estimated_cost_usd, b.estimated_cost_usd));
            format!(
                "{} capable provider(s), cheapest estimated cost first (list prices; a model \
                 without a price last)",
                chain.len()
            )
        }
        RoutingStrategy::Fastest => {
            let medians = state.routing_history().medians(state).await?;
            for choice in &mut chain {
                choice.median_finish_seconds = medians
                    .get(&(choice.provider.as_str().to_owned(), choice.model.clone()))
                    .copied();
            }
            chain.sort_by(|a, b| {
                match (a.median_finish_seconds, b.median_finish_seconds) {
                    (Some(x), Some(y)) => x.total_cmp(&y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                }
                .then_with(|| order_by_cost(a.estimated_cost_usd, b.estimated_cost_usd))
            });
            let measured = chain
                .iter()
                .filter(|c| c.median_finish_seconds.is_some())
                .count();
            format!(
                "{} capable provider(s), shortest median time to finish at this installation \
                 first ({measured} with history, the rest by estimated cost)",
                chain.len()
            )
        }
    };
    chain.truncate(1 + MAX_FALLBACKS);
    Ok(RoutingDecision {
        strategy,
        reason,
        chain,
        excluded,
    })
}

/// Whether `a` is a lower estimate than `b` (an unknown one is never lower).
fn cheaper(a: Option<Usd>, b: Option<Usd>) -> bool {
    order_by_cost(a, b) == std::cmp::Ordering::Less
}

/// Known costs ascending, unknown ones last.
fn order_by_cost(a: Option<Usd>, b: Option<Usd>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// The median time to finish per provider and model of this installation's recent
/// succeeded jobs, recomputed at most once a [`MEDIANS_TTL`].
#[derive(Debug, Default)]
pub(crate) struct RoutingHistory {
    medians: Mutex<Option<(Instant, Medians)>>,
}

/// Seconds to finish, by provider and model.
type Medians = HashMap<(String, String), f64>;

impl RoutingHistory {
    async fn medians(&self, state: &AppState) -> Result<HashMap<(String, String), f64>, ApiError> {
        if let Some((at, medians)) = &*self.medians.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < MEDIANS_TTL
        {
            return Ok(medians.clone());
        }
        let since = chrono::Utc::now()
            - chrono::TimeDelta::from_std(HISTORY).unwrap_or(chrono::TimeDelta::zero());
        let times = state
            .store()
            .jobs()
            .recent_finish_times(since, HISTORY_JOBS)
            .await
            .map_err(|e| ApiError::store(&e))?;
        let mut by_model: HashMap<(String, String), Vec<f64>> = HashMap::new();
        for (provider, model, seconds) in times {
            by_model.entry((provider, model)).or_default().push(seconds);
        }
        let medians: Medians = by_model
            .into_iter()
            .map(|(key, mut seconds)| {
                seconds.sort_by(f64::total_cmp);
                (key, seconds[seconds.len() / 2])
            })
            .collect();
        *self.medians.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), medians.clone()));
        Ok(medians)
    }
}
