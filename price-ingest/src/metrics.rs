//! Prometheus counters of the ingest, registered in the registry `/metrics` serves.

use prometheus::{IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct IngestMetrics {
    /// Observations by source and outcome (`recorded`, `duplicate`, `rejected`).
    observations: IntCounterVec,
    /// Rejected observations by source and rule.
    rejections: IntCounterVec,
    /// Failed poll rounds by source and reason (`timeout`, `rate_limited`, `store`, ...).
    failures: IntCounterVec,
}

impl IngestMetrics {
    pub fn new() -> IngestMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        IngestMetrics {
            observations: counter(
                "ecoledger_price_observations_total",
                "Price observations by source and outcome",
                &["source", "outcome"],
            ),
            rejections: counter(
                "ecoledger_price_rejections_total",
                "Price observations refused, by source and rule",
                &["source", "reason"],
            ),
            failures: counter(
                "ecoledger_price_poll_failures_total",
                "Failed price poll rounds by source and reason",
                &["source", "reason"],
            ),
        }
    }

    /// Adds the counters to `registry` (the API's, so `/metrics` shows them).
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.observations.clone()))?;
        registry.register(Box::new(self.rejections.clone()))?;
        registry.register(Box::new(self.failures.clone()))
    }

    pub(crate) fn observed(&self, source: &str, outcome: &str) {
        self.observations.with_label_values(&[source, outcome]).inc();
    }

    pub(crate) fn rejected(&self, source: &str, reason: &str) {
        self.observed(source, "rejected");
        self.rejections.with_label_values(&[source, reason]).inc();
    }

    pub(crate) fn failed(&self, source: &str, reason: &str) {
        self.failures.with_label_values(&[source, reason]).inc();
    }

    /// Failed rounds of `source` for `reason` so far (tests).
    pub fn failures(&self, source: &str, reason: &str) -> u64 {
        self.failures.with_label_values(&[source, reason]).get()
    }

    /// Rejections of `source` by `reason` so far (tests).
    pub fn rejections(&self, source: &str, reason: &str) -> u64 {
        self.rejections.with_label_values(&[source, reason]).get()
    }
}

impl Default for IngestMetrics {
    fn default() -> Self {
        IngestMetrics::new()
    }
}
