//! The report: JSON for machines, Markdown tables for people (pasteable into BENCHMARKS.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::baseline::BaselineReport;
use super::stats::{ErrorCounts, Latency};
use super::system::Machine;
use super::{LoadArgs, Scenario};

/// What the figures mean; copied into every report's notes.
pub const DEFINITIONS: [&str; 5] = [
    "accepted/s: 201/202 answers per second while the clients were sending (each client sends its next command \
     on the answer; at most 4 per client may be accepted and not yet seen done); done/s: commands seen done per \
     second from the first command sent to the last one seen done",
    "projection lag: from the 201/202 to a read-model query answering a Ledger-Position at or past the \
     command's position (one watcher polls GET /wallets/{id} every 5 ms; every projection's checkpoint moves \
     with the global position), so it includes up to 5 ms of polling and one HTTP round trip",
    "done: a deposit when projected (its projection lag); a transfer or purchase when \
     GET /transfers|purchases/{id} shows completed, polled from the moment it is projected (first with \
     ?min_position=<its position>) every 5 ms backing off to 50 ms",
    "PG commits/done: pg_stat_database.xact_commit delta of the ledger database during the scenario (background \
     work included) over commands done; net: less the commits of the benchmark's own GETs, each costing what a \
     calibration on the idle server measured",
    "CPU: utime+stime of the server process (and of the load generator, which shares the machine) during the \
     scenario; machine busy: share of all cores not idle, from /proc/stat",
];

/// Tables listed per scenario in the rows-written summary.
const ROWS_TABLES_SHOWN: usize = 6;

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub url: String,
    pub machine: Machine,
    pub settings: Settings,
    pub server_pid: Option<u32>,
    /// Commits one of the benchmark's GETs costs the ledger's database (calibrated at start).
    pub pg_commits_per_query: Option<f64>,
    pub scenarios: Vec<ScenarioReport>,
    pub baseline: Option<BaselineReport>,
    pub ratios: Vec<Ratio>,
    pub notes: Vec<String>,
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub scenarios: Vec<Scenario>,
    pub concurrency: usize,
    pub duration_secs: f64,
    pub requests_max: u64,
    /// Commands per second at most (`None`: as fast as answers come).
    pub rate: Option<f64>,
    pub wallets: usize,
    pub completion_timeout_secs: u64,
    pub baseline: bool,
    pub baseline_secs: u64,
    pub baseline_scale: u32,
}

impl Settings {
    pub fn from_args(args: &LoadArgs) -> Settings {
        Settings {
            scenarios: args.selected(),
            concurrency: args.concurrency,
            duration_secs: args.duration_secs,
            requests_max: args.requests_max,
            rate: (args.rate > 0.0).then_some(args.rate),
            wallets: args.wallets,
            completion_timeout_secs: args.completion_timeout_secs,
            baseline: args.baseline(),
            baseline_secs: args.baseline_secs,
            baseline_scale: args.baseline_scale,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    /// Wallets the commands were spread over.
    pub wallets: usize,
    pub concurrency: usize,
    /// Registering, logging in, funding, listing: not measured.
    pub setup_secs: f64,
    pub sent: u64,
    pub accepted: u64,
    /// Seen done in the read model (sagas: `completed`; deposits: projected).
    pub completed: u64,
    pub sending_secs: f64,
    pub completing_secs: f64,
    pub accepted_per_sec: f64,
    pub completed_per_sec: f64,
    /// Sending a command until its 201/202.
    pub acceptance: Latency,
    /// Sending a command until it was seen done.
    pub completion: Latency,
    pub projection_lag: Latency,
    pub errors: ErrorCounts,
    pub poll_errors: ErrorCounts,
    /// GETs the benchmark sent to see commands done.
    pub queries: u64,
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_ms_per_completed: Option<f64>,
    /// The server's resident memory right after the load (`VmRSS`), MiB.
    pub server_rss_mib: Option<f64>,
    /// The server's highest resident memory since it started (`VmHWM`), MiB: setup included.
    pub server_rss_peak_mib: Option<f64>,
    /// The load generator's own CPU time (it shares the machine).
    pub bench_cpu_secs: Option<f64>,
    /// Busy share of all the machine's cores while the scenario ran (0 to 1).
    pub machine_cpu_busy: Option<f64>,
    /// `xact_commit` delta of the ledger database.
    pub pg_commits: Option<i64>,
    pub pg_commits_per_completed: Option<f64>,
    /// The same, less the commits of the benchmark's own GETs (queries × pg_commits_per_query).
    pub pg_commits_net_per_completed: Option<f64>,
    /// Rows inserted, updated or deleted per command done, by table (`pg_stat_user_tables`).
    pub rows_written_per_completed: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub scenario: Scenario,
    pub baseline: &'static str,
    pub baseline_tps: f64,
    /// accepted/s ÷ baseline tps.
    pub accepted: Option<f64>,
    /// completed/s ÷ baseline tps.
    pub completed: Option<f64>,
}

fn num(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn errors(counts: &ErrorCounts) -> String {
    match counts.is_empty() {
        true => "none".to_string(),
        false => counts.iter().map(|(code, n)| format!("{code} {n}")).collect::<Vec<_>>().join(", "),
    }
}

impl LoadReport {
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("Failed to create {}", parent.display()))?;
        }
        let json = serde_json::to_string_pretty(self).context("Failed to encode the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("Failed to write {}", path.display()))
    }

    /// The tables and notes as Markdown.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n## Load: {} against {}\n", self.started_at.format("%Y-%m-%d %H:%M UTC"), self.url);
        if let Some(rate) = self.settings.rate {
            let _ = writeln!(out, "Paced at {rate:.0} commands/s at most (`--rate`).\n");
        }
        self.render_rates(&mut out);
        self.render_latencies(&mut out);
        self.render_baseline(&mut out);
        let _ = writeln!(out, "Errors (commands refused or failed; poll answers other than 200 apart):\n");
        for s in &self.scenarios {
            let _ = writeln!(out, "- {}: {}; polls: {}", s.scenario.name(), errors(&s.errors), errors(&s.poll_errors));
        }
        self.render_rows(&mut out);
        let _ = writeln!(out, "\nNotes:\n");
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        if let Some(per_query) = self.pg_commits_per_query {
            let _ = writeln!(out, "- calibrated: one of the benchmark's GETs costs {per_query:.2} Postgres commits");
        }
        let _ = writeln!(out, "\nJSON: {}", self.out.display());
        out
    }

