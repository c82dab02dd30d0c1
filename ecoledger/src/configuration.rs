//! Typed settings from the environment (README's configuration table). Secrets are wrapped
//! so they never print.

use std::fmt;
use std::time::Duration;

use clap::Args;
use price_ingest::config::normalise_base_url;
use price_ingest::{ApiKey, CarbonPriceConfig, CoinGeckoConfig, CoinGeckoPlan, HttpConfig, IngestConfig};
use rust_decimal::Decimal;

/// A secret value: `Debug` and `Display` print a placeholder.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Where the ledger's state lives: shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct StoreSettings {
    /// Postgres connection string.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ecoledger",
        hide_env_values = true
    )]
    pub database_url: Secret,
    /// Largest number of Postgres connections this process opens.
    #[arg(long, env = "ECOLEDGER_DB_POOL_MAX", default_value_t = 32)]
    pub db_pool_max: u32,
    /// A snapshot is written every this many events of a stream.
    #[arg(long, env = "ECOLEDGER_SNAPSHOT_INTERVAL", default_value_t = event_store::store::SNAPSHOT_INTERVAL_DEFAULT)]
    pub snapshot_interval: i64,
}

/// Settings of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeSettings {
    #[command(flatten)]
    pub store: StoreSettings,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Subject prefix and stream name stem on NATS.
    #[arg(long, env = "ECOLEDGER_NATS_PREFIX", default_value = "ledger")]
    pub nats_prefix: String,
    #[arg(long, env = "ECOLEDGER_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// HS256 secret for tokens. Unset: a random one per process (tokens die on restart).
    #[arg(long, env = "ECOLEDGER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    #[arg(long, env = "ECOLEDGER_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: i64,
    /// Failed logins per username within the window before 429.
    #[arg(long, env = "ECOLEDGER_LOGIN_FAILURES_MAX", default_value_t = 5)]
    pub login_failures_max: i64,
    #[arg(long, env = "ECOLEDGER_LOGIN_FAILURE_WINDOW_SECS", default_value_t = 900)]
    pub login_failure_window_secs: u64,
    /// Longest `?min_position=` wait, in milliseconds.
    #[arg(long, env = "ECOLEDGER_MIN_POSITION_WAIT_MS", default_value_t = 5000)]
    pub min_position_wait_ms: u64,
    /// Platform fee on purchases, in basis points of the subtotal (100 = 1 %).
    #[arg(long, env = "ECOLEDGER_FEE_BPS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub fee_bps: u32,
    /// A price observed longer ago than this many seconds is shown `stale`.
    #[arg(long, env = "ECOLEDGER_PRICE_MAX_AGE_SECS", default_value_t = 3600)]
    pub price_max_age_secs: u64,
    /// Seconds a newly linked chain address waits before it may receive withdrawals. Unset:
    /// 0 on the dev chain, 86400 on any other (decided by the stored chain identity).
    #[arg(long, env = "ECOLEDGER_CHAIN_ADDRESS_COOLDOWN_SECS")]
    pub chain_address_cooldown_secs: Option<u64>,
    /// CARBON one user may withdraw to the chain in any 24 hours.
    #[arg(long, env = "ECOLEDGER_CHAIN_WITHDRAWAL_USER_DAILY_LIMIT", default_value = "1000.000", value_parser = parse_carbon_limit)]
    pub chain_withdrawal_user_daily_limit: Decimal,
    /// CARBON everyone together may withdraw to the chain in any 24 hours.
    #[arg(long, env = "ECOLEDGER_CHAIN_WITHDRAWAL_GLOBAL_DAILY_LIMIT", default_value = "100000.000", value_parser = parse_carbon_limit)]
    pub chain_withdrawal_global_daily_limit: Decimal,
    /// Components to run, comma-separated: api, relay, projections, sagas, prices, bridge
    /// (default all).
    #[arg(
        long,
        env = "ECOLEDGER_COMPONENTS",
        value_delimiter = ',',
        default_value = "api,relay,projections,sagas,prices,bridge"
    )]
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    Api,
    Relay,
    Projections,
    /// Saga workers (competing: run as many as you like).
    Sagas,
    /// Price ingest: polls the configured providers (run it in one process: others would
    /// poll the providers again, their observations deduplicated).
    Prices,
    /// The chain bridge, when a chain is configured (one process: it starts the dev chain).
    Bridge,
}

