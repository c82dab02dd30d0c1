//! What the benchmark reads besides HTTP answers: the server process's CPU time from
//! `/proc`, Postgres's commit counter, and a description of the machine.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// Clock ticks per second of `/proc/<pid>/stat` when `getconf CLK_TCK` cannot tell.
const CLOCK_TICKS_DEFAULT: f64 = 100.0;
/// `st` of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// A process whose CPU time is measured: the server's, or the benchmark's own.
pub struct ServerProcess {
    pub pid: u32,
    ticks_per_second: f64,
}

impl ServerProcess {
    /// The process given, or the one listening on `port`; `Err` says why there is none.
    pub fn locate(pid: Option<u32>, port: Option<u16>) -> Result<ServerProcess, String> {
        let pid = match (pid, port) {
            (Some(pid), _) => pid,
            (None, Some(port)) => listening_pid(port).ok_or_else(|| {
                format!("no process of ours listens on port {port} (pass --server-pid): server CPU not measured")
            })?,
            (None, None) => return Err("the URL has no port: server CPU not measured".to_string()),
        };
        let process = ServerProcess { pid, ticks_per_second: ticks_per_second() };
        match process.cpu_seconds() {
            Some(_) => Ok(process),
            None => Err(format!("cannot read /proc/{pid}/stat: server CPU not measured")),
        }
    }

    /// The benchmark's own process.
    pub fn own() -> ServerProcess {
        ServerProcess { pid: std::process::id(), ticks_per_second: ticks_per_second() }
    }

    /// User plus system CPU seconds the process has used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // The command name (field 2) may hold spaces; the fields after it start at field 3.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / self.ticks_per_second)
    }
}

impl ServerProcess {
    /// Resident memory now (`VmRSS`) and at its highest so far (`VmHWM`), in MiB.
    pub fn memory_mib(&self) -> Option<(f64, f64)> {
        let [rss, peak] = crate::growth::memory_kib_of(&self.pid.to_string(), &["VmRSS:", "VmHWM:"])?;
        Some((rss as f64 / 1024.0, peak as f64 / 1024.0))
    }
}

fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(CLOCK_TICKS_DEFAULT)
}

/// The process holding the socket that listens on `port`: its inode from `/proc/net/tcp{,6}`,
/// then the process whose `/proc/<pid>/fd` links to `socket:[inode]` (only processes we may
/// inspect: our own user's, or all as root).
pub fn listening_pid(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|inode| format!("socket:[{inode}]")).collect();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let holds = std::fs::read_dir(entry.path().join("fd"))
            .ok()?
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| wanted.iter().any(|w| Path::new(w) == target)));
        holds.then_some(pid)
    })
}

/// Inodes of the sockets listening on `port` in one `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *fields.get(3)? == TCP_LISTEN).then(|| fields.get(9).map(|s| s.to_string()))?
        })
        .filter(|inode| inode != "0")
        .collect()
}

/// Busy and total CPU time of the whole machine so far, in clock ticks (`/proc/stat`): busy is
/// everything but idle and iowait.
pub fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user and nice]
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// The ledger's database, for its commit counter.
pub struct LedgerDb {
    pool: PgPool,
}

impl LedgerDb {
    pub async fn connect(url: &str) -> anyhow::Result<LedgerDb> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        Ok(LedgerDb { pool })
    }

    /// Transactions committed in this database so far (`pg_stat_database.xact_commit`; backends
    /// report theirs at most once a second, hence the settling pause around a measurement).
    pub async fn commits(&self) -> Option<i64> {
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            .fetch_one(&self.pool)
            .await
            .ok()
    }

    /// Rows inserted, updated or deleted so far, by table (`pg_stat_user_tables`; reported with
    /// the same delay as commits).
    pub async fn rows_written(&self) -> Option<BTreeMap<String, i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT relname::text, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables \
             WHERE schemaname = current_schema()",
        )
        .fetch_all(&self.pool)
        .await
        .ok()?;
        Some(rows.into_iter().collect())
    }
}

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub hostname: Option<String>,
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub kernel: Option<String>,
    pub memory_gib: Option<f64>,
}

impl Machine {
    pub fn describe() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string());
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let meminfo = read("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string())
        };
        Machine {
            hostname: read("/proc/sys/kernel/hostname"),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name"),
            kernel: read("/proc/sys/kernel/osrelease"),
            memory_gib: field(&meminfo, "MemTotal")
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
                .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_by_port_and_state() {
        let table =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n\
            1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1\n\
            2: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4444 1\n";
        assert_eq!(listening_inodes(table, 8080), vec!["4242".to_string()]);
        assert!(listening_inodes(table, 9999).is_empty());
    }

    #[test]
    fn the_machine_has_been_busy_for_part_of_its_time() {
        let (busy, total) = machine_cpu_ticks().expect("/proc/stat");
        assert!(busy <= total && total > 0);
    }

    #[test]
    fn our_own_cpu_time_is_readable() {
        let process = ServerProcess::locate(Some(std::process::id()), None).expect("our own stat");
        assert!(process.cpu_seconds().expect("cpu seconds") >= 0.0);
    }
}
