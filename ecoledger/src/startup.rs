//! Building and running the components of `ecoledger serve`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use command_api::routes::chain::{ChainContracts, ChainInfo, ChainInfoSource};
use command_api::{AppState, Jwt};
use event_store::{Bus, Relay, Store};
use projections::Projector;
use rand::RngCore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::configuration::{ChainSettings, Component, PriceSettings, ServeSettings, StoreSettings};

/// How long a command waits for a Postgres connection before answering 503.
const DB_ACQUIRE_WAIT_MAX: Duration = Duration::from_secs(2);
/// Idempotency outcomes are kept at least 24 h (DESIGN.md section 4); pruned after 48 h.
const OUTCOME_RETENTION: &str = "48 hours";
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(600);

pub async fn connect_pool(settings: &StoreSettings) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = settings.database_url.expose().parse().context("Failed to parse DATABASE_URL")?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.db_pool_max)
        .acquire_timeout(DB_ACQUIRE_WAIT_MAX)
        .connect_with(options)
        .await
        .context("Failed to connect to Postgres")?;
    Ok(pool)
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    event_store::MIGRATOR.run(pool).await.context("Failed to apply migrations")
}

pub async fn open_store(settings: &StoreSettings) -> anyhow::Result<Store> {
    let pool = connect_pool(settings).await?;
    Ok(Store::with_snapshot_interval(pool, settings.snapshot_interval))
}

/// A running server: its address, and its tasks (aborted on drop of the handle's owner).
pub struct Server {
    pub address: std::net::SocketAddr,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The chain bridge, when a chain is configured and this process runs the bridge.
    pub bridge: Option<Arc<chain_bridge::Bridge>>,
}

impl Server {
    /// Stops the dev chain (writing its state) and aborts the tasks.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(bridge) = self.bridge {
            // Stopping anvil waits for it to write its state: off the async threads.
            let _ = tokio::task::spawn_blocking(move || bridge.stop()).await;
        }
    }
}

/// Starts the configured components, with no price provider; returns once the HTTP
/// listener is bound.
pub async fn start(settings: &ServeSettings) -> anyhow::Result<Server> {
    start_with_prices(settings, &PriceSettings::default()).await
}

/// Starts the configured components, the price ingest polling the providers of `prices`.
pub async fn start_with_prices(settings: &ServeSettings, prices: &PriceSettings) -> anyhow::Result<Server> {
    start_with_chain(settings, prices, &ChainSettings::default()).await
}

/// Starts the configured components, the bridge on the chain of `chain` (none configured: no
/// bridge). A chain that is not the one the ledger recorded fails the start.
pub async fn start_with_chain(
    settings: &ServeSettings,
    prices: &PriceSettings,
    chain: &ChainSettings,
) -> anyhow::Result<Server> {
    let store = open_store(&settings.store).await?;
    migrate(store.pool()).await?;
    let bus = Bus::new(&settings.nats_prefix).map_err(anyhow::Error::msg)?;
    let nats = event_store::bus::connect(&settings.nats_url).await.context("Failed to configure NATS")?;
    let mut tasks = Vec::new();
    if settings.runs(Component::Relay) {
        tasks.push(tokio::spawn(Relay::new(store.clone(), bus.clone(), nats.clone()).run()));
    }
    if settings.runs(Component::Projections) {
        let projector = Projector::new(store.clone(), projections::all(), bus.clone(), Some(nats.clone()));
        tasks.push(tokio::spawn(projector.run()));
    }
    if settings.runs(Component::Sagas) {
        tasks.push(tokio::spawn(sagas::SagaWorker::new(store.clone()).run()));
    }
    let metrics = Arc::new(command_api::telemetry::Metrics::new());
    if settings.runs(Component::Prices) {
        tasks.extend(start_price_ingest(&store, prices, &metrics.registry)?);
    }
    tasks.push(tokio::spawn(run_maintenance(store.pool().clone())));
    let reconciler = crate::chain_checks::Reconciler::new(store.clone(), &metrics.registry)?;
    let bridge = match chain.bridge_config()? {
        Some(config) if settings.runs(Component::Bridge) => {
            let bridge = start_bridge(&store, &config).await?;
            tasks.push(start_sender(&store, &bridge, chain.sender.sender_config(), &metrics.registry)?);
            tasks.push(crate::chain_checks::start_watcher(&store, &bridge, &metrics.registry)?);
            let interval = crate::chain_checks::RECONCILE_INTERVAL;
            tasks.push(crate::chain_checks::start_reconciliation_alerts(bridge.clone(), reconciler.clone(), interval));
            Some(bridge)
        }
        Some(_) => None,
        None => {
            tracing::info!("no chain configured (ECOLEDGER_ETH_DEV_CHAIN, ECOLEDGER_ETH_RPC_URL): no chain bridge");
            None
        }
    };
    let listener = TcpListener::bind(&settings.http_addr)
        .await
        .with_context(|| format!("Failed to bind {}", settings.http_addr))?;
    let address = listener.local_addr()?;
    if settings.runs(Component::Api) {
        let state = AppState {
            store,
            jwt: Arc::new(Jwt::new(&jwt_secret(settings), settings.token_ttl_secs)),
            config: Arc::new(settings.api_config()),
            metrics,
            nats: Some(nats),
            chain: bridge.clone().map(|bridge| Arc::new(BridgeInfo(bridge, reconciler)) as Arc<dyn ChainInfoSource>),
        };
        let app = command_api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        tasks.push(tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await {
                tracing::error!(%error, "HTTP server stopped");
            }
        }));
    }
    tracing::info!(%address, components = ?settings.components, "ecoledger serving");
    Ok(Server { address, tasks, bridge })
}

