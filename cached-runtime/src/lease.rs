//! The cross-process lock's parameters: how long a holder may keep it
//! (its lease, from the body's measured cost) and the token that proves
//! who holds it. No I/O here; the lock itself is taken in `flow`.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use crate::clock::now_ms;

/// Shortest lock lease: enough for a round trip and a quick body.
pub(crate) const LEASE_FLOOR: Duration = Duration::from_millis(500);
/// Longest lock lease: a holder that died blocks others at most this long.
pub(crate) const LEASE_CEILING: Duration = Duration::from_secs(30);
/// Lease when nothing is known of the body's cost yet.
pub(crate) const LEASE_UNKNOWN: Duration = Duration::from_secs(5);

/// A lock lease for a body that took about `estimate`: room for four runs,
/// within [`LEASE_FLOOR`] and [`LEASE_CEILING`].
pub(crate) fn lease_for(estimate: Option<Duration>) -> Duration {
    match estimate {
        None => LEASE_UNKNOWN,
        Some(e) => (e * 4 + Duration::from_millis(100)).clamp(LEASE_FLOOR, LEASE_CEILING),
    }
}

/// A token no other holder of a lock can have.
pub(crate) fn lock_token() -> String {
    let a = RandomState::new().hash_one(std::process::id());
    let b = RandomState::new().hash_one(now_ms());
    format!("{a:016x}{b:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_bounded() {
        assert_eq!(lease_for(None), LEASE_UNKNOWN);
        assert_eq!(lease_for(Some(Duration::from_millis(1))), LEASE_FLOOR);
        assert_eq!(
            lease_for(Some(Duration::from_secs(1))),
            Duration::from_millis(4_100)
        );
        assert_eq!(lease_for(Some(Duration::from_secs(3600))), LEASE_CEILING);
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(lock_token(), lock_token());
    }
}
