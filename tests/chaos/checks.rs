//! The end of a run. Once the faults stop (everything is up again), wait — polling, with a
//! deadline — until every accepted job is final and its final event reached the receiver,
//! then check:
//!
//! - every accepted job is final; none lost (each is listed for its user, and no job exists
//!   that the API never accepted);
//! - none was submitted twice: the simulator's record of accepted submits holds each job's
//!   prompt at most once, and a succeeded job's provider job id is that submit's;
//! - every failure is explained: the only one allowed is `submit_outcome_unknown` of a job
//!   whose submit was cut by a worker killed mid-submit or by PostgreSQL going away before
//!   its provider job id was written (docs/job-lifecycle.md, "Submit once"), shown by the
//!   fault log at the time the simulator saw the submit;
//! - no key's submits exceeded the per-minute limit in any 60 s window;
//! - every final job's event was delivered (verified) to the receiver at least once;
//! - no queue item is dead, and no process exited without being killed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use byok_client::{Client, ClientError, ErrorCode, JobStatus, JobView, ListJobs};
use byok_sim::AcceptedSubmit;
use uuid::Uuid;

use crate::driver::Submissions;
use crate::faults::{Fault, FaultKind};
use crate::plan::Plan;
use crate::receiver::Receiver;
use crate::system::{Exit, System, Topology};

/// How long the final events may take after the last job is final: a delivery pushed by
/// the sweeper (its relay's process was killed) waits up to 45 s.
const EVENTS_DEADLINE: Duration = Duration::from_secs(90);

/// How often the end of a run looks again.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// A user of the run: its id and its Runway key.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub key: String,
}

/// What a run did, for the checks.
#[derive(Debug)]
pub struct Run<'a> {
    pub plan: &'a Plan,
    pub topology: Topology,
    pub users: &'a [User],
    pub faults: &'a [Fault],
    pub submissions: &'a Submissions,
    pub receiver: &'a Receiver,
    /// When the run began (unix ms).
    pub started_ms: i64,
    /// The key's per-minute limit.
    pub per_minute: u32,
}

/// The checks' findings: the table, and every problem found.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    title: String,
    faults: BTreeMap<FaultKind, usize>,
    exits: usize,
    exits_at_start: usize,
    accepted: usize,
    retried: usize,
    succeeded: usize,
    failed: BTreeMap<String, usize>,
    checked: usize,
    not_final: usize,
    lost: usize,
    unexpected: usize,
    twice: usize,
    max_in_window: usize,
    per_minute: u32,
    events_expected: usize,
    events_received: usize,
    deliveries: usize,
    distinct_events: usize,
    refused_deliveries: usize,
    dead_items: u64,
    drained_in: Duration,
    timeline: Vec<String>,
}

/// Waits for the system to settle, checks it, and reports.
pub async fn check(sys: &mut System, run: &Run<'_>) -> Report {
    let mut report = Report {
        title: format!(
            "chaos: {} — seed {} — faults for {} s",
            run.topology.describe(),
            run.plan.seed,
            run.plan.fault_phase.as_secs()
        ),
        accepted: run.submissions.accepted.len(),
        retried: run
            .submissions
            .accepted
            .iter()
            .filter(|a| a.tries > 1)
            .count(),
        per_minute: run.per_minute,
        ..Report::default()
    };
    for fault in run.faults {
        *report.faults.entry(fault.kind).or_default() += 1;
        report.timeline.push(format!(
            "  {:>8} – {:>8}  {:<44} {}",
            at(fault.from_ms, run.started_ms),
            at(fault.until_ms, run.started_ms),
            fault.kind.describe(),
            fault.target
        ));
    }
    for refused in &run.submissions.refused {
        report.problems.push(format!(
            "the API never accepted {:?}: {}",
            refused.prompt, refused.error
        ));
    }

    let drain = Instant::now();
    let jobs = wait_until_final(sys, run).await;
    report.drained_in = drain.elapsed();
    check_jobs(&mut report, run, &jobs, &sys.d.sim.stats().await);
    check_events(&mut report, sys, run, &jobs).await;
    check_queues(&mut report, sys).await;
    for exit in &sys.exits {
        if starting_without_a_server(exit, run.faults) {
            report.exits_at_start += 1;
            continue;
        }
        report.exits += 1;
        report.problems.push(format!(
            "{} exited without being killed at {} ({}, started at {}); its log ends:\n{}",
            exit.process,
            at(exit.found_ms, run.started_ms),
            exit.status,
            at(exit.started_ms, run.started_ms),
            exit.log
        ));
    }
    report
}

