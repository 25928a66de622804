//! The operator's commands on the embedded shape, and their exit codes.

use std::os::unix::fs::PermissionsExt as _;

use crate::helpers::run;

#[tokio::test]
async fn keys_generate_prints_one_fresh_key_alone() {
    let dir = tempfile::tempdir().unwrap();
    let a = run(dir.path(), &[], &["keys", "generate"]).await;
    let b = run(dir.path(), &[], &["keys", "generate"]).await;
    assert_eq!(a.code, 0, "{}", a.stderr);
    for out in [&a, &b] {
        let key = out.stdout.strip_suffix('\n').expect("one line");
        assert_eq!(key.len(), 64);
        assert!(
            key.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
    assert_ne!(a.stdout, b.stdout);
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_in_a_fresh_folder() {
    let dir = tempfile::tempdir().unwrap();
    let created = run(dir.path(), &[], &["token", "create", "--name", "video-app"]).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let token = created.stdout.lines().next().unwrap();
    assert!(token.starts_with("byok_") && token.len() == 48, "{token}");
    assert!(created.stderr.contains("shown only this once"));

    // The embedded shape made its data folder, private to the owner.
    let data = dir.path().join("byok-data");
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let listed = run(dir.path(), &[], &["token", "list"]).await;
    assert_eq!(listed.code, 0);
    assert!(listed.stdout.contains("video-app"), "{}", listed.stdout);
    assert!(!listed.stdout.contains(token), "list never shows a secret");

    let json = run(dir.path(), &[], &["token", "list", "--json"]).await;
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let tokens = parsed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    let id = tokens[0]["id"].as_str().unwrap().to_owned();
    assert!(tokens[0]["revoked_at"].is_null());

    let revoked = run(dir.path(), &[], &["token", "revoke", &id]).await;
    assert_eq!(
        (revoked.code, revoked.stdout.trim()),
        (0, format!("revoked token {id}").as_str())
    );
    let again = run(dir.path(), &[], &["token", "revoke", &id]).await;
    assert_eq!(again.code, 0);
    assert!(again.stdout.contains("already revoked"));
    let unknown = run(
        dir.path(),
        &[],
        &["token", "revoke", "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"],
    )
    .await;
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("no token has id"));
    let json = run(dir.path(), &[], &["token", "list", "--json"]).await;
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(parsed["tokens"][0]["revoked_at"].is_string());
}

#[tokio::test]
async fn projects_and_scoped_tokens_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let created = run(
        dir.path(),
        &[],
        &["project", "create", "--name", "sceneflow-prod"],
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let id: uuid::Uuid = created.stdout.trim().parse().expect("the id alone");
    let again = run(
        dir.path(),
        &[],
        &["project", "create", "--name", "sceneflow-prod"],
    )
    .await;
    assert_eq!(again.code, 1, "a name is taken once");
    assert!(again.stderr.contains("exists"), "{}", again.stderr);

    let listed = run(dir.path(), &[], &["project", "list", "--json"]).await;
    let parsed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let names: Vec<&str> = parsed["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "sceneflow-prod"]);

    // Where its "connect your key" pages may send users back to.
    let set = run(
        dir.path(),
        &[],
        &[
            "project",
            "return-urls",
            "--project",
            "sceneflow-prod",
            "https://app.example.com/settings",
            "https://app.example.com/onboarding",
        ],
    )
    .await;
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert_eq!(
        set.stdout,
        "https://app.example.com/onboarding\nhttps://app.example.com/settings\n"
    );
    let bad = run(
        dir.path(),
        &[],
        &[
            "project",
            "return-urls",
            "--project",
            "sceneflow-prod",
            "javascript:alert(1)",
        ],
    )
    .await;
    assert_ne!(bad.code, 0, "not an http(s) URL");
    let shown = run(
        dir.path(),
        &[],
        &["project", "return-urls", "--project", "sceneflow-prod"],
    )
    .await;
    assert_eq!(shown.stdout, set.stdout, "unchanged by the refused one");
    let cleared = run(
        dir.path(),
        &[],
        &[
            "project",
            "return-urls",
            "--project",
            "sceneflow-prod",
            "--clear",
        ],
    )
    .await;
    assert_eq!((cleared.code, cleared.stdout.as_str()), (0, ""));

    let token = run(
        dir.path(),
        &[],
        &[
            "token",
            "create",
            "--name",
            "reader",
            "--project",
            "sceneflow-prod",
            "--scopes",
            "jobs:read,credentials:read",
            "--expires",
            "30d",
        ],
    )
    .await;
    assert_eq!(token.code, 0, "{}", token.stderr);
    assert!(token.stdout.starts_with("byok_"));
    let json = run(dir.path(), &[], &["token", "list", "--json"]).await;
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let listed = &parsed["tokens"][0];
    assert_eq!(listed["project_id"], id.to_string());
    assert_eq!(listed["project"], "sceneflow-prod");
    assert_eq!(
        listed["scopes"],
        serde_json::json!(["credentials:read", "jobs:read"])
    );
    assert!(listed["expires_at"].is_string(), "{listed}");
    let table = run(dir.path(), &[], &["token", "list"]).await;
    let header = table.stdout.lines().next().unwrap();
    for column in ["PROJECT", "SCOPES", "EXPIRES", "LAST USED"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        table.stdout.contains("credentials:read,jobs:read"),
        "{}",
        table.stdout
    );

    // Mistakes are named, and nothing is created.
    for (args, named) in [
        (&["--project", "nope"][..], "--project"),
        (&["--scopes", "jobs:delete"][..], "jobs:delete"),
        (&["--expires", "yesterday"][..], "--expires"),
        (
            &["--expires", "2020-01-01T00:00:00Z"][..],
            "not in the future",
        ),
    ] {
        let mut full = vec!["token", "create", "--name", "x"];
        full.extend_from_slice(args);
        let out = run(dir.path(), &[], &full).await;
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(named), "{args:?}: {}", out.stderr);
    }
    let json = run(dir.path(), &[], &["token", "list", "--json"]).await;
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(parsed["tokens"].as_array().unwrap().len(), 1);
}

/// Environment, arguments, and the setting the error must name.
type ConfigCase<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);

#[tokio::test]
async fn usage_errors_exit_2_and_config_errors_exit_64_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run(dir.path(), &[], &["frobnicate"]).await.code, 2);
    assert_eq!(
        run(dir.path(), &[], &["token", "revoke", "not-a-uuid"])
            .await
            .code,
        2
    );
    assert_eq!(
        run(dir.path(), &[], &["token", "create"]).await.code,
        2,
        "--name is required"
    );

    let cases: &[ConfigCase<'_>] = &[
        (
            &[("BYOK__WORKER__CONCURRENCY", "0")],
            &["token", "list"],
            "worker.concurrency",
        ),
        (&[("BYOK__API__LISTEN", "nowhere")], &["api"], "api.listen"),
        (
            &[],
            &["--config", "missing.toml", "token", "list"],
            "--config",
        ),
        (
            &[("DATABASE_URL", "mysql://x")],
            &["migrate"],
            "database.url",
        ),
        (
            &[
                ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x"),
                ("REDIS_URL", "redis://127.0.0.1:1"),
            ],
            &["api"],
            "encryption.keys",
        ),
        (
            &[("BYOK__ENCRYPTION__KEYS", "1:abcd")],
            &["api"],
            "encryption.keys",
        ),
    ];
    for (env, args, setting) in cases {
        let out = run(dir.path(), env, args).await;
        assert_eq!(out.code, 64, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(setting),
            "{args:?} should name {setting}: {}",
            out.stderr
        );
    }

    std::fs::write(
        dir.path().join("byok.toml"),
        "[api]\nlisten = \"127.0.0.1:1\"\nmax_body = 5\n",
    )
    .unwrap();
    let out = run(dir.path(), &[], &["token", "list"]).await;
    assert_eq!(out.code, 64);
    assert!(out.stderr.contains("max_body"), "{}", out.stderr);
}

