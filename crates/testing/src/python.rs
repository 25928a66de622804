//! A Python virtualenv with pinned packages from PyPI, for tests that run
//! real third-party clients or tools against our servers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Where the requirements a virtualenv was built from are written inside it.
const STAMP: &str = "byok-requirements.txt";

/// The python of a virtualenv at `venv` holding `requirements` (a
/// `requirements.txt` text, versions pinned), building it when it is
/// missing or was built from other requirements. Returns why not when
/// python3, pip or PyPI is unavailable.
///
/// The environment is built aside and renamed into place, so a concurrent
/// test run never sees half of one; a run that loses the race uses the
/// winner's. Blocking: call it from `spawn_blocking` (once per process,
/// e.g. behind a `OnceLock`).
pub fn python_venv(venv: &Path, requirements: &str) -> Result<PathBuf, String> {
    let python = venv.join("bin/python");
    let ready = |dir: &Path| {
        std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == requirements)
            && dir.join("bin/python").exists()
    };
    if ready(venv) {
        return Ok(python);
    }
    let started = Instant::now();
    let building = venv.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&building)
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !created.status.success() {
        return Err(format!(
            "python3 -m venv failed: {}",
            String::from_utf8_lossy(&created.stderr)
        ));
    }
    let listed = building.join("requirements-to-install.txt");
    std::fs::write(&listed, requirements).map_err(|e| e.to_string())?;
    let installed = Command::new(building.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--timeout",
            "60",
            "-r",
        ])
        .arg(&listed)
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !installed.status.success() {
        let _ = std::fs::remove_dir_all(&building);
        return Err(format!(
            "pip install failed: {}",
            String::from_utf8_lossy(&installed.stderr)
        ));
    }
    std::fs::write(building.join(STAMP), requirements).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(venv);
    if std::fs::rename(&building, venv).is_err() {
        // Another run won the race; use its environment.
        let _ = std::fs::remove_dir_all(&building);
    }
    eprintln!(
        "python packages installed into {} in {:.1}s",
        venv.display(),
        started.elapsed().as_secs_f64()
    );
    if ready(venv) {
        Ok(python)
    } else {
        Err(format!("{} is not usable", venv.display()))
    }
}