/// How long after its start a process tries to reach its servers before it gives up: the
/// database pool waits 5 s for a connection (and a little more for the process to start).
const START_TIMEOUT_MS: i64 = 6_000;

/// Whether an exit is a process that could not start because a server it needs was down
/// at the time (as `byok api` and `byok worker` do, exiting 1 for their supervisor to start
/// them again): its last words say it could not connect, which only the start says (a
/// running process retries instead), and an outage was on while it was starting. When the
/// exit was noticed does not matter: the driver looks only between faults, so a process that
/// died during a long one is found late.
fn starting_without_a_server(exit: &Exit, faults: &[Fault]) -> bool {
    let could_not_connect = exit.log.lines().last().is_some_and(|line| {
        ["error: cannot connect to ", "error: cannot reach Redis "]
            .iter()
            .any(|start| line.starts_with(start))
    });
    could_not_connect
        && exit.status.contains("exit status: 1")
        && faults.iter().any(|f| {
            f.is_outage() && f.overlaps(exit.started_ms, exit.started_ms + START_TIMEOUT_MS)
        })
}

/// The time `ms` as seconds into the run.
fn at(ms: i64, started_ms: i64) -> String {
    if ms == i64::MAX {
        "(down)".to_owned()
    } else {
        format!("+{:.1}s", (ms - started_ms) as f64 / 1000.0)
    }
}

