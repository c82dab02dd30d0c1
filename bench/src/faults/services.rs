//! Private Postgres and NATS instances on free ports, in temporary directories, for fault runs
//! that stop and restart them (DESIGN.md section 7: never the shared services). Each stops its
//! processes and removes its directory when dropped, also when a run fails.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// How long a service may take to accept connections after a start.
pub const SERVICE_READY_DEADLINE: Duration = Duration::from_secs(30);
/// `pg_ctl -t`: seconds pg_ctl waits for a start or stop.
const PG_CTL_WAIT_SECS: &str = "30";
/// Postgres connections the private cluster accepts: a server pool (32) and its restarts.
const PG_CONNECTIONS_MAX: &str = "200";
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// The database the ledger uses on the private cluster.
pub const DATABASE: &str = "ecoledger";

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").context("Failed to bind a free port")?.local_addr()?.port())
}

/// A fresh directory under the system's temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(stem: &str) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("ecoledger-{stem}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).with_context(|| format!("Failed to create {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Polls until `address` accepts TCP connections, or fails at the deadline.
async fn wait_for_port(address: &str, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(address).await.is_err() {
        if started.elapsed() > SERVICE_READY_DEADLINE {
            bail!("{what} did not accept connections on {address} within {SERVICE_READY_DEADLINE:?}");
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    Ok(())
}

/// The directory of `initdb` and `pg_ctl`: `ECOLEDGER_PG_BIN`, else the highest
/// `/usr/lib/postgresql/<major>/bin` that has both (scripts/pg-bin.sh).
pub fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ECOLEDGER_PG_BIN").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("No ECOLEDGER_PG_BIN and no /usr/lib/postgresql (install postgresql)")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).context("No /usr/lib/postgresql/*/bin with initdb and pg_ctl")
}

/// A private Postgres cluster: `initdb` into a temp dir, `pg_ctl start` on a free port with
/// its socket in that dir. As root (initdb and pg_ctl refuse root) it runs as the `postgres`
/// OS user, with the directory chowned to it.
pub struct PrivatePostgres {
    pub port: u16,
    bin: PathBuf,
    dir: TempDir,
    as_postgres_user: bool,
    running: bool,
}

impl PrivatePostgres {
    pub async fn start(bin: &Path) -> anyhow::Result<PrivatePostgres> {
        let dir = TempDir::new("faults-pg")?;
        let as_postgres_user = std::fs::metadata(&dir.path)?.uid() == 0;
        let mut pg =
            PrivatePostgres { port: free_port()?, bin: bin.to_path_buf(), dir, as_postgres_user, running: false };
        if as_postgres_user {
            let status = Command::new("chown").arg("postgres:").arg(&pg.dir.path).status().await?;
            if !status.success() {
                bail!("chown postgres {} failed: {status}", pg.dir.path.display());
            }
        }
        let data = pg.data_dir();
        let args = ["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"];
        pg.run_tool("initdb", &args).await?;
        pg.resume().await?;
        pg.create_database().await?;
        Ok(pg)
    }

    /// The ledger database's URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    fn data_dir(&self) -> String {
        self.dir.path.join("data").display().to_string()
    }

    /// `pg_ctl start` on the same port and data directory; returns once it accepts connections.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections={PG_CONNECTIONS_MAX}",
            self.port,
            self.dir.path.display()
        );
        let log = self.dir.path.join("postgres.log").display().to_string();
        let data = self.data_dir();
        self.run_tool("pg_ctl", &["-D", &data, "-o", &options, "-l", &log, "-t", PG_CTL_WAIT_SECS, "-w", "start"])
            .await?;
        self.running = true;
        wait_for_port(&format!("127.0.0.1:{}", self.port), "private Postgres").await
    }

    /// `pg_ctl stop -m fast`: sessions are terminated, the cluster shuts down cleanly.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let data = self.data_dir();
        self.run_tool("pg_ctl", &["-D", &data, "-m", "fast", "-t", PG_CTL_WAIT_SECS, "-w", "stop"]).await?;
        self.running = false;
        Ok(())
    }

    async fn create_database(&self) -> anyhow::Result<()> {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut conn = PgConnection::connect(&url).await.context("Failed to connect to the private Postgres")?;
        sqlx::query(&format!("CREATE DATABASE {DATABASE}")).execute(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }

    fn tool(&self, tool: &str) -> std::process::Command {
        let program = self.bin.join(tool);
        if self.as_postgres_user {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            std::process::Command::new(program)
        }
    }

    async fn run_tool(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut command = Command::from(self.tool(tool));
        let output = command.args(args).stdin(Stdio::null()).output().await.with_context(|| format!("{tool} runs"))?;
        if !output.status.success() {
            bail!("{tool} {} failed ({}): {}", args.join(" "), output.status, String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir();
            let _ = self
                .tool("pg_ctl")
                .args(["-D", &data, "-m", "immediate", "-t", PG_CTL_WAIT_SECS, "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A private `nats-server -js` on a free port with its own store directory.
pub struct PrivateNats {
    pub port: u16,
    store: TempDir,
    child: Option<Child>,
}

impl PrivateNats {
    pub async fn start() -> anyhow::Result<PrivateNats> {
        let mut nats = PrivateNats { port: free_port()?, store: TempDir::new("faults-nats")?, child: None };
        nats.resume().await?;
        Ok(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and store directory.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("Failed to start nats-server (install the nats-server package)")?;
        self.child = Some(child);
        wait_for_port(&format!("127.0.0.1:{}", self.port), "private NATS").await
    }

    /// SIGKILL: what a crash or a lost host looks like to clients.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("Failed to stop nats-server")?;
        }
        Ok(())
    }
}
