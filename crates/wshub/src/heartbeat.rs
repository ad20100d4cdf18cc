//! The deadlines of one connection: when to ping, when a silent peer is dead, when a
//! stalled write or an unanswered close gives up. Pure bookkeeping over `Instant`s, so the
//! connection task needs one timer and the rules are testable without sockets.

use std::time::Instant;

#[cfg(test)]
use std::time::Duration;

use crate::HubConfig;

/// What the deadlines call for now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing is due.
    Idle,
    /// Send a ping now.
    Ping,
    /// No frame arrived within the pong wait after a ping.
    PongTimeout,
    /// A write has been pending for longer than the write wait.
    WriteTimeout,
    /// The close handshake was not completed in time.
    CloseTimeout,
}

/// The deadlines themselves (not the durations, which the hub's config holds once for
/// every connection), so a connection carries only a few instants.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    next_ping: Instant,
    /// When the oldest unanswered ping stops being answerable in time.
    pong_deadline: Option<Instant>,
    /// When the write in progress, which the socket could not take at once, times out.
    write_deadline: Option<Instant>,
    /// When the connection stops waiting for the close handshake.
    close_by: Option<Instant>,
}

impl Heartbeat {
    pub(crate) fn new(config: &HubConfig, now: Instant) -> Self {
        Self {
            next_ping: now + config.ping_interval,
            pong_deadline: None,
            write_deadline: None,
            close_by: None,
        }
    }

    /// Any frame from the peer proves it alive.
    pub(crate) fn heard(&mut self) {
        self.pong_deadline = None;
    }

    pub(crate) fn write_started(&mut self, now: Instant, config: &HubConfig) {
        self.write_deadline.get_or_insert(now + config.write_wait);
    }

    pub(crate) fn write_finished(&mut self) {
        self.write_deadline = None;
    }

    /// The connection is closing: stop pinging and give the handshake one write wait.
    pub(crate) fn closing(&mut self, now: Instant, config: &HubConfig) {
        self.close_by.get_or_insert(now + config.write_wait);
    }

    pub(crate) fn check(&mut self, now: Instant, config: &HubConfig) -> Beat {
        if self.close_by.is_some_and(|t| now >= t) {
            return Beat::CloseTimeout;
        }
        if self.write_deadline.is_some_and(|t| now >= t) {
            return Beat::WriteTimeout;
        }
        if self.close_by.is_some() {
            return Beat::Idle;
        }
        if self.pong_deadline.is_some_and(|t| now >= t) {
            return Beat::PongTimeout;
        }
        if now >= self.next_ping {
            self.next_ping = now + config.ping_interval;
            self.pong_deadline.get_or_insert(now + config.pong_wait);
            return Beat::Ping;
        }
        Beat::Idle
    }

    /// The earliest instant at which [`check`](Self::check) may return something new.
    pub(crate) fn next_deadline(&self) -> Instant {
        let mut next = self.close_by.unwrap_or(self.next_ping);
        if let Some(t) = self.write_deadline {
            next = next.min(t);
        }
        if self.close_by.is_none()
            && let Some(t) = self.pong_deadline
        {
            next = next.min(t);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HubConfig {
        HubConfig::default()
            .ping_interval(Duration::from_secs(10))
            .pong_wait(Duration::from_secs(25))
            .write_wait(Duration::from_secs(5))
    }

    #[test]
    fn pings_on_schedule_and_times_out_a_silent_peer() {
        let t0 = Instant::now();
        let c = config();
        let mut hb = Heartbeat::new(&c, t0);
        assert_eq!(hb.check(t0, &c), Beat::Idle);
        assert_eq!(hb.next_deadline(), t0 + Duration::from_secs(10));
        assert_eq!(hb.check(t0 + Duration::from_secs(10), &c), Beat::Ping);
        assert_eq!(hb.check(t0 + Duration::from_secs(20), &c), Beat::Ping);
        // The pong wait counts from the first unanswered ping.
        assert_eq!(hb.next_deadline(), t0 + Duration::from_secs(30));
        assert_eq!(
            hb.check(t0 + Duration::from_secs(35), &c),
            Beat::PongTimeout
        );
    }

    #[test]
    fn an_answer_resets_the_pong_wait() {
        let t0 = Instant::now();
        let c = config();
        let mut hb = Heartbeat::new(&c, t0);
        assert_eq!(hb.check(t0 + Duration::from_secs(10), &c), Beat::Ping);
        hb.heard();
        assert_eq!(hb.check(t0 + Duration::from_secs(19), &c), Beat::Idle);
        assert_eq!(hb.check(t0 + Duration::from_secs(40), &c), Beat::Ping);
    }

    #[test]
    fn stalled_writes_and_closes_time_out() {
        let t0 = Instant::now();
        let c = config();
        let mut hb = Heartbeat::new(&c, t0);
        hb.write_started(t0, &c);
        assert_eq!(hb.next_deadline(), t0 + Duration::from_secs(5));
        assert_eq!(
            hb.check(t0 + Duration::from_secs(5), &c),
            Beat::WriteTimeout
        );
        hb.write_finished();
        hb.closing(t0 + Duration::from_secs(6), &c);
        assert_eq!(
            hb.check(t0 + Duration::from_secs(10), &c),
            Beat::Idle,
            "no pings while closing"
        );
        assert_eq!(
            hb.check(t0 + Duration::from_secs(11), &c),
            Beat::CloseTimeout
        );
    }
}
