//! `api_tokens`: producer API tokens, stored as SHA-256 hashes only.
//!
//! A token is `byok_` followed by 43 characters of unpadded base64url
//! (32 random bytes). Tokens carry 256 bits of entropy, so a plain SHA-256
//! is enough to store them: there is nothing to brute-force, unlike a
//! password, and the hash lookup stays one indexed query per request.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use byok_core::Scopes;
use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::db::with_pool;
use crate::sql_types::{DbUuid, from_row};
use crate::{Store, StoreError};

/// Every token starts with this, so leaked tokens are easy to recognise
/// (and to find with secret scanners).
pub const TOKEN_PREFIX: &str = "byok_";

/// Length of a token: the prefix and 43 base64url characters.
const TOKEN_LEN: usize = 5 + 43;

/// `last_used_at` is written at most this often per token, so that a busy
/// producer does not turn every request into a write.
const LAST_USED_GRANULARITY: Duration = Duration::seconds(60);

/// A producer token's record (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Token id, used to revoke it.
    pub id: Uuid,
    /// What the operator called it.
    pub name: String,
    /// The project it acts in; it sees nothing of any other.
    pub project_id: Uuid,
    /// What it may do there.
    pub scopes: Scopes,
    /// When it stops working; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last authenticated a request (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked; a revoked token authenticates nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    /// Whether the token has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Column list shared by every query that returns a token row.
macro_rules! token_columns {
    () => {
        "id, name, project_id, scopes, expires_at, created_at, last_used_at, revoked_at"
    };
}

from_row! {
    /// The columns of `api_tokens` an [`ApiToken`] is read from.
    struct TokenRow {
        id: DbUuid,
        name: String,
        project_id: DbUuid,
        scopes: String,
        expires_at: Option<DateTime<Utc>>,
        created_at: DateTime<Utc>,
        last_used_at: Option<DateTime<Utc>>,
        revoked_at: Option<DateTime<Utc>>,
    }
}

impl TryFrom<TokenRow> for ApiToken {
    type Error = StoreError;

    fn try_from(row: TokenRow) -> Result<Self, StoreError> {
        // A scope this build does not know makes the row unreadable rather
        // than quietly narrower or wider: which it should be is unknowable.
        let scopes = Scopes::parse_list(&row.scopes)
            .map_err(|_| StoreError::Malformed("api_tokens.scopes"))?;
        Ok(ApiToken {
            id: row.id.0,
            name: row.name,
            project_id: row.project_id.0,
            scopes,
            expires_at: row.expires_at,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        })
    }
}

/// A token to create (fields public; [`NewToken::new`] for the usual one).
#[derive(Debug, Clone)]
pub struct NewToken {
    /// What the operator calls it: 1-100 printable characters.
    pub name: String,
    /// The project it acts in.
    pub project_id: Uuid,
    /// What it may do; at least one scope.
    pub scopes: Scopes,
    /// When it stops working, if ever; must be in the future.
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewToken {
    /// A producer token of `project_id` named `name`: every scope but
    /// `admin`, no expiry.
    pub fn new(name: impl Into<String>, project_id: Uuid) -> NewToken {
        NewToken {
            name: name.into(),
            project_id,
            scopes: Scopes::producer(),
            expires_at: None,
        }
    }
}

/// What `revoke` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The token was active and is now revoked.
    Revoked,
    /// It had been revoked before.
    AlreadyRevoked,
    /// No token has this id.
    NotFound,
}

/// Queries on `api_tokens`.
#[derive(Clone, Copy)]
pub struct TokenRepo<'a> {
    store: &'a Store,
}

impl fmt::Debug for TokenRepo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenRepo")
    }
}

