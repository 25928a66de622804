//! The system under test: the e2e harness's distributed deployment (`byok api`, three
//! `byok worker` processes, the simulator in this process) on a PostgreSQL and a Redis (or a
//! Redis Cluster) of the suite's own, which it may stop, kill and start again without
//! touching the servers other tests share. Everything is stopped when dropped, on a panic too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use byok_testing::{PostgresServer, PostgresStop, SpawnedRedis, TestCluster};

use crate::deploy::{DeployOptions, Deployment};
use crate::faults::now_ms;

/// The queue namespace: every Redis key of the deployment is in the slot of `{chaos}`.
pub const NAMESPACE: &str = "chaos";

/// The key whose slot holds the whole namespace (the primary a cluster fault kills).
const NAMESPACE_KEY: &str = "{chaos}:jobs";

/// Where the queue, the limiter and the budget ledger live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One `redis-server` with AOF and `appendfsync always`.
    SingleRedis,
    /// A Redis Cluster: three primaries with a replica each.
    Cluster,
}

impl Topology {
    pub fn describe(self) -> &'static str {
        match self {
            Topology::SingleRedis => "single Redis (AOF, appendfsync always)",
            Topology::Cluster => "Redis Cluster (3 primaries, 3 replicas)",
        }
    }
}

/// The Redis side.
#[derive(Debug)]
enum Redis {
    Single(SpawnedRedis),
    Cluster(TestCluster),
}

/// A process the supervisor found gone without the driver having killed it.
#[derive(Debug, Clone)]
pub struct Exit {
    /// `api` or `worker-<i>`.
    pub process: String,
    /// How it ended.
    pub status: String,
    /// When it was started (unix ms).
    pub started_ms: i64,
    /// When the supervisor found it gone (unix ms).
    pub found_ms: i64,
    /// Its last log lines.
    pub log: String,
}

/// The running system. Fields drop in order: the processes first, then the servers.
pub struct System {
    pub d: Deployment,
    pg: PostgresServer,
    redis: Redis,
    /// Processes that exited on their own, each started again by [`System::supervise`].
    pub exits: Vec<Exit>,
    /// When each process was last started (unix ms).
    started: HashMap<String, i64>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("deployment", &self.d)
            .field("postgres", &self.pg.url)
            .finish_non_exhaustive()
    }
}

/// Redis arguments of the single server: durable as docs/chaos.md promises (every write
/// the server acknowledged is in its AOF before the answer leaves).
const REDIS_ARGS: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "always"];

impl System {
    /// Starts the servers and the deployment; `None` after a SKIPPED line when a server
    /// cannot be had (a panic under `BYOK_TEST_SERVICES=required`).
    pub async fn start(topology: Topology, options: DeployOptions) -> Option<System> {
        let pg = tokio::task::block_in_place(byok_testing::spawn_postgres)?;
        let (redis, url) = match topology {
            Topology::SingleRedis => {
                let server = byok_testing::spawn_redis(&REDIS_ARGS)?;
                let url = server.url.clone();
                (Redis::Single(server), url)
            }
            Topology::Cluster => {
                let cluster = tokio::task::block_in_place(byok_testing::spawn_redis_cluster)?;
                let url = cluster.url.clone();
                (Redis::Cluster(cluster), url)
            }
        };
        let d = Deployment::distributed_with(options, &pg.url, &url, NAMESPACE, Vec::new()).await;
        let now = now_ms();
        let started = std::iter::once("api".to_owned())
            .chain((0..d.workers.len()).map(|i| format!("worker-{i}")))
            .map(|process| (process, now))
            .collect();
        Some(System {
            d,
            pg,
            redis,
            exits: Vec::new(),
            started,
        })
    }

    /// Starts again every process found exited on its own, noting each exit.
    pub fn supervise(&mut self) {
        for (process, status) in self.d.exited() {
            self.exits.push(Exit {
                log: self.d.log_tail(&process),
                started_ms: self.started.get(&process).copied().unwrap_or_default(),
                found_ms: now_ms(),
                process: process.clone(),
                status: status.to_string(),
            });
            self.start_process(&process);
        }
    }

    /// Starts `api` or `worker-<i>` (which must not be running).
    pub fn start_process(&mut self, process: &str) {
        match process.strip_prefix("worker-") {
            Some(index) => self
                .d
                .restart_worker(index.parse().expect("a worker's index")),
            None => self.d.restart_api(),
        }
        self.started.insert(process.to_owned(), now_ms());
    }

    /// The indexes of the workers running now.
    pub fn running_workers(&self) -> Vec<usize> {
        (0..self.d.workers.len())
            .filter(|i| self.d.workers[*i].is_some())
            .collect()
    }

    pub fn postgres_running(&self) -> bool {
        self.pg.is_running()
    }

    /// Stops PostgreSQL (until [`System::start_postgres`]).
    pub fn stop_postgres(&mut self, how: PostgresStop) {
        tokio::task::block_in_place(|| self.pg.stop(how));
    }

    /// Starts PostgreSQL again and waits until it takes sessions.
    pub fn start_postgres(&mut self) {
        if let Err(e) = tokio::task::block_in_place(|| self.pg.start()) {
            panic!("PostgreSQL did not start again: {e}");
        }
    }

    /// Stops the single Redis: SIGTERM (`graceful`, Redis's own shutdown) or SIGKILL.
    pub fn stop_redis(&mut self, graceful: bool) {
        if let Redis::Single(server) = &mut self.redis {
            tokio::task::block_in_place(|| server.stop(graceful));
        }
    }

    /// Starts the single Redis again on its port and data directory.
    pub fn start_redis(&mut self) {
        if let Redis::Single(server) = &mut self.redis {
            assert!(
                tokio::task::block_in_place(|| server.start()),
                "Redis did not start again"
            );
        }
    }

    /// Kills (SIGKILL) the primary serving the namespace's slot, waits for its replica to
    /// take over, starts the old primary again (it rejoins as a replica) and waits until
    /// the cluster is whole. Returns what happened, for the fault log.
    pub fn fail_over(&mut self) -> String {
        let Redis::Cluster(cluster) = &mut self.redis else {
            return "not a cluster".to_owned();
        };
        tokio::task::block_in_place(|| {
            let Some(primary) = cluster.primary_of(NAMESPACE_KEY) else {
                panic!("no primary serves {NAMESPACE_KEY}");
            };
            cluster.kill(primary);
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut successor = None;
            while successor.is_none() && Instant::now() < deadline {
                successor = cluster.primary_of(NAMESPACE_KEY).filter(|p| *p != primary);
                // The cluster's own failure detection is the only signal (node timeout 1.5 s).
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(
                successor.is_some(),
                "no replica took over from node {primary} within 30 s"
            );
            assert!(cluster.restart(primary), "node {primary} did not restart");
            assert!(
                cluster.wait_healthy(Duration::from_secs(30)),
                "the cluster did not become whole again"
            );
            format!(
                "node {} → node {}",
                cluster.nodes[primary].port,
                cluster.nodes[successor.unwrap_or(primary)].port
            )
        })
    }
}
