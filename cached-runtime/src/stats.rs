//! Per-prefix counters, gathered in-process with relaxed atomics (a hit
//! costs one uncontended `fetch_add`, no lock, no round trip) and written
//! to the hash `{namespace}:{prefix}:stats` by the flusher.
//!
//! Counters only grow; the flusher remembers what it last wrote and sends
//! the difference, so several processes add up in the same hash.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (µs) of the miss-time histogram buckets; one more bucket,
/// `inf`, takes the rest.
pub const MISS_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
pub(crate) const BUCKETS: usize = MISS_BUCKETS_US.len() + 1;

/// Name of the stats-hash field of histogram bucket `i`: `miss_us_le_100`,
/// ..., `miss_us_le_10000000`, then `miss_us_le_inf`.
pub(crate) fn bucket_field(i: usize) -> String {
    match MISS_BUCKETS_US.get(i) {
        Some(bound) => format!("miss_us_le_{bound}"),
        None => "miss_us_le_inf".to_owned(),
    }
}

/// Whether counting is on. Only benchmarks turn it off, to measure what
/// counting costs on the hit path.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the stats counters on or off for the whole process. For
/// benchmarks that measure what counting costs; not for services.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Relaxed);
}

#[inline]
fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// The counters of one prefix.
#[derive(Debug, Default)]
pub struct PrefixStats {
    /// Handles into the `metrics` facade (feature `metrics`), bound to the
    /// recorder installed when the prefix is first used.
    #[cfg(feature = "metrics")]
    facade: crate::metrics_facade::PrefixMetrics,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) skips: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) stores: AtomicU64,
    pub(crate) bytes_raw: AtomicU64,
    pub(crate) bytes_stored: AtomicU64,
    pub(crate) miss_us_sum: AtomicU64,
    /// Sum of squares: a long-lived service overflows 64 bits here. Behind
    /// a lock (one per miss, which costs a computation anyway), so that a
    /// snapshot never reads it half-added: two atomic words could be read
    /// between the low word's carry and the high word's, a sum that went
    /// backwards, which the next flush would send as a 39-digit increment.
    miss_us_sumsq: Mutex<u128>,
    miss_buckets: [AtomicU64; BUCKETS],
}

/// A point-in-time copy of one prefix's counters (totals since start).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups not served from the cache: calls whose body returned (a
    /// call whose future was dropped while its body ran is not counted).
    pub misses: u64,
    /// Calls that bypassed the cache.
    pub skips: u64,
    /// Store or codec failures and keys that could not be built.
    pub errors: u64,
    /// Values written.
    pub stores: u64,
    /// Encoded size of stored values before compression, with the entry's
    /// header.
    pub bytes_raw: u64,
    /// Stored size of stored values (after compression, with the header,
    /// and the MAC with `signing_key`).
    pub bytes_stored: u64,
    /// Sum of compute times on misses, µs.
    pub miss_us_sum: u64,
    /// Sum of squared compute times on misses, µs².
    pub miss_us_sumsq: u128,
    /// Miss-time histogram, one count per bucket of [`MISS_BUCKETS_US`] then
    /// one for larger times; not cumulative.
    pub miss_buckets: [u64; BUCKETS],
}

