//! The typed settings (docs/architecture.md). Field names are the contract: they are
//! the keys of `byok.toml` and of the `BYOK__SECTION__KEY` variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use byok_core::ProviderId;
use ipnet::IpNet;
use secrecy::SecretString;
use serde::Deserialize;

use crate::RequestRate;

/// Everything the binary can be configured with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where jobs, credentials and tokens live.
    pub database: DatabaseSettings,
    /// Where work items wait for workers.
    pub queue: QueueSettings,
    /// The key ring that seals credentials (nothing set by default).
    #[serde(default)]
    pub encryption: EncryptionSettings,
    /// The HTTP API.
    pub api: ApiSettings,
    /// Worker processes.
    pub worker: WorkerSettings,
    /// Finished videos.
    pub output: OutputSettings,
    /// Per-provider endpoints, limits and polling.
    pub providers: ProvidersSettings,
    /// Fetching user-supplied URLs.
    pub fetch: FetchSettings,
    /// Delivering webhooks.
    pub webhooks: WebhooksSettings,
}

/// `webhooks.*`: delivering events to producers' endpoints (docs/webhooks.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSettings {
    /// Delivery attempts in flight per worker process (each mostly waits on a receiver).
    pub concurrency: u32,
    /// The pauses between attempts (`5s, 5m, 30m, 2h, 5h, 10h, 10h`): one attempt more
    /// than pauses, then the delivery is failed.
    #[serde(deserialize_with = "comma_separated_durations")]
    pub retry_schedule: Vec<Duration>,
    /// Events and their deliveries are deleted this long after they happened, once none
    /// is pending.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub retention: Duration,
}

/// `database.*`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://…`. May carry a password, hence secret.
    pub url: SecretString,
}

/// `queue.*`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// `redis://…`, `rediss://…` or `sqlite` (the database file itself).
    pub url: SecretString,
    /// Prefix (and Redis Cluster hash tag) of every Redis key.
    pub namespace: String,
    /// How long a delivered item may go without an ack or extension.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub visibility_timeout: Duration,
    /// Dead-letter entries kept.
    pub dead_retention: u64,
    /// Redis: hash tags the work is spread over (`{ns}`, `{ns:1}`, …), so a Redis Cluster
    /// spreads it over its shards. 1 to 64; a SQLite queue has one and ignores this.
    pub partitions: usize,
}

/// `encryption.*`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSettings {
    /// `"2:<64 hex>,1:<64 hex>"`, primary first.
    pub keys: Option<SecretString>,
    /// The seed's single key (alias `ENCRYPTION_KEY`): opens legacy values
    /// (in `byok keys rewrap`), and is the whole ring when `keys` is not set.
    pub legacy_key: Option<SecretString>,
    /// Open the seed's legacy values wherever they are read, not only to
    /// re-seal them. Weaker: a legacy value is bound to no row, so one copied
    /// into another user's row opens there. Meant for the days between
    /// moving a seed database over and running `byok keys rewrap`.
    pub accept_legacy: bool,
}

/// `api.*`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Largest body of `POST /v1/batches` (up to 1,000 jobs, so larger than one job's).
    pub max_batch_body_bytes: usize,
    /// Requests per token on `/v1`, per process (`"100/s, burst 200"`; `off`: none).
    #[serde(deserialize_with = "crate::rate::deserialize_optional")]
    pub rate_limit: Option<RequestRate>,
    /// Failed authentications per client address, per process; past it the address gets
    /// 429 on `/v1` until the rate lets it through again (`off`: none).
    #[serde(deserialize_with = "crate::rate::deserialize_optional")]
    pub auth_failure_limit: Option<RequestRate>,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDR networks; a list or
    /// one comma-separated string). The client address is the right-most entry not in it.
    #[serde(default, deserialize_with = "comma_separated_networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// The longest a client may take to send a request's headers; the connection is
    /// closed after it (also between requests on a kept-alive connection).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub header_read_timeout: Duration,
    /// The longest a request may take until its response starts (the body of a video
    /// streams past it); 503 `timeout` after it.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub request_timeout: Duration,
    /// How long the API reuses a token lookup and a user's "has a valid key" answer; a
    /// token revoked or a key removed by another process takes effect within it. Zero:
    /// read both on every request.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub cache_ttl: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Where the API serves `/metrics` instead of on `listen`; unset: on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// The API's address as users' browsers reach it (`https://keys.example.com`), for the
    /// "connect your key" links; unset: from each request's `Host`, over `http`.
    #[serde(default)]
    pub public_url: Option<String>,
}

/// `worker.*`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Jobs in flight per worker process.
    pub concurrency: u32,
    /// Attempts for retryable failures (rate-limit waits do not count).
    pub max_attempts: u32,
    /// Longest time a job may spend at the provider.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub job_timeout: Duration,
    /// Time given to in-flight work on SIGTERM.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub shutdown_grace: Duration,
    /// Where a worker serves `/metrics`; none when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// The longest one provider request may take (submit, poll, download,
    /// and the API's key checks).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub request_timeout: Duration,
    /// The cap of the first retry after a transient failure; doubled per
    /// attempt, up to `retry_max_delay`, with full jitter.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub retry_min_delay: Duration,
    /// The largest retry cap.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub retry_max_delay: Duration,
    /// A job with fallbacks moves to its next one when its key cannot submit for longer
    /// than this (a provider's 429 with a long `Retry-After`, or the key's quota window).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub fallback_after_block: Duration,
}

