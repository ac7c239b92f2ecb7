//! sluice: loads data files into an HTTP API through WebAssembly format
//! plugins, with retries, a circuit breaker and dead-letter files.
//!
//! The binary's entry point is [`cli::main`]; the modules below are the
//! mechanisms it wires together.

pub mod cli;
pub mod config;
pub mod dead_letter;
pub mod delivery;
pub mod dry_run;
pub mod identity;
pub mod ledger;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod report;
pub mod shutdown;
pub mod verify;
pub mod watch;
