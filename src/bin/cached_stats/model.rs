//! The stats of one prefix: parsing the hash's fields, and the numbers
//! derived from them (ratios, mean and standard deviation, percentiles).
//! Pure functions, no Redis.

/// Finite upper bounds of the miss-time histogram buckets, in µs. Bucket `i`
/// spans `(BOUNDS_US[i - 1], BOUNDS_US[i]]` (the first one from 0); after
/// them comes the `inf` bucket.
pub const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Number of histogram buckets: the finite ones and `inf`.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// Name of the histogram field of bucket `i` (`miss_us_le_100`, ...,
/// `miss_us_le_inf`).
pub fn bucket_field(i: usize) -> String {
    match BOUNDS_US.get(i) {
        Some(bound) => format!("miss_us_le_{bound}"),
        None => "miss_us_le_inf".to_string(),
    }
}

/// The raw counters of one prefix, as stored in `{namespace}:{prefix}:stats`.
/// A missing field is 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawStats {
    pub hits: u64,
    pub misses: u64,
    pub skips: u64,
    pub errors: u64,
    pub stores: u64,
    pub bytes_raw: u64,
    pub bytes_stored: u64,
    pub miss_us_sum: u128,
    /// Can exceed 64 bits.
    pub miss_us_sumsq: u128,
    /// Non-cumulative counts, indexed like [`BOUNDS_US`], then `inf`.
    pub buckets: [u64; BUCKETS],
}

/// A field holding something other than a non-negative integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadField {
    pub field: String,
    pub value: String,
    pub too_large: bool,
}

impl BadField {
    /// The one-line message, naming the field and the hash.
    pub fn message(&self, key: &str) -> String {
        if self.too_large {
            format!(
                "field {} of {key} is {}, too large for a counter",
                self.field, self.value
            )
        } else {
            format!(
                "field {} of {key} is {}, not a non-negative integer",
                self.field, self.value
            )
        }
    }
}

/// Parses a non-negative decimal integer: ASCII digits only (no sign, no
/// spaces, no decimal point), at least one. `None` when it is not one,
/// `Some(Err(()))` when it overflows `u128`.
fn parse_decimal(value: &[u8]) -> Option<Result<u128, ()>> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u128 = 0;
    for &d in value {
        match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(d - b'0')))
        {
            Some(v) => n = v,
            None => return Some(Err(())),
        }
    }
    Some(Ok(n))
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

impl RawStats {
    /// Builds the stats from the hash's fields. Unknown fields are ignored
    /// (a newer writer may add some); a known field whose value is not a
    /// non-negative decimal integer is an error.
    pub fn from_fields<'a, I>(fields: I) -> Result<Self, BadField>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut stats = RawStats::default();
        for (name, value) in fields {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            let parsed = || -> Result<u128, BadField> {
                match parse_decimal(value) {
                    Some(Ok(n)) => Ok(n),
                    Some(Err(())) => Err(BadField {
                        field: name.to_string(),
                        value: quote(value),
                        too_large: true,
                    }),
                    None => Err(BadField {
                        field: name.to_string(),
                        value: quote(value),
                        too_large: false,
                    }),
                }
            };
            let counter = || -> Result<u64, BadField> {
                let n = parsed()?;
                u64::try_from(n).map_err(|_| BadField {
                    field: name.to_string(),
                    value: quote(value),
                    too_large: true,
                })
            };
            match name {
                "hits" => stats.hits = counter()?,
                "misses" => stats.misses = counter()?,
                "skips" => stats.skips = counter()?,
                "errors" => stats.errors = counter()?,
                "stores" => stats.stores = counter()?,
                "bytes_raw" => stats.bytes_raw = counter()?,
                "bytes_stored" => stats.bytes_stored = counter()?,
                "miss_us_sum" => stats.miss_us_sum = parsed()?,
                "miss_us_sumsq" => stats.miss_us_sumsq = parsed()?,
                _ => {
                    if let Some(i) = (0..BUCKETS).find(|&i| bucket_field(i) == name) {
                        stats.buckets[i] = counter()?;
                    }
                }
            }
        }
        Ok(stats)
    }

    /// Number of timed misses: the histogram's total.
    pub fn histogram_count(&self) -> u128 {
        self.buckets.iter().map(|&c| u128::from(c)).sum()
    }

    /// Number of samples behind `miss_us_sum` and `miss_us_sumsq`: the
    /// histogram's total; `misses` when the histogram is empty but the sum
    /// is not (a writer without histogram); 0 when nothing was timed.
    pub fn timed_count(&self) -> u128 {
        match self.histogram_count() {
            0 if self.miss_us_sum > 0 => u128::from(self.misses),
            n => n,
        }
    }
}

