//! A histogram of durations that records with atomic adds only.
//!
//! prometheus-client's own `Histogram` takes a mutex on every observation.
//! Request latencies are observed once per attempt, tens of thousands of
//! times a second from many tasks, so this one keeps a counter per bucket
//! and a sum in nanoseconds instead, and adds them up when scraped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Bucket bounds in seconds for HTTP attempts: 1 ms up to the default
/// 30 s request timeout.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds in seconds for plugin calls: 50 µs up to the default
/// 10 s call timeout.
pub const PLUGIN_CALL_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// A histogram of durations with fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending, as they are exposed.
    bounds: &'static [f64],
    /// The same bounds in nanoseconds, for comparing without floats.
    bounds_nanos: Box<[u64]>,
    /// Observations per bucket, not cumulative. The last one counts those
    /// above every bound.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A histogram's values at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Each finite upper bound with the observations at or below it,
    /// cumulative as exposed.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    /// Creates an empty histogram with `bounds` in seconds.
    ///
    /// # Panics
    ///
    /// Panics when the bounds are not finite, positive and ascending.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1])
                && bounds.iter().all(|bound| bound.is_finite() && *bound > 0.0),
            "histogram bounds must be finite, positive and ascending: {bounds:?}"
        );
        let bounds_nanos = bounds
            .iter()
            .map(|seconds| Duration::from_secs_f64(*seconds).as_nanos() as u64)
            .collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            bounds,
            bounds_nanos,
            counts,
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration: two atomic adds.
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // A bucket counts the observations at or below its bound.
        let bucket = self.bounds_nanos.partition_point(|bound| *bound < nanos);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Returns the current values. The count is the sum of the buckets, so
    /// the two agree even while other threads observe.
    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Relaxed);
            buckets.push((*bound, cumulative));
        }
        let above = self.counts[self.bounds.len()].load(Relaxed);
        Snapshot {
            buckets,
            count: cumulative + above,
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot();
        // The encoder wants the count of each bucket alone and adds them up
        // itself.
        let mut previous = 0;
        let buckets: Vec<(f64, u64)> = snapshot
            .buckets
            .iter()
            .map(|(bound, cumulative)| {
                let alone = cumulative - previous;
                previous = *cumulative;
                (*bound, alone)
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(snapshot.sum_seconds, snapshot.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_includes_durations_equal_to_its_bound() {
        let histogram = Histogram::new(&[0.001, 0.01, 0.1]);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_secs(2));

        let snapshot = histogram.snapshot();

        assert_eq!(snapshot.buckets, [(0.001, 2), (0.01, 3), (0.1, 3)]);
        assert_eq!(snapshot.count, 4);
        assert!((snapshot.sum_seconds - 2.0065).abs() < 1e-9);
    }

    #[test]
    fn empty_histogram_counts_nothing() {
        let snapshot = Histogram::new(REQUEST_BUCKETS).snapshot();
        assert_eq!(snapshot.count, 0);
        assert_eq!(snapshot.sum_seconds, 0.0);
        assert!(snapshot.buckets.iter().all(|(_, count)| *count == 0));
    }

    #[test]
    #[should_panic(expected = "ascending")]
    fn bounds_out_of_order_panic() {
        Histogram::new(&[0.1, 0.01]);
    }
}
