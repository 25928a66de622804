//! Connecting to either database, migrations, and the dispatch macro that
//! lets each query be written once for both.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, SqlSafeStr as _};

use crate::StoreError;
use crate::budgets::BudgetRepo;
use crate::connect::ConnectRepo;
use crate::credentials::CredentialRepo;
use crate::jobs::JobRepo;
use crate::outbox::OutboxFeed;
use crate::projects::ProjectRepo;
use crate::sessions::SessionRepo;
use crate::tokens::TokenRepo;
use crate::usage::UsageRepo;
use crate::webhooks::WebhookRepo;

/// The migrations of `/migrations`, embedded by `build.rs`.
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

static POSTGRES_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrator(embedded::POSTGRES));
static SQLITE_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrator(embedded::SQLITE));

/// A migrator over embedded `(version, description, sql)`, as `sqlx::migrate!` builds one
/// from the same files (same versions, descriptions and checksums; `-- no-transaction`
/// honoured).
fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    AssertSqlSafe(sql).into_sql_str(),
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect(),
    )
}

/// Runs `$body` with `$pool` bound to whichever pool the store holds. The
/// body is compiled once per database, so the same SQL text and the same
/// Rust types must work on both; the compiler checks that they do.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

#[derive(Debug, Clone)]
pub(crate) enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Creates the embedded data directory readable by its owner only, or
/// makes an existing one so: it holds sealed credentials, token hashes and
/// (beside them) the key file. A shared directory such as `/tmp` (sticky bit
/// set) is left as it is: its mode is not ours to change.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    const STICKY: u32 = 0o1000;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mode = meta.permissions().mode();
            if mode & STICKY == 0 && mode & 0o777 != 0o700 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        }
        _ => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
    }
}

