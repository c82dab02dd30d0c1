//! `ecoledger bench faults`: scripted fault runs against private services (BENCHMARKS.md,
//! "Faults"). Each run starts its own Postgres (`initdb`) and NATS on free ports and the
//! `ecoledger` binary over them, drives a transfers load over HTTP, injects one fault while the
//! load runs, waits for sagas and projections to settle, and checks the ledger's invariants with
//! every command the clients saw acknowledged.
//!
//! - `kill`: SIGKILL the server and start it again, three times.
//! - `nats`: stop NATS (SIGKILL) for 10 s, then start it on the same port and store.
//! - `postgres`: stop Postgres (`pg_ctl stop -m fast`) for a few seconds, then start it;
//!   commands must fail fast with 503 meanwhile.

mod ledger;
mod load;
mod services;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::ConnectOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::invariants::{self, Acknowledged, CommandKind};
use ledger::{LedgerEnv, LedgerProcess};
use load::Http;
pub use load::Tally;
use services::TempDir;
pub use services::{pg_bin_dir, PrivateNats, PrivatePostgres};

/// A command that failed must have failed within this: nothing hangs.
pub const FAILURE_LATENCY_MAX: Duration = Duration::from_secs(5);
/// How long sagas and projections may take to finish once the fault is over.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);
/// Pause between settle probes.
const SETTLE_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Lines of the server's log shown when a run fails.
const LOG_TAIL_LINES: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// SIGKILL the server and restart it, three times.
    Kill,
    /// NATS down for a while, then back on the same port and store.
    Nats,
    /// Postgres stopped for a few seconds, then started again.
    Postgres,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Kill => "kill",
            Fault::Nats => "nats",
            Fault::Postgres => "postgres",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultSelection {
    Kill,
    Nats,
    Postgres,
    /// Each fault in turn, each in a fresh environment.
    All,
}

