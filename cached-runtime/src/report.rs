//! Reading the stats back: the hashes `{namespace}:{prefix}:stats` parsed
//! into a typed [`PrefixReport`] per prefix, with the numbers people look
//! at (hit ratio, mean and standard deviation of miss time, percentiles
//! from the histogram, mean stored size, compression ratio).
//!
//! This is the one place that parses the stats hash: the `cached-stats`
//! command and any dashboard read through it. [`StatsReader`] reads any
//! namespace of any Redis named by a [`Config`]; [`read_all`] and
//! [`read_prefix`] read what this process's cache (the one [`crate::init`]
//! set up) sees.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cached_runtime::Error> {
//! use cached_runtime::{report::StatsReader, Config};
//!
//! let config = Config::builder().redis_url("redis://127.0.0.1:6379/0").build()?;
//! let reader = StatsReader::new(&config)?;
//! for report in reader.all().await? {
//!     println!("{}: {:?} hit ratio", report.prefix, report.hit_ratio);
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;

use crate::config::Config;
use crate::engine::current;
use crate::error::{Error, StoreErrorKind};
use crate::stats::{bucket_field, StatsSnapshot, BUCKETS, MISS_BUCKETS_US};
use crate::store::{glob_escape, RedisStore};

/// A percentile of miss time, read off the histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentile {
    /// In µs. When `capped`, the largest finite bound (10 s).
    pub us: f64,
    /// The percentile falls in the last, unbounded bucket: the true value
    /// is above `us`, by an unknown amount.
    pub capped: bool,
}

/// One bucket of the miss-time histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Lower bound (exclusive) in µs; 0 for the first bucket.
    pub above_us: u64,
    /// Upper bound (inclusive) in µs; `None` for the last, unbounded one.
    pub upto_us: Option<u64>,
    /// Misses whose compute time fell in this bucket (not cumulative).
    pub count: u64,
}

impl Bucket {
    /// The bucket's field in the stats hash: `miss_us_le_<upto_us>`, or
    /// `miss_us_le_inf` for the unbounded one.
    pub fn field(&self) -> String {
        match self.upto_us {
            Some(bound) => format!("miss_us_le_{bound}"),
            None => "miss_us_le_inf".to_owned(),
        }
    }
}

/// The stats of one prefix: its counters and what is derived from them.
/// A derived number is `None` where it is undefined (no lookups, no timed
/// misses, nothing stored).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PrefixReport {
    /// The prefix (second key segment).
    pub prefix: String,
    /// The raw counters, as stored (a missing field is 0).
    pub counters: StatsSnapshot,
    /// `hits / (hits + misses)`, a fraction in `[0, 1]`.
    pub hit_ratio: Option<f64>,
    /// Mean compute time of misses, µs.
    pub miss_us_mean: Option<f64>,
    /// Population standard deviation of the compute time of misses, µs.
    pub miss_us_stddev: Option<f64>,
    /// Median compute time of misses.
    pub p50: Option<Percentile>,
    /// 90th percentile of the compute time of misses.
    pub p90: Option<Percentile>,
    /// 99th percentile of the compute time of misses.
    pub p99: Option<Percentile>,
    /// `bytes_stored / stores`: mean stored size in bytes.
    pub mean_stored_bytes: Option<f64>,
    /// `bytes_raw / bytes_stored`: how much compression saved.
    pub compression_ratio: Option<f64>,
}

impl PrefixReport {
    /// The report of `prefix` from its counters (for example
    /// [`crate::local_stats`], when the embedded store keeps no hash).
    pub fn from_counters(prefix: impl Into<String>, counters: StatsSnapshot) -> Self {
        let lookups = u128::from(counters.hits) + u128::from(counters.misses);
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        let moments = mean_stddev(
            timed_count(&counters),
            u128::from(counters.miss_us_sum),
            counters.miss_us_sumsq,
        );
        PrefixReport {
            prefix: prefix.into(),
            hit_ratio: ratio(counters.hits as f64, lookups as f64),
            miss_us_mean: moments.map(|m| m.0),
            miss_us_stddev: moments.map(|m| m.1),
            p50: percentile(&counters.miss_buckets, 0.50),
            p90: percentile(&counters.miss_buckets, 0.90),
            p99: percentile(&counters.miss_buckets, 0.99),
            mean_stored_bytes: ratio(counters.bytes_stored as f64, counters.stores as f64),
            compression_ratio: ratio(counters.bytes_raw as f64, counters.bytes_stored as f64),
            counters,
        }
    }