impl<'a> TokenRepo<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Self { store }
    }

    /// Creates a token. The secret is returned once and never stored: only
    /// its SHA-256 is. The project must exist.
    pub async fn create(&self, new: &NewToken) -> Result<(ApiToken, SecretString), StoreError> {
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(StoreError::Invalid(
                "a token name is 1-100 printable characters",
            ));
        }
        if new.scopes.is_empty() {
            return Err(StoreError::Invalid("a token needs at least one scope"));
        }
        let created_at = crate::now();
        if new.expires_at.is_some_and(|at| at <= created_at) {
            return Err(StoreError::Invalid(
                "a token's expiry must be in the future",
            ));
        }
        // SQLite's api_tokens.project_id has no foreign key (ALTER TABLE
        // cannot add one), so the project is checked here on both databases.
        if self.store.projects().get(new.project_id).await?.is_none() {
            return Err(StoreError::Invalid("no project has this id"));
        }
        let mut random = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut random[..])
            .map_err(|_| StoreError::Invalid("the system random number generator failed"))?;
        let secret = SecretString::from(format!(
            "{TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(&random[..])
        ));
        let token = ApiToken {
            id: Uuid::now_v7(),
            name: name.to_owned(),
            project_id: new.project_id,
            scopes: new.scopes.clone(),
            expires_at: new.expires_at,
            created_at,
            last_used_at: None,
            revoked_at: None,
        };
        let _write = self.store.write_guard().await;
        with_pool!(self.store, |pool| sqlx::query(
            "INSERT INTO api_tokens \
               (id, name, token_sha256, created_at, project_id, scopes, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        .bind(DbUuid(token.id))
        .bind(&token.name)
        .bind(sha256(secret.expose_secret()))
        .bind(token.created_at)
        .bind(DbUuid(token.project_id))
        .bind(token.scopes.to_string())
        .bind(token.expires_at)
        .execute(pool)
        .await?
        .rows_affected());
        Ok((token, secret))
    }

    /// The unrevoked token matching `presented`, if any; notes its use
    /// unless it has expired. The caller refuses expired ones
    /// ([`ApiToken::is_expired`]), saying so.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<ApiToken>, StoreError> {
        // Anything that cannot be a token is refused before touching the
        // database, so garbage costs no query.
        if presented.len() != TOKEN_LEN || !presented.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let token: Option<TokenRow> = with_pool!(self.store, |pool| sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL"
        ))
        .bind(sha256(presented))
        .fetch_optional(pool)
        .await?);
        let Some(mut token) = token.map(ApiToken::try_from).transpose()? else {
            return Ok(None);
        };
        let now = crate::now();
        if !token.is_expired(now)
            && token
                .last_used_at
                .is_none_or(|at| now - at >= LAST_USED_GRANULARITY)
        {
            let _write = self.store.write_guard().await;
            with_pool!(self.store, |pool| sqlx::query(
                "UPDATE api_tokens SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)"
            )
            .bind(now)
            .bind(DbUuid(token.id))
            .bind(now - LAST_USED_GRANULARITY)
            .execute(pool)
            .await?
            .rows_affected());
            token.last_used_at = Some(now);
        }
        Ok(Some(token))
    }

    /// Every token, oldest first.
    pub async fn list(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows: Vec<TokenRow> = with_pool!(self.store, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens ORDER BY created_at, id"
            ))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(ApiToken::try_from).collect()
    }

    /// Revokes token `id`; takes effect for the next request.
    pub async fn revoke(&self, id: Uuid) -> Result<RevokeOutcome, StoreError> {
        let _write = self.store.write_guard().await;
        let affected = with_pool!(self.store, |pool| sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
        )
        .bind(crate::now())
        .bind(DbUuid(id))
        .execute(pool)
        .await?
        .rows_affected());
        if affected == 1 {
            return Ok(RevokeOutcome::Revoked);
        }
        let exists: bool = with_pool!(self.store, |pool| sqlx::query_scalar(
            "SELECT count(*) > 0 FROM api_tokens WHERE id = $1"
        )
        .bind(DbUuid(id))
        .fetch_one(pool)
        .await?);
        Ok(if exists {
            RevokeOutcome::AlreadyRevoked
        } else {
            RevokeOutcome::NotFound
        })
    }
}

fn sha256(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
