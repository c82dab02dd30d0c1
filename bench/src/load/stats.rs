//! Latency percentiles, rates and ratios: the arithmetic of the report, kept apart so that a
//! unit test can pin it down.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The nearest-rank percentile of `sorted` (ascending): the smallest sample with at least `p` %
/// of all samples at or below it. `None` when there are no samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    debug_assert!((0.0..=100.0).contains(&p), "a percentile is between 0 and 100");
    debug_assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "samples are sorted");
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `ours / baseline`, or `None` when the baseline measured nothing.
pub fn ratio(ours: f64, baseline: f64) -> Option<f64> {
    (baseline.is_finite() && baseline > 0.0 && ours.is_finite()).then(|| ours / baseline)
}

/// Events per second over `elapsed`; zero when nothing was timed.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    match elapsed.as_secs_f64() {
        seconds if seconds > 0.0 => count as f64 / seconds,
        _ => 0.0,
    }
}

/// A latency distribution in milliseconds; percentiles are `None` without samples.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Latency {
    pub fn from_samples(samples: &[Duration]) -> Latency {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        Latency {
            count: ms.len(),
            p50_ms: percentile(&ms, 50.0),
            p95_ms: percentile(&ms, 95.0),
            p99_ms: percentile(&ms, 99.0),
            max_ms: ms.last().copied(),
        }
    }
}

/// Counts by error code, in name order so that reports compare line by line.
pub type ErrorCounts = BTreeMap<String, u64>;

pub fn count(errors: &mut ErrorCounts, code: impl Into<String>) {
    *errors.entry(code.into()).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hundred() -> Vec<f64> {
        (1..=100).map(f64::from).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples = hundred();
        assert_eq!(percentile(&samples, 50.0), Some(50.0));
        assert_eq!(percentile(&samples, 95.0), Some(95.0));
        assert_eq!(percentile(&samples, 99.0), Some(99.0));
        assert_eq!(percentile(&samples, 100.0), Some(100.0));
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 51.0), Some(3.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn a_latency_summary_sorts_its_samples_and_reports_milliseconds() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let latency = Latency::from_samples(&samples);
        assert_eq!(latency.count, 100);
        assert_eq!(latency.p50_ms, Some(50.0));
        assert_eq!(latency.p95_ms, Some(95.0));
        assert_eq!(latency.p99_ms, Some(99.0));
        assert_eq!(latency.max_ms, Some(100.0));
        assert_eq!(Latency::from_samples(&[]), Latency::default());
    }

    #[test]
    fn ratios_divide_by_the_baseline_unless_it_is_empty() {
        assert_eq!(ratio(250.0, 1000.0), Some(0.25));
        assert_eq!(ratio(0.0, 1000.0), Some(0.0));
        assert_eq!(ratio(250.0, 0.0), None);
        assert_eq!(ratio(250.0, f64::NAN), None);
        assert_eq!(ratio(f64::INFINITY, 10.0), None);
    }

    #[test]
    fn rates_are_per_second_of_the_elapsed_time() {
        assert_eq!(per_second(500, Duration::from_secs(2)), 250.0);
        assert_eq!(per_second(500, Duration::ZERO), 0.0);
    }
}
