//! The simulator's memory: jobs of each provider, issued tokens, stats, and
//! the pieces of behaviour the providers share (the render timeline, the
//! throttling decisions, the outcome draw).
//!
//! Jobs do not run anywhere: a job is its submit time, its render time and
//! its outcome, drawn at submit; its state is computed from the clock when
//! it is asked for. So there are no background tasks, and every request is
//! O(1) work under a short, never-awaited `std` mutex.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use sha2::{Digest as _, Sha256};

use crate::clock::{Clock, ms};
use crate::config::SimConfig;
use crate::oauth::TrustStore;
use crate::stats::{Event, Provider, Recorder};
use crate::{acme, fal, interactions, luma, replicate, runway, stability, synthesia, vertex};

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    config: RwLock<Arc<SimConfig>>,
    pub clock: Clock,
    /// Where clients reach the simulator, without a trailing slash.
    pub public_url: String,
    pub runway: Mutex<Jobs<runway::Task>>,
    pub stability: Mutex<Jobs<stability::Job>>,
    pub vertex: Mutex<Jobs<vertex::Operation>>,
    /// Vertex AI interactions (Gemini Omni), by id.
    pub interactions: Mutex<Jobs<interactions::Interaction>>,
    /// Replicate predictions and uploaded files.
    pub replicate: Mutex<replicate::Store>,
    /// fal requests and each key's queue.
    pub fal: Mutex<fal::Store>,
    /// Luma Agents generations.
    pub luma: Mutex<luma::Store>,
    /// Synthesia videos.
    pub synthesia: Mutex<synthesia::Store>,
    /// The Acme test API's videos.
    pub acme: Mutex<acme::Store>,
    /// Canned answers waiting for providers' next requests (`/_sim/faults`).
    pub faults: crate::control::Faults,
    /// Cloud Storage objects written by Vertex jobs, by `bucket/object`.
    pub objects: Mutex<Jobs<vertex::Object>>,
    pub tokens: Mutex<Tokens>,
    pub trust: TrustStore,
    stats: Mutex<Recorder>,
    /// Principals whose one `sim_throttled` 429 has been sent.
    throttled_once: Mutex<HashSet<(Provider, String)>>,
    /// Stability's per-key burst limit.
    bursts: Mutex<HashMap<KeyHash, Burst>>,
}

/// Locks a mutex, ignoring poisoning: no handler panics while holding one,
/// and if one did the data would still be consistent enough for a test
/// double.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(config: SimConfig, clock: Clock, public_url: String, trust: TrustStore) -> Shared {
        Shared {
            config: RwLock::new(Arc::new(config)),
            clock,
            public_url,
            runway: Mutex::new(Jobs::default()),
            stability: Mutex::new(Jobs::default()),
            vertex: Mutex::new(Jobs::default()),
            interactions: Mutex::new(Jobs::default()),
            replicate: Mutex::new(replicate::Store::default()),
            fal: Mutex::new(fal::Store::default()),
            luma: Mutex::new(luma::Store::default()),
            synthesia: Mutex::new(synthesia::Store::default()),
            acme: Mutex::new(acme::Store::default()),
            faults: crate::control::Faults::default(),
            objects: Mutex::new(Jobs::default()),
            tokens: Mutex::new(Tokens::default()),
            trust,
            stats: Mutex::new(Recorder::default()),
            throttled_once: Mutex::new(HashSet::new()),
            bursts: Mutex::new(HashMap::new()),
        }
    }

    /// The knobs in force now.
    pub fn config(&self) -> Arc<SimConfig> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_config(&self, config: SimConfig) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn record(&self, provider: Provider, principal: Option<&str>, event: Event) {
        let now = self.now_ms();
        lock(&self.stats).record(provider, principal, event, now);
    }

    /// Counts an accepted submit of `principal` that created `job_id`, keeping its prompt.
    pub fn record_accepted(
        &self,
        provider: Provider,
        principal: &str,
        job_id: &str,
        prompt: Option<&str>,
    ) {
        let submit = crate::stats::AcceptedSubmit {
            at_ms: self.now_ms(),
            job_id: job_id.to_owned(),
            prompt: prompt.map(str::to_owned),
        };
        lock(&self.stats).record_accepted(provider, principal, submit);
    }

    pub fn record_request(&self, provider: Provider) {
        let now = self.now_ms();
        lock(&self.stats).record_request(provider, now);
    }

    pub fn stats(&self) -> crate::Stats {
        lock(&self.stats).snapshot(self.now_ms())
    }

    /// Forgets jobs, tokens, stats, pending faults and throttling history (not the
    /// knobs, nor the trusted service accounts).
    pub fn reset(&self) {
        *lock(&self.runway) = Jobs::default();
        *lock(&self.stability) = Jobs::default();
        *lock(&self.vertex) = Jobs::default();
        *lock(&self.interactions) = Jobs::default();
        *lock(&self.replicate) = replicate::Store::default();
        *lock(&self.fal) = fal::Store::default();
        *lock(&self.luma) = luma::Store::default();
        *lock(&self.synthesia) = synthesia::Store::default();
        *lock(&self.acme) = acme::Store::default();
        self.faults.clear();
        *lock(&self.objects) = Jobs::default();
        *lock(&self.tokens) = Tokens::default();
        *lock(&self.stats) = Recorder::default();
        lock(&self.throttled_once).clear();
        lock(&self.bursts).clear();
    }

    /// Whether this submit is answered 429: the first submit of a
    /// `sim_throttled…` principal (`special`), else a draw at the
    /// configured throttle rate.
    pub fn throttle_submit(&self, provider: Provider, principal: &str, special: bool) -> bool {
        if special && lock(&self.throttled_once).insert((provider, principal.to_owned())) {
            return true;
        }
        chance(self.config().throttle_rate)
    }

    /// Stability's burst limit (S-RL): more than `limit` requests from one
    /// key within 10 s → 429, then 429 for everything from it for 60 s.
    /// Returns true when this request must be refused.
    pub fn stability_burst_exceeded(&self, key: &KeyHash, limit: u32) -> bool {
        if limit == 0 {
            return false;
        }
        let now = self.now_ms();
        let mut bursts = lock(&self.bursts);
        let burst = bursts.entry(*key).or_default();
        if now < burst.locked_until_ms {
            return true;
        }
        burst.times.push_back(now);
        while burst.times.front().is_some_and(|&t| t <= now - 10_000) {
            burst.times.pop_front();
        }
        if burst.times.len() > limit as usize {
            burst.times.clear();
            burst.locked_until_ms = now + 60_000;
            return true;
        }
        false
    }
}

