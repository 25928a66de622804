//! `user_provider_configs`: one sealed credential per (project, user, provider).
//!
//! This repository stores and returns sealed text only; sealing and opening
//! happen in `byok-crypto`, in the caller. Rows are untrusted input: a row
//! naming a provider this build does not know is returned with
//! `provider() == None`, never turned into an error for the whole listing.

use std::fmt;

use byok_core::{ProjectUser, ProviderId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::with_pool;
use crate::sql_types::{DbUuid, from_row};
use crate::{Store, StoreError};

/// Column list shared by every query that returns a credential row.
macro_rules! credential_columns {
    () => {
        "id, project_id, user_id, provider_name, encrypted_credentials, is_valid, credential_hint, \
         validated_at, last_error, created_at, updated_at"
    };
}

/// Stores `$new` (a `&NewCredential`) at `$now`, replacing the user's earlier key for the
/// provider, on `$executor` (a pool, or `&mut *tx` inside a transaction); evaluates to the
/// stored `CredentialRow`.
macro_rules! upsert_credential {
    ($executor:expr, $new:expr, $now:expr) => {{
        let new: &$crate::credentials::NewCredential = $new;
        sqlx::query_as::<_, $crate::credentials::CredentialRow>(concat!(
            "INSERT INTO user_provider_configs \
               (id, project_id, user_id, provider_name, encrypted_credentials, is_valid, created_at, \
                updated_at, credential_hint, validated_at, last_error) \
             VALUES ($1, $8, $2, $3, $4, TRUE, $5, $5, $6, $7, NULL) \
             ON CONFLICT (project_id, user_id, provider_name) DO UPDATE SET \
               encrypted_credentials = excluded.encrypted_credentials, \
               is_valid = TRUE, \
               updated_at = excluded.updated_at, \
               credential_hint = excluded.credential_hint, \
               validated_at = excluded.validated_at, \
               last_error = NULL \
             RETURNING ",
            credential_columns!()
        ))
        .bind($crate::sql_types::DbUuid(::uuid::Uuid::now_v7()))
        .bind($crate::sql_types::DbUuid(new.owner.user_id))
        .bind(new.provider.as_str())
        .bind(&new.sealed)
        .bind($now)
        .bind(&new.credential_hint)
        .bind(new.validated_at)
        .bind($crate::sql_types::DbUuid(new.owner.project_id))
        .fetch_one($executor)
        .await?
    }};
}
pub(crate) use {credential_columns, upsert_credential};

/// `$columns` of the row of `$owner`'s key for `$provider`, if any.
macro_rules! select_one {
    ($store:expr, $columns:expr, $owner:expr, $provider:expr) => {
        with_pool!($store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            $columns,
            " FROM user_provider_configs \
              WHERE project_id = $3 AND user_id = $1 AND provider_name = $2"
        ))
        .bind(DbUuid($owner.user_id))
        .bind($provider.as_str())
        .bind(DbUuid($owner.project_id))
        .fetch_optional(pool)
        .await?)
    };
}

from_row! {
    pub(crate) struct CredentialRow {
        id: DbUuid,
        project_id: DbUuid,
        user_id: DbUuid,
        provider_name: String,
        encrypted_credentials: String,
        is_valid: bool,
        credential_hint: Option<String>,
        validated_at: Option<DateTime<Utc>>,
        last_error: Option<String>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    }
}

