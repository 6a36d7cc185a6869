//! How long another process keeps serving its `local` copy after a change:
//! the coherence delay of the `local` level, with two processes.
//!
//! The writer (the load binary) refreshes one entry over and over with
//! `_refresh`; each new value is the wall-clock time (µs) at which its body
//! ran. The reader (a child process) calls the same function in a loop;
//! its calls are `local` hits until the invalidation arrives, then one
//! Redis read brings the new value. When the value it gets changes, the
//! reader records now − value: from the moment the writer computed the
//! value (before its `SET` and `PUBLISH`) to the first call in the reader
//! that returns it. An upper bound of the delay the contract limits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cached_redis::cached;
use serde::{Deserialize, Serialize};

/// Wall-clock µs since the Unix epoch (both processes share the clock).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The function both processes call: its value is when its body ran.
#[cached(local = 16, ttl = 3600, prefix = "bench_coherence")]
pub async fn stamped(k: u32) -> u64 {
    let _ = k;
    now_us()
}

/// What the reader reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReaderReport {
    /// One delay per change seen, µs.
    pub delays_us: Vec<u64>,
    /// Calls made (almost all `local` hits).
    pub calls: u64,
}

/// The reader: calls `stamped(0)` until `stop` says so, recording each
/// change's delay. The first value (whatever was there) is not a change.
pub async fn read_until(mut stop: impl FnMut() -> bool) -> ReaderReport {
    let mut report = ReaderReport::default();
    let mut last = stamped(0).await;
    let mut n = 0u64;
    loop {
        let value = stamped(0).await;
        report.calls += 1;
        if value != last {
            report.delays_us.push(now_us().saturating_sub(value));
            last = value;
        }
        n += 1;
        // The stop check costs a round trip: not on every call.
        if n % 4096 == 0 && stop() {
            return report;
        }
        tokio::task::yield_now().await;
    }
}

/// The writer: `changes` refreshes, `pause` apart.
pub async fn write(changes: usize, pause: Duration) {
    for _ in 0..changes {
        stamped_refresh(0).await;
        tokio::time::sleep(pause).await;
    }
}

/// The figures of the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Coherence {
    pub changes: usize,
    pub seen: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub reader_calls: u64,
}

impl Coherence {
    pub fn of(changes: usize, mut report: ReaderReport) -> Coherence {
        report.delays_us.sort_unstable();
        let d = &report.delays_us;
        let at = |q: f64| {
            if d.is_empty() {
                0
            } else {
                d[((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1]
            }
        };
        Coherence {
            changes,
            seen: d.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: d.last().copied().unwrap_or(0),
            reader_calls: report.calls,
        }
    }
}
