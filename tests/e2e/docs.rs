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