/// `output.*`: where finished videos are kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSettings {
    /// The local directory of finished videos, when `url` is not set.
    pub dir: PathBuf,
    /// `file:///…` (a local directory) or `s3://bucket[/prefix]` (S3-compatible
    /// object storage, configured by the standard `AWS_*` variables). Unset:
    /// the directory `dir`. May name a user and password, hence secret.
    #[serde(default)]
    pub url: Option<SecretString>,
    /// Answer `GET /v1/jobs/{id}/video` with a 302 to a presigned URL of the
    /// object instead of streaming it through the API (object storage only).
    pub presign: bool,
    /// How long a presigned URL is valid (at most 7 days).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub presign_ttl: Duration,
}

/// `providers.*`: one [`ProviderSettings`] per built-in provider, every one present (the
/// defaults layer sets them all); the settings of declared providers
/// ([`ProvidersSettings::declared`]); and where their definitions are
/// (`providers.definitions_dir`, `[[providers.definitions]]`).
#[derive(Debug)]
pub struct ProvidersSettings {
    /// In [`ProviderId::BUILT_IN`] order.
    built_in: Vec<(ProviderId, ProviderSettings)>,
    /// `providers.<id>` tables that name no built-in provider: the settings of providers
    /// declared by definitions, by id. Which ids exist is known only once the definitions
    /// are loaded, so the assembly of the system refuses a table naming none.
    pub declared: BTreeMap<String, DeclaredProviderSettings>,
    /// `providers.definitions_dir`: a directory whose `*.toml` files each define a
    /// provider. Relative paths are relative to the working directory.
    pub definitions_dir: Option<PathBuf>,
    /// `[[providers.definitions]]` tables of the configuration file, each a whole
    /// definition, as TOML text (read from the file itself, so that names keep their case).
    pub definitions: Vec<InlineDefinition>,
}

/// A definition written in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineDefinition {
    /// Where it is, for messages: `byok.toml: providers.definitions[0]`.
    pub origin: String,
    /// The definition's table, as TOML.
    pub text: String,
}

impl ProvidersSettings {
    /// The settings of a built-in provider; `None` for any other id.
    pub fn get(&self, id: ProviderId) -> Option<&ProviderSettings> {
        self.built_in
            .iter()
            .find(|(p, _)| *p == id)
            .map(|(_, settings)| settings)
    }

    /// The settings of a built-in provider, to change them (programs that build their
    /// settings in code: tests, benchmarks, the simulator mode); `None` for any other id.
    pub fn get_mut(&mut self, id: ProviderId) -> Option<&mut ProviderSettings> {
        self.built_in
            .iter_mut()
            .find(|(p, _)| *p == id)
            .map(|(_, settings)| settings)
    }

    /// Every built-in provider's settings, in [`ProviderId::BUILT_IN`] order.
    pub fn built_in(&self) -> impl Iterator<Item = (ProviderId, &ProviderSettings)> {
        self.built_in.iter().map(|(id, s)| (*id, s))
    }
}

impl<'de> Deserialize<'de> for ProvidersSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ProvidersSettings;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of providers")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::de::Error as _;
                let mut slots: Vec<Option<ProviderSettings>> =
                    ProviderId::BUILT_IN.iter().map(|_| None).collect();
                let mut declared = BTreeMap::new();
                let mut definitions_dir = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "definitions_dir" => {
                            definitions_dir = map.next_value::<Option<PathBuf>>()?;
                            continue;
                        }
                        // Read from the file as TOML by the loader (see `definitions`).
                        "definitions" => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                        _ => {}
                    }
                    match ProviderId::BUILT_IN.iter().position(|p| p.as_str() == key) {
                        Some(i) => {
                            if slots[i].is_some() {
                                return Err(A::Error::duplicate_field(
                                    ProviderId::BUILT_IN[i].as_str(),
                                ));
                            }
                            slots[i] = Some(map.next_value()?);
                        }
                        None => {
                            if ProviderId::check_name(&key).is_err() {
                                // The same error as `deny_unknown_fields` on named fields gives.
                                return Err(A::Error::unknown_field(
                                    &key,
                                    &ProviderId::BUILT_IN_NAMES,
                                ));
                            }
                            let settings: DeclaredProviderSettings = map.next_value()?;
                            declared.insert(key, settings);
                        }
                    }
                }
                let built_in = ProviderId::BUILT_IN
                    .into_iter()
                    .zip(slots)
                    .map(|(id, slot)| {
                        slot.map(|s| (id, s))
                            .ok_or_else(|| A::Error::missing_field(id.as_str()))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(ProvidersSettings {
                    built_in,
                    declared,
                    definitions_dir,
                    definitions: Vec::new(),
                })
            }
        }

        deserializer.deserialize_map(Visitor)
    }
}

