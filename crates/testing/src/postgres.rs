//! A fresh PostgreSQL database per test (DEVELOPERS.md, "Services").
//!
//! The server is, in order: `DATABASE_URL` when it is a PostgreSQL URL; the
//! one on 127.0.0.1:5432 (user `postgres`, trust auth); one started from
//! `initdb` + `postgres` on PATH in a temporary directory on a free port.
//! Each test gets its own database, dropped when the test ends.
//!
//! [`spawn_postgres`] gives a test a server of its own to stop and start again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection as _, Executor as _, PgConnection};

use crate::process::{ChildGuard, free_port, wait_for_tcp, with_watchdog};
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

/// Starts a throwaway cluster. PostgreSQL refuses to run as root, so as root
/// the cluster runs as the `postgres` user through `runuser`.
fn start_private_server() -> Result<String, String> {
    let postgres = which("postgres").ok_or("no postgres binary on PATH")?;
    let dir = tempfile::Builder::new()
        .prefix("byok-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let data = dir.join("data");
    let as_postgres = init_cluster(&dir, &data)?;
    let prefix = if as_postgres.is_some() {
        "runuser -u postgres -- "
    } else {
        ""
    };
    let port = free_port();
    let server = format!(
        "{prefix}{} -D {} -p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
        postgres.display(),
        data.display(),
        dir.display()
    );
    with_watchdog(&server, &format!("rm -rf {}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    wait_until_serving(port, &url)?;
    Ok(url)
}

/// The user and group a server runs as: the `postgres` user's when the tests run as root
/// (PostgreSQL refuses root), `None` otherwise (the test's own user).
type RunAs = Option<(u32, u32)>;

/// `initdb` of a new cluster at `data` (inside `dir`, which holds its sockets too), with
/// trust authentication for `postgres`. As root, `dir` is handed to the `postgres` user
/// first and initdb runs as that user.
fn init_cluster(dir: &Path, data: &Path) -> Result<RunAs, String> {
    let initdb = which("initdb").ok_or("no initdb on PATH")?;
    let as_root = id(&["-u"]).as_deref() == Some("0");
    let run_as = if as_root {
        let status = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .map_err(|e| e.to_string())?;
        let (Some(uid), Some(gid)) = (id(&["-u", "postgres"]), id(&["-g", "postgres"])) else {
            return Err("running as root and there is no postgres user".into());
        };
        if !status.success() {
            return Err("running as root and cannot hand a directory to the postgres user".into());
        }
        Some((
            uid.parse().map_err(|_| "a numeric uid")?,
            gid.parse().map_err(|_| "a numeric gid")?,
        ))
    } else {
        None
    };
    let prefix = if run_as.is_some() {
        "runuser -u postgres -- "
    } else {
        ""
    };
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
    Ok(run_as)
}

/// What `id <args>` prints, trimmed (`None` when it fails).
fn id(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("id").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Waits until the server on `port` accepts connections, then sessions.
fn wait_until_serving(port: u16, url: &str) -> Result<(), String> {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    if !wait_for_tcp(addr, Duration::from_secs(20)) {
        return Err("started postgres but it never accepted connections".into());
    }
    // The port opens before recovery ends ("the database system is starting
    // up"): wait until a session can really be opened.
    wait_for_sessions(url, Duration::from_secs(20))
}

/// A PostgreSQL server of the test's own (a fresh cluster from `initdb` in a temporary
/// directory, on a free port), which the test may stop and start again: for tests of what
/// the system does while its database is away. Stopped when dropped.
#[derive(Debug)]
pub struct PostgresServer {
    /// `postgres://postgres@127.0.0.1:<port>/postgres` (trust authentication).
    pub url: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The postmaster while it runs.
    process: Option<ChildGuard>,
    postgres: PathBuf,
    run_as: RunAs,
    /// Its `-c name=value` settings.
    settings: Vec<String>,
    /// Holds the data directory and the sockets; removed on drop.
    dir: tempfile::TempDir,
}

/// How [`PostgresServer::stop`] stops the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostgresStop {
    /// SIGINT, PostgreSQL's "fast" shutdown: sessions are cut, a checkpoint is written.
    Fast,
    /// SIGQUIT, the "immediate" shutdown: every process exits at once, as in a crash; the
    /// next start replays the WAL.
    Immediate,
}

/// Starts a PostgreSQL server of the test's own, or `None` after a SKIPPED line when
/// `initdb` or `postgres` is missing or the server does not start. Blocking.
pub fn spawn_postgres() -> Option<PostgresServer> {
    // Crashes in these tests are the server's, never the machine's: what it wrote is in the
    // page cache either way.
    match spawn_postgres_with(&["fsync=off", "max_connections=300"]) {
        Ok(server) => Some(server),
        Err(why) => {
            skip_or_fail(
                "PostgreSQL (a server of the test's own)",
                &why,
                "PostgreSQL (initdb and postgres on PATH)",
            );
            None
        }
    }
}

/// Starts a PostgreSQL server of the caller's own with `settings` (`name=value`, passed as
/// `-c` options) and nothing else changed from `initdb`'s defaults: what a benchmark that
/// wants a production server's durability, or a setting of its own, starts. Blocking.
pub fn spawn_postgres_with(settings: &[&str]) -> Result<PostgresServer, String> {
    let postgres = which("postgres").ok_or("no postgres binary on PATH")?;
    let dir = tempfile::Builder::new()
        .prefix("byok-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let run_as = init_cluster(dir.path(), &dir.path().join("data"))?;
    let port = free_port();
    let mut server = PostgresServer {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        port,
        process: None,
        postgres,
        run_as,
        settings: settings.iter().map(|s| (*s).to_owned()).collect(),
        dir,
    };
    server.start()?;
    Ok(server)
}

impl PostgresServer {
    /// Starts the server (again) on its port and data directory and waits until it accepts
    /// sessions (after a crash, once its recovery is done). Blocking.
    pub fn start(&mut self) -> Result<(), String> {
        if self.process.is_some() {
            return Ok(());
        }
        let mut command = std::process::Command::new(&self.postgres);
        command
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt as _;
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().map_err(|e| e.to_string())?;
        self.process = Some(ChildGuard::new(child));
        wait_until_serving(self.port, &self.url)
    }

    /// Stops the server and waits until its postmaster has exited (its sessions are cut).
    pub fn stop(&mut self, how: PostgresStop) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        let signal = match how {
            PostgresStop::Fast => "-INT",
            PostgresStop::Immediate => "-QUIT",
        };
        let _ = std::process::Command::new("kill")
            .args([signal, &process.id().to_string()])
            .status();
        let _ = process.child_mut().wait();
    }

    /// Whether the server was started and not stopped since.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // An immediate shutdown rather than the guard's SIGKILL: a killed postmaster leaves
        // its backends running until they notice.
        self.stop(PostgresStop::Immediate);
    }
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
    fn an_own_server_stops_and_starts_again_with_its_data() {
        let Some(mut server) = super::spawn_postgres() else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = server.url.clone();
        let query = |sql: &'static str| {
            runtime.block_on(async {
                use sqlx::Connection as _;
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::raw_sql(sql).execute(&mut conn).await.map(|_| ())
            })
        };
        query("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)").unwrap();
        server.stop(super::PostgresStop::Immediate);
        assert!(!server.is_running());
        assert!(query("SELECT 1").is_err(), "stopped");
        server.start().unwrap();
        query("INSERT INTO kept SELECT n + 1 FROM kept").unwrap();
        server.stop(super::PostgresStop::Fast);
        server.start().unwrap();
        let rows: i64 = runtime.block_on(async {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&server.url).await.unwrap();
            sqlx::query_scalar("SELECT count(*) FROM kept")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        });
        assert_eq!(
            rows, 2,
            "the data survived an immediate and a fast shutdown"
        );
    }

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