impl FaultSelection {
    fn faults(self) -> Vec<Fault> {
        match self {
            FaultSelection::Kill => vec![Fault::Kill],
            FaultSelection::Nats => vec![Fault::Nats],
            FaultSelection::Postgres => vec![Fault::Postgres],
            FaultSelection::All => vec![Fault::Kill, Fault::Nats, Fault::Postgres],
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct FaultArgs {
    #[arg(long, value_enum)]
    pub fault: FaultSelection,
    /// Seconds of load per fault (the fault happens inside them).
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// The ecoledger binary to run (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Users sending each other money.
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Clients sending at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How long NATS stays down.
    #[arg(long, default_value_t = 10)]
    pub nats_outage_secs: u64,
    /// How long Postgres stays down.
    #[arg(long, default_value_t = 5)]
    pub postgres_outage_secs: u64,
}

/// How a fault run goes; [`FaultOptions::new`] gives the full run's defaults.
#[derive(Debug, Clone)]
pub struct FaultOptions {
    pub binary: PathBuf,
    pub duration: Duration,
    pub users: usize,
    pub concurrency: usize,
    /// SIGKILLs in a `kill` run, spread evenly over it.
    pub kills: u32,
    pub nats_outage: Duration,
    pub postgres_outage: Duration,
    /// `initdb`/`pg_ctl` directory; `None`: `ECOLEDGER_PG_BIN`, else the highest installed.
    pub pg_bin: Option<PathBuf>,
}

impl FaultOptions {
    pub fn new(binary: PathBuf) -> FaultOptions {
        FaultOptions {
            binary,
            duration: Duration::from_secs(60),
            users: 20,
            concurrency: 16,
            kills: 3,
            nats_outage: Duration::from_secs(10),
            postgres_outage: Duration::from_secs(5),
            pg_bin: None,
        }
    }
}

/// What a fault run saw, and the invariants' verdict.
#[derive(Debug)]
pub struct FaultReport {
    pub fault: Fault,
    pub options: FaultOptions,
    /// Every command acknowledged (201/202), setup's deposits included.
    pub acknowledged: Vec<Acknowledged>,
    pub tally: Tally,
    /// What was done to the services, when, and how long recovery took.
    pub fault_log: Vec<String>,
    /// When sagas and projections caught up after the load (`None`: not in time).
    pub settled: Option<Settled>,
    pub invariants: invariants::Report,
    /// The end of the server's log, kept when the run failed.
    pub server_log_tail: Option<String>,
    /// When the ledger did not settle: the relay's watermark and the sessions that were busy.
    pub stall_diagnostics: Vec<String>,
}

impl FaultReport {
    pub fn acknowledged_of(&self, kind: CommandKind) -> usize {
        self.acknowledged.iter().filter(|a| a.kind == kind).count()
    }

    /// Everything wrong with the run: failed invariants, a slow failure, an empty load.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> =
            self.invariants.failed().iter().map(|name| format!("invariant {name} failed")).collect();
        if self.tally.max_failure_latency > FAILURE_LATENCY_MAX {
            problems.push(format!(
                "a failed command took {:.2}s (at most {FAILURE_LATENCY_MAX:?} allowed)",
                self.tally.max_failure_latency.as_secs_f64()
            ));
        }
        if self.acknowledged_of(CommandKind::Transfer) == 0 {
            problems.push("no transfer was acknowledged".into());
        }
        if self.settled.is_none() {
            problems.push(format!("sagas and projections did not settle within {SETTLE_DEADLINE:?}"));
        }
        problems
    }

    pub fn ok(&self) -> bool {
        self.problems().is_empty()
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (o, t) = (&self.options, &self.tally);
        writeln!(
            f,
            "fault {}: {}s of load, {} clients, {} users",
            self.fault,
            o.duration.as_secs(),
            o.concurrency,
            o.users
        )?;
        for line in &self.fault_log {
            writeln!(f, "  fault:        {line}")?;
        }
        writeln!(
            f,
            "  acknowledged: {} ({} deposits, {} transfers); {} refused, {} given up; {} sends",
            self.acknowledged.len(),
            self.acknowledged_of(CommandKind::Deposit),
            self.acknowledged_of(CommandKind::Transfer),
            t.refused,
            t.gave_up,
            t.attempts
        )?;
        let failed: Vec<String> = t.failed_by_code.iter().map(|(code, n)| format!("{n} × {code}")).collect();
        let failed = if failed.is_empty() { "none".to_string() } else { failed.join(", ") };
        writeln!(f, "  failed sends: {failed}")?;
        writeln!(
            f,
            "  latency max:  failure {:.3}s, success {:.3}s",
            t.max_failure_latency.as_secs_f64(),
            t.max_success_latency.as_secs_f64()
        )?;
        match self.settled {
            Some(s) => writeln!(
                f,
                "  settled:      projections {:.2}s, sagas {:.2}s after the load",
                s.projections.as_secs_f64(),
                s.sagas.as_secs_f64()
            )?,
            None => writeln!(f, "  settled:      NOT within {SETTLE_DEADLINE:?}")?,
        }
        writeln!(f, "  invariants:")?;
        write!(f, "{}", self.invariants)?;
        for problem in self.problems() {
            writeln!(f, "  PROBLEM: {problem}")?;
        }
        for line in &self.stall_diagnostics {
            writeln!(f, "  stalled:      {line}")?;
        }
        if let Some(tail) = &self.server_log_tail {
            writeln!(f, "  server log (last {LOG_TAIL_LINES} lines):\n{tail}")?;
        }
        Ok(())
    }
}

/// `ecoledger bench faults`.
pub async fn run(args: FaultArgs) -> anyhow::Result<ExitCode> {
    let binary = match args.binary {
        Some(binary) => binary,
        None => std::env::current_exe().context("Failed to find the ecoledger binary")?,
    };
    let options = FaultOptions {
        duration: Duration::from_secs(args.duration_secs),
        users: args.users.max(2),
        concurrency: args.concurrency.max(1),
        nats_outage: Duration::from_secs(args.nats_outage_secs),
        postgres_outage: Duration::from_secs(args.postgres_outage_secs),
        ..FaultOptions::new(binary)
    };
    let mut all_ok = true;
    for fault in args.fault.faults() {
        match run_fault(fault, options.clone()).await {
            Ok(report) => {
                println!("{report}");
                all_ok &= report.ok();
            }
            Err(error) => {
                println!("fault {fault}: the run itself failed: {error:#}\n");
                all_ok = false;
            }
        }
    }
    println!("{}", if all_ok { "faults: every run kept every invariant" } else { "faults: FAILED" });
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The private world of one run: Postgres, NATS, the server, a scratch directory for logs.
struct World {
    postgres: PrivatePostgres,
    nats: PrivateNats,
    env: LedgerEnv,
    server: LedgerProcess,
    // Last: removed after the processes above stopped.
    _scratch: TempDir,
}

impl World {
    async fn start(options: &FaultOptions, admin_password: &str) -> anyhow::Result<World> {
        let scratch = TempDir::new("faults-run")?;
        let pg_bin = match &options.pg_bin {
            Some(dir) => dir.clone(),
            None => pg_bin_dir()?,
        };
        let postgres = PrivatePostgres::start(&pg_bin).await.context("Failed to start a private Postgres")?;
        let nats = PrivateNats::start().await.context("Failed to start a private NATS")?;
        let env = LedgerEnv {
            binary: pin_binary(&options.binary, &scratch)?,
            database_url: postgres.url(),
            nats_url: nats.url(),
            http_port: services::free_port()?,
            jwt_secret: Uuid::new_v4().simple().to_string(),
            nats_prefix: "faults".into(),
            log: scratch.path.join("ecoledger.log"),
        };
        env.create_admin(admin_password).await?;
        let server = LedgerProcess::start(&env).await?;
        Ok(World { postgres, nats, env, server, _scratch: scratch })
    }
}

/// A link to (or copy of) `binary` in the run's scratch dir: every restart runs the same
/// build, even when cargo replaces the original during the run (a shared target dir).
fn pin_binary(binary: &std::path::Path, scratch: &TempDir) -> anyhow::Result<PathBuf> {
    let pinned = scratch.path.join("ecoledger");
    if std::fs::hard_link(binary, &pinned).is_err() {
        std::fs::copy(binary, &pinned).with_context(|| format!("Failed to copy {}", binary.display()))?;
    }
    Ok(pinned)
}

/// Runs one fault end to end and reports; `Err` only when the run could not be carried out
/// (a service would not start), never for a broken invariant.
pub async fn run_fault(fault: Fault, options: FaultOptions) -> anyhow::Result<FaultReport> {
    anyhow::ensure!(options.users >= 2 && options.concurrency >= 1, "a fault run needs 2 users and 1 client");
    let admin_password = format!("admin-{}", Uuid::new_v4().simple());
    let mut world = World::start(&options, &admin_password).await?;
    let http = Http::new(world.env.base_url())?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (admin, parties) = load::setup(&http, &admin_password, options.users, &tally).await?;

    let started = Instant::now();
    let until = started + options.duration;
    let load = load::run(&http, &admin, &parties, options.concurrency, until, &tally);
    let (_, fault_log) = tokio::join!(load, inject(fault, &mut world, &options, started));
    let fault_log = fault_log?;
    let load_ended = Instant::now();

    // The checks scan whole tables on purpose: their statements are slow by design, not news.
    let connect: PgConnectOptions = world.env.database_url.parse()?;
    let connect = connect.log_slow_statements(log::LevelFilter::Off, Duration::from_secs(1));
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(connect)
        .await
        .context("Failed to connect to the private Postgres for the checks")?;
    let settled = settle(&pool, load_ended).await?;
    let stall_diagnostics = if settled.is_none() { diagnose(&pool).await } else { Vec::new() };
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    let acknowledged = tally.acknowledged.clone();
    let invariants = invariants::check(&pool, &acknowledged).await;
    pool.close().await;
    let mut report = FaultReport {
        fault,
        options,
        acknowledged,
        tally,
        fault_log,
        settled,
        invariants,
        server_log_tail: None,
        stall_diagnostics,
    };
    if !report.ok() {
        report.server_log_tail = Some(ledger::log_tail(&world.env.log, LOG_TAIL_LINES));
    }
    Ok(report)
}

/// Injects `fault` while the load runs; returns what it did.
async fn inject(
    fault: Fault,
    world: &mut World,
    options: &FaultOptions,
    started: Instant,
) -> anyhow::Result<Vec<String>> {
    let at = |instant: Instant| instant.duration_since(started).as_secs_f64();
    let mut log = Vec::new();
    match fault {
        Fault::Kill => {
            for kill in 1..=options.kills {
                tokio::time::sleep_until((started + options.duration * kill / (options.kills + 1)).into()).await;
                world.server.kill().await?;
                let killed = Instant::now();
                world.server = LedgerProcess::start(&world.env).await?;
                log.push(format!(
                    "{:.1}s: SIGKILL; listening again after {:.2}s",
                    at(killed),
                    killed.elapsed().as_secs_f64()
                ));
            }
        }
        Fault::Nats => {
            let outage = options.nats_outage.min(options.duration);
            tokio::time::sleep_until((started + (options.duration - outage) / 2).into()).await;
            world.nats.stop().await?;
            let stopped = Instant::now();
            // Paces the fault: NATS stays down this long.
            tokio::time::sleep(outage).await;
            world.nats.resume().await?;
            log.push(format!("{:.1}s: NATS killed; back after {:.2}s", at(stopped), stopped.elapsed().as_secs_f64()));
        }
        Fault::Postgres => {
            let outage = options.postgres_outage.min(options.duration);
            tokio::time::sleep_until((started + (options.duration - outage) / 2).into()).await;
            let stopping = Instant::now();
            world.postgres.stop().await?;
            let stopped = Instant::now();
            // Paces the fault: Postgres stays down this long.
            tokio::time::sleep(outage).await;
            world.postgres.resume().await?;
            log.push(format!(
                "{:.1}s: Postgres stopped (pg_ctl stop -m fast, {:.2}s); accepting again after {:.2}s",
                at(stopping),
                (stopped - stopping).as_secs_f64(),
                stopped.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(log)
}

/// How long after the load each part of the ledger caught up.
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    /// The relay published the head and every projection reached it.
    pub projections: Duration,
    /// No transfer or purchase saga pending.
    pub sagas: Duration,
}

/// Polls until no transfer or purchase saga is pending, the relay published the head and every
/// projection reached it; `None` at the deadline.
async fn settle(pool: &PgPool, load_ended: Instant) -> anyhow::Result<Option<Settled>> {
    let names: Vec<String> = projections::all().iter().map(|p| p.name().to_string()).collect();
    let kinds = vec![sagas::TRANSFER_SAGA.to_string(), sagas::PURCHASE_SAGA.to_string()];
    let (mut projections_at, mut sagas_at) = (None, None);
    loop {
        let (pending, head, published, lowest): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM sagas WHERE kind = ANY($2) AND status = 'pending'), \
                    (SELECT COALESCE(max(position), 0) FROM events), \
                    (SELECT published_position FROM relay_state WHERE id = 1), \
                    (SELECT min(COALESCE(c.position, 0)) FROM unnest($1::text[]) p(name) \
                     LEFT JOIN projection_checkpoints c ON c.name = p.name)",
        )
        .bind(&names)
        .bind(&kinds)
        .fetch_one(pool)
        .await?;
        let caught_up = published == head && lowest == head;
        projections_at = if caught_up { projections_at.or_else(|| Some(load_ended.elapsed())) } else { None };
        sagas_at = if pending == 0 { sagas_at.or_else(|| Some(load_ended.elapsed())) } else { None };
        if let (Some(projections), Some(sagas)) = (projections_at, sagas_at) {
            return Ok(Some(Settled { projections, sagas }));
        }
        if load_ended.elapsed() > SETTLE_DEADLINE {
            return Ok(None);
        }
        tokio::time::sleep(SETTLE_PROBE_INTERVAL).await;
    }
}

/// A busy session: pid, state, wait event, transaction age in seconds, query.
type Session = (i32, String, Option<String>, Option<f64>, String);

/// What a ledger that did not settle is doing: the relay's watermark against the head, and
/// every session of the database that is not idle (waiting on a lock, or idle in a transaction).
async fn diagnose(pool: &PgPool) -> Vec<String> {
    let watermark: Result<(i64, i64, i64), _> = sqlx::query_as(
        "SELECT (SELECT COALESCE(max(position), 0) FROM events), \
                (SELECT published_position FROM relay_state WHERE id = 1), \
                (SELECT count(*) FROM sagas WHERE status = 'pending')",
    )
    .fetch_one(pool)
    .await;
    let sessions: Result<Vec<Session>, _> = sqlx::query_as(
        "SELECT pid, COALESCE(state, '?'), wait_event_type || ':' || wait_event, \
                extract(epoch FROM now() - xact_start)::float8, left(query, 160) \
         FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND (state <> 'idle' OR wait_event_type = 'Lock') ORDER BY xact_start",
    )
    .fetch_all(pool)
    .await;
    let mut lines = Vec::new();
    match watermark {
        Ok((head, published, pending)) => {
            lines.push(format!("head {head}, relay published {published}, {pending} sagas pending"))
        }
        Err(error) => lines.push(format!("watermark unreadable: {error}")),
    }
    match sessions {
        Ok(sessions) => lines.extend(sessions.into_iter().map(|(pid, state, wait, age, query)| {
            let wait = wait.unwrap_or_else(|| "-".into());
            let age = age.map(|a| format!("{a:.1}s")).unwrap_or_else(|| "-".into());
            format!("session {pid} {state}, waiting {wait}, transaction {age}: {query}")
        })),
        Err(error) => lines.push(format!("sessions unreadable: {error}")),
    }
    lines
}