#[derive(Debug, Default)]
struct Burst {
    times: VecDeque<i64>,
    locked_until_ms: i64,
}

/// True with probability `share` (0 never, 1 always).
pub(crate) fn chance(share: f64) -> bool {
    share > 0.0 && rand::random::<f64>() < share
}

/// The SHA-256 of an API key: what a job remembers of its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(key: &str) -> KeyHash {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// The stats' name of the key (see [`crate::key_id`]).
    pub fn id(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

/// Jobs by id, forgotten `retention` after their submit.
#[derive(Debug)]
pub(crate) struct Jobs<T> {
    map: HashMap<String, T>,
    /// Ids in submit order, for expiry in O(1) amortised per insert.
    order: VecDeque<(i64, String)>,
}

impl<T> Default for Jobs<T> {
    fn default() -> Self {
        Jobs {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T> Jobs<T> {
    pub fn insert(&mut self, id: String, job: T, now_ms: i64, retention_ms: i64) {
        self.expire(now_ms, retention_ms);
        self.order.push_back((now_ms, id.clone()));
        self.map.insert(id, job);
    }

    pub fn get(&mut self, id: &str, now_ms: i64, retention_ms: i64) -> Option<&T> {
        self.expire(now_ms, retention_ms);
        self.map.get(id)
    }

    pub fn get_mut(&mut self, id: &str, now_ms: i64, retention_ms: i64) -> Option<&mut T> {
        self.expire(now_ms, retention_ms);
        self.map.get_mut(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<T> {
        self.map.remove(id)
    }

    fn expire(&mut self, now_ms: i64, retention_ms: i64) {
        while let Some((at, _)) = self.order.front() {
            if at.saturating_add(retention_ms) > now_ms {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.map.remove(&id);
            }
        }
    }
}

/// Where a job is in its render, at some instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    /// Queued: the first tenth of the render time.
    Pending,
    /// Rendering, with the share done (0–1).
    Running(f64),
    Done,
}

/// The timeline every job follows: `Pending` for the first tenth of its
/// render time, then `Running`, then `Done` once the render time has passed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeline {
    pub submitted_ms: i64,
    pub render_ms: i64,
}

impl Timeline {
    pub fn starting_now(shared: &Shared, config: &SimConfig) -> Timeline {
        Timeline {
            submitted_ms: shared.now_ms(),
            render_ms: ms(config.render_time),
        }
    }

    pub fn phase(&self, now_ms: i64) -> Phase {
        let elapsed = now_ms - self.submitted_ms;
        if elapsed >= self.render_ms {
            Phase::Done
        } else if elapsed * 10 < self.render_ms {
            Phase::Pending
        } else {
            // Two decimals: a progress a person would read.
            let share = elapsed as f64 / self.render_ms as f64;
            Phase::Running((share * 100.0).floor() / 100.0)
        }
    }
}

/// How a job ends, drawn at submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    /// Output moderation (Runway `SAFETY.*`, Vertex RAI filter, Stability
    /// `CONTENT_FILTERED`).
    Moderated,
    Failed,
}

impl Outcome {
    /// Moderated when the prompt holds the trigger, else failed at the
    /// failure rate, else success.
    pub fn draw(config: &SimConfig, prompt: Option<&str>) -> Outcome {
        let trigger = config.moderation_trigger.as_str();
        if !trigger.is_empty() && prompt.is_some_and(|p| p.contains(trigger)) {
            Outcome::Moderated
        } else if chance(config.failure_rate) {
            Outcome::Failed
        } else {
            Outcome::Success
        }
    }
}

/// Issued Vertex access tokens.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    map: HashMap<String, Token>,
    /// Tokens in issue order, to drop expired ones without a scan.
    order: VecDeque<(i64, String)>,
}

/// Who an access token speaks for, and until when.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub client_email: String,
    pub project_id: String,
    pub expires_ms: i64,
}

impl Tokens {
    pub fn insert(&mut self, token: String, value: Token, now_ms: i64) {
        self.expire(now_ms);
        self.order.push_back((value.expires_ms, token.clone()));
        self.map.insert(token, value);
    }

    /// The live token's owner; `None` for unknown or expired tokens.
    pub fn get(&mut self, token: &str, now_ms: i64) -> Option<Token> {
        self.expire(now_ms);
        self.map
            .get(token)
            .filter(|t| t.expires_ms > now_ms)
            .cloned()
    }

    fn expire(&mut self, now_ms: i64) {
        // Lifetimes can change at run time, so expiry times are not quite in
        // issue order: stop at the first live token; the rest go later.
        while let Some((expires, _)) = self.order.front() {
            if *expires > now_ms {
                break;
            }
            if let Some((_, token)) = self.order.pop_front() {
                self.map.remove(&token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_walks_pending_running_done() {
        let t = Timeline {
            submitted_ms: 1000,
            render_ms: 1000,
        };
        assert_eq!(t.phase(1000), Phase::Pending);
        assert_eq!(t.phase(1099), Phase::Pending);
        assert_eq!(t.phase(1100), Phase::Running(0.1));
        assert_eq!(t.phase(1505), Phase::Running(0.5));
        assert_eq!(t.phase(2000), Phase::Done);
        let instant = Timeline {
            submitted_ms: 1000,
            render_ms: 0,
        };
        assert_eq!(instant.phase(1000), Phase::Done);
    }

    #[test]
    fn jobs_are_forgotten_after_retention() {
        let mut jobs = Jobs::default();
        jobs.insert("a".into(), 1, 0, 100);
        jobs.insert("b".into(), 2, 50, 100);
        assert_eq!(jobs.get("a", 99, 100), Some(&1));
        assert_eq!(jobs.get("a", 100, 100), None);
        assert_eq!(jobs.get("b", 100, 100), Some(&2));
        assert_eq!(jobs.remove("b"), Some(2));
        assert_eq!(jobs.get("b", 100, 100), None);
    }

    #[test]
    fn tokens_expire() {
        let mut tokens = Tokens::default();
        let t = Token {
            client_email: "a@b".into(),
            project_id: "p".into(),
            expires_ms: 1000,
        };
        tokens.insert("t".into(), t, 0);
        assert!(tokens.get("t", 999).is_some());
        assert!(tokens.get("t", 1000).is_none());
        assert!(tokens.get("nope", 0).is_none());
    }

    #[test]
    fn outcomes() {
        let config = SimConfig::default();
        assert_eq!(
            Outcome::draw(&config, Some("a sim:moderate b")),
            Outcome::Moderated
        );
        assert_eq!(Outcome::draw(&config, Some("fine")), Outcome::Success);
        assert_eq!(Outcome::draw(&config, None), Outcome::Success);
        let failing = SimConfig {
            failure_rate: 1.0,
            moderation_trigger: String::new(),
            ..SimConfig::default()
        };
        assert_eq!(
            Outcome::draw(&failing, Some("sim:moderate")),
            Outcome::Failed
        );
    }
}
