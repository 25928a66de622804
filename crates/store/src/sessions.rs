//! Operator dashboard sessions (docs/dashboard.md): the SHA-256 of each session's secret, the
//! token that signed in, whether it is read-only, and its CSRF token. A session is only as
//! good as its token: one whose token was revoked or expired is not found.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::with_pool;
use crate::sql_types::{DbUuid, from_row};
use crate::{Store, StoreError};

/// A live session.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The token that signed in.
    pub token_id: Uuid,
    /// Signed in with `dashboard:read` (and without `admin`): no actions.
    pub read_only: bool,
    /// What every state-changing form must carry back.
    pub csrf: String,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the CSRF token.
        f.debug_struct("Session")
            .field("token_id", &self.token_id)
            .field("read_only", &self.read_only)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

from_row! {
    struct SessionRow {
        token_id: DbUuid,
        read_only: bool,
        csrf: String,
        expires_at: DateTime<Utc>,
    }
}

/// Queries on `dashboard_sessions`.
#[derive(Debug, Clone, Copy)]
pub struct SessionRepo<'a> {
    store: &'a Store,
}

impl<'a> SessionRepo<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// Stores a session (and drops the ended ones).
    pub async fn create(
        &self,
        id_sha256: &[u8; 32],
        token_id: Uuid,
        read_only: bool,
        csrf: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = crate::now();
        let _write = self.store.write_guard().await;
        with_pool!(self.store, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO dashboard_sessions \
                   (id_sha256, token_id, read_only, csrf, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id_sha256.as_slice())
            .bind(DbUuid(token_id))
            .bind(read_only)
            .bind(csrf)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The live session whose secret hashes to `id_sha256`: unexpired, its token neither
    /// revoked nor expired.
    pub async fn find(&self, id_sha256: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        let now = crate::now();
        let row: Option<SessionRow> = with_pool!(self.store, |pool| sqlx::query_as(
            "SELECT s.token_id, s.read_only, s.csrf, s.expires_at \
             FROM dashboard_sessions s JOIN api_tokens t ON t.id = s.token_id \
             WHERE s.id_sha256 = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL \
               AND (t.expires_at IS NULL OR t.expires_at > $2)"
        )
        .bind(id_sha256.as_slice())
        .bind(now)
        .fetch_optional(pool)
        .await?);
        Ok(row.map(|r| Session {
            token_id: r.token_id.0,
            read_only: r.read_only,
            csrf: r.csrf,
            expires_at: r.expires_at,
        }))
    }

    /// Ends a session (signing out).
    pub async fn delete(&self, id_sha256: &[u8; 32]) -> Result<(), StoreError> {
        let _write = self.store.write_guard().await;
        with_pool!(self.store, |pool| sqlx::query(
            "DELETE FROM dashboard_sessions WHERE id_sha256 = $1"
        )
        .bind(id_sha256.as_slice())
        .execute(pool)
        .await
        .map(|_| ())?);
        Ok(())
    }
}
