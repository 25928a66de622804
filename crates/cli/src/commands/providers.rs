//! `byok providers check FILE --against URL`: walks a declarative provider definition
//! through what a worker does with it (key check, submit, poll, download, cancel) against a
//! live endpoint or the simulator, and prints a PASS/FAIL/SKIP line per step.
//!
//! The adapter is built exactly as the running system builds it (`RegistryOptions`,
//! `declare`, `Registry::new`), so a definition that passes here behaves the same in a
//! worker; only the base URL (and, for a private target, the private-network policy) differ.
//!
//! A real endpoint bills the submitted job, and the cancel step submits a second one
//! (`--no-cancel` skips it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use byok_core::{ErrorCode, GenerationRequest, ModelStatus, ProviderId, RetryClass};
use byok_providers::declarative::Definition;
use byok_providers::{
    CancelOutcome, CredentialCheck, Credentials, Registry, RegistryOptions, RemoteStatus,
    SubmitRequest, ValidatedRequest, VideoOutput, VideoProvider,
};
use clap::{Args, Subcommand};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::table::Table;

/// The environment variable read for the credentials when neither `--credentials` nor
/// `--credentials-file` is given, so that a key need not appear on a command line (where
/// `ps` and shell history would show it).
pub const CREDENTIALS_ENV: &str = "BYOK_CHECK_CREDENTIALS";

/// The prompt of the check's job unless `--prompt` says otherwise: neutral, and accepted by
/// every video model's moderation.
const DEFAULT_PROMPT: &str = "A paper boat drifting down a rain-soaked street, cinematic";

/// How many times a throttled submit (a 429: nothing was created) is sent again.
const SUBMIT_THROTTLE_RETRIES: u32 = 2;
/// How many failed polls in a row are tolerated when the failure is transient (a 5xx, a
/// timeout, a 429), as a worker tolerates them, before the poll step fails.
const POLL_TRANSIENT_TOLERANCE: u32 = 3;

/// `byok providers …`.
#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Walk a provider definition through key check, submit, poll, download and cancel
    /// against a live endpoint or the simulator; prints PASS/FAIL/SKIP per step and exits 0
    /// only when nothing failed. A live endpoint bills the job (and a second one for the
    /// cancel step).
    Check(CheckArgs),
}

/// `byok providers check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The provider definition (a `*.toml` file; format in crates/providers/README.md).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The base URL to check against, replacing the definition's `base_url` (http is
    /// allowed: it is your explicit target), e.g. `http://127.0.0.1:9090/luma/v1` for
    /// `byok sim`.
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub against: reqwest::Url,
    /// The credentials: a JSON object of the definition's credential fields, e.g.
    /// `{"api_key":"…"}`. Prefer --credentials-file or the BYOK_CHECK_CREDENTIALS
    /// environment variable, which keep the key off the command line.
    #[arg(long, value_name = "JSON", value_parser = secret_arg, conflicts_with = "credentials_file")]
    pub credentials: Option<SecretArg>,
    /// A file holding the credentials' JSON object.
    #[arg(long, value_name = "PATH")]
    pub credentials_file: Option<PathBuf>,
    /// The model to submit to [default: the definition's first available model].
    #[arg(long, value_name = "M")]
    pub model: Option<String>,
    /// The prompt of the check's job.
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_PROMPT)]
    pub prompt: String,
    /// How long the whole check may take (e.g. `10m`, `90s`); a step still running then fails.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Time between polls, replacing the definition's `poll_interval_secs` (e.g. `2s`, or
    /// `100ms` against the simulator).
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub poll_interval: Option<Duration>,
    /// Skip the cancel step (it submits, and at a real provider pays for, a second job).
    #[arg(long)]
    pub no_cancel: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A command-line value that is a secret: its `Debug` never shows it.
#[derive(Clone)]
pub struct SecretArg(String);

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretArg([redacted])")
    }
}

