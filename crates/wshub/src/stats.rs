//! Counters of the hub's traffic, kept in atomics and read as a [`Stats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// A snapshot of the hub's counters (totals since the hub was built, except the gauges
/// `connections` and `rooms`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Connections open now.
    pub connections: usize,
    /// Connections accepted since the start.
    pub total_connections: u64,
    /// Rooms with at least one member.
    pub rooms: usize,
    /// Messages received from peers.
    pub messages_in: u64,
    /// Payload bytes received from peers.
    pub bytes_in: u64,
    /// Messages written to peers (one per recipient).
    pub messages_out: u64,
    /// Payload bytes written to peers.
    pub bytes_out: u64,
    /// Messages dropped because a send queue was full.
    pub dropped_messages: u64,
    /// Connections closed with 1013 because their send queue overflowed.
    pub slow_consumer_disconnects: u64,
    /// Received messages dropped because they came faster than
    /// [`HubConfig::rate_limit`](crate::HubConfig::rate_limit) allows.
    pub rate_limited_messages: u64,
    /// Upgrade requests refused, for any reason (the sum of the four below).
    pub rejected_handshakes: u64,
    /// Refused with 503: over the connection limit, or shutting down.
    pub rejected_unavailable: u64,
    /// Refused with 403: origin not allowed (or the auth hook said forbidden).
    pub rejected_forbidden: u64,
    /// Refused with 401 by the auth hook.
    pub rejected_unauthorized: u64,
    /// Refused with 400 or 426: not a valid WebSocket upgrade request.
    pub rejected_bad_request: u64,
    /// HTTP connections open now that are not WebSockets (the stand-alone
    /// [`Server`](crate::Server) only; see [`HubConfig::max_http_connections`](crate::HubConfig)).
    pub http_connections: u64,
    /// HTTP connections answered 503 and closed at accept because
    /// [`HubConfig::max_http_connections`](crate::HubConfig) or its per-IP bound was reached.
    pub refused_http_connections: u64,
    /// How long messages waited between being made and being written to a socket.
    pub write_latency: LatencyHistogram,
}

/// Upper bounds (in microseconds) of the [`LatencyHistogram`] buckets; a last, unbounded
/// bucket follows them.
pub const LATENCY_BUCKET_BOUNDS_MICROS: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// A histogram of latencies in fixed buckets (see [`LATENCY_BUCKET_BOUNDS_MICROS`]).
///
/// Recorded once per vectored write: every message of a write is counted with the wait
/// of the oldest one, which bounds the cost at one update per write while never
/// under-reporting a message's wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LatencyHistogram {
    /// Messages per bucket (not cumulative); the last bucket is everything slower than
    /// the last bound.
    pub buckets: [u64; 15],
    /// The number of messages recorded.
    pub count: u64,
    /// The sum of their latencies, in microseconds.
    pub sum_micros: u64,
}

/// The live counters behind [`Stats`]. Relaxed atomics: each counter is exact, but a
/// snapshot is not one atomic cut across all of them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) total_connections: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) dropped_messages: AtomicU64,
    pub(crate) slow_consumer_disconnects: AtomicU64,
    pub(crate) rate_limited_messages: AtomicU64,
    pub(crate) rejected_unavailable: AtomicU64,
    pub(crate) rejected_forbidden: AtomicU64,
    pub(crate) rejected_unauthorized: AtomicU64,
    pub(crate) rejected_bad_request: AtomicU64,
    pub(crate) http_connections: AtomicU64,
    pub(crate) refused_http_connections: AtomicU64,
    latency_buckets: [AtomicU64; 15],
    latency_sum_micros: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// Counts `messages` that waited `micros` each.
    pub(crate) fn record_latency(&self, micros: u64, messages: u64) {
        let bucket = LATENCY_BUCKET_BOUNDS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(LATENCY_BUCKET_BOUNDS_MICROS.len());
        if let Some(counter) = self.latency_buckets.get(bucket) {
            counter.fetch_add(messages, Relaxed);
        }
        self.latency_sum_micros
            .fetch_add(micros.saturating_mul(messages), Relaxed);
    }

    pub(crate) fn snapshot(&self, connections: usize, rooms: usize) -> Stats {
        let buckets = std::array::from_fn(|i| self.latency_buckets[i].load(Relaxed));
        let rejected = [
            self.rejected_unavailable.load(Relaxed),
            self.rejected_forbidden.load(Relaxed),
            self.rejected_unauthorized.load(Relaxed),
            self.rejected_bad_request.load(Relaxed),
        ];
        Stats {
            connections,
            total_connections: self.total_connections.load(Relaxed),
            rooms,
            messages_in: self.messages_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            dropped_messages: self.dropped_messages.load(Relaxed),
            slow_consumer_disconnects: self.slow_consumer_disconnects.load(Relaxed),
            rate_limited_messages: self.rate_limited_messages.load(Relaxed),
            rejected_handshakes: rejected.iter().sum(),
            rejected_unavailable: rejected[0],
            rejected_forbidden: rejected[1],
            rejected_unauthorized: rejected[2],
            rejected_bad_request: rejected[3],
            http_connections: self.http_connections.load(Relaxed),
            refused_http_connections: self.refused_http_connections.load(Relaxed),
            write_latency: LatencyHistogram {
                buckets,
                count: buckets.iter().sum(),
                sum_micros: self.latency_sum_micros.load(Relaxed),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_buckets() {
        let counters = Counters::default();
        counters.record_latency(10, 3);
        counters.record_latency(1_000, 1);
        counters.record_latency(5_000_000, 2);
        let stats = counters.snapshot(0, 0);
        let h = stats.write_latency;
        assert_eq!(h.buckets[0], 3);
        assert_eq!(h.buckets[4], 1);
        assert_eq!(h.buckets[14], 2);
        assert_eq!(h.count, 6);
        assert_eq!(h.sum_micros, 30 + 1_000 + 10_000_000);
    }
}
