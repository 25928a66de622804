//! Documentation that must agree with the code.

/// The README's test command is the one CI runs.
#[test]
fn readme_and_ci_agree_on_the_test_command() {
    let readme = include_str!("../../README.md");
    let ci = include_str!("../../.ci/run");
    let command = "cargo test --workspace --locked";
    assert!(readme.contains(command), "README shows the test command");
    assert!(
        ci.lines().any(|l| l.trim() == command),
        ".ci/run runs the README's test command"
    );
}

/// The README's quick start is `cargo run --release -- demo` from the
/// repository's root. In a virtual workspace that runs the one binary of the
/// default members, and fails ("could not determine which binary to run")
/// as soon as a second member has a binary; so exactly one, `byok`.
#[test]
fn readme_cargo_run_resolves_to_the_byok_binary() {
    let readme = include_str!("../../README.md");
    assert!(readme.contains("cargo run --release -- demo"));
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .args(["--manifest-path", root])
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let defaults = metadata["workspace_default_members"]
        .as_array()
        .expect("workspace_default_members");
    let binaries: Vec<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|package| defaults.contains(&package["id"]))
        .flat_map(|package| package["targets"].as_array().into_iter().flatten())
        .filter(|target| {
            target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"))
        })
        .filter_map(|target| target["name"].as_str())
        .collect();
    assert_eq!(binaries, ["byok"], "binaries among the default members");
}
