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
    /// Upgrade requests refused (limits, origin, auth, malformed).
    pub rejected_handshakes: u64,
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
    pub(crate) rejected_handshakes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, connections: usize, rooms: usize) -> Stats {
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
            rejected_handshakes: self.rejected_handshakes.load(Relaxed),
        }
    }
}
