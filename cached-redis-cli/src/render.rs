//! The output formats: a table (with the miss-time histogram as bars when
//! one prefix is shown) for people, JSON and the Prometheus text exposition
//! format for machines. Pure functions from reports to strings; the
//! numbers come from `cached_runtime::report`, which owns the stats schema.

use cached_runtime::report::{Bucket, Percentile, PrefixReport};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

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

/// A percentile for the table: `>10.0s` when it falls beyond the histogram.
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

/// Cells padded to their column's width, the first column left-aligned and
/// the others right-aligned, two spaces apart.
fn align(cells: &[Vec<String>]) -> String {
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for line in cells {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in cells {
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
    out
}

/// The table: one row per prefix, columns aligned; `-` where a number is
/// undefined (no lookups, no timed misses, nothing stored).
pub fn table(reports: &[PrefixReport]) -> String {
    let dash = || "-".to_string();
    let mut cells: Vec<Vec<String>> = vec![TABLE_HEADER.iter().map(|h| h.to_string()).collect()];
    for r in reports {
        let c = &r.counters;
        let miss_time = match (r.miss_us_mean, r.miss_us_stddev) {
            (Some(mean), Some(sd)) => format!("{} ± {}", human_us(mean), human_us(sd)),
            _ => dash(),
        };
        cells.push(vec![
            printable(&r.prefix),
            c.hits.to_string(),
            c.misses.to_string(),
            r.hit_ratio
                .map_or_else(dash, |x| format!("{:.1}%", x * 100.0)),
            c.skips.to_string(),
            c.errors.to_string(),
            miss_time,
            human_percentile(r.p50),
            human_percentile(r.p90),
            human_percentile(r.p99),
            r.mean_stored_bytes.map_or_else(dash, human_bytes),
            r.compression_ratio
                .map_or_else(dash, |x| format!("{x:.2}x")),
        ]);
    }
    let mut out = align(&cells);
    if reports.is_empty() {
        out.push_str("(no stats)\n");
    }
    out
}

// ------------------------------------------------------------ histogram --

/// Width of the longest bar, in terminal cells.
const BAR_WIDTH: usize = 40;

/// A bar of `count / max` of [`BAR_WIDTH`] cells, in eighths of a cell
/// (`█` and the partial blocks `▏`..`▉`); a non-zero count shows at least
/// an eighth, so no sample is invisible.
fn bar(count: u64, max: u64) -> String {
    if count == 0 || max == 0 {
        return String::new();
    }
    const PARTIAL: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = ((count as f64 / max as f64) * (BAR_WIDTH * 8) as f64).round() as usize;
    let eighths = eighths.max(1);
    let mut out = "█".repeat(eighths / 8);
    if eighths % 8 != 0 {
        out.push(PARTIAL[eighths % 8]);
    }
    out
}

/// The label of a bucket: its upper bound, `>` the last bound for the
/// unbounded one.
fn bucket_label(b: &Bucket) -> String {
    match b.upto_us {
        Some(upto) => format!("≤{}", human_us(upto as f64)),
        None => format!(">{}", human_us(b.above_us as f64)),
    }
}

/// The miss-time histogram of one prefix as horizontal bars, one line per
/// bucket from the first non-empty one to the last, each with its bound,
/// count and share of the timed misses; the longest bar is
/// [`BAR_WIDTH`] cells.
pub fn histogram(report: &PrefixReport) -> String {
    let buckets: Vec<Bucket> = report.histogram().collect();
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    let mut out = format!(
        "\nMiss time of {} ({total} timed misses)\n",
        printable(&report.prefix)
    );
    let (Some(first), Some(last)) = (
        buckets.iter().position(|b| b.count > 0),
        buckets.iter().rposition(|b| b.count > 0),
    ) else {
        out.push_str("(no timed misses)\n");
        return out;
    };
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    let cells: Vec<Vec<String>> = buckets[first..=last]
        .iter()
        .map(|b| {
            vec![
                bucket_label(b),
                b.count.to_string(),
                format!("{:.1}%", b.count as f64 * 100.0 / total as f64),
                format!("│{}", bar(b.count, max)),
            ]
        })
        .collect();
    // The label column reads best right-aligned, like the numbers.
    let width = cells
        .iter()
        .map(|c| c[0].chars().count())
        .max()
        .unwrap_or(0);
    let cells: Vec<Vec<String>> = cells
        .into_iter()
        .map(|mut c| {
            c[0] = format!("{}{}", " ".repeat(width - c[0].chars().count()), c[0]);
            c
        })
        .collect();
    // The bar column is left-aligned: keep it out of `align`'s padding.
    let bars: Vec<String> = cells.iter().map(|c| c[3].clone()).collect();
    let numbers: Vec<Vec<String>> = cells
        .into_iter()
        .map(|mut c| {
            c.truncate(3);
            c
        })
        .collect();
    for (line, bar) in align(&numbers).lines().zip(bars) {
        out.push_str(&format!("  {line} {bar}\n"));
    }
    out
}

// ----------------------------------------------------------------- json --

/// The histogram fields (`miss_us_le_100`, ..., `miss_us_le_inf`) of one
/// prefix, flattened into its JSON object.
struct HistogramFields<'a>(&'a PrefixReport);

impl Serialize for HistogramFields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for b in self.0.histogram() {
            map.serialize_entry(&b.field(), &b.count)?;
        }
        map.end()
    }
}

