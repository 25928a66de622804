//! "Connect your key" (docs/connect.md): the URLs a project's users may be sent back to, and
//! the single-use links that let one user store one provider's key on byok's own page.
//! Only the SHA-256 of a link's secret is kept.

use byok_core::{ProjectUser, ProviderId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::credentials::{CredentialRow, NewCredential, StoredCredential, credential_columns};
use crate::db::with_pool;
use crate::sql_types::{DbUuid, from_row};
use crate::{Store, StoreError};

/// The most return URLs a project may list.
pub const MAX_RETURN_URLS: usize = 20;

/// A link to make.
#[derive(Debug, Clone)]
pub struct NewConnectLink {
    /// Its id.
    pub id: Uuid,
    /// SHA-256 of its secret.
    pub token_sha256: [u8; 32],
    /// The user whose key it stores, in their project.
    pub owner: ProjectUser,
    /// The provider.
    pub provider: ProviderId,
    /// Where the page sends the user once the key is stored (on the project's list).
    pub return_url: String,
    /// The producer token that made it.
    pub created_by_token: Option<Uuid>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A stored link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectLink {
    /// Its id.
    pub id: Uuid,
    /// The user whose key it stores.
    pub owner: ProjectUser,
    /// The provider, as stored.
    pub provider: String,
    /// Where to send the user afterwards.
    pub return_url: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was used; a used link never works again.
    pub used_at: Option<DateTime<Utc>>,
}

from_row! {
    struct LinkRow {
        id: DbUuid,
        project_id: DbUuid,
        user_id: DbUuid,
        provider: String,
        return_url: String,
        expires_at: DateTime<Utc>,
        used_at: Option<DateTime<Utc>>,
    }
}

/// Queries on `project_return_urls` and `connect_links`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectRepo<'a> {
    store: &'a Store,
}

impl<'a> ConnectRepo<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// The project's return URLs, sorted.
    pub async fn return_urls(&self, project_id: Uuid) -> Result<Vec<String>, StoreError> {
        let urls: Vec<String> = with_pool!(self.store, |pool| sqlx::query_scalar(
            "SELECT url FROM project_return_urls WHERE project_id = $1 ORDER BY url"
        )
        .bind(DbUuid(project_id))
        .fetch_all(pool)
        .await?);
        Ok(urls)
    }

    /// Replaces the project's return URLs (checked by the caller).
    pub async fn set_return_urls(
        &self,
        project_id: Uuid,
        urls: &[String],
    ) -> Result<(), StoreError> {
        if urls.len() > MAX_RETURN_URLS {
            return Err(StoreError::Invalid("at most 20 return URLs per project"));
        }
        let _write = self.store.write_guard().await;
        with_pool!(self.store, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM project_return_urls WHERE project_id = $1")
                .bind(DbUuid(project_id))
                .execute(&mut *tx)
                .await?;
            for url in urls {
                sqlx::query(
                    "INSERT INTO project_return_urls (project_id, url) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(DbUuid(project_id))
                .bind(url)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Stores a new link.
    pub async fn create(&self, link: &NewConnectLink) -> Result<(), StoreError> {
        let _write = self.store.write_guard().await;
        with_pool!(self.store, |pool| sqlx::query(
            "INSERT INTO connect_links (id, token_sha256, project_id, user_id, provider, \
               return_url, created_by_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )
        .bind(DbUuid(link.id))
        .bind(link.token_sha256.as_slice())
        .bind(DbUuid(link.owner.project_id))
        .bind(DbUuid(link.owner.user_id))
        .bind(link.provider.as_str())
        .bind(&link.return_url)
        .bind(link.created_by_token.map(DbUuid))
        .bind(crate::now())
        .bind(link.expires_at)
        .execute(pool)
        .await
        .map(|_| ())?);
        Ok(())
    }

    /// The link whose secret hashes to `token_sha256`, used or not.
    pub async fn find(&self, token_sha256: &[u8; 32]) -> Result<Option<ConnectLink>, StoreError> {
        let row: Option<LinkRow> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT id, project_id, user_id, provider, return_url, expires_at, used_at \
             FROM connect_links WHERE token_sha256 = $1"
        )
        .bind(token_sha256.as_slice())
        .fetch_optional(pool)
        .await?);
        Ok(row.map(|r| ConnectLink {
            id: r.id.0,
            owner: ProjectUser::new(r.project_id.0, r.user_id.0),
            provider: r.provider,
            return_url: r.return_url,
            expires_at: r.expires_at,
            used_at: r.used_at,
        }))
    }

    /// Uses link `link_id` to store `credential`, in one transaction: the link is marked
    /// used only while it is unused and unexpired (`None` otherwise, nothing stored), the key
    /// replaces the user's earlier one, and `credential.connected` is written for the
    /// project's subscribed endpoints (the user id, provider and hint; never the key).
    pub async fn connect(
        &self,
        link_id: Uuid,
        credential: &NewCredential,
    ) -> Result<Option<StoredCredential>, StoreError> {
        let now = crate::now();
        let _write = self.store.write_guard().await;
        let (stored, deliveries) = with_pool!(self.store, |pool| {
            let mut tx = pool.begin().await?;
            let used: Option<DbUuid> = sqlx::query_scalar(
                "UPDATE connect_links SET used_at = $1 \
                 WHERE id = $2 AND used_at IS NULL AND expires_at > $1 RETURNING id",
            )
            .bind(now)
            .bind(DbUuid(link_id))
            .fetch_optional(&mut *tx)
            .await?;
            if used.is_none() {
                tx.rollback().await?;
                return Ok(None);
            }
            let row: CredentialRow =
                crate::credentials::upsert_credential!(&mut *tx, credential, now);
            let stored = StoredCredential::from(row);
            let data = serde_json::json!({
                "user_id": credential.owner.user_id,
                "provider": credential.provider.as_str(),
                "credential_hint": stored.credential_hint,
                "connected_at": now,
            });
            let deliveries = crate::outbox::subscribed_event!(
                tx,
                credential.owner.project_id,
                "credential.connected",
                None::<Uuid>,
                now,
                data
            );
            tx.commit().await?;
            (stored, deliveries)
        });
        self.store.outbox().record(deliveries);
        Ok(Some(stored))
    }
}
