//! Layering: built-in defaults → `byok.toml` (or `--config FILE`) →
//! conventional aliases (`DATABASE_URL`, `REDIS_URL`, `ENCRYPTION_KEY`) →
//! `BYOK__SECTION__KEY` variables. Later layers win.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::{ConfigError, InlineDefinition, Settings};

/// Prefix of the configuration variables: `BYOK__API__LISTEN` sets `api.listen`.
pub const ENV_PREFIX: &str = "BYOK";

/// The file read when `--config` is not given, if it exists.
const DEFAULT_FILE: &str = "byok.toml";

/// Built-in defaults, the first layer. Keys are a contract (the root README's Configuration
/// table). Each provider's `providers.<id>.*` defaults come from its entry in
/// `byok_core::ProviderId` ([`provider_defaults`]).
const DEFAULTS: &[(&str, &str)] = &[
    ("database.url", "sqlite://byok-data/byok.db"),
    ("queue.url", "sqlite"),
    ("queue.namespace", "byok"),
    ("queue.visibility_timeout", "30s"),
    ("queue.dead_retention", "10000"),
    ("queue.partitions", "1"),
    ("api.listen", "127.0.0.1:8080"),
    ("api.max_body_bytes", "1048576"),
    ("api.max_batch_body_bytes", "16777216"),
    ("api.rate_limit", "100/s, burst 200"),
    ("api.auth_failure_limit", "10/min, burst 20"),
    ("api.header_read_timeout", "10s"),
    ("api.request_timeout", "30s"),
    ("api.cache_ttl", "5s"),
    ("api.max_connections", "4096"),
    ("worker.concurrency", "256"),
    ("worker.max_attempts", "8"),
    ("worker.job_timeout", "30m"),
    ("worker.shutdown_grace", "25s"),
    ("worker.request_timeout", "30s"),
    ("worker.retry_min_delay", "1s"),
    ("worker.retry_max_delay", "5m"),
    ("worker.fallback_after_block", "10m"),
    ("encryption.accept_legacy", "false"),
    ("output.dir", "byok-data/videos"),
    ("output.presign", "false"),
    ("output.presign_ttl", "1h"),
    ("fetch.allow_private_networks", "false"),
    ("fetch.max_concurrent_decodes", "2"),
    ("fetch.max_decoded_bytes", "134217728"),
    ("webhooks.concurrency", "128"),
    ("webhooks.retry_schedule", "5s, 5m, 30m, 2h, 5h, 10h, 10h"),
    ("webhooks.retention", "30d"),
];

/// `providers.<id>.base_url`, `.rate_limit.per_minute`, `.rate_limit.per_hour` and
/// `.poll_interval` of every provider: the real hosts (docs/provider-protocols.md), the
/// default limits per user key (docs/rate-limits.md) and the providers' documented minimum
/// poll intervals.
fn provider_defaults() -> Vec<(String, String)> {
    byok_core::ProviderId::BUILT_IN
        .into_iter()
        .filter_map(|id| Some((id, id.defaults()?)))
        .flat_map(|(id, d)| {
            [
                ("base_url", d.base_url.to_owned()),
                (
                    "rate_limit.per_minute",
                    d.rate_limits.per_minute.to_string(),
                ),
                ("rate_limit.per_hour", d.rate_limits.per_hour.to_string()),
                (
                    "poll_interval",
                    humantime::format_duration(d.poll_interval).to_string(),
                ),
            ]
            .map(|(key, value)| (format!("providers.{id}.{key}"), value))
        })
        .collect()
}

/// Conventional variables honoured besides `BYOK__…`, and the setting each sets.
const ALIASES: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "queue.url"),
    ("ENCRYPTION_KEY", "encryption.legacy_key"),
];

/// Settings whose values must never be echoed in an error.
const SECRET_SETTINGS: &[&str] = &[
    "output.url",
    "encryption.keys",
    "encryption.legacy_key",
    "database.url",
    "queue.url",
];

