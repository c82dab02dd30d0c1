//! The bridge's deposit watcher started with `serve`, the chain reconciliation the API serves,
//! and `ecoledger verify --chain`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chain_bridge::reconcile::{self, ReconcileConfig, Reconciliation};
use chain_bridge::watcher::{Watcher, WatcherConfig, WatcherMetrics};
use command_api::routes::chain_reconciliation::{
    ChainReconciliation, ReconciliationTerm, ReconciliationUnmatched, DIFFERENCE_KIND,
};
use domain::Currency;
use event_store::Store;
use prometheus::{IntCounter, IntGauge, Opts, Registry};
use rust_decimal::Decimal;

/// Starts the deposit watcher on the bridge's chain, its metrics in `registry`. Aborting its
/// task is safe: each log is recorded in one transaction with its key.
pub fn start_watcher(
    store: &Store,
    bridge: &chain_bridge::Bridge,
    registry: &Registry,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let metrics = WatcherMetrics::new();
    metrics.register(registry).context("Failed to register the chain watcher's metrics")?;
    let identity = bridge.identity();
    let config = WatcherConfig::new(
        identity.identity.chain_id,
        identity.identity.contracts.carbon_token,
        identity.first_block.unwrap_or(0),
        bridge.confirmations(),
    );
    tracing::info!(first_block = config.first_block, confirmations = ?config.confirmations, "chain watcher starting");
    let watcher = Watcher::new(store.clone(), bridge.provider().clone(), config, metrics);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    Ok(tokio::spawn(async move {
        // The sender lives as long as the task: the task ends by abort (serve's shutdown).
        let _stop = stop;
        watcher.run(stopped).await;
    }))
}

/// Reconciles for the API and raises the alert metrics.
#[derive(Clone)]
pub struct Reconciler {
    store: Store,
    /// The last difference, in token units (0.001 t).
    difference: IntGauge,
    alerts: IntCounter,
}

impl Reconciler {
    pub fn new(store: Store, registry: &Registry) -> anyhow::Result<Reconciler> {
        let difference = IntGauge::with_opts(Opts::new(
            "ecoledger_chain_reconciliation_difference_units",
            "The last chain reconciliation's difference in token units (0.001 t); non-zero is an alert",
        ))?;
        let alerts = IntCounter::with_opts(Opts::new(
            "ecoledger_chain_reconciliation_alerts_total",
            "Chain reconciliations with a non-zero difference",
        ))?;
        registry.register(Box::new(difference.clone())).context("Failed to register the reconciliation gauge")?;
        registry.register(Box::new(alerts.clone())).context("Failed to register the reconciliation counter")?;
        Ok(Reconciler { store, difference, alerts })
    }

    /// Reconciles at the bridge's confirmed block and the relay's published watermark, for
    /// the API.
    pub async fn reconcile(&self, bridge: &chain_bridge::Bridge) -> Result<ChainReconciliation, String> {
        Ok(reconciliation_view(&self.report(bridge).await?))
    }

    /// Reconciles and sets the metrics.
    pub async fn report(&self, bridge: &chain_bridge::Bridge) -> Result<Reconciliation, String> {
        let position = self.store.published_position().await.map_err(|error| error.to_string())?;
        let identity = bridge.identity();
        let config = ReconcileConfig {
            chain_id: identity.identity.chain_id,
            token: identity.identity.contracts.carbon_token,
            first_block: identity.first_block.unwrap_or(0),
            confirmations: bridge.confirmations(),
        };
        let report = reconcile::reconcile(self.store.pool(), bridge.provider(), &config, position)
            .await
            .map_err(|error| error.to_string())?;
        let units = report.difference * Decimal::from(1_000);
        self.difference.set(i64::try_from(units.trunc()).unwrap_or(i64::MAX));
        if !report.difference.is_zero() {
            self.alerts.inc();
        }
        Ok(report)
    }

