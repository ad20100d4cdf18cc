//! The reconnect schedule: exponential backoff with full jitter and a cap, and a limit on
//! attempts in a row.
//!
//! Everything here is pure: the randomness comes from a [`Jitter`] the caller passes in, and
//! time from the `now` the caller passes to [`BackoffSchedule::next`], so the schedule is
//! tested against a fixed RNG and a clock that only moves when the test says so.
//!
//! "Full jitter" (the AWS Architecture Blog's name): the delay before attempt `n` (1 for the
//! first) is uniform in `[0, min(max_delay, initial_delay × 2ⁿ⁻¹)]`. Clients dropped together
//! by a server restart then come back spread over the whole window instead of in waves.

use std::fmt;
use std::hash::BuildHasher;
use std::time::Duration;

use tokio::time::Instant;

/// The reconnect policy: how long to wait before each attempt, and how many to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The upper bound of the first delay. Default: 500 ms.
    pub initial_delay: Duration,
    /// The upper bound of every delay (the cap). Default: 30 s.
    pub max_delay: Duration,
    /// Attempts in a row before giving up; 0 for no limit. Default: 0.
    pub max_attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_attempts: 0,
        }
    }
}

impl Backoff {
    /// The same bound before every attempt, with no limit on attempts: `initial_delay`
    /// and `max_delay` both `delay`. Jitter still spreads each wait over `[0, delay]`;
    /// [`ClientBuilder::reconnect_every`](crate::ClientBuilder::reconnect_every) waits
    /// exactly `delay`.
    pub fn fixed(delay: Duration) -> Backoff {
        Backoff {
            initial_delay: delay,
            max_delay: delay,
            max_attempts: 0,
        }
    }

    /// The upper bound of the delay before attempt `attempt` (1 for the first):
    /// `min(max_delay, initial_delay × 2^(attempt−1))`, without overflow.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^31 × any non-zero delay already exceeds every sensible cap; saturate there.
        let exponent = attempt.saturating_sub(1).min(31);
        self.initial_delay
            .checked_mul(1u32 << exponent)
            .unwrap_or(Duration::MAX)
            .min(self.max_delay)
    }

    /// The delay before attempt `attempt`, full jitter: `fraction × ceiling(attempt)`, where
    /// `fraction` is clamped into `[0, 1]`.
    pub fn delay(&self, attempt: u32, fraction: f64) -> Duration {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.ceiling(attempt).mul_f64(fraction)
    }

    /// Whether attempt `attempt` (1 for the first) is allowed.
    pub fn allows(&self, attempt: u32) -> bool {
        self.max_attempts == 0 || attempt <= self.max_attempts
    }
}

/// A source of jitter: numbers in `[0, 1]`.
///
/// [`RandomJitter`] is the default; tests pass a [`FixedJitter`] or their own sequence.
pub trait Jitter: Send + fmt::Debug {
    /// The next fraction of the delay ceiling to wait, in `[0, 1]`.
    fn fraction(&mut self) -> f64;
}

/// Pseudo-random jitter (SplitMix64), seeded from the standard library's per-process random
/// keys, so no RNG dependency is needed for something that only spreads reconnects out.
#[derive(Debug, Clone)]
pub struct RandomJitter {
    state: u64,
}

impl RandomJitter {
    /// A generator seeded from the process's random hash keys.
    pub fn new() -> RandomJitter {
        let seed = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
        RandomJitter::with_seed(seed)
    }

