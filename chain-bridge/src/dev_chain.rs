//! A real local Ethereum chain for development and tests: anvil, the binary that the npm package
//! `@foundry-rs/anvil` installs from its platform package `@foundry-rs/anvil-<os>-<arch>`.
//! `chain-bridge/package.json` depends on `@foundry-rs/anvil-linux-amd64` directly (pinned in
//! `package-lock.json`, installed by `make chain-tools`): the wrapper package's optional
//! dependencies name every platform, and a registry that serves only some of them leaves a lock
//! that `npm ci` refuses. Elsewhere, set [`ANVIL_BIN_ENV`]. No other chain stands in for it.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::reqwest::Url;

use crate::contracts::EVM_VERSION;

/// Overrides where the anvil binary is found (default: the npm platform package under
/// `chain-bridge/node_modules`).
pub const ANVIL_BIN_ENV: &str = "ECOLEDGER_ANVIL_BIN";
/// How long anvil may take to open its RPC port (it needs about 0.1 s; a loaded test machine more).
pub const READY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// How long anvil may take to write its state and exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two looks at the log or the RPC port while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Ether given to a key from [`DevChain::funded_key`].
const FUNDED_KEY_WEI: u128 = 1_000 * 1_000_000_000_000_000_000;
/// Bytes of anvil's log quoted in an error.
const LOG_TAIL_BYTES: usize = 2_000;
/// Anvil's log and state files inside the state directory.
const LOG_FILE: &str = "anvil.log";
const STATE_FILE: &str = "anvil-state.json";
/// The line anvil prints once its RPC port is open.
const LISTENING_PREFIX: &str = "Listening on ";

/// What [`DevChain::start`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DevChainError {
    #[error("anvil not found at {0} (run `make chain-tools`, or set {ANVIL_BIN_ENV})")]
    AnvilNotFound(PathBuf),
    #[error("no anvil npm package for {os}/{arch} (set {ANVIL_BIN_ENV})")]
    UnsupportedPlatform { os: &'static str, arch: &'static str },
    #[error("failed to {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("anvil exited ({status}) before it was ready; its log ends with:\n{log_tail}")]
    Exited { status: ExitStatus, log_tail: String },
    #[error("anvil was not ready within {timeout:?}; its log ends with:\n{log_tail}")]
    NotReady { timeout: Duration, log_tail: String },
    #[error("anvil RPC call failed: {0}")]
    Rpc(#[from] alloy::transports::TransportError),
}

/// How to run the dev chain.
#[derive(Debug, Clone)]
pub struct DevChainConfig {
    /// Where anvil keeps its state (`anvil-state.json`, loaded at start and written at stop)
    /// and its log (`anvil.log`). Created when missing.
    pub state_dir: PathBuf,
    /// Mine a block every this long (`--block-time`); `None` mines one per transaction.
    pub block_time: Option<Duration>,
    /// The anvil binary; `None` looks at [`ANVIL_BIN_ENV`], then the npm platform package.
    pub anvil_bin: Option<PathBuf>,
    /// How long to wait for the RPC port.
    pub ready_timeout: Duration,
}

impl DevChainConfig {
    /// A chain mining on every transaction, with its state under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self { state_dir: state_dir.into(), block_time: None, anvil_bin: None, ready_timeout: READY_TIMEOUT_DEFAULT }
    }

    /// Mines a block every `block_time` instead of one per transaction.
    pub fn block_time(mut self, block_time: Duration) -> Self {
        self.block_time = Some(block_time);
        self
    }
}

/// A running anvil on a free port of 127.0.0.1. Dropping it stops anvil (SIGTERM, so the
/// state is written; SIGKILL when it does not exit in time).
#[derive(Debug)]
pub struct DevChain {
    child: Option<Child>,
    rpc_url: Url,
    provider: DynProvider,
    state_dir: PathBuf,
}