impl From<CredentialRow> for StoredCredential {
    fn from(row: CredentialRow) -> Self {
        StoredCredential {
            id: row.id.0,
            project_id: row.project_id.0,
            user_id: row.user_id.0,
            provider_name: row.provider_name,
            sealed: row.encrypted_credentials,
            is_valid: row.is_valid,
            credential_hint: row.credential_hint,
            validated_at: row.validated_at,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// One stored credential row. `sealed` is the sealed text, never plaintext.
#[derive(Clone, PartialEq)]
pub struct StoredCredential {
    /// Row id.
    pub id: Uuid,
    /// The owner's project.
    pub project_id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// The stored provider name (see [`StoredCredential::provider`]).
    pub provider_name: String,
    /// The sealed value (`v2:…`, `v1:…` or legacy).
    pub sealed: String,
    /// False once the provider rejected the key or it could not be opened.
    pub is_valid: bool,
    /// Non-secret hint such as `key_…9f2c`.
    pub credential_hint: Option<String>,
    /// When the provider last confirmed the key.
    pub validated_at: Option<DateTime<Utc>>,
    /// Why the last check failed.
    pub last_error: Option<String>,
    /// First stored.
    pub created_at: DateTime<Utc>,
    /// Last replaced or checked.
    pub updated_at: DateTime<Utc>,
}

impl StoredCredential {
    /// The provider, when the stored name is one this build knows.
    pub fn provider(&self) -> Option<ProviderId> {
        self.provider_name.parse().ok()
    }

    /// The user who owns the key, in their project.
    pub fn owner(&self) -> ProjectUser {
        ProjectUser::new(self.project_id, self.user_id)
    }
}

impl fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The sealed text is safe without the key, but logs have no use for it.
        f.debug_struct("StoredCredential")
            .field("id", &self.id)
            .field("project_id", &self.project_id)
            .field("user_id", &self.user_id)
            .field("provider_name", &self.provider_name)
            .field("sealed", &"[SEALED]")
            .field("is_valid", &self.is_valid)
            .field("credential_hint", &self.credential_hint)
            .field("validated_at", &self.validated_at)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

/// A credential to store (insert, or replace the user's existing one).
#[derive(Clone)]
pub struct NewCredential {
    /// Owner.
    pub owner: ProjectUser,
    /// Provider.
    pub provider: ProviderId,
    /// Already sealed for (owner, provider).
    pub sealed: String,
    /// Non-secret hint.
    pub credential_hint: String,
    /// When the provider confirmed it; `None` when stored without a check.
    pub validated_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewCredential")
            .field("owner", &self.owner)
            .field("provider", &self.provider)
            .field("credential_hint", &self.credential_hint)
            .finish_non_exhaustive()
    }
}

/// The outcome of a key check, to record on the row.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    /// Whether the key works.
    pub is_valid: bool,
    /// Why not, when it does not.
    pub last_error: Option<String>,
    /// Set when the provider confirmed the key; `None` keeps the old value.
    pub validated_at: Option<DateTime<Utc>>,
}

/// Queries on `user_provider_configs`.
#[derive(Debug, Clone, Copy)]
pub struct CredentialRepo<'a> {
    store: &'a Store,
}