impl ServeSettings {
    pub fn api_config(&self) -> command_api::ApiConfig {
        command_api::ApiConfig {
            min_position_wait_max: Duration::from_millis(self.min_position_wait_ms),
            login_failures_max: self.login_failures_max,
            login_failure_window: Duration::from_secs(self.login_failure_window_secs),
            price_age_max: Duration::from_secs(self.price_max_age_secs),
            fee_bps: self.fee_bps,
            chain: command_api::ChainApiConfig {
                address_cooldown: self.chain_address_cooldown_secs.map(Duration::from_secs),
                withdrawal_user_daily_limit: self.chain_withdrawal_user_daily_limit,
                withdrawal_global_daily_limit: self.chain_withdrawal_global_daily_limit,
            },
        }
    }

    pub fn runs(&self, component: Component) -> bool {
        self.components.contains(&component)
    }
}

/// Which price providers are polled, and the ingest's limits. A provider whose base URL is
/// unset is not polled. Shared by `serve` (the `prices` component) and `prices backfill`.
#[derive(Debug, Clone, Args)]
pub struct PriceSettings {
    /// CoinGecko API up to its version: `https://api.coingecko.com/api/v3` (demo and public
    /// plans) or `https://pro-api.coingecko.com/api/v3` (paid plans). Unset: not polled.
    #[arg(long, env = "ECOLEDGER_COINGECKO_BASE_URL")]
    pub coingecko_base_url: Option<String>,
    /// CoinGecko API key, sent in the plan's header.
    #[arg(long, env = "ECOLEDGER_COINGECKO_API_KEY", hide_env_values = true)]
    pub coingecko_api_key: Option<Secret>,
    /// `demo` sends the key as `x-cg-demo-api-key`, `pro` as `x-cg-pro-api-key`.
    #[arg(long, env = "ECOLEDGER_COINGECKO_API_PLAN", value_enum, default_value = "demo")]
    pub coingecko_api_plan: CoinGeckoApiPlan,
    /// OilPriceAPI-style endpoint for the EU carbon allowance price in EUR, without the API
    /// version: `https://api.oilpriceapi.com`. Unset: not polled.
    #[arg(long, env = "ECOLEDGER_CARBON_PRICE_BASE_URL")]
    pub carbon_price_base_url: Option<String>,
    /// Its API key, sent as `Authorization: Token KEY`.
    #[arg(long, env = "ECOLEDGER_CARBON_PRICE_API_KEY", hide_env_values = true)]
    pub carbon_price_api_key: Option<Secret>,
    /// Seconds between two polls of a provider (a failing provider waits longer).
    #[arg(long, env = "ECOLEDGER_PRICE_POLL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub price_poll_secs: u64,
    /// Longest wait before the next poll of a provider that keeps failing.
    #[arg(long, env = "ECOLEDGER_PRICE_BACKOFF_MAX_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..))]
    pub price_backoff_max_secs: u64,
    /// Longest time to connect to a provider, in milliseconds.
    #[arg(long, env = "ECOLEDGER_PRICE_CONNECT_TIMEOUT_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub price_connect_timeout_ms: u64,
    /// Longest time for one request to a provider, body included, in milliseconds.
    #[arg(long, env = "ECOLEDGER_PRICE_REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub price_request_timeout_ms: u64,
    /// Attempts of one request that answers 429 or 5xx or times out.
    #[arg(long, env = "ECOLEDGER_PRICE_RETRY_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub price_retry_attempts: u32,
    /// First delay before a retry, in milliseconds; doubled per attempt, with jitter.
    #[arg(long, env = "ECOLEDGER_PRICE_RETRY_DELAY_MS", default_value_t = 500)]
    pub price_retry_delay_ms: u64,
    /// A polled price further than this many percent from its feed's latest is refused.
    #[arg(long, env = "ECOLEDGER_PRICE_JUMP_MAX_PCT", default_value = "50", value_parser = parse_jump_pct)]
    pub price_jump_max_pct: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CoinGeckoApiPlan {
    Demo,
    Pro,
}

/// A CARBON amount limit: a decimal string at CARBON's scale at most (never a float).
fn parse_carbon_limit(text: &str) -> Result<Decimal, String> {
    domain::Amount::parse(text, domain::Currency::Carbon)
        .map(|amount| amount.value())
        .map_err(|error| format!("{text:?} is not a CARBON amount: {error}"))
}

fn parse_jump_pct(text: &str) -> Result<Decimal, String> {
    match Decimal::from_str_exact(text) {
        Ok(pct) if pct > Decimal::ZERO => Ok(pct),
        _ => Err("a positive number of percent, such as 50 or 12.5".to_string()),
    }
}

impl Default for PriceSettings {
    /// No provider, the documented defaults otherwise.
    fn default() -> Self {
        PriceSettings {
            coingecko_base_url: None,
            coingecko_api_key: None,
            coingecko_api_plan: CoinGeckoApiPlan::Demo,
            carbon_price_base_url: None,
            carbon_price_api_key: None,
            price_poll_secs: 60,
            price_backoff_max_secs: 900,
            price_connect_timeout_ms: 3_000,
            price_request_timeout_ms: 10_000,
            price_retry_attempts: 3,
            price_retry_delay_ms: 500,
            price_jump_max_pct: Decimal::from(50),
        }
    }
}

impl PriceSettings {
    /// The ingest's configuration; a base URL that is not an http(s) URL is an error.
    pub fn ingest_config(&self) -> anyhow::Result<IngestConfig> {
        let key = |secret: &Option<Secret>| {
            secret.as_ref().filter(|s| !s.expose().is_empty()).map(|s| ApiKey::new(s.expose()))
        };
        Ok(IngestConfig {
            coingecko: base_url(&self.coingecko_base_url, "ECOLEDGER_COINGECKO_BASE_URL")?.map(|base_url| {
                CoinGeckoConfig { base_url, api_key: key(&self.coingecko_api_key), plan: self.coingecko_plan() }
            }),
            carbon: base_url(&self.carbon_price_base_url, "ECOLEDGER_CARBON_PRICE_BASE_URL")?
                .map(|base_url| CarbonPriceConfig { base_url, api_key: key(&self.carbon_price_api_key) }),
            poll_interval: Duration::from_secs(self.price_poll_secs),
            failure_backoff_max: Duration::from_secs(self.price_backoff_max_secs),
            jump_max_pct: self.price_jump_max_pct,
            http: HttpConfig {
                connect_timeout: Duration::from_millis(self.price_connect_timeout_ms),
                request_timeout: Duration::from_millis(self.price_request_timeout_ms),
                attempts_max: self.price_retry_attempts,
                retry_delay_base: Duration::from_millis(self.price_retry_delay_ms),
                ..HttpConfig::default()
            },
        })
    }
}

impl PriceSettings {
    fn coingecko_plan(&self) -> CoinGeckoPlan {
        match self.coingecko_api_plan {
            CoinGeckoApiPlan::Demo => CoinGeckoPlan::Demo,
            CoinGeckoApiPlan::Pro => CoinGeckoPlan::Pro,
        }
    }
}

/// An empty variable counts as unset (`ECOLEDGER_COINGECKO_BASE_URL=` turns a provider off).
fn base_url(url: &Option<String>, name: &str) -> anyhow::Result<Option<String>> {
    match url.as_deref().map(str::trim).filter(|url| !url.is_empty()) {
        Some(url) => Ok(Some(normalise_base_url(url).map_err(|error| anyhow::anyhow!("{name}: {error}"))?)),
        None => Ok(None),
    }
}

/// The chain bridge's chain (README, "Chain bridge"). Neither `ECOLEDGER_ETH_DEV_CHAIN` nor
/// `ECOLEDGER_ETH_RPC_URL`: no bridge runs, and `GET /api/v1/chain/info` answers 503
/// `chain_not_configured`. Shared by `serve` and the `chain` subcommands.
#[derive(Clone, Args)]
pub struct ChainSettings {
    /// DEV ONLY: start a local anvil (state under `<data dir>/anvil`, a block a second) and
    /// deploy the contracts on it with anvil's well-known dev keys at its first start.
    #[arg(long, env = "ECOLEDGER_ETH_DEV_CHAIN", default_value_t = false, action = clap::ArgAction::Set,
        num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag)]
    pub eth_dev_chain: bool,
    /// JSON-RPC endpoint of the chain's node (may hold an API key: never logged or stored).
    #[arg(long, env = "ECOLEDGER_ETH_RPC_URL", hide_env_values = true)]
    pub eth_rpc_url: Option<Secret>,
    /// The bridge's hot key (hex private key; `BRIDGE_ROLE`). Unset on the dev chain: the
    /// dev hot key.
    #[arg(long, env = "ECOLEDGER_ETH_SIGNER_KEY", hide_env_values = true)]
    pub eth_signer_key: Option<Secret>,
    /// Blocks a mint or deposit waits for (default 2 on the dev chain; unset elsewhere: only
    /// the `finalized` block counts).
    #[arg(long, env = "ECOLEDGER_ETH_CONFIRMATIONS")]
    pub eth_confirmations: Option<u64>,
    #[arg(long, env = "ECOLEDGER_CARBON_TOKEN_ADDRESS")]
    pub carbon_token_address: Option<String>,
    #[arg(long, env = "ECOLEDGER_STAKING_ADDRESS")]
    pub staking_address: Option<String>,
    #[arg(long, env = "ECOLEDGER_ANCHOR_ADDRESS")]
    pub anchor_address: Option<String>,
    /// Where the dev chain keeps its state (`<dir>/anvil`).
    #[arg(long, env = "ECOLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: std::path::PathBuf,
    /// DEV ONLY: the dev chain's block time in milliseconds.
    #[arg(long, env = "ECOLEDGER_ETH_DEV_BLOCK_TIME_MS", default_value_t = 1000, hide = true,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub eth_dev_block_time_ms: u64,
    /// The bridge's transaction sender.
    #[command(flatten)]
    pub sender: SenderSettings,
}

