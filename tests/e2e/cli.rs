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