    /// The report of `prefix` from the fields of its stats hash (what
    /// `HGETALL` returns). Unknown fields are ignored (a newer writer may
    /// add some).
    ///
    /// # Errors
    ///
    /// [`Error::StatsField`] when a known field is not a non-negative
    /// decimal integer, or too large for its counter; `key` names the hash
    /// in the message.
    pub fn from_hash<'a, I>(prefix: impl Into<String>, key: &str, fields: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let counters = parse_fields(key, fields)?;
        Ok(Self::from_counters(prefix, counters))
    }

    /// The miss-time histogram, bucket by bucket, the unbounded one last.
    pub fn histogram(&self) -> impl Iterator<Item = Bucket> + '_ {
        self.counters
            .miss_buckets
            .iter()
            .enumerate()
            .map(|(i, &count)| Bucket {
                above_us: if i == 0 { 0 } else { MISS_BUCKETS_US[i - 1] },
                upto_us: MISS_BUCKETS_US.get(i).copied(),
                count,
            })
    }

    /// The `q`-quantile (`0 < q <= 1`) of miss time; see [`percentile`].
    pub fn percentile(&self, q: f64) -> Option<Percentile> {
        percentile(&self.counters.miss_buckets, q)
    }
}

/// Parses a non-negative decimal integer: ASCII digits only (no sign, no
/// spaces, no decimal point), at least one. `None` when it is not one,
/// `Some(None)` when it overflows `u128`.
fn parse_decimal(value: &[u8]) -> Option<Option<u128>> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().try_fold(0u128, |n, &d| {
        n.checked_mul(10)?.checked_add(u128::from(d - b'0'))
    }))
}

/// A field value quoted for an error message (lossy UTF-8, escaped, cut
/// short when long).
fn quote(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let mut short: String = text.chars().take(40).collect();
    if text.chars().count() > 40 {
        short.push('…');
    }
    format!("{short:?}")
}

/// The counters of a stats hash.
fn parse_fields<'a, I>(key: &str, fields: I) -> Result<StatsSnapshot, Error>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut s = StatsSnapshot::default();
    for (name, value) in fields {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let bad = |what: &str| {
            Error::StatsField(format!("field {name} of {key} is {}, {what}", quote(value)))
        };
        let wide = || match parse_decimal(value) {
            Some(Some(n)) => Ok(n),
            Some(None) => Err(bad("too large for a counter")),
            None => Err(bad("not a non-negative integer")),
        };
        let counter = || u64::try_from(wide()?).map_err(|_| bad("too large for a counter"));
        match name {
            "hits" => s.hits = counter()?,
            "misses" => s.misses = counter()?,
            "skips" => s.skips = counter()?,
            "errors" => s.errors = counter()?,
            "stores" => s.stores = counter()?,
            "bytes_raw" => s.bytes_raw = counter()?,
            "bytes_stored" => s.bytes_stored = counter()?,
            "miss_us_sum" => s.miss_us_sum = counter()?,
            "miss_us_sumsq" => s.miss_us_sumsq = wide()?,
            _ => {
                if let Some(i) = (0..BUCKETS).find(|&i| bucket_field(i) == name) {
                    s.miss_buckets[i] = counter()?;
                }
            }
        }
    }
    Ok(s)
}

/// Number of samples behind `miss_us_sum` and `miss_us_sumsq`: the
/// histogram's total; `misses` when the histogram is empty but the sum is
/// not (a writer without histogram); 0 when nothing was timed.
fn timed_count(s: &StatsSnapshot) -> u128 {
    match s.miss_buckets.iter().map(|&c| u128::from(c)).sum() {
        0 if s.miss_us_sum > 0 => u128::from(s.misses),
        n => n,
    }
}

