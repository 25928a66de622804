#![doc = include_str!("../README.md")]

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// Where Redis is, as `queue.url` names it.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`redis://…`, `rediss://…`): a standalone Redis, or a primary behind a
    /// failover endpoint (Sentinel-managed services, ElastiCache without cluster mode).
    Single(String),
    /// A Redis Cluster (`redis+cluster://h1:6379,h2:6379/`, `rediss+cluster://…` for TLS):
    /// the seed nodes, each as a `redis://` URL; the client learns the rest of the cluster
    /// from them and follows `MOVED`/`ASK` redirections and failovers.
    Cluster(Vec<String>),
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry a password: only the shape is told.
        match self {
            RedisTarget::Single(_) => f.write_str("RedisTarget::Single"),
            RedisTarget::Cluster(nodes) => write!(f, "RedisTarget::Cluster({} seeds)", nodes.len()),
        }
    }
}

/// `queue.url` could not be read as a Redis URL. Never carries the URL (it may hold a
/// password).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisUrlError {
    /// Neither `redis://`, `rediss://`, `redis+cluster://` nor `rediss+cluster://`.
    #[error("expected redis://, rediss://, redis+cluster:// or rediss+cluster://")]
    Scheme,
    /// A cluster URL without a `host:port` seed.
    #[error("a cluster URL names at least one host:port seed node")]
    NoSeeds,
    /// A seed that is not `host:port`.
    #[error("cluster seed {index} is not host:port")]
    Seed {
        /// Its position in the list, from 1.
        index: usize,
    },
}

impl RedisTarget {
    /// Reads `url`. A cluster URL is `redis+cluster://[user:password@]h1:p1,h2:p2[/]`
    /// (`rediss+cluster://` for TLS); its credentials apply to every node.
    pub fn parse(url: &str) -> Result<RedisTarget, RedisUrlError> {
        let (cluster_scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            ("rediss", rest)
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(RedisTarget::Single(url.to_owned()));
        } else {
            return Err(RedisUrlError::Scheme);
        };
        let rest = rest.trim_end_matches('/');
        // Credentials end at the last `@` (a password may contain `@` only percent-encoded,
        // but be lenient); the seeds follow.
        let (credentials, seeds) = match rest.rsplit_once('@') {
            Some((credentials, seeds)) => (Some(credentials), seeds),
            None => (None, rest),
        };
        let mut nodes = Vec::new();
        for (i, seed) in seeds.split(',').map(str::trim).enumerate() {
            if seed.is_empty() {
                continue;
            }
            let valid = seed
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(RedisUrlError::Seed { index: i + 1 });
            }
            nodes.push(match credentials {
                Some(c) => format!("{cluster_scheme}://{c}@{seed}"),
                None => format!("{cluster_scheme}://{seed}"),
            });
        }
        if nodes.is_empty() {
            return Err(RedisUrlError::NoSeeds);
        }
        Ok(RedisTarget::Cluster(nodes))
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }
}

/// How long a connection waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For a connection to open.
    pub connect: Duration,
    /// For an answer; a blocking read's block time must stay below it.
    pub response: Duration,
}

/// A connection to Redis, single or cluster, that reconnects by itself: cheap to clone
/// (clones share one multiplexed connection per server), usable wherever the `redis` crate
/// takes a connection (`query_async`, `invoke_async`). Every key byok writes carries its
/// namespace's hash tag, so each script's keys share one slot and a script runs on one node.
#[derive(Clone)]
pub enum RedisConn {
    /// One server, through the crate's `ConnectionManager` (reconnects with backoff).
    Single(ConnectionManager),
    /// A Redis Cluster, through the crate's cluster client: commands are routed by slot,
    /// `MOVED`/`ASK` followed, the slot map refreshed after a failover.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the connection: its info may carry a password.
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl RedisConn {
    /// Opens a connection to `target`.
    pub async fn open(
        target: &RedisTarget,
        timeouts: Timeouts,
    ) -> Result<RedisConn, redis::RedisError> {
        match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let conn = client
                    .get_connection_manager_with_config(
                        ConnectionManagerConfig::new()
                            .set_response_timeout(Some(timeouts.response))
                            .set_connection_timeout(Some(timeouts.connect))
                            .set_max_delay(Duration::from_secs(2)),
                    )
                    .await?;
                Ok(RedisConn::Single(conn))
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(timeouts.connect)
                    .response_timeout(timeouts.response)
                    .build()?;
                Ok(RedisConn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Opens `url` (as [`RedisTarget::parse`] reads it).
    pub async fn open_url(url: &str, timeouts: Timeouts) -> Result<RedisConn, OpenError> {
        let target = RedisTarget::parse(url)?;
        Ok(RedisConn::open(&target, timeouts).await?)
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }
}

/// [`RedisConn::open_url`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL.
    #[error("queue.url: {0}")]
    Url(#[from] RedisUrlError),
    /// Redis.
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_server_or_a_cluster() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/0").unwrap(),
            RedisTarget::Single("redis://127.0.0.1:6379/0".into())
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/").unwrap(),
            RedisTarget::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7001".into()
            ])
        );
        assert_eq!(
            RedisTarget::parse("rediss+cluster://default:s3cret@a.example:6380,b.example:6380")
                .unwrap(),
            RedisTarget::Cluster(vec![
                "rediss://default:s3cret@a.example:6380".into(),
                "rediss://default:s3cret@b.example:6380".into()
            ])
        );
        assert!(matches!(
            RedisTarget::parse("http://x"),
            Err(RedisUrlError::Scheme)
        ));
        assert!(matches!(
            RedisTarget::parse("redis+cluster://"),
            Err(RedisUrlError::NoSeeds)
        ));
        assert!(matches!(
            RedisTarget::parse("redis+cluster://a:1,b"),
            Err(RedisUrlError::Seed { index: 2 })
        ));
        let debug = format!(
            "{:?}",
            RedisTarget::parse("redis+cluster://u:pw@a:1").unwrap()
        );
        assert!(!debug.contains("pw"), "{debug}");
    }
}
