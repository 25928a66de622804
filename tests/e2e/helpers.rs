//! Running `byok` as a child process with a controlled environment.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What a finished `byok` run printed.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A `byok` command in `dir` with only the variables given: nothing from the
/// test's own environment (DATABASE_URL and friends) leaks into it.
pub fn byok(dir: &Path, env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_byok"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `byok args…` to completion.
pub async fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let out = byok(dir, env).args(args).output().await.expect("run byok");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// How often [`poll_until`] looks again.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Asks `probe` until it answers `Some`, or `deadline` passes (`None`).
///
/// Why a loop rather than a signal: what these tests wait for happens in
/// other processes (a `byok` child, the simulator, the databases), which tell
/// the test nothing; looking again is how a producer learns it too.
pub async fn poll_until<T>(
    deadline: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if start.elapsed() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Polls `url` until it answers 200 or `deadline` passes.
pub async fn wait_until_ready(url: &str, deadline: Duration) -> bool {
    let client = reqwest::Client::new();
    poll_until(deadline, async || {
        let answer = client.get(url).send().await;
        answer.is_ok_and(|r| r.status() == 200).then_some(())
    })
    .await
    .is_some()
}

/// Sends SIGTERM to a child process.
pub fn terminate(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}
