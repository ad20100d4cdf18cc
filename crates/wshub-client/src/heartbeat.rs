//! The heartbeat that notices a dead peer: after `interval` without receiving anything, send
//! a WebSocket ping; if nothing at all (pong, message, ping) arrives within `timeout` of it,
//! the connection is dead.
//!
//! A half-open TCP connection (server host gone, NAT entry expired) gives no error until a
//! write times out minutes later; only a reply that fails to come reveals it. Any received
//! frame counts as a reply, so a busy connection is never pinged.

use std::time::Duration;

use tokio::time::Instant;

/// Heartbeat timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Silence after which a ping is sent. Default: 20 s (the server pings every 25 s, so
    /// a healthy wshub connection is rarely pinged from this side).
    pub interval: Duration,
    /// How long to wait for any frame after the ping. Default: 10 s.
    pub timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What the heartbeat wants when its deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Send a ping now.
    Ping,
    /// The ping went unanswered: the peer is dead.
    Dead,
}

/// The heartbeat of one connection.
#[derive(Debug)]
pub(crate) struct HeartbeatState {
    config: Heartbeat,
    /// When the unanswered ping was sent, if one is outstanding.
    ping_sent: Option<Instant>,
    deadline: Instant,
}

impl HeartbeatState {
    pub(crate) fn new(config: Heartbeat, now: Instant) -> HeartbeatState {
        HeartbeatState {
            config,
            ping_sent: None,
            deadline: now + config.interval,
        }
    }

    /// When [`HeartbeatState::fire`] is due.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Something arrived: the peer is alive.
    pub(crate) fn received(&mut self, now: Instant) {
        self.ping_sent = None;
        self.deadline = now + self.config.interval;
    }

    /// The deadline passed.
    pub(crate) fn fire(&mut self, now: Instant) -> Beat {
        if self.ping_sent.is_some() {
            return Beat::Dead;
        }
        self.ping_sent = Some(now);
        self.deadline = now + self.config.timeout;
        Beat::Ping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_after_silence_and_dies_without_reply() {
        let t0 = Instant::now();
        let config = Heartbeat {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(5),
        };
        let mut hb = HeartbeatState::new(config, t0);
        assert_eq!(hb.deadline(), t0 + Duration::from_secs(20));
        // Traffic pushes the ping back.
        hb.received(t0 + Duration::from_secs(15));
        assert_eq!(hb.deadline(), t0 + Duration::from_secs(35));
        assert_eq!(hb.fire(t0 + Duration::from_secs(35)), Beat::Ping);
        assert_eq!(hb.deadline(), t0 + Duration::from_secs(40));
        // A pong (or anything) answers it.
        hb.received(t0 + Duration::from_secs(36));
        assert_eq!(hb.fire(t0 + Duration::from_secs(56)), Beat::Ping);
        // Silence after the ping: dead.
        assert_eq!(hb.fire(t0 + Duration::from_secs(61)), Beat::Dead);
    }
}
