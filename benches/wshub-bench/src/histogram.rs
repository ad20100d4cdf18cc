//! A lock-free log-linear histogram of durations in nanoseconds.
//!
//! Thousands of receiver tasks record into one histogram, so it is a fixed array of atomic
//! counters rather than a per-task sample vector: memory stays bounded (about 30 KiB) whatever
//! the number of messages. Each power of two is split into 64 linear sub-buckets, so a
//! reported quantile is within 1/64 (about 1.6 %) of the true value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 6;
const SUB_COUNT: u64 = 1 << SUB_BITS;
/// Enough buckets for any `u64`: the linear range below `SUB_COUNT`, then one row per exponent.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB_COUNT as usize;

/// Counts of durations by bucket, safe to share between tasks.
#[derive(Debug)]
pub(crate) struct Histogram {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
    max_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    pub(crate) fn new() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            max_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub(crate) fn record(&self, value: Duration) {
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.record_nanos(nanos);
    }

    /// Records one duration given in nanoseconds.
    pub(crate) fn record_nanos(&self, nanos: u64) {
        // Relaxed is enough: counts are only read after every recording task has stopped.
        if let Some(slot) = self.counts.get(bucket_of(nanos)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        self.max_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    /// How many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The largest recorded value, exact.
    pub(crate) fn max(&self) -> Duration {
        Duration::from_nanos(self.max_nanos.load(Ordering::Relaxed))
    }

    /// The value at quantile `q` (0.0..=1.0), as the upper edge of its bucket (never above the
    /// maximum); zero when nothing was recorded.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        // The rank of the wanted value, 1-based; a float is precise enough for a rank.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (index, slot) in self.counts.iter().enumerate() {
            seen += slot.load(Ordering::Relaxed);
            if seen >= rank {
                return Duration::from_nanos(
                    upper_edge(index).min(self.max_nanos.load(Ordering::Relaxed)),
                );
            }
        }
        self.max()
    }
}

/// The bucket holding `value`.
fn bucket_of(value: u64) -> usize {
    if value < SUB_COUNT {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= SUB_BITS
    let shift = exponent - SUB_BITS;
    let sub = (value >> shift) & (SUB_COUNT - 1);
    ((u64::from(shift) + 1) * SUB_COUNT + sub) as usize
}

/// The largest value that falls in bucket `index`.
fn upper_edge(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_COUNT {
        return index;
    }
    let shift = index / SUB_COUNT - 1;
    let sub = index % SUB_COUNT;
    let low = (SUB_COUNT + sub) << shift;
    low.saturating_add((1u64 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1000,
            123_456,
            10_000_000_000,
            u64::MAX,
        ] {
            let b = bucket_of(v);
            assert!(b >= last, "bucket of {v} went backwards");
            last = b;
            let edge = upper_edge(b);
            assert!(edge >= v, "upper edge {edge} below {v}");
            assert!(edge - v <= v / 64 + 1, "bucket of {v} too wide: {edge}");
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record_nanos(v * 1000);
        }
        let p50 = h.quantile(0.5).as_nanos() as f64;
        let p99 = h.quantile(0.99).as_nanos() as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.02, "p50 {p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.02, "p99 {p99}");
        assert_eq!(h.max(), Duration::from_millis(10));
        assert_eq!(h.count(), 10_000);
    }
}
