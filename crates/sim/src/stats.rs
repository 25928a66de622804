//! What the simulator saw: per provider and per key, submits (with their
//! timestamps), polls, cancels and 429s; served at `GET /_sim/stats`.
//!
//! API keys are never stored or shown: a key is named by [`key_id`], the
//! first 16 hex characters of its SHA-256. Service accounts (Vertex) are
//! named by their `client_email`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// How the stats name an API key: the first 16 hex characters of the
/// SHA-256 of the key (`sha256("sim_abc")[..8]` as lowercase hex).
pub fn key_id(api_key: &str) -> String {
    let digest = Sha256::digest(api_key.as_bytes());
    hex::encode(&digest[..8])
}

/// Counts of requests, for one key or summed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Authenticated submit requests, whatever their answer (accepted,
    /// rejected or throttled).
    pub submits: u64,
    /// Submits that created a job.
    pub accepted: u64,
    /// Submits refused with a 4xx other than 429 (validation, moderation at
    /// submit, unknown model).
    pub rejected: u64,
    /// 429 answers sent (submits, and Stability's burst limit on any request).
    pub throttled: u64,
    /// Authenticated status requests (Runway task GET, Stability result GET,
    /// Vertex `fetchPredictOperation`, Vertex interaction GET).
    pub polls: u64,
    /// Runway `DELETE /v1/tasks/{id}` requests, Vertex interaction cancels, fal cancels.
    pub cancels: u64,
    /// Requests refused for their credentials (bad key, bad JWT, bad token).
    pub unauthorized: u64,
    /// Vertex access tokens issued.
    pub tokens: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.submits += other.submits;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.throttled += other.throttled;
        self.polls += other.polls;
        self.cancels += other.cancels;
        self.unauthorized += other.unauthorized;
        self.tokens += other.tokens;
    }
}

/// One key's (or service account's) counters and submit times.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStats {
    /// The counters.
    #[serde(flatten)]
    pub counters: Counters,
    /// When each submit arrived, unix milliseconds at the simulator's clock,
    /// in arrival order (one per `submits`).
    pub submit_times_ms: Vec<i64>,
    /// Each submit that created a job, in arrival order, with the job it made and its
    /// prompt: how a test tells which of its jobs were submitted more than once. Runway's
    /// submits only; other providers leave it empty.
    #[serde(default)]
    pub accepted_submits: Vec<AcceptedSubmit>,
}

/// A submit that created a job at the simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedSubmit {
    /// When it arrived (unix ms, simulator clock).
    pub at_ms: i64,
    /// The job it created: the id the provider answered (Runway's task id).
    pub job_id: String,
    /// The request's prompt (Runway's `promptText`), when it had one.
    pub prompt: Option<String>,
}

impl KeyStats {
    /// The most submits found in any window of `window_ms` milliseconds
    /// (a window `[t, t + window_ms)` starting at some submit).
    pub fn max_submits_in_window(&self, window_ms: i64) -> usize {
        max_in_window(&self.submit_times_ms, window_ms)
    }
}

/// The most of `times` found in any window `[t, t + window_ms)` starting at one of them.
fn max_in_window(times: &[i64], window_ms: i64) -> usize {
    let mut times = times.to_vec();
    times.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window_ms {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// How many request arrival times a provider's stats keep (the latest ones).
pub const REQUEST_TIMES_KEPT: usize = 100_000;

/// One provider's stats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStats {
    /// Sum over all keys (and over requests that named no key).
    pub totals: Counters,
    /// Per key: [`key_id`] for Runway and Stability, `client_email` for Vertex.
    pub keys: BTreeMap<String, KeyStats>,
    /// When every request to the provider's API and its file downloads arrived, whatever
    /// its key or answer (unix ms, arrival order; the latest [`REQUEST_TIMES_KEPT`]).
    /// Vertex's token endpoint is not counted: it stands for Google's OAuth service.
    #[serde(default)]
    pub request_times_ms: Vec<i64>,
}

impl ProviderStats {
    /// The stats of an API key, by the key itself.
    pub fn for_api_key(&self, api_key: &str) -> Option<&KeyStats> {
        self.keys.get(&key_id(api_key))
    }

    /// The most requests that arrived within any window of `window_ms` milliseconds.
    pub fn max_requests_in_window(&self, window_ms: i64) -> usize {
        max_in_window(&self.request_times_ms, window_ms)
    }
}

/// Everything, as `GET /_sim/stats` serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// The simulator's clock when the stats were taken (unix ms).
    pub now_ms: i64,
    /// Sum over the providers.
    pub totals: Counters,
    /// `/runway`, keys by [`key_id`].
    pub runway: ProviderStats,
    /// `/stability`, keys by [`key_id`].
    pub stability: ProviderStats,
    /// `/vertex` and the token endpoint, keys by service-account email.
    pub vertex: ProviderStats,
    /// `/replicate` (its API and output downloads), keys by [`key_id`].
    #[serde(default)]
    pub replicate: ProviderStats,
    /// `/fal`, `/fal-rest`, `/fal-media` and the TLS listener, keys by [`key_id`].
    #[serde(default)]
    pub fal: ProviderStats,
    /// `/luma` (its API and output downloads), keys by [`key_id`].
    #[serde(default)]
    pub luma: ProviderStats,
    /// `/synthesia` (its API and video downloads), keys by [`key_id`].
    #[serde(default)]
    pub synthesia: ProviderStats,
    /// `/acme`, the simulator's own test API (its API and video downloads), keys by
    /// [`key_id`].
    #[serde(default)]
    pub acme: ProviderStats,
}