/// Makes the database file and its WAL and shared-memory files readable and
/// writable by their owner only, whether they were just created or existed.
/// SQLite gives the WAL and shared-memory files it creates later the mode of
/// the database file, so they stay private too.
fn make_private_files(db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut names = vec![db.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        names.push(name.into());
    }
    for name in names {
        match std::fs::metadata(&name) {
            Ok(meta) if meta.permissions().mode() & 0o777 != 0o600 => {
                std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: the distributed shape.
    Postgres,
    /// SQLite: the embedded shape.
    Sqlite,
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections kept at most (PostgreSQL; SQLite uses a few readers).
    pub max_connections: u32,
    /// How long a caller waits for a free connection before `Unavailable`.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether the database schema matches this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Every migration of this build is applied.
    UpToDate,
    /// This many migrations are not applied yet.
    Pending(usize),
}

/// The database: credentials, producer tokens and jobs. Cheap to clone
/// (pools are reference-counted).
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) db: Db,
    /// SQLite: this process's write lock on the file (`byok_sqlite_lock::write_lock`).
    write: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Webhook deliveries this process wrote, for its relay.
    outbox: Arc<OutboxFeed>,
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…`. For SQLite the file and
    /// its directory are created when missing (the embedded first run).
    pub async fn connect(url: &SecretString, options: &StoreOptions) -> Result<Store, StoreError> {
        let url = url.expose_secret();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await?;
            Ok(Store {
                db: Db::Postgres(pool),
                write: None,
                outbox: Arc::default(),
            })
        } else if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(StoreError::Database)?
                .create_if_missing(true)
                // WAL lets readers proceed while one writer commits; the busy
                // timeout makes concurrent writers wait instead of failing.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            if let Some(dir) = connect
                .get_filename()
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                create_private_dir(dir).map_err(StoreError::Io)?;
            }
            let file = connect.get_filename().to_path_buf();
            // Before connecting, so the WAL files SQLite creates inherit the
            // private mode of an existing file; after, for a file just made.
            make_private_files(&file).map_err(StoreError::Io)?;
            let write = byok_sqlite_lock::write_lock(&file);
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections.clamp(1, 8))
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await?;
            make_private_files(&file).map_err(StoreError::Io)?;
            Ok(Store {
                db: Db::Sqlite(pool),
                write: Some(write),
                outbox: Arc::default(),
            })
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// Taken around every write: on SQLite, this process's write lock on
    /// the file (`byok_sqlite_lock::write_lock`); on PostgreSQL, nothing.
    pub(crate) async fn write_guard(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.write {
            Some(lock) => Some(Arc::clone(lock).lock_owned().await),
            None => None,
        }
    }

    /// The webhook deliveries this process's writes created, for its relay to push
    /// (`byok-deliveries`). Shared by every clone of the store.
    pub fn outbox(&self) -> &OutboxFeed {
        &self.outbox
    }

    /// The database this store talks to.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Postgres(_) => Backend::Postgres,
            Db::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies every pending migration; returns how many were applied.
    /// Safe to run concurrently: sqlx takes an advisory lock on PostgreSQL.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let before = self.pending_migrations().await?;
        match &self.db {
            Db::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await?,
            Db::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
        }
        Ok(before)
    }

    /// Compares the applied migrations with this build's, without changing anything.
    pub async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        Ok(match self.pending_migrations().await? {
            0 => SchemaStatus::UpToDate,
            n => SchemaStatus::Pending(n),
        })
    }

    /// Fails with [`StoreError::SchemaOutdated`] unless every migration is applied.
    pub async fn require_current_schema(&self) -> Result<(), StoreError> {
        match self.schema_status().await? {
            SchemaStatus::UpToDate => Ok(()),
            SchemaStatus::Pending(pending) => Err(StoreError::SchemaOutdated { pending }),
        }
    }

    async fn pending_migrations(&self) -> Result<usize, StoreError> {
        let (migrator, exists_sql) = match &self.db {
            Db::Postgres(_) => (
                &*POSTGRES_MIGRATOR,
                "SELECT to_regclass('_sqlx_migrations') IS NOT NULL",
            ),
            Db::Sqlite(_) => (
                &*SQLITE_MIGRATOR,
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            ),
        };
        let exists: bool = with_pool!(self, |pool| sqlx::query_scalar(exists_sql)
            .fetch_one(pool)
            .await?);
        let applied: Vec<i64> = if exists {
            with_pool!(self, |pool| sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success"
            )
            .fetch_all(pool)
            .await?)
        } else {
            Vec::new()
        };
        Ok(migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .count())
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: i32 = with_pool!(self, |pool| sqlx::query_scalar("SELECT 1")
            .fetch_one(pool)
            .await?);
        Ok(())
    }

    /// Users' sealed provider credentials.
    pub fn credentials(&self) -> CredentialRepo<'_> {
        CredentialRepo::new(self)
    }

    /// Generation jobs and their history.
    pub fn jobs(&self) -> JobRepo<'_> {
        JobRepo::new(self)
    }

    /// Projects.
    pub fn projects(&self) -> ProjectRepo<'_> {
        ProjectRepo::new(self)
    }

    /// Producer API tokens.
    pub fn tokens(&self) -> TokenRepo<'_> {
        TokenRepo::new(self)
    }

    /// Webhook endpoints, secrets and deliveries.
    pub fn webhooks(&self) -> WebhookRepo<'_> {
        WebhookRepo::new(self)
    }

    /// What ended jobs made and cost.
    pub fn usage(&self) -> UsageRepo<'_> {
        UsageRepo::new(self)
    }

    /// Operator dashboard sessions.
    pub fn sessions(&self) -> SessionRepo<'_> {
        SessionRepo::new(self)
    }

    /// "Connect your key": return URLs and links.
    pub fn connect_links(&self) -> ConnectRepo<'_> {
        ConnectRepo::new(self)
    }

    /// Budget limits, and the embedded shape's budget ledger.
    pub fn budgets(&self) -> BudgetRepo<'_> {
        BudgetRepo::new(self)
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match &self.db {
            Db::Postgres(pool) => pool.close().await,
            Db::Sqlite(pool) => pool.close().await,
        }
    }
}

/// A query builder for `pool`'s database: names the database inside a `with_pool!` body, which
/// is compiled once for each.
pub(crate) fn query_builder<DB: sqlx::Database>(
    _pool: &sqlx::Pool<DB>,
    init: &str,
) -> sqlx::QueryBuilder<DB>
where
    DB::Arguments: Default,
{
    sqlx::QueryBuilder::new(init)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Databases migrated by builds that used `sqlx::migrate!` must find the same versions,
    /// descriptions and checksums, or `migrate` would refuse them as modified.
    #[test]
    fn the_embedded_migrations_are_what_sqlx_migrate_embeds() {
        let theirs = [
            sqlx::migrate!("../../migrations/postgres"),
            sqlx::migrate!("../../migrations/sqlite"),
        ];
        for (ours, theirs) in [&*POSTGRES_MIGRATOR, &*SQLITE_MIGRATOR]
            .into_iter()
            .zip(&theirs)
        {
            let ours: Vec<_> = ours.iter().collect();
            let theirs: Vec<_> = theirs.iter().collect();
            assert_eq!(ours.len(), theirs.len());
            assert!(!ours.is_empty());
            for (a, b) in ours.into_iter().zip(theirs) {
                assert_eq!(
                    (
                        a.version,
                        &a.description,
                        &a.checksum,
                        a.no_tx,
                        a.migration_type
                    ),
                    (
                        b.version,
                        &b.description,
                        &b.checksum,
                        b.no_tx,
                        b.migration_type
                    ),
                );
                assert_eq!(a.sql.as_str(), b.sql.as_str());
            }
        }
    }
}
