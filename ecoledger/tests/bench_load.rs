//! Smoke runs of `ecoledger bench load` (BENCHMARKS.md): every scenario for about a second
//! against a real server, and the pgbench baselines for two seconds when pgbench is installed.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bench::load::baseline::{run_baselines, BaselineSettings};
use bench::load::{self, LoadArgs, Scenario};
use common::{TestApp, PASSWORD};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

/// Advisory lock key under which the two smoke runs take turns.
const SMOKE_LOCK_KEY: i64 = 0x6265_6e63_686c_6f61;

/// pgbench's initialisation is one long transaction, and the relay's commit-safe horizon
/// (`pg_snapshot_xmin`) spans every database of the cluster: while it runs, the ledger publishes
/// nothing. So the load smoke and the pgbench smoke take turns, across test processes too.
/// The lock lasts as long as the returned pool's one connection.
async fn take_turns() -> PgPool {
    let url = common::with_database(&common::database_url(), "postgres");
    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await.expect("connect to postgres db");
    sqlx::query("SELECT pg_advisory_lock($1)").bind(SMOKE_LOCK_KEY).execute(&pool).await.expect("advisory lock");
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_load_scenario_accepts_and_completes_commands_and_writes_its_report() {
    let turn = take_turns().await;
    let app = TestApp::spawn().await;
    app.admin().await;
    let out = std::env::temp_dir().join(format!("ecoledger-bench-load-{}.json", Uuid::new_v4().simple()));
    let pid = std::process::id().to_string();
    let args = LoadArgs::from_cli([
        "--url",
        &app.base,
        "--admin-password",
        PASSWORD,
        "--database-url",
        &app.db.url,
        "--server-pid",
        &pid,
        "--wallets",
        "12",
        "--concurrency",
        "4",
        "--duration-secs",
        "1.5",
        "--completion-timeout-secs",
        "20",
        "--no-baseline",
        "--out",
        out.to_str().unwrap(),
    ])
    .expect("the options parse");

    let report = load::run(args).await.expect("the benchmark runs");

    assert_eq!(report.scenarios.len(), Scenario::ALL.len());
    for scenario in &report.scenarios {
        let name = scenario.scenario.name();
        assert!(scenario.accepted > 0, "{name}: nothing accepted");
        assert!(scenario.completed > 0, "{name}: nothing completed");
        // The suite runs tests side by side on two cores: a saturated pool answering 503 is
        // the designed overload answer, not a failure of the benchmark. Anything else is.
        let unexpected: Vec<_> =
            scenario.errors.keys().filter(|code| code.as_str() != "database_unavailable").collect();
        assert!(unexpected.is_empty(), "{name}: errors {:?}", scenario.errors);
        assert!(scenario.acceptance.p50_ms.is_some() && scenario.projection_lag.p99_ms.is_some(), "{name}");
        assert!(scenario.server_cpu_secs.is_some_and(|cpu| cpu > 0.0), "{name}: no CPU time");
        assert!(scenario.pg_commits.is_some_and(|commits| commits > 0), "{name}: no commits counted");
    }
    assert!(report.pg_commits_per_query.is_some_and(|per_query| per_query > 0.0), "calibration ran");
    assert!(report.baseline.is_none() && report.ratios.is_empty());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("the JSON is written")).expect("the JSON parses");
    assert_eq!(json["scenarios"].as_array().map(Vec::len), Some(5));
    assert_eq!(json["scenarios"][1]["scenario"], "transfers");
    let _ = std::fs::remove_file(&out);
    turn.close().await;
}

#[tokio::test]
async fn pgbench_baselines_measure_tpcb_like_and_hot_row_transactions() {
    if std::process::Command::new("pgbench").arg("--version").output().is_err() {
        eprintln!("skipped: pgbench is not on PATH (Debian: postgresql-client or postgresql-contrib)");
        return;
    }
    let turn = take_turns().await;
    // Named like the harness's databases, so that a crashed run's is dropped by later runs.
    let created = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
    let database = format!("ecoledger_test_{created}_pgbench_{}", Uuid::new_v4().simple());
    let settings = BaselineSettings {
        database_url: common::database_url(),
        database: database.clone(),
        scale: 1,
        clients: 4,
        duration: Duration::from_secs(2),
    };

    let report = run_baselines(&settings).await;

    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).execute(&turn).await.expect("drop");
    turn.close().await;
    let report = report.expect("pgbench runs");
    assert!(report.tpcb_like_tps > 0.0, "{report:?}");
    assert!(report.hot_row_tps > 0.0, "{report:?}");
    assert_eq!(report.seconds, 2);
}
