//! The overview: queue depth, jobs ended per minute, failures, dead items, workers.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use byok_core::JobStatus;
use chrono::{DateTime, TimeDelta, Timelike as _, Utc};
use serde::Serialize;

use super::{Signed, page, session_or, to_sign_in, unauthorized};
use crate::AppState;
use crate::error::ApiError;

/// `GET /dashboard`
pub(crate) async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match session_or(&state, &headers, to_sign_in).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    match overview_context(&state, &signed).await {
        Ok(context) => page(StatusCode::OK, "dashboard/overview.html", context),
        Err(e) => e.into_response(),
    }
}

/// `GET /dashboard/overview/live`: the overview's live part, for the page's script.
pub(crate) async fn overview_live(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match session_or(&state, &headers, unauthorized).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    match overview_context(&state, &signed).await {
        Ok(context) => page(StatusCode::OK, "dashboard/overview_live.html", context),
        Err(e) => e.into_response(),
    }
}

/// One minute's bar of the chart.
#[derive(Serialize, Default)]
struct Bar {
    x: u32,
    label: String,
    n_succeeded: u64,
    n_failed: u64,
    n_cancelled: u64,
    succeeded: u32,
    succeeded_y: u32,
    failed: u32,
    failed_y: u32,
    cancelled: u32,
    cancelled_y: u32,
}

const CHART_HEIGHT: u32 = 160;
const BAR_WIDTH: u32 = 9;

async fn overview_context(state: &AppState, signed: &Signed) -> Result<minijinja::Value, ApiError> {
    let now = Utc::now();
    let engine = state.engine();
    let (queue, workers) =
        tokio::try_join!(engine.stats(), engine.workers()).map_err(|e| ApiError::internal(&e))?;
    let start = minute_of(now) - TimeDelta::minutes(59);
    let ended = state
        .store()
        .jobs()
        .ended_per_minute(start)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let failures = state
        .store()
        .jobs()
        .failures_since(now - TimeDelta::hours(1))
        .await
        .map_err(|e| ApiError::store(&e))?;
    let mut bars: Vec<Bar> = (0..60)
        .map(|i| Bar {
            x: i * (BAR_WIDTH + 1),
            label: (start + TimeDelta::minutes(i64::from(i)))
                .format("%H:%M")
                .to_string(),
            ..Bar::default()
        })
        .collect();
    let (mut succeeded, mut failed, mut cancelled) = (0u64, 0u64, 0u64);
    for (minute, status, n) in ended {
        let Ok(i) = usize::try_from((minute - start).num_minutes()) else {
            continue;
        };
        let Some(bar) = bars.get_mut(i) else { continue };
        match status {
            JobStatus::Succeeded => {
                bar.n_succeeded += n;
                succeeded += n;
            }
            JobStatus::Failed => {
                bar.n_failed += n;
                failed += n;
            }
            JobStatus::Cancelled => {
                bar.n_cancelled += n;
                cancelled += n;
            }
            _ => {}
        }
    }
    let peak = bars
        .iter()
        .map(|b| b.n_succeeded + b.n_failed + b.n_cancelled)
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |n: u64| u32::try_from(n * u64::from(CHART_HEIGHT) / peak).unwrap_or(CHART_HEIGHT);
    for bar in &mut bars {
        bar.succeeded = scale(bar.n_succeeded);
        bar.failed = scale(bar.n_failed);
        bar.cancelled = scale(bar.n_cancelled);
        bar.succeeded_y = CHART_HEIGHT - bar.succeeded;
        bar.failed_y = bar.succeeded_y.saturating_sub(bar.failed);
        bar.cancelled_y = bar.failed_y.saturating_sub(bar.cancelled);
    }
    let failures: Vec<_> = failures
        .into_iter()
        .map(|(code, jobs)| minijinja::context! { code => code, jobs => jobs })
        .collect();
    let oldest_pending = duration_text(queue.oldest_pending_seconds);
    let workers: Vec<_> = workers
        .into_iter()
        .map(|w| {
            minijinja::context! {
                name => w.name,
                running => w.running,
                seen => match w.idle_ms / 1000 {
                    0 => "now".to_owned(),
                    s => format!("{} ago", duration_text(s)),
                },
            }
        })
        .collect();
    Ok(minijinja::context! {
        page => "overview",
        session => signed.view(),
        queue => queue,
        oldest_pending => oldest_pending,
        chart => minijinja::context! {
            width => 60 * (BAR_WIDTH + 1),
            height => CHART_HEIGHT,
            bar_width => BAR_WIDTH,
            bars => bars,
            peak => if succeeded + failed + cancelled == 0 { 0 } else { peak },
        },
        totals => minijinja::context! { succeeded => succeeded, failed => failed, cancelled => cancelled },
        failures => failures,
        workers => workers,
        now => now.format("%H:%M:%S").to_string(),
    })
}

fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(at)
}

fn duration_text(seconds: u64) -> String {
    match seconds {
        0 => "—".into(),
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}