/// `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`; empty is false.
fn parse_flag(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("1 or 0 (true or false)".to_string()),
    }
}

impl fmt::Debug for ChainSettings {
    /// The RPC URL and the key print as placeholders (`Secret`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainSettings")
            .field("eth_dev_chain", &self.eth_dev_chain)
            .field("eth_rpc_url", &self.eth_rpc_url)
            .field("eth_signer_key", &self.eth_signer_key)
            .field("eth_confirmations", &self.eth_confirmations)
            .field("carbon_token_address", &self.carbon_token_address)
            .field("staking_address", &self.staking_address)
            .field("anchor_address", &self.anchor_address)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Default for ChainSettings {
    /// No chain.
    fn default() -> Self {
        ChainSettings {
            eth_dev_chain: false,
            eth_rpc_url: None,
            eth_signer_key: None,
            eth_confirmations: None,
            carbon_token_address: None,
            staking_address: None,
            anchor_address: None,
            data_dir: "./data".into(),
            eth_dev_block_time_ms: 1000,
            sender: SenderSettings::default(),
        }
    }
}

impl ChainSettings {
    /// The dev chain with its state under `data_dir`.
    pub fn dev(data_dir: impl Into<std::path::PathBuf>) -> Self {
        ChainSettings { eth_dev_chain: true, data_dir: data_dir.into(), ..ChainSettings::default() }
    }

