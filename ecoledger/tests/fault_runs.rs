//! Short runs of each scripted fault of `ecoledger bench faults` (BENCHMARKS.md, "Faults"):
//! private Postgres and NATS, the real binary, a few seconds of transfers, then every invariant.
//! `make faults` runs the full versions.

use std::path::PathBuf;
use std::time::Duration;

use bench::faults::{run_fault, Fault, FaultOptions, FaultReport};
use bench::invariants::CommandKind;

fn smoke(duration_secs: u64) -> FaultOptions {
    FaultOptions {
        duration: Duration::from_secs(duration_secs),
        users: 6,
        concurrency: 4,
        nats_outage: Duration::from_secs(2),
        postgres_outage: Duration::from_secs(2),
        ..FaultOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_ecoledger")))
    }
}

/// The run kept every invariant and acknowledged transfers during the load.
fn assert_kept_invariants(report: &FaultReport) {
    println!("{report}");
    assert!(report.ok(), "{report}");
    assert!(report.invariants.ok(), "{report}");
    let opening_deposits = report.options.users;
    assert!(report.acknowledged_of(CommandKind::Transfer) > 0, "{report}");
    assert!(report.acknowledged.len() > opening_deposits, "{report}");
}

#[tokio::test]
async fn a_server_killed_three_times_during_transfers_loses_and_doubles_nothing() {
    let report = run_fault(Fault::Kill, smoke(4)).await.expect("the kill run completes");

    assert_kept_invariants(&report);
    assert_eq!(report.fault_log.len(), 3, "{report}");
}

#[tokio::test]
async fn commands_never_fail_while_nats_is_down_and_everything_settles_after() {
    let report = run_fault(Fault::Nats, smoke(5)).await.expect("the NATS run completes");

    assert_kept_invariants(&report);
    assert!(report.tally.failed_by_code.is_empty(), "a command failed while only NATS was down:\n{report}");
}

#[tokio::test]
async fn commands_fail_fast_with_503_while_postgres_is_down_and_nothing_is_lost() {
    let report = run_fault(Fault::Postgres, smoke(5)).await.expect("the Postgres run completes");

    assert_kept_invariants(&report);
    assert!(report.tally.failures() > 0, "no command met the outage:\n{report}");
    let not_503: Vec<&String> = report.tally.failed_by_code.keys().filter(|code| !code.starts_with("503 ")).collect();
    assert!(not_503.is_empty(), "refusals other than 503 during the outage: {not_503:?}\n{report}");
}
