//! What the benchmarks share: scratch databases and Redis namespaces,
//! process CPU and memory readings, statistics, progress and logs.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection as _, Executor as _, PgConnection};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Progress goes to stderr, so stdout holds only results.
#[allow(clippy::print_stderr)]
pub fn progress(line: &str) {
    eprintln!("{line}");
}

/// The directories of finished runs (their videos, SQLite files), removed when the program
/// ends rather than when each run ends. On an ext4 file system without a journal (this
/// project's benchmark machine), the kernel will not hand out an inode freed in the last
/// 60 s (6 min while its inode block is dirty) and checks every such inode of the group
/// before it creates a file: right after a run removed its 20,000 videos, the next run's
/// file creations took 30 % of this process's CPU (`perf`: `__ext4_new_inode` →
/// `recently_deleted`), a third of the next figure lost to the cleanup of the run before.
/// One run must not be measured with the cost of the previous one's cleanup.
static FINISHED_RUN_DIRS: Mutex<Vec<tempfile::TempDir>> = Mutex::new(Vec::new());

/// Keeps `dir` until [`RemoveFinishedRunsAtExit`] is dropped.
pub fn remove_at_exit(dir: tempfile::TempDir) {
    FINISHED_RUN_DIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(dir);
}

/// Removes the directories given to [`remove_at_exit`] when dropped: held by `main`, so
/// they go when the program ends, by an error too.
pub struct RemoveFinishedRunsAtExit;

impl Drop for RemoveFinishedRunsAtExit {
    fn drop(&mut self) {
        let dirs = std::mem::take(
            &mut *FINISHED_RUN_DIRS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        drop(dirs);
    }
}

type LogHandle = reload::Handle<LevelFilter, tracing_subscriber::Registry>;

fn log_handle() -> &'static OnceLock<LogHandle> {
    static HANDLE: OnceLock<LogHandle> = OnceLock::new();
    &HANDLE
}

/// Installs a log subscriber that is off until [`production_logs`] turns
/// it on: the system benchmarks run our code with its logs formatted at
/// the production default level (`info`, as `byok api`/`worker` log) and
/// written nowhere, so their cost is in the figures; the queue benchmark
/// compares bare engines and runs without.
pub fn init_logs() {
    let (filter, handle) = reload::Layer::new(LevelFilter::OFF);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(std::io::sink);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
    let _ = log_handle().set(handle);
}

/// Logs at `info` (formatted, then discarded) while `on`.
pub fn production_logs(on: bool) {
    if let Some(handle) = log_handle().get() {
        let level = if on {
            LevelFilter::INFO
        } else {
            LevelFilter::OFF
        };
        let _ = handle.modify(|f| *f = level);
    }
}

pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The `p` quantile (0–1) of sorted durations, in milliseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

// --- Processes ------------------------------------------------------------

/// CPU seconds (user + system, all threads) used so far by process `pid`
/// (`self` for this one), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields 14 and 15, counted after the parenthesised command name, in
    // clock ticks (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A `VmRSS`/`VmHWM`-style line of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Pids whose command name (`/proc/<pid>/comm`) is `name`.
fn pids_named(name: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .collect()
}

/// CPU seconds used so far by this process, by every `postgres` process and
/// by every `redis-server` process of this machine (other clients of those
/// servers count too: run the benchmarks on an otherwise idle machine).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub bench: f64,
    pub postgres: f64,
    pub redis: f64,
}

impl CpuSplit {
    pub fn read() -> CpuSplit {
        let sum = |name: &str| {
            pids_named(name)
                .iter()
                .filter_map(|pid| cpu_seconds(pid))
                .sum()
        };
        CpuSplit {
            bench: cpu_seconds("self").unwrap_or(0.0),
            postgres: sum("postgres"),
            redis: sum("redis-server"),
        }
    }

    /// Cores used by each between `self` (earlier) and `later`, over `secs`.
    pub fn cores_until(&self, later: &CpuSplit, secs: f64) -> CpuSplit {
        let secs = secs.max(1e-9);
        CpuSplit {
            bench: (later.bench - self.bench) / secs,
            postgres: (later.postgres - self.postgres) / secs,
            redis: (later.redis - self.redis) / secs,
        }
    }

    /// Cores used by all three together.
    pub fn total(&self) -> f64 {
        self.bench + self.postgres + self.redis
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "bench": round2(self.bench),
            "postgres": round2(self.postgres),
            "redis": round2(self.redis),
        })
    }

    pub fn human(&self) -> String {
        format!(
            "bench process {:.2}, postgres {:.2}, redis {:.2} cores",
            self.bench, self.postgres, self.redis
        )
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// --- Services -------------------------------------------------------------

/// A PostgreSQL database of the benchmark's own, migrated; dropped by
/// [`ScratchDb::drop_now`].
#[derive(Debug)]
pub struct ScratchDb {
    pub url: String,
    name: String,
    admin_url: String,
}

impl ScratchDb {
    pub async fn create(admin_url: &str) -> anyhow::Result<ScratchDb> {
        let name = format!("byok_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url).await.map_err(|e| {
            anyhow::anyhow!("cannot reach PostgreSQL (DATABASE_URL / --database): {e}")
        })?;
        // The name is generated here from a UUID, never from input.
        admin
            .execute(sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE DATABASE \"{name}\""
            ))))
            .await?;
        let _ = admin.close().await;
        let url = url_with_path(admin_url, &name)?;
        let db = ScratchDb {
            url,
            name,
            admin_url: admin_url.to_owned(),
        };
        let store = byok_store::Store::connect(
            &secrecy::SecretString::from(db.url.as_str()),
            &byok_store::StoreOptions::default(),
        )
        .await?;
        store.migrate().await?;
        store.close().await;
        Ok(db)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn drop_now(self) {
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            if let Err(e) = admin.execute(sqlx::raw_sql(AssertSqlSafe(sql))).await {
                progress(&format!("could not drop {}: {e}", self.name));
            }
            let _ = admin.close().await;
        }
    }
}

fn url_with_path(url: &str, database: &str) -> anyhow::Result<String> {
    // postgres://user@host:port/db?params → …/<database>?params
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .ok_or_else(|| anyhow::anyhow!("not a URL: the PostgreSQL URL"))?
        + 3;
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// Deletes the keys matching `pattern` (the benchmark's own, after a run).
pub async fn delete_matching(url: &str, pattern: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_get_the_scratch_name() {
        assert_eq!(
            url_with_path("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            url_with_path("postgres://u:p@h/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            url_with_path("postgres://h:1", "x").unwrap(),
            "postgres://h:1/x"
        );
    }
}
