//! PostgreSQL statements per job and per request, from the server's `pg_stat_statements`.
//!
//! The benchmark's own PostgreSQL server (started when neither `--database` nor
//! `DATABASE_URL` names one) preloads the extension; a server named by the operator is used
//! as it is, and the figure is left out when it does not have it.

use sqlx::{Connection as _, PgConnection};

/// The counters of one server.
#[derive(Debug, Clone)]
pub struct Statements {
    admin_url: String,
}

/// What one database ran since the last reset.
#[derive(Debug, Clone, Default)]
pub struct Ran {
    /// Statements executed (`calls`), every statement of every connection.
    pub calls: u64,
    /// The most frequent statements: calls, execution time (ms, nested statements included)
    /// and the start of their text.
    pub top: Vec<(u64, f64, String)>,
}

impl Ran {
    /// `calls` per `n` (jobs, requests), and the top statements per `n`, for the output.
    pub fn per(&self, n: usize) -> f64 {
        self.calls as f64 / n.max(1) as f64
    }

    pub fn top_human(&self, n: usize) -> String {
        self.top
            .iter()
            .map(|(calls, ms, text)| {
                let n = n.max(1) as f64;
                format!(
                    "{:.2} × ({:.0} µs) {text}",
                    *calls as f64 / n,
                    ms * 1000.0 / n
                )
            })
            .collect::<Vec<_>>()
            .join("\n            ")
    }

    pub fn top_json(&self, n: usize) -> serde_json::Value {
        self.top
            .iter()
            .map(|(calls, ms, text)| {
                let n = n.max(1) as f64;
                serde_json::json!({
                    "per": *calls as f64 / n,
                    "exec_us_per": ms * 1000.0 / n,
                    "statement": text,
                })
            })
            .collect()
    }
}

impl Statements {
    /// The counters of the server at `admin_url`, if it has `pg_stat_statements` loaded.
    pub async fn on(admin_url: &str) -> Option<Statements> {
        let mut conn = PgConnection::connect(admin_url).await.ok()?;
        let loaded: Option<String> =
            sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')")
                .fetch_one(&mut conn)
                .await
                .ok();
        if !loaded.is_some_and(|l| l.contains("pg_stat_statements")) {
            let _ = conn.close().await;
            return None;
        }
        let created = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        created.ok()?;
        Some(Statements {
            admin_url: admin_url.to_owned(),
        })
    }

    /// Forgets what was counted so far (every database).
    async fn reset(&self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.admin_url).await?;
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Starts counting what the database `name` (at `url`) runs from now: both the
    /// statement counters and its table counters start again from zero.
    pub async fn start(&self, name: &str, url: &str) -> anyhow::Result<Counting> {
        self.reset().await?;
        Self::reset_tables(url).await?;
        Ok(Counting {
            statements: self.clone(),
            name: name.to_owned(),
            url: url.to_owned(),
        })
    }

    /// Forgets the table counters of the database at `url` (`pg_stat_reset`).
    async fn reset_tables(url: &str) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(url).await?;
        sqlx::query("SELECT pg_stat_reset()")
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Row versions written to `generation_jobs` since [`Self::reset_tables`] in the
    /// database at `url`: (updates, of which heap-only). A heap-only update writes no index
    /// entry; every other one writes the whole row again and an entry in every index.
    /// Sessions report their counters when they go idle, at the latest 10 s later
    /// (PostgreSQL's `PGSTAT_IDLE_INTERVAL`), so this waits that long first.
    async fn job_updates(url: &str) -> anyhow::Result<(u64, u64)> {
        tokio::time::sleep(std::time::Duration::from_millis(10_500)).await;
        let mut conn = PgConnection::connect(url).await?;
        let (updates, hot): (i64, i64) = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables \
             WHERE relname = 'generation_jobs'",
        )
        .fetch_one(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok((
            u64::try_from(updates).unwrap_or(0),
            u64::try_from(hot).unwrap_or(0),
        ))
    }

    /// What `database` ran since the last reset.
    async fn ran(&self, database: &str) -> anyhow::Result<Ran> {
        let mut conn = PgConnection::connect(&self.admin_url).await?;
        let rows: Vec<(i64, f64, String)> = sqlx::query_as(
            "SELECT s.calls, s.total_exec_time, s.query FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname = $1
             ORDER BY s.calls DESC",
        )
        .bind(database)
        .fetch_all(&mut conn)
        .await?;
        let _ = conn.close().await;
        let calls = rows
            .iter()
            .map(|(c, _, _)| u64::try_from(*c).unwrap_or(0))
            .sum();
        let top = rows
            .into_iter()
            .take(10)
            .map(|(c, ms, q)| {
                let text: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
                let text = if text.chars().count() > 110 {
                    format!("{}…", text.chars().take(110).collect::<String>())
                } else {
                    text
                };
                (u64::try_from(c).unwrap_or(0), ms, text)
            })
            .collect();
        Ok(Ran { calls, top })
    }
}

/// One database's counters since [`Statements::start`].
#[derive(Debug)]
pub struct Counting {
    statements: Statements,
    name: String,
    url: String,
}

impl Counting {
    /// The statements run so far.
    pub async fn ran(&self) -> anyhow::Result<Ran> {
        self.statements.ran(&self.name).await
    }

    /// Updates of job rows so far, and of those the heap-only ones (waits for the sessions
    /// to report: [`Statements::job_updates`]).
    pub async fn job_updates(&self) -> anyhow::Result<(u64, u64)> {
        Statements::job_updates(&self.url).await
    }
}
