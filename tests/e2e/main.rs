//! End-to-end tests: the real `byok` binary, started as a process against
//! real databases, as an operator or a deployment would run it.

mod api_fuzz;
mod api_process;
mod browser;
mod budgets;
mod cli;
mod cluster;
mod demo;
mod deploy;
mod docs;
mod failover;
mod helpers;
mod input_images;
mod jobs_api;
mod manifests;
mod metrics;
mod object_store;
mod operator;
mod pipeline;
mod providers_check;
mod rewrap;
mod sim;
mod webhooks;
