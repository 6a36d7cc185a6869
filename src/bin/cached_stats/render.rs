//! The three output formats: a table for people, JSON and the Prometheus
//! text exposition format for machines. Pure functions returning strings.

use super::model::{bucket_field, Derived, Percentile, RawStats, BOUNDS_US, BUCKETS};

/// The stats of one prefix, with what is derived from them.
#[derive(Debug, Clone)]
pub struct Row {
    pub prefix: String,
    pub raw: RawStats,
    pub derived: Derived,
}

impl Row {
    pub fn new(prefix: String, raw: RawStats) -> Self {
        let derived = Derived::of(&raw);
        Row {
            prefix,
            raw,
            derived,
        }
    }
}

// ---------------------------------------------------------------- units --

/// `x` with three significant digits (two decimals below 10, one below 100,
/// none above).
fn three_digits(x: f64) -> String {
    if x < 9.995 {
        format!("{x:.2}")
    } else if x < 99.95 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// A duration in µs as µs, ms or s.
pub fn human_us(us: f64) -> String {
    if us < 999.5 {
        format!("{}µs", three_digits(us))
    } else if us < 999_500.0 {
        format!("{}ms", three_digits(us / 1e3))
    } else {
        format!("{}s", three_digits(us / 1e6))
    }
}

/// A size in bytes as B, KiB, MiB, GiB or TiB.
pub fn human_bytes(bytes: f64) -> String {
    if bytes < 1023.5 {
        return format!("{bytes:.0} B");
    }
    let mut value = bytes / 1024.0;
    for unit in ["KiB", "MiB", "GiB"] {
        if value < 1023.5 {
            return format!("{} {unit}", three_digits(value));
        }
        value /= 1024.0;
    }
    format!("{} TiB", three_digits(value))
}

/// A percentile for the table: `>10s` when it falls beyond the histogram.
fn human_percentile(p: Option<Percentile>) -> String {
    match p {
        None => "-".to_string(),
        Some(Percentile { us, capped: true }) => format!(">{}", human_us(us)),
        Some(Percentile { us, capped: false }) => human_us(us),
    }
}

/// Control characters of a prefix made visible, so a strange key cannot
/// garble the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

// ---------------------------------------------------------------- table --

const TABLE_HEADER: [&str; 12] = [
    "PREFIX",
    "HITS",
    "MISSES",
    "HIT%",
    "SKIPS",
    "ERRORS",
    "MISS TIME (mean ± sd)",
    "P50",
    "P90",
    "P99",
    "AVG SIZE",
    "COMPR",
];

/// The table: one row per prefix, columns aligned; `-` where a number is
/// undefined (no lookups, no timed misses, nothing stored).
pub fn table(rows: &[Row]) -> String {
    let dash = || "-".to_string();
    let mut cells: Vec<Vec<String>> = vec![TABLE_HEADER.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let d = &row.derived;
        let miss_time = match (d.miss_us_mean, d.miss_us_stddev) {
            (Some(mean), Some(sd)) => format!("{} ± {}", human_us(mean), human_us(sd)),
            _ => dash(),
        };
        cells.push(vec![
            printable(&row.prefix),
            row.raw.hits.to_string(),
            row.raw.misses.to_string(),
            d.hit_ratio
                .map_or_else(dash, |r| format!("{:.1}%", r * 100.0)),
            row.raw.skips.to_string(),
            row.raw.errors.to_string(),
            miss_time,
            human_percentile(d.p50),
            human_percentile(d.p90),
            human_percentile(d.p99),
            d.mean_stored_bytes.map_or_else(dash, human_bytes),
            d.compression_ratio
                .map_or_else(dash, |r| format!("{r:.2}x")),
        ]);
    }
    let mut widths = [0usize; TABLE_HEADER.len()];
    for line in &cells {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &cells {
        let mut text = String::new();
        for (i, (cell, &w)) in line.iter().zip(&widths).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            if i == 0 {
                text.push_str(cell);
                text.push_str(&pad);
            } else {
                text.push_str("  ");
                text.push_str(&pad);
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no stats)\n");
    }
    out
}

// ----------------------------------------------------------------- json --

/// A JSON string literal.
fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

/// A JSON number, or `null` when undefined (or not finite).
fn json_f64(x: Option<f64>) -> String {
    x.and_then(serde_json::Number::from_f64)
        .map_or_else(|| "null".to_string(), |n| n.to_string())
}

/// JSON: an array of objects, one per prefix in the order given, each with
/// `namespace`, `prefix`, every raw field (missing ones as 0; integers
/// written exactly, so `miss_us_sumsq` may exceed 64 bits) and the derived
/// numbers (`null` when undefined). `hit_ratio` is a fraction in `[0, 1]`;
/// times are in µs, sizes in bytes. `pXX_capped` is true when that
/// percentile falls in the `inf` bucket: `pXX_us` is then the last finite
/// bound (10 s), a lower bound of the true value.
pub fn json(namespace: &str, rows: &[Row]) -> String {
    if rows.is_empty() {
        return "[]\n".to_string();
    }
    let mut objects = Vec::new();
    for row in rows {
        let r = &row.raw;
        let d = &row.derived;
        let mut fields: Vec<(String, String)> = vec![
            ("namespace".into(), json_string(namespace)),
            ("prefix".into(), json_string(&row.prefix)),
            ("hits".into(), r.hits.to_string()),
            ("misses".into(), r.misses.to_string()),
            ("skips".into(), r.skips.to_string()),
            ("errors".into(), r.errors.to_string()),
            ("stores".into(), r.stores.to_string()),
            ("bytes_raw".into(), r.bytes_raw.to_string()),
            ("bytes_stored".into(), r.bytes_stored.to_string()),
            ("miss_us_sum".into(), r.miss_us_sum.to_string()),
            ("miss_us_sumsq".into(), r.miss_us_sumsq.to_string()),
        ];
        for (i, count) in r.buckets.iter().enumerate() {
            fields.push((bucket_field(i), count.to_string()));
        }
        fields.push(("hit_ratio".into(), json_f64(d.hit_ratio)));
        fields.push(("miss_us_mean".into(), json_f64(d.miss_us_mean)));
        fields.push(("miss_us_stddev".into(), json_f64(d.miss_us_stddev)));
        for (name, p) in [("p50", d.p50), ("p90", d.p90), ("p99", d.p99)] {
            fields.push((format!("{name}_us"), json_f64(p.map(|p| p.us))));
            let capped = p.map_or("null", |p| if p.capped { "true" } else { "false" });
            fields.push((format!("{name}_capped"), capped.to_string()));
        }
        fields.push(("mean_stored_bytes".into(), json_f64(d.mean_stored_bytes)));
        fields.push(("compression_ratio".into(), json_f64(d.compression_ratio)));
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("    {}: {v}", json_string(k)))
            .collect();
        objects.push(format!("  {{\n{}\n  }}", body.join(",\n")));
    }
    format!("[\n{}\n]\n", objects.join(",\n"))
}

// ----------------------------------------------------------- prometheus --

/// A label value escaped per the text exposition format: backslash,
/// double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// An integer number of µs as seconds in exact decimal (`250` ->
/// `0.00025`, `1000000` -> `1`).
pub fn micros_as_seconds(us: u128) -> String {
    let (whole, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        whole.to_string()
    } else {
        let frac = format!("{frac:06}");
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
}

/// A counter family: metric name, raw field, help text.
type Counter = (&'static str, fn(&RawStats) -> u64, &'static str);

/// The counters.
const COUNTERS: [Counter; 7] = [
    (
        "cached_hits_total",
        |r| r.hits,
        "Lookups served from the cache.",
    ),
    (
        "cached_misses_total",
        |r| r.misses,
        "Lookups not served from the cache.",
    ),
    (
        "cached_skips_total",
        |r| r.skips,
        "Calls that bypassed the cache (skip flag, cache disabled).",
    ),
    (
        "cached_errors_total",
        |r| r.errors,
        "Store or codec failures and keys that could not be built.",
    ),
    (
        "cached_stores_total",
        |r| r.stores,
        "Values written to the cache.",
    ),
    (
        "cached_bytes_raw_total",
        |r| r.bytes_raw,
        "Encoded size of the values written, before compression.",
    ),
    (
        "cached_bytes_stored_total",
        |r| r.bytes_stored,
        "Size of the values written, after compression.",
    ),
];

const HISTOGRAM: &str = "cached_miss_duration_seconds";

/// The Prometheus text exposition format (version 0.0.4): per family one
/// `# HELP` and one `# TYPE` line then all its samples, one per prefix,
/// labelled `namespace` and `prefix`. The histogram's buckets are
/// cumulative in seconds, `+Inf` and `_count` are the histogram's total,
/// `_sum` is `miss_us_sum` in seconds.
pub fn prometheus(namespace: &str, rows: &[Row]) -> String {
    let ns = escape_label(namespace);
    let labels = |row: &Row| {
        format!(
            "namespace=\"{ns}\",prefix=\"{}\"",
            escape_label(&row.prefix)
        )
    };
    let mut out = String::new();
    for (name, get, help) in COUNTERS {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for row in rows {
            out.push_str(&format!("{name}{{{}}} {}\n", labels(row), get(&row.raw)));
        }
    }
    out.push_str(&format!(
        "# HELP {HISTOGRAM} Compute time of cache misses.\n# TYPE {HISTOGRAM} histogram\n"
    ));
    for row in rows {
        let l = labels(row);
        let mut cumulative: u128 = 0;
        for (i, &count) in row.raw.buckets.iter().enumerate() {
            cumulative += u128::from(count);
            let le = match BOUNDS_US.get(i) {
                Some(&bound) => micros_as_seconds(u128::from(bound)),
                None => "+Inf".to_string(),
            };
            out.push_str(&format!(
                "{HISTOGRAM}_bucket{{{l},le=\"{le}\"}} {cumulative}\n"
            ));
        }
        debug_assert_eq!(row.raw.buckets.len(), BUCKETS);
        out.push_str(&format!(
            "{HISTOGRAM}_sum{{{l}}} {}\n",
            micros_as_seconds(row.raw.miss_us_sum)
        ));
        out.push_str(&format!("{HISTOGRAM}_count{{{l}}} {cumulative}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Row {
        let mut raw = RawStats {
            hits: 300,
            misses: 100,
            skips: 5,
            errors: 2,
            stores: 100,
            bytes_raw: 400_000,
            bytes_stored: 100_000,
            miss_us_sum: 40_000,
            miss_us_sumsq: 17_000_000,
            ..RawStats::default()
        };
        raw.buckets[0] = 10;
        raw.buckets[1] = 30;
        raw.buckets[2] = 40;
        raw.buckets[3] = 20;
        Row::new("alpha".into(), raw)
    }

    #[test]
    fn units() {
        assert_eq!(human_us(0.0), "0.00µs");
        assert_eq!(human_us(312.5), "312µs");
        assert_eq!(human_us(999.9), "1.00ms");
        assert_eq!(human_us(12_345.0), "12.3ms");
        assert_eq!(human_us(10_000_000.0), "10.0s");
        assert_eq!(human_us(3_600_000_000.0), "3600s");
        assert_eq!(human_bytes(1000.0), "1000 B");
        assert_eq!(human_bytes(1536.0), "1.50 KiB");
        assert_eq!(human_bytes(5.0 * 1024.0 * 1024.0), "5.00 MiB");
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(micros_as_seconds(100), "0.0001");
        assert_eq!(micros_as_seconds(250), "0.00025");
        assert_eq!(micros_as_seconds(1_000_000), "1");
        assert_eq!(micros_as_seconds(2_500_000), "2.5");
        assert_eq!(micros_as_seconds(0), "0");
        assert_eq!(micros_as_seconds(30_017_000_000), "30017");
    }

    #[test]
    fn label_escaping() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nnext"), r"line\nnext");
        assert_eq!(escape_label("plain-µ"), "plain-µ");
        let row = Row::new("we\"ird\\\n".into(), RawStats::default());
        let text = prometheus("n\"s", &[row]);
        assert!(text.contains(r#"cached_hits_total{namespace="n\"s",prefix="we\"ird\\\n"} 0"#));
        // An escaped newline never splits a sample.
        assert!(text
            .lines()
            .all(|l| l.starts_with('#') || l.starts_with("cached_")));
    }

    #[test]
    fn prometheus_buckets_are_cumulative() {
        let text = prometheus("cached", &[sample()]);
        let l = r#"namespace="cached",prefix="alpha""#;
        // 10, 10+30, 10+30+40, 10+30+40+20, then unchanged.
        for (le, n) in [
            ("0.0001", 10),
            ("0.00025", 40),
            ("0.0005", 80),
            ("0.001", 100),
            ("0.0025", 100),
            ("10", 100),
            ("+Inf", 100),
        ] {
            let line = format!("cached_miss_duration_seconds_bucket{{{l},le=\"{le}\"}} {n}\n");
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        assert!(text.contains(&format!("cached_miss_duration_seconds_sum{{{l}}} 0.04\n")));
        assert!(text.contains(&format!("cached_miss_duration_seconds_count{{{l}}} 100\n")));
        assert!(text.contains(&format!("cached_hits_total{{{l}}} 300\n")));
        assert!(text.contains(&format!("cached_bytes_stored_total{{{l}}} 100000\n")));
        assert_eq!(text.matches("_bucket{").count(), 17);
        // Each family: HELP, TYPE, then its samples, contiguous.
        let two = prometheus(
            "cached",
            &[sample(), Row::new("beta".into(), RawStats::default())],
        );
        let hits: Vec<&str> = two
            .lines()
            .skip_while(|l| !l.contains("cached_hits_total"))
            .take(4)
            .collect();
        assert!(hits[0].starts_with("# HELP cached_hits_total "));
        assert_eq!(hits[1], "# TYPE cached_hits_total counter");
        assert!(hits[2].contains("prefix=\"alpha\""));
        assert!(hits[3].contains("prefix=\"beta\""));
        assert_eq!(
            two.matches("# TYPE cached_miss_duration_seconds histogram")
                .count(),
            1
        );
    }

    #[test]
    fn json_has_raw_and_derived() {
        let mut big = sample();
        big.raw.miss_us_sumsq = 900_000_145_000_000_000_000;
        let text = json(
            "cached",
            &[sample(), Row::new("empty".into(), RawStats::default()), big],
        );
        assert!(text.contains("\"miss_us_sumsq\": 900000145000000000000"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let a = &v[0];
        assert_eq!(a["prefix"], "alpha");
        assert_eq!(a["hits"], 300);
        assert_eq!(a["miss_us_le_500"], 40);
        assert_eq!(a["miss_us_le_inf"], 0);
        assert_eq!(a["hit_ratio"], 0.75);
        assert_eq!(a["miss_us_mean"], 400.0);
        assert_eq!(a["miss_us_stddev"], 100.0);
        assert_eq!(a["p50_us"], 312.5);
        assert_eq!(a["p90_us"], 750.0);
        assert_eq!(a["p99_us"], 975.0);
        assert_eq!(a["p99_capped"], false);
        assert_eq!(a["mean_stored_bytes"], 1000.0);
        assert_eq!(a["compression_ratio"], 4.0);
        let e = &v[1];
        for key in [
            "hit_ratio",
            "miss_us_mean",
            "miss_us_stddev",
            "p50_us",
            "p50_capped",
            "mean_stored_bytes",
            "compression_ratio",
        ] {
            assert!(e[key].is_null(), "{key}");
        }
        assert_eq!(json("cached", &[]), "[]\n");
    }

    #[test]
    fn table_rows_and_dashes() {
        let mut capped = RawStats::default();
        capped.buckets[16] = 1;
        let text = table(&[
            sample(),
            Row::new("nothing".into(), RawStats::default()),
            Row::new("slow".into(), capped),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("PREFIX"));
        assert!(lines[1].starts_with("alpha"));
        assert!(lines[1].contains("75.0%"));
        assert!(lines[1].contains("400µs ± 100µs"));
        assert!(lines[1].contains("312µs"));
        assert!(lines[1].contains("975µs"));
        assert!(lines[1].contains("1000 B"));
        assert!(lines[1].contains("4.00x"));
        assert!(lines[2].starts_with("nothing"));
        assert!(lines[2].contains(" - "));
        assert!(lines[3].contains(">10.0s"));
        assert!(table(&[]).contains("(no stats)"));
        assert!(table(&[Row::new("a\x1b[2J".into(), RawStats::default())]).contains("a\\u{1b}[2J"));
    }
}