/// Every job of the run's users, as the API lists them, once every accepted one is final
/// (or the plan's deadline passed: what is listed then).
async fn wait_until_final(sys: &mut System, run: &Run<'_>) -> HashMap<Uuid, JobView> {
    let deadline = Instant::now() + run.plan.drain_deadline();
    let mut last = HashMap::new();
    loop {
        sys.supervise();
        if let Ok(jobs) = list_all(sys.d.client(), run.users).await {
            let done = run.submissions.accepted.iter().all(|a| {
                jobs.get(&a.id)
                    .is_some_and(|job: &JobView| job.status.is_terminal())
            });
            last = jobs;
            if done {
                return last;
            }
        }
        if Instant::now() >= deadline {
            return last;
        }
        // The jobs change in other processes; asking the API is how a producer learns it.
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Every job of `users`, by id.
async fn list_all(client: &Client, users: &[User]) -> Result<HashMap<Uuid, JobView>, ClientError> {
    let mut jobs = HashMap::new();
    for user in users {
        let mut query = ListJobs {
            limit: Some(100),
            ..ListJobs::default()
        };
        loop {
            let page = client.list_jobs(user.id, &query).await?;
            let next = query.after(&page);
            jobs.extend(page.jobs.into_iter().map(|job| (job.id, job)));
            match next {
                Some(next) => query = next,
                None => break,
            }
        }
    }
    Ok(jobs)
}

fn check_jobs(
    report: &mut Report,
    run: &Run<'_>,
    jobs: &HashMap<Uuid, JobView>,
    stats: &byok_sim::Stats,
) {
    // What the simulator accepted, per prompt.
    let mut submits: HashMap<&str, Vec<&AcceptedSubmit>> = HashMap::new();
    for user in run.users {
        let key = stats.runway.for_api_key(&user.key);
        for submit in key.iter().flat_map(|k| &k.accepted_submits) {
            let prompt = submit.prompt.as_deref().unwrap_or_default();
            submits.entry(prompt).or_default().push(submit);
        }
        let busiest = key.map_or(0, |k| k.max_submits_in_window(60_000));
        report.max_in_window = report.max_in_window.max(busiest);
        if busiest > run.per_minute as usize {
            report.problems.push(format!(
                "the key of user {} sent {busiest} submits within 60 s (limit {})",
                user.id, run.per_minute
            ));
        }
    }
    let accepted: HashSet<Uuid> = run.submissions.accepted.iter().map(|a| a.id).collect();
    let prompts: HashSet<&str> = run
        .submissions
        .accepted
        .iter()
        .map(|a| a.prompt.as_str())
        .collect();
    for job in jobs.values().filter(|job| !accepted.contains(&job.id)) {
        report.unexpected += 1;
        report.problems.push(format!(
            "job {} ({:?}) exists but the API never answered 2xx for it",
            job.id, job.request.prompt
        ));
    }
    for (prompt, made) in &submits {
        if !prompts.contains(prompt) {
            report.problems.push(format!(
                "the simulator made {} job(s) for {prompt:?}, which no accepted job asked for",
                made.len()
            ));
        }
    }

    for a in &run.submissions.accepted {
        let Some(job) = jobs.get(&a.id) else {
            report.lost += 1;
            report.problems.push(format!(
                "job {} ({:?}), accepted at {}, is gone",
                a.id,
                a.prompt,
                at(a.at_ms, run.started_ms)
            ));
            continue;
        };
        let made = submits
            .get(a.prompt.as_str())
            .map_or(&[][..], Vec::as_slice);
        if made.len() > 1 {
            report.twice += 1;
            report.problems.push(format!(
                "job {} ({:?}) was submitted {} times: {made:?}",
                a.id,
                a.prompt,
                made.len()
            ));
        }
        if !job.status.is_terminal() {
            report.not_final += 1;
            report.problems.push(format!(
                "job {} is still {} after {} s of draining (attempts {}, provider job {:?}, simulator submits {made:?})",
                a.id,
                job.status,
                run.plan.drain_deadline().as_secs(),
                job.attempts,
                job.provider_job_id
            ));
            continue;
        }
        report.checked += 1;
        match judge(&Ending::of(job), made, run.faults) {
            Ok(None) => report.succeeded += 1,
            Ok(Some(why)) => *report.failed.entry(why).or_default() += 1,
            Err(problem) => report.problems.push(format!(
                "job {} ({:?}): {problem}; simulator submits {made:?}",
                a.id, a.prompt
            )),
        }
    }
}

/// What the verdict on a final job reads of it.
#[derive(Debug, Clone)]
struct Ending {
    status: JobStatus,
    code: Option<ErrorCode>,
    /// The error as the API shows it, for the message.
    error: String,
    provider_job_id: Option<String>,
    /// From its creation to its end (unix ms).
    live_from_ms: i64,
    live_until_ms: i64,
}

impl Ending {
    fn of(job: &JobView) -> Ending {
        Ending {
            status: job.status,
            code: job.error.as_ref().map(|e| e.code),
            error: format!("{:?}", job.error),
            provider_job_id: job.provider_job_id.clone(),
            live_from_ms: job.created_at.timestamp_millis(),
            live_until_ms: job.finished_at.map_or(i64::MAX, |t| t.timestamp_millis()),
        }
    }
}

/// How long after the provider took a submit its worker still retries writing the provider's
/// job id while the database is away: until 3 s before the point another worker would call the
/// outcome unknown, 2 × `worker.request_timeout` (5 s here, `main.rs`) + 10 s after the
/// submit's claim, which came at most a second before the provider took it.
const RECORD_RETRIES_MS: i64 = 2 * 5_000 + 10_000 - 3_000 - 1_000;

/// A final job's verdict: `Ok(None)` succeeded as it should, `Ok(Some(why))` a failure
/// the fault log explains, `Err` anything else.
fn judge(
    job: &Ending,
    made: &[&AcceptedSubmit],
    faults: &[Fault],
) -> Result<Option<String>, String> {
    let kills = |from: i64, until: i64| {
        faults
            .iter()
            .any(|f| f.kind == FaultKind::WorkerKill && (from..=until).contains(&f.from_ms))
    };
    // PostgreSQL stopped by `by_ms` and still away at `still_ms`.
    let postgres_down = |by_ms: i64, still_ms: i64| {
        faults.iter().any(|f| {
            matches!(
                f.kind,
                FaultKind::PostgresFast | FaultKind::PostgresImmediate
            ) && f.from_ms <= by_ms
                && f.until_ms >= still_ms
        })
    };
    match (job.status, job.code) {
        (JobStatus::Succeeded, _) => match made {
            [submit] if job.provider_job_id.as_deref() == Some(submit.job_id.as_str()) => {
                Ok(None)
            }
            _ => Err(format!(
                "succeeded with provider job {:?}, which is not the one submit the simulator made",
                job.provider_job_id
            )),
        },
        (JobStatus::Failed, Some(ErrorCode::SubmitOutcomeUnknown)) => match made {
            // The provider made the job at `at_ms`; a worker killed right then, or the
            // database gone before the id could be written and away through the worker's
            // retries of that write ([`RECORD_RETRIES_MS`]), left the submit without its
            // answer.
            [submit] if kills(submit.at_ms - 1_000, submit.at_ms + 3_000) => Ok(Some(
                "submit_outcome_unknown: its worker was killed mid-submit".to_owned(),
            )),
            [submit] if postgres_down(submit.at_ms + 1_000, submit.at_ms + RECORD_RETRIES_MS) => Ok(Some(
                "submit_outcome_unknown: PostgreSQL went away before the provider's job id was written"
                    .to_owned(),
            )),
            // The submit was marked and never reached the provider: its worker died between.
            [] if kills(job.live_from_ms, job.live_until_ms) => Ok(Some(
                "submit_outcome_unknown: its worker was killed between marking and sending"
                    .to_owned(),
            )),
            _ => Err(format!(
                "failed submit_outcome_unknown with no fault to explain it: {}",
                job.error
            )),
        },
        (status, _) => Err(format!("ended {status}: {}", job.error)),
    }
}

/// Every final job's event (`job.succeeded`, `job.failed`) must reach the receiver.
async fn check_events(
    report: &mut Report,
    sys: &mut System,
    run: &Run<'_>,
    jobs: &HashMap<Uuid, JobView>,
) {
    let expected: HashSet<(Uuid, String)> = jobs
        .values()
        .filter(|job| job.status.is_terminal())
        .map(|job| (job.id, format!("job.{}", job.status)))
        .collect();
    let received = |deliveries: &[crate::receiver::Delivery]| {
        deliveries
            .iter()
            .filter_map(|d| Some((d.job?, d.event_type.clone())))
            .filter(|event| expected.contains(event))
            .collect::<HashSet<_>>()
    };
    let deadline = Instant::now() + EVENTS_DEADLINE;
    let mut deliveries = run.receiver.deliveries();
    while received(&deliveries).len() < expected.len() && Instant::now() < deadline {
        sys.supervise();
        // Woken by the next delivery; at the latest after POLL_EVERY, to start again any
        // process that exited meanwhile.
        run.receiver.next_delivery(POLL_EVERY).await;
        deliveries = run.receiver.deliveries();
    }
    let got = received(&deliveries);
    report.events_expected = expected.len();
    report.events_received = got.len();
    report.deliveries = deliveries.len();
    report.distinct_events = deliveries
        .iter()
        .map(|d| d.id.as_str())
        .collect::<HashSet<_>>()
        .len();
    report.refused_deliveries = run.receiver.refused();
    for (job, event) in expected.difference(&got) {
        report
            .problems
            .push(format!("no {event} event arrived for job {job}"));
    }
    if report.refused_deliveries > 0 {
        report.problems.push(format!(
            "{} deliveries did not verify",
            report.refused_deliveries
        ));
    }
}

/// No queue item may be dead (a job whose item died would stay where it was).
async fn check_queues(report: &mut Report, sys: &System) {
    let out = crate::helpers::run(
        sys.d.dir.path(),
        &sys.d.env_refs(),
        &["queue", "stats", "--json"],
    )
    .await;
    let stats: serde_json::Value = match serde_json::from_str(&out.stdout) {
        Ok(stats) => stats,
        Err(e) => {
            report.problems.push(format!(
                "byok queue stats --json: {e}: {}{}",
                out.stdout, out.stderr
            ));
            return;
        }
    };
    for queue in stats["queues"].as_array().into_iter().flatten() {
        let dead = queue["dead"].as_u64().unwrap_or_default();
        report.dead_items += dead;
        if dead > 0 {
            report
                .problems
                .push(format!("{dead} dead item(s) in queue {}", queue["name"]));
        }
    }
}

impl Report {
    /// The table the long form prints (the short one prints it too).
    pub fn table(&self) -> String {
        let n = |count: usize| count.to_string();
        let of = |a: usize, b: usize| format!("{a} / {b}");
        let mut rows: Vec<(usize, String, String)> =
            vec![(0, "faults injected".into(), "count".into())];
        rows.extend(
            self.faults
                .iter()
                .map(|(kind, count)| (1, kind.describe().into(), n(*count))),
        );
        rows.extend([
            (
                1,
                "processes that exited on their own".into(),
                n(self.exits),
            ),
            (
                1,
                "processes that could not start, a server down".into(),
                n(self.exits_at_start),
            ),
            (0, "jobs".into(), String::new()),
            (1, "accepted (2xx from the API)".into(), n(self.accepted)),
            (
                2,
                "of which needed more than one request".into(),
                n(self.retried),
            ),
            (1, "checked final".into(), n(self.checked)),
            (1, "succeeded".into(), n(self.succeeded)),
            (
                1,
                "failed, explained by a fault".into(),
                n(self.failed.values().sum()),
            ),
        ]);
        rows.extend(
            self.failed
                .iter()
                .map(|(why, count)| (2, why.clone(), n(*count))),
        );
        rows.extend([
            (1, "not final at the deadline".into(), n(self.not_final)),
            (1, "lost".into(), n(self.lost)),
            (1, "submitted twice".into(), n(self.twice)),
            (1, "existing but never accepted".into(), n(self.unexpected)),
            (
                0,
                "max submits of one key in a 60 s window".into(),
                of(self.max_in_window, self.per_minute as usize),
            ),
            (
                0,
                "webhook events received / expected".into(),
                of(self.events_received, self.events_expected),
            ),
            (
                1,
                "deliveries (an event's repeats included)".into(),
                n(self.deliveries),
            ),
            (
                1,
                "distinct event ids delivered".into(),
                n(self.distinct_events),
            ),
            (
                1,
                "deliveries that did not verify".into(),
                n(self.refused_deliveries),
            ),
            (0, "dead queue items".into(), self.dead_items.to_string()),
            (
                0,
                "drained after the faults stopped".into(),
                format!("{:.1}s", self.drained_in.as_secs_f64()),
            ),
            (0, "problems".into(), n(self.problems.len())),
        ]);
        let mut t = format!("\n{}\n", self.title);
        for (indent, name, value) in rows {
            let name = format!("{}{name}", "  ".repeat(indent));
            let _ = writeln!(t, "{name:<60} {value:>9}");
        }
        t
    }

    /// The fault log, for a failure message.
    pub fn timeline(&self) -> String {
        self.timeline.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: FaultKind, from_ms: i64, until_ms: i64) -> Fault {
        Fault {
            kind,
            target: String::new(),
            from_ms,
            until_ms,
        }
    }

    fn submit(at_ms: i64) -> AcceptedSubmit {
        AcceptedSubmit {
            at_ms,
            job_id: "task-1".to_owned(),
            prompt: Some("p".to_owned()),
        }
    }

    fn ending(status: JobStatus, code: Option<ErrorCode>, task: Option<&str>) -> Ending {
        Ending {
            status,
            code,
            error: String::new(),
            provider_job_id: task.map(str::to_owned),
            live_from_ms: 0,
            live_until_ms: 100_000,
        }
    }

    #[test]
    fn a_success_needs_the_one_submit_it_records() {
        let done = ending(JobStatus::Succeeded, None, Some("task-1"));
        let one = submit(10_000);
        assert_eq!(judge(&done, &[&one], &[]), Ok(None));
        assert!(judge(&done, &[&one, &one], &[]).is_err(), "twice");
        assert!(judge(&done, &[], &[]).is_err(), "never submitted");
        let other = ending(JobStatus::Succeeded, None, Some("task-2"));
        assert!(judge(&other, &[&one], &[]).is_err(), "another task");
    }

    #[test]
    fn an_unknown_submit_outcome_needs_a_fault_at_its_submit() {
        let unknown = ending(
            JobStatus::Failed,
            Some(ErrorCode::SubmitOutcomeUnknown),
            None,
        );
        // The simulator took the submit at 10 s.
        let one = submit(10_000);
        assert!(judge(&unknown, &[&one], &[]).is_err(), "no fault");
        for (kind, from_ms, until_ms, explains) in [
            (FaultKind::WorkerKill, 10_050, 11_000, true),
            (FaultKind::WorkerKill, 14_000, 15_000, false),
            (FaultKind::WorkerKill, 8_000, 9_000, false),
            (FaultKind::PostgresFast, 10_500, 30_000, true),
            (FaultKind::PostgresImmediate, 5_000, 27_000, true),
            // Back before the worker's retries of the write were over.
            (FaultKind::PostgresImmediate, 5_000, 11_000, false),
            (FaultKind::PostgresFast, 10_500, 20_000, false),
            (FaultKind::PostgresFast, 12_000, 20_000, false),
            (FaultKind::RedisKill, 10_000, 11_000, false),
        ] {
            let faults = [fault(kind, from_ms, until_ms)];
            assert_eq!(
                judge(&unknown, &[&one], &faults).is_ok(),
                explains,
                "{kind:?} from {from_ms} to {until_ms}"
            );
        }
        // Never sent: a worker died while the job was live.
        let kill = [fault(FaultKind::WorkerKill, 50_000, 51_000)];
        assert!(judge(&unknown, &[], &kill).is_ok());
        let api = [fault(FaultKind::ApiKill, 50_000, 51_000)];
        assert!(judge(&unknown, &[], &api).is_err());
    }

    #[test]
    fn other_failures_and_cancels_are_never_explained() {
        let kill = [fault(FaultKind::WorkerKill, 10_000, 11_000)];
        let one = submit(10_000);
        for (status, code) in [
            (JobStatus::Failed, Some(ErrorCode::ProviderUnavailable)),
            (JobStatus::Failed, Some(ErrorCode::Internal)),
            (JobStatus::Cancelled, Some(ErrorCode::Cancelled)),
        ] {
            assert!(judge(&ending(status, code, None), &[&one], &kill).is_err());
        }
    }

    #[test]
    fn an_exit_is_explained_only_at_a_start_refused_by_a_server_that_is_down() {
        let exit = |log: &str, started_ms: i64, found_ms: i64| Exit {
            process: "api".to_owned(),
            status: "exit status: 1".to_owned(),
            started_ms,
            found_ms,
            log: log.to_owned(),
        };
        let outage = [fault(FaultKind::PostgresFast, 10_000, 30_000)];
        let refused = "error: cannot connect to the database (database.url): database unavailable";
        assert!(starting_without_a_server(
            &exit(refused, 12_000, 17_500),
            &outage
        ));
        assert!(!starting_without_a_server(
            &exit(refused, 12_000, 17_500),
            &[]
        ));
        assert!(
            starting_without_a_server(&exit(refused, 12_000, 40_000), &outage),
            "found late, while the driver waited out another fault"
        );
        assert!(
            !starting_without_a_server(&exit(refused, 1_000, 17_500), &outage),
            "it had been running"
        );
        assert!(
            !starting_without_a_server(&exit("thread 'main' panicked", 12_000, 17_500), &outage),
            "another reason"
        );
    }
}
