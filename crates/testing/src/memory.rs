//! Memory measurements for tests that bound a process's RSS, and the child
//! process such a test runs in (so the other tests of its binary, running in
//! parallel threads, cannot move the figure).

use std::process::Command;

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`: `12345 kB`); `pid` `None`
/// is this process. `None` where there is no such file or field (not Linux).
pub fn proc_status_bytes(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS, where the kernel allows it.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Runs the test `name` of this test binary alone in a child process, with `env` added,
/// and asserts that it ran and passed; prints the lines of its output that mention RSS.
/// The child test is `#[ignore]`d so that a normal run skips it, and checks a variable of
/// `env` so that it does nothing when run by hand.
pub fn run_child_test(name: &str, env: &[(String, String)]) {
    let exe = std::env::current_exe().expect("the test binary");
    let output = Command::new(exe)
        .args([
            name,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1 passed"), "the child test ran:\n{stdout}");
    for line in stdout.lines().filter(|l| l.contains("RSS")) {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_a_resident_set() {
        if !std::path::Path::new("/proc/self/status").exists() {
            return;
        }
        let rss = super::proc_status_bytes(None, "VmRSS").expect("VmRSS");
        let peak = super::proc_status_bytes(Some(std::process::id()), "VmHWM").expect("VmHWM");
        assert!(rss > 0 && peak >= rss, "{rss} {peak}");
        assert_eq!(super::proc_status_bytes(None, "NoSuchField"), None);
    }
}
