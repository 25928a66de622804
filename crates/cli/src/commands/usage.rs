//! `byok usage`: what ended jobs made and cost, for operators (every project, or one).

use std::process::ExitCode;

use anyhow::Context as _;
use byok_config::Settings;
use byok_core::{
    UsageGroupBy, UsageGroupView, UsageReport, UsageTotals, parse_usage_time, usage_month_start,
};
use byok_store::UsageQuery;

use crate::cli::UsageArgs;
use crate::table::Table;

/// Prints the report as a table (or JSON).
#[allow(clippy::print_stdout)]
pub async fn report(settings: &Settings, args: &UsageArgs) -> anyhow::Result<ExitCode> {
    let group_by: UsageGroupBy = args
        .group_by
        .parse()
        .map_err(|()| anyhow::anyhow!("--group-by: one of provider, model, day, user"))?;
    let time = |flag: &str, text: &str| {
        parse_usage_time(text).with_context(|| {
            format!("--{flag}: an RFC 3339 time (2026-12-01T00:00:00Z) or a day (2026-12-01)")
        })
    };
    let to = match &args.to {
        Some(text) => time("to", text)?,
        None => chrono::Utc::now(),
    };
    let from = match &args.from {
        Some(text) => time("from", text)?,
        None => usage_month_start(to),
    };
    anyhow::ensure!(from < to, "--from must be before --to");

    let store = byok_app::parts::open_store(settings).await?;
    let summed = async {
        let project_id = super::project_flag(&store, args.project.as_deref()).await?;
        let query = UsageQuery {
            project_id,
            user_id: args.user,
            from,
            to,
            group_by,
        };
        anyhow::Ok(store.usage().summary(&query).await?)
    }
    .await;
    store.close().await;
    let groups = summed?;
    let total = groups
        .iter()
        .fold(UsageTotals::default(), |sum, g| sum.plus(g.totals));
    let report = UsageReport {
        from,
        to,
        user_id: args.user,
        group_by,
        total,
        groups,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new([
        group_by.as_str(),
        "JOBS",
        "SUCCEEDED",
        "VIDEO S",
        "COST USD",
        "COST UNKNOWN",
        "PROVIDER COMPUTE S",
    ]);
    for group in &report.groups {
        table.row(row(key(group), &group.totals));
    }
    table.row(row("TOTAL".to_owned(), &report.total));
    print!("{}", table.render());
    println!(
        "jobs that ended from {} to {}; costs are estimates from list prices fixed at enqueue",
        from.to_rfc3339(),
        to.to_rfc3339()
    );
    Ok(ExitCode::SUCCESS)
}

fn key(group: &UsageGroupView) -> String {
    match (&group.provider, &group.model, &group.day, &group.user_id) {
        (Some(provider), Some(model), _, _) => format!("{provider} {model}"),
        (Some(provider), None, _, _) => provider.clone(),
        (_, _, Some(day), _) => day.clone(),
        (_, _, _, Some(user)) => user.to_string(),
        _ => String::new(),
    }
}

fn row(key: String, totals: &UsageTotals) -> Vec<String> {
    vec![
        key,
        totals.jobs.to_string(),
        totals.succeeded.to_string(),
        totals.video_seconds.to_string(),
        totals.cost_usd.to_decimal(),
        totals.jobs_cost_unknown.to_string(),
        format!("{:.1}", totals.provider_compute_ms as f64 / 1000.0),
    ]
}
