//! Same-run Postgres baselines with pgbench: what the Postgres server under the ledger does
//! with the same client count, over the same kind of connection (host, port, user and
//! `sslmode` from DATABASE_URL: TLS on loopback alone changes throughput by about 30 %,
//! DESIGN.md section 8), in a database of its own.

use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use tokio::process::Command;

/// The hot-row script: every transaction updates the same row, like deposits into one wallet.
const HOT_ROW_SQL: &str = "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1;\n";
/// pgbench worker threads (`-j`): the machine's two cores.
const THREADS_MAX: usize = 2;

#[derive(Debug, Clone)]
pub struct BaselineSettings {
    /// The ledger's DATABASE_URL: the server, user and sslmode to use.
    pub database_url: String,
    /// The database pgbench fills and runs in (created if missing, re-initialised each run).
    pub database: String,
    pub scale: u32,
    pub clients: usize,
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    pub pgbench_version: String,
    pub database: String,
    pub sslmode: String,
    pub scale: u32,
    pub clients: usize,
    pub threads: usize,
    pub seconds: u64,
    /// `pgbench -c C -j J -T S -n` (the built-in TPC-B-like script).
    pub tpcb_like_tps: f64,
    /// `pgbench -c C -j J -T S -n -f hot-row.sql`.
    pub hot_row_tps: f64,
}

/// Initialises the baseline database and runs both pgbench workloads.
pub async fn run_baselines(settings: &BaselineSettings) -> anyhow::Result<BaselineReport> {
    let version = pgbench_version().await?;
    let env = PgEnv::from_url(&settings.database_url)?;
    create_database(&settings.database_url, &settings.database).await?;
    let threads = settings.clients.clamp(1, THREADS_MAX);
    let seconds = settings.duration.as_secs().max(1);
    let database = settings.database.as_str();
    pgbench(&env, &["-i", "-q", "-s", &settings.scale.to_string(), database]).await?;
    let run = ["-c", &settings.clients.to_string(), "-j", &threads.to_string(), "-T", &seconds.to_string(), "-n"];
    let tpcb_like_tps = parse_tps(&pgbench(&env, &[&run[..], &[database]].concat()).await?)?;
    let scripts = tempdir()?;
    let script = scripts.join("hot-row.sql");
    std::fs::write(&script, HOT_ROW_SQL).context("Failed to write the hot-row script")?;
    let hot =
        pgbench(&env, &[&run[..], &["-f", script.to_str().context("a UTF-8 temp path")?, database]].concat()).await;
    let _ = std::fs::remove_dir_all(&scripts);
    Ok(BaselineReport {
        pgbench_version: version,
        database: settings.database.clone(),
        sslmode: env.sslmode,
        scale: settings.scale,
        clients: settings.clients,
        threads,
        seconds,
        tpcb_like_tps,
        hot_row_tps: parse_tps(&hot?)?,
    })
}

/// The first `tps = N` of pgbench's output (PostgreSQL 15 prints one, older versions two).
pub fn parse_tps(output: &str) -> anyhow::Result<f64> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .with_context(|| format!("no `tps = ` line in pgbench's output:\n{output}"))
}

/// libpq's environment for the server of DATABASE_URL.
struct PgEnv {
    vars: Vec<(&'static str, String)>,
    sslmode: String,
}

impl PgEnv {
    fn from_url(url: &str) -> anyhow::Result<PgEnv> {
        let options = PgConnectOptions::from_str(url).context("Failed to parse DATABASE_URL")?;
        let sslmode = match options.get_ssl_mode() {
            PgSslMode::Disable => "disable",
            PgSslMode::Allow => "allow",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        }
        .to_string();
        let host = match options.get_socket() {
            Some(socket) => socket.to_string_lossy().into_owned(),
            None => options.get_host().to_string(),
        };
        let mut vars = vec![
            ("PGHOST", host),
            ("PGPORT", options.get_port().to_string()),
            ("PGUSER", options.get_username().to_string()),
            ("PGSSLMODE", sslmode.clone()),
        ];
        let password = reqwest::Url::parse(url).ok().and_then(|u| u.password().map(percent_decode));
        if let Some(password) = password {
            vars.push(("PGPASSWORD", password));
        }
        Ok(PgEnv { vars, sslmode })
    }
}

/// Decodes `%XX` escapes of a URL's user-info part.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn pgbench_version() -> anyhow::Result<String> {
    let output = Command::new("pgbench").arg("--version").output().await;
    match output {
        Ok(output) if output.status.success() => Ok(String::from_utf8_lossy(&output.stdout).trim().to_string()),
        Ok(output) => bail!("pgbench --version failed: {}", String::from_utf8_lossy(&output.stderr)),
        Err(error) => bail!("pgbench is not on PATH ({error}); install postgresql-contrib or pass --no-baseline"),
    }
}

/// Runs pgbench with libpq's environment; its stdout and stderr together (progress and
/// results go to either, depending on the version).
async fn pgbench(env: &PgEnv, args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new("pgbench");
    command.args(args).stdin(Stdio::null());
    for name in ["PGDATABASE", "PGSERVICE", "PGOPTIONS"] {
        command.env_remove(name);
    }
    command.envs(env.vars.iter().map(|(name, value)| (*name, value.as_str())));
    let output = command.output().await.context("Failed to run pgbench")?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("pgbench {} failed:\n{text}", args.join(" "));
    }
    Ok(text)
}

/// Creates `database` on the server of `url` unless it exists.
async fn create_database(url: &str, database: &str) -> anyhow::Result<()> {
    if database.is_empty() || !database.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        bail!("the baseline database name {database:?} must be lower-case letters, digits and '_'");
    }
    let options = PgConnectOptions::from_str(url).context("Failed to parse DATABASE_URL")?.database("postgres");
    let admin = PgPoolOptions::new().max_connections(1).connect_with(options).await.context("Failed to connect")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(&admin)
        .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&admin)
            .await
            .with_context(|| format!("Failed to create database {database}"))?;
    }
    admin.close().await;
    Ok(())
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("ecoledger-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).context("Failed to create a temporary directory")?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tps_is_read_from_pgbench_15_and_older_outputs() {
        let v15 = "number of failed transactions: 0 (0.000%)\nlatency average = 16.3 ms\n\
                   initial connection time = 12.345 ms\ntps = 981.223456 (without initial connection time)\n";
        assert_eq!(parse_tps(v15).unwrap(), 981.223456);
        let v13 =
            "tps = 512.5 (including connections establishing)\ntps = 530.1 (excluding connections establishing)\n";
        assert_eq!(parse_tps(v13).unwrap(), 512.5);
        assert!(parse_tps("pgbench: error: connection failed").is_err());
    }

    #[test]
    fn libpq_environment_follows_the_database_url() {
        let env = PgEnv::from_url("postgres://bench:p%40ss@db.local:5433/ledger?sslmode=require").unwrap();
        let get = |name: &str| env.vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        assert_eq!(get("PGHOST").as_deref(), Some("db.local"));
        assert_eq!(get("PGPORT").as_deref(), Some("5433"));
        assert_eq!(get("PGUSER").as_deref(), Some("bench"));
        assert_eq!(get("PGSSLMODE").as_deref(), Some("require"));
        assert_eq!(get("PGPASSWORD").as_deref(), Some("p@ss"));
        let default = PgEnv::from_url("postgres://postgres@127.0.0.1:5432/ecoledger").unwrap();
        assert_eq!(default.sslmode, "prefer", "libpq's and sqlx's default alike");
    }
}