/// The `q`-quantile (`0 < q <= 1`) of a miss-time histogram (buckets as in
/// [`StatsSnapshot::miss_buckets`]), interpolated linearly within its
/// bucket like Prometheus' `histogram_quantile`: with `N` the total count
/// and `C(i)` the cumulative count through bucket `i`, the target rank is
/// `r = q * N`; the bucket is the first with `C(i) >= r`; the value is
/// `lo + (hi - lo) * (r - C(i-1)) / count(i)`, where the bucket spans
/// `(lo, hi]` and the first starts at 0. A rank in the unbounded bucket
/// gives the last finite bound, flagged `capped`. `None` without samples.
pub fn percentile(buckets: &[u64; BUCKETS], q: f64) -> Option<Percentile> {
    let last_bound = MISS_BUCKETS_US[MISS_BUCKETS_US.len() - 1] as f64;
    let total: u128 = buckets.iter().map(|&c| u128::from(c)).sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below: u128 = 0;
    for (i, &count) in buckets.iter().enumerate() {
        let through = below + u128::from(count);
        if count > 0 && through as f64 >= rank {
            let Some(&hi) = MISS_BUCKETS_US.get(i) else {
                return Some(Percentile {
                    us: last_bound,
                    capped: true,
                });
            };
            let lo = if i == 0 { 0 } else { MISS_BUCKETS_US[i - 1] };
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(Percentile {
                us: lo as f64 + (hi - lo) as f64 * within,
                capped: false,
            });
        }
        below = through;
    }
    // Only reached through rounding with q close to 1: the top sample.
    let last = buckets.iter().rposition(|&c| c > 0)?;
    Some(match MISS_BUCKETS_US.get(last) {
        Some(&hi) => Percentile {
            us: hi as f64,
            capped: false,
        },
        None => Percentile {
            us: last_bound,
            capped: true,
        },
    })
}

/// `a * b` as a 256-bit number `(high, low)`.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & MASK);
    let (b1, b0) = (b >> 64, b & MASK);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // Middle column: at most 3 * (2^64 - 1), kept with its carry.
    let mid = (p00 >> 64) + (p01 & MASK) + (p10 & MASK);
    let low = (p00 & MASK) | (mid << 64);
    let high = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (high, low)
}

/// A 256-bit `(high, low)` as the nearest-ish f64.
fn wide_to_f64((high, low): (u128, u128)) -> f64 {
    high as f64 * 2f64.powi(128) + low as f64
}

/// Mean and population standard deviation of `n` samples from their sum
/// and sum of squares: `var = sumsq/n - mean²`, clamped at 0. Computed as
/// `(n·sumsq - sum²) / n²` with exact 256-bit integers, so that no
/// precision is lost to cancellation when the spread is small next to the
/// mean; only the final division is in f64. `None` when `n == 0`.
fn mean_stddev(n: u128, sum: u128, sumsq: u128) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let mean = sum as f64 / n as f64;
    let (nh, nl) = mul_wide(n, sumsq);
    let (sh, sl) = mul_wide(sum, sum);
    // n·sumsq - sum², or 0 when negative (inconsistent counters).
    let diff = if (nh, nl) > (sh, sl) {
        let (low, borrow) = nl.overflowing_sub(sl);
        (nh - sh - u128::from(borrow), low)
    } else {
        (0, 0)
    };
    let var = wide_to_f64(diff) / wide_to_f64(mul_wide(n, n));
    Some((mean, var.max(0.0).sqrt()))
}

/// The hash key of `prefix`'s stats.
fn stats_key(namespace: &str, prefix: &[u8]) -> Vec<u8> {
    let mut key = format!("{namespace}:").into_bytes();
    key.extend_from_slice(prefix);
    key.extend_from_slice(b":stats");
    key
}