/// A provider definition that breaks one rule stops `byok api` before it serves anything,
/// with the configuration exit code and a message naming the file, the provider and the
/// field; so does a `providers.<id>` table naming no provider.
#[tokio::test]
async fn a_bad_provider_definition_stops_start_up_naming_file_provider_and_field() {
    let luma = std::fs::read_to_string(format!("{}/luma.toml", crate::deploy::DEFINITIONS_DIR))
        .expect("the shipped Luma definition");
    // (what is changed, the field the error must name, a word of its reason)
    let cases = [
        (
            luma.replace(
                "poll_interval_secs = 5",
                "poll_interval_secs = 5\ncolour = \"blue\"",
            ),
            "colour",
            "unknown field",
        ),
        (
            luma.replace("\"prompt\": {{ prompt }},", "\"prompt\": {{ script }},"),
            "submit.body",
            "script",
        ),
        (
            luma.replace("processing = \"running\"", "processing = \"rendering\""),
            "poll.states.processing",
            "rendering",
        ),
        (
            luma.replace(
                "base_url = \"https://agents.lumalabs.ai/v1\"",
                "base_url = \"http://agents.lumalabs.ai/v1\"",
            ),
            "base_url",
            "https",
        ),
    ];
    for (text, field, reason) in cases {
        assert_ne!(text, luma, "the case changes the definition ({field})");
        let dir = tempfile::tempdir().unwrap();
        let defs = dir.path().join("providers");
        std::fs::create_dir(&defs).unwrap();
        let file = defs.join("luma.toml");
        std::fs::write(&file, text).unwrap();
        let env = [
            ("BYOK__ENCRYPTION__KEYS", crate::deploy::KEYS),
            ("BYOK__PROVIDERS__DEFINITIONS_DIR", defs.to_str().unwrap()),
        ];
        let out = run(dir.path(), &env, &["api"]).await;
        assert_eq!(out.code, 64, "{field}: {}", out.stderr);
        for expected in [file.to_str().unwrap(), "`luma`", field, reason] {
            assert!(
                out.stderr.contains(expected),
                "{field}: the message should name {expected}: {}",
                out.stderr
            );
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("BYOK__ENCRYPTION__KEYS", crate::deploy::KEYS),
        ("BYOK__PROVIDERS__SORA__BASE_URL", "https://example.com"),
    ];
    let out = run(dir.path(), &env, &["api"]).await;
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(out.stderr.contains("providers.sora"), "{}", out.stderr);
}
