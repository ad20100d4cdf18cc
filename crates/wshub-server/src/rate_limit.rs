//! Per-connection rate limiting: a token bucket, and a detector of sustained abuse.
//!
//! Each connection owns one [`RateLimiter`] (no sharing, no lock: its reader task calls
//! [`RateLimiter::check`] once per frame, decoded or not, passing the current [`Instant`],
//! which makes the limiter deterministic in tests). A command over the limit is answered with a
//! `rate_limited` error frame and not executed; that never closes the connection by itself.
//! Only *sustained* abuse does (docs/PROTOCOL.md: close code 1008): more than
//! [`RateLimitConfig::max_rejections`] rejections within one
//! [`RateLimitConfig::rejection_window`].
//!
//! Why not "N consecutive rejections": a flooding client keeps getting an occasional
//! command through as the bucket refills, which would reset a consecutive count forever.
//! Counting rejections per window catches it, while a client that bursts now and then, or
//! runs just above the rate, stays below the threshold.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Rate limit settings, shared by every connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained commands per second. Default: 50.
    pub per_second: f64,
    /// How many commands may arrive at once after a quiet spell (the bucket's size).
    /// Default: 100.
    pub burst: u32,
    /// Rejections tolerated within one window before the connection is closed.
    /// Default: 100.
    pub max_rejections: u32,
    /// The window rejections are counted in. Default: 10 s.
    pub rejection_window: Duration,
    /// The commands all connections from one IP address may send together, sustained
    /// and at once; reconnecting does not refill it (see [`AddressLimits`]). `None` for no
    /// such limit. Default: 2000 per second, bursts of 5000.
    pub per_address: Option<(f64, u32)>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: 50.0,
            burst: 100,
            max_rejections: 100,
            rejection_window: Duration::from_secs(10),
            per_address: Some((2000.0, 5000)),
        }
    }
}

impl RateLimitConfig {
    /// The library's configuration of one connection's own limiter: this without
    /// [`per_address`](Self::per_address).
    pub fn per_connection(&self) -> wshub::rate_limit::RateLimitConfig {
        wshub::rate_limit::RateLimitConfig {
            per_second: self.per_second,
            burst: self.burst,
            max_rejections: self.max_rejections,
            rejection_window: self.rejection_window,
        }
    }
}

// The bucket, the detector and their decision are the library's (one home for each);
// what the server adds is the bucket an address's connections share.
pub use wshub::rate_limit::{AbuseDetector, Decision, TokenBucket};

/// The rate limiter of one connection: the library's limiter (a [`TokenBucket`] of its own
/// and an [`AbuseDetector`]), and the bucket of its address that it shares with the other
/// connections from there.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    connection: wshub::rate_limit::RateLimiter,
    address: Option<SharedBucket>,
}

impl RateLimiter {
    /// A limiter for a connection opened at `now`, with a full bucket of its own and no
    /// address bucket.
    pub fn new(config: &RateLimitConfig, now: Instant) -> RateLimiter {
        RateLimiter {
            connection: wshub::rate_limit::RateLimiter::new(&config.per_connection(), now),
            address: None,
        }
    }

    /// A limiter for a connection from an address already known (connected now, or within
    /// the time its bucket takes to refill): its own bucket starts with one second's worth
    /// of commands instead of the whole burst, so that reconnecting does not buy a burst.
    pub fn for_returning_address(config: &RateLimitConfig, now: Instant) -> RateLimiter {
        let first = config.per_second.ceil().clamp(1.0, f64::from(config.burst));
        // `first` is a whole number within 1..=burst, so the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let first = first as u32;
        RateLimiter {
            connection: wshub::rate_limit::RateLimiter::with_tokens(
                &config.per_connection(),
                first,
                now,
            ),
            address: None,
        }
    }

    /// The same limiter, also charging each command to its address's bucket.
    pub fn sharing(mut self, address: SharedBucket) -> RateLimiter {
        self.address = Some(address);
        self
    }

    /// Decides about one command arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Decision {
        let address = &self.address;
        self.connection.check_also(now, || {
            address
                .as_ref()
                .is_none_or(|shared| shared.try_acquire(now))
        })
    }
}

/// A [`TokenBucket`] shared by the connections from one address.
#[derive(Debug, Clone)]
pub struct SharedBucket(Arc<Mutex<TokenBucket>>);

impl SharedBucket {
    fn try_acquire(&self, now: Instant) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_acquire(now)
    }

    fn is_full(&self, now: Instant) -> bool {
        let bucket = self.0.lock().unwrap_or_else(|e| e.into_inner());
        bucket.available(now) >= bucket.burst()
    }
}

/// What is kept per client IP address: how many connections it has open, and the command
/// bucket they share.
///
/// An address is remembered while it has a connection, and after its last one until its
/// bucket has refilled ([`AddressLimits::sweep`]), so that closing and reopening
/// connections never buys a fresh bucket. The map holds at most the addresses connected
/// now plus those that left within the bucket's refill time.
#[derive(Debug)]
pub struct AddressLimits {
    max_connections: usize,
    commands: Option<(f64, u32)>,
    addresses: Mutex<HashMap<IpAddr, Address>>,
}

#[derive(Debug)]
struct Address {
    connections: usize,
    commands: Option<SharedBucket>,
}