/// The simulated providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Provider {
    Runway,
    Stability,
    Vertex,
    Replicate,
    Fal,
    Luma,
    Synthesia,
    Acme,
}

impl Provider {
    /// Every simulated provider.
    pub const ALL: [Provider; 8] = [
        Provider::Runway,
        Provider::Stability,
        Provider::Vertex,
        Provider::Replicate,
        Provider::Fal,
        Provider::Luma,
        Provider::Synthesia,
        Provider::Acme,
    ];

    /// Its name in [`Stats`] (`"runway"`, …, `"acme"`).
    pub fn name(self) -> &'static str {
        match self {
            Provider::Runway => "runway",
            Provider::Stability => "stability",
            Provider::Vertex => "vertex",
            Provider::Replicate => "replicate",
            Provider::Fal => "fal",
            Provider::Luma => "luma",
            Provider::Synthesia => "synthesia",
            Provider::Acme => "acme",
        }
    }

    /// The provider named `name` in [`Stats`].
    pub fn named(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One thing to count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Accepted,
    Rejected,
    /// A 429; `submit` says whether it answered a submit.
    Throttled {
        submit: bool,
    },
    Poll,
    Cancel,
    Unauthorized,
    Token,
}

/// The mutable tally behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    keys: HashMap<(Provider, String), KeyStats>,
    /// Events that named no key (e.g. a request without credentials).
    anonymous: HashMap<Provider, Counters>,
    /// Arrival times of every request, per provider (bounded).
    requests: HashMap<Provider, VecDeque<i64>>,
}

impl Recorder {
    /// Notes that a request to `provider` arrived at `now_ms`.
    pub fn record_request(&mut self, provider: Provider, now_ms: i64) {
        let times = self.requests.entry(provider).or_default();
        if times.len() == REQUEST_TIMES_KEPT {
            times.pop_front();
        }
        times.push_back(now_ms);
    }

    /// Counts `event` for `principal` (a key id or an email), at `now_ms`.
    pub fn record(
        &mut self,
        provider: Provider,
        principal: Option<&str>,
        event: Event,
        now_ms: i64,
    ) {
        let Some(principal) = principal else {
            bump(self.anonymous.entry(provider).or_default(), event);
            return;
        };
        let stats = match self.keys.get_mut(&(provider, principal.to_owned())) {
            Some(stats) => stats,
            None => self
                .keys
                .entry((provider, principal.to_owned()))
                .or_default(),
        };
        let submit = matches!(
            event,
            Event::Accepted | Event::Rejected | Event::Throttled { submit: true }
        );
        if submit {
            stats.counters.submits += 1;
            stats.submit_times_ms.push(now_ms);
        }
        bump(&mut stats.counters, event);
    }

    /// Counts an accepted submit for `principal` and keeps its record.
    pub fn record_accepted(&mut self, provider: Provider, principal: &str, submit: AcceptedSubmit) {
        self.record(provider, Some(principal), Event::Accepted, submit.at_ms);
        if let Some(stats) = self.keys.get_mut(&(provider, principal.to_owned())) {
            stats.accepted_submits.push(submit);
        }
    }

