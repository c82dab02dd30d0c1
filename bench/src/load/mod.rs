//! `ecoledger bench load`: drives a running EcoLedger over HTTP (it never starts one) through
//! five scenarios, measures acceptance, completion as seen in the read model, projection lag,
//! errors, the server's CPU time and Postgres commits, and compares the rates with pgbench run
//! against the same Postgres server in the same run. BENCHMARKS.md explains every figure.

pub mod baseline;
mod client;
mod drive;
pub mod report;
mod setup;
pub mod stats;
pub mod system;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use rand::Rng;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use baseline::{BaselineReport, BaselineSettings};
use client::Api;
use drive::{Command, Plan, Track, Workload};
use report::{LoadReport, Ratio, ScenarioReport, Settings};
use setup::{UserPool, LISTINGS};
use stats::{per_second, ratio, Latency};
use system::{machine_cpu_ticks, LedgerDb, Machine, ServerProcess};

/// Wallets the `transfers-hot` scenario moves money among.
const HOT_WALLETS: usize = 10;
/// What one transfer moves, one deposit brings, one purchase buys.
const TRANSFER_EUR: &str = "0.01";
const DEPOSIT_AMOUNT: &str = "1.00";
const PURCHASE_TONNES: &str = "0.5";
/// A purchase's ceiling: far above its 1.01 EUR, so a price change never refuses it.
const PURCHASE_MAX_TOTAL_EUR: &str = "10";
/// Backends report their commit counts at most once a second: the benchmark waits this long
/// before reading `xact_commit` on both sides of a scenario.
const STATS_SETTLE: Duration = Duration::from_millis(1_500);
/// Calibration of what one of the benchmark's GETs costs in commits: the idle server's
/// background rate over this long, then this many GETs.
const CALIBRATION_IDLE: Duration = Duration::from_secs(3);
const CALIBRATION_QUERIES: u32 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Admin deposits spread round-robin over `--wallets` wallets; done when projected.
    Deposits,
    /// Transfers between wallets chosen uniformly among `--wallets`; done when the saga is.
    Transfers,
    /// Transfers among 10 wallets only: every command meets a busy stream.
    TransfersHot,
    /// Deposits from every client into one wallet.
    HotWallet,
    /// Many buyers, a few listings (4): every purchase reserves on a busy listing.
    Purchases,
}

impl Scenario {
    pub const ALL: [Scenario; 5] =
        [Scenario::Deposits, Scenario::Transfers, Scenario::TransfersHot, Scenario::HotWallet, Scenario::Purchases];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Deposits => "deposits",
            Scenario::Transfers => "transfers",
            Scenario::TransfersHot => "transfers-hot",
            Scenario::HotWallet => "hot-wallet",
            Scenario::Purchases => "purchases",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The running EcoLedger (`make run` serves on the default).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, default_value = "admin")]
    pub admin_username: String,
    /// The admin's password; give it through the environment, not the command line.
    #[arg(
        long,
        env = "ECOLEDGER_BENCH_ADMIN_PASSWORD",
        default_value = "admin-change-me-now",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub admin_password: String,
    /// A scenario to run (repeatable); all of them by default, always in the order listed.
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Clients sending commands at once (and pgbench's client count).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How long each scenario sends commands.
    #[arg(long, default_value_t = 20.0)]
    pub duration_secs: f64,
    /// Most commands a scenario sends.
    #[arg(long, default_value_t = 100_000)]
    pub requests_max: u64,
    /// Commands per second to send at most, all clients together (0: as fast as the clients
    /// get answers). For latency below the peak: run once to find the peak, then again at,
    /// say, 80 % of it.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Wallets (users) that `deposits`, `transfers` and `purchases` spread over.
    #[arg(long, default_value_t = 1_000)]
    pub wallets: usize,
    /// Longest the benchmark follows one command until it shows done.
    #[arg(long, default_value_t = 30)]
    pub completion_timeout_secs: u64,
    /// The server's process id, for its CPU time (default: whoever listens on the URL's port).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The JSON report (default: bench-results/load-<UTC timestamp>.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The ledger's database, for Postgres commits per command and for the baselines' server.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Run the pgbench baselines in the same run (the default).
    #[arg(long = "baseline", overrides_with = "no_baseline")]
    pub with_baseline: bool,
    /// Skip the pgbench baselines.
    #[arg(long = "no-baseline", overrides_with = "with_baseline")]
    pub no_baseline: bool,
    /// How long each pgbench run lasts.
    #[arg(long, default_value_t = 30)]
    pub baseline_secs: u64,
    /// pgbench's scale (`-i -s`): 100,000 accounts per unit.
    #[arg(long, default_value_t = 10)]
    pub baseline_scale: u32,
    /// The database pgbench creates and fills on the ledger's Postgres server.
    #[arg(long, default_value = "ecoledger_pgbench")]
    pub baseline_database: String,
}

