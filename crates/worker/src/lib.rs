#![doc = include_str!("../README.md")]

mod backoff;
mod fallback;
mod finish;
mod pipeline;
mod poll;
mod run;
mod step;
mod submit;
mod sweeper;

pub use backoff::RetryBackoff;
pub use pipeline::{Pipeline, PipelineParts, PipelineSettings};
pub use run::{RunError, WorkerOptions, run_worker};
pub use sweeper::{SweepError, sweep_stranded};
