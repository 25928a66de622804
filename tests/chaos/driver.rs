//! The job stream: users with stored simulator keys submit Runway jobs through the real
//! HTTP API, some steadily and one in bursts above the key's per-minute limit, each job with
//! a prompt of its own (the simulator keeps each accepted submit's prompt, so the checks can
//! tell a job submitted twice). A submission the API did not answer 2xx — a connection cut
//! by a killed API, a 503 while a server is down — is sent again with the same
//! `Idempotency-Key` until it is; only then is the job counted as accepted.

use std::time::{Duration, Instant};

use byok_client::{Client, ClientError, GenerationRequest, IdempotencyKey, ProviderId};
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::faults::now_ms;
use crate::plan::{Plan, between};

/// Jobs a bursty user submits at once: more than the per-minute limit, so some wait.
const BURST: usize = 8;

/// A job the API accepted (answered 2xx).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: Uuid,
    pub prompt: String,
    /// When the 2xx came (unix ms).
    pub at_ms: i64,
    /// Requests it took (more than one: the API was down or answered 5xx meanwhile).
    pub tries: u32,
}

/// A submission the API refused for good (a 4xx), or never accepted before the driver
/// gave up.
#[derive(Debug, Clone)]
pub struct Refused {
    pub prompt: String,
    pub error: String,
}

/// What the users submitted.
#[derive(Debug, Default)]
pub struct Submissions {
    pub accepted: Vec<Accepted>,
    pub refused: Vec<Refused>,
}

/// The running stream.
#[derive(Debug)]
pub struct Driver {
    stop: watch::Sender<bool>,
    users: Vec<JoinHandle<Submissions>>,
}

impl Driver {
    /// Starts one task per user: the last one bursts, the others submit steadily. Each
    /// draws its pauses from the plan's seed. `give_up_at`: no submission is retried past it.
    pub fn start(
        client: &Client,
        users: &[Uuid],
        plan: &Plan,
        label: &str,
        give_up_at: Instant,
    ) -> Driver {
        let (stop, stopped) = watch::channel(false);
        let users = users
            .iter()
            .enumerate()
            .map(|(n, user)| {
                let stream = Stream {
                    client: client.clone(),
                    user: *user,
                    bursty: n + 1 == users.len(),
                    rng: plan.rng(1 + n as u64),
                    stopped: stopped.clone(),
                    label: format!("{label} user {n}"),
                    give_up_at,
                };
                tokio::spawn(stream.run())
            })
            .collect();
        Driver { stop, users }
    }

    /// Stops submitting (a submission under way is finished) and returns what was submitted.
    pub async fn finish(self) -> Submissions {
        let _ = self.stop.send(true);
        let mut all = Submissions::default();
        for user in self.users {
            let mine = user.await.expect("a user's stream ran to its end");
            all.accepted.extend(mine.accepted);
            all.refused.extend(mine.refused);
        }
        all
    }
}

struct Stream {
    client: Client,
    user: Uuid,
    bursty: bool,
    rng: StdRng,
    stopped: watch::Receiver<bool>,
    label: String,
    give_up_at: Instant,
}

impl Stream {
    async fn run(mut self) -> Submissions {
        let mut out = Submissions::default();
        let mut jobs = 0;
        let mut pause = between(&mut self.rng, 0, if self.bursty { 5_000 } else { 3_000 });
        loop {
            // The stream's own rhythm: a pause it drew, cut short by the stop.
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = self.stopped.changed() => {}
            }
            if *self.stopped.borrow() {
                break;
            }
            for _ in 0..if self.bursty { BURST } else { 1 } {
                jobs += 1;
                let prompt = format!("{} job {jobs}: a lighthouse at dusk", self.label);
                match self.submit(&prompt).await {
                    Ok(accepted) => out.accepted.push(accepted),
                    Err(error) => out.refused.push(Refused { prompt, error }),
                }
            }
            pause = if self.bursty {
                between(&mut self.rng, 60_000, 120_000)
            } else {
                between(&mut self.rng, 5_000, 15_000)
            };
        }
        out
    }

    /// Sends the job until the API answers 2xx (the same `Idempotency-Key` every time) or
    /// refuses it for good.
    async fn submit(&self, prompt: &str) -> Result<Accepted, String> {
        let request = GenerationRequest {
            prompt: Some(prompt.to_owned()),
            duration_seconds: Some(5),
            ..GenerationRequest::new(self.user, ProviderId::RUNWAY, "gen4.5")
        };
        let key = IdempotencyKey::random();
        let mut tries = 0;
        let mut backoff = Duration::from_millis(100);
        loop {
            tries += 1;
            match self.client.create_job(&request, Some(&key)).await {
                Ok(enqueued) => {
                    return Ok(Accepted {
                        id: enqueued.job.id,
                        prompt: prompt.to_owned(),
                        at_ms: now_ms(),
                        tries,
                    });
                }
                Err(e) if worth_retrying(&e) && Instant::now() < self.give_up_at => {
                    // A producer's backoff while the API or its servers are away.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(format!("after {tries} tries: {e}")),
            }
        }
    }
}

/// Whether a producer would send the job again: no answer at all (the API is down or was
/// killed mid-request), a 5xx, or a 429.
fn worth_retrying(error: &ClientError) -> bool {
    error
        .status()
        .is_none_or(|s| s.is_server_error() || s.as_u16() == 429)
}
