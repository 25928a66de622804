//! `byok job show ID [--json]`: one job with its full history.

use std::process::ExitCode;

use byok_config::Settings;
use serde_json::json;

use crate::cli::JobShowArgs;
use crate::table::{Table, when};

#[allow(clippy::print_stdout)]
pub async fn show(settings: &Settings, args: &JobShowArgs) -> anyhow::Result<ExitCode> {
    let store = byok_app::parts::open_store(settings).await?;
    let job = store.jobs().get(args.id).await?;
    let Some(job) = job else {
        store.close().await;
        anyhow::bail!("no job has id {}", args.id);
    };
    let history = store.jobs().events(job.id).await?;
    let awaiting_push = store.jobs().awaiting_push(job.id).await?;
    store.close().await;
    if args.json {
        println!(
            "{}",
            json!({ "job": job, "history": history, "awaiting_push": awaiting_push })
        );
        return Ok(ExitCode::SUCCESS);
    }
    let progress = job
        .progress
        .map(|p| format!(" ({:.0}%)", p * 100.0))
        .unwrap_or_default();
    let mut fields = vec![
        ("job", job.id.to_string()),
        ("project", job.project_id.to_string()),
        ("user", job.user_id.to_string()),
        ("provider", format!("{} / {}", job.provider_name, job.model)),
        ("status", format!("{}{progress}", job.status)),
        ("attempts", job.attempts.to_string()),
        (
            "provider job",
            job.provider_job_id
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
        ),
        ("created", when(Some(job.created_at))),
        ("queued", when(job.enqueued_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
    ];
    if awaiting_push {
        fields.push((
            "queue push",
            "not confirmed yet: the sweeper pushes a queued job once it is 30 s old".to_owned(),
        ));
    }
    if job.submit_started_at.is_some() {
        fields.push(("submit out since", when(job.submit_started_at)));
    }
    if let Some(error) = &job.error {
        let retry = if error.retryable {
            "retryable"
        } else {
            "not retryable"
        };
        fields.push((
            "error",
            format!("{}: {} ({retry})", error.code, error.message),
        ));
    }
    if let Some(result) = &job.result {
        let mut shown = format!("{} bytes of {}", result.bytes, result.content_type);
        if !result.provider_urls.is_empty() {
            shown.push_str(&format!(
                "; provider URLs: {}",
                result.provider_urls.join(" ")
            ));
        }
        if let Some(note) = &result.note {
            shown.push_str(&format!("; note: {note}"));
        }
        fields.push(("result", shown));
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in &fields {
        println!("{key:<width$}  {value}");
    }
    println!(
        "request{}  {}",
        " ".repeat(width.saturating_sub(7)),
        serde_json::to_string(&job.request)?
    );
    println!();
    let mut table = Table::new(["AT", "STATUS", "WHAT HAPPENED"]);
    for event in &history {
        table.row(vec![
            when(Some(event.at)),
            event.status.clone(),
            event.message.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}