/// One prefix in the JSON output: every raw field (missing ones as 0;
/// integers exact, so `miss_us_sumsq` may exceed 64 bits), then the derived
/// numbers (`null` when undefined).
#[derive(Serialize)]
struct JsonRow<'a> {
    namespace: &'a str,
    prefix: &'a str,
    hits: u64,
    misses: u64,
    skips: u64,
    errors: u64,
    stores: u64,
    bytes_raw: u64,
    bytes_stored: u64,
    miss_us_sum: u64,
    miss_us_sumsq: u128,
    #[serde(flatten)]
    histogram: HistogramFields<'a>,
    hit_ratio: Option<f64>,
    miss_us_mean: Option<f64>,
    miss_us_stddev: Option<f64>,
    p50_us: Option<f64>,
    p50_capped: Option<bool>,
    p90_us: Option<f64>,
    p90_capped: Option<bool>,
    p99_us: Option<f64>,
    p99_capped: Option<bool>,
    mean_stored_bytes: Option<f64>,
    compression_ratio: Option<f64>,
}

impl<'a> JsonRow<'a> {
    fn new(namespace: &'a str, r: &'a PrefixReport) -> Self {
        let c = &r.counters;
        JsonRow {
            namespace,
            prefix: &r.prefix,
            hits: c.hits,
            misses: c.misses,
            skips: c.skips,
            errors: c.errors,
            stores: c.stores,
            bytes_raw: c.bytes_raw,
            bytes_stored: c.bytes_stored,
            miss_us_sum: c.miss_us_sum,
            miss_us_sumsq: c.miss_us_sumsq,
            histogram: HistogramFields(r),
            hit_ratio: r.hit_ratio,
            miss_us_mean: r.miss_us_mean,
            miss_us_stddev: r.miss_us_stddev,
            p50_us: r.p50.map(|p| p.us),
            p50_capped: r.p50.map(|p| p.capped),
            p90_us: r.p90.map(|p| p.us),
            p90_capped: r.p90.map(|p| p.capped),
            p99_us: r.p99.map(|p| p.us),
            p99_capped: r.p99.map(|p| p.capped),
            mean_stored_bytes: r.mean_stored_bytes,
            compression_ratio: r.compression_ratio,
        }
    }
}