/// A percentile of miss time read off the histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentile {
    /// In µs. When `capped`, the largest finite bound (10 s).
    pub us: f64,
    /// The percentile falls in the `inf` bucket: the true value is above
    /// `us`, by an unknown amount.
    pub capped: bool,
}

/// The `q`-quantile (`0 < q <= 1`) of the histogram, interpolated linearly
/// within its bucket, like Prometheus' `histogram_quantile`: with `N` the
/// total count and `C(i)` the cumulative count through bucket `i`, the
/// target rank is `r = q * N`; the bucket is the first with `C(i) >= r`; the
/// value is `lo + (hi - lo) * (r - C(i-1)) / count(i)`, where the bucket
/// spans `(lo, hi]` and the first bucket starts at 0. A rank in the `inf`
/// bucket gives the last finite bound, flagged `capped`. `None` without
/// samples.
pub fn percentile(buckets: &[u64; BUCKETS], q: f64) -> Option<Percentile> {
    let total: u128 = buckets.iter().map(|&c| u128::from(c)).sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below: u128 = 0;
    for (i, &count) in buckets.iter().enumerate() {
        let through = below + u128::from(count);
        if count > 0 && through as f64 >= rank {
            let Some(&hi) = BOUNDS_US.get(i) else {
                return Some(Percentile {
                    us: BOUNDS_US[BOUNDS_US.len() - 1] as f64,
                    capped: true,
                });
            };
            let lo = if i == 0 { 0 } else { BOUNDS_US[i - 1] };
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
    Some(match BOUNDS_US.get(last) {
        Some(&hi) => Percentile {
            us: hi as f64,
            capped: false,
        },
        None => Percentile {
            us: BOUNDS_US[BOUNDS_US.len() - 1] as f64,
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
pub fn mean_stddev(n: u128, sum: u128, sumsq: u128) -> Option<(f64, f64)> {
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

/// The numbers derived from the raw counters; `None` where undefined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Derived {
    /// `hits / (hits + misses)`, a fraction in `[0, 1]`.
    pub hit_ratio: Option<f64>,
    pub miss_us_mean: Option<f64>,
    pub miss_us_stddev: Option<f64>,
    pub p50: Option<Percentile>,
    pub p90: Option<Percentile>,
    pub p99: Option<Percentile>,
    /// `bytes_stored / stores`.
    pub mean_stored_bytes: Option<f64>,
    /// `bytes_raw / bytes_stored`.
    pub compression_ratio: Option<f64>,
}

impl Derived {
    pub fn of(raw: &RawStats) -> Self {
        let lookups = u128::from(raw.hits) + u128::from(raw.misses);
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        let moments = mean_stddev(raw.timed_count(), raw.miss_us_sum, raw.miss_us_sumsq);
        Derived {
            hit_ratio: ratio(raw.hits as f64, lookups as f64),
            miss_us_mean: moments.map(|m| m.0),
            miss_us_stddev: moments.map(|m| m.1),
            p50: percentile(&raw.buckets, 0.50),
            p90: percentile(&raw.buckets, 0.90),
            p99: percentile(&raw.buckets, 0.99),
            mean_stored_bytes: ratio(raw.bytes_stored as f64, raw.stores as f64),
            compression_ratio: ratio(raw.bytes_raw as f64, raw.bytes_stored as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&'static str, &'static str)]) -> Result<RawStats, BadField> {
        RawStats::from_fields(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    #[test]
    fn parses_fields_missing_ones_are_zero() {
        let s = fields(&[
            ("hits", "300"),
            ("misses", "100"),
            ("miss_us_sumsq", "900000145000000000000"),
            ("miss_us_le_250", "30"),
            ("miss_us_le_inf", "2"),
            ("some_future_field", "whatever"),
        ])
        .unwrap();
        assert_eq!(s.hits, 300);
        assert_eq!(s.misses, 100);
        assert_eq!(s.skips, 0);
        assert_eq!(s.miss_us_sumsq, 900_000_145_000_000_000_000);
        assert_eq!(s.buckets[1], 30);
        assert_eq!(s.buckets[16], 2);
        assert_eq!(s.histogram_count(), 32);
    }

    #[test]
    fn rejects_broken_fields() {
        for bad in ["abc", "-5", "1.5", " 7", "", "1e3", "+3"] {
            let err = fields(&[("miss_us_le_100", bad)]).unwrap_err();
            assert_eq!(err.field, "miss_us_le_100");
            assert!(!err.too_large);
            let msg = err.message("cached:foo:stats");
            assert!(
                msg.starts_with("field miss_us_le_100 of cached:foo:stats is \""),
                "{msg}"
            );
            assert!(msg.ends_with("not a non-negative integer"), "{msg}");
        }
        // 2^64 fits the sums but not a counter; 2^128 fits nothing.
        let err = fields(&[("hits", "18446744073709551616")]).unwrap_err();
        assert!(err.too_large);
        assert!(fields(&[("miss_us_sum", "18446744073709551616")]).is_ok());
        let err =
            fields(&[("miss_us_sumsq", "340282366920938463463374607431768211456")]).unwrap_err();
        assert!(err.too_large);
        assert!(fields(&[("miss_us_sumsq", "340282366920938463463374607431768211455")]).is_ok());
    }

    #[test]
    fn percentiles_match_hand_computation() {
        // Buckets: (0,100]: 10, (100,250]: 30, (250,500]: 40, (500,1000]: 20.
        // N = 100; cumulative 10, 40, 80, 100.
        // p50: r = 50 -> first C >= 50 is (250,500] (C = 80, before 40):
        //      250 + 250 * (50 - 40) / 40 = 250 + 62.5 = 312.5
        // p90: r = 90 -> (500,1000] (C = 100, before 80):
        //      500 + 500 * (90 - 80) / 20 = 750
        // p99: r = 99 -> 500 + 500 * (99 - 80) / 20 = 975
        // p10: r = 10 -> (0,100] (C = 10, before 0): 0 + 100 * 10 / 10 = 100
        let mut b = [0u64; BUCKETS];
        b[0] = 10;
        b[1] = 30;
        b[2] = 40;
        b[3] = 20;
        let p = |q| percentile(&b, q).unwrap();
        assert_eq!(
            p(0.50),
            Percentile {
                us: 312.5,
                capped: false
            }
        );
        assert_eq!(
            p(0.90),
            Percentile {
                us: 750.0,
                capped: false
            }
        );
        assert_eq!(
            p(0.99),
            Percentile {
                us: 975.0,
                capped: false
            }
        );
        assert_eq!(
            p(0.10),
            Percentile {
                us: 100.0,
                capped: false
            }
        );
        assert_eq!(
            p(1.0),
            Percentile {
                us: 1000.0,
                capped: false
            }
        );
    }

    #[test]
    fn percentiles_skip_empty_buckets_and_cap_at_inf() {
        // (5e6,1e7]: 2, inf: 1. N = 3.
        // p50: r = 1.5 -> (5e6,1e7]: 5e6 + 5e6 * 1.5 / 2 = 8_750_000
        // p90: r = 2.7 > 2 -> inf: capped at 1e7.
        let mut b = [0u64; BUCKETS];
        b[15] = 2;
        b[16] = 1;
        assert_eq!(
            percentile(&b, 0.5).unwrap(),
            Percentile {
                us: 8_750_000.0,
                capped: false
            }
        );
        assert_eq!(
            percentile(&b, 0.9).unwrap(),
            Percentile {
                us: 10_000_000.0,
                capped: true
            }
        );
        assert_eq!(percentile(&[0; BUCKETS], 0.5), None);
        // Empty buckets between samples: (0,100]: 1, (1e6,2.5e6]: 1.
        // p50: r = 1 -> C(0) = 1 >= 1: 0 + 100 * 1/1 = 100 (not a later empty one).
        let mut b = [0u64; BUCKETS];
        b[0] = 1;
        b[13] = 1;
        assert_eq!(percentile(&b, 0.5).unwrap().us, 100.0);
    }

    #[test]
    fn mean_and_stddev() {
        // Samples 300, 400, 500: sum 1200, sumsq 90000 + 160000 + 250000
        // = 500000; mean 400; var = 500000/3 - 160000 = 6666.67; sd 81.65.
        let (mean, sd) = mean_stddev(3, 1200, 500_000).unwrap();
        assert_eq!(mean, 400.0);
        assert!((sd - (20_000f64 / 3.0).sqrt()).abs() < 1e-9, "{sd}");
        // All equal: exactly 0, no rounding noise.
        assert_eq!(mean_stddev(4, 40, 400), Some((10.0, 0.0)));
        // Inconsistent counters clamp to 0.
        assert_eq!(mean_stddev(2, 10, 1), Some((5.0, 0.0)));
        assert_eq!(mean_stddev(0, 0, 0), None);
        // Huge values, tiny spread: 1e12 + {0, 2} µs. f64 on sumsq/n -
        // mean² would give noise of order 1e8; the exact way gives sd 1.
        let (a, b) = (1_000_000_000_000u128, 1_000_000_000_002u128);
        let (mean, sd) = mean_stddev(2, a + b, a * a + b * b).unwrap();
        assert_eq!(mean, 1_000_000_000_001.0);
        assert_eq!(sd, 1.0);
        // sumsq beyond 64 bits, n·sumsq beyond 128 bits.
        let (mean, sd) = mean_stddev(u64::MAX as u128, u64::MAX as u128 * 7, u128::MAX).unwrap();
        assert_eq!(mean, 7.0);
        assert!(sd > 0.0 && sd.is_finite());
    }

    #[test]
    fn wide_multiplication() {
        assert_eq!(mul_wide(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(mul_wide(1 << 64, 1 << 64), (1, 0));
        assert_eq!(mul_wide(12345, 678), (0, 12345 * 678));
    }

    #[test]
    fn derived_undefined_without_data() {
        let d = Derived::of(&RawStats::default());
        assert_eq!(d.hit_ratio, None);
        assert_eq!(d.miss_us_mean, None);
        assert_eq!(d.p50, None);
        assert_eq!(d.mean_stored_bytes, None);
        assert_eq!(d.compression_ratio, None);
        let d = Derived::of(&RawStats {
            hits: 3,
            misses: 1,
            stores: 4,
            bytes_raw: 4000,
            bytes_stored: 1000,
            ..RawStats::default()
        });
        assert_eq!(d.hit_ratio, Some(0.75));
        assert_eq!(d.mean_stored_bytes, Some(250.0));
        assert_eq!(d.compression_ratio, Some(4.0));
        // A miss without timing: no mean.
        assert_eq!(d.miss_us_mean, None);
        // A sum without histogram: over `misses`.
        let d = Derived::of(&RawStats {
            misses: 4,
            miss_us_sum: 100,
            miss_us_sumsq: 2500,
            ..RawStats::default()
        });
        assert_eq!(d.miss_us_mean, Some(25.0));
        assert_eq!(d.miss_us_stddev, Some(0.0));
        assert_eq!(d.p50, None);
    }
}
