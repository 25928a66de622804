#![doc = include_str!("../README.md")]

mod backoff;
mod pipeline;
mod run;
mod sweeper;

pub use backoff::RetryBackoff;
pub use pipeline::{Pipeline, PipelineSettings, ProviderPacing};
pub use run::{RunError, WorkerOptions, run_worker};
pub use sweeper::{SweepError, sweep_stranded};
