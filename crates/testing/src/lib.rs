#![doc = include_str!("../README.md")]

mod browser;
mod memory;
mod policy;
mod poll;
mod postgres;
mod process;
mod python;
mod redis;
mod redis_cluster;
mod s3;

pub use browser::{CHROMIUM, browser};
pub use memory::{proc_status_bytes, reset_peak_rss, run_child_test};
pub use policy::{ServicePolicy, skip_or_fail};
pub use poll::poll_until;
pub use postgres::{
    PostgresServer, PostgresStop, TestDatabase, spawn_postgres, spawn_postgres_with, test_database,
};
pub use process::{ChildGuard, free_port, wait_for_tcp};
pub use python::python_venv;
pub use redis::{SpawnedRedis, TestRedis, spawn_redis, test_redis};
pub use redis_cluster::{ClusterNode, TestCluster, shared_redis_cluster, spawn_redis_cluster};
pub use s3::{S3Server, s3_server};

/// A fresh SQLite database file in its own temporary directory.
#[derive(Debug)]
pub struct TestSqlite {
    /// `sqlite://<dir>/byok.db` (created on first connect with `mode=rwc`).
    pub url: String,
    /// The database file.
    pub path: std::path::PathBuf,
    /// Removed on drop.
    pub dir: tempfile::TempDir,
}

/// A SQLite database in a fresh temporary directory; always available.
pub fn test_sqlite() -> TestSqlite {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("byok.db");
    TestSqlite {
        url: format!("sqlite://{}?mode=rwc", path.display()),
        path,
        dir,
    }
}
