//! Configuration as an operator meets it: layers, aliases, and errors that
//! name the setting.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::Duration;

use byok_config::{ConfigError, Environment, KeyRingSource, Shape, load_from, load_key_ring};
use byok_core::{DEFAULT_PROJECT_ID, ProjectUser, ProviderId};
use secrecy::ExposeSecret;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn env(pairs: &[(&str, &str)]) -> Environment {
    Environment::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn file(contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("byok.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(contents.as_bytes())
        .unwrap();
    (dir, path)
}

fn error(file_contents: Option<&str>, pairs: &[(&str, &str)]) -> ConfigError {
    let f = file_contents.map(file);
    load_from(f.as_ref().map(|(_, p)| p.as_path()), &env(pairs)).unwrap_err()
}

#[test]
fn defaults_describe_the_embedded_shape() {
    let s = load_from(None, &env(&[])).unwrap();
    assert_eq!(s.shape(), Shape::Embedded);
    assert_eq!(s.database.url.expose_secret(), "sqlite://byok-data/byok.db");
    assert_eq!(s.queue.url.expose_secret(), "sqlite");
    assert_eq!(s.queue.namespace, "byok");
    assert_eq!(s.queue.visibility_timeout, Duration::from_secs(30));
    assert_eq!(s.queue.dead_retention, 10_000);
    assert_eq!(s.api.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.api.max_body_bytes, 1_048_576);
    assert_eq!(s.api.max_batch_body_bytes, 16 * 1_048_576);
    assert_eq!(s.worker.concurrency, 256);
    assert_eq!(s.worker.max_attempts, 8);
    assert_eq!(s.worker.job_timeout, Duration::from_secs(1800));
    assert_eq!(s.worker.shutdown_grace, Duration::from_secs(25));
    assert_eq!(s.output.dir, PathBuf::from("byok-data/videos"));
    assert!(!s.fetch.allow_private_networks);
    assert_eq!(s.fetch.max_concurrent_decodes, 2);
    assert_eq!(s.fetch.max_decoded_bytes, 128 * 1024 * 1024);
    assert_eq!(
        s.providers.get(ProviderId::RUNWAY).unwrap().base_url,
        "https://api.dev.runwayml.com"
    );
    assert_eq!(
        s.providers.get(ProviderId::STABILITY).unwrap().base_url,
        "https://api.stability.ai"
    );
    assert_eq!(
        s.providers.get(ProviderId::VEO).unwrap().base_url,
        "https://{location}-aiplatform.googleapis.com"
    );
    assert_eq!(
        (
            s.providers
                .get(ProviderId::VEO)
                .unwrap()
                .rate_limit
                .per_minute,
            s.providers
                .get(ProviderId::VEO)
                .unwrap()
                .rate_limit
                .per_hour
        ),
        (10, 100)
    );
    assert_eq!(
        (
            s.providers
                .get(ProviderId::RUNWAY)
                .unwrap()
                .rate_limit
                .per_minute,
            s.providers
                .get(ProviderId::RUNWAY)
                .unwrap()
                .rate_limit
                .per_hour
        ),
        (5, 50)
    );
    assert_eq!(
        (
            s.providers
                .get(ProviderId::STABILITY)
                .unwrap()
                .rate_limit
                .per_minute,
            s.providers
                .get(ProviderId::STABILITY)
                .unwrap()
                .rate_limit
                .per_hour
        ),
        (3, 30)
    );
    let polls = ProviderId::BUILT_IN.map(|id| s.providers.get(id).unwrap().poll_interval.as_secs());
    assert_eq!(
        polls,
        [10, 5, 10, 5, 5],
        "veo, runway, stability, fal, replicate"
    );
    assert_eq!(s.data_dir(), PathBuf::from("byok-data"));
}

#[test]
fn file_overrides_defaults_and_environment_overrides_the_file() {
    let (_dir, path) = file(
        r#"
        [api]
        listen = "0.0.0.0:9000"
        max_body_bytes = 2048
        [worker]
        concurrency = 16
        shutdown_grace = "5s"
        [providers.runway.rate_limit]
        per_minute = 6
        per_hour = 60
        "#,
    );
    let s = load_from(
        Some(&path),
        &env(&[
            ("BYOK__WORKER__CONCURRENCY", "32"),
            ("BYOK__PROVIDERS__RUNWAY__BASE_URL", "http://127.0.0.1:9999"),
            ("BYOK__FETCH__ALLOW_PRIVATE_NETWORKS", "true"),
            ("BYOK__QUEUE__VISIBILITY_TIMEOUT", "500ms"),
        ]),
    )
    .unwrap();
    assert_eq!(s.api.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(s.api.max_body_bytes, 2048);
    assert_eq!(s.worker.concurrency, 32, "env beats file");
    assert_eq!(s.worker.shutdown_grace, Duration::from_secs(5));
    assert_eq!(
        s.providers
            .get(ProviderId::RUNWAY)
            .unwrap()
            .rate_limit
            .per_minute,
        6
    );
    assert_eq!(
        s.providers
            .get(ProviderId::RUNWAY)
            .unwrap()
            .rate_limit
            .per_hour,
        60
    );
    assert_eq!(
        s.providers.get(ProviderId::RUNWAY).unwrap().base_url,
        "http://127.0.0.1:9999"
    );
    assert!(s.fetch.allow_private_networks);
    assert_eq!(s.queue.visibility_timeout, Duration::from_millis(500));
}

#[test]
fn conventional_aliases_are_honoured_below_byok_variables() {
    let s = load_from(
        None,
        &env(&[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/byok"),
            ("REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("ENCRYPTION_KEY", KEY),
        ]),
    )
    .unwrap();
    assert_eq!(s.shape(), Shape::Distributed);
    assert_eq!(
        s.database.url.expose_secret(),
        "postgres://postgres@127.0.0.1/byok"
    );
    assert_eq!(s.queue.url.expose_secret(), "redis://127.0.0.1:6379/0");
    // A Redis Cluster is named by its seed nodes.
    let cluster = load_from(
        None,
        &env(&[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/byok"),
            ("REDIS_URL", "redis+cluster://10.0.0.1:7000,10.0.0.2:7001"),
            ("ENCRYPTION_KEY", KEY),
        ]),
    )
    .unwrap();
    assert_eq!(cluster.shape(), Shape::Distributed);
    assert_eq!(
        s.encryption.legacy_key.as_ref().unwrap().expose_secret(),
        KEY
    );

    let s = load_from(
        None,
        &env(&[
            ("DATABASE_URL", "postgres://a/b"),
            ("BYOK__DATABASE__URL", "postgres://c/d"),
            ("REDIS_URL", "redis://x"),
        ]),
    )
    .unwrap();
    assert_eq!(s.database.url.expose_secret(), "postgres://c/d");
}

#[test]
fn unrelated_variables_are_ignored() {
    let s = load_from(
        None,
        &env(&[
            ("BYOK_LOG_FORMAT", "json"),
            ("BYOK_TEST_SERVICES", "required"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(s.worker.concurrency, 256);
}

#[test]
fn bad_values_name_their_setting() {
    let cases: Vec<(ConfigError, &str)> = vec![
        (
            error(None, &[("BYOK__API__LISTEN", "not-an-address")]),
            "api.listen",
        ),
        (
            error(None, &[("BYOK__WORKER__CONCURRENCY", "many")]),
            "worker.concurrency",
        ),
        (
            error(None, &[("BYOK__WORKER__CONCURRENCY", "0")]),
            "worker.concurrency",
        ),
        (
            error(None, &[("BYOK__FETCH__MAX_CONCURRENT_DECODES", "0")]),
            "fetch.max_concurrent_decodes",
        ),
        (
            error(None, &[("BYOK__FETCH__MAX_DECODED_BYTES", "1000")]),
            "fetch.max_decoded_bytes",
        ),
        (
            error(None, &[("BYOK__WORKER__JOB_TIMEOUT", "30")]),
            "worker.job_timeout",
        ),
        (
            error(
                None,
                &[
                    ("BYOK__QUEUE__URL", "redis://127.0.0.1:6379"),
                    ("BYOK__DATABASE__URL", "postgres://127.0.0.1/byok"),
                    ("BYOK__QUEUE__PARTITIONS", "65"),
                ],
            ),
            "queue.partitions",
        ),
        (
            error(None, &[("BYOK__QUEUE__PARTITIONS", "0")]),
            "queue.partitions",
        ),
        (
            error(None, &[("BYOK__QUEUE__VISIBILITY_TIMEOUT", "0s")]),
            "queue.visibility_timeout",
        ),
        (
            error(None, &[("BYOK__QUEUE__NAMESPACE", "a{b}")]),
            "queue.namespace",
        ),
        (
            error(None, &[("BYOK__FETCH__ALLOW_PRIVATE_NETWORKS", "maybe")]),
            "fetch.allow_private_networks",
        ),
        (
            error(None, &[("BYOK__PROVIDERS__RUNWAY__BASE_URL", "ftp://x")]),
            "providers.runway.base_url",
        ),
        (
            error(None, &[("BYOK__PROVIDERS__VEO__RATE_LIMIT__PER_HOUR", "1")]),
            "providers.veo.rate_limit.per_hour",
        ),
        (
            error(None, &[("BYOK__PROVIDERS__VEO__POLL_INTERVAL", "often")]),
            "providers.veo.poll_interval",
        ),
        (
            error(None, &[("DATABASE_URL", "mysql://x")]),
            "database.url",
        ),
        (
            error(None, &[("DATABASE_URL", "postgres://x/y")]),
            "queue.url",
        ),
        (error(None, &[("REDIS_URL", "http://x")]), "queue.url"),
        (
            error(
                None,
                &[
                    ("DATABASE_URL", "postgres://x/y"),
                    ("REDIS_URL", "redis+cluster://10.0.0.1:7000,10.0.0.2"),
                ],
            ),
            "queue.url",
        ),
        (error(Some("[api]\nlisten = 8080\n"), &[]), "api.listen"),
        (
            error(Some("[api]\nlisten_addr = \"x\"\n"), &[]),
            "listen_addr",
        ),
        (error(Some("[sora]\nx = 1\n"), &[]), "sora"),
        // A table naming no built-in provider is a declared provider's: its settings are
        // checked here, its existence when the definitions are loaded.
        (
            error(None, &[("BYOK__PROVIDERS__SORA__BASE_URL", "ftp://x")]),
            "providers.sora.base_url",
        ),
        (error(Some("[providers.sora]\ncolour = 1\n"), &[]), "colour"),
        (
            error(
                Some("[providers.\"Not An Id\"]\nbase_url = \"https://x\"\n"),
                &[],
            ),
            "Not An Id",
        ),
    ];
    for (err, setting) in cases {
        let text = err.to_string();
        eprintln!("{text}");
        assert!(
            err.setting.contains(setting) || text.contains(setting),
            "error should name `{setting}`: {text}"
        );
    }
}

#[test]
fn a_missing_config_file_is_an_error_and_a_broken_one_names_the_file() {
    let err = load_from(
        Some(std::path::Path::new("/nonexistent/byok.toml")),
        &env(&[]),
    )
    .unwrap_err();
    assert_eq!(err.setting, "--config");
    let (_dir, path) = file("[api\nlisten = ");
    let err = load_from(Some(&path), &env(&[])).unwrap_err();
    assert!(err.to_string().contains("byok.toml"), "{err}");
}

#[test]
fn secret_settings_are_never_echoed_in_errors() {
    let err = error(Some("[encryption]\nkeys = [\"123456789\"]\n"), &[]);
    assert_eq!(err.setting, "encryption.keys");
    assert!(!err.to_string().contains("123456789"), "{err}");

    let s = load_from(
        None,
        &env(&[(
            "BYOK__ENCRYPTION__KEYS",
            &format!("1:{KEY},2:{}", &KEY[..60]),
        )]),
    )
    .unwrap();
    let err = load_key_ring(&s).unwrap_err();
    assert_eq!(err.setting, "encryption.keys");
    assert!(err.message.contains("entry 2"), "{err}");
    assert!(!err.to_string().contains(&KEY[..60]), "{err}");
    assert!(
        !format!("{s:?}").contains(KEY),
        "Debug of settings shows no key"
    );
}

#[test]
fn the_key_ring_comes_from_keys_or_from_the_seed_key() {
    let s = load_from(
        None,
        &env(&[
            ("BYOK__ENCRYPTION__KEYS", &format!("2:{KEY}")),
            ("ENCRYPTION_KEY", KEY),
        ]),
    )
    .unwrap();
    let (ring, source) = load_key_ring(&s).unwrap();
    assert_eq!(source, KeyRingSource::Configured);
    assert_eq!(ring.primary_key_id(), "2");

    let s = load_from(None, &env(&[("ENCRYPTION_KEY", KEY)])).unwrap();
    let (ring, source) = load_key_ring(&s).unwrap();
    assert_eq!(source, KeyRingSource::LegacyKeyOnly);
    assert_eq!(ring.primary_key_id(), "seed");
}

#[test]
fn the_distributed_shape_refuses_to_start_without_a_key() {
    let s = load_from(
        None,
        &env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
        ]),
    )
    .unwrap();
    let err = load_key_ring(&s).unwrap_err();
    assert_eq!(err.setting, "encryption.keys");
}

#[test]
fn the_embedded_shape_generates_a_private_key_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/byok.db");
    let url = format!("sqlite://{}", db.display());
    let s = load_from(None, &env(&[("BYOK__DATABASE__URL", &url)])).unwrap();

    let (first, source) = load_key_ring(&s).unwrap();
    let key_file = dir.path().join("data/encryption.key");
    assert_eq!(source, KeyRingSource::GeneratedKeyFile(key_file.clone()));
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (second, source) = load_key_ring(&s).unwrap();
    assert_eq!(source, KeyRingSource::KeyFile(key_file.clone()));
    // Same key: what the first sealed, the second opens.
    let ctx = byok_crypto::SealContext::new(
        ProjectUser::new(DEFAULT_PROJECT_ID, uuid_nil()),
        ProviderId::RUNWAY,
    );
    let sealed = first.seal(&ctx, b"x").unwrap();
    assert!(second.open(&ctx, &sealed).is_ok());

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_key_ring(&s).unwrap_err();
    assert!(err.message.contains("chmod 600"), "{err}");
}

fn uuid_nil() -> uuid::Uuid {
    uuid::Uuid::nil()
}

#[test]
fn a_provider_catalogue_can_be_replaced_in_the_file() {
    let (_dir, path) = file(
        r#"
        [[providers.runway.models]]
        id = "gen5"
        display_name = "Gen-5"
        modes = ["text_to_video"]
        prompt = { text_to_video = "required", image_to_video = "unsupported", max_chars = 500 }
        durations = [5]
        default_duration = 5
        formats = [{ aspect_ratio = "16:9", resolution = "720p", wire = "1280:720" }]
        "#,
    );
    let s = load_from(Some(&path), &env(&[])).unwrap();
    let models = s
        .providers
        .get(ProviderId::RUNWAY)
        .unwrap()
        .models
        .as_ref()
        .unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].id, "gen5");
    assert!(s.providers.get(ProviderId::VEO).unwrap().models.is_none());

    let (_dir, path) = file(
        r#"
        [[providers.runway.models]]
        id = "gen5"
        display_name = "Gen-5"
        modes = ["text_to_video"]
        prompt = { text_to_video = "required", image_to_video = "unsupported", max_chars = 500 }
        durations = [5]
        default_duration = 6
        formats = [{ aspect_ratio = "16:9", resolution = "720p", wire = "1280:720" }]
        "#,
    );
    let err = load_from(Some(&path), &env(&[])).unwrap_err();
    assert_eq!(err.setting, "providers.runway.models");
    assert!(err.message.contains("default_duration"), "{err}");
}

#[test]
fn model_prices_are_read_from_the_file_and_checked() {
    let (_dir, path) = file(
        r#"
        [[providers.runway.prices]]
        model = "gen4.5"
        per_second = [{ resolution = "720p", usd = 0.12 }]
        source = "https://example.com/our-contract"
        as_of = "2026-12-01"
        "#,
    );
    let s = load_from(Some(&path), &env(&[])).unwrap();
    let prices = &s.providers.get(ProviderId::RUNWAY).unwrap().prices;
    assert_eq!(prices.len(), 1);
    assert_eq!(prices[0].model, "gen4.5", "a dotted model id stays whole");
    assert_eq!(
        prices[0].pricing.per_second[0].usd,
        byok_core::Usd::from_micros(120_000)
    );

    for (body, why) in [
        (
            r#"per_second = [{ usd = -1 }]
               source = "https://example.com/p"
               as_of = "2026-12-01""#,
            "negative",
        ),
        (
            r#"per_second = [{ usd = 0.1 }]
               source = "our contract"
               as_of = "2026-12-01""#,
            "URL",
        ),
        (
            r#"per_second = [{ usd = "lots" }]
               source = "https://example.com/p"
               as_of = "2026-12-01""#,
            "dollars",
        ),
    ] {
        let (_dir, path) = file(&format!(
            "[[providers.runway.prices]]\nmodel = \"gen4.5\"\n{body}\n"
        ));
        let err = load_from(Some(&path), &env(&[])).unwrap_err();
        assert!(err.setting.starts_with("providers.runway"), "{err}");
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
}

#[test]
fn veo_token_endpoints_are_allowed_by_list_or_comma_separated_string() {
    let s = load_from(
        None,
        &env(&[(
            "BYOK__PROVIDERS__VEO__TOKEN_URI_ALLOWLIST",
            "https://sts.example.com/token, http://127.0.0.1:9000/oauth2/token",
        )]),
    )
    .unwrap();
    assert_eq!(
        s.providers
            .get(ProviderId::VEO)
            .unwrap()
            .token_uri_allowlist,
        [
            "https://sts.example.com/token",
            "http://127.0.0.1:9000/oauth2/token"
        ]
    );
    assert!(
        s.providers
            .get(ProviderId::RUNWAY)
            .unwrap()
            .token_uri_allowlist
            .is_empty()
    );
    let (_dir, path) =
        file("[providers.veo]\ntoken_uri_allowlist = [\"https://sts.example.com/token\"]\n");
    let s = load_from(Some(&path), &env(&[])).unwrap();
    assert_eq!(
        s.providers
            .get(ProviderId::VEO)
            .unwrap()
            .token_uri_allowlist,
        ["https://sts.example.com/token"]
    );

    let err = error(
        None,
        &[(
            "BYOK__PROVIDERS__RUNWAY__TOKEN_URI_ALLOWLIST",
            "https://x.example/t",
        )],
    );
    assert_eq!(err.setting, "providers.runway.token_uri_allowlist");
    for bad in [
        "ftp://x.example/t",
        "not a url",
        "https://user:pw@x.example/t",
    ] {
        let err = error(None, &[("BYOK__PROVIDERS__VEO__TOKEN_URI_ALLOWLIST", bad)]);
        assert_eq!(err.setting, "providers.veo.token_uri_allowlist", "{bad}");
    }
}

#[test]
fn the_api_edge_settings_load_from_a_file_and_the_environment() {
    let s = load_from(None, &env(&[])).unwrap();
    assert_eq!(
        s.api.rate_limit.map(|r| r.to_string()).as_deref(),
        Some("100/s, burst 200")
    );
    assert_eq!(
        s.api.auth_failure_limit.map(|r| r.to_string()).as_deref(),
        Some("10/min, burst 20")
    );
    assert!(s.api.trusted_proxies.is_empty());
    assert_eq!(s.api.header_read_timeout, Duration::from_secs(10));
    assert_eq!(s.api.request_timeout, Duration::from_secs(30));
    assert_eq!(s.api.max_connections, 4096);
    assert_eq!(s.api.metrics_listen, None);
    assert_eq!(
        s.providers
            .get(ProviderId::RUNWAY)
            .unwrap()
            .max_requests_per_second,
        None
    );

    let (_dir, path) = file(
        "[api]\nrate_limit = \"off\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"]\n\
         metrics_listen = \"127.0.0.1:9200\"\n[providers.runway]\nmax_requests_per_second = 2.5\n",
    );
    let s = load_from(Some(&path), &env(&[])).unwrap();
    assert_eq!(s.api.rate_limit, None);
    assert_eq!(
        s.api
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.0.0.0/8", "192.0.2.1/32"]
    );
    assert_eq!(s.api.metrics_listen.unwrap().port(), 9200);
    assert_eq!(
        s.providers
            .get(ProviderId::RUNWAY)
            .unwrap()
            .max_requests_per_second,
        Some(2.5)
    );

    let s = load_from(
        None,
        &env(&[
            ("BYOK__API__AUTH_FAILURE_LIMIT", "5/h"),
            ("BYOK__API__TRUSTED_PROXIES", "10.1.0.0/16, fd00::/8"),
            ("BYOK__PROVIDERS__VEO__MAX_REQUESTS_PER_SECOND", "20"),
        ]),
    )
    .unwrap();
    assert_eq!(
        s.api.auth_failure_limit.map(|r| r.to_string()).as_deref(),
        Some("5/h, burst 5")
    );
    assert_eq!(s.api.trusted_proxies.len(), 2);
    assert_eq!(
        s.providers
            .get(ProviderId::VEO)
            .unwrap()
            .max_requests_per_second,
        Some(20.0)
    );

    for (key, value, setting) in [
        ("BYOK__API__RATE_LIMIT", "lots", "api.rate_limit"),
        ("BYOK__API__RATE_LIMIT", "0/s", "api.rate_limit"),
        (
            "BYOK__API__AUTH_FAILURE_LIMIT",
            "5/s, burst x",
            "api.auth_failure_limit",
        ),
        (
            "BYOK__API__TRUSTED_PROXIES",
            "10.0.0.0/33",
            "api.trusted_proxies",
        ),
        ("BYOK__API__MAX_CONNECTIONS", "0", "api.max_connections"),
        (
            "BYOK__API__HEADER_READ_TIMEOUT",
            "0s",
            "api.header_read_timeout",
        ),
        (
            "BYOK__API__METRICS_LISTEN",
            "127.0.0.1:8080",
            "api.metrics_listen",
        ),
        (
            "BYOK__PROVIDERS__RUNWAY__MAX_REQUESTS_PER_SECOND",
            "0",
            "providers.runway.max_requests_per_second",
        ),
    ] {
        let err = error(None, &[(key, value)]);
        assert_eq!(err.setting, setting, "{key}={value}: {err}");
    }
}

#[test]
fn declared_providers_settings_and_definitions_are_read_as_written() {
    let (_dir, path) = file(
        r#"
[providers]
definitions_dir = "/etc/byok/providers"

[providers.acme]
base_url = "http://127.0.0.1:9"
poll_interval = "2s"

[[providers.definitions]]
id = "inline-one"
headers = { "X-Api-Version" = "2" }

[providers.definitions.poll.states]
IN_PROGRESS = "running"

[[providers.definitions]]
id = "inline-two"
"#,
    );
    let s = load_from(Some(&path), &env(&[])).unwrap();
    assert_eq!(
        s.providers.definitions_dir.as_deref(),
        Some(std::path::Path::new("/etc/byok/providers"))
    );
    let acme = &s.providers.declared["acme"];
    assert_eq!(acme.base_url.as_deref(), Some("http://127.0.0.1:9"));
    assert_eq!(acme.poll_interval, Some(Duration::from_secs(2)));
    assert_eq!(acme.rate_limit, None);
    assert_eq!(s.providers.definitions.len(), 2);
    let first = &s.providers.definitions[0];
    assert!(
        first
            .origin
            .ends_with("byok.toml: providers.definitions[0]"),
        "{}",
        first.origin
    );
    // Names keep their case (the layered configuration would fold it).
    let table: toml::Table = first.text.parse().unwrap();
    assert_eq!(table["id"].as_str(), Some("inline-one"));
    assert_eq!(table["headers"]["X-Api-Version"].as_str(), Some("2"));
    assert_eq!(
        table["poll"]["states"]["IN_PROGRESS"].as_str(),
        Some("running")
    );
    assert!(s.providers.definitions[1].text.contains("inline-two"));

    let from_env = load_from(
        None,
        &env(&[("BYOK__PROVIDERS__DEFINITIONS_DIR", "/srv/defs")]),
    )
    .unwrap();
    assert_eq!(
        from_env.providers.definitions_dir.as_deref(),
        Some(std::path::Path::new("/srv/defs"))
    );
    assert!(from_env.providers.declared.is_empty());
}