    /// A generator with a fixed seed (the same sequence every time).
    pub fn with_seed(seed: u64) -> RandomJitter {
        RandomJitter { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Default for RandomJitter {
    fn default() -> Self {
        RandomJitter::new()
    }
}

impl Jitter for RandomJitter {
    fn fraction(&mut self) -> f64 {
        // The top 53 bits make an exact f64 in [0, 1).
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Always the same fraction: `FixedJitter(1.0)` waits the full ceiling, `FixedJitter(0.0)`
/// not at all. For tests and for callers who want plain exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn fraction(&mut self) -> f64 {
        self.0
    }
}

/// What to do after a failed or dropped connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Make attempt `attempt` at `at`, `delay` from now.
    Retry {
        /// The attempt's number in this run of failures, 1 for the first.
        attempt: u32,
        /// How long to wait.
        delay: Duration,
        /// When to make the attempt.
        at: Instant,
    },
    /// Every allowed attempt failed: stop.
    GiveUp {
        /// How many attempts were made.
        attempts: u32,
    },
}

/// The state of one client's reconnects: the attempt count of the current run of failures.
#[derive(Debug)]
pub struct BackoffSchedule {
    backoff: Backoff,
    jitter: Box<dyn Jitter>,
    attempt: u32,
}

impl BackoffSchedule {
    /// A schedule that has not failed yet.
    pub fn new(backoff: Backoff, jitter: Box<dyn Jitter>) -> BackoffSchedule {
        BackoffSchedule {
            backoff,
            jitter,
            attempt: 0,
        }
    }

    /// The attempts made in the current run of failures (0 after a success).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The next step after a failure observed at `now`.
    pub fn next(&mut self, now: Instant) -> Step {
        let attempt = self.attempt.saturating_add(1);
        if !self.backoff.allows(attempt) {
            return Step::GiveUp {
                attempts: self.attempt,
            };
        }
        self.attempt = attempt;
        let delay = self.backoff.delay(attempt, self.jitter.fraction());
        Step::Retry {
            attempt,
            delay,
            at: now + delay,
        }
    }

    /// A connection stayed up long enough: the next failure starts a new run at attempt 1.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays a list of fractions, then repeats the last one.
    #[derive(Debug)]
    struct Sequence(Vec<f64>, usize);

    impl Jitter for Sequence {
        fn fraction(&mut self) -> f64 {
            let value = self.0.get(self.1).or(self.0.last()).copied().unwrap_or(0.0);
            self.1 += 1;
            value
        }
    }

    fn backoff(max_attempts: u32) -> Backoff {
        Backoff {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_attempts,
        }
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let b = backoff(0);
        let ceilings: Vec<u128> = (1..=7).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000]);
        // Huge attempt numbers neither overflow nor exceed the cap.
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(1000));
        let uncapped = Backoff {
            max_delay: Duration::MAX,
            ..b
        };
        assert_eq!(
            uncapped.ceiling(200),
            Duration::from_millis(100) * (1 << 31)
        );
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let b = backoff(0);
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(200));
        // Out-of-range fractions are clamped, never panic.
        assert_eq!(b.delay(3, 7.0), Duration::from_millis(400));
        assert_eq!(b.delay(3, -1.0), Duration::ZERO);
        assert_eq!(b.delay(3, f64::NAN), Duration::ZERO);
        // The random source stays within bounds and actually spreads.
        let mut jitter = RandomJitter::with_seed(42);
        let mut low = false;
        let mut high = false;
        for _ in 0..10_000 {
            let f = jitter.fraction();
            assert!((0.0..1.0).contains(&f), "{f}");
            let d = b.delay(4, f);
            assert!(d <= Duration::from_millis(800));
            low |= d < Duration::from_millis(80);
            high |= d > Duration::from_millis(720);
        }
        assert!(low && high, "full jitter covers the whole window");
    }

    #[test]
    fn schedule_against_a_controlled_clock() {
        let start = Instant::now();
        let mut schedule = BackoffSchedule::new(
            backoff(0),
            Box::new(Sequence(vec![1.0, 0.5, 0.25, 1.0, 1.0, 1.0], 0)),
        );
        let mut now = start;
        let mut delays = Vec::new();
        for expected_attempt in 1..=6 {
            match schedule.next(now) {
                Step::Retry { attempt, delay, at } => {
                    assert_eq!(attempt, expected_attempt);
                    assert_eq!(at, now + delay);
                    delays.push(delay.as_millis());
                    // The attempt fails 10 ms after it starts.
                    now = at + Duration::from_millis(10);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(delays, [100, 100, 100, 800, 1000, 1000]);
        assert_eq!(now - start, Duration::from_millis(3100 + 60));
        // A connection that stayed up starts the next run from the first delay again.
        schedule.reset();
        assert_eq!(schedule.attempts(), 0);
        assert!(matches!(
            schedule.next(now),
            Step::Retry { attempt: 1, delay, .. } if delay == Duration::from_millis(100)
        ));
    }

    #[test]
    fn fixed_has_one_ceiling_and_no_limit() {
        let fixed = Backoff::fixed(Duration::from_millis(250));
        for attempt in [1, 2, 10, u32::MAX] {
            assert_eq!(fixed.ceiling(attempt), Duration::from_millis(250));
            assert!(fixed.allows(attempt));
        }
    }

    #[test]
    fn max_attempts_then_give_up() {
        let mut schedule = BackoffSchedule::new(backoff(3), Box::new(FixedJitter(1.0)));
        let now = Instant::now();
        let attempts: Vec<Step> = (0..5).map(|_| schedule.next(now)).collect();
        assert!(matches!(attempts[0], Step::Retry { attempt: 1, .. }));
        assert!(matches!(attempts[2], Step::Retry { attempt: 3, .. }));
        assert_eq!(attempts[3], Step::GiveUp { attempts: 3 });
        assert_eq!(attempts[4], Step::GiveUp { attempts: 3 });
        // 0 means no limit.
        let mut unlimited = BackoffSchedule::new(backoff(0), Box::new(FixedJitter(0.0)));
        for _ in 0..1000 {
            assert!(matches!(unlimited.next(now), Step::Retry { .. }));
        }
    }
}
