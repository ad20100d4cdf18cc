//! The deadlines of one connection: when to ping, when a silent peer is dead, when a
//! stalled write or an unanswered close gives up. Pure bookkeeping over `Instant`s, so the
//! connection task needs one timer and the rules are testable without sockets.

use std::time::{Duration, Instant};

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

#[derive(Debug)]
pub(crate) struct Heartbeat {
    ping_interval: Duration,
    pong_wait: Duration,
    write_wait: Duration,
    next_ping: Instant,
    /// When the oldest unanswered ping was sent.
    awaiting_since: Option<Instant>,
    /// When the write in progress began.
    writing_since: Option<Instant>,
    /// When the connection stops waiting for the close handshake.
    close_by: Option<Instant>,
}

impl Heartbeat {
    pub(crate) fn new(config: &HubConfig, now: Instant) -> Self {
        Self {
            ping_interval: config.ping_interval,
            pong_wait: config.pong_wait,
            write_wait: config.write_wait,
            next_ping: now + config.ping_interval,
            awaiting_since: None,
            writing_since: None,
            close_by: None,
        }
    }

    /// Any frame from the peer proves it alive.
    pub(crate) fn heard(&mut self) {
        self.awaiting_since = None;
    }

    pub(crate) fn write_started(&mut self, now: Instant) {
        self.writing_since.get_or_insert(now);
    }

    pub(crate) fn write_finished(&mut self) {
        self.writing_since = None;
    }

    /// The connection is closing: stop pinging and give the handshake one write wait.
    pub(crate) fn closing(&mut self, now: Instant) {
        self.close_by.get_or_insert(now + self.write_wait);
    }

    pub(crate) fn check(&mut self, now: Instant) -> Beat {
        if self.close_by.is_some_and(|t| now >= t) {
            return Beat::CloseTimeout;
        }
        if self
            .writing_since
            .is_some_and(|t| now >= t + self.write_wait)
        {
            return Beat::WriteTimeout;
        }
        if self.close_by.is_some() {
            return Beat::Idle;
        }
        if self
            .awaiting_since
            .is_some_and(|t| now >= t + self.pong_wait)
        {
            return Beat::PongTimeout;
        }
        if now >= self.next_ping {
            self.next_ping = now + self.ping_interval;
            self.awaiting_since.get_or_insert(now);
            return Beat::Ping;
        }
        Beat::Idle
    }

    /// The earliest instant at which [`check`](Self::check) may return something new.
    pub(crate) fn next_deadline(&self) -> Instant {
        let mut next = self.close_by.unwrap_or(self.next_ping);
        if let Some(t) = self.writing_since {
            next = next.min(t + self.write_wait);
        }
        if self.close_by.is_none()
            && let Some(t) = self.awaiting_since
        {
            next = next.min(t + self.pong_wait);
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
        let mut hb = Heartbeat::new(&config(), t0);
        assert_eq!(hb.check(t0), Beat::Idle);
        assert_eq!(hb.next_deadline(), t0 + Duration::from_secs(10));
        assert_eq!(hb.check(t0 + Duration::from_secs(10)), Beat::Ping);
        assert_eq!(hb.check(t0 + Duration::from_secs(20)), Beat::Ping);
        // The pong wait counts from the first unanswered ping.
        assert_eq!(hb.next_deadline(), t0 + Duration::from_secs(30));
        assert_eq!(hb.check(t0 + Duration::from_secs(35)), Beat::PongTimeout);
    }

    #[test]
    fn an_answer_resets_the_pong_wait() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(&config(), t0);
        assert_eq!(hb.check(t0 + Duration::from_secs(10)), Beat::Ping);
        hb.heard();
        assert_eq!(hb.check(t0 + Duration::from_secs(19)), Beat::Idle);
        assert_eq!(hb.check(t0 + Duration::from_secs(40)), Beat::Ping);
    }

    #[test]
    fn stalled_writes_and_closes_time_out() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(&config(), t0);
        hb.write_started(t0);
        assert_eq!(hb.next_deadline(), t0 + Duration::from_secs(5));
        assert_eq!(hb.check(t0 + Duration::from_secs(5)), Beat::WriteTimeout);
        hb.write_finished();
        hb.closing(t0 + Duration::from_secs(6));
        assert_eq!(
            hb.check(t0 + Duration::from_secs(10)),
            Beat::Idle,
            "no pings while closing"
        );
        assert_eq!(hb.check(t0 + Duration::from_secs(11)), Beat::CloseTimeout);
    }
}
