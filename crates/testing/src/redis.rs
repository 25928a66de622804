//! Redis for tests: a private namespace on a shared server, or a private server.
//!
//! The shared server is `REDIS_URL` when set, else 127.0.0.1:6379, else a
//! `redis-server` started on a free port. Tests isolate themselves by
//! namespace; [`spawn_redis`] gives a server of its own to tests that must
//! restart or configure it (AOF, kill -9).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use crate::postgres::which;
use crate::process::{ChildGuard, free_port, wait_for_tcp, with_watchdog};
use crate::skip_or_fail;

/// A namespace of its own on the shared test Redis. Dropping it deletes the
/// namespace's keys.
#[derive(Debug)]
pub struct TestRedis {
    /// `redis://…` of the server.
    pub url: String,
    /// A namespace no other test uses (`test-<uuid>`).
    pub namespace: String,
}

/// A private namespace, or `None` after a SKIPPED line when no Redis can be
/// had (a panic under `BYOK_TEST_SERVICES=required`).
pub async fn test_redis() -> Option<TestRedis> {
    let url = match server() {
        Ok(url) => url.clone(),
        Err(why) => {
            skip_or_fail("Redis", why, "redis-server");
            return None;
        }
    };
    let client = redis::Client::open(url.as_str()).ok()?;
    if let Err(e) = client.get_multiplexed_async_connection().await {
        skip_or_fail("Redis", &format!("cannot connect: {e}"), "redis-server");
        return None;
    }
    Some(TestRedis {
        url,
        namespace: format!("test-{}", uuid::Uuid::new_v4().simple()),
    })
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let url = self.url.clone();
        let pattern = format!("{{{}}}*", self.namespace);
        let cleanup = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return;
            };
            let Ok(mut conn) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        });
        let _ = cleanup.join();
    }
}

fn server() -> Result<&'static String, &'static str> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var("REDIS_URL")
                && (url.starts_with("redis://") || url.starts_with("rediss://"))
            {
                return Ok(url);
            }
            let standard: SocketAddr = "127.0.0.1:6379".parse().expect("literal address");
            if wait_for_tcp(standard, Duration::from_millis(300)) {
                return Ok("redis://127.0.0.1:6379".to_owned());
            }
            let spawned = spawn_redis_detached(&[])?;
            Ok(spawned)
        })
        .as_ref()
        .map_err(String::as_str)
}

/// A `redis-server` of the test's own, killed when this is dropped.
#[derive(Debug)]
pub struct SpawnedRedis {
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
    /// Its port.
    pub port: u16,
    /// Its working directory (AOF files live here).
    pub dir: tempfile::TempDir,
    /// The running server (after [`SpawnedRedis::stop`], the exited one).
    pub process: ChildGuard,
    /// The binary and the extra arguments it was started with, for [`SpawnedRedis::start`].
    binary: PathBuf,
    extra_args: Vec<String>,
}

/// Starts a private `redis-server` with extra arguments (e.g.
/// `["--appendonly", "yes"]`), or `None` after a SKIPPED line.
pub fn spawn_redis(extra_args: &[&str]) -> Option<SpawnedRedis> {
    let Some(binary) = which("redis-server") else {
        skip_or_fail("redis-server", "not on PATH", "redis-server");
        return None;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let extra_args: Vec<String> = extra_args.iter().map(|a| (*a).to_owned()).collect();
    let process = ChildGuard::new(launch(&binary, port, dir.path(), &extra_args));
    let server = SpawnedRedis {
        url: format!("redis://127.0.0.1:{port}"),
        port,
        dir,
        process,
        binary,
        extra_args,
    };
    if !server.listening() {
        skip_or_fail("redis-server", "started but never listened", "redis-server");
        return None;
    }
    Some(server)
}

/// `redis-server` on 127.0.0.1:`port` in `dir`, no RDB snapshots, with `extra_args`.
fn launch(binary: &Path, port: u16, dir: &Path, extra_args: &[String]) -> std::process::Child {
    std::process::Command::new(binary)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

impl SpawnedRedis {
    /// Stops the server and waits for it to exit: `graceful` sends SIGTERM (Redis shuts
    /// down cleanly, flushing its AOF), otherwise SIGKILL (a crash).
    pub fn stop(&mut self, graceful: bool) {
        if graceful {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.process.id().to_string()])
                .status();
        } else {
            let _ = self.process.child_mut().kill();
        }
        let _ = self.process.child_mut().wait();
    }

    /// Starts the server again on the same port, directory and arguments (with AOF on, it
    /// reads its data back); false when it never listens.
    pub fn start(&mut self) -> bool {
        let child = launch(&self.binary, self.port, self.dir.path(), &self.extra_args);
        self.process = ChildGuard::new(child);
        self.listening()
    }

    /// Waits up to 10 s for the server to accept connections.
    fn listening(&self) -> bool {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("address");
        wait_for_tcp(addr, Duration::from_secs(10))
    }
}

/// A shared fallback server that lives as long as the test process.
fn spawn_redis_detached(extra_args: &[&str]) -> Result<String, String> {
    let binary =
        which("redis-server").ok_or("no server on 127.0.0.1:6379 and no redis-server on PATH")?;
    let port = free_port();
    let command = format!(
        "{} --port {port} --bind 127.0.0.1 --save '' --appendonly no {}",
        binary.display(),
        extra_args.join(" ")
    );
    with_watchdog(&command, "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    if !wait_for_tcp(addr, Duration::from_secs(10)) {
        return Err("started redis-server but it never listened".into());
    }
    Ok(format!("redis://127.0.0.1:{port}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_private_server_starts_and_answers() {
        let Some(server) = super::spawn_redis(&["--appendonly", "yes"]) else {
            return;
        };
        let client = redis::Client::open(server.url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
        assert_eq!(pong, "PONG");
        let aof: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query(&mut conn)
            .unwrap();
        assert_eq!(aof, ["appendonly", "yes"]);
    }

    #[test]
    fn a_private_server_restarts_with_its_aof() {
        let Some(mut server) =
            super::spawn_redis(&["--appendonly", "yes", "--appendfsync", "always"])
        else {
            return;
        };
        let client = redis::Client::open(server.url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query(&mut conn)
            .unwrap();
        for graceful in [false, true] {
            server.stop(graceful);
            assert!(server.start());
            // While it reads its AOF back the server answers LOADING: ask until it answers.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let value = loop {
                let answer: Option<Option<String>> = client
                    .get_connection()
                    .and_then(|mut conn| redis::cmd("GET").arg("k").query(&mut conn))
                    .ok();
                match answer {
                    Some(value) => break value,
                    None if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    None => panic!("Redis never answered after its restart"),
                }
            };
            assert_eq!(value.as_deref(), Some("v"), "graceful: {graceful}");
        }
    }

    #[test]
    fn the_detached_fallback_server_answers() {
        if super::which("redis-server").is_none() {
            crate::skip_or_fail("redis-server", "not on PATH", "redis-server");
            return;
        }
        let url = super::spawn_redis_detached(&[]).unwrap();
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
        assert_eq!(pong, "PONG");
    }
}
