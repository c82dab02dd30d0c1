//! The `ecoledger` binary as a child process on a fixed port, so clients keep their address
//! across a SIGKILL and a restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// How long `ecoledger serve` may take to listen.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);
/// What `serve` prints on stdout once bound.
const LISTENING: &str = "ecoledger listening on ";
/// The admin the load deposits as.
pub const ADMIN_USERNAME: &str = "faults-admin";

/// How to run the binary: everything `serve` and `admin create` read from the environment.
#[derive(Debug, Clone)]
pub struct LedgerEnv {
    pub binary: PathBuf,
    pub database_url: String,
    pub nats_url: String,
    pub http_port: u16,
    pub jwt_secret: String,
    pub nats_prefix: String,
    /// The server's stderr is appended here.
    pub log: PathBuf,
}

impl LedgerEnv {
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env("DATABASE_URL", &self.database_url)
            .env("NATS_URL", &self.nats_url)
            .env("ECOLEDGER_HTTP_ADDR", format!("127.0.0.1:{}", self.http_port))
            .env("ECOLEDGER_JWT_SECRET", &self.jwt_secret)
            .env("ECOLEDGER_NATS_PREFIX", &self.nats_prefix)
            .env("ECOLEDGER_LOG", "warn")
            .kill_on_drop(true);
        command
    }

    fn log_file(&self) -> anyhow::Result<std::fs::File> {
        std::fs::File::options().create(true).append(true).open(&self.log).context("Failed to open the server log")
    }

    /// `ecoledger admin create`, the password on stdin.
    pub async fn create_admin(&self, password: &str) -> anyhow::Result<()> {
        let mut child = self
            .command()
            .args(["admin", "create", "--username", ADMIN_USERNAME, "--email", "faults-admin@example.org"])
            .args(["--role", "admin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(self.log_file()?)
            .spawn()
            .context("Failed to run ecoledger admin create")?;
        let mut stdin = child.stdin.take().context("piped stdin")?;
        stdin.write_all(password.as_bytes()).await?;
        drop(stdin);
        let status = child.wait().await?;
        if !status.success() {
            bail!("ecoledger admin create failed ({status}); see {}", self.log.display());
        }
        Ok(())
    }
}

/// A running `ecoledger serve`.
pub struct LedgerProcess {
    child: Child,
}

impl LedgerProcess {
    /// Starts `serve` and returns once it printed that it listens.
    pub async fn start(env: &LedgerEnv) -> anyhow::Result<LedgerProcess> {
        let mut child = env
            .command()
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(env.log_file()?)
            .spawn()
            .with_context(|| format!("Failed to start {}", env.binary.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("piped stdout")?).lines();
        let listening = tokio::time::timeout(LISTEN_DEADLINE, async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with(LISTENING) {
                    return anyhow::Ok(true);
                }
            }
            Ok(false)
        })
        .await;
        match listening {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!("ecoledger serve exited before listening; see {}", env.log.display()),
            Ok(Err(error)) => return Err(error.context("Failed to read the server's stdout")),
            Err(_) => bail!("ecoledger serve did not listen within {LISTEN_DEADLINE:?}"),
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(LedgerProcess { child })
    }

    /// SIGKILL, and reap the process.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("Failed to SIGKILL the server")
    }
}

/// The last `lines` lines of a log file (for a failure's report).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
