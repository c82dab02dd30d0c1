use std::sync::Arc;
use std::time::Duration;

use event_store::Store;
use rust_decimal::Decimal;

use crate::auth::Jwt;
use crate::telemetry::Metrics;

/// Settings the API needs, read by the binary from the environment.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long `?min_position=` waits for a read model before `503 projection_lagging`.
    pub min_position_wait_max: Duration,
    /// Failed logins per username within `login_failure_window` before 429.
    pub login_failures_max: i64,
    pub login_failure_window: Duration,
    /// A price observed longer ago than this is `stale`.
    pub price_age_max: Duration,
    /// Platform fee on purchases, in basis points of the subtotal.
    pub fee_bps: u32,
    pub chain: ChainApiConfig,
}

/// Rules of the chain flows the API enforces before a withdrawal is queued.
#[derive(Debug, Clone)]
pub struct ChainApiConfig {
    /// How long a newly linked address waits before it may receive withdrawals; `None`: 0 on
    /// the dev chain, a day on any other (from `chain_identity.is_dev_chain`).
    pub address_cooldown: Option<Duration>,
    /// CARBON one user may withdraw to the chain in any 24 hours.
    pub withdrawal_user_daily_limit: Decimal,
    /// CARBON all users together may withdraw to the chain in any 24 hours.
    pub withdrawal_global_daily_limit: Decimal,
}

impl Default for ChainApiConfig {
    fn default() -> Self {
        ChainApiConfig {
            address_cooldown: None,
            withdrawal_user_daily_limit: Decimal::new(1_000_000, 3),
            withdrawal_global_daily_limit: Decimal::new(100_000_000, 3),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            min_position_wait_max: Duration::from_secs(5),
            login_failures_max: 5,
            login_failure_window: Duration::from_secs(15 * 60),
            price_age_max: Duration::from_secs(3600),
            fee_bps: 100,
            chain: ChainApiConfig::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub jwt: Arc<Jwt>,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<Metrics>,
    /// For readiness only; the command path never uses NATS.
    pub nats: Option<async_nats::Client>,
    /// The chain bridge's view of its chain; `None` where this process runs no bridge.
    pub chain: Option<Arc<dyn crate::routes::chain::ChainInfoSource>>,
}
