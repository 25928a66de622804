//! The command line (the root README's Commands table). Every subcommand takes
//! `--config FILE`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

/// byok: bring-your-own-key video generation jobs.
#[derive(Debug, Parser)]
#[command(name = "byok", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: ./byok.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (distributed shape).
    Api,
    /// Run jobs from the queue (distributed shape; run as many as needed).
    Worker,
    /// The API and a worker in one process: the embedded shape.
    Run(RunArgs),
    /// Try everything on this machine: the simulator, the embedded shape and
    /// a scripted job on every provider, shown live; exits 0 when every job
    /// ended as expected.
    Demo,
    /// Apply database migrations.
    Migrate,
    /// Manage the credential encryption keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage projects: one producer app or environment each.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage producer API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Serve the provider simulator (Runway, Stability AI, Vertex AI, fal.ai, Replicate, Luma,
    /// Synthesia and the Acme test provider).
    Sim(SimArgs),
    /// Inspect and repair the work queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Inspect jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Inspect and repair webhook deliveries.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// What ended jobs made and cost (estimated from list prices), summed per group.
    Usage(UsageArgs),
    /// Check provider definitions against a live endpoint or the simulator.
    #[command(subcommand)]
    Providers(crate::commands::ProvidersCommand),
}

impl Command {
    /// The log level unless `RUST_LOG` says otherwise: long-running
    /// commands log at info; one-shot tools only warn; the demo, whose
    /// screen is its progress bars, only reports errors.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Api | Command::Worker | Command::Run(_) => "info",
            Command::Sim(args) if args.new_service_account.is_none() => "info",
            Command::Demo => "error",
            _ => "warn",
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Start the provider simulator in this process and point every
    /// provider at it (keys starting with `sim_` are valid).
    #[arg(long)]
    pub simulate: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a fresh 256-bit key as 64 hex characters.
    Generate,
    /// Re-seal every stored credential under the primary key (online, idempotent).
    Rewrap,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; the secret is printed once, alone on the first line.
    Create(CreateToken),
    /// List tokens (never their secrets).
    List(ListTokens),
    /// Revoke a token by id.
    Revoke(RevokeToken),
}