impl PrefixStats {
    fn new(_namespace: &str, _prefix: &str) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            facade: crate::metrics_facade::PrefixMetrics::new(_namespace, _prefix),
            ..Self::default()
        }
    }

    pub(crate) fn hit(&self) {
        if !enabled() {
            return;
        }
        self.hits.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.facade.hits.increment(1);
    }
    pub(crate) fn skip(&self) {
        if !enabled() {
            return;
        }
        self.skips.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.facade.skips.increment(1);
    }
    pub(crate) fn error(&self) {
        if !enabled() {
            return;
        }
        self.errors.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.facade.errors.increment(1);
    }
    pub(crate) fn stored(&self, raw: usize, stored: usize) {
        if !enabled() {
            return;
        }
        self.stores.fetch_add(1, Relaxed);
        self.bytes_raw.fetch_add(raw as u64, Relaxed);
        self.bytes_stored.fetch_add(stored as u64, Relaxed);
        #[cfg(feature = "metrics")]
        self.facade.stored(raw, stored);
    }

    /// A miss whose computation took `elapsed`.
    pub(crate) fn miss(&self, elapsed: Duration) {
        if !enabled() {
            return;
        }
        let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
        self.misses.fetch_add(1, Relaxed);
        self.miss_us_sum.fetch_add(us, Relaxed);
        let sq = (us as u128) * (us as u128);
        {
            let mut sumsq = self.miss_us_sumsq.lock().unwrap_or_else(|e| e.into_inner());
            *sumsq = sumsq.wrapping_add(sq);
        }
        let bucket = MISS_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(MISS_BUCKETS_US.len());
        self.miss_buckets[bucket].fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.facade.miss(elapsed);
    }

    /// The totals so far.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut miss_buckets = [0; BUCKETS];
        for (out, b) in miss_buckets.iter_mut().zip(&self.miss_buckets) {
            *out = b.load(Relaxed);
        }
        StatsSnapshot {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            skips: self.skips.load(Relaxed),
            errors: self.errors.load(Relaxed),
            stores: self.stores.load(Relaxed),
            bytes_raw: self.bytes_raw.load(Relaxed),
            bytes_stored: self.bytes_stored.load(Relaxed),
            miss_us_sum: self.miss_us_sum.load(Relaxed),
            miss_us_sumsq: *self.miss_us_sumsq.lock().unwrap_or_else(|e| e.into_inner()),
            miss_buckets,
        }
    }
}

impl StatsSnapshot {
    /// `self - earlier`, field by field: what happened in between.
    pub(crate) fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let mut miss_buckets = [0; BUCKETS];
        for (i, out) in miss_buckets.iter_mut().enumerate() {
            *out = self.miss_buckets[i].wrapping_sub(earlier.miss_buckets[i]);
        }
        StatsSnapshot {
            hits: self.hits.wrapping_sub(earlier.hits),
            misses: self.misses.wrapping_sub(earlier.misses),
            skips: self.skips.wrapping_sub(earlier.skips),
            errors: self.errors.wrapping_sub(earlier.errors),
            stores: self.stores.wrapping_sub(earlier.stores),
            bytes_raw: self.bytes_raw.wrapping_sub(earlier.bytes_raw),
            bytes_stored: self.bytes_stored.wrapping_sub(earlier.bytes_stored),
            miss_us_sum: self.miss_us_sum.wrapping_sub(earlier.miss_us_sum),
            miss_us_sumsq: self.miss_us_sumsq.wrapping_sub(earlier.miss_us_sumsq),
            miss_buckets,
        }
    }

    /// Whether nothing was counted.
    pub(crate) fn is_empty(&self) -> bool {
        *self == StatsSnapshot::default()
    }

    /// `(field, increment)` pairs of the stats hash, zero increments left out.
    /// `miss_us_sumsq` is not among them: it may exceed 64 bits and is
    /// written by [`crate::store`] as a decimal big integer.
    pub(crate) fn integer_fields(&self) -> Vec<(String, u64)> {
        let mut out = self.all_integer_fields();
        out.retain(|(_, v)| *v != 0);
        out
    }

    /// [`StatsSnapshot::integer_fields`], zero increments included.
    pub(crate) fn all_integer_fields(&self) -> Vec<(String, u64)> {
        let mut out = vec![
            ("hits".to_owned(), self.hits),
            ("misses".to_owned(), self.misses),
            ("skips".to_owned(), self.skips),
            ("errors".to_owned(), self.errors),
            ("stores".to_owned(), self.stores),
            ("bytes_raw".to_owned(), self.bytes_raw),
            ("bytes_stored".to_owned(), self.bytes_stored),
            ("miss_us_sum".to_owned(), self.miss_us_sum),
        ];
        for (i, count) in self.miss_buckets.iter().enumerate() {
            out.push((bucket_field(i), *count));
        }
        out
    }
}