/// A snapshot of environment variables. Tests build one by hand instead of
/// mutating the process environment, which is shared by parallel tests.
#[derive(Clone, Default)]
pub struct Environment {
    vars: HashMap<String, String>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be secrets.
        let mut names: Vec<_> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Environment")
            .field("names", &names)
            .finish()
    }
}

impl Environment {
    /// The variables of this process that configuration reads.
    pub fn from_process() -> Self {
        Self::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Builds a snapshot from name/value pairs, keeping only the variables
    /// configuration reads.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let prefix = format!("{ENV_PREFIX}__");
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| k.starts_with(&prefix) || ALIASES.iter().any(|(alias, _)| alias == k))
            .collect();
        Self { vars }
    }
}

/// Loads the settings from the process environment and `config_file` (or
/// `./byok.toml` when present).
pub fn load(config_file: Option<&Path>) -> Result<Settings, ConfigError> {
    load_from(config_file, &Environment::from_process())
}

/// Loads the settings from an explicit environment snapshot.
pub fn load_from(config_file: Option<&Path>, env: &Environment) -> Result<Settings, ConfigError> {
    let file = config_file_to_read(config_file)?;
    layered(file.as_deref(), env)
}

/// The built-in defaults alone: no file (not even `./byok.toml`), no
/// environment. For programs that build their settings in code — the
/// benchmarks and the test harnesses — and then change fields.
pub fn defaults() -> Settings {
    // The defaults are constants that a unit test loads: they always parse.
    layered(None, &Environment::default()).expect("the built-in defaults are valid settings")
}

fn layered(file: Option<&Path>, env: &Environment) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder();
    let providers = provider_defaults();
    let defaults = DEFAULTS
        .iter()
        .map(|(key, value)| (*key, *value))
        .chain(providers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (key, value) in defaults {
        builder = builder
            .set_default(key, value)
            .map_err(|e| ConfigError::new(key, e.to_string()))?;
    }

    if let Some(path) = file {
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }

    let aliases: config::Map<String, String> = ALIASES
        .iter()
        .filter_map(|(alias, key)| {
            let value = env.vars.get(*alias)?;
            // An alias becomes `SECTION__KEY` for the separator-aware source.
            Some((key.replace('.', "__"), value.clone()))
        })
        .collect();
    builder = builder.add_source(
        config::Environment::default()
            .separator("__")
            .source(Some(aliases)),
    );

    let prefixed: config::Map<String, String> = env
        .vars
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(Some(prefixed)),
    );

    let layered = builder.build().map_err(|e| describe(&e))?;
    let mut settings: Settings = layered.try_deserialize().map_err(|e| describe(&e))?;
    if let Some(path) = file {
        settings.providers.definitions = inline_definitions(path)?;
    }
    settings.validate()?;
    Ok(settings)
}