    pub fn snapshot(&self, now_ms: i64) -> Stats {
        let mut stats = Stats {
            now_ms,
            ..Stats::default()
        };
        for ((provider, principal), key) in &self.keys {
            let p = provider_mut(&mut stats, *provider);
            p.totals.add(&key.counters);
            p.keys.insert(principal.clone(), key.clone());
        }
        for (provider, counters) in &self.anonymous {
            provider_mut(&mut stats, *provider).totals.add(counters);
        }
        for (provider, times) in &self.requests {
            provider_mut(&mut stats, *provider).request_times_ms = times.iter().copied().collect();
        }
        let mut totals = Counters::default();
        for p in [
            &stats.runway,
            &stats.stability,
            &stats.vertex,
            &stats.replicate,
            &stats.fal,
            &stats.luma,
            &stats.synthesia,
            &stats.acme,
        ] {
            totals.add(&p.totals);
        }
        stats.totals = totals;
        stats
    }
}

fn provider_mut(stats: &mut Stats, provider: Provider) -> &mut ProviderStats {
    match provider {
        Provider::Runway => &mut stats.runway,
        Provider::Stability => &mut stats.stability,
        Provider::Vertex => &mut stats.vertex,
        Provider::Replicate => &mut stats.replicate,
        Provider::Fal => &mut stats.fal,
        Provider::Luma => &mut stats.luma,
        Provider::Synthesia => &mut stats.synthesia,
        Provider::Acme => &mut stats.acme,
    }
}

fn bump(c: &mut Counters, event: Event) {
    match event {
        Event::Accepted => c.accepted += 1,
        Event::Rejected => c.rejected += 1,
        Event::Throttled { .. } => c.throttled += 1,
        Event::Poll => c.polls += 1,
        Event::Cancel => c.cancels += 1,
        Event::Unauthorized => c.unauthorized += 1,
        Event::Token => c.tokens += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_16_hex_of_sha256() {
        // sha256("abc") = ba7816bf8f01cfea…
        assert_eq!(key_id("abc"), "ba7816bf8f01cfea");
    }

    #[test]
    fn submits_count_every_answer_and_totals_add_up() {
        let mut r = Recorder::default();
        r.record(Provider::Runway, Some("k1"), Event::Accepted, 10);
        r.record(
            Provider::Runway,
            Some("k1"),
            Event::Throttled { submit: true },
            20,
        );
        r.record(Provider::Runway, Some("k1"), Event::Rejected, 30);
        r.record(Provider::Runway, Some("k1"), Event::Poll, 40);
        r.record(Provider::Runway, None, Event::Unauthorized, 50);
        r.record(Provider::Vertex, Some("a@b"), Event::Token, 60);
        let s = r.snapshot(99);
        let k1 = &s.runway.keys["k1"];
        assert_eq!(k1.counters.submits, 3);
        assert_eq!(k1.submit_times_ms, [10, 20, 30]);
        assert_eq!(k1.counters.polls, 1);
        assert_eq!(s.runway.totals.unauthorized, 1);
        assert_eq!(s.totals.tokens, 1);
        assert_eq!(s.totals.submits, 3);
        assert_eq!(s.now_ms, 99);
    }

    #[test]
    fn accepted_submits_are_counted_and_kept_with_their_job_and_prompt() {
        let mut r = Recorder::default();
        let submit = |at_ms, job: &str, prompt: Option<&str>| AcceptedSubmit {
            at_ms,
            job_id: job.to_owned(),
            prompt: prompt.map(str::to_owned),
        };
        r.record_accepted(Provider::Runway, "k1", submit(10, "t1", Some("a harbour")));
        r.record(
            Provider::Runway,
            Some("k1"),
            Event::Throttled { submit: true },
            15,
        );
        r.record_accepted(Provider::Runway, "k1", submit(20, "t2", None));
        let k1 = &r.snapshot(30).runway.keys["k1"];
        assert_eq!((k1.counters.submits, k1.counters.accepted), (3, 2));
        assert_eq!(k1.submit_times_ms, [10, 15, 20]);
        assert_eq!(
            k1.accepted_submits,
            [submit(10, "t1", Some("a harbour")), submit(20, "t2", None)]
        );
    }

    #[test]
    fn providers_are_named_as_the_stats_name_them() {
        for provider in Provider::ALL {
            assert_eq!(Provider::named(provider.name()), Some(provider));
        }
        let stats = serde_json::to_value(Stats::default()).unwrap();
        for provider in Provider::ALL {
            assert!(stats.get(provider.name()).is_some(), "{}", provider.name());
        }
        assert_eq!(Provider::named("nobody"), None);
    }

    #[test]
    fn the_busiest_window() {
        let k = KeyStats {
            submit_times_ms: vec![0, 59_999, 60_000, 61_000, 200_000],
            ..KeyStats::default()
        };
        assert_eq!(k.max_submits_in_window(60_000), 3);
        assert_eq!(KeyStats::default().max_submits_in_window(60_000), 0);
    }
}