impl DevChain {
    /// Starts anvil and returns once it answers JSON-RPC.
    ///
    /// Anvil binds port 0 (the kernel picks a free port, so parallel tests never race for
    /// one) and prints the address it got; this polls its log for that line, then the RPC
    /// port, both under `config.ready_timeout`.
    pub async fn start(config: DevChainConfig) -> Result<Self, DevChainError> {
        let bin = match config.anvil_bin.clone() {
            Some(bin) => bin,
            None => anvil_bin()?,
        };
        if !bin.is_file() {
            return Err(DevChainError::AnvilNotFound(bin));
        }
        std::fs::create_dir_all(&config.state_dir)
            .map_err(io_error(format!("create {}", config.state_dir.display())))?;
        let log_path = config.state_dir.join(LOG_FILE);
        let log = File::create(&log_path).map_err(io_error(format!("create {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io_error("duplicate the log handle".into()))?;

        let mut command = Command::new(&bin);
        command
            .args(["--host", "127.0.0.1", "--port", "0", "--hardfork", EVM_VERSION])
            .arg("--state")
            .arg(config.state_dir.join(STATE_FILE));
        if let Some(block_time) = config.block_time {
            command.args(["--block-time", &block_time.as_secs_f64().to_string()]);
        }
        stop_with_parent(&mut command);
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io_error(format!("start {}", bin.display())))?;

        // From here on, dropping `chain` stops anvil whatever goes wrong.
        let placeholder: Url = "http://127.0.0.1:0".parse().expect("a valid URL");
        let mut chain = Self {
            child: Some(child),
            provider: ProviderBuilder::new().connect_http(placeholder.clone()).erased(),
            rpc_url: placeholder,
            state_dir: config.state_dir.clone(),
        };
        let deadline = Instant::now() + config.ready_timeout;
        let addr = chain.wait_for_listening(&log_path, deadline, config.ready_timeout).await?;
        chain.rpc_url = format!("http://{addr}").parse().expect("anvil prints a socket address");
        chain.provider = ProviderBuilder::new().connect_http(chain.rpc_url.clone()).erased();
        chain.wait_for_rpc(&log_path, deadline, config.ready_timeout).await?;
        tracing::debug!(rpc_url = %chain.rpc_url, "dev chain ready");
        Ok(chain)
    }

    async fn wait_for_listening(
        &mut self,
        log_path: &Path,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<String, DevChainError> {
        loop {
            let log = read_log(log_path);
            if let Some(addr) = log.lines().find_map(|line| line.trim().strip_prefix(LISTENING_PREFIX)) {
                return Ok(addr.trim().to_string());
            }
            self.check_running(log_path)?;
            if Instant::now() >= deadline {
                return Err(DevChainError::NotReady { timeout, log_tail: log_tail(log_path) });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn wait_for_rpc(
        &mut self,
        log_path: &Path,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), DevChainError> {
        loop {
            if self.provider.get_chain_id().await.is_ok() {
                return Ok(());
            }
            self.check_running(log_path)?;
            if Instant::now() >= deadline {
                return Err(DevChainError::NotReady { timeout, log_tail: log_tail(log_path) });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn check_running(&mut self, log_path: &Path) -> Result<(), DevChainError> {
        let child = self.child.as_mut().expect("running until dropped");
        match child.try_wait() {
            Ok(Some(status)) => Err(DevChainError::Exited { status, log_tail: log_tail(log_path) }),
            Ok(None) => Ok(()),
            Err(e) => Err(DevChainError::Io { action: "check on anvil".into(), source: e }),
        }
    }

    /// The JSON-RPC endpoint, `http://127.0.0.1:<port>`.
    pub fn rpc_url(&self) -> &Url {
        &self.rpc_url
    }

    /// A provider without a signer: reads, and anvil's test RPCs ([`AnvilApi`]).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// A provider that signs its transactions with `signer`.
    ///
    /// It asks the node for the nonce of every transaction (`SimpleNonceManager`). alloy's
    /// default nonce cache takes a nonce before estimating gas and keeps counting when the
    /// estimate fails, so after one refused transaction every later one waits forever behind a
    /// nonce gap.
    pub fn provider_with(&self, signer: PrivateKeySigner) -> DynProvider {
        crate::bridge::signing_provider(self.rpc_url.clone(), signer)
    }

    /// A new random key holding 1,000 ETH, set with `anvil_setBalance`: tests and the dev
    /// chain never rely on anvil's well-known dev accounts.
    pub async fn funded_key(&self) -> Result<PrivateKeySigner, DevChainError> {
        let signer = PrivateKeySigner::random();
        self.fund(signer.address()).await?;
        Ok(signer)
    }

    /// Gives `address` 1,000 ETH.
    pub async fn fund(&self, address: Address) -> Result<(), DevChainError> {
        self.provider.anvil_set_balance(address, U256::from(FUNDED_KEY_WEI)).await?;
        Ok(())
    }

    /// TESTS ONLY: anvil's process id, to pause it (SIGSTOP) and resume it (SIGCONT) as a
    /// chain that hangs. `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The directory holding anvil's state and log.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Stops anvil now; the same as dropping it.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SIGTERM lets anvil write its state file; SIGKILL only when it hangs.
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) with the pid of a child this process spawned and has not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(POLL_INTERVAL),
            }
        }
        tracing::warn!("anvil did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for DevChain {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The anvil binary: [`ANVIL_BIN_ENV`] if set, else the npm platform package's binary under
/// `chain-bridge/node_modules` (only `anvil-linux-amd64` is in package.json; the other names are
/// where `npm install` would put the others). Never `@foundry-rs/anvil`'s `bin.mjs`: it runs
/// anvil as a child of node, which would outlive a killed wrapper.
pub fn anvil_bin() -> Result<PathBuf, DevChainError> {
    if let Some(bin) = std::env::var_os(ANVIL_BIN_ENV) {
        return Ok(PathBuf::from(bin));
    }
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    let package = match (os, arch) {
        ("linux", "x86_64") => "anvil-linux-amd64",
        ("linux", "aarch64") => "anvil-linux-arm64",
        ("macos", "x86_64") => "anvil-darwin-amd64",
        ("macos", "aarch64") => "anvil-darwin-arm64",
        _ => return Err(DevChainError::UnsupportedPlatform { os, arch }),
    };
    Ok(Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/@foundry-rs").join(package).join("bin/anvil"))
}

/// On Linux, anvil gets SIGTERM (and writes its state) when the thread that started it dies,
/// so a killed `ecoledger serve` (SIGKILL: no `Drop` runs) leaves no anvil behind. That is the
/// starting thread, not the process: a tokio worker or a test's thread, which live as long as
/// the runtime that owns the chain.
#[cfg(target_os = "linux")]
fn stop_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls: prctl(2) and getppid(2).
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before prctl took effect: no signal will come.
            if libc::getppid() == 1 {
                return Err(io::Error::other("the parent exited while anvil started"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn stop_with_parent(_command: &mut Command) {}

fn io_error(action: String) -> impl FnOnce(io::Error) -> DevChainError {
    move |source| DevChainError::Io { action, source }
}

fn read_log(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn log_tail(path: &Path) -> String {
    let log = read_log(path);
    let start = log.len().saturating_sub(LOG_TAIL_BYTES);
    let start = (start..log.len()).find(|i| log.is_char_boundary(*i)).unwrap_or(log.len());
    log[start..].to_string()
}