/// The prefix of a key `{namespace}:{prefix}:stats`, if it is one.
fn prefix_of_key<'a>(namespace: &str, key: &'a [u8]) -> Option<&'a [u8]> {
    let rest = key.strip_prefix(namespace.as_bytes())?.strip_prefix(b":")?;
    let prefix = rest.strip_suffix(b":stats")?;
    (!prefix.is_empty() && !prefix.contains(&b':')).then_some(prefix)
}

/// Every prefix of `namespace` that has a stats hash, sorted.
async fn discover(store: &RedisStore, namespace: &str) -> Result<Vec<Vec<u8>>, Error> {
    let mut scan = store.scan_keys(format!("{}:*:stats", glob_escape(namespace)));
    let mut found = BTreeSet::new();
    while let Some(keys) = scan.next_batch().await? {
        found.extend(
            keys.iter()
                .filter_map(|k| prefix_of_key(namespace, k))
                .map(<[u8]>::to_vec),
        );
    }
    Ok(found.into_iter().collect())
}

/// The reports of `prefixes` (all of the namespace's when `None`), in one
/// pipelined round trip after discovery. A named prefix without a hash
/// reports zeros; a discovered key that is not a hash (not ours) or that
/// vanished since the scan is left out.
async fn read(
    store: &RedisStore,
    namespace: &str,
    prefixes: Option<&[&str]>,
) -> Result<Vec<PrefixReport>, Error> {
    let wanted: Vec<Vec<u8>> = match prefixes {
        Some(list) => {
            let mut seen = BTreeSet::new();
            list.iter()
                .filter(|p| seen.insert(**p))
                .map(|p| p.as_bytes().to_vec())
                .collect()
        }
        None => discover(store, namespace).await?,
    };
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for prefix in &wanted {
        pipe.cmd("HGETALL").arg(stats_key(namespace, prefix));
    }
    type Fields = Vec<(Vec<u8>, Vec<u8>)>;
    let replies: Vec<redis::RedisResult<Fields>> = if store.is_cluster() {
        // Each prefix's hash lives in its own slot, maybe on its own master:
        // a pipeline must not cross slots, so one command each.
        let mut replies = Vec::with_capacity(wanted.len());
        for cmd in pipe.cmd_iter() {
            match store.query::<Fields>(cmd).await {
                Ok(fields) => replies.push(Ok(fields)),
                // An answer (a key of another type): as a pipeline's reply
                // on one server would be.
                Err(e) if e.kind() == StoreErrorKind::Response => {
                    replies.push(Err(redis::RedisError::from((
                        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
                        "HGETALL",
                        e.to_string(),
                    ))));
                }
                // No answer, or a cluster that cannot serve: the read
                // fails, as it does on one server, instead of leaving the
                // prefix out.
                Err(e) => return Err(e.into()),
            }
        }
        replies
    } else {
        store
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await?
    };
    let discovered = prefixes.is_none();
    let mut reports = Vec::with_capacity(wanted.len());
    for (prefix, reply) in wanted.iter().zip(replies) {
        let key = String::from_utf8_lossy(&stats_key(namespace, prefix)).into_owned();
        let fields = match reply {
            Ok(fields) => fields,
            Err(_) if discovered => continue,
            Err(e) => return Err(Error::StatsField(format!("cannot read {key}: {e}"))),
        };
        if discovered && fields.is_empty() {
            continue;
        }
        let pairs = fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        let prefix = String::from_utf8_lossy(prefix).into_owned();
        reports.push(PrefixReport::from_hash(prefix, &key, pairs)?);
    }
    Ok(reports)
}

/// Reads the stats hashes of one namespace from the Redis a [`Config`]
/// names, through the same store layer (connection handling, timeouts,
/// key enumeration) as the cache itself.
#[derive(Debug)]
pub struct StatsReader {
    store: RedisStore,
    namespace: String,
}

impl StatsReader {
    /// A reader of `config`'s Redis and namespace. It connects on first use.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the configuration names no Redis (the
    /// embedded store keeps its stats in-process: [`crate::local_stats`])
    /// or a URL the Redis client rejects.
    pub fn new(config: &Config) -> Result<Self, Error> {
        if config.redis_url().is_none() {
            return Err(Error::Config(
                "reading stats needs a Redis URL; the embedded store has none".into(),
            ));
        }
        Ok(StatsReader {
            store: RedisStore::open(config)?,
            namespace: config.namespace().to_owned(),
        })
    }

