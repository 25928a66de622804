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

/// The commands `byok --help` lists, as paths (`token create`), leaves only:
/// a command with subcommands is asked for its own help.
async fn help_commands(dir: &std::path::Path, path: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = path.to_vec();
    args.push("--help");
    let out = crate::helpers::run(dir, &[], &args).await;
    assert_eq!(out.code, 0, "byok {}: {}", args.join(" "), out.stderr);
    let names: Vec<String> = out
        .stdout
        .lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return vec![path.join(" ")];
    }
    let mut leaves = Vec::new();
    for name in names {
        let mut sub = path.to_vec();
        sub.push(&name);
        leaves.extend(Box::pin(help_commands(dir, &sub)).await);
    }
    leaves
}

/// The README's Commands table lists exactly the commands the binary has.
#[tokio::test]
async fn the_readme_command_table_is_byok_help() {
    let readme = include_str!("../../README.md");
    let table = readme
        .split("## Commands")
        .nth(1)
        .expect("a Commands section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut documented: Vec<String> = table
        .lines()
        .filter_map(|line| line.strip_prefix("| `byok "))
        .map(|rest| {
            // The command path ends where its arguments begin.
            rest.split(['`', ' '])
                .take_while(|word| {
                    !word.is_empty()
                        && !word.starts_with('-')
                        && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    documented.sort();
    documented.dedup();
    let dir = tempfile::tempdir().unwrap();
    let mut actual = help_commands(dir.path(), &[]).await;
    actual.sort();
    assert_eq!(documented, actual, "README Commands table vs byok --help");
}
