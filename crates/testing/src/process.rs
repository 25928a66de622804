//! Child processes for tests: free ports, readiness, and cleanup.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Waits until `addr` accepts TCP connections, or `deadline` passes.
pub fn wait_for_tcp(addr: SocketAddr, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        // Polling a port is the only readiness signal a foreign server gives.
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Kills its child process when dropped, so a failing test does not leave
/// servers behind.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    /// Takes ownership of a started child.
    pub fn new(child: Child) -> Self {
        Self { child }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Mutable access, e.g. to wait for it.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A shell prefix that runs `command` and kills it once the test process
/// (`parent_pid`) is gone. Servers kept in statics are never dropped, so
/// without this watchdog they would outlive the test run.
/// `cleanup` runs after the server has stopped (e.g. removing its directory).
pub(crate) fn with_watchdog(command: &str, cleanup: &str) -> std::process::Command {
    let parent = std::process::id();
    let script = format!(
        "{command} & child=$!; while kill -0 {parent} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1; done; kill $child 2>/dev/null; wait $child; {cleanup}"
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(script);
    cmd
}