/// Takes the value as it is; never fails, so clap never echoes it in an error.
fn secret_arg(s: &str) -> Result<SecretArg, String> {
    Ok(SecretArg(s.to_owned()))
}

fn parse_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("`{s}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{s}` must be an http or https URL"));
    }
    Ok(url)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d >= Duration::from_millis(10) => Ok(d),
        Ok(_) => Err("must be at least 10ms".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs the check and prints its report; exit code 0 only when no step failed.
#[allow(clippy::print_stdout)]
pub async fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let report = walk(args).await;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

// ------------------------------------------------------------------ the walk --

/// What the definition step builds: the adapter and what the later steps read from the
/// definition.
struct Target {
    id: ProviderId,
    adapter: Arc<dyn VideoProvider>,
    definition: Definition,
}

/// Every step, in order.
async fn walk(args: &CheckArgs) -> Report {
    let mut walk = Walk::new(args);

    let Some(target) = walk.step("definition", define(args)).await else {
        walk.skip_rest(&["key check", "submit", "poll", "download", "cancel"]);
        return walk.report;
    };
    walk.report.provider = Some(target.id.to_string());
    let adapter = &*target.adapter;

    let Some(credentials) = walk.step("key check", key_check(args, &target)).await else {
        walk.skip_rest(&["submit", "poll", "download", "cancel"]);
        return walk.report;
    };

    let deadline = walk.deadline;
    let Some((request, job_id)) = walk
        .step("submit", submit(args, &target, &credentials, deadline))
        .await
    else {
        walk.skip_rest(&["poll", "download", "cancel"]);
        return walk.report;
    };
    walk.report.model = Some(request.model.clone());
    walk.report.job_id = Some(job_id.clone());

    let interval = args
        .poll_interval
        .unwrap_or(Duration::from_secs(target.definition.poll_interval_secs));
    let Some(output) = walk
        .step(
            "poll",
            poll(
                adapter,
                &credentials,
                &job_id,
                interval,
                (deadline, walk.timeout),
            ),
        )
        .await
    else {
        walk.skip_rest(&["download", "cancel"]);
        return walk.report;
    };

    if walk
        .step("download", download(adapter, &credentials, &output))
        .await
        .is_none()
    {
        walk.skip_rest(&["cancel"]);
        return walk.report;
    }

    if args.no_cancel {
        walk.skip("cancel", "skipped (--no-cancel)");
    } else if target.definition.cancel.is_none() {
        walk.skip("cancel", "skipped (no cancel)");
    } else {
        walk.step("cancel", cancel(&target, &credentials, &request, deadline))
            .await;
    }
    walk.report
}

/// Steps 1: the definition loads, and an adapter is built from it against the URL.
async fn define(args: &CheckArgs) -> Result<Done<Target>, Failure> {
    // The error names the file, the provider and the field.
    let definition = Definition::load(&args.file).map_err(|e| Failure::new(e.to_string()))?;
    let mut options = RegistryOptions::defaults();
    let id = options
        .declare(definition.clone())
        .map_err(|e| Failure::new(e.to_string()))?;
    let provider = options
        .provider_mut(id)
        .ok_or_else(|| Failure::new(format!("provider `{id}` was not declared")))?;
    provider.base_url = args.against.to_string();
    // The policy keeps URLs that come from outside (here: the video URLs in the provider's
    // answers) off the private network byok runs in. A private target (the simulator on
    // loopback, a staging host on the LAN) hands out download URLs on that same network, so
    // the policy would refuse every download; the operator chose that target explicitly. A
    // public target keeps the policy, as a worker does: its answer pointing a download at a
    // private address is what the policy is for.
    let private = targets_private_network(&args.against).await;
    options.allow_private_networks = private;
    let registry = Registry::new(&options).map_err(|e| Failure::new(e.to_string()))?;
    let adapter = registry
        .get(id)
        .ok_or_else(|| Failure::new(format!("provider `{id}` has no adapter")))?;
    let models = adapter.catalogue().models.len();
    let detail = format!(
        "{id} ({}): {models} model{}, {}; against {}{}",
        definition.display_name,
        if models == 1 { "" } else { "s" },
        if definition.cancel.is_some() {
            "with cancel"
        } else {
            "no cancel"
        },
        args.against,
        if private { " (private network)" } else { "" },
    );
    Ok(Done::new(
        Target {
            id,
            adapter,
            definition,
        },
        detail,
    ))
}

/// Whether `url`'s host is on a loopback or private network: an IP literal that is not
/// public, `localhost`, or a name that resolves only to such addresses.
async fn targets_private_network(url: &reqwest::Url) -> bool {
    use byok_providers::net::is_public_ip;
    let Some(host) = url.host_str() else {
        return false;
    };
    // An IPv6 literal is written in brackets.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        return !is_public_ip(ip);
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let port = url.port_or_known_default().unwrap_or(443);
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| !is_public_ip(a.ip()))
        }
        // Unresolvable: the key check will say the host cannot be reached.
        Err(_) => false,
    }
}

