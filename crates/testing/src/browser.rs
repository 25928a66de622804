//! A real browser for tests: Debian's Chromium, driven by Playwright for Python (its
//! `playwright` package from PyPI, pointed at the system Chromium; no browser download).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{python_venv, skip_or_fail};

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The Playwright for Python release the tests drive the browser with.
const REQUIREMENTS: &str = "playwright==1.63.0\n";

/// The python of a virtualenv with Playwright, and the Chromium it drives; `None` after a
/// SKIPPED line when either cannot be had (a panic under `BYOK_TEST_SERVICES=required`).
/// Chromium is installed with `apt-get` when missing and the tests run as root, as CI does.
/// Blocking; once per process.
pub fn browser(venv_dir: &Path) -> Option<(PathBuf, PathBuf)> {
    static READY: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let chromium = chromium()?;
        let python = python_venv(venv_dir, REQUIREMENTS)?;
        Ok((python, chromium))
    });
    match ready {
        Ok(found) => Some(found.clone()),
        Err(why) => {
            skip_or_fail(
                "Chromium with Playwright",
                why,
                "the chromium package and pip",
            );
            None
        }
    }
}

fn chromium() -> Result<PathBuf, String> {
    let path = PathBuf::from(CHROMIUM);
    if path.exists() {
        return Ok(path);
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))
    };
    let mut installed = install()?;
    if !installed.status.success() {
        // A machine whose package lists were never fetched.
        let _ = Command::new("apt-get").arg("update").output();
        installed = install()?;
    }
    if !installed.status.success() || !path.exists() {
        return Err(format!(
            "apt-get install chromium failed: {}",
            String::from_utf8_lossy(&installed.stderr)
        ));
    }
    Ok(path)
}
