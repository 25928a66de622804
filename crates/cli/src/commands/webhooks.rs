//! `byok webhooks deliveries|retry`: what operators see of webhook deliveries.

use std::process::ExitCode;

use anyhow::Context as _;
use byok_config::Settings;
use byok_store::{Delivery, DeliveryStatus};
use serde_json::json;

use crate::cli::{WebhookDeliveriesArgs, WebhookRetryArgs};
use crate::table::{Table, when};

/// Lists deliveries, newest first.
#[allow(clippy::print_stdout)]
pub async fn deliveries(
    settings: &Settings,
    args: &WebhookDeliveriesArgs,
) -> anyhow::Result<ExitCode> {
    let status = match args.status.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("succeeded") => Some(DeliveryStatus::Succeeded),
        Some("failed") => Some(DeliveryStatus::Failed),
        Some(other) => {
            anyhow::bail!("--status: `{other}` is not one of pending, succeeded, failed")
        }
    };
    if !(1..=10_000).contains(&args.limit) {
        anyhow::bail!("--limit: from 1 to 10000");
    }
    let store = byok_app::parts::open_store(settings).await?;
    let listed = async {
        let project = super::project_flag(&store, args.project.as_deref()).await?;
        anyhow::Ok(
            store
                .webhooks()
                .all_deliveries(project, args.endpoint, status, args.limit)
                .await?,
        )
    }
    .await;
    store.close().await;
    let deliveries = listed?;
    if args.json {
        let rows: Vec<_> = deliveries.iter().map(delivery_json).collect();
        println!("{}", json!({ "deliveries": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new([
        "ID", "EVENT", "SUBJECT", "TO", "STATUS", "ATTEMPTS", "LAST", "NEXT TRY", "CREATED",
    ]);
    for d in &deliveries {
        table.row(vec![
            d.id.to_string(),
            d.event_type.clone(),
            d.subject_id.map(|s| s.to_string()).unwrap_or_default(),
            recipient(d),
            status_name(d.status).to_owned(),
            d.attempts.to_string(),
            match (d.last_status_code, &d.last_error) {
                (Some(code), _) => code.to_string(),
                (None, Some(error)) => error.chars().take(40).collect(),
                (None, None) => String::new(),
            },
            if d.status == DeliveryStatus::Pending {
                when(d.next_attempt_at)
            } else {
                String::new()
            },
            when(Some(d.created_at)),
        ]);
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

/// One more attempt of a finished delivery.
pub async fn retry(settings: &Settings, args: &WebhookRetryArgs) -> anyhow::Result<ExitCode> {
    let store = byok_app::parts::open_store(settings).await?;
    let retried = async {
        let work = store
            .webhooks()
            .work(args.id)
            .await?
            .with_context(|| format!("no delivery has id {}", args.id))?;
        let project = work.delivery.project_id;
        store
            .webhooks()
            .retry_delivery(project, args.id)
            .await?
            .context("the delivery is still pending: its next attempt is already due")
    }
    .await;
    store.close().await;
    retried?;
    eprintln!(
        "delivery {} is due again; a running worker makes the attempt within a minute",
        args.id
    );
    Ok(ExitCode::SUCCESS)
}

fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Succeeded => "succeeded",
        DeliveryStatus::Failed => "failed",
    }
}

/// The endpoint's id, or the job's own URL's host (never the whole URL: it may carry a
/// token of the receiver's).
fn recipient(d: &Delivery) -> String {
    match (&d.endpoint_id, &d.url) {
        (Some(endpoint), _) => endpoint.to_string(),
        (None, Some(url)) => url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(|h| format!("job url {h}")))
            .unwrap_or_else(|| "job url".to_owned()),
        (None, None) => String::new(),
    }
}

fn delivery_json(d: &Delivery) -> serde_json::Value {
    json!({
        "id": d.id,
        "webhook_id": format!("msg_{}", d.event_id.simple()),
        "event_type": d.event_type,
        "subject_id": d.subject_id,
        "project_id": d.project_id,
        "endpoint_id": d.endpoint_id,
        "status": status_name(d.status),
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.filter(|_| d.status == DeliveryStatus::Pending),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "finished_at": d.finished_at,
    })
}