async fn start_bridge(store: &Store, config: &chain_bridge::BridgeConfig) -> anyhow::Result<Arc<chain_bridge::Bridge>> {
    tracing::info!(?config, "chain bridge starting");
    let bridge = chain_bridge::Bridge::start(store.pool(), config).await.context("The chain bridge cannot start")?;
    Ok(Arc::new(bridge))
}

/// The bridge's transaction sender on the bridge's chain and hot key, its metrics in
/// `registry`. Aborting its task is safe: it stores every transaction before broadcasting it.
fn start_sender(
    store: &Store,
    bridge: &chain_bridge::Bridge,
    config: chain_bridge::sender::SenderConfig,
    registry: &prometheus::Registry,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let metrics = chain_bridge::sender::SenderMetrics::new();
    metrics.register(registry).context("Failed to register the chain sender's metrics")?;
    let identity = bridge.identity();
    let chain = chain_bridge::sender::SenderChain {
        provider: bridge.provider().clone(),
        signer: bridge.signer().clone(),
        chain_id: identity.identity.chain_id,
        contracts: identity.identity.contracts,
        first_block: identity.first_block.unwrap_or(0),
        confirmations: bridge.confirmations(),
    };
    let sender = chain_bridge::sender::Sender::new(store.clone(), chain, config, metrics);
    Ok(tokio::spawn(sender.run()))
}

/// The API's view of the chain, read through the bridge (and reconciled by the reconciler).
struct BridgeInfo(Arc<chain_bridge::Bridge>, crate::chain_checks::Reconciler);

impl ChainInfoSource for BridgeInfo {
    fn chain_info(&self) -> futures::future::BoxFuture<'_, Result<ChainInfo, String>> {
        Box::pin(async move {
            let info = self.0.info().await.map_err(|error| error.to_string())?;
            Ok(ChainInfo {
                chain_id: info.chain_id,
                contracts: ChainContracts {
                    carbon_token: info.contracts.carbon_token.to_checksum(None),
                    staking: info.contracts.staking.to_checksum(None),
                    anchor: info.contracts.anchor.to_checksum(None),
                },
                bridge_address: info.bridge_address.map(|a| a.to_checksum(None)).unwrap_or_default(),
                confirmations: info.confirmations,
                paused: info.paused,
            })
        })
    }

    fn head_block(&self) -> futures::future::BoxFuture<'_, Result<u64, String>> {
        use alloy::providers::Provider;
        Box::pin(async move { self.0.provider().get_block_number().await.map_err(|error| error.to_string()) })
    }

    fn chain_reconciliation(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<command_api::routes::chain_reconciliation::ChainReconciliation, String>>
    {
        Box::pin(self.1.reconcile(&self.0))
    }
}

/// The price ingest's tasks, its counters in `registry` (served at `/metrics` with the API).
fn start_price_ingest(
    store: &Store,
    prices: &PriceSettings,
    registry: &prometheus::Registry,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let config = prices.ingest_config()?;
    let metrics = price_ingest::IngestMetrics::new();
    metrics.register(registry).context("Failed to register the price ingest's metrics")?;
    tracing::info!(
        coingecko = config.coingecko.as_ref().map(|c| c.base_url.as_str()),
        carbon = config.carbon.as_ref().map(|c| c.base_url.as_str()),
        poll_secs = config.poll_interval.as_secs(),
        "price ingest starting"
    );
    let ingest =
        price_ingest::Ingest::new(store.clone(), config, metrics).context("Failed to build the HTTP client")?;
    Ok(ingest.spawn())
}

fn jwt_secret(settings: &ServeSettings) -> Vec<u8> {
    match &settings.jwt_secret {
        Some(secret) if !secret.expose().is_empty() => secret.expose().as_bytes().to_vec(),
        _ => {
            tracing::warn!("ECOLEDGER_JWT_SECRET is unset: using a random secret; tokens end with this process");
            let mut secret = vec![0_u8; 32];
            rand::rng().fill_bytes(&mut secret);
            secret
        }
    }
}

/// Prunes idempotency outcomes past their retention and old failed-login records.
async fn run_maintenance(pool: PgPool) {
    let mut interval = tokio::time::interval(MAINTENANCE_INTERVAL);
    loop {
        interval.tick().await;
        let outcomes = sqlx::query(&format!(
            "DELETE FROM command_outcomes WHERE created_at < now() - interval '{OUTCOME_RETENTION}'"
        ))
        .execute(&pool)
        .await;
        let failures =
            sqlx::query("DELETE FROM login_failures WHERE failed_at < now() - interval '1 day'").execute(&pool).await;
        if let Err(error) = outcomes.and(failures) {
            tracing::warn!(%error, "maintenance failed; retrying next interval");
        }
    }
}

pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
