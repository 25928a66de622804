#![doc = include_str!("../README.md")]

mod backend;
mod config;
mod disposition;
mod engine;
mod error;
mod inspect;
mod producer;
mod redis;
mod sqlite;

pub use backend::{AckLayer, AckService, QueueBackend};
pub use byok_core::QueueStats;
pub use config::QueueConfig;
pub use disposition::Disposition;
pub use engine::{Consumer, Delivery, Engine, Maintenance, NewItem, Settlement};
pub use error::QueueError;
pub use inspect::{ItemState, ListedItem, WorkerSeen};
pub use producer::Producer;
pub use redis::RedisEngine;
pub use sqlite::SqliteEngine;