/// Step 2: the credentials parse, and the provider says they work.
async fn key_check(args: &CheckArgs, target: &Target) -> Result<Done<Credentials>, Failure> {
    let text = read_credentials(args)?;
    // serde_json's messages name a position, never the text.
    let mut raw: Value = serde_json::from_str(text.expose_secret()).map_err(|e| {
        Failure::coded(
            ErrorCode::InvalidRequest,
            format!(
                "the credentials are not a JSON object (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    drop(text);
    let parsed = target.adapter.parse_credentials(&raw);
    byok_providers::wipe_json(&mut raw);
    // A CredentialsError names the field, never its value.
    let credentials = parsed.map_err(|e| {
        Failure::coded(
            ErrorCode::CredentialsInvalid,
            format!("the credentials do not fit the definition: {e}"),
        )
    })?;
    let check = &target.definition.key_check;
    let route = format!("{} {}", check.method.as_str(), check.path);
    match target.adapter.check_credentials(&credentials).await {
        CredentialCheck::Valid => Ok(Done::new(credentials, format!("valid ({route})"))),
        CredentialCheck::Rejected { reason } => Err(Failure::coded(
            ErrorCode::CredentialsInvalid,
            format!("rejected ({route}): {reason}"),
        )),
        CredentialCheck::Unavailable { reason } => Err(Failure::coded(
            ErrorCode::ProviderUnavailable,
            format!("no verdict ({route}): {reason}"),
        )),
    }
}

/// The credentials' JSON text: `--credentials`, `--credentials-file`, else the environment.
fn read_credentials(args: &CheckArgs) -> Result<SecretString, Failure> {
    if let Some(SecretArg(text)) = &args.credentials {
        return Ok(SecretString::from(text.clone()));
    }
    if let Some(path) = &args.credentials_file {
        return std::fs::read_to_string(path)
            .map(SecretString::from)
            .map_err(|e| {
                Failure::coded(
                    ErrorCode::CredentialsMissing,
                    format!("cannot read {} (--credentials-file): {e}", path.display()),
                )
            });
    }
    match std::env::var(CREDENTIALS_ENV) {
        Ok(text) => Ok(SecretString::from(text)),
        Err(_) => Err(Failure::coded(
            ErrorCode::CredentialsMissing,
            format!(
                "no credentials: give --credentials-file PATH, the {CREDENTIALS_ENV} \
                 environment variable or --credentials JSON"
            ),
        )),
    }
}

/// Step 3: a neutral request, validated by the adapter, is accepted by the provider.
async fn submit(
    args: &CheckArgs,
    target: &Target,
    credentials: &Credentials,
    deadline: Instant,
) -> Result<Done<(ValidatedRequest, String)>, Failure> {
    let adapter = &*target.adapter;
    let model = match &args.model {
        Some(model) => model.clone(),
        None => adapter
            .catalogue()
            .models
            .iter()
            .find(|m| m.status == ModelStatus::Available)
            .map(|m| m.id.clone())
            .ok_or_else(|| {
                Failure::coded(
                    ErrorCode::ModelRetired,
                    "the definition has no available model",
                )
            })?,
    };
    let request = GenerationRequest {
        prompt: Some(args.prompt.clone()),
        ..GenerationRequest::new(uuid::Uuid::nil(), target.id, model)
    };
    let validated = adapter.validate(&request).map_err(|e| {
        let code = if e.retired.is_some() {
            ErrorCode::ModelRetired
        } else {
            ErrorCode::InvalidRequest
        };
        let mut detail = format!("the request does not validate: {e}");
        if !e.allowed.is_empty() {
            detail.push_str(&format!(" (allowed: {})", e.allowed.join(", ")));
        }
        Failure::coded(code, detail)
    })?;
    let (job_id, throttled) = submit_once(adapter, credentials, &validated, deadline).await?;
    let mut detail = format!("job {job_id}: {}", describe(&validated));
    if throttled > 0 {
        detail.push_str(&format!(" (throttled {throttled}× first)"));
    }
    Ok(Done::new((validated, job_id), detail))
}

/// Submits `request`, sending it again after a throttled answer (a 429 created nothing)
/// while the deadline allows; the provider's job id and how many times it was throttled.
async fn submit_once(
    adapter: &dyn VideoProvider,
    credentials: &Credentials,
    request: &ValidatedRequest,
    deadline: Instant,
) -> Result<(String, u32), Failure> {
    let mut throttled = 0;
    loop {
        let submitted = adapter
            .submit(
                credentials,
                SubmitRequest {
                    request,
                    image: None,
                },
            )
            .await;
        match submitted {
            Ok(s) => return Ok((s.provider_job_id, throttled)),
            Err(e) => match e.class {
                RetryClass::RetryAfter(wait)
                    if throttled < SUBMIT_THROTTLE_RETRIES && Instant::now() + wait < deadline =>
                {
                    throttled += 1;
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(e.into()),
            },
        }
    }
}

/// `ray-3.2, text_to_video, 5 s, 16:9 720p`.
fn describe(request: &ValidatedRequest) -> String {
    let mut parts = vec![
        request.model.clone(),
        serde_json::to_value(request.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    ];
    if let Some(seconds) = request.duration_seconds {
        parts.push(format!("{seconds} s"));
    }
    if let Some(format) = &request.format {
        match &format.resolution {
            Some(resolution) => parts.push(format!("{} {resolution}", format.aspect_ratio)),
            None => parts.push(format.aspect_ratio.clone()),
        }
    }
    parts.join(", ")
}

/// Step 4: polls every `interval` until the job ends; passes when it succeeded.
async fn poll(
    adapter: &dyn VideoProvider,
    credentials: &Credentials,
    job_id: &str,
    interval: Duration,
    (deadline, timeout): (Instant, Duration),
) -> Result<Done<VideoOutput>, Failure> {
    let mut states: Vec<&'static str> = Vec::new();
    let mut polls = 0u32;
    let mut transient = 0u32;
    let mut last_transient: Option<String> = None;
    loop {
        polls += 1;
        let mut wait = interval;
        match adapter.poll(credentials, job_id).await {
            Ok(status) => {
                transient = 0;
                let state = state_name(&status);
                if states.last() != Some(&state) {
                    states.push(state);
                }
                let seen = format!("{} ({polls} poll{})", states.join(" → "), plural(polls));
                match status {
                    RemoteStatus::Queued | RemoteStatus::Running { .. } => {}
                    RemoteStatus::Succeeded(output, _) => {
                        return Ok(Done::new(output, seen).with_states(states));
                    }
                    RemoteStatus::Failed(error) => {
                        return Err(Failure::coded(error.code, format!("{seen}: {error}"))
                            .with_states(states));
                    }
                    RemoteStatus::Cancelled => {
                        return Err(Failure::coded(
                            ErrorCode::Cancelled,
                            format!("{seen}: the provider cancelled the job"),
                        )
                        .with_states(states));
                    }
                }
            }
            Err(error) => {
                let passing = match error.class {
                    RetryClass::Permanent => false,
                    RetryClass::Transient => true,
                    RetryClass::RetryAfter(after) => {
                        wait = wait.max(after);
                        true
                    }
                };
                transient += 1;
                if !passing || transient > POLL_TRANSIENT_TOLERANCE {
                    let seen = if states.is_empty() {
                        String::new()
                    } else {
                        format!("{} ", states.join(" → "))
                    };
                    return Err(Failure::coded(
                        error.code,
                        format!("{seen}(poll {polls} failed): {error}"),
                    )
                    .with_states(states));
                }
                last_transient = Some(error.to_string());
            }
        }
        if Instant::now() + wait >= deadline {
            let mut detail = format!(
                "still {} after {polls} poll{}: --timeout {} runs out before the next",
                states.last().copied().unwrap_or("unknown"),
                plural(polls),
                humantime::format_duration(timeout),
            );
            if let Some(last) = &last_transient {
                detail.push_str(&format!("; last poll error: {last}"));
            }
            return Err(Failure::coded(ErrorCode::Timeout, detail).with_states(states));
        }
        tokio::time::sleep(wait).await;
    }
}

fn state_name(status: &RemoteStatus) -> &'static str {
    match status {
        RemoteStatus::Queued => "queued",
        RemoteStatus::Running { .. } => "running",
        RemoteStatus::Succeeded(..) => "succeeded",
        RemoteStatus::Failed(_) => "failed",
        RemoteStatus::Cancelled => "cancelled",
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Step 5: the output downloads into a temporary file and is a non-empty video.
async fn download(
    adapter: &dyn VideoProvider,
    credentials: &Credentials,
    output: &VideoOutput,
) -> Result<Done<()>, Failure> {
    let file = TempFile::new();
    let saved = adapter
        .fetch_output(credentials, output, file.path())
        .await?;
    let head = read_head(file.path()).await.map_err(|e| {
        Failure::coded(
            ErrorCode::Internal,
            format!("cannot read the downloaded file back: {e}"),
        )
    })?;
    let what = format!("{} bytes, {}", saved.size, saved.content_type);
    if saved.size == 0 || head.is_empty() {
        return Err(Failure::new(format!("{what}: the video is empty")));
    }
    // An ISO base media file (MP4, MOV) starts with its `ftyp` box: size, "ftyp", brand.
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        let brand = String::from_utf8_lossy(&head[8..12]).trim().to_owned();
        return Ok(Done::new((), format!("{what}, MP4 (ftyp `{brand}`)")));
    }
    // WebM/Matroska starts with the EBML magic.
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Ok(Done::new((), format!("{what}, WebM")));
    }
    Err(Failure::new(format!(
        "{what}: not a video (no MP4 `ftyp` box at the start, nor WebM)"
    )))
}

/// The first 16 bytes of `path` (fewer when it is shorter).
async fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::open(path).await?;
    let mut head = Vec::with_capacity(16);
    file.take(16).read_to_end(&mut head).await?;
    Ok(head)
}

/// A file name in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new() -> TempFile {
        TempFile(std::env::temp_dir().join(format!(
            "byok-providers-check-{}.video",
            uuid::Uuid::new_v4()
        )))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Absent when the download failed before creating it.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Step 6: a second job is submitted and cancelled.
async fn cancel(
    target: &Target,
    credentials: &Credentials,
    request: &ValidatedRequest,
    deadline: Instant,
) -> Result<Done<()>, Failure> {
    let adapter = &*target.adapter;
    let (job_id, _) = submit_once(adapter, credentials, request, deadline).await?;
    let route = target
        .definition
        .cancel
        .as_ref()
        .map(|c| format!("{} {}", c.method.as_str(), c.path))
        .unwrap_or_default();
    match adapter.cancel(credentials, &job_id).await? {
        CancelOutcome::Cancelled => Ok(Done::new(
            (),
            format!("second job {job_id} cancelled ({route})"),
        )),
        CancelOutcome::NotSupported => Err(Failure::new(format!(
            "the adapter says it cannot cancel, though the definition has [cancel]; second job \
             {job_id} was left running"
        ))),
    }
}

// --------------------------------------------------------------- the report --

/// A step's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail,
    Skip,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// One line of the report.
#[derive(Debug)]
struct Step {
    name: &'static str,
    verdict: Verdict,
    took: Duration,
    detail: String,
    /// The stable error code of a failure, when it has one.
    code: Option<&'static str>,
    /// The job states the poll step saw, in order.
    states: Vec<&'static str>,
}

/// A passed step: what the next steps need, and a line for people.
struct Done<T> {
    value: T,
    detail: String,
    states: Vec<&'static str>,
}

impl<T> Done<T> {
    fn new(value: T, detail: impl Into<String>) -> Done<T> {
        Done {
            value,
            detail: detail.into(),
            states: Vec::new(),
        }
    }

    fn with_states(mut self, states: Vec<&'static str>) -> Done<T> {
        self.states = states;
        self
    }
}

/// A failed step: the stable code when there is one, and a line for people.
#[derive(Debug)]
struct Failure {
    code: Option<&'static str>,
    detail: String,
    states: Vec<&'static str>,
}

impl Failure {
    fn new(detail: impl Into<String>) -> Failure {
        Failure {
            code: None,
            detail: detail.into(),
            states: Vec::new(),
        }
    }

    fn coded(code: ErrorCode, detail: impl Into<String>) -> Failure {
        Failure {
            code: Some(code.as_str()),
            ..Failure::new(detail)
        }
    }

    fn with_states(mut self, states: Vec<&'static str>) -> Failure {
        self.states = states;
        self
    }
}

impl From<byok_core::JobError> for Failure {
    fn from(error: byok_core::JobError) -> Failure {
        // `code: message`; adapters keep secrets out of their messages.
        Failure::coded(error.code, error.to_string())
    }
}

/// The steps run so far, under the check's deadline.
struct Walk {
    report: Report,
    deadline: Instant,
    timeout: Duration,
}

impl Walk {
    fn new(args: &CheckArgs) -> Walk {
        Walk {
            report: Report {
                file: args.file.clone(),
                against: args.against.to_string(),
                provider: None,
                model: None,
                job_id: None,
                steps: Vec::new(),
            },
            deadline: Instant::now() + args.timeout,
            timeout: args.timeout,
        }
    }

    /// Runs one step within the deadline and records it; its value when it passed.
    async fn step<T>(
        &mut self,
        name: &'static str,
        work: impl Future<Output = Result<Done<T>, Failure>>,
    ) -> Option<T> {
        let started = Instant::now();
        let outcome = tokio::time::timeout_at(self.deadline, work)
            .await
            .unwrap_or_else(|_| {
                Err(Failure::coded(
                    ErrorCode::Timeout,
                    format!(
                        "timed out: --timeout {} ran out",
                        humantime::format_duration(self.timeout)
                    ),
                ))
            });
        let took = started.elapsed();
        match outcome {
            Ok(done) => {
                self.report.steps.push(Step {
                    name,
                    verdict: Verdict::Pass,
                    took,
                    detail: done.detail,
                    code: None,
                    states: done.states,
                });
                Some(done.value)
            }
            Err(failure) => {
                self.report.steps.push(Step {
                    name,
                    verdict: Verdict::Fail,
                    took,
                    detail: failure.detail,
                    code: failure.code,
                    states: failure.states,
                });
                None
            }
        }
    }

    fn skip(&mut self, name: &'static str, why: &str) {
        self.report.steps.push(Step {
            name,
            verdict: Verdict::Skip,
            took: Duration::ZERO,
            detail: why.to_owned(),
            code: None,
            states: Vec::new(),
        });
    }

    /// Every step after a failure is skipped.
    fn skip_rest(&mut self, names: &[&'static str]) {
        let failed = self
            .report
            .steps
            .iter()
            .rev()
            .find(|s| s.verdict == Verdict::Fail)
            .map_or("an earlier step", |s| s.name);
        for name in names {
            self.skip(name, &format!("skipped ({failed} failed)"));
        }
    }
}

/// The whole check.
#[derive(Debug)]
struct Report {
    file: PathBuf,
    against: String,
    provider: Option<String>,
    model: Option<String>,
    job_id: Option<String>,
    steps: Vec<Step>,
}

impl Report {
    fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.verdict == Verdict::Fail)
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.steps.iter().filter(|s| s.verdict == verdict).count()
    }

    fn text(&self) -> String {
        let mut table = Table::new(["STEP", "RESULT", "TIME", "DETAIL"]);
        for step in &self.steps {
            let detail = match step.code {
                // The code leads unless the detail already starts with it (a JobError's
                // `code: message`).
                Some(code) if !step.detail.starts_with(code) => {
                    format!("{code}: {}", step.detail)
                }
                _ => step.detail.clone(),
            };
            table.row(vec![
                step.name.to_owned(),
                step.verdict.as_str().to_owned(),
                if step.verdict == Verdict::Skip {
                    "-".to_owned()
                } else {
                    took(step.took)
                },
                detail,
            ]);
        }
        let who = self.provider.as_deref().unwrap_or("the definition");
        let summary = format!(
            "{who} against {}: {} ({} passed, {} failed, {} skipped)",
            self.against,
            if self.failed() { "FAILED" } else { "passed" },
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::Skip),
        );
        format!("{}\n{summary}\n", table.render())
    }

    fn json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                let mut step = json!({
                    "step": s.name,
                    "result": s.verdict.as_str().to_ascii_lowercase(),
                    "duration_ms": u64::try_from(s.took.as_millis()).unwrap_or(u64::MAX),
                    "detail": s.detail,
                    "code": s.code,
                });
                if !s.states.is_empty() {
                    step["states"] = json!(s.states);
                }
                step
            })
            .collect();
        json!({
            "file": self.file.display().to_string(),
            "against": self.against,
            "provider": self.provider,
            "model": self.model,
            "job_id": self.job_id,
            "passed": !self.failed(),
            "steps": steps,
        })
    }
}

/// `830ms`, `2.4s`, `1m 12s`.
fn took(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_at_a_glance() {
        assert_eq!(took(Duration::from_millis(830)), "830ms");
        assert_eq!(took(Duration::from_millis(2400)), "2.4s");
        assert_eq!(took(Duration::from_secs(72)), "1m 12s");
    }

    #[test]
    fn a_secret_argument_never_shows_in_debug() {
        let arg = SecretArg("sim_do_not_print".to_owned());
        assert!(!format!("{arg:?}").contains("sim_do_not_print"));
    }

    #[tokio::test]
    async fn loopback_and_private_hosts_are_private_and_public_ones_are_not() {
        for (url, private) in [
            ("http://127.0.0.1:9090/luma/v1", true),
            ("http://[::1]:9090/", true),
            ("http://10.1.2.3/", true),
            ("http://localhost:9090/", true),
            ("https://8.8.8.8/", false),
        ] {
            let url = reqwest::Url::parse(url).unwrap();
            assert_eq!(targets_private_network(&url).await, private, "{url}");
        }
    }
}
