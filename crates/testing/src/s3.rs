//! A real S3-compatible server for tests: moto in server mode.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::{ChildGuard, free_port, wait_for_tcp};
use crate::{python_venv, skip_or_fail};

/// The moto release the tests run against (its `server` extra brings Flask and werkzeug).
const REQUIREMENTS: &str =
    "# S3-compatible test server (byok_testing::s3_server)\nmoto[server]==5.1.22\n";

/// Runs moto's server and exits when the process that started it is gone, so a test run
/// killed outright leaves no server behind (on drop the guard kills it at once).
const LAUNCHER: &str = "\
import os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
main(sys.argv[1:])
";

/// A moto server on a loopback port with a fresh bucket; killed on drop.
#[derive(Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// A bucket of this server's own (`byok-test-<hex>`), created empty.
    pub bucket: String,
    /// `us-east-1`.
    pub region: String,
    /// Dummy credentials (moto accepts any).
    pub access_key_id: String,
    /// Dummy credentials (moto accepts any).
    pub secret_access_key: String,
    /// The server process.
    pub process: ChildGuard,
}

impl S3Server {
    /// The standard AWS variables that point a client at this server:
    /// `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", &self.endpoint),
            ("AWS_REGION", &self.region),
            ("AWS_ACCESS_KEY_ID", &self.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &self.secret_access_key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }

    /// Creates another empty bucket on this server and returns its name.
    pub fn create_bucket(&self) -> Result<String, String> {
        let bucket = format!(
            "byok-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let addr = self.addr();
        let status = request(addr, "PUT", &format!("/{bucket}"))?;
        if status != 200 {
            return Err(format!("creating bucket {bucket} answered HTTP {status}"));
        }
        Ok(bucket)
    }

    fn addr(&self) -> SocketAddr {
        self.endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("the endpoint is an address")
    }
}

/// The virtualenv's python, built once per process (pip runs once, not once per test).
fn venv_python() -> &'static Result<PathBuf, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| python_venv(&venv_dir(), REQUIREMENTS))
}

/// `<target>/tmp/byok-moto-python` beside the running test binary
/// (`<target>/<profile>/deps/<test>`), else under the system's temporary directory.
fn venv_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|target| target.join("tmp")))
        .filter(|dir| std::fs::create_dir_all(dir).is_ok())
        .unwrap_or_else(std::env::temp_dir)
        .join("byok-moto-python")
}

/// Starts moto (PyPI `moto[server]`, pinned, in a virtualenv under the target directory)
/// on a free loopback port, waits until it answers and creates a fresh bucket. `None`
/// after a SKIPPED line when python3, pip or PyPI is missing (a panic under
/// `BYOK_TEST_SERVICES=required`). Blocking: the first call of a process may install
/// the package (tens of seconds); starting the server takes a second or two.
pub fn s3_server() -> Option<S3Server> {
    launch(free_port(), None)
}

impl S3Server {
    /// Stops the server (SIGKILL): clients now find nothing listening, as when the
    /// storage is down. [`S3Server::restart`] brings it back.
    pub fn stop(&mut self) {
        let child = self.process.child_mut();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A new moto on the same port with the same (empty) bucket: the endpoint and the
    /// bucket clients were given work again. Objects stored before are gone (moto keeps
    /// them in memory). `false` after a SKIPPED line when it cannot start.
    pub fn restart(&mut self) -> bool {
        self.stop();
        let port = self.addr().port();
        let bucket = self.bucket.clone();
        match launch(port, Some(&bucket)) {
            Some(fresh) => {
                *self = fresh;
                true
            }
            None => false,
        }
    }
}

/// Starts moto on `port` and creates `bucket` (a fresh name when `None`).
fn launch(port: u16, bucket: Option<&str>) -> Option<S3Server> {
    let install = "python3 with pip and venv (and PyPI access for moto[server])";
    let python = match venv_python() {
        Ok(python) => python,
        Err(why) => {
            skip_or_fail("moto (S3 server)", why, install);
            return None;
        }
    };
    let log = tempfile::NamedTempFile::new().expect("a log file");
    let child = Command::new(python)
        .arg("-c")
        .arg(LAUNCHER)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        // Nothing from the test's environment may change how moto behaves.
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("TEST_SERVER_MODE")
        .env_remove("MOTO_S3_CUSTOM_ENDPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("the log file"))
        .spawn()
        .expect("spawn python");
    let process = ChildGuard::new(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut server = S3Server {
        endpoint: format!("http://{addr}"),
        bucket: String::new(),
        region: "us-east-1".to_owned(),
        access_key_id: "byok-test-access-key".to_owned(),
        secret_access_key: "byok-test-secret-key".to_owned(),
        process,
    };
    let failed = |why: String| {
        let output = std::fs::read_to_string(log.path()).unwrap_or_default();
        let tail: String = output
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        skip_or_fail("moto (S3 server)", &format!("{why}\n{tail}"), install);
    };
    if !wait_for_tcp(addr, Duration::from_secs(60)) {
        failed("started but never listened".to_owned());
        return None;
    }
    // Listening is not answering: wait for an HTTP answer, then make the bucket.
    let deadline = Instant::now() + Duration::from_secs(30);
    let created = loop {
        let made = match &bucket {
            Some(name) => match request(addr, "PUT", &format!("/{name}")) {
                Ok(200) => Ok((*name).to_owned()),
                Ok(status) => Err(format!("creating bucket {name} answered HTTP {status}")),
                Err(e) => Err(e),
            },
            None => server.create_bucket(),
        };
        match made {
            Ok(bucket) => break Ok(bucket),
            Err(e) if Instant::now() > deadline => break Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    match created {
        Ok(bucket) => {
            server.bucket = bucket;
            Some(server)
        }
        Err(why) => {
            failed(why);
            None
        }
    }
}

/// One unsigned HTTP/1.1 request with an empty body (moto does not check signatures);
/// the answer's status.
fn request(addr: SocketAddr, method: &str, path: &str) -> Result<u16, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_server_starts_with_a_fresh_bucket() {
        let Some(server) = super::s3_server() else {
            return;
        };
        assert!(server.bucket.starts_with("byok-test-"), "{}", server.bucket);
        let other = server.create_bucket().expect("a second bucket");
        assert_ne!(other, server.bucket);
        let status = super::request(server.addr(), "GET", &format!("/{}", server.bucket))
            .expect("listing answers");
        assert_eq!(status, 200);
        let status = super::request(server.addr(), "GET", "/no-such-bucket-here").unwrap();
        assert_eq!(status, 404);
    }

    #[test]
    fn a_stopped_server_refuses_and_a_restarted_one_has_the_bucket_again() {
        let Some(mut server) = super::s3_server() else {
            return;
        };
        let (endpoint, bucket) = (server.endpoint.clone(), server.bucket.clone());
        server.stop();
        assert!(super::request(server.addr(), "GET", &format!("/{bucket}")).is_err());
        assert!(server.restart());
        assert_eq!(
            (server.endpoint.as_str(), server.bucket.as_str()),
            (endpoint.as_str(), bucket.as_str())
        );
        let status = super::request(server.addr(), "GET", &format!("/{bucket}")).unwrap();
        assert_eq!(status, 200);
    }
}