    /// The namespace read.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The report of one prefix (zeros when it has no stats yet).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when Redis fails; [`Error::StatsField`] when the
    /// hash holds a broken field.
    pub async fn prefix(&self, prefix: &str) -> Result<PrefixReport, Error> {
        let mut reports = read(&self.store, &self.namespace, Some(&[prefix])).await?;
        Ok(reports.remove(0))
    }

    /// The reports of `prefixes`, in the order given (duplicates once;
    /// zeros for a prefix without stats).
    ///
    /// # Errors
    ///
    /// As [`StatsReader::prefix`].
    pub async fn prefixes(&self, prefixes: &[&str]) -> Result<Vec<PrefixReport>, Error> {
        read(&self.store, &self.namespace, Some(prefixes)).await
    }

    /// The reports of every prefix of the namespace that has stats, sorted
    /// by prefix. Keys are enumerated with `SCAN`, never `KEYS`.
    ///
    /// # Errors
    ///
    /// As [`StatsReader::prefix`].
    pub async fn all(&self) -> Result<Vec<PrefixReport>, Error> {
        read(&self.store, &self.namespace, None).await
    }
}

/// The reports of every prefix, as this process's default cache (or, inside
/// [`crate::Cache::scope`], the scope's cache) sees them: with
/// Redis, the stats hashes of the configured namespace (every process's
/// flushed counts, sorted by prefix); with the embedded store or caching
/// disabled, this process's own counters ([`crate::local_stats`]).
///
/// # Errors
///
/// As [`StatsReader::prefix`].
pub async fn read_all() -> Result<Vec<PrefixReport>, Error> {
    let engine = current();
    match engine.redis() {
        Some(store) => read(store, &engine.config.namespace, None).await,
        None => {
            let mut local: Vec<PrefixReport> = engine
                .stats
                .all()
                .into_iter()
                .map(|(prefix, counters)| PrefixReport::from_counters(prefix, counters.snapshot()))
                .collect();
            local.sort_by(|a, b| a.prefix.cmp(&b.prefix));
            Ok(local)
        }
    }
}