impl LoadArgs {
    /// Parses `ecoledger bench load`'s options (without the command name), as the CLI does.
    pub fn from_cli<I, T>(args: I) -> Result<LoadArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: LoadArgs,
        }
        let argv = std::iter::once(OsString::from("load")).chain(args.into_iter().map(Into::into));
        <Cli as clap::Parser>::try_parse_from(argv).map(|cli| cli.args)
    }

    /// The scenarios to run, in their fixed order.
    pub fn selected(&self) -> Vec<Scenario> {
        Scenario::ALL.into_iter().filter(|s| self.scenarios.is_empty() || self.scenarios.contains(s)).collect()
    }

    pub fn baseline(&self) -> bool {
        !self.no_baseline
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.concurrency == 0 || self.requests_max == 0 {
            bail!("--concurrency and --requests-max must be at least 1");
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            bail!("--rate must be a number of commands per second, 0 or more");
        }
        if !(self.duration_secs > 0.0 && self.duration_secs.is_finite()) {
            bail!("--duration-secs must be positive");
        }
        if self.wallets < 2 {
            bail!("--wallets must be at least 2 (a transfer needs two)");
        }
        Ok(())
    }
}

/// `ecoledger bench load`: runs, prints the tables, writes the JSON; fails when a scenario
/// completed nothing.
pub async fn main(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let report = run(args).await?;
    let idle: Vec<&str> = report.scenarios.iter().filter(|s| s.completed == 0).map(|s| s.scenario.name()).collect();
    if !idle.is_empty() {
        eprintln!("no command completed in: {}", idle.join(", "));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the selected scenarios and the baselines, prints the report and writes its JSON.
pub async fn run(args: LoadArgs) -> anyhow::Result<LoadReport> {
    args.validate()?;
    let started_at = Utc::now();
    let api = Api::new(&args.url, args.concurrency * 8)?;
    api.check_live().await?;
    let admin: Arc<str> = api
        .login(&args.admin_username, &args.admin_password)
        .await
        .context("Failed to log in as the admin (--admin-username, ECOLEDGER_BENCH_ADMIN_PASSWORD)")?
        .into();
    let mut notes = Vec::new();
    let server = locate_server(&args, &api, &mut notes);
    let ledger = connect_ledger(&args, &mut notes).await;
    let tag = Uuid::new_v4().simple().to_string()[..8].to_string();
    let mut pool = UserPool::new(&tag);
    pool.ensure_users(&api, 1, 1).await.context("Failed to register the first user")?;
    let probe = Probe { wallet: pool.users[0].usd, token: admin.clone() };
    let query_commits = match &ledger {
        Some(ledger) => calibrate(&api, &probe, ledger).await,
        None => None,
    };
    let mut scenarios = Vec::new();
    for scenario in args.selected() {
        eprintln!("bench load: {}: setting up", scenario.name());
        let setup_started = Instant::now();
        let (workload, wallets) = prepare(scenario, &api, &admin, &mut pool, &args, &tag)
            .await
            .with_context(|| format!("Failed to set up the {} scenario", scenario.name()))?;
        let setup = setup_started.elapsed();
        eprintln!("bench load: {}: setup took {:.1}s; running", scenario.name(), setup.as_secs_f64());
        let context =
            Measuring { api: &api, args: &args, probe: &probe, server: server.as_ref(), ledger: ledger.as_ref() };
        let measured = measure(scenario, &context, workload, query_commits).await;
        scenarios.push(ScenarioReport { wallets, setup_secs: setup.as_secs_f64(), ..measured });
    }
    let baseline = run_baseline(&args, &mut notes).await;
    let ratios = ratios(&scenarios, baseline.as_ref());
    notes.extend(report::DEFINITIONS.iter().map(|d| d.to_string()));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bench-results/load-{}.json", started_at.format("%Y%m%dT%H%M%SZ"))));
    let report = LoadReport {
        started_at,
        finished_at: Utc::now(),
        url: args.url.clone(),
        machine: Machine::describe(),
        settings: Settings::from_args(&args),
        server_pid: server.as_ref().map(|s| s.pid),
        pg_commits_per_query: query_commits,
        scenarios,
        baseline,
        ratios,
        notes,
        out: out.clone(),
    };
    report.write_json(&out)?;
    println!("{}", report.render());
    Ok(report)
}

fn locate_server(args: &LoadArgs, api: &Api, notes: &mut Vec<String>) -> Option<ServerProcess> {
    match ServerProcess::locate(args.server_pid, api.base().port_or_known_default()) {
        Ok(process) => {
            if process.pid == std::process::id() {
                notes.push("the server runs inside the benchmark's process: its CPU time includes the load".into());
            }
            Some(process)
        }
        Err(note) => {
            notes.push(note);
            None
        }
    }
}

async fn connect_ledger(args: &LoadArgs, notes: &mut Vec<String>) -> Option<LedgerDb> {
    let Some(url) = &args.database_url else {
        notes.push("DATABASE_URL is not set: Postgres commits not measured, no baselines".into());
        return None;
    };
    match LedgerDb::connect(url).await {
        Ok(db) => Some(db),
        Err(error) => {
            notes.push(format!("cannot connect to DATABASE_URL ({error}): Postgres commits not measured"));
            None
        }
    }
}

/// Registers, logs in and funds what `scenario` needs (not measured) and returns its
/// workload with the number of wallets it spreads over.
async fn prepare(
    scenario: Scenario,
    api: &Api,
    admin: &Arc<str>,
    pool: &mut UserPool,
    args: &LoadArgs,
    tag: &str,
) -> anyhow::Result<(Workload, usize)> {
    let concurrency = args.concurrency;
    let wallets = match scenario {
        Scenario::Deposits | Scenario::Transfers | Scenario::Purchases => args.wallets,
        Scenario::TransfersHot => HOT_WALLETS,
        Scenario::HotWallet => 1,
    };
    pool.ensure_users(api, wallets, concurrency).await?;
    if matches!(scenario, Scenario::Transfers | Scenario::TransfersHot | Scenario::Purchases) {
        pool.ensure_tokens(api, wallets, concurrency).await?;
        pool.ensure_funded(api, admin, wallets, concurrency).await?;
    }
    let users = &pool.users[..wallets];
    let workload: Workload = match scenario {
        Scenario::Deposits | Scenario::HotWallet => {
            let targets: Vec<Uuid> = users.iter().map(|u| u.usd).collect();
            let (admin, prefix) = (admin.clone(), format!("bench-{tag}-{}", scenario.name()));
            Arc::new(move |n| {
                let wallet = targets[(n % targets.len() as u64) as usize];
                Command {
                    path: format!("/api/v1/wallets/{wallet}/deposits"),
                    token: admin.clone(),
                    body: json!({"amount": DEPOSIT_AMOUNT, "reference": format!("{prefix}-{n}")}),
                    track: Track::Projected,
                }
            })
        }
        Scenario::Transfers | Scenario::TransfersHot => {
            let senders: Vec<(Uuid, Arc<str>)> = users.iter().map(|u| (u.eur, u.token())).collect();
            Arc::new(move |_| {
                let (from, to) = two_distinct(senders.len());
                Command {
                    path: "/api/v1/transfers".into(),
                    token: senders[from].1.clone(),
                    body: json!({"from_wallet_id": senders[from].0, "to_wallet_id": senders[to].0, "amount": TRANSFER_EUR}),
                    track: Track::Saga("/api/v1/transfers"),
                }
            })
        }
        Scenario::Purchases => {
            let listings = pool.listings(api, admin).await?;
            let buyers: Vec<Arc<str>> = users.iter().map(|u| u.token()).collect();
            Arc::new(move |n| Command {
                path: "/api/v1/purchases".into(),
                token: buyers[rand::rng().random_range(0..buyers.len())].clone(),
                body: json!({
                    "announcement_id": listings[(n % LISTINGS as u64) as usize],
                    "quantity": PURCHASE_TONNES,
                    "max_total": PURCHASE_MAX_TOTAL_EUR,
                }),
                track: Track::Saga("/api/v1/purchases"),
            })
        }
    };
    Ok((workload, wallets))
}

/// Two different indexes below `n` (n ≥ 2), uniformly.
fn two_distinct(n: usize) -> (usize, usize) {
    let mut rng = rand::rng();
    let from = rng.random_range(0..n);
    let to = (from + rng.random_range(1..n)) % n;
    (from, to)
}

/// What every scenario is measured with.
struct Measuring<'a> {
    api: &'a Api,
    args: &'a LoadArgs,
    probe: &'a Probe,
    server: Option<&'a ServerProcess>,
    ledger: Option<&'a LedgerDb>,
}

/// The wallet whose query shows how far the read model has got (any wallet would do: every
/// projection's checkpoint moves with the global position), and a token that may read it.
struct Probe {
    wallet: Uuid,
    token: Arc<str>,
}

/// Commits one of the benchmark's GETs causes in the ledger's database (each read-only
/// statement commits too): commits during [`CALIBRATION_QUERIES`] GETs on the idle server, less
/// the idle server's own background rate over the same time.
async fn calibrate(api: &Api, probe: &Probe, ledger: &LedgerDb) -> Option<f64> {
    eprintln!("bench load: calibrating what a query costs in Postgres commits");
    tokio::time::sleep(STATS_SETTLE).await;
    let before_idle = ledger.commits().await?;
    let idle = Instant::now();
    tokio::time::sleep(CALIBRATION_IDLE).await;
    let after_idle = ledger.commits().await?;
    // Each reading is a transaction of its own, counted by the next one.
    let background_per_sec = (after_idle - before_idle - 1) as f64 / idle.elapsed().as_secs_f64();
    let queries = Instant::now();
    let path = format!("/api/v1/wallets/{}", probe.wallet);
    for _ in 0..CALIBRATION_QUERIES {
        api.get(&path, &probe.token).await.ok()?;
    }
    tokio::time::sleep(STATS_SETTLE).await;
    let after_queries = ledger.commits().await?;
    let background = background_per_sec * queries.elapsed().as_secs_f64();
    Some((((after_queries - after_idle - 1) as f64 - background) / f64::from(CALIBRATION_QUERIES)).max(0.0))
}

/// CPU readings taken on both sides of a scenario.
struct CpuReading {
    server: Option<f64>,
    bench: Option<f64>,
    machine: Option<(u64, u64)>,
}

impl CpuReading {
    fn take(server: Option<&ServerProcess>) -> CpuReading {
        CpuReading {
            server: server.and_then(ServerProcess::cpu_seconds),
            bench: ServerProcess::own().cpu_seconds(),
            machine: machine_cpu_ticks(),
        }
    }
}

/// Postgres's counters once every backend has reported its last second.
struct PgReading {
    commits: i64,
    rows: BTreeMap<String, i64>,
}

/// Transactions a [`PgReading`] itself commits (counted by the next reading).
const READING_COMMITS: i64 = 2;

async fn settled_reading(ledger: Option<&LedgerDb>) -> Option<PgReading> {
    let ledger = ledger?;
    tokio::time::sleep(STATS_SETTLE).await;
    Some(PgReading { commits: ledger.commits().await?, rows: ledger.rows_written().await? })
}

/// Runs one scenario's load between readings of CPU times and Postgres's commit counter.
async fn measure(
    scenario: Scenario,
    context: &Measuring<'_>,
    workload: Workload,
    query_commits: Option<f64>,
) -> ScenarioReport {
    let args = context.args;
    let plan = Plan {
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(args.duration_secs),
        requests_max: args.requests_max,
        rate: (args.rate > 0.0).then_some(args.rate),
        completion_timeout: Duration::from_secs(args.completion_timeout_secs),
        probe_wallet: context.probe.wallet,
        probe_token: context.probe.token.clone(),
    };
    let pg_before = settled_reading(context.ledger).await;
    let cpu_before = CpuReading::take(context.server);
    let samples = drive::drive(context.api, &plan, workload).await;
    let cpu_after = CpuReading::take(context.server);
    let memory_after = context.server.and_then(ServerProcess::memory_mib);
    let pg_after = settled_reading(context.ledger).await;
    let completed = samples.completed;
    let delta = |before: Option<f64>, after: Option<f64>| before.zip(after).map(|(b, a)| a - b);
    let machine_cpu_busy = cpu_before
        .machine
        .zip(cpu_after.machine)
        .and_then(|((b0, t0), (b1, t1))| (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64));
    let server_cpu_secs = delta(cpu_before.server, cpu_after.server);
    let pg = pg_before.zip(pg_after);
    let pg_commits = pg.as_ref().map(|(before, after)| after.commits - before.commits - READING_COMMITS);
    let pg_commits_net = pg_commits.zip(query_commits).map(|(all, per)| all as f64 - per * samples.queries as f64);
    let per_completed = |total: f64| (completed > 0).then(|| total / completed as f64);
    ScenarioReport {
        scenario,
        wallets: 0,
        concurrency: args.concurrency,
        setup_secs: 0.0,
        sent: samples.sent,
        accepted: samples.accepted,
        completed,
        sending_secs: samples.sending.as_secs_f64(),
        completing_secs: samples.completing.as_secs_f64(),
        accepted_per_sec: per_second(samples.accepted, samples.sending),
        completed_per_sec: per_second(completed, samples.completing),
        acceptance: Latency::from_samples(&samples.acceptance),
        completion: Latency::from_samples(&samples.completion),
        projection_lag: Latency::from_samples(&samples.lag),
        errors: samples.errors,
        poll_errors: samples.poll_errors,
        queries: samples.queries,
        server_cpu_secs,
        server_cpu_ms_per_completed: server_cpu_secs.and_then(|cpu| per_completed(cpu * 1000.0)),
        server_rss_mib: memory_after.map(|(now, _)| now),
        server_rss_peak_mib: memory_after.map(|(_, peak)| peak),
        bench_cpu_secs: delta(cpu_before.bench, cpu_after.bench),
        machine_cpu_busy,
        pg_commits,
        pg_commits_per_completed: pg_commits.and_then(|commits| per_completed(commits as f64)),
        pg_commits_net_per_completed: pg_commits_net.and_then(per_completed),
        rows_written_per_completed: pg.map(|(before, after)| rows_per(&before.rows, &after.rows, completed)),
    }
}

/// Rows written per command done, by table, for the tables that were written.
fn rows_per(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>, completed: u64) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(table, rows)| (table, rows - before.get(table).copied().unwrap_or(0)))
        .filter(|(_, written)| *written > 0 && completed > 0)
        .map(|(table, written)| (table.clone(), written as f64 / completed as f64))
        .collect()
}

