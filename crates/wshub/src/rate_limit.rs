//! Per-connection rate limiting: a token bucket, and a detector of sustained abuse.
//!
//! Each connection owns one [`RateLimiter`] (no sharing, no lock: its task calls
//! [`RateLimiter::check`] once per received message, passing the current [`Instant`], which
//! makes the limiter deterministic in tests). With
//! [`HubConfig::rate_limit`](crate::HubConfig::rate_limit) set, a message over the limit is
//! dropped (counted in [`Stats::rate_limited_messages`](crate::Stats)) and never reaches the
//! callbacks or the handler; that never closes the connection by itself. Only *sustained*
//! abuse does, with 1008 (policy violation): more than
//! [`RateLimitConfig::max_rejections`] rejections within one
//! [`RateLimitConfig::rejection_window`].
//!
//! Why not "N consecutive rejections": a flooding client keeps getting an occasional
//! message through as the bucket refills, which would reset a consecutive count forever.
//! Counting rejections per window catches it, while a client that bursts now and then, or
//! runs just above the rate, stays below the threshold.

use std::time::{Duration, Instant};

/// Rate limit settings, shared by every connection.
///
/// # Examples
/// ```
/// use wshub::{HubConfig, RateLimitConfig};
/// let config = HubConfig::default().rate_limit(RateLimitConfig {
///     per_second: 20.0,
///     burst: 40,
///     ..RateLimitConfig::default()
/// });
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained messages per second. Default: 50.
    pub per_second: f64,
    /// How many messages may arrive at once after a quiet spell (the bucket's size).
    /// Default: 100.
    pub burst: u32,
    /// Rejections tolerated within one window before the connection is closed.
    /// Default: 100.
    pub max_rejections: u32,
    /// The window rejections are counted in. Default: 10 s.
    pub rejection_window: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: 50.0,
            burst: 100,
            max_rejections: 100,
            rejection_window: Duration::from_secs(10),
        }
    }
}

/// What to do with one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Act on it.
    Allow,
    /// Do not act on it (the hub drops it; the server answers with a `rate_limited` error).
    Reject,
    /// Sustained abuse: answer as for [`Decision::Reject`], then close the connection with
    /// 1008. Once returned, every later check returns it too.
    Close,
}

/// A token bucket: holds up to `burst` tokens, refills at `per_second`, and each message
/// takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket. A rate that is not a positive finite number never refills, and
    /// `burst` 0 allows nothing; configuration should refuse both.
    pub fn new(per_second: f64, burst: u32, now: Instant) -> TokenBucket {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            0.0
        };
        TokenBucket {
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            refilled_at: now,
        }
    }

    /// A bucket holding only `tokens` of its `burst` (at most `burst`): it refills at the
    /// same rate to the same size, but starts with less, for a client that should not get
    /// a whole burst at once (one reconnecting, say).
    pub fn with_tokens(per_second: f64, burst: u32, tokens: u32, now: Instant) -> TokenBucket {
        let mut bucket = TokenBucket::new(per_second, burst, now);
        bucket.tokens = f64::from(tokens.min(burst));
        bucket
    }

    /// Takes a token if one is available at `now`. An instant earlier than a previous one
    /// counts as no time passing.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        self.try_take(now, 1.0)
    }

    /// Takes `amount` tokens if that many are available at `now` (an amount larger than
    /// the burst is taken from a full bucket, which it empties). An instant earlier than a
    /// previous one counts as no time passing.
    pub fn try_take(&mut self, now: Instant, amount: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        if now > self.refilled_at {
            self.refilled_at = now;
        }
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        let amount = amount.min(self.burst).max(1.0);
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }

    /// How many tokens the bucket holds when full.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// The tokens available now (fractional while refilling), without taking one.
    pub fn available(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst)
    }
}

/// Counts rejections in fixed windows and reports sustained abuse.
#[derive(Debug, Clone)]
pub struct AbuseDetector {
    max_rejections: u32,
    window: Duration,
    window_start: Option<Instant>,
    rejections: u32,
}