#[derive(Debug, Args)]
pub struct CreateToken {
    /// A name for the token, e.g. the producer that will use it.
    #[arg(long)]
    pub name: String,
    /// The project it acts in, by name or id.
    #[arg(long, default_value = "default")]
    pub project: String,
    /// What it may do, comma-separated: credentials:read, credentials:write,
    /// jobs:read, jobs:write, webhooks, usage:read, budgets:write, dashboard:read, admin [default: all but admin].
    #[arg(long, value_name = "SCOPE,…")]
    pub scopes: Option<String>,
    /// When it stops working: a duration from now (`90d`, `12h`) or an
    /// RFC 3339 time (`2027-01-01T00:00:00Z`) [default: never].
    #[arg(long, value_name = "WHEN")]
    pub expires: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListTokens {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeToken {
    /// The token's id (from `byok token list`).
    pub id: Uuid,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project; its id is printed alone on stdout.
    Create(CreateProject),
    /// List projects.
    List(ListProjects),
    /// Show or set where "connect your key" pages may send a project's users back to.
    ReturnUrls(ReturnUrls),
}

#[derive(Debug, Args)]
pub struct ReturnUrls {
    /// The project (name or id).
    #[arg(long)]
    pub project: String,
    /// The URLs (http(s), at most 20), replacing the list; a page may return to one of them
    /// or a URL under one. None: print the list.
    pub urls: Vec<String>,
    /// Remove every URL (connect links can no longer be made).
    #[arg(long, conflicts_with = "urls")]
    pub clear: bool,
}

#[derive(Debug, Args)]
pub struct CreateProject {
    /// Its unique name: 1-64 of a-z 0-9 - _ . (e.g. sceneflow-prod).
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ListProjects {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Counts per state (pending, scheduled, running, dead) and the oldest
    /// pending item's age.
    Stats(QueueStatsArgs),
    /// Items in one state.
    List(QueueListArgs),
    /// Move dead items back to pending, with fresh attempts.
    Retry(QueueRetryArgs),
    /// Delete every item in one state (pending, scheduled or dead).
    Purge(QueuePurgeArgs),
}

#[derive(Debug, Args)]
pub struct QueueStatsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QueueListArgs {
    /// pending, scheduled, running or dead.
    #[arg(long, value_name = "STATE")]
    pub state: byok_queue::ItemState,
    /// At most this many items.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "all_dead"])))]
pub struct QueueRetryArgs {
    /// Dead items to retry, by job id or by the reference `queue list` shows.
    pub ids: Vec<String>,
    /// Retry every dead item.
    #[arg(long)]
    pub all_dead: bool,
}

#[derive(Debug, Args)]
pub struct QueuePurgeArgs {
    /// pending, scheduled or dead (running items belong to live workers).
    #[arg(long, value_name = "STATE")]
    pub state: byok_queue::ItemState,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// One job with its full history.
    Show(JobShowArgs),
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Webhook deliveries, newest first: event, endpoint, status, attempts, last answer,
    /// next try.
    Deliveries(WebhookDeliveriesArgs),
    /// Make one more attempt of a finished delivery (same webhook-id).
    Retry(WebhookRetryArgs),
}

#[derive(Debug, Args)]
pub struct WebhookDeliveriesArgs {
    /// Only this project's (name or id).
    #[arg(long)]
    pub project: Option<String>,
    /// Only this endpoint's.
    #[arg(long)]
    pub endpoint: Option<Uuid>,
    /// Only deliveries in this status: pending, succeeded, failed.
    #[arg(long)]
    pub status: Option<String>,
    /// How many at most.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WebhookRetryArgs {
    /// The delivery's id.
    pub id: Uuid,
}

#[derive(Debug, Args)]
pub struct JobShowArgs {
    /// The job's id.
    pub id: Uuid,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    pub listen: std::net::SocketAddr,
    /// The address clients reach the simulator at, for the URLs it hands
    /// out (default: http://<listen>).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Directory of trusted service-account JSON files.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "byok-data/sim-service-accounts"
    )]
    pub service_accounts: PathBuf,
    /// Write a fresh trusted service account to FILE (and into the trusted
    /// directory), then exit.
    #[arg(long, value_name = "FILE")]
    pub new_service_account: Option<PathBuf>,
    /// Project id of the new service account.
    #[arg(long, value_name = "ID", default_value = "byok-sim")]
    pub project_id: String,
    /// Time from submit to done (e.g. `3s`, `200ms`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub render_time: Option<std::time::Duration>,
    /// Share (0-1) of jobs that fail.
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    pub failure_rate: Option<f64>,
    /// Share (0-1) of submits answered 429.
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    pub throttle_rate: Option<f64>,
    /// Lifetime of issued Vertex access tokens (e.g. `1h`, `30s`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub token_lifetime: Option<std::time::Duration>,
    /// Also serve fal's queue host over TLS on ADDR, with a certificate made at start
    /// (for clients that speak only https to it, such as fal-client).
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<std::net::SocketAddr>,
    /// Write the CA certificate the TLS listener's certificate is signed with to FILE
    /// (what a client trusts, e.g. SSL_CERT_FILE); needs --tls-listen.
    #[arg(long, value_name = "FILE", requires = "tls_listen")]
    pub tls_ca_file: Option<PathBuf>,
}

/// A share between 0 and 1.
fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("`{s}` is not a number between 0 and 1")),
    }
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this project's jobs (name or id) [default: every project].
    #[arg(long)]
    pub project: Option<String>,
    /// Only this user's jobs.
    #[arg(long)]
    pub user: Option<Uuid>,
    /// Jobs that ended at or after this time: RFC 3339 or a day (UTC) [default: the start
    /// of this month].
    #[arg(long)]
    pub from: Option<String>,
    /// … and before this one [default: now].
    #[arg(long)]
    pub to: Option<String>,
    /// provider, model, day or user.
    #[arg(long, default_value = "provider")]
    pub group_by: String,
    /// Print the report as JSON (the body of `GET /v1/usage`) instead of a table.
    #[arg(long)]
    pub json: bool,
}
