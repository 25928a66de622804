//! A real Redis Cluster for tests: three primaries and three replicas (`redis-server
//! --cluster-enabled yes`, joined by `redis-cli --cluster create`), on loopback ports of their
//! own, with AOF on so a restarted node keeps its data.
//!
//! [`shared_redis_cluster`] is one cluster per test process (tests isolate themselves by
//! namespace, as on the shared single server); [`spawn_redis_cluster`] gives a test a cluster
//! of its own to kill nodes of.

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use crate::postgres::which;
use crate::process::{ChildGuard, free_port, wait_for_tcp, with_watchdog};
use crate::skip_or_fail;

/// A running cluster; a private one's servers are killed when it is dropped.
#[derive(Debug)]
pub struct TestCluster {
    /// `redis+cluster://127.0.0.1:p1,…` naming every node: what `queue.url` takes.
    pub url: String,
    /// The six servers, the first three created as primaries.
    pub nodes: Vec<ClusterNode>,
}

/// One server of a test cluster.
#[derive(Debug)]
pub struct ClusterNode {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
    /// The server of a private cluster (`None`: a shared one's, watched by a shell that
    /// stops it when the test process ends).
    process: Option<ChildGuard>,
    /// The command line that starts it (again, for [`TestCluster::restart`]).
    command: String,
    _dir: Option<tempfile::TempDir>,
}

/// Starts one node: owned (killed on drop) or, for the shared cluster, under a watchdog
/// that stops it and removes its directory when the test process ends.
fn start_node(binary: &std::path::Path, shared: bool) -> Option<ClusterNode> {
    let port = free_port();
    let dir = tempfile::tempdir().expect("temporary directory");
    let args = format!(
        "--port {port} --bind 127.0.0.1 --save '' --dir {} --cluster-enabled yes \
         --cluster-config-file nodes.conf --cluster-node-timeout {NODE_TIMEOUT_MS} --appendonly yes",
        dir.path().display()
    );
    let command = format!("{} {args}", binary.display());
    let (process, dir) = if shared {
        let dir = dir.keep();
        with_watchdog(&command, &format!("rm -rf {}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        (None, None)
    } else {
        (Some(launch(&command)?), Some(dir))
    };
    let node = ClusterNode {
        port,
        url: format!("redis://127.0.0.1:{port}"),
        process,
        command,
        _dir: dir,
    };
    node.listening().then_some(node)
}

/// Runs a private node's `command` (killed when the guard drops).
fn launch(command: &str) -> Option<ChildGuard> {
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(ChildGuard::new(child))
}

impl ClusterNode {
    /// Waits up to 10 s for the node to accept connections.
    fn listening(&self) -> bool {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("address");
        wait_for_tcp(addr, Duration::from_secs(10))
    }
}

/// How long a node may be unreachable before the cluster fails it over (ms): short, so a
/// killed primary's replica takes over within seconds.
const NODE_TIMEOUT_MS: &str = "1500";

/// Starts a cluster of its own for the calling test, or `None` after a SKIPPED line when
/// `redis-server` or `redis-cli` is missing.
pub fn spawn_redis_cluster() -> Option<TestCluster> {
    start_cluster(false)
}

fn start_cluster(shared: bool) -> Option<TestCluster> {
    let (Some(server), Some(_)) = (which("redis-server"), which("redis-cli")) else {
        skip_or_fail(
            "Redis Cluster",
            "redis-server or redis-cli not on PATH",
            "redis-server redis-tools",
        );
        return None;
    };
    let mut nodes = Vec::new();
    for _ in 0..6 {
        let Some(node) = start_node(&server, shared) else {
            skip_or_fail("Redis Cluster", "a node never listened", "redis-server");
            return None;
        };
        nodes.push(node);
    }
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let created = std::process::Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run redis-cli");
    if !created.status.success() {
        skip_or_fail(
            "Redis Cluster",
            &format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stdout)
            ),
            "redis-tools",
        );
        return None;
    }
    let cluster = TestCluster {
        url: format!("redis+cluster://{}", addresses.join(",")),
        nodes,
    };
    if !cluster.wait_healthy(Duration::from_secs(30)) {
        skip_or_fail(
            "Redis Cluster",
            "the cluster never reported every slot served",
            "redis-server",
        );
        return None;
    }
    Some(cluster)
}

