//! Pure decisions about an entry's age: fresh or stale, whether to
//! recompute early (XFetch). No I/O here; lock leases are in `lease`.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// What an entry read from the store is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Age {
    /// Within its TTL; `remaining` until it turns stale.
    Fresh { remaining: Duration },
    /// Past its TTL, within the `stale` window.
    Stale,
}

pub(crate) use crate::clock::now_ms;

/// The age of an entry created at `created_at_ms`. Entries without a stale
/// window, and sliding (`refresh`) entries, are fresh for as long as the
/// store keeps them: the store's expiry is then the only clock.
pub(crate) fn classify(
    created_at_ms: u64,
    now_ms: u64,
    ttl: Duration,
    stale: Duration,
    sliding: bool,
) -> Age {
    let expires = created_at_ms.saturating_add(ttl.as_millis() as u64);
    if now_ms < expires {
        return Age::Fresh {
            remaining: Duration::from_millis(expires - now_ms),
        };
    }
    if stale.is_zero() || sliding {
        // Clock skew between writer and reader, or a sliding entry: trust
        // the store, which still has it.
        return Age::Fresh {
            remaining: Duration::ZERO,
        };
    }
    Age::Stale
}

/// XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): recompute early
/// when `compute · β · (−ln u) ≥ remaining`, u uniform in (0, 1]. The
/// chance rises as expiry nears and with the cost of the body, so a hot
/// entry is refreshed shortly before it expires, by about one caller.
pub(crate) fn xfetch(compute: Duration, remaining: Duration, beta: f64) -> bool {
    if compute.is_zero() {
        return false;
    }
    let u = unit_random();
    compute.as_secs_f64() * beta * -u.ln() >= remaining.as_secs_f64()
}

/// A uniform number in (0, 1], from a per-thread xorshift generator.
fn unit_random() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn classify_fresh_and_stale() {
        assert_eq!(
            classify(1_000, 1_400, S, S, false),
            Age::Fresh {
                remaining: Duration::from_millis(600)
            }
        );
        assert_eq!(classify(1_000, 2_100, S, S, false), Age::Stale);
        assert_eq!(
            classify(1_000, 2_100, S, Duration::ZERO, false),
            Age::Fresh {
                remaining: Duration::ZERO
            },
            "no stale window: the store's expiry decides"
        );
        assert!(matches!(
            classify(1_000, 2_100, S, S, true),
            Age::Fresh { .. }
        ));
    }

    #[test]
    fn xfetch_probability_follows_the_formula() {
        // P(recompute) = P(−ln u ≥ r/(δβ)) = exp(−r/(δβ)).
        let compute = Duration::from_millis(100);
        for (remaining_ms, expected) in
            [(0u64, 1.0), (100, (-1.0f64).exp()), (300, (-3.0f64).exp())]
        {
            let n = 20_000;
            let hits = (0..n)
                .filter(|_| xfetch(compute, Duration::from_millis(remaining_ms), 1.0))
                .count();
            let p = hits as f64 / n as f64;
            assert!(
                (p - expected).abs() < 0.02,
                "remaining {remaining_ms} ms: {p} vs {expected}"
            );
        }
        assert!(!xfetch(Duration::ZERO, Duration::ZERO, 1.0));
    }
}