/// `providers.<id>.*` of a provider declared by a definition: each setting, when given,
/// replaces what the definition says (e.g. `base_url` pointing at a simulator).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredProviderSettings {
    /// Replaces the definition's `base_url` (trusted like a built-in provider's: `http`
    /// allowed).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Replaces the definition's `rate_limit`.
    #[serde(default)]
    pub rate_limit: Option<byok_core::RateLimits>,
    /// Replaces the definition's `poll_interval_secs`.
    #[serde(default, deserialize_with = "crate::duration::deserialize_option")]
    pub poll_interval: Option<Duration>,
    /// Replaces the definition's models.
    #[serde(default)]
    pub models: Option<Vec<byok_core::ModelSpec>>,
    /// As for a built-in provider.
    #[serde(default)]
    pub prices: Vec<byok_core::ModelPrice>,
    /// As for a built-in provider.
    #[serde(default)]
    pub max_requests_per_second: Option<f64>,
}

/// One provider's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// The API host; for Veo `{location}` is replaced by the credential's region.
    pub base_url: String,
    /// Per user key.
    pub rate_limit: byok_core::RateLimits,
    /// Time between status polls of a remote operation.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub poll_interval: Duration,
    /// Replaces the built-in model catalogue (`[[providers.<id>.models]]`
    /// tables in `byok.toml`): providers retire and add models faster than
    /// releases ship.
    #[serde(default)]
    pub models: Option<Vec<byok_core::ModelSpec>>,
    /// Replace the catalogue's prices of the models they name (`[[providers.<id>.prices]]`:
    /// `model`, `per_second`, `per_video`, `source`, `as_of`).
    #[serde(default)]
    pub prices: Vec<byok_core::ModelPrice>,
    /// Veo only: token endpoints a service account's `token_uri` may name besides
    /// Google's (`https://oauth2.googleapis.com/token`). A list, or one comma-separated
    /// string (the environment's form).
    #[serde(default, deserialize_with = "comma_separated")]
    pub token_uri_allowlist: Vec<String>,
    /// Every request this process sends to the provider (submits, polls, downloads, key
    /// checks) is paced to at most this many per second, by waiting; unset: not paced.
    /// The per-key `rate_limit` stays the authority for submits.
    #[serde(default)]
    pub max_requests_per_second: Option<f64>,
}

/// A list of IP networks (`10.0.0.0/8`, or a bare address for one host), or one string of
/// comma-separated entries.
fn comma_separated_networks<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<IpNet>, D::Error> {
    comma_separated(d)?
        .iter()
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{entry}` is not an IP address or network (e.g. 10.0.0.0/8)"
                    ))
                })
        })
        .collect()
}

fn comma_separated_durations<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Duration>, D::Error> {
    comma_separated(d)?
        .iter()
        .map(|entry| crate::duration::parse(entry).map_err(serde::de::Error::custom))
        .collect()
}

/// A list of strings, or one string of comma-separated entries.
fn comma_separated<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        One(String),
    }
    Ok(match Form::deserialize(d)? {
        Form::List(items) => items,
        Form::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// `fetch.*`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchSettings {
    /// Allow user-supplied URLs to reach loopback, private and link-local
    /// addresses. Only tests and the simulator need it.
    pub allow_private_networks: bool,
    /// How many input images a process decodes or resizes at a time (at
    /// least 1); the other jobs wait their turn.
    pub max_concurrent_decodes: u32,
    /// The most an input image may take decoded, in bytes (width x height x
    /// bytes per pixel, plus what the decoder keeps beside it), checked from
    /// its header before decoding; larger images are an `invalid_request`.
    pub max_decoded_bytes: u64,
}

/// The two deployment shapes (docs/architecture.md, "Deployment shapes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One process, one SQLite file, no services.
    Embedded,
    /// PostgreSQL + Redis, any number of API and worker processes.
    Distributed,
}

/// Where the queue lives, from `queue.url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueUrl {
    /// In the SQLite database (`queue.url = "sqlite"`).
    Sqlite,
    /// Redis at `queue.url`.
    Redis,
}

impl Settings {
    /// Embedded when the database is SQLite.
    pub fn shape(&self) -> Shape {
        if self.database_is_sqlite() {
            Shape::Embedded
        } else {
            Shape::Distributed
        }
    }

    /// Whether `database.url` names a SQLite file.
    pub fn database_is_sqlite(&self) -> bool {
        use secrecy::ExposeSecret;
        self.database.url.expose_secret().starts_with("sqlite:")
    }

    /// The kind of queue `queue.url` names (already validated at load).
    pub fn queue_kind(&self) -> QueueUrl {
        use secrecy::ExposeSecret;
        if self.queue.url.expose_secret() == "sqlite" {
            QueueUrl::Sqlite
        } else {
            QueueUrl::Redis
        }
    }
}