impl AbuseDetector {
    /// Reports abuse at more than `max_rejections` rejections within `window`.
    pub fn new(max_rejections: u32, window: Duration) -> AbuseDetector {
        AbuseDetector {
            max_rejections,
            window,
            window_start: None,
            rejections: 0,
        }
    }

    /// Records one rejection at `now`; true when that makes the abuse sustained.
    ///
    /// A window opens at the first rejection and lasts `window`; the count starts again
    /// with the first rejection after it.
    pub fn record_rejection(&mut self, now: Instant) -> bool {
        let in_window = self
            .window_start
            .is_some_and(|start| now.saturating_duration_since(start) < self.window);
        if !in_window {
            self.window_start = Some(now);
            self.rejections = 0;
        }
        self.rejections = self.rejections.saturating_add(1);
        self.rejections > self.max_rejections
    }
}

/// The rate limiter of one connection: a [`TokenBucket`] and an [`AbuseDetector`].
#[derive(Debug, Clone)]
pub struct RateLimiter {
    bucket: TokenBucket,
    abuse: AbuseDetector,
    closed: bool,
}

impl RateLimiter {
    /// A limiter for a connection opened at `now`, with a full bucket.
    pub fn new(config: &RateLimitConfig, now: Instant) -> RateLimiter {
        RateLimiter {
            bucket: TokenBucket::new(config.per_second, config.burst, now),
            abuse: AbuseDetector::new(config.max_rejections, config.rejection_window),
            closed: false,
        }
    }

    /// A limiter whose bucket starts with only `tokens` of its burst (see
    /// [`TokenBucket::with_tokens`]).
    pub fn with_tokens(config: &RateLimitConfig, tokens: u32, now: Instant) -> RateLimiter {
        RateLimiter {
            bucket: TokenBucket::with_tokens(config.per_second, config.burst, tokens, now),
            ..RateLimiter::new(config, now)
        }
    }

