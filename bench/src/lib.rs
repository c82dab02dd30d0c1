//! `ecoledger bench`: load scenarios against a running EcoLedger with same-run Postgres
//! baselines, growth measurements, and scripted fault runs with an invariant check.
//! DESIGN.md section 7 and BENCHMARKS.md.

pub mod faults;
pub mod growth;
pub mod invariants;
pub mod load;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Append events in bulk through the store (a wallet with a long history).
    Seed(growth::SeedArgs),
    /// Time a full replay of every projection, and the process's memory while it runs.
    Replay(growth::ReplayArgs),
    /// Scripted fault runs (kill, NATS down, Postgres restart) on private services, then the
    /// invariant check.
    Faults(faults::FaultArgs),
    /// Load scenarios against a running EcoLedger over HTTP, with same-run pgbench baselines.
    Load(load::LoadArgs),
}

impl BenchCommand {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            BenchCommand::Seed(args) => growth::seed(args).await,
            BenchCommand::Replay(args) => growth::replay(args).await,
            BenchCommand::Faults(args) => faults::run(args).await,
            BenchCommand::Load(args) => load::main(args).await,
        }
    }
}