/// The `[[providers.definitions]]` tables of the configuration file, as TOML text. They are
/// read here with the TOML parser itself rather than through the layered configuration,
/// which would fold the case of their names (a provider's `IN_PROGRESS` state, a
/// `Content-Type` header).
fn inline_definitions(path: &Path) -> Result<Vec<InlineDefinition>, ConfigError> {
    const KEY: &str = "providers.definitions";
    // The layered configuration has just parsed this file.
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(KEY, format!("{} cannot be read: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::new(KEY, e.message().to_owned()))?;
    let Some(definitions) = table.get("providers").and_then(|p| p.get("definitions")) else {
        return Ok(Vec::new());
    };
    let toml::Value::Array(items) = definitions else {
        return Err(ConfigError::new(
            KEY,
            "must be an array of tables ([[providers.definitions]])",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let toml::Value::Table(t) = item else {
                return Err(ConfigError::new(
                    format!("{KEY}[{i}]"),
                    "must be a table ([[providers.definitions]])",
                ));
            };
            let text = toml::to_string(t)
                .map_err(|e| ConfigError::new(format!("{KEY}[{i}]"), e.to_string()))?;
            Ok(InlineDefinition {
                origin: format!("{}: {KEY}[{i}]", path.display()),
                text,
            })
        })
        .collect()
}

fn config_file_to_read(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    match explicit {
        Some(path) if path.is_file() => Ok(Some(path.to_path_buf())),
        Some(path) => Err(ConfigError::new(
            "--config",
            format!("{} does not exist or is not a file", path.display()),
        )),
        None => Ok(Path::new(DEFAULT_FILE)
            .is_file()
            .then(|| PathBuf::from(DEFAULT_FILE))),
    }
}

/// Turns a `config` crate error into one that names the setting, without
/// repeating the value of a secret setting.
fn describe(error: &config::ConfigError) -> ConfigError {
    use config::ConfigError as E;
    let (key, message) = match error {
        E::NotFound(key) => (key.clone(), "is required but not set".to_owned()),
        E::Type {
            key: Some(key),
            expected,
            ..
        } => (key.clone(), format!("expected {expected}")),
        E::At {
            key: Some(key),
            error,
            ..
        } => (key.clone(), error.to_string()),
        E::FileParse { uri, cause } => (
            uri.clone().unwrap_or_else(|| "config file".to_owned()),
            cause.to_string(),
        ),
        other => (setting_in_message(&other.to_string()), other.to_string()),
    };
    let message = if SECRET_SETTINGS.iter().any(|s| key.starts_with(s)) {
        "has an invalid value (not shown: it may hold a secret)".to_owned()
    } else {
        message
    };
    ConfigError::new(key, message)
}

/// Best effort for errors that carry no key: serde's "unknown field" names
/// the field in the message.
fn setting_in_message(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .map(str::to_owned)
        .unwrap_or_else(|| "configuration".to_owned())
}

impl Settings {
    /// Checks what types alone cannot: schemes, ranges, consistency.
    fn validate(&self) -> Result<(), ConfigError> {
        let database = self.database.url.expose_secret();
        if !(database.starts_with("postgres://")
            || database.starts_with("postgresql://")
            || database.starts_with("sqlite:"))
        {
            return Err(ConfigError::new(
                "database.url",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }

        let queue = self.queue.url.expose_secret();
        if queue == "sqlite" {
            if !self.database_is_sqlite() {
                return Err(ConfigError::new(
                    "queue.url",
                    "`sqlite` keeps the queue in the SQLite database, but database.url is PostgreSQL; set queue.url to redis://… (or REDIS_URL)",
                ));
            }
        } else {
            match byok_redis::RedisTarget::parse(queue) {
                Err(byok_redis::RedisUrlError::Scheme) => {
                    return Err(ConfigError::new(
                        "queue.url",
                        "must be `sqlite`, redis://…, rediss://…, or a Redis Cluster's \
                         redis+cluster://host:port,host:port (rediss+cluster:// for TLS)",
                    ));
                }
                Err(e) => return Err(ConfigError::new("queue.url", e.to_string())),
                Ok(byok_redis::RedisTarget::Single(url)) if url::Url::parse(&url).is_err() => {
                    return Err(ConfigError::new("queue.url", "is not a valid URL"));
                }
                Ok(_) => {}
            }
        }

        let ns = &self.queue.namespace;
        if ns.is_empty()
            || ns.len() > 64
            || !ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        {
            return Err(ConfigError::new(
                "queue.namespace",
                "must be 1-64 characters of A-Z a-z 0-9 _ - . :",
            ));
        }

        if !(1..=64).contains(&self.queue.partitions) {
            return Err(ConfigError::new("queue.partitions", "must be from 1 to 64"));
        }

        positive_duration("queue.visibility_timeout", self.queue.visibility_timeout)?;
        positive_duration("worker.job_timeout", self.worker.job_timeout)?;
        positive_duration("worker.shutdown_grace", self.worker.shutdown_grace)?;
        positive_duration("worker.request_timeout", self.worker.request_timeout)?;
        if let Some(url) = &self.output.url {
            let url = url.expose_secret();
            if !(url.starts_with("file://") || url.starts_with("s3://")) {
                return Err(ConfigError::new(
                    "output.url",
                    "must be file:///<directory> or s3://<bucket>[/<prefix>]",
                ));
            }
        }
        positive_duration("output.presign_ttl", self.output.presign_ttl)?;
        if self.output.presign_ttl > Duration::from_secs(7 * 24 * 3600) {
            return Err(ConfigError::new(
                "output.presign_ttl",
                "must be at most 7 days (the longest an S3 presigned URL is valid)",
            ));
        }
        positive_duration("worker.retry_min_delay", self.worker.retry_min_delay)?;
        if self.worker.retry_max_delay < self.worker.retry_min_delay {
            return Err(ConfigError::new(
                "worker.retry_max_delay",
                "must be at least worker.retry_min_delay",
            ));
        }
        for (id, p) in self.providers.built_in() {
            let list = &p.token_uri_allowlist;
            if id != byok_core::ProviderId::VEO && !list.is_empty() {
                return Err(ConfigError::new(
                    format!("providers.{id}.token_uri_allowlist"),
                    "only Veo's service accounts name a token endpoint",
                ));
            }
            for entry in list {
                let valid = url::Url::parse(entry).is_ok_and(|u| {
                    matches!(u.scheme(), "https" | "http")
                        && u.username().is_empty()
                        && u.password().is_none()
                });
                if !valid {
                    return Err(ConfigError::new(
                        format!("providers.{id}.token_uri_allowlist"),
                        "entries are http(s) URLs without credentials, e.g. https://oauth2.googleapis.com/token",
                    ));
                }
            }
        }
        if self.queue.dead_retention == 0 {
            return Err(ConfigError::new(
                "queue.dead_retention",
                "must be at least 1",
            ));
        }
        if self.api.max_body_bytes < 1024 {
            return Err(ConfigError::new(
                "api.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.api.max_batch_body_bytes < 1024 {
            return Err(ConfigError::new(
                "api.max_batch_body_bytes",
                "must be at least 1024",
            ));
        }
        positive_duration("api.header_read_timeout", self.api.header_read_timeout)?;
        positive_duration("api.request_timeout", self.api.request_timeout)?;
        if self.api.cache_ttl > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "api.cache_ttl",
                "must be at most 60s: it bounds how late a revoked token is refused",
            ));
        }
        if self.api.max_connections == 0 {
            return Err(ConfigError::new(
                "api.max_connections",
                "must be at least 1",
            ));
        }
        if let Some(public) = &self.api.public_url
            && !is_base_url(public)
        {
            return Err(ConfigError::new(
                "api.public_url",
                "must be an http(s) URL with a host and no query, fragment or user \
                 (https://keys.example.com)",
            ));
        }
        if self.api.metrics_listen == Some(self.api.listen) {
            return Err(ConfigError::new(
                "api.metrics_listen",
                "must differ from api.listen (unset it to serve /metrics on api.listen)",
            ));
        }
        if !(1..=100_000).contains(&self.worker.concurrency) {
            return Err(ConfigError::new(
                "worker.concurrency",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=10_000).contains(&self.webhooks.concurrency) {
            return Err(ConfigError::new(
                "webhooks.concurrency",
                "must be between 1 and 10000",
            ));
        }
        if self.webhooks.retry_schedule.len() > 20 {
            return Err(ConfigError::new(
                "webhooks.retry_schedule",
                "at most 20 pauses",
            ));
        }
        positive_duration("webhooks.retention", self.webhooks.retention)?;
        if !(1..=1000).contains(&self.worker.max_attempts) {
            return Err(ConfigError::new(
                "worker.max_attempts",
                "must be between 1 and 1000",
            ));
        }
        if self.fetch.max_concurrent_decodes == 0 {
            return Err(ConfigError::new(
                "fetch.max_concurrent_decodes",
                "must be at least 1",
            ));
        }
        if self.fetch.max_decoded_bytes < 1024 * 1024 {
            return Err(ConfigError::new(
                "fetch.max_decoded_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }

        for (id, p) in self.providers.built_in() {
            check_provider(
                &format!("providers.{id}"),
                Some(&p.base_url),
                Some(&p.rate_limit),
                Some(p.poll_interval),
                p.max_requests_per_second,
                p.models.as_ref(),
            )?;
            check_prices(&format!("providers.{id}.prices"), &p.prices)?;
        }
        for (id, p) in &self.providers.declared {
            check_provider(
                &format!("providers.{id}"),
                p.base_url.as_deref(),
                p.rate_limit.as_ref(),
                p.poll_interval,
                p.max_requests_per_second,
                p.models.as_ref(),
            )?;
            check_prices(&format!("providers.{id}.prices"), &p.prices)?;
        }
        Ok(())
    }
}

/// The rules of `[[providers.<id>.prices]]` that need no catalogue (whether each model
/// exists and makes the resolutions named is checked when the registry is built).
fn check_prices(setting: &str, prices: &[byok_core::ModelPrice]) -> Result<(), ConfigError> {
    for (i, price) in prices.iter().enumerate() {
        let refuse = |why: String| ConfigError::new(setting, format!("`{}`: {why}", price.model));
        if price.model.is_empty() {
            return Err(ConfigError::new(setting, "an entry names no model"));
        }
        if prices[..i].iter().any(|p| p.model == price.model) {
            return Err(refuse("priced twice".to_owned()));
        }
        price.pricing.check_own().map_err(refuse)?;
    }
    Ok(())
}

/// The rules of `providers.<id>.*`, for the settings given.
fn check_provider(
    prefix: &str,
    base_url: Option<&str>,
    rate_limit: Option<&byok_core::RateLimits>,
    poll_interval: Option<Duration>,
    max_requests_per_second: Option<f64>,
    models: Option<&Vec<byok_core::ModelSpec>>,
) -> Result<(), ConfigError> {
    if let Some(base_url) = base_url {
        let base = base_url.replace("{location}", "us-central1");
        match url::Url::parse(&base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(ConfigError::new(
                    format!("{prefix}.base_url"),
                    "must be an http(s) URL",
                ));
            }
        }
    }
    if let Some(Err((field, why))) = rate_limit.map(|r| r.check()) {
        return Err(ConfigError::new(
            format!("{prefix}.rate_limit.{field}"),
            why,
        ));
    }
    if let Some(poll_interval) = poll_interval {
        positive_duration(&format!("{prefix}.poll_interval"), poll_interval)?;
    }
    if let Some(rate) = max_requests_per_second
        && !(rate.is_finite() && (0.001..=1_000_000.0).contains(&rate))
    {
        return Err(ConfigError::new(
            format!("{prefix}.max_requests_per_second"),
            "must be a number between 0.001 and 1000000",
        ));
    }
    if let Some(models) = models {
        byok_core::Catalogue {
            models: models.clone(),
        }
        .check()
        .map_err(|e| ConfigError::new(format!("{prefix}.models"), e))?;
    }
    Ok(())
}

fn positive_duration(setting: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(setting, "must be longer than zero"));
    }
    Ok(())
}

/// Whether `text` is an absolute http(s) URL with a host and no user, query or fragment: what
/// `api.public_url` and a project's return URLs (`byok project return-urls`) must be.
pub fn is_base_url(text: &str) -> bool {
    url::Url::parse(text).ok().is_some_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.query().is_none()
            && u.fragment().is_none()
            && u.username().is_empty()
    })
}