async fn run_baseline(args: &LoadArgs, notes: &mut Vec<String>) -> Option<BaselineReport> {
    if !args.baseline() {
        notes.push("baselines skipped (--no-baseline)".into());
        return None;
    }
    let database_url = args.database_url.clone()?;
    eprintln!("bench load: pgbench baselines ({} s each, after -i -s {})", args.baseline_secs, args.baseline_scale);
    let settings = BaselineSettings {
        database_url,
        database: args.baseline_database.clone(),
        scale: args.baseline_scale,
        clients: args.concurrency,
        duration: Duration::from_secs(args.baseline_secs),
    };
    match baseline::run_baselines(&settings).await {
        Ok(report) => Some(report),
        Err(error) => {
            notes.push(format!("baselines not run: {error:#}"));
            None
        }
    }
}

/// Each rate over its baseline: deposits and transfers against TPC-B-like transactions, the
/// hot wallet against the hot row.
fn ratios(scenarios: &[ScenarioReport], baseline: Option<&BaselineReport>) -> Vec<Ratio> {
    let Some(baseline) = baseline else { return Vec::new() };
    scenarios
        .iter()
        .filter_map(|s| {
            let (name, tps) = match s.scenario {
                Scenario::Deposits | Scenario::Transfers => ("tpcb-like", baseline.tpcb_like_tps),
                Scenario::HotWallet => ("hot-row", baseline.hot_row_tps),
                Scenario::TransfersHot | Scenario::Purchases => return None,
            };
            Some(Ratio {
                scenario: s.scenario,
                baseline: name,
                baseline_tps: tps,
                accepted: ratio(s.accepted_per_sec, tps),
                completed: ratio(s.completed_per_sec, tps),
            })
        })
        .collect()
}