/// One connection's place in [`AddressLimits`], given back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    limits: Arc<AddressLimits>,
    ip: IpAddr,
    commands: Option<SharedBucket>,
    returning: bool,
}

impl AddressSlot {
    /// Whether the address was known when this connection came: another connection from
    /// it is open, or one left within the time its bucket takes to refill.
    pub fn returning(&self) -> bool {
        self.returning
    }

    /// The command bucket shared by every connection from this address, if limited.
    pub fn commands(&self) -> Option<SharedBucket> {
        self.commands.clone()
    }
}

impl AddressLimits {
    /// At most `max_connections` open per address, and the shared command bucket
    /// `commands` (per second, burst), if any.
    pub fn new(max_connections: usize, commands: Option<(f64, u32)>) -> AddressLimits {
        AddressLimits {
            max_connections,
            commands,
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more connection from `ip` at `now`, or `None` when the address has
    /// `max_connections` open already.
    pub fn admit(limits: &Arc<AddressLimits>, ip: IpAddr, now: Instant) -> Option<AddressSlot> {
        let ip = ip.to_canonical();
        let mut addresses = limits.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let returning = addresses.contains_key(&ip);
        let address = addresses.entry(ip).or_insert_with(|| Address {
            connections: 0,
            commands: limits.commands.map(|(per_second, burst)| {
                SharedBucket(Arc::new(Mutex::new(TokenBucket::new(
                    per_second, burst, now,
                ))))
            }),
        });
        if address.connections >= limits.max_connections {
            return None;
        }
        address.connections += 1;
        Some(AddressSlot {
            limits: Arc::clone(limits),
            ip,
            commands: address.commands.clone(),
            returning,
        })
    }

    /// Forgets the addresses without a connection whose bucket has refilled: nothing is
    /// lost by starting them afresh.
    pub fn sweep(&self, now: Instant) {
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        addresses.retain(|_, address| {
            address.connections > 0
                || address
                    .commands
                    .as_ref()
                    .is_some_and(|bucket| !bucket.is_full(now))
        });
    }

    /// The addresses remembered now.
    pub fn len(&self) -> usize {
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut addresses = self
            .limits
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(address) = addresses.get_mut(&self.ip) {
            address.connections = address.connections.saturating_sub(1);
            if address.connections == 0 && address.commands.is_none() {
                addresses.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_remembered_until_its_bucket_refills() {
        let limits = Arc::new(AddressLimits::new(2, Some((10.0, 5))));
        let ip: IpAddr = [192, 0, 2, 1].into();
        let start = Instant::now();
        let first = AddressLimits::admit(&limits, ip, start).expect("first");
        let second = AddressLimits::admit(&limits, ip, start).expect("second");
        assert!(!first.returning() && second.returning());
        assert!(AddressLimits::admit(&limits, ip, start).is_none());
        let shared = first.commands().expect("bucket");
        for _ in 0..5 {
            assert!(shared.try_acquire(start));
        }
        drop((first, second));
        // No connection left, but the bucket is empty: a new connection gets it back.
        limits.sweep(start);
        assert_eq!(limits.len(), 1);
        let again = AddressLimits::admit(&limits, ip, start).expect("again");
        assert!(again.returning());
        assert!(!again.commands().expect("bucket").try_acquire(start));
        drop(again);
        // Refilled (5 tokens at 10/s): forgotten, and new again.
        let later = start + Duration::from_millis(600);
        limits.sweep(later);
        assert!(limits.is_empty());
        assert!(
            !AddressLimits::admit(&limits, ip, later)
                .expect("new")
                .returning()
        );
    }

    #[test]
    fn a_returning_address_starts_with_one_seconds_worth() {
        let config = RateLimitConfig {
            per_second: 10.0,
            burst: 40,
            ..RateLimitConfig::default()
        };
        let start = Instant::now();
        let allowed = |mut limiter: RateLimiter| {
            (0..100)
                .filter(|_| limiter.check(start) == Decision::Allow)
                .count()
        };
        assert_eq!(allowed(RateLimiter::new(&config, start)), 40);
        assert_eq!(
            allowed(RateLimiter::for_returning_address(&config, start)),
            10
        );
    }

    #[test]
    fn connections_of_one_address_share_its_bucket() {
        let config = RateLimitConfig {
            per_second: 10.0,
            burst: 40,
            max_rejections: 3,
            ..RateLimitConfig::default()
        };
        let limits = Arc::new(AddressLimits::new(10, Some((1.0, 5))));
        let ip: IpAddr = [192, 0, 2, 7].into();
        let start = Instant::now();
        let slots = [
            AddressLimits::admit(&limits, ip, start).expect("first"),
            AddressLimits::admit(&limits, ip, start).expect("second"),
        ];
        let [mut first, mut second] = slots
            .each_ref()
            .map(|slot| RateLimiter::new(&config, start).sharing(slot.commands().expect("bucket")));
        // Each has 40 of its own, but the address has 5 for both together.
        let allowed = (0..3)
            .filter(|_| first.check(start) == Decision::Allow)
            .count()
            + (0..3)
                .filter(|_| second.check(start) == Decision::Allow)
                .count();
        assert_eq!(allowed, 5);
        // A refusal by the address counts towards sustained abuse like any other: more
        // than 3 in the window close.
        for _ in 0..3 {
            assert_eq!(first.check(start), Decision::Reject);
        }
        assert_eq!(first.check(start), Decision::Close);
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
