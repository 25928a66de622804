//! `byok keys generate` and `byok keys rewrap`.

use std::process::ExitCode;

use byok_config::Settings;
use byok_crypto::{SealContext, WebhookSecretContext};
use byok_store::{StoredCredential, StoredSecret};
use secrecy::ExposeSecret as _;

/// Rows read per page during a rewrap.
const PAGE: u32 = 200;
/// Attempts per row when concurrent saves keep replacing it.
const ATTEMPTS_PER_ROW: usize = 3;

/// Prints a fresh 256-bit key, alone on stdout.
#[allow(clippy::print_stdout)]
pub fn generate() -> anyhow::Result<ExitCode> {
    let key = byok_crypto::generate_key_hex()?;
    println!("{}", key.expose_secret());
    Ok(ExitCode::SUCCESS)
}

/// Re-seals every stored credential as `v2` under the primary key: values
/// under older keys, `v1` values (which name no project) and the seed's
/// legacy values, which open only here unless `encryption.accept_legacy`.
/// Then the same for webhook signing secrets (endpoints' and projects'
/// job-webhook secrets, current and previous), so the old key can leave the
/// ring without silencing a webhook.
///
/// Online: rows are walked in id order and each is replaced with a
/// compare-and-set on the sealed value it was read with, so a credential a
/// user saves meanwhile is never overwritten with the old key's content.
/// Idempotent: values already under the primary key are left alone.
#[allow(clippy::print_stdout)]
pub async fn rewrap(settings: &Settings) -> anyhow::Result<ExitCode> {
    let ring = byok_app::parts::key_ring(settings)?;
    let store = byok_app::parts::open_store(settings).await?;
    let repo = store.credentials();

    let (mut total, mut changed, mut current, mut failed) = (0usize, 0usize, 0usize, Vec::new());
    let mut after = None;
    loop {
        let page = repo.page_after(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for row in page {
            total += 1;
            match rewrap_row(&ring, &store, row).await {
                Ok(true) => changed += 1,
                Ok(false) => current += 1,
                Err(failure) => failed.push(failure),
            }
        }
    }

    for failure in &failed {
        eprintln!("not rewrapped: {failure}");
    }
    println!(
        "rewrapped {changed} of {total} credential(s) under key `{}` ({current} already current, {} failed)",
        ring.primary_key_id(),
        failed.len()
    );

    let secrets = store.webhooks().sealed_secrets().await?;
    let (mut secrets_changed, mut secrets_current, mut secrets_failed) = (0usize, 0usize, 0usize);
    for secret in &secrets {
        match rewrap_secret(&ring, &store, secret).await {
            Ok(true) => secrets_changed += 1,
            Ok(false) => secrets_current += 1,
            Err(failure) => {
                eprintln!("not rewrapped: {failure}");
                secrets_failed += 1;
            }
        }
    }
    println!(
        "rewrapped {secrets_changed} of {} webhook secret(s) under key `{}` ({secrets_current} already current, {secrets_failed} failed)",
        secrets.len(),
        ring.primary_key_id(),
    );
    store.close().await;
    Ok(if failed.is_empty() && secrets_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `Ok(true)` when the row was re-sealed, `Ok(false)` when it was current
/// (or deleted meanwhile), `Err` with a printable reason otherwise.
async fn rewrap_row(
    ring: &byok_crypto::KeyRing,
    store: &byok_store::Store,
    mut row: StoredCredential,
) -> Result<bool, String> {
    let Some(provider) = row.provider() else {
        return Err(format!(
            "row {}: unknown provider `{}`",
            row.id, row.provider_name
        ));
    };
    let context = SealContext::new(row.owner(), provider);
    for _ in 0..ATTEMPTS_PER_ROW {
        let resealed = ring.reseal(&context, &row.sealed).map_err(|e| {
            format!(
                "row {} (project {}, user {}, {provider}): {e}",
                row.id, row.project_id, row.user_id
            )
        })?;
        let Some(resealed) = resealed else {
            return Ok(false);
        };
        let swapped = store
            .credentials()
            .replace_sealed(row.id, &row.sealed, &resealed)
            .await
            .map_err(|e| format!("row {}: {e}", row.id))?;
        if swapped {
            return Ok(true);
        }
        // Someone saved a new value since we read the row: start again from it.
        match store.credentials().get(row.owner(), provider).await {
            Ok(Some(fresh)) if fresh.id == row.id => row = fresh,
            Ok(_) => return Ok(false),
            Err(e) => return Err(format!("row {}: {e}", row.id)),
        }
    }
    Err(format!(
        "row {}: kept changing during the rewrap; run it again",
        row.id
    ))
}

/// `Ok(true)` when the secret was re-sealed, `Ok(false)` when it was current (or replaced
/// by a rotation meanwhile, which sealed it under the primary key), `Err` with a printable
/// reason otherwise.
async fn rewrap_secret(
    ring: &byok_crypto::KeyRing,
    store: &byok_store::Store,
    secret: &StoredSecret,
) -> Result<bool, String> {
    let which = match (secret.endpoint_id, secret.previous) {
        (Some(endpoint), false) => format!("webhook endpoint {endpoint}'s secret"),
        (Some(endpoint), true) => format!("webhook endpoint {endpoint}'s previous secret"),
        (None, false) => format!("project {}'s job-webhook secret", secret.project_id),
        (None, true) => format!(
            "project {}'s previous job-webhook secret",
            secret.project_id
        ),
    };
    let context = WebhookSecretContext {
        project_id: secret.project_id,
        endpoint_id: secret.endpoint_id,
    };
    let resealed = ring
        .reseal_webhook_secret(&context, &secret.sealed)
        .map_err(|e| format!("{which}: {e}"))?;
    let Some(resealed) = resealed else {
        return Ok(false);
    };
    store
        .webhooks()
        .replace_sealed_secret(secret, &resealed)
        .await
        .map_err(|e| format!("{which}: {e}"))
}