    /// The RPC URL, when set and not empty.
    pub fn rpc_url(&self) -> anyhow::Result<Option<chain_bridge::bridge::Url>> {
        match self.eth_rpc_url.as_ref().map(|s| s.expose().trim()).filter(|s| !s.is_empty()) {
            // The URL may carry an API key: the error does not quote it.
            Some(url) => Ok(Some(url.parse().map_err(|_| anyhow::anyhow!("ECOLEDGER_ETH_RPC_URL is not a URL"))?)),
            None => Ok(None),
        }
    }

    /// The hot key, when set and not empty.
    pub fn signer(&self) -> anyhow::Result<Option<chain_bridge::bridge::PrivateKeySigner>> {
        parse_key(self.eth_signer_key.as_ref(), "ECOLEDGER_ETH_SIGNER_KEY")
    }

    /// The configured contracts: all three addresses, or none.
    pub fn contracts(&self) -> anyhow::Result<Option<chain_bridge::ContractAddresses>> {
        let address = |text: &Option<String>, name: &str| -> anyhow::Result<Option<chain_bridge::bridge::Address>> {
            match text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                Some(text) => Ok(Some(text.parse().map_err(|_| anyhow::anyhow!("{name} is not an address: {text}"))?)),
                None => Ok(None),
            }
        };
        let token = address(&self.carbon_token_address, "ECOLEDGER_CARBON_TOKEN_ADDRESS")?;
        let staking = address(&self.staking_address, "ECOLEDGER_STAKING_ADDRESS")?;
        let anchor = address(&self.anchor_address, "ECOLEDGER_ANCHOR_ADDRESS")?;
        match (token, staking, anchor) {
            (Some(carbon_token), Some(staking), Some(anchor)) => {
                Ok(Some(chain_bridge::ContractAddresses { carbon_token, staking, anchor }))
            }
            (None, None, None) => Ok(None),
            _ => anyhow::bail!(
                "set all three of ECOLEDGER_CARBON_TOKEN_ADDRESS, ECOLEDGER_STAKING_ADDRESS and \
                 ECOLEDGER_ANCHOR_ADDRESS, or none"
            ),
        }
    }

