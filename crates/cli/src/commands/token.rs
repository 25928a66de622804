//! `byok token create|list|revoke`

use std::process::ExitCode;

use std::collections::HashMap;

use anyhow::Context as _;
use byok_config::Settings;
use byok_core::Scopes;
use byok_store::{ApiToken, NewToken, RevokeOutcome};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret as _;
use serde_json::json;
use uuid::Uuid;

use crate::cli::{CreateToken, ListTokens, RevokeToken};
use crate::table::{Table, when};

/// Creates a token and prints it alone on stdout's first line.
#[allow(clippy::print_stdout)]
pub async fn create(settings: &Settings, args: &CreateToken) -> anyhow::Result<ExitCode> {
    // Arguments first: a typo costs no database connection.
    let scopes = match &args.scopes {
        Some(list) => Scopes::parse_list(list).context("--scopes")?,
        None => Scopes::producer(),
    };
    anyhow::ensure!(!scopes.is_empty(), "--scopes: name at least one scope");
    let expires_at = args
        .expires
        .as_deref()
        .map(|when| parse_expiry(when, Utc::now()))
        .transpose()
        .context("--expires")?;
    let store = byok_app::parts::open_store(settings).await?;
    let created = async {
        let project = store
            .projects()
            .find(&args.project)
            .await?
            .with_context(|| {
                format!(
                    "--project: no project is named `{}`; see `byok project list`",
                    args.project
                )
            })?;
        let new = NewToken {
            name: args.name.clone(),
            project_id: project.id,
            scopes,
            expires_at,
        };
        let (token, secret) = store.tokens().create(&new).await?;
        anyhow::Ok((project, token, secret))
    }
    .await;
    store.close().await;
    let (project, token, secret) = created?;
    println!("{}", secret.expose_secret());
    eprintln!(
        "created token {} ({}) in project {} with {}{}; it is shown only this once: store it now",
        token.id,
        token.name,
        project.name,
        token.scopes,
        token
            .expires_at
            .map(|at| format!(", expiring {}", at.to_rfc3339()))
            .unwrap_or_default(),
    );
    Ok(ExitCode::SUCCESS)
}

/// `--expires`: a duration from `now` (humantime: `90d`, `12h`, `1w 2d`) or
/// an RFC 3339 time. Either must lie in the future.
fn parse_expiry(when: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let at = match humantime::parse_duration(when) {
        Ok(duration) => chrono::Duration::from_std(duration)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .context("that is too far in the future")?,
        Err(_) => DateTime::parse_from_rfc3339(when)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|_| {
                anyhow::anyhow!("`{when}` is neither a duration (90d, 12h) nor an RFC 3339 time")
            })?,
    };
    anyhow::ensure!(at > now, "`{when}` is not in the future");
    Ok(at)
}

#[allow(clippy::print_stdout)]
pub async fn list(settings: &Settings, args: &ListTokens) -> anyhow::Result<ExitCode> {
    let store = byok_app::parts::open_store(settings).await?;
    let listed = async {
        let tokens = store.tokens().list().await?;
        let projects = store.projects().list().await?;
        anyhow::Ok((tokens, projects))
    }
    .await;
    store.close().await;
    let (tokens, projects) = listed?;
    let project_names: HashMap<Uuid, String> =
        projects.into_iter().map(|p| (p.id, p.name)).collect();
    let project_of = |t: &ApiToken| {
        project_names
            .get(&t.project_id)
            .cloned()
            .unwrap_or_else(|| t.project_id.to_string())
    };
    if args.json {
        let rows: Vec<_> = tokens
            .iter()
            .map(|t| token_json(t, &project_of(t)))
            .collect();
        println!("{}", json!({ "tokens": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new([
        "ID",
        "NAME",
        "PROJECT",
        "SCOPES",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "REVOKED",
    ]);
    for t in &tokens {
        table.row(vec![
            t.id.to_string(),
            t.name.clone(),
            project_of(t),
            t.scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
            when(Some(t.created_at)),
            when(t.expires_at),
            when(t.last_used_at),
            when(t.revoked_at),
        ]);
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
pub async fn revoke(settings: &Settings, args: &RevokeToken) -> anyhow::Result<ExitCode> {
    let store = byok_app::parts::open_store(settings).await?;
    let outcome = store.tokens().revoke(args.id).await?;
    store.close().await;
    match outcome {
        RevokeOutcome::Revoked => println!("revoked token {}", args.id),
        RevokeOutcome::AlreadyRevoked => println!("token {} was already revoked", args.id),
        RevokeOutcome::NotFound => anyhow::bail!("no token has id {}", args.id),
    }
    Ok(ExitCode::SUCCESS)
}

fn token_json(t: &ApiToken, project: &str) -> serde_json::Value {
    json!({
        "id": t.id,
        "name": t.name,
        "project_id": t.project_id,
        "project": project,
        "scopes": t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "expires_at": t.expires_at,
        "created_at": t.created_at,
        "last_used_at": t.last_used_at,
        "revoked_at": t.revoked_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_a_duration_or_a_time_in_the_future() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_expiry("90d", now).unwrap(),
            now + chrono::Duration::days(90)
        );
        assert_eq!(
            parse_expiry("2027-01-01T00:00:00Z", now)
                .unwrap()
                .to_rfc3339(),
            "2027-01-01T00:00:00+00:00"
        );
        assert!(parse_expiry("2026-01-01T00:00:00Z", now).is_err());
        assert!(parse_expiry("0s", now).is_err());
        assert!(parse_expiry("soon", now).is_err());
    }
}
