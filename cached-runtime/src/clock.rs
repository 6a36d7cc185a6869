//! The two clocks of the crate: wall-clock time as entries record it
//! (milliseconds since the Unix epoch: the header's creation time, the age
//! checks against it), and a monotonic millisecond count for in-process
//! deadlines kept in atomics (the embedded store's expiries, the breaker's
//! cool-down), which must not jump with the wall clock.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970,
/// `u64::MAX` far in the future.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since a process-wide monotonic origin, set by the first
/// call: small enough to fit an `AtomicU64`, never going back.
pub(crate) fn monotonic_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let elapsed = ORIGIN.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}