    /// The bridge's configuration; `None` when no chain is configured. The dev chain and an
    /// RPC URL together are refused: which one is the chain would be a guess.
    pub fn bridge_config(&self) -> anyhow::Result<Option<chain_bridge::BridgeConfig>> {
        let rpc_url = self.rpc_url()?;
        let network = match (self.eth_dev_chain, rpc_url) {
            (true, Some(_)) => anyhow::bail!("set ECOLEDGER_ETH_DEV_CHAIN or ECOLEDGER_ETH_RPC_URL, not both"),
            (true, None) => {
                if self.contracts()?.is_some() {
                    anyhow::bail!("the dev chain deploys its own contracts: unset the ECOLEDGER_*_ADDRESS variables");
                }
                chain_bridge::Network::Dev {
                    data_dir: self.data_dir.clone(),
                    block_time: Duration::from_millis(self.eth_dev_block_time_ms),
                }
            }
            (false, Some(url)) => chain_bridge::Network::Rpc { url, contracts: self.contracts()? },
            (false, None) => return Ok(None),
        };
        Ok(Some(chain_bridge::BridgeConfig { network, signer: self.signer()?, confirmations: self.eth_confirmations }))
    }
}

/// A hex private key from a secret; the error never quotes it.
pub fn parse_key(key: Option<&Secret>, name: &str) -> anyhow::Result<Option<chain_bridge::bridge::PrivateKeySigner>> {
    match key.map(|s| s.expose().trim()).filter(|s| !s.is_empty()) {
        Some(key) => Ok(Some(key.parse().map_err(|_| anyhow::anyhow!("{name} is not a hex private key"))?)),
        None => Ok(None),
    }
}

