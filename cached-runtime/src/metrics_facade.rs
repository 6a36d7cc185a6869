//! The counters and the miss-time histogram, also emitted through the
//! [`metrics`] facade (feature `metrics`), so a service that already exports
//! metrics (Prometheus or other) gets them without extra code.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `cached_hits_total`, `cached_misses_total`, `cached_skips_total`, `cached_errors_total`, `cached_stores_total` | counter | `namespace`, `prefix` |
//! | `cached_bytes_raw_total`, `cached_bytes_stored_total` | counter | `namespace`, `prefix` |
//! | `cached_miss_duration_seconds` | histogram | `namespace`, `prefix` |
//!
//! The labels are those of the stats hash the same counters are flushed to
//! (`{namespace}:{prefix}:stats`) and of `cached-stats --format
//! prometheus`, so two caches of one process with different namespaces (a
//! named cache, a [`crate::Cache`] value) keep their series apart.
//!
//! Handles are created when a prefix is first used, against the recorder
//! installed at that moment: install the recorder before the first cached
//! call.

use std::time::Duration;

use metrics::{Counter, Histogram};

#[derive(Debug)]
pub(crate) struct PrefixMetrics {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) skips: Counter,
    pub(crate) errors: Counter,
    stores: Counter,
    bytes_raw: Counter,
    bytes_stored: Counter,
    miss_duration: Histogram,
}

impl Default for PrefixMetrics {
    fn default() -> Self {
        Self {
            hits: Counter::noop(),
            misses: Counter::noop(),
            skips: Counter::noop(),
            errors: Counter::noop(),
            stores: Counter::noop(),
            bytes_raw: Counter::noop(),
            bytes_stored: Counter::noop(),
            miss_duration: Histogram::noop(),
        }
    }
}

impl PrefixMetrics {
    pub(crate) fn new(namespace: &str, prefix: &str) -> Self {
        let label = || {
            [
                ("namespace", namespace.to_owned()),
                ("prefix", prefix.to_owned()),
            ]
        };
        Self {
            hits: metrics::counter!("cached_hits_total", &label()),
            misses: metrics::counter!("cached_misses_total", &label()),
            skips: metrics::counter!("cached_skips_total", &label()),
            errors: metrics::counter!("cached_errors_total", &label()),
            stores: metrics::counter!("cached_stores_total", &label()),
            bytes_raw: metrics::counter!("cached_bytes_raw_total", &label()),
            bytes_stored: metrics::counter!("cached_bytes_stored_total", &label()),
            miss_duration: metrics::histogram!("cached_miss_duration_seconds", &label()),
        }
    }

    pub(crate) fn stored(&self, raw: usize, stored: usize) {
        self.stores.increment(1);
        self.bytes_raw.increment(raw as u64);
        self.bytes_stored.increment(stored as u64);
    }

    pub(crate) fn miss(&self, elapsed: Duration) {
        self.misses.increment(1);
        self.miss_duration.record(elapsed.as_secs_f64());
    }
}
