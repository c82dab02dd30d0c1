//! The `ecoledger` binary's library: configuration, start-up and the CLI's commands, so tests
//! can run them in-process.

pub mod chain_checks;
pub mod cli;
pub mod configuration;
pub mod holder_cli;
pub mod startup;
pub mod telemetry;