/// The bridge's transaction sender (README, "Chain settings").
#[derive(Debug, Clone, Args)]
pub struct SenderSettings {
    /// The most a bridge transaction pays per gas, in wei; a fee above it leaves the
    /// transaction pending (never failed) until fees fall.
    #[arg(long, env = "ECOLEDGER_ETH_MAX_FEE_PER_GAS_WEI", default_value_t = 500_000_000_000)]
    pub eth_max_fee_per_gas_wei: u128,
    /// Seconds a transaction may stay unmined before it is re-signed with higher fees.
    #[arg(long, env = "ECOLEDGER_ETH_FEE_BUMP_AFTER_SECS", default_value_t = 120)]
    pub eth_fee_bump_after_secs: u64,
    /// Seconds after a reverted bridge transaction (a mint refused by the daily cap) before
    /// its work is sent again.
    #[arg(long, env = "ECOLEDGER_ETH_REVERT_RETRY_AFTER_SECS", default_value_t = 60)]
    pub eth_revert_retry_after_secs: u64,
    /// Seconds between two broadcasts of a pending transaction.
    #[arg(long, env = "ECOLEDGER_ETH_REBROADCAST_AFTER_SECS", default_value_t = 10)]
    pub eth_rebroadcast_after_secs: u64,
    /// Below this ETH balance (wei) of the hot key: an alert (metric and warning).
    #[arg(long, env = "ECOLEDGER_ETH_LOW_BALANCE_WEI", default_value_t = 100_000_000_000_000_000)]
    pub eth_low_balance_wei: u128,
    /// Milliseconds between two rounds of the sender.
    #[arg(long, env = "ECOLEDGER_ETH_SENDER_POLL_MS", default_value_t = 500,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub eth_sender_poll_ms: u64,
    /// Anchor the event store's global chain on the chain every this many events ...
    #[arg(long, env = "ECOLEDGER_ANCHOR_EVERY", default_value_t = 10_000,
        value_parser = clap::value_parser!(i64).range(1..))]
    pub anchor_every: i64,
    /// ... or every this many seconds when anything moved.
    #[arg(long, env = "ECOLEDGER_ANCHOR_INTERVAL_SECS", default_value_t = 3_600)]
    pub anchor_interval_secs: u64,
    /// TESTS ONLY: `0` stores transactions without broadcasting them, as a crash between the
    /// two would (the fault test of a sender killed between signing and broadcasting).
    #[arg(long, env = "ECOLEDGER_ETH_SENDER_BROADCAST", default_value_t = true, hide = true,
        action = clap::ArgAction::Set, value_parser = parse_flag)]
    pub eth_sender_broadcast: bool,
}

impl Default for SenderSettings {
    fn default() -> Self {
        let config = chain_bridge::sender::SenderConfig::default();
        SenderSettings {
            eth_max_fee_per_gas_wei: config.max_fee_per_gas,
            eth_fee_bump_after_secs: config.bump_after.as_secs(),
            eth_revert_retry_after_secs: config.revert_retry_after.as_secs(),
            eth_rebroadcast_after_secs: config.rebroadcast_after.as_secs(),
            eth_low_balance_wei: config.low_balance_wei,
            eth_sender_poll_ms: config.poll_interval.as_millis() as u64,
            anchor_every: config.anchor_every,
            anchor_interval_secs: config.anchor_interval.as_secs(),
            eth_sender_broadcast: config.broadcast,
        }
    }
}

impl SenderSettings {
    pub fn sender_config(&self) -> chain_bridge::sender::SenderConfig {
        chain_bridge::sender::SenderConfig {
            poll_interval: Duration::from_millis(self.eth_sender_poll_ms),
            rebroadcast_after: Duration::from_secs(self.eth_rebroadcast_after_secs),
            bump_after: Duration::from_secs(self.eth_fee_bump_after_secs),
            revert_retry_after: Duration::from_secs(self.eth_revert_retry_after_secs),
            max_fee_per_gas: self.eth_max_fee_per_gas_wei,
            low_balance_wei: self.eth_low_balance_wei,
            anchor_every: self.anchor_every,
            anchor_interval: Duration::from_secs(self.anchor_interval_secs),
            broadcast: self.eth_sender_broadcast,
        }
    }
}
