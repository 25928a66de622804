//! `byok queue stats|list|retry|purge`: the operator's view of the work
//! queue, on either shape (Redis Streams or the SQLite queue table).

use std::process::ExitCode;

use anyhow::Context as _;
use byok_config::Settings;
use byok_queue::{ItemState, ListedItem};
use serde_json::json;

use crate::cli::{QueueListArgs, QueuePurgeArgs, QueueRetryArgs, QueueStatsArgs};
use crate::table::{Table, when};

#[allow(clippy::print_stdout)]
pub async fn stats(settings: &Settings, args: &QueueStatsArgs) -> anyhow::Result<ExitCode> {
    let engine = byok_app::parts::queue_engine(settings).await?;
    let stats = engine.stats().await.context("cannot read the queue")?;
    if args.json {
        println!("{}", json!({ "queues": [stats] }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new([
        "QUEUE",
        "PENDING",
        "SCHEDULED",
        "RUNNING",
        "DEAD",
        "OLDEST PENDING",
    ]);
    table.row(vec![
        stats.name.clone(),
        stats.pending.to_string(),
        stats.scheduled.to_string(),
        stats.running.to_string(),
        stats.dead.to_string(),
        age(stats.oldest_pending_seconds),
    ]);
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
pub async fn list(settings: &Settings, args: &QueueListArgs) -> anyhow::Result<ExitCode> {
    let engine = byok_app::parts::queue_engine(settings).await?;
    let items = engine
        .list(args.state, args.limit as usize)
        .await
        .context("cannot read the queue")?;
    if args.json {
        println!(
            "{}",
            json!({ "queue": engine.config().namespace, "state": args.state, "items": items })
        );
        return Ok(ExitCode::SUCCESS);
    }
    let at_label = match args.state {
        ItemState::Pending => "ENQUEUED",
        ItemState::Scheduled => "DUE",
        ItemState::Running => "DELIVERED",
        ItemState::Dead => "DIED",
    };
    let mut table = Table::new([
        "REF",
        "JOB",
        "ATTEMPTS",
        "DELIVERIES",
        "WORKER",
        at_label,
        "ERROR",
    ]);
    for item in &items {
        table.row(vec![
            item.reference.clone(),
            item.item_id.clone(),
            item.attempts.to_string(),
            item.deliveries.to_string(),
            item.consumer.clone().unwrap_or_else(|| "-".to_owned()),
            when(at(item)),
            item.error
                .as_deref()
                .map(one_line)
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    print!("{}", table.render());
    if items.len() == args.limit as usize {
        eprintln!("(showing the first {}; --limit shows more)", args.limit);
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
pub async fn retry(settings: &Settings, args: &QueueRetryArgs) -> anyhow::Result<ExitCode> {
    let engine = byok_app::parts::queue_engine(settings).await?;
    let moved = if args.all_dead {
        engine.retry_dead(None).await?
    } else {
        // Operators think in job ids; the engine retries dead entries by
        // reference. Dead entries are bounded by queue.dead_retention, so
        // reading them all to match ids is a bounded read.
        let retention = usize::try_from(settings.queue.dead_retention).unwrap_or(usize::MAX);
        let dead = engine.list(ItemState::Dead, retention.max(1)).await?;
        let mut refs = Vec::new();
        for id in &args.ids {
            let matching: Vec<String> = dead
                .iter()
                .filter(|item| &item.reference == id || &item.item_id == id)
                .map(|item| item.reference.clone())
                .collect();
            anyhow::ensure!(
                !matching.is_empty(),
                "no dead item has id or reference {id}"
            );
            refs.extend(matching);
        }
        refs.sort();
        refs.dedup();
        engine.retry_dead(Some(&refs)).await?
    };
    println!("moved {moved} dead item(s) back to pending");
    eprintln!(
        "a retried item whose job is already final (byok job show) is dropped by the worker: a final job stays final"
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
pub async fn purge(settings: &Settings, args: &QueuePurgeArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.state != ItemState::Running,
        "running items belong to live workers and cannot be purged; stop the workers first, or wait for their leases to expire"
    );
    let engine = byok_app::parts::queue_engine(settings).await?;
    let purged = engine.purge(args.state).await?;
    println!("purged {purged} {} item(s)", args.state);
    if args.state != ItemState::Dead && purged > 0 {
        eprintln!(
            "their jobs keep their status in the store but will not run: cancel them with POST /v1/jobs/{{id}}/cancel"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The item's time as a date, from unix milliseconds.
fn at(item: &ListedItem) -> Option<chrono::DateTime<chrono::Utc>> {
    i64::try_from(item.at_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
}

/// `93` → `1m33s`.
fn age(seconds: u64) -> String {
    match seconds {
        0 => "-".to_owned(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Errors can span lines; a table row cannot.
fn one_line(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(age(0), "-");
        assert_eq!(age(59), "59s");
        assert_eq!(age(93), "1m33s");
        assert_eq!(age(7260), "2h01m");
    }
}
