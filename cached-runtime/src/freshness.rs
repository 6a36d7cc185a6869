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

/// What is left, by this clock, of `lifetime` counted from an entry's
/// creation at `created_at_ms`: zero once past, and never more than the
/// whole `lifetime`, even if this clock lags the writer's.
pub(crate) fn left_of(created_at_ms: u64, lifetime: Duration) -> Duration {
    // Saturating: a lifetime of `Duration::MAX` has more ms than a u64.
    let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
    let end = created_at_ms.saturating_add(lifetime_ms);
    Duration::from_millis(end.saturating_sub(now_ms())).min(lifetime)
}

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
        // At most `ttl`: a writer whose clock runs ahead dates its entries
        // in the future, and they must not look fresher than new.
        return Age::Fresh {
            remaining: Duration::from_millis(expires - now_ms).min(ttl),
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

/// The age of a sliding (`refresh`) entry with a `stale` window, from
/// what was left of its lifetime in the store just before this read
/// (`store_left`). Each read and write restarts that lifetime to `ttl +
/// stale`, so less than `stale` left means nobody read it for longer than
/// `ttl`: it is stale. Unknown (no expiry): fresh for a whole `ttl`, as
/// just read.
pub(crate) fn sliding_age(store_left: Option<Duration>, ttl: Duration, stale: Duration) -> Age {
    match store_left {
        Some(left) if left < stale => Age::Stale,
        Some(left) => Age::Fresh {
            remaining: (left - stale).min(ttl),
        },
        None => Age::Fresh { remaining: ttl },
    }
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

/// With `early`, how long before its end a copy held in a `local` level
/// stops being served: XFetch's own draw, `compute · β · (−ln u)`. Copies of
/// one entry held by many processes (or again and again by one) then end
/// at spread times instead of all at the entry's end, and each caller that
/// goes back to the store there decides, as every caller without `local`
/// does, whether to refresh: the refreshes stay spread as XFetch means.
pub(crate) fn xfetch_margin(compute: Duration, beta: f64) -> Duration {
    if compute.is_zero() {
        return Duration::ZERO;
    }
    let u = unit_random();
    Duration::try_from_secs_f64(compute.as_secs_f64() * beta * -u.ln()).unwrap_or(Duration::MAX)
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

    /// A sliding entry with a stale window is stale once less than the
    /// window was left of it before the read: nobody read it for `ttl`.
    #[test]
    fn a_sliding_entry_is_stale_after_ttl_without_a_read() {
        let (ttl, stale) = (Duration::from_secs(60), Duration::from_secs(30));
        let left = |secs| Some(Duration::from_secs(secs));
        assert!(matches!(sliding_age(left(29), ttl, stale), Age::Stale));
        assert!(matches!(
            sliding_age(left(31), ttl, stale),
            Age::Fresh { remaining } if remaining == Duration::from_secs(1)
        ));
        assert!(matches!(
            sliding_age(left(90), ttl, stale),
            Age::Fresh { remaining } if remaining == ttl
        ));
        assert!(matches!(
            sliding_age(None, ttl, stale),
            Age::Fresh { remaining } if remaining == ttl
        ));
    }

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
        assert_eq!(
            classify(61_000, 1_000, S, S, false),
            Age::Fresh { remaining: S },
            "written by a clock a minute ahead: fresh for ttl, no longer"
        );
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

    #[test]
    fn xfetch_margins_spread_as_the_formula_says() {
        // P(margin ≥ r) = P(−ln u ≥ r/(δβ)) = exp(−r/(δβ)): the same law as
        // `xfetch`, so a held copy ends where XFetch would refresh.
        let compute = Duration::from_millis(100);
        let n = 20_000;
        let margins: Vec<Duration> = (0..n).map(|_| xfetch_margin(compute, 1.0)).collect();
        for (r_ms, expected) in [(0u64, 1.0), (100, (-1.0f64).exp()), (300, (-3.0f64).exp())] {
            let r = Duration::from_millis(r_ms);
            let p = margins.iter().filter(|m| **m >= r).count() as f64 / n as f64;
            assert!((p - expected).abs() < 0.02, "{r_ms} ms: {p} vs {expected}");
        }
        // Spread, not one value for all.
        let mut distinct = margins.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > n / 2,
            "{} distinct margins",
            distinct.len()
        );
        // β scales it; no compute time known, no margin.
        let mean = |beta: f64| {
            (0..n)
                .map(|_| xfetch_margin(compute, beta).as_secs_f64())
                .sum::<f64>()
                / n as f64
        };
        assert!((mean(1.0) - 0.1).abs() < 0.01, "{}", mean(1.0));
        assert!((mean(2.0) - 0.2).abs() < 0.02, "{}", mean(2.0));
        assert_eq!(xfetch_margin(Duration::ZERO, 1.0), Duration::ZERO);
    }
}