impl<'a> CredentialRepo<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// Inserts the user's credential for the provider, or replaces it: one
    /// row per (project, user, provider), enforced by the unique constraint, so two
    /// concurrent saves leave exactly one row (the later write wins).
    pub async fn upsert(&self, new: &NewCredential) -> Result<StoredCredential, StoreError> {
        let now = crate::now();
        let _write = self.store.write_guard().await;
        let row: CredentialRow = with_pool!(self.store, |pool| upsert_credential!(pool, new, now));
        Ok(row.into())
    }

    /// The user's credential for the provider.
    pub async fn get(
        &self,
        owner: ProjectUser,
        provider: ProviderId,
    ) -> Result<Option<StoredCredential>, StoreError> {
        let row: Option<CredentialRow> =
            select_one!(self.store, credential_columns!(), owner, provider);
        Ok(row.map(Into::into))
    }

    /// Whether the user has a key for `provider` and whether it is valid, without reading
    /// the sealed value: what enqueueing a job needs, on every request.
    pub async fn validity(
        &self,
        owner: ProjectUser,
        provider: ProviderId,
    ) -> Result<Option<KeyValidity>, StoreError> {
        let row: Option<(bool, Option<String>)> =
            select_one!(self.store, "is_valid, last_error", owner, provider);
        Ok(row.map(|(is_valid, last_error)| KeyValidity {
            is_valid,
            last_error,
        }))
    }

    /// Every credential row of the user, by provider name.
    pub async fn list_for_user(
        &self,
        owner: ProjectUser,
    ) -> Result<Vec<StoredCredential>, StoreError> {
        let rows: Vec<CredentialRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM user_provider_configs WHERE project_id = $2 AND user_id = $1 \
              ORDER BY provider_name"
        ))
        .bind(DbUuid(owner.user_id))
        .bind(DbUuid(owner.project_id))
        .fetch_all(pool)
        .await?);
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Deletes the user's credential for the provider; false if there was none.
    pub async fn delete(
        &self,
        owner: ProjectUser,
        provider: ProviderId,
    ) -> Result<bool, StoreError> {
        let _write = self.store.write_guard().await;
        let result = with_pool!(self.store, |pool| sqlx::query(
            "DELETE FROM user_provider_configs \
             WHERE project_id = $3 AND user_id = $1 AND provider_name = $2"
        )
        .bind(DbUuid(owner.user_id))
        .bind(provider.as_str())
        .bind(DbUuid(owner.project_id))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(result > 0)
    }

    /// Records a key check, but only if the row still holds `checked_sealed`:
    /// a check is slow, and if the key was replaced meanwhile its verdict
    /// belongs to the old key. `None` when the row changed or is gone.
    ///
    /// A check that finds a valid key invalid writes `credential.invalidated` for the
    /// project's subscribed endpoints in the same transaction (docs/webhooks.md): the user
    /// id, provider, hint and reason, never the key.
    pub async fn record_check(
        &self,
        owner: ProjectUser,
        provider: ProviderId,
        checked_sealed: &str,
        record: &CheckRecord,
    ) -> Result<Option<StoredCredential>, StoreError> {
        let now = crate::now();
        let _write = self.store.write_guard().await;
        let (row, deliveries) = with_pool!(self.store, |pool| {
            let mut tx = pool.begin().await?;
            let was_valid: Option<bool> = sqlx::query_scalar(
                "SELECT is_valid FROM user_provider_configs \
                 WHERE project_id = $1 AND user_id = $2 AND provider_name = $3 \
                   AND encrypted_credentials = $4",
            )
            .bind(DbUuid(owner.project_id))
            .bind(DbUuid(owner.user_id))
            .bind(provider.as_str())
            .bind(checked_sealed)
            .fetch_optional(&mut *tx)
            .await?;
            // `is_valid = $9`: the validity read above still holds, so of two checks
            // finding the key dead at once exactly one reports the change.
            let row: Option<CredentialRow> = match was_valid {
                None => None,
                Some(was_valid) => {
                    sqlx::query_as(concat!(
                        "UPDATE user_provider_configs SET \
                       is_valid = $1, last_error = $2, validated_at = COALESCE($3, validated_at), \
                       updated_at = $4 \
                     WHERE project_id = $8 AND user_id = $5 AND provider_name = $6 \
                       AND encrypted_credentials = $7 AND is_valid = $9 \
                     RETURNING ",
                        credential_columns!()
                    ))
                    .bind(record.is_valid)
                    .bind(&record.last_error)
                    .bind(record.validated_at)
                    .bind(now)
                    .bind(DbUuid(owner.user_id))
                    .bind(provider.as_str())
                    .bind(checked_sealed)
                    .bind(DbUuid(owner.project_id))
                    .bind(was_valid)
                    .fetch_optional(&mut *tx)
                    .await?
                }
            };
            let mut deliveries = Vec::new();
            if let Some(row) = &row
                && was_valid == Some(true)
                && !record.is_valid
            {
                let data = serde_json::json!({
                    "user_id": owner.user_id,
                    "provider": provider.as_str(),
                    "credential_hint": row.credential_hint,
                    "reason": record.last_error,
                    "invalidated_at": now,
                });
                deliveries = crate::outbox::subscribed_event!(
                    tx,
                    owner.project_id,
                    "credential.invalidated",
                    None::<Uuid>,
                    now,
                    data
                );
            }
            tx.commit().await?;
            (row, deliveries)
        });
        self.store.outbox().record(deliveries);
        Ok(row.map(Into::into))
    }

    /// Up to `limit` rows with ids after `after`, in id order: a stable walk
    /// over the whole table that concurrent inserts cannot derail.
    pub async fn page_after(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<StoredCredential>, StoreError> {
        let after = after.unwrap_or(Uuid::nil());
        let rows: Vec<CredentialRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM user_provider_configs WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(DbUuid(after))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?);
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The operator's listing (the dashboard's keys page): rows matching every filter set, in
    /// id order after `after`, at most `limit`.
    pub async fn search(
        &self,
        filter: &CredentialFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<StoredCredential>, StoreError> {
        // Only the filters that are set become conditions, each value bound, planned per call
        // with its values, as the jobs search is (a rare user is then read through the
        // user's index rather than by walking every key).
        let rows: Vec<CredentialRow> = with_pool!(self.store, |pool| {
            let mut query = crate::db::query_builder(
                pool,
                concat!(
                    "SELECT ",
                    credential_columns!(),
                    " FROM user_provider_configs WHERE id > "
                ),
            );
            query.push_bind(DbUuid(after.unwrap_or(Uuid::nil())));
            if let Some(project_id) = filter.project_id {
                query
                    .push(" AND project_id = ")
                    .push_bind(DbUuid(project_id));
            }
            if let Some(user_id) = filter.user_id {
                query.push(" AND user_id = ").push_bind(DbUuid(user_id));
            }
            if let Some(provider) = filter.provider.as_deref() {
                query.push(" AND provider_name = ").push_bind(provider);
            }
            query
                .push(" ORDER BY id LIMIT ")
                .push_bind(i64::from(limit));
            query
                .build_query_as()
                .persistent(false)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Replaces the sealed text of row `id` if it still is `expected`
    /// (compare-and-set); false when a concurrent save changed it first.
    pub async fn replace_sealed(
        &self,
        id: Uuid,
        expected: &str,
        sealed: &str,
    ) -> Result<bool, StoreError> {
        let _write = self.store.write_guard().await;
        let affected = with_pool!(self.store, |pool| sqlx::query(
            "UPDATE user_provider_configs SET encrypted_credentials = $1 \
             WHERE id = $2 AND encrypted_credentials = $3"
        )
        .bind(sealed)
        .bind(DbUuid(id))
        .bind(expected)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }
}

/// What [`CredentialRepo::search`] matches; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialFilter {
    /// One project's keys.
    pub project_id: Option<Uuid>,
    /// One user's keys (in every project unless `project_id` is set too).
    pub user_id: Option<Uuid>,
    /// One provider's keys (its id).
    pub provider: Option<String>,
}

/// A stored key's state, as [`CredentialRepo::validity`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValidity {
    /// False once a provider rejected the key.
    pub is_valid: bool,
    /// Why it was rejected, when it was.
    pub last_error: Option<String>,
}

/// The user's key for a job's provider as a worker step reads it, in the same query as the
/// job ([`crate::JobRepo::get_for_step`]): the sealed value and its validity.
#[derive(Clone, PartialEq, Eq)]
pub struct StepKey {
    /// The sealed credential.
    pub sealed: String,
    /// False once a provider rejected the key.
    pub is_valid: bool,
    /// Why it was rejected, when it was.
    pub last_error: Option<String>,
}

impl fmt::Debug for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepKey")
            .field("sealed", &"[SEALED]")
            .field("is_valid", &self.is_valid)
            .field("last_error", &self.last_error)
            .finish()
    }
}

from_row! {
    /// The key columns of [`crate::JobRepo::get_for_step`]'s row.
    pub(crate) struct StepKeyColumns {
        key_sealed: Option<String>,
        key_is_valid: Option<bool>,
        key_last_error: Option<String>,
    }
}

impl StepKeyColumns {
    pub(crate) fn into_key(self) -> Option<StepKey> {
        Some(StepKey {
            sealed: self.key_sealed?,
            is_valid: self.key_is_valid.unwrap_or(false),
            last_error: self.key_last_error,
        })
    }
}