/// One cluster for the whole test process (its servers die with the process), or `None`
/// after a SKIPPED line.
pub fn shared_redis_cluster() -> Option<&'static str> {
    static CLUSTER: OnceLock<Option<TestCluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| start_cluster(true))
        .as_ref()
        .map(|c| c.url.as_str())
}

impl TestCluster {
    /// Waits until every node that is up reports `cluster_state:ok` with all 16384 slots
    /// served, and every replica is linked to its primary (a replica that never synced does
    /// not stand for election, so a failover test needs them linked); false after `within`.
    pub fn wait_healthy(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let reports: Vec<String> = self.nodes.iter().filter_map(|n| report(n.port)).collect();
            let healthy = reports.iter().all(|info| {
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (!info.contains("role:slave") || info.contains("master_link_status:up"))
            });
            if !reports.is_empty() && healthy {
                return true;
            }
            // Polling a server's own report: there is nothing to wait on but time.
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The node serving `key`'s slot as primary now (its index in `nodes`).
    pub fn primary_of(&self, key: &str) -> Option<usize> {
        let slot: i64 = self.query_any(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))?;
        let slots: redis::Value = self.query_any(redis::cmd("CLUSTER").arg("SLOTS"))?;
        let redis::Value::Array(ranges) = slots else {
            return None;
        };
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
                (fields.first(), fields.get(1))
            else {
                continue;
            };
            if (*start..=*end).contains(&slot)
                && let Some(redis::Value::Array(primary)) = fields.get(2)
                && let Some(redis::Value::Int(port)) = primary.get(1)
            {
                return self.nodes.iter().position(|n| i64::from(n.port) == *port);
            }
        }
        None
    }

    /// Kills node `index` of a private cluster with SIGKILL (its replica takes over after
    /// the node timeout).
    pub fn kill(&mut self, index: usize) {
        if let Some(process) = self.nodes[index].process.as_mut() {
            let _ = process.child_mut().kill();
            let _ = process.child_mut().wait();
        }
    }

    /// Starts node `index` of a private cluster again (after [`TestCluster::kill`]) on its
    /// port and directory: it reads its AOF and `nodes.conf` back and rejoins the cluster, as
    /// a replica when another node took its slots over meanwhile. False when it never listens.
    pub fn restart(&mut self, index: usize) -> bool {
        let node = &mut self.nodes[index];
        if node.process.is_none() {
            return false;
        }
        node.process = launch(&node.command);
        node.process.is_some() && node.listening()
    }

    fn query_any<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> Option<T> {
        self.nodes.iter().find_map(|n| {
            let client = redis::Client::open(n.url.as_str()).ok()?;
            let mut conn = client
                .get_connection_with_timeout(Duration::from_millis(500))
                .ok()?;
            cmd.query(&mut conn).ok()
        })
    }
}

/// A node's `CLUSTER INFO` and `INFO replication`, together.
fn report(port: u16) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    let cluster: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).ok()?;
    let replication: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut conn)
        .ok()?;
    Some(cluster + &replication)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cluster_serves_every_slot_and_fails_over() {
        let Some(mut cluster) = super::spawn_redis_cluster() else {
            return;
        };
        assert!(cluster.url.starts_with("redis+cluster://127.0.0.1:"));
        let primary = cluster.primary_of("{ns}:jobs").expect("a primary");
        cluster.kill(primary);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut moved = None;
        while moved.is_none() && std::time::Instant::now() < deadline {
            moved = cluster.primary_of("{ns}:jobs").filter(|p| *p != primary);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(moved.is_some(), "a replica took over the slot");
        assert!(cluster.wait_healthy(std::time::Duration::from_secs(30)));
        // The old primary comes back as a replica of the new one.
        assert!(cluster.restart(primary));
        assert!(cluster.wait_healthy(std::time::Duration::from_secs(30)));
        assert_eq!(cluster.primary_of("{ns}:jobs"), moved);
    }
}