    fn render_rates(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| scenario | wallets | accepted | accepted/s | done | done/s | server CPU s | CPU ms/done | \
             server RSS MiB | peak so far | bench CPU s | machine busy | PG commits/done | net of our GETs |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for s in &self.scenarios {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.scenario.name(),
                s.wallets,
                s.accepted,
                s.accepted_per_sec,
                s.completed,
                s.completed_per_sec,
                num(s.server_cpu_secs, 1),
                num(s.server_cpu_ms_per_completed, 2),
                num(s.server_rss_mib, 0),
                num(s.server_rss_peak_mib, 0),
                num(s.bench_cpu_secs, 1),
                s.machine_cpu_busy.map_or_else(|| "-".to_string(), |busy| format!("{:.0} %", busy * 100.0)),
                num(s.pg_commits_per_completed, 1),
                num(s.pg_commits_net_per_completed, 1),
            );
        }
        out.push('\n');
    }

    /// The tables written most per command done, for each scenario.
    fn render_rows(&self, out: &mut String) {
        let measured: Vec<_> =
            self.scenarios.iter().filter_map(|s| s.rows_written_per_completed.as_ref().map(|r| (s, r))).collect();
        if measured.is_empty() {
            return;
        }
        let _ = writeln!(out, "\nRows written per command done (top {ROWS_TABLES_SHOWN} tables):\n");
        for (s, rows) in measured {
            let mut top: Vec<(&String, &f64)> = rows.iter().collect();
            top.sort_by(|a, b| b.1.total_cmp(a.1));
            let shown: Vec<String> =
                top.iter().take(ROWS_TABLES_SHOWN).map(|(table, n)| format!("{table} {n:.1}")).collect();
            let total: f64 = rows.values().sum();
            let _ = writeln!(out, "- {}: {total:.1} in all; {}", s.scenario.name(), shown.join(", "));
        }
    }

    fn render_latencies(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| scenario (ms) | accept p50 | p95 | p99 | max | done p50 | p95 | p99 | max | lag p50 | lag p99 |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for s in &self.scenarios {
            let (a, c, l) = (&s.acceptance, &s.completion, &s.projection_lag);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.scenario.name(),
                num(a.p50_ms, 1),
                num(a.p95_ms, 1),
                num(a.p99_ms, 1),
                num(a.max_ms, 1),
                num(c.p50_ms, 1),
                num(c.p95_ms, 1),
                num(c.p99_ms, 1),
                num(c.max_ms, 1),
                num(l.p50_ms, 1),
                num(l.p99_ms, 1),
            );
        }
        out.push('\n');
    }

    fn render_baseline(&self, out: &mut String) {
        let Some(b) = &self.baseline else { return };
        let _ = writeln!(
            out,
            "pgbench ({}, sslmode={}, -s {}, -c {} -j {} -T {} -n): tpcb-like {:.1} tps, hot-row {:.1} tps\n",
            b.pgbench_version, b.sslmode, b.scale, b.clients, b.threads, b.seconds, b.tpcb_like_tps, b.hot_row_tps
        );
        let _ = writeln!(out, "| scenario | baseline | baseline tps | accepted/s ÷ baseline | done/s ÷ baseline |");
        let _ = writeln!(out, "|---|---|---:|---:|---:|");
        for r in &self.ratios {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {} | {} |",
                r.scenario.name(),
                r.baseline,
                r.baseline_tps,
                num(r.accepted, 3),
                num(r.completed, 3)
            );
        }
        out.push('\n');
    }
}
