#![doc = include_str!("../README.md")]

use std::future::Future;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use byok_core::{ErrorCode, JobStatus, ProviderId, QueueStats};
use prometheus::{
    CounterVec, Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// The content type of [`scrape`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a scrape waits for the queue or the store before leaving their
/// gauges out (and saying so in `byok_scrape_errors_total`).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every metric of the process. One per process ([`metrics`]): the API and
/// a worker in the same process (`byok run`) report into the same families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    jobs_enqueued: IntCounterVec,
    jobs_finished: IntCounterVec,
    job_duration: HistogramVec,
    provider_calls: HistogramVec,
    throttled_waits: IntCounterVec,
    steps_in_flight: IntGauge,
    jobs_live: IntGaugeVec,
    queue_items: IntGaugeVec,
    queue_oldest_pending: IntGaugeVec,
    scrape_errors: IntCounterVec,
    webhook_attempts: IntCounterVec,
    webhook_latency: HistogramVec,
    webhook_endpoints_disabled: IntCounterVec,
    estimated_spend: CounterVec,
    job_fallbacks: IntCounterVec,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// What a provider call was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Submitting a job.
    Submit,
    /// Asking where it stands.
    Poll,
    /// Cancelling it.
    Cancel,
    /// Downloading the video.
    Download,
}

impl Call {
    fn as_str(self) -> &'static str {
        match self {
            Call::Submit => "submit",
            Call::Poll => "poll",
            Call::Cancel => "cancel",
            Call::Download => "download",
        }
    }
}

