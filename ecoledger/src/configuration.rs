//! Typed settings from the environment (README's configuration table). Secrets are wrapped
//! so they never print.

use std::fmt;
use std::time::Duration;

use clap::Args;

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
    /// A price observed longer ago than this many seconds is shown `stale`.
    /// Platform fee on purchases, in basis points of the subtotal (100 = 1 %).
    #[arg(long, env = "ECOLEDGER_FEE_BPS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub fee_bps: u32,
    #[arg(long, env = "ECOLEDGER_PRICE_MAX_AGE_SECS", default_value_t = 3600)]
    pub price_max_age_secs: u64,
    /// Components to run, comma-separated: api, relay, projections, sagas (default all).
    #[arg(long, env = "ECOLEDGER_COMPONENTS", value_delimiter = ',', default_value = "api,relay,projections,sagas")]
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    Api,
    Relay,
    Projections,
    /// Saga workers (competing: run as many as you like).
    Sagas,
}

impl ServeSettings {
    pub fn api_config(&self) -> command_api::ApiConfig {
        command_api::ApiConfig {
            min_position_wait_max: Duration::from_millis(self.min_position_wait_ms),
            login_failures_max: self.login_failures_max,
            login_failure_window: Duration::from_secs(self.login_failure_window_secs),
            price_age_max: Duration::from_secs(self.price_max_age_secs),
            fee_bps: self.fee_bps,
        }
    }

    pub fn runs(&self, component: Component) -> bool {
        self.components.contains(&component)
    }
}
