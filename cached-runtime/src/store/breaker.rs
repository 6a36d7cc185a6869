//! Circuit breaker: after `threshold` consecutive failures Redis is left
//! alone for `cooldown`, so a dead or hanging Redis costs no latency. Once
//! the cooldown is over the breaker is half-open: exactly one call (the
//! probe) is let through and everyone else keeps failing fast. The probe's
//! success closes the breaker; its failure opens it for a new cooldown; a
//! probe that ends with no verdict (cancelled) simply lets the next one
//! through a cooldown later.
//!
//! ```text
//! closed ──threshold failures──▶ open ──cooldown over──▶ half-open (one probe)
//!   ▲                              ▲                          │
//!   └──────── probe succeeds ──────┼──────────────────────────┤
//!                                  └────── probe fails ───────┘
//! ```

use std::sync::atomic::{
    AtomicU32, AtomicU64, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
};
use std::time::Duration;

/// `open_until_ms` of a closed breaker.
const CLOSED: u64 = 0;

/// What [`Breaker::admit`] decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The breaker is closed: go ahead.
    Closed,
    /// The one call let through after a cooldown. Connections kept from
    /// before may have been closed meanwhile; the probe should judge Redis,
    /// not one of them.
    Probe,
    /// Cooling down: fail fast.
    Refused,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: AtomicU32,
    /// [`CLOSED`], or milliseconds since [`epoch`] until which calls are
    /// refused. Claiming the probe pushes it one cooldown further, which is
    /// what keeps every other caller out while the probe runs.
    open_until_ms: AtomicU64,
    /// Openings so far; see [`Breaker::trips`].
    trips: AtomicU64,
}

/// The monotonic clock ([`crate::clock::monotonic_ms`]) plus one: no
/// instant is [`CLOSED`].
fn now_ms() -> u64 {
    crate::clock::monotonic_ms().saturating_add(1)
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(CLOSED),
            trips: AtomicU64::new(0),
        }
    }

    /// The end of a cooldown starting now (never [`CLOSED`]).
    fn cooldown_from_now(&self) -> u64 {
        // Saturating: a cooldown too long to count in milliseconds keeps
        // the breaker open for good rather than wrapping into the past.
        let cooldown = u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX);
        now_ms().saturating_add(cooldown)
    }

    /// Whether this call may try Redis now: always while closed, never
    /// during the cooldown, and once it is over, for exactly one caller
    /// (the probe) per cooldown.
    pub(crate) fn admit(&self) -> Admission {
        let until = self.open_until_ms.load(Acquire);
        if until == CLOSED {
            return Admission::Closed;
        }
        if now_ms() < until {
            return Admission::Refused;
        }
        // Half-open: of all the callers that saw the same expired deadline,
        // the one whose swap lands is the probe.
        match self
            .open_until_ms
            .compare_exchange(until, self.cooldown_from_now(), AcqRel, Relaxed)
        {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Refused,
        }
    }

    /// [`Breaker::admit`] as a yes or no.
    #[cfg(test)]
    fn allows(&self) -> bool {
        self.admit() != Admission::Refused
    }

    /// How many times the breaker has opened so far. A caller admitted by
    /// [`Breaker::admit`] that then waits (for a connection) compares two
    /// readings to learn whether Redis was found failing meanwhile, without
    /// claiming anything as `admit` would.
    pub(crate) fn trips(&self) -> u64 {
        self.trips.load(Acquire)
    }

    /// Redis answered (even with an error reply): the breaker closes.
    pub(crate) fn success(&self) {
        // Loads first: this runs on every command, and a write to a shared
        // line on each hit would cost every core.
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
        if self.open_until_ms.load(Relaxed) != CLOSED
            && self.open_until_ms.swap(CLOSED, AcqRel) != CLOSED
        {
            tracing::info!("redis answers again; cache back in service");
        }
    }

    pub(crate) fn failure(&self) {
        let failures = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        // Once tripped, every further failure (the probe after a cooldown)
        // re-opens it for another cooldown.
        if failures >= self.threshold {
            let previous = self.open_until_ms.swap(self.cooldown_from_now(), AcqRel);
            self.trips.fetch_add(1, AcqRel);
            if previous == CLOSED {
                tracing::warn!(
                    failures,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "redis keeps failing; skipping the cache during the cooldown"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tripped breaker whose cooldown is over: its tests need no clock,
    /// only the order of events.
    fn expired() -> Breaker {
        let b = Breaker::new(1, Duration::from_secs(3600));
        b.failure();
        expire(&b);
        b
    }

    /// Ends the current cooldown instead of sleeping through it.
    fn expire(b: &Breaker) {
        b.open_until_ms.store(1, Relaxed);
    }

    #[test]
    fn trips_after_threshold_and_stays_open_during_the_cooldown() {
        let b = Breaker::new(2, Duration::from_secs(3600));
        assert!(b.allows());
        b.failure();
        assert!(b.allows(), "one failure is not enough");
        b.failure();
        assert!(!b.allows(), "threshold reached");
        assert_eq!(b.trips(), 1);
        assert!(!b.allows(), "still cooling down");
        b.success();
        assert!(b.allows(), "an answer closes it");
        b.failure();
        assert!(b.allows(), "success reset the count");
    }

    #[test]
    fn after_the_cooldown_exactly_one_caller_probes() {
        let b = expired();
        let admitted = (0..100).filter(|_| b.allows()).count();
        assert_eq!(admitted, 1, "one probe; the others fail fast");
        let b = expired();
        assert_eq!(b.admit(), Admission::Probe);
        assert_eq!(b.admit(), Admission::Refused);
        b.success();
        assert_eq!(b.admit(), Admission::Closed, "closed calls are no probes");
    }

    #[test]
    fn concurrent_callers_get_one_probe() {
        let b = std::sync::Arc::new(expired());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let admitted: usize = (0..8)
            .map(|_| {
                let (b, barrier) = (b.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..100).filter(|_| b.allows()).count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(admitted, 1);
    }

    #[test]
    fn a_cooldown_too_long_to_count_keeps_it_open() {
        for cooldown in [Duration::MAX, Duration::from_millis(u64::MAX)] {
            let b = Breaker::new(1, cooldown);
            b.failure();
            assert!(!b.allows(), "open, not wrapped into the past");
            assert_eq!(b.admit(), Admission::Refused);
        }
    }

    #[test]
    fn the_probes_verdict_decides() {
        let b = expired();
        assert!(b.allows(), "cooldown over: the probe");
        assert!(!b.allows(), "the probe is out: others fail fast");
        b.failure();
        assert!(!b.allows(), "failed probe: a new cooldown");
        assert_eq!(b.trips(), 2);
        expire(&b);
        assert!(b.allows(), "the next probe");
        b.success();
        assert!(b.allows() && b.allows(), "a good probe closes it for all");
    }
}