    /// One round of the bridge's own check: a difference other than the last one alerted is
    /// written to the security log (actor `chain-bridge`), so it alerts without anyone asking
    /// for the report; `last_alerted` goes back to `None` once the books agree again.
    pub async fn check(&self, bridge: &chain_bridge::Bridge, last_alerted: &mut Option<Decimal>) {
        let report = match self.report(bridge).await {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(%error, "chain reconciliation failed; retrying next round");
                return;
            }
        };
        if report.difference.is_zero() {
            *last_alerted = None;
            return;
        }
        if *last_alerted == Some(report.difference) {
            return;
        }
        let details = serde_json::json!({
            "block": report.block,
            "position": report.position,
            "total_supply": Currency::Carbon.format(report.total_supply),
            "chain_account": Currency::Carbon.format(report.chain_account),
            "difference": Currency::Carbon.format(report.difference),
            "unmatched": report.unmatched.len(),
        });
        let written =
            sqlx::query("INSERT INTO security_audit (kind, actor, code, details) VALUES ($1, 'chain-bridge', $1, $2)")
                .bind(DIFFERENCE_KIND)
                .bind(details)
                .execute(self.store.pool())
                .await;
        match written {
            Ok(_) => *last_alerted = Some(report.difference),
            Err(error) => tracing::warn!(%error, "the reconciliation alert was not written to the security log"),
        }
    }
}

/// How often the bridge reconciles on its own (each round reads the token's logs from the
/// deployment block: keep it well apart).
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(300);

/// The bridge's own reconciliation every `interval` (see [`Reconciler::check`]).
pub fn start_reconciliation_alerts(
    bridge: Arc<chain_bridge::Bridge>,
    reconciler: Reconciler,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_alerted = None;
        loop {
            ticker.tick().await;
            reconciler.check(&bridge, &mut last_alerted).await;
        }
    })
}

/// The report as the API answers it: amounts as strings at the CARBON scale.
pub fn reconciliation_view(report: &Reconciliation) -> ChainReconciliation {
    let carbon = |amount: Decimal| Currency::Carbon.format(amount);
    ChainReconciliation {
        block: report.block,
        block_hash: report.block_hash.to_string(),
        position: report.position,
        total_supply: carbon(report.total_supply),
        chain_account: carbon(report.chain_account),
        terms: report
            .terms
            .iter()
            .map(|term| ReconciliationTerm {
                kind: term.kind.to_string(),
                description: term.description.to_string(),
                amount: carbon(term.amount),
                count: term.count,
            })
            .collect(),
        unmatched: report
            .unmatched
            .iter()
            .map(|item| ReconciliationUnmatched {
                kind: item.kind.to_string(),
                reference: item.reference.clone(),
                tx_hash: item.tx_hash.clone(),
                amount: carbon(item.amount),
            })
            .collect(),
        difference: carbon(report.difference),
    }
}

/// `ecoledger verify --chain`: every on-chain anchor against the event store. Prints one line
/// per anchor; fails when any differs.
pub async fn verify_chain(
    pool: &sqlx::PgPool,
    url: Option<chain_bridge::bridge::Url>,
    contracts: Option<chain_bridge::ContractAddresses>,
) -> anyhow::Result<ExitCode> {
    let chain = chain_bridge::bridge::resolve_chain(pool, url, contracts).await?;
    let first_block = chain_bridge::identity::load_identity(pool).await?.and_then(|r| r.first_block).unwrap_or(0);
    let anchors = chain_bridge::verify_anchors::read_anchors(&chain.provider, chain.contracts.anchor, first_block)
        .await
        .context("Failed to read the anchors")?;
    let checks = chain_bridge::verify_anchors::check_anchors(pool, anchors).await?;
    println!("chain {} anchor contract {}: {} anchors", chain.chain_id, chain.contracts.anchor, checks.len());
    let mut failed = 0;
    for check in &checks {
        let anchor = &check.anchor;
        let place = format!(
            "anchor position {} count {} (block {}, tx {})",
            anchor.position, anchor.count, anchor.block_number, anchor.tx_hash
        );
        match &check.problem {
            None => println!("ok: {place}"),
            Some(problem) => {
                failed += 1;
                println!("MISMATCH: {place}: {problem}");
            }
        }
    }
    match failed {
        0 => {
            println!("ok: the event store matches every on-chain anchor");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            println!("FAILED: {failed} of {} anchors do not match the event store", checks.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
