//! A fresh PostgreSQL database per test (DEVELOPERS.md, "Services").
//!
//! The server is, in order: `DATABASE_URL` when it is a PostgreSQL URL; the
//! one on 127.0.0.1:5432 (user `postgres`, trust auth); one started from
//! `initdb` + `postgres` on PATH in a temporary directory on a free port.
//! Each test gets its own database, dropped when the test ends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection as _, Executor as _, PgConnection};

use crate::process::{free_port, wait_for_tcp, with_watchdog};
use crate::skip_or_fail;

/// A database of its own for one test. Dropping it drops the database.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL of the test's database.
    pub url: String,
    /// Its name (`byok_test_<uuid>`).
    pub name: String,
    admin_url: String,
}

/// A fresh database, or `None` after a SKIPPED line when no PostgreSQL can
/// be had (a panic under `BYOK_TEST_SERVICES=required`).
pub async fn test_database() -> Option<TestDatabase> {
    let admin_url = match server() {
        Ok(url) => url.clone(),
        Err(why) => {
            skip_or_fail(
                "PostgreSQL",
                why,
                "PostgreSQL (initdb and postgres on PATH)",
            );
            return None;
        }
    };
    let name = format!("byok_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = match PgConnection::connect(&admin_url).await {
        Ok(conn) => conn,
        Err(e) => {
            skip_or_fail("PostgreSQL", &format!("cannot connect: {e}"), "PostgreSQL");
            return None;
        }
    };
    // The name is generated here from a UUID, never from input.
    admin
        .execute(sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE DATABASE \"{name}\""
        ))))
        .await
        .expect("CREATE DATABASE for the test");
    let _ = admin.close().await;
    let mut url = url::Url::parse(&admin_url).expect("admin URL parses");
    url.set_path(&format!("/{name}"));
    Some(TestDatabase {
        url: url.to_string(),
        name,
        admin_url,
    })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside any async context we can rely on (and possibly
        // inside a runtime that forbids blocking), so the cleanup gets a
        // thread and a runtime of its own.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = admin.execute(sqlx::raw_sql(AssertSqlSafe(drop))).await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The admin URL of the server this test process uses, found once.
fn server() -> Result<&'static String, &'static str> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER
        .get_or_init(find_or_start_server)
        .as_ref()
        .map_err(String::as_str)
}

fn find_or_start_server() -> Result<String, String> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && (url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        return Ok(url);
    }
    let standard: SocketAddr = "127.0.0.1:5432".parse().expect("literal address");
    if wait_for_tcp(standard, Duration::from_millis(300)) {
        return Ok("postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    }
    start_private_server()
}

/// Starts a throwaway cluster for tests (durability off: `fsync=off`).
fn start_private_server() -> Result<String, String> {
    spawn_postgres(&["fsync=off"])
}

/// Starts a PostgreSQL server of the caller's own from `initdb` on a free loopback port, with
/// `settings` as `-c name=value` options, and answers its `postgres://` URL (user `postgres`,
/// trust authentication). It stops, and its directory is removed, when this process ends.
/// PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user
/// through `runuser`.
pub fn spawn_postgres(settings: &[&str]) -> Result<String, String> {
    let initdb = which("initdb").ok_or("no server on 127.0.0.1:5432 and no initdb on PATH")?;
    let postgres = which("postgres").ok_or("no postgres binary on PATH")?;
    let dir = tempfile::Builder::new()
        .prefix("byok-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let as_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    let prefix = if as_root {
        let status = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("running as root and cannot hand a directory to the postgres user".into());
        }
        "runuser -u postgres -- ".to_owned()
    } else {
        String::new()
    };
    let data = dir.join("data");
    let init = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{prefix}{} -D {} -U postgres --auth=trust --no-sync",
            initdb.display(),
            data.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !init.success() {
        return Err("initdb failed".into());
    }
    let port = free_port();
    let options: String = settings.iter().map(|s| format!(" -c {s}")).collect();
    let server = format!(
        "{prefix}{} -D {} -p {port} -k {} -c listen_addresses=127.0.0.1{options}",
        postgres.display(),
        data.display(),
        dir.display()
    );
    with_watchdog(&server, &format!("rm -rf {}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    if !wait_for_tcp(addr, Duration::from_secs(20)) {
        return Err("started postgres but it never accepted connections".into());
    }
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    // The port opens before recovery ends ("the database system is starting
    // up"): wait until a session can really be opened.
    wait_for_sessions(&url, Duration::from_secs(20))?;
    Ok(url)
}

fn wait_for_sessions(url: &str, deadline: Duration) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    runtime.block_on(async {
        loop {
            match PgConnection::connect(url).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Err(e) if start.elapsed() > deadline => {
                    return Err(format!("postgres never accepted a session: {e}"));
                }
                // Startup takes a few hundred milliseconds; nothing signals its end.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
}

pub(crate) fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(binary))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_private_cluster_starts_from_initdb() {
        if super::which("initdb").is_none() {
            crate::skip_or_fail("initdb", "not on PATH", "PostgreSQL server binaries");
            return;
        }
        let url = super::start_private_server().expect("private cluster");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let one: i32 = runtime.block_on(async {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        });
        assert_eq!(one, 1);
    }
}