/// Why a job waited without holding a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The key's own rate-limit window was full.
    Window,
    /// The provider answered 429.
    Provider,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
    labels: &[&str],
) -> HistogramVec {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Metrics {
    // The names and labels are fixed here; a bad one is a programming
    // error caught by the first test that touches metrics, hence `expect`.
    fn new() -> Metrics {
        let registry = Registry::new();
        let steps_in_flight = IntGauge::new(
            "byok_worker_steps_in_flight",
            "Job steps a worker of this process is executing now (each holds a worker slot)",
        )
        .expect("valid metric");
        registry
            .register(Box::new(steps_in_flight.clone()))
            .expect("unique metric");
        Metrics {
            jobs_enqueued: counter(
                &registry,
                "byok_jobs_enqueued_total",
                "Jobs accepted by POST /v1/jobs",
                &["provider"],
            ),
            job_fallbacks: counter(
                &registry,
                "byok_job_fallbacks_total",
                "Jobs moved to their next fallback provider before any provider accepted them, by the provider left, the one moved to, and why",
                &["from", "to", "reason"],
            ),
            estimated_spend: {
                let metric = CounterVec::new(
                    Opts::new(
                        "byok_estimated_spend_usd_total",
                        "Estimated spend of succeeded jobs on their users' keys, in US dollars, from list prices fixed at enqueue (jobs of unknown price are not counted)",
                    ),
                    &["provider", "model"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("unique metric");
                metric
            },
            jobs_finished: counter(
                &registry,
                "byok_jobs_finished_total",
                "Jobs that reached a final status, by outcome (succeeded, failed, cancelled) and error code",
                &["provider", "outcome", "code"],
            ),
            job_duration: histogram(
                &registry,
                "byok_job_duration_seconds",
                "Time from enqueue to a final status",
                vec![
                    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
                ],
                &["provider", "outcome"],
            ),
            provider_calls: histogram(
                &registry,
                "byok_provider_call_duration_seconds",
                "Latency of calls to the providers, by call and outcome (ok, error)",
                vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                &["provider", "call", "outcome"],
            ),
            throttled_waits: counter(
                &registry,
                "byok_throttled_waits_total",
                "Times a job waited for its key's rate limit (window) or a provider's 429 (provider); waits are not attempts",
                &["provider", "reason"],
            ),
            steps_in_flight,
            jobs_live: gauge(
                &registry,
                "byok_jobs_live",
                "Jobs not yet final, by status (read from the store at scrape time)",
                &["status"],
            ),
            queue_items: gauge(
                &registry,
                "byok_queue_items",
                "Work items by state (pending, scheduled, running, dead), read from the queue at scrape time",
                &["queue", "state"],
            ),
            queue_oldest_pending: gauge(
                &registry,
                "byok_queue_oldest_pending_seconds",
                "Age of the oldest pending work item",
                &["queue"],
            ),
            scrape_errors: counter(
                &registry,
                "byok_scrape_errors_total",
                "Scrapes that could not read a dependency (store, queue); its gauges keep their last values",
                &["dependency"],
            ),
            webhook_attempts: counter(
                &registry,
                "byok_webhook_attempts_total",
                "Webhook delivery attempts by outcome (delivered, retry, failed, gone, refused)",
                &["outcome"],
            ),
            webhook_latency: histogram(
                &registry,
                "byok_webhook_delivery_latency_seconds",
                "Time from the event (the job's transition) to its successful delivery",
                vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0, 86400.0,
                ],
                &[],
            ),
            webhook_endpoints_disabled: counter(
                &registry,
                "byok_webhook_endpoints_disabled_total",
                "Webhook endpoints disabled by delivery: `gone` (the receiver answered 410), `failing` (every delivery failed for 5 days)",
                &["reason"],
            ),
            registry,
        }
    }

    /// A webhook delivery attempt ended with `outcome` (`delivered`, `retry`, `failed`,
    /// `gone`, `refused`).
    pub fn webhook_attempt(&self, outcome: &'static str) {
        self.webhook_attempts.with_label_values(&[outcome]).inc();
    }

    /// An event reached its receiver this long after it happened.
    pub fn webhook_delivered_after(&self, latency: Duration) {
        self.webhook_latency
            .with_label_values(&[] as &[&str])
            .observe(latency.as_secs_f64());
    }

    /// Deliveries disabled an endpoint (`gone` or `failing`).
    pub fn webhook_endpoint_disabled(&self, reason: &'static str) {
        self.webhook_endpoints_disabled
            .with_label_values(&[reason])
            .inc();
    }

    /// A job was accepted.
    pub fn job_enqueued(&self, provider: ProviderId) {
        self.jobs_enqueued
            .with_label_values(&[provider.as_str()])
            .inc();
    }

    /// A job reached `status` (final) `age` after it was enqueued.
    pub fn job_finished(
        &self,
        provider: &str,
        status: JobStatus,
        code: Option<ErrorCode>,
        age: Duration,
    ) {
        let code = code.map_or("", ErrorCode::as_str);
        self.jobs_finished
            .with_label_values(&[provider, status.as_str(), code])
            .inc();
        self.job_duration
            .with_label_values(&[provider, status.as_str()])
            .observe(age.as_secs_f64());
    }

    /// How many jobs reached a final status in this process so far, whatever their
    /// provider and status: what a caller in the same process can wait on instead of
    /// counting rows in the database.
    pub fn jobs_finished_count(&self) -> u64 {
        use prometheus::core::Collector as _;
        self.jobs_finished
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum::<f64>() as u64
    }

    /// A succeeded job's estimated cost (its list price at enqueue).
    pub fn estimated_spend(&self, provider: &str, model: &str, cost: byok_core::Usd) {
        self.estimated_spend
            .with_label_values(&[provider, model])
            .inc_by(cost.micros().max(0) as f64 / 1_000_000.0);
    }

    /// A job moved from provider `from` to its next fallback `to` (`reason`: a job error
    /// code or `key_blocked`).
    pub fn job_fallback(&self, from: ProviderId, to: ProviderId, reason: &str) {
        self.job_fallbacks
            .with_label_values(&[from.as_str(), to.as_str(), reason])
            .inc();
    }

    /// A job waited for a rate limit.
    pub fn throttled(&self, provider: ProviderId, why: Throttle) {
        let reason = match why {
            Throttle::Window => "window",
            Throttle::Provider => "provider",
        };
        self.throttled_waits
            .with_label_values(&[provider.as_str(), reason])
            .inc();
    }

    /// Runs a provider call, recording its latency and whether it failed.
    pub async fn time_call<T, E>(
        &self,
        provider: ProviderId,
        call: Call,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = work.await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.provider_calls
            .with_label_values(&[provider.as_str(), call.as_str(), outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Counts a step as in flight until the guard drops.
    pub fn step_started(&self) -> StepGuard<'_> {
        self.steps_in_flight.inc();
        StepGuard(&self.steps_in_flight)
    }

    fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only on an invalid family, which the
        // constructors above cannot make.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "could not encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Keeps a step counted in `byok_worker_steps_in_flight`.
#[derive(Debug)]
pub struct StepGuard<'a>(&'a IntGauge);

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The Prometheus text of the process, with the queue's depth and the
/// store's live jobs (per status) read now by the two futures the caller
/// passes: this crate knows neither the queue nor the store, whoever serves
/// `/metrics` feeds them in. Each gets 2 s; one that fails or does not
/// answer is counted in `byok_scrape_errors_total` and its gauges keep
/// their last values, so a scrape never fails because Redis is slow.
pub async fn scrape<E1, E2>(
    queue_depth: impl Future<Output = Result<QueueStats, E1>>,
    live_jobs: impl Future<Output = Result<Vec<(JobStatus, u64)>, E2>>,
) -> String {
    let m = metrics();
    match tokio::time::timeout(SCRAPE_TIMEOUT, queue_depth).await {
        Ok(Ok(depth)) => {
            for (state, n) in [
                ("pending", depth.pending),
                ("scheduled", depth.scheduled),
                ("running", depth.running),
                ("dead", depth.dead),
            ] {
                m.queue_items
                    .with_label_values(&[depth.name.as_str(), state])
                    .set(gauge_value(n));
            }
            m.queue_oldest_pending
                .with_label_values(&[depth.name.as_str()])
                .set(gauge_value(depth.oldest_pending_seconds));
        }
        _ => m.scrape_errors.with_label_values(&["queue"]).inc(),
    }
    match tokio::time::timeout(SCRAPE_TIMEOUT, live_jobs).await {
        Ok(Ok(counts)) => {
            for status in [JobStatus::Queued, JobStatus::Throttled, JobStatus::Running] {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                m.jobs_live
                    .with_label_values(&[status.as_str()])
                    .set(gauge_value(n));
            }
        }
        _ => m.scrape_errors.with_label_values(&["store"]).inc(),
    }
    m.encode()
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_appear_in_the_text() {
        let m = metrics();
        m.job_enqueued(ProviderId::VEO);
        m.throttled(ProviderId::VEO, Throttle::Provider);
        let finished_before = m.jobs_finished_count();
        m.job_finished(
            "veo",
            JobStatus::Failed,
            Some(ErrorCode::ContentRejected),
            Duration::from_secs(3),
        );
        // Other tests of this process may finish jobs meanwhile.
        assert!(m.jobs_finished_count() > finished_before);
        m.provider_calls
            .with_label_values(&["veo", "poll", "ok"])
            .observe(0.2);
        {
            let _step = m.step_started();
            assert!(m.encode().contains("byok_worker_steps_in_flight 1"));
        }
        m.estimated_spend(
            "fal",
            "kling-v2.1-master",
            byok_core::Usd::from_micros(1_500_000),
        );
        m.estimated_spend(
            "fal",
            "kling-v2.1-master",
            byok_core::Usd::from_micros(2_750_000),
        );
        m.job_fallback(ProviderId::RUNWAY, ProviderId::FAL, "credentials_invalid");
        let text = m.encode();
        assert!(
            text.contains(
                "byok_estimated_spend_usd_total{model=\"kling-v2.1-master\",provider=\"fal\"} 4.25"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "byok_job_fallbacks_total{from=\"runway\",reason=\"credentials_invalid\",to=\"fal\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("byok_jobs_enqueued_total{provider=\"veo\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("byok_throttled_waits_total{provider=\"veo\",reason=\"provider\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("byok_jobs_finished_total{code=\"content_rejected\",outcome=\"failed\",provider=\"veo\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "byok_job_duration_seconds_bucket{outcome=\"failed\",provider=\"veo\",le=\"5\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("byok_worker_steps_in_flight 0"), "{text}");
        assert!(
            text.contains("# TYPE byok_provider_call_duration_seconds histogram"),
            "{text}"
        );
    }
}