/// The report of one prefix, as [`read_all`] sees it (zeros when it has
/// no stats yet).
///
/// # Errors
///
/// As [`StatsReader::prefix`].
pub async fn read_prefix(prefix: &str) -> Result<PrefixReport, Error> {
    let engine = current();
    match engine.redis() {
        Some(store) => {
            let mut reports = read(store, &engine.config.namespace, Some(&[prefix])).await?;
            Ok(reports.remove(0))
        }
        None => Ok(PrefixReport::from_counters(
            prefix,
            engine.stats.snapshot(prefix).unwrap_or_default(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&'static str, &'static str)]) -> Result<StatsSnapshot, Error> {
        parse_fields(
            "cached:foo:stats",
            pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        )
    }

    fn with_buckets(pairs: &[(usize, u64)]) -> [u64; BUCKETS] {
        let mut b = [0u64; BUCKETS];
        for &(i, n) in pairs {
            b[i] = n;
        }
        b
    }

    #[test]
    fn parses_fields_missing_ones_are_zero() {
        let s = parse(&[
            ("hits", "300"),
            ("misses", "100"),
            ("miss_us_sumsq", "900000145000000000000"),
            ("miss_us_le_250", "30"),
            ("miss_us_le_inf", "2"),
            ("some_future_field", "whatever"),
        ])
        .unwrap();
        assert_eq!((s.hits, s.misses, s.skips), (300, 100, 0));
        assert_eq!(s.miss_us_sumsq, 900_000_145_000_000_000_000);
        assert_eq!(s.miss_buckets[1], 30);
        assert_eq!(s.miss_buckets[16], 2);
    }

    #[test]
    fn the_field_names_are_the_writers() {
        // What the flusher writes parses back to the same counters.
        let mut written = StatsSnapshot {
            hits: 1,
            misses: 2,
            skips: 3,
            errors: 4,
            stores: 5,
            bytes_raw: 6,
            bytes_stored: 7,
            miss_us_sum: 8,
            miss_us_sumsq: 0,
            ..StatsSnapshot::default()
        };
        for (i, b) in written.miss_buckets.iter_mut().enumerate() {
            *b = 100 + i as u64;
        }
        let fields: Vec<(String, String)> = written
            .integer_fields()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        let read = parse_fields(
            "k",
            fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        )
        .unwrap();
        assert_eq!(read, written);
    }

    #[test]
    fn rejects_broken_fields() {
        for bad in ["abc", "-5", "1.5", " 7", "", "1e3", "+3"] {
            let msg = parse(&[("miss_us_le_100", bad)]).unwrap_err().to_string();
            assert!(
                msg.contains("field miss_us_le_100 of cached:foo:stats is \""),
                "{msg}"
            );
            assert!(msg.ends_with("not a non-negative integer"), "{msg}");
        }
        // 2^64 fits the sum of squares but not a counter; 2^128 fits nothing.
        let msg = parse(&[("hits", "18446744073709551616")]).unwrap_err();
        assert!(
            msg.to_string().ends_with("too large for a counter"),
            "{msg}"
        );
        assert!(parse(&[("miss_us_sumsq", "18446744073709551616")]).is_ok());
        let max = "340282366920938463463374607431768211455";
        assert_eq!(
            parse(&[("miss_us_sumsq", max)]).unwrap().miss_us_sumsq,
            u128::MAX
        );
        assert!(parse(&[("miss_us_sumsq", "340282366920938463463374607431768211456")]).is_err());
    }

    #[test]
    fn percentiles_match_hand_computation() {
        // Buckets: (0,100]: 10, (100,250]: 30, (250,500]: 40, (500,1000]: 20.
        // N = 100; cumulative 10, 40, 80, 100.
        // p50: r = 50 -> (250,500] (before 40): 250 + 250 * 10 / 40 = 312.5
        // p90: r = 90 -> (500,1000] (before 80): 500 + 500 * 10 / 20 = 750
        // p99: r = 99 -> 500 + 500 * 19 / 20 = 975
        // p10: r = 10 -> (0,100]: 100 * 10 / 10 = 100
        let b = with_buckets(&[(0, 10), (1, 30), (2, 40), (3, 20)]);
        let us = |q| {
            let p = percentile(&b, q).unwrap();
            assert!(!p.capped);
            p.us
        };
        assert_eq!(us(0.50), 312.5);
        assert_eq!(us(0.90), 750.0);
        assert_eq!(us(0.99), 975.0);
        assert_eq!(us(0.10), 100.0);
        assert_eq!(us(1.0), 1000.0);
    }

    #[test]
    fn percentiles_skip_empty_buckets_and_cap_at_inf() {
        // (5e6,1e7]: 2, inf: 1. p50: r = 1.5 -> 5e6 + 5e6 * 1.5 / 2;
        // p90: r = 2.7 > 2 -> the unbounded bucket: capped at 1e7.
        let b = with_buckets(&[(15, 2), (16, 1)]);
        let p50 = percentile(&b, 0.5).unwrap();
        assert_eq!((p50.us, p50.capped), (8_750_000.0, false));
        let p90 = percentile(&b, 0.9).unwrap();
        assert_eq!((p90.us, p90.capped), (10_000_000.0, true));
        assert_eq!(percentile(&[0; BUCKETS], 0.5), None);
        // r = 1 lands in the first bucket, not a later empty one.
        let b = with_buckets(&[(0, 1), (13, 1)]);
        assert_eq!(percentile(&b, 0.5).unwrap().us, 100.0);
    }

    #[test]
    fn mean_and_stddev() {
        // 300, 400, 500: sum 1200, sumsq 500000; var 500000/3 - 160000.
        let (mean, sd) = mean_stddev(3, 1200, 500_000).unwrap();
        assert_eq!(mean, 400.0);
        assert!((sd - (20_000f64 / 3.0).sqrt()).abs() < 1e-9, "{sd}");
        assert_eq!(mean_stddev(4, 40, 400), Some((10.0, 0.0)));
        // Inconsistent counters clamp to 0.
        assert_eq!(mean_stddev(2, 10, 1), Some((5.0, 0.0)));
        assert_eq!(mean_stddev(0, 0, 0), None);
        // Huge values, tiny spread: f64 on sumsq/n - mean² would be noise.
        let (a, b) = (1_000_000_000_000u128, 1_000_000_000_002u128);
        assert_eq!(
            mean_stddev(2, a + b, a * a + b * b),
            Some((1_000_000_000_001.0, 1.0))
        );
        assert_eq!(mul_wide(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(mul_wide(1 << 64, 1 << 64), (1, 0));
    }

    #[test]
    fn derived_numbers() {
        let empty = PrefixReport::from_counters("p", StatsSnapshot::default());
        assert_eq!(empty.hit_ratio, None);
        assert_eq!(empty.miss_us_mean, None);
        assert_eq!(empty.p50, None);
        assert_eq!(empty.mean_stored_bytes, None);
        assert_eq!(empty.compression_ratio, None);
        let r = PrefixReport::from_hash(
            "alpha",
            "ns:alpha:stats",
            [
                ("hits", "300"),
                ("misses", "100"),
                ("stores", "100"),
                ("bytes_raw", "400000"),
                ("bytes_stored", "100000"),
                ("miss_us_sum", "40000"),
                ("miss_us_sumsq", "17000000"),
                ("miss_us_le_100", "10"),
                ("miss_us_le_250", "30"),
                ("miss_us_le_500", "40"),
                ("miss_us_le_1000", "20"),
            ]
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        )
        .unwrap();
        assert_eq!(r.prefix, "alpha");
        assert_eq!(r.hit_ratio, Some(0.75));
        // sum 40000 / 100 samples; var 170000 - 400² = 10000.
        assert_eq!(r.miss_us_mean, Some(400.0));
        assert_eq!(r.miss_us_stddev, Some(100.0));
        assert_eq!(r.p50.map(|p| p.us), Some(312.5));
        assert_eq!(r.mean_stored_bytes, Some(1000.0));
        assert_eq!(r.compression_ratio, Some(4.0));
        let hist: Vec<Bucket> = r.histogram().collect();
        assert_eq!(hist.len(), BUCKETS);
        for (i, b) in hist.iter().enumerate() {
            assert_eq!(b.field(), bucket_field(i));
        }
        assert_eq!(hist[0].field(), "miss_us_le_100");
        assert_eq!(hist[16].field(), "miss_us_le_inf");
        assert_eq!(
            hist[1],
            Bucket {
                above_us: 100,
                upto_us: Some(250),
                count: 30
            }
        );
        assert_eq!(
            hist[16],
            Bucket {
                above_us: 10_000_000,
                upto_us: None,
                count: 0
            }
        );
        // A sum without histogram: averaged over `misses`.
        let r = PrefixReport::from_counters(
            "p",
            StatsSnapshot {
                misses: 4,
                miss_us_sum: 100,
                miss_us_sumsq: 2500,
                ..StatsSnapshot::default()
            },
        );
        assert_eq!((r.miss_us_mean, r.miss_us_stddev), (Some(25.0), Some(0.0)));
    }

    #[test]
    fn stats_keys() {
        assert_eq!(
            prefix_of_key("cached", b"cached:user:stats"),
            Some(&b"user"[..])
        );
        assert_eq!(prefix_of_key("cached", b"cached:a:b:stats"), None);
        assert_eq!(prefix_of_key("cached", b"cached::stats"), None);
        assert_eq!(prefix_of_key("cached", b"cachedx:user:stats"), None);
        assert_eq!(
            prefix_of_key("cached", b"cached:user:AAAAAAAAAAAAAAAAAAAAAA"),
            None
        );
        assert_eq!(stats_key("ns", b"p"), b"ns:p:stats");
    }
}