/// The counters of one cache, by prefix: what its flush sends to its own
/// Redis.
#[derive(Debug)]
pub(crate) struct StatsRegistry {
    /// The cache's namespace, a label of the `metrics` series.
    namespace: String,
    by_prefix: Mutex<HashMap<String, Arc<PrefixStats>>>,
}

impl StatsRegistry {
    /// The counters of a cache whose keys start with `namespace`.
    pub(crate) fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            by_prefix: Mutex::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PrefixStats>>> {
        self.by_prefix.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters of `prefix`, shared by every call site with that
    /// prefix in this cache.
    pub(crate) fn for_prefix(&self, prefix: &str) -> Arc<PrefixStats> {
        self.map()
            .entry(prefix.to_owned())
            .or_insert_with(|| Arc::new(PrefixStats::new(&self.namespace, prefix)))
            .clone()
    }

    /// Every prefix with its counters.
    pub(crate) fn all(&self) -> Vec<(String, Arc<PrefixStats>)> {
        self.map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The totals of `prefix`, if a function with that prefix has run.
    pub(crate) fn snapshot(&self, prefix: &str) -> Option<StatsSnapshot> {
        self.map().get(prefix).map(|s| s.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshots taken while misses are counted never see the sum of
    /// squares go backwards (it once could, between its two words' adds,
    /// and the next flush sent the difference as a 39-digit increment).
    #[test]
    fn the_sum_of_squares_never_reads_half_added() {
        let s = Arc::new(PrefixStats::default());
        // Each square is just under 2^63: the low word carries into the
        // high one every other add.
        let elapsed = Duration::from_micros(3_037_000_499);
        let writer = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for _ in 0..200_000 {
                    s.miss(elapsed);
                }
            })
        };
        let mut last = 0u128;
        while !writer.is_finished() {
            let now = s.snapshot().miss_us_sumsq;
            assert!(now >= last, "went back from {last} to {now}");
            last = now;
        }
        writer.join().unwrap();
    }

    #[test]
    fn miss_lands_in_its_bucket_and_sums() {
        let s = PrefixStats::default();
        s.miss(Duration::from_micros(100));
        s.miss(Duration::from_micros(101));
        s.miss(Duration::from_secs(11));
        let snap = s.snapshot();
        assert_eq!(snap.misses, 3);
        assert_eq!(snap.miss_buckets[0], 1);
        assert_eq!(snap.miss_buckets[1], 1);
        assert_eq!(snap.miss_buckets[BUCKETS - 1], 1);
        assert_eq!(snap.miss_us_sum, 100 + 101 + 11_000_000);
        assert_eq!(
            snap.miss_us_sumsq,
            100 * 100 + 101 * 101 + 11_000_000u128 * 11_000_000
        );
    }

    #[test]
    fn sumsq_carries_past_64_bits() {
        let s = PrefixStats::default();
        // (2^32 µs)^2 = 2^64: one more than u64 can hold.
        for _ in 0..3 {
            s.miss(Duration::from_micros(1 << 32));
        }
        assert_eq!(s.snapshot().miss_us_sumsq, 3u128 << 64);
    }

    #[test]
    fn since_gives_the_difference() {
        let s = PrefixStats::default();
        s.hit();
        let first = s.snapshot();
        s.hit();
        s.hit();
        s.error();
        let d = s.snapshot().since(&first);
        assert_eq!((d.hits, d.errors, d.misses), (2, 1, 0));
        assert_eq!(
            d.integer_fields(),
            vec![("hits".to_owned(), 2), ("errors".to_owned(), 1)]
        );
    }
}