    /// Decides about one message arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Decision {
        self.check_also(now, || true)
    }

    /// Decides about one message arriving at `now` that another limit must allow too
    /// (a bucket shared with other connections, say): `also` is asked only when this
    /// limiter's own bucket allows the message, and a refusal by either counts towards
    /// sustained abuse.
    pub fn check_also(&mut self, now: Instant, also: impl FnOnce() -> bool) -> Decision {
        if self.closed {
            return Decision::Close;
        }
        if self.bucket.try_acquire(now) && also() {
            return Decision::Allow;
        }
        if self.abuse.record_rejection(now) {
            self.closed = true;
            Decision::Close
        } else {
            Decision::Reject
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5, start);
        for _ in 0..5 {
            assert!(bucket.try_acquire(start));
        }
        assert!(!bucket.try_acquire(start));
        // 10 per second: one token every 100 ms.
        assert!(!bucket.try_acquire(start + 99 * MS));
        assert!(bucket.try_acquire(start + 100 * MS));
        assert!(!bucket.try_acquire(start + 150 * MS));
        assert!(bucket.try_acquire(start + 200 * MS));
        // A long pause refills to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        assert!((bucket.available(later) - 5.0).abs() < 1e-9);
        for _ in 0..5 {
            assert!(bucket.try_acquire(later));
        }
        assert!(!bucket.try_acquire(later));
    }

    #[test]
    fn a_bucket_can_start_with_less_than_its_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::with_tokens(10.0, 5, 2, start);
        assert!(bucket.try_acquire(start));
        assert!(bucket.try_acquire(start));
        assert!(!bucket.try_acquire(start));
        // It refills to the whole burst.
        assert!((bucket.available(start + Duration::from_secs(60)) - 5.0).abs() < 1e-9);
        let capped = TokenBucket::with_tokens(10.0, 5, 50, start);
        assert!((capped.available(start) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn bucket_tolerates_time_going_backwards() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(1.0, 1, start);
        assert!(bucket.try_acquire(start));
        assert!(!bucket.try_acquire(start - Duration::from_secs(5)));
        assert!(bucket.try_acquire(start + Duration::from_secs(1)));
    }

    #[test]
    fn degenerate_buckets_do_not_panic() {
        let now = Instant::now();
        let mut never = TokenBucket::new(f64::NAN, 0, now);
        assert!(!never.try_acquire(now + Duration::from_secs(10)));
        let mut no_refill = TokenBucket::new(-1.0, 1, now);
        assert!(no_refill.try_acquire(now));
        assert!(!no_refill.try_acquire(now + Duration::from_secs(1000)));
    }

    #[test]
    fn steady_rate_is_never_rejected() {
        let config = RateLimitConfig {
            per_second: 10.0,
            burst: 1,
            ..RateLimitConfig::default()
        };
        let start = Instant::now();
        let mut limiter = RateLimiter::new(&config, start);
        for i in 0..1000u32 {
            assert_eq!(limiter.check(start + i * 100 * MS), Decision::Allow);
        }
    }

    #[test]
    fn occasional_bursts_are_rejected_but_not_closed() {
        let config = RateLimitConfig {
            per_second: 10.0,
            burst: 10,
            max_rejections: 20,
            rejection_window: Duration::from_secs(10),
        };
        let start = Instant::now();
        let mut limiter = RateLimiter::new(&config, start);
        // Every 10 s, a burst of 25: 10 allowed, 15 rejected. Never more than 20 per window.
        for round in 0..10u32 {
            let t = start + round * Duration::from_secs(10);
            let decisions: Vec<Decision> = (0..25).map(|_| limiter.check(t)).collect();
            assert_eq!(
                decisions.iter().filter(|d| **d == Decision::Allow).count(),
                10
            );
            assert_eq!(
                decisions.iter().filter(|d| **d == Decision::Reject).count(),
                15
            );
        }
    }

    #[test]
    fn flooding_is_closed_even_though_some_commands_get_through() {
        let config = RateLimitConfig {
            per_second: 50.0,
            burst: 100,
            max_rejections: 100,
            rejection_window: Duration::from_secs(10),
        };
        let start = Instant::now();
        let mut limiter = RateLimiter::new(&config, start);
        // 1000 commands per second: the bucket lets one through every 20 ms.
        let mut allowed_after_burst = 0;
        let mut closed_at = None;
        for i in 0..5000u32 {
            match limiter.check(start + i * MS) {
                Decision::Allow if i >= 100 => allowed_after_burst += 1,
                Decision::Allow | Decision::Reject => {}
                Decision::Close => {
                    closed_at = Some(i);
                    break;
                }
            }
        }
        assert!(
            allowed_after_burst > 0,
            "a consecutive count would have reset"
        );
        let closed_at = closed_at.unwrap();
        // 100 burst, then ~95% rejected: the 101st rejection comes near 100 + 106 ms.
        assert!((200..260).contains(&closed_at), "{closed_at}");
        // Once closed, always closed.
        assert_eq!(
            limiter.check(start + Duration::from_secs(3600)),
            Decision::Close
        );
    }

    #[test]
    fn rejection_windows_restart() {
        let start = Instant::now();
        let mut detector = AbuseDetector::new(3, Duration::from_secs(1));
        for _ in 0..3 {
            assert!(!detector.record_rejection(start));
        }
        // A new window opens after one second: the count starts again.
        for _ in 0..3 {
            assert!(!detector.record_rejection(start + Duration::from_secs(1)));
        }
        assert!(detector.record_rejection(start + Duration::from_millis(1999)));
    }

    #[test]
    fn defaults() {
        let config = RateLimitConfig::default();
        assert_eq!(config.per_second, 50.0);
        assert_eq!(config.burst, 100);
        assert_eq!(config.max_rejections, 100);
        assert_eq!(config.rejection_window, Duration::from_secs(10));
    }
}
