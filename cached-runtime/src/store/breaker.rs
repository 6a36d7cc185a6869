//! Circuit breaker: after `threshold` consecutive failures Redis is left
//! alone for `cooldown`, so a dead or hanging Redis costs no latency; then
//! calls try again, and the first success closes the breaker.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: AtomicU32,
    /// Milliseconds since [`epoch`] until which calls are refused.
    open_until_ms: AtomicU64,
}

/// A process-wide monotonic origin, so instants fit in an atomic.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        epoch();
        Self {
            threshold: threshold.max(1),
            cooldown,
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
        }
    }

    /// Whether Redis may be tried now.
    pub(crate) fn allows(&self) -> bool {
        now_ms() >= self.open_until_ms.load(Relaxed)
    }

    pub(crate) fn success(&self) {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
            tracing::info!("redis answers again; cache back in service");
        }
    }

    pub(crate) fn failure(&self) {
        let failures = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        // Once tripped, every further failure (the probe after a cooldown)
        // re-opens it for another cooldown.
        if failures >= self.threshold {
            let until = now_ms() + self.cooldown.as_millis() as u64;
            let previous = self.open_until_ms.swap(until, Relaxed);
            if previous <= now_ms() {
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

    #[test]
    fn trips_after_threshold_and_recovers() {
        let b = Breaker::new(2, Duration::from_millis(50));
        assert!(b.allows());
        b.failure();
        assert!(b.allows(), "one failure is not enough");
        b.failure();
        assert!(!b.allows(), "threshold reached");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allows(), "cooldown over: probe allowed");
        b.failure();
        assert!(!b.allows(), "failed probe re-opens at once");
        std::thread::sleep(Duration::from_millis(60));
        b.success();
        b.failure();
        assert!(b.allows(), "success reset the count");
    }
}
