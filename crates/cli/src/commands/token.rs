//! `byok token create|list|revoke`

use std::process::ExitCode;

use byok_config::Settings;
use byok_store::{ApiToken, RevokeOutcome};
use secrecy::ExposeSecret as _;
use serde_json::json;

use crate::cli::{CreateToken, ListTokens, RevokeToken};
use crate::table::{Table, when};

/// Creates a token and prints it alone on stdout's first line.
#[allow(clippy::print_stdout)]
pub async fn create(settings: &Settings, args: &CreateToken) -> anyhow::Result<ExitCode> {
    let store = byok_app::parts::open_store(settings).await?;
    let (token, secret) = store.tokens().create(&args.name).await?;
    println!("{}", secret.expose_secret());
    eprintln!(
        "created token {} ({}); it is shown only this once: store it now",
        token.id, token.name
    );
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
pub async fn list(settings: &Settings, args: &ListTokens) -> anyhow::Result<ExitCode> {
    let store = byok_app::parts::open_store(settings).await?;
    let tokens = store.tokens().list().await?;
    store.close().await;
    if args.json {
        let rows: Vec<_> = tokens.iter().map(token_json).collect();
        println!("{}", json!({ "tokens": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(["ID", "NAME", "CREATED", "LAST USED", "REVOKED"]);
    for t in &tokens {
        table.row(vec![
            t.id.to_string(),
            t.name.clone(),
            when(Some(t.created_at)),
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

fn token_json(t: &ApiToken) -> serde_json::Value {
    json!({
        "id": t.id,
        "name": t.name,
        "created_at": t.created_at,
        "last_used_at": t.last_used_at,
        "revoked_at": t.revoked_at,
    })
}