/// JSON: an array of objects, one per prefix in the order given, each with
/// `namespace`, `prefix`, every raw field and the derived numbers.
/// `hit_ratio` is a fraction in `[0, 1]`; times are in µs, sizes in bytes.
/// `pXX_capped` is true when that percentile falls in the unbounded bucket:
/// `pXX_us` is then the last finite bound (10 s), a lower bound of the true
/// value.
pub fn json(namespace: &str, reports: &[PrefixReport]) -> String {
    let rows: Vec<JsonRow> = reports.iter().map(|r| JsonRow::new(namespace, r)).collect();
    // Serializing plain numbers, strings and options cannot fail.
    let mut text = serde_json::to_string_pretty(&rows).expect("stats serialize to JSON");
    text.push('\n');
    text
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
type Counter = (&'static str, fn(&PrefixReport) -> u64, &'static str);

/// The counters.
const COUNTERS: [Counter; 7] = [
    (
        "cached_hits_total",
        |r| r.counters.hits,
        "Lookups served from the cache.",
    ),
    (
        "cached_misses_total",
        |r| r.counters.misses,
        "Lookups not served from the cache.",
    ),
    (
        "cached_skips_total",
        |r| r.counters.skips,
        "Calls that bypassed the cache (skip flag, cache disabled).",
    ),
    (
        "cached_errors_total",
        |r| r.counters.errors,
        "Store or codec failures and keys that could not be built.",
    ),
    (
        "cached_stores_total",
        |r| r.counters.stores,
        "Values written to the cache.",
    ),
    (
        "cached_bytes_raw_total",
        |r| r.counters.bytes_raw,
        "Encoded size of the values written, before compression.",
    ),
    (
        "cached_bytes_stored_total",
        |r| r.counters.bytes_stored,
        "Size of the values written, after compression.",
    ),
];

const HISTOGRAM: &str = "cached_miss_duration_seconds";

/// The Prometheus text exposition format (version 0.0.4): per family one
/// `# HELP` and one `# TYPE` line then all its samples, one per prefix,
/// labelled `namespace` and `prefix`. The histogram's buckets are
/// cumulative in seconds, `+Inf` and `_count` are the histogram's total,
/// `_sum` is `miss_us_sum` in seconds.
pub fn prometheus(namespace: &str, reports: &[PrefixReport]) -> String {
    let ns = escape_label(namespace);
    let labels =
        |r: &PrefixReport| format!("namespace=\"{ns}\",prefix=\"{}\"", escape_label(&r.prefix));
    let mut out = String::new();
    for (name, get, help) in COUNTERS {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for r in reports {
            out.push_str(&format!("{name}{{{}}} {}\n", labels(r), get(r)));
        }
    }
    out.push_str(&format!(
        "# HELP {HISTOGRAM} Compute time of cache misses.\n# TYPE {HISTOGRAM} histogram\n"
    ));
    for r in reports {
        let l = labels(r);
        let mut cumulative: u128 = 0;
        for b in r.histogram() {
            cumulative += u128::from(b.count);
            let le = match b.upto_us {
                Some(bound) => micros_as_seconds(u128::from(bound)),
                None => "+Inf".to_string(),
            };
            out.push_str(&format!(
                "{HISTOGRAM}_bucket{{{l},le=\"{le}\"}} {cumulative}\n"
            ));
        }
        out.push_str(&format!(
            "{HISTOGRAM}_sum{{{l}}} {}\n",
            micros_as_seconds(u128::from(r.counters.miss_us_sum))
        ));
        out.push_str(&format!("{HISTOGRAM}_count{{{l}}} {cumulative}\n"));
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;
    use cached_runtime::StatsSnapshot;

    fn report(prefix: &str, counters: StatsSnapshot) -> PrefixReport {
        PrefixReport::from_counters(prefix, counters)
    }

    fn sample() -> PrefixReport {
        let mut raw = StatsSnapshot {
            hits: 300,
            misses: 100,
            skips: 5,
            errors: 2,
            stores: 100,
            bytes_raw: 400_000,
            bytes_stored: 100_000,
            miss_us_sum: 40_000,
            miss_us_sumsq: 17_000_000,
            ..StatsSnapshot::default()
        };
        raw.miss_buckets[0] = 10;
        raw.miss_buckets[1] = 30;
        raw.miss_buckets[2] = 40;
        raw.miss_buckets[3] = 20;
        report("alpha", raw)
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
        let row = report("we\"ird\\\n", StatsSnapshot::default());
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
            &[sample(), report("beta", StatsSnapshot::default())],
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
        let mut counters = sample().counters;
        counters.miss_us_sumsq = 900_000_145_000_000_000_000;
        let big = report("big", counters);
        let text = json(
            "cached",
            &[sample(), report("empty", StatsSnapshot::default()), big],
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
        let mut capped = StatsSnapshot::default();
        capped.miss_buckets[16] = 1;
        let text = table(&[
            sample(),
            report("nothing", StatsSnapshot::default()),
            report("slow", capped),
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
        assert!(table(&[report("a\x1b[2J", StatsSnapshot::default())]).contains("a\\u{1b}[2J"));
    }

    #[test]
    fn bars_scale_to_the_largest_bucket() {
        assert_eq!(bar(0, 10), "");
        assert_eq!(bar(10, 10), "█".repeat(BAR_WIDTH));
        assert_eq!(bar(5, 10), "█".repeat(BAR_WIDTH / 2));
        // 1/320 of the width is one eighth; anything smaller still shows.
        assert_eq!(bar(1, 320), "▏");
        assert_eq!(bar(1, 1_000_000), "▏");
        // 3/16 of 40 cells = 7.5 cells: 7 full and a half block.
        assert_eq!(bar(3, 16), format!("{}▌", "█".repeat(7)));
    }

    #[test]
    fn histogram_bars_next_to_the_numbers() {
        // sample(): (0,100]: 10, (100,250]: 30, (250,500]: 40, (500,1000]: 20.
        let text = histogram(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "");
        assert_eq!(lines[1], "Miss time of alpha (100 timed misses)");
        // Exactly the buckets from the first non-empty one to the last.
        assert_eq!(lines.len(), 2 + 4, "{text}");
        let expect = [
            ("≤100µs", 10, "10.0%"),
            ("≤250µs", 30, "30.0%"),
            ("≤500µs", 40, "40.0%"),
            ("≤1.00ms", 20, "20.0%"),
        ];
        for (line, (label, count, share)) in lines[2..].iter().zip(expect) {
            let (numbers, bar) = line.split_once('│').unwrap();
            let fields: Vec<&str> = numbers.split_whitespace().collect();
            assert_eq!(fields, [label, &count.to_string(), share], "{line}");
            // The longest bucket (40) gets the full width; the others in
            // proportion, in eighths of a cell.
            let cells = bar.chars().filter(|&c| c == '█').count();
            assert_eq!(cells, BAR_WIDTH * count / 40, "{line}");
        }
        // Bars start in the same column.
        let columns: Vec<usize> = lines[2..]
            .iter()
            .map(|l| l.chars().position(|c| c == '│').unwrap())
            .collect();
        assert!(columns.windows(2).all(|w| w[0] == w[1]), "{text}");

        let mut capped = StatsSnapshot::default();
        capped.miss_buckets[15] = 1;
        capped.miss_buckets[16] = 3;
        let text = histogram(&report("slow", capped));
        assert!(text.contains(">10.0s"), "{text}");
        assert!(text.contains("≤10.0s"), "{text}");
        let empty = histogram(&report("none", StatsSnapshot::default()));
        assert!(empty.contains("(0 timed misses)") && empty.contains("(no timed misses)"));
    }
}
