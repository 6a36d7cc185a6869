//! The `cached-stats` binary against a real Redis: stats hashes with known
//! numbers, read back in the three formats; discovery; the histogram of one
//! prefix; failures; completions.
//!
//! Every test writes under a namespace of its own and deletes only the keys
//! it wrote. The Redis is the one `scripts/test.sh` starts
//! (`CACHED_REDIS_TEST_URL`).

use std::collections::BTreeMap;
use std::process::{Command, Output};

use redis::Commands;

mod common {
    /// The Redis under test.
    pub fn redis_url() -> String {
        std::env::var("CACHED_REDIS_TEST_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .expect("CACHED_REDIS_TEST_URL names the Redis under test: run scripts/test.sh")
    }

    /// A raw connection to the Redis under test.
    pub fn raw() -> redis::Connection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_connection()
            .expect("redis under test reachable")
    }

    /// A port nothing listens on right now.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Keys written by a test, deleted when it ends (even when it fails).
struct Written {
    conn: redis::Connection,
    keys: Vec<String>,
}

impl Written {
    fn new() -> Self {
        Written {
            conn: common::raw(),
            keys: Vec::new(),
        }
    }

    fn hash(&mut self, key: &str, fields: &[(&str, &str)]) {
        let _: () = self.conn.hset_multiple(key, fields).unwrap();
        self.keys.push(key.to_string());
    }

    fn string(&mut self, key: &str, value: &str) {
        let _: () = self.conn.set(key, value).unwrap();
        self.keys.push(key.to_string());
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        for key in &self.keys {
            let _: Result<(), _> = self.conn.del(key);
        }
    }
}

fn namespace(test: &str) -> String {
    format!("t-cli-{}-{test}", std::process::id())
}

fn run(args: &[&str]) -> Output {
    run_with(args, &[])
}

/// [`run`] with the variables of `vars` set (and no others of its own).
fn run_with(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cached-stats"));
    command.args(args);
    for name in [
        "CACHED_REDIS_URL",
        "REDIS_URL",
        "CACHED_REDIS_NAMESPACE",
        "CACHED_REDIS_SENTINEL_PASSWORD",
        "CACHED_REDIS_SENTINEL_USERNAME",
    ] {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    command.output().expect("cached-stats runs")
}

/// Runs against the Redis under test in `ns`; must succeed.
fn stats(ns: &str, args: &[&str]) -> String {
    let url = common::redis_url();
    let mut all = vec!["--url", url.as_str(), "--namespace", ns];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(
        out.status.success(),
        "cached-stats {all:?}: {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Three prefixes with hand-checked numbers.
///
/// alpha: 100 timed misses in (0,100]: 10, (100,250]: 30, (250,500]: 40,
/// (500,1000]: 20; cumulative 10, 40, 80, 100.
///   p50: rank 50 -> (250,500]: 250 + 250 * (50 - 40) / 40 = 312.5 µs
///   p90: rank 90 -> (500,1000]: 500 + 500 * (90 - 80) / 20 = 750 µs
///   p99: rank 99 -> (500,1000]: 500 + 500 * (99 - 80) / 20 = 975 µs
///   sum 40000 -> mean 400; sumsq 17000000 -> var = 170000 - 400² = 10000,
///   sd 100. Hit ratio 300 / 400 = 0.75; mean stored 100000 / 100 = 1000 B;
///   compression 400000 / 100000 = 4.
///
/// beta: samples 8e6, 9e6 and 3e10 µs: (5e6,1e7]: 2, inf: 1.
///   p50: rank 1.5 -> (5e6,1e7]: 5e6 + 5e6 * 1.5 / 2 = 8750000 µs
///   p90: rank 2.7 > 2 -> inf: capped at the last bound, 1e7 µs
///   sum 30017000000, sumsq 8e6² + 9e6² + 3e10² = 900000145000000000000
///   (more than 64 bits).
///
/// gamma: 7 hits, nothing else: only the hit ratio (1) is defined.
fn write_three(w: &mut Written, ns: &str) {
    w.hash(
        &format!("{ns}:alpha:stats"),
        &[
            ("hits", "300"),
            ("misses", "100"),
            ("skips", "5"),
            ("errors", "2"),
            ("stores", "100"),
            ("bytes_raw", "400000"),
            ("bytes_stored", "100000"),
            ("miss_us_sum", "40000"),
            ("miss_us_sumsq", "17000000"),
            ("miss_us_le_100", "10"),
            ("miss_us_le_250", "30"),
            ("miss_us_le_500", "40"),
            ("miss_us_le_1000", "20"),
        ],
    );
    w.hash(
        &format!("{ns}:beta:stats"),
        &[
            ("hits", "1"),
            ("misses", "3"),
            ("stores", "3"),
            ("bytes_raw", "3000"),
            ("bytes_stored", "3000"),
            ("miss_us_sum", "30017000000"),
            ("miss_us_sumsq", "900000145000000000000"),
            ("miss_us_le_10000000", "2"),
            ("miss_us_le_inf", "1"),
        ],
    );
    w.hash(&format!("{ns}:gamma:stats"), &[("hits", "7")]);
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn json_values_are_the_written_ones() {
    let ns = namespace("json");
    let mut w = Written::new();
    write_three(&mut w, &ns);

    let text = stats(&ns, &["--json"]);
    // The big sum of squares is written exactly.
    assert!(
        text.contains("\"miss_us_sumsq\": 900000145000000000000"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = v.as_array().unwrap();
    let prefixes: Vec<&str> = rows.iter().map(|r| r["prefix"].as_str().unwrap()).collect();
    assert_eq!(prefixes, ["alpha", "beta", "gamma"]);

    let a = &rows[0];
    assert_eq!(a["namespace"], ns.as_str());
    for (field, value) in [
        ("hits", 300),
        ("misses", 100),
        ("skips", 5),
        ("errors", 2),
        ("stores", 100),
        ("bytes_raw", 400_000),
        ("bytes_stored", 100_000),
        ("miss_us_sum", 40_000),
        ("miss_us_sumsq", 17_000_000),
        ("miss_us_le_100", 10),
        ("miss_us_le_250", 30),
        ("miss_us_le_500", 40),
        ("miss_us_le_1000", 20),
        ("miss_us_le_2500", 0),
        ("miss_us_le_inf", 0),
    ] {
        assert_eq!(a[field], value, "alpha {field}");
    }
    assert_eq!(a["hit_ratio"], 0.75);
    assert_eq!(a["miss_us_mean"], 400.0);
    assert_eq!(a["miss_us_stddev"], 100.0);
    assert_eq!(a["p50_us"], 312.5);
    assert_eq!(a["p90_us"], 750.0);
    assert_eq!(a["p99_us"], 975.0);
    assert_eq!(a["p99_capped"], false);
    assert_eq!(a["mean_stored_bytes"], 1000.0);
    assert_eq!(a["compression_ratio"], 4.0);

    let b = &rows[1];
    assert_eq!(b["miss_us_sum"], 30_017_000_000u64);
    assert_eq!(b["miss_us_le_10000000"], 2);
    assert_eq!(b["miss_us_le_inf"], 1);
    assert_eq!(b["hit_ratio"], 0.25);
    assert_eq!(b["p50_us"], 8_750_000.0);
    assert_eq!(b["p50_capped"], false);
    assert_eq!(b["p90_us"], 10_000_000.0);
    assert_eq!(b["p90_capped"], true);
    assert_eq!(b["p99_us"], 10_000_000.0);
    assert_eq!(b["p99_capped"], true);
    assert_eq!(b["compression_ratio"], 1.0);
    // mean = sum / 3; var = (3 * sumsq - sum²) / 9.
    let (n, sum, sumsq) = (3.0f64, 30_017_000_000f64, 900_000_145_000_000_000_000f64);
    let mean = sum / n;
    let sd = ((n * sumsq - sum * sum) / (n * n)).sqrt();
    assert!(
        close(b["miss_us_mean"].as_f64().unwrap(), mean),
        "{}",
        b["miss_us_mean"]
    );
    assert!(
        close(b["miss_us_stddev"].as_f64().unwrap(), sd),
        "{}",
        b["miss_us_stddev"]
    );

    let g = &rows[2];
    assert_eq!(g["hits"], 7);
    assert_eq!(g["hit_ratio"], 1.0);
    for key in [
        "miss_us_mean",
        "miss_us_stddev",
        "p50_us",
        "p90_us",
        "p99_us",
        "mean_stored_bytes",
        "compression_ratio",
    ] {
        assert!(g[key].is_null(), "gamma {key} = {}", g[key]);
    }

    // Named prefixes: only those, in the order given; an unknown one is zeros.
    let v: serde_json::Value =
        serde_json::from_str(&stats(&ns, &["--json", "gamma", "nope", "alpha"])).unwrap();
    let prefixes: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["gamma", "nope", "alpha"]);
    assert_eq!(v[1]["hits"], 0);
    assert!(v[1]["hit_ratio"].is_null());
}

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `{a="x",b="y\"z"}`; panics on anything malformed.
fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels in {line:?}"));
        assert!(
            is_metric_name(name) && !name.contains(':'),
            "label name {name:?} in {line:?}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) => panic!("raw newline in {line:?}"),
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        assert!(
            labels.insert(name.to_string(), value).is_none(),
            "duplicate label in {line:?}"
        );
        rest = &after[end + 1..];
        if let Some(more) = rest.strip_prefix(',') {
            rest = more;
        } else {
            assert!(rest.is_empty(), "junk after label in {line:?}");
        }
    }
    labels
}

/// Validates the exposition text and returns its samples: every line is a
/// comment or `name{labels} value`; each family has HELP and TYPE once,
/// before its samples, and its lines are contiguous; histogram buckets are
/// cumulative, end with `+Inf`, and `+Inf` equals `_count`.
fn validate_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: Vec<String> = Vec::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let family_of = |name: &str, types: &BTreeMap<String, String>| -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if types.get(base).is_some_and(|t| t == "histogram") {
                    return base.to_string();
                }
            }
        }
        name.to_string()
    };
    let mut enter = |family: &str, current: &mut Option<String>| {
        if current.as_deref() != Some(family) {
            if let Some(old) = current.take() {
                finished.push(old);
            }
            assert!(
                !finished.iter().any(|f| f == family),
                "family {family} not contiguous"
            );
            *current = Some(family.to_string());
        }
    };
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(is_metric_name(name), "{line}");
            assert!(!helped.iter().any(|h| h == name), "HELP twice for {name}");
            helped.push(name.to_string());
            enter(name, &mut current);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice for {name}"
            );
            enter(name, &mut current);
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let open = line
            .find('{')
            .unwrap_or_else(|| panic!("no labels in {line}"));
        let close = line
            .rfind("} ")
            .unwrap_or_else(|| panic!("no value in {line}"));
        let name = &line[..open];
        assert!(is_metric_name(name), "{line}");
        let labels = parse_labels(&line[open + 1..close], line);
        let value_text = &line[close + 2..];
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let family = family_of(name, &types);
        assert!(types.contains_key(&family), "sample before TYPE: {line}");
        assert!(helped.contains(&family), "sample before HELP: {line}");
        enter(&family, &mut current);
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: per label set, buckets non-decreasing, +Inf last == _count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        type LabelSet = Vec<(String, String)>;
        let mut series: BTreeMap<LabelSet, Vec<(String, f64)>> = BTreeMap::new();
        let mut counts: BTreeMap<LabelSet, f64> = BTreeMap::new();
        for s in &samples {
            let mut labels = s.labels.clone();
            if s.name == format!("{family}_bucket") {
                let le = labels.remove("le").expect("bucket without le");
                series
                    .entry(labels.into_iter().collect())
                    .or_default()
                    .push((le, s.value));
            } else if s.name == format!("{family}_count") {
                counts.insert(labels.into_iter().collect(), s.value);
            }
        }
        assert!(!series.is_empty(), "histogram {family} without buckets");
        for (labels, buckets) in &series {
            let mut last_le = f64::NEG_INFINITY;
            let mut last_count = 0.0;
            for (le, count) in buckets {
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                assert!(le > last_le, "le not increasing in {family} {labels:?}");
                assert!(
                    *count >= last_count,
                    "buckets not cumulative in {family} {labels:?}"
                );
                (last_le, last_count) = (le, *count);
            }
            assert_eq!(buckets.last().unwrap().0, "+Inf", "{family} {labels:?}");
            assert_eq!(
                Some(&last_count),
                counts.get(labels),
                "+Inf != _count for {labels:?}"
            );
        }
    }
    samples
}

#[test]
fn prometheus_output_parses() {
    let ns = namespace("prom");
    let mut w = Written::new();
    write_three(&mut w, &ns);

    let text = stats(&ns, &["--prometheus"]);
    let samples = validate_prometheus(&text);
    let get = |name: &str, prefix: &str, le: Option<&str>| -> f64 {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels["namespace"] == ns
                    && s.labels["prefix"] == prefix
                    && s.labels.get("le").map(String::as_str) == le
            })
            .unwrap_or_else(|| panic!("no {name} {prefix} {le:?} in\n{text}"))
            .value
    };
    assert_eq!(get("cached_hits_total", "alpha", None), 300.0);
    assert_eq!(get("cached_misses_total", "beta", None), 3.0);
    assert_eq!(get("cached_hits_total", "gamma", None), 7.0);
    assert_eq!(get("cached_bytes_raw_total", "alpha", None), 400_000.0);
    let h = "cached_miss_duration_seconds";
    let bucket = format!("{h}_bucket");
    assert_eq!(get(&bucket, "alpha", Some("0.0001")), 10.0);
    assert_eq!(get(&bucket, "alpha", Some("0.00025")), 40.0);
    assert_eq!(get(&bucket, "alpha", Some("0.0005")), 80.0);
    assert_eq!(get(&bucket, "alpha", Some("0.001")), 100.0);
    assert_eq!(get(&bucket, "alpha", Some("+Inf")), 100.0);
    assert_eq!(get(&format!("{h}_sum"), "alpha", None), 0.04);
    assert_eq!(get(&format!("{h}_count"), "alpha", None), 100.0);
    assert_eq!(get(&bucket, "beta", Some("5")), 0.0);
    assert_eq!(get(&bucket, "beta", Some("10")), 2.0);
    assert_eq!(get(&bucket, "beta", Some("+Inf")), 3.0);
    assert_eq!(get(&format!("{h}_sum"), "beta", None), 30_017.0);
    assert_eq!(get(&format!("{h}_count"), "gamma", None), 0.0);

    // The validator itself rejects what it should.
    for broken in [
        "cached_x_total{a=\"1\"} 1\n",                                   // no HELP/TYPE
        "# HELP a h\n# TYPE a counter\na{p=\"x} 1\n",                     // unterminated
        "# HELP a h\n# TYPE a counter\na{p=\"x\"} 1\n# HELP b h\n# TYPE b counter\nb{p=\"x\"} 1\na{p=\"y\"} 1\n",
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count{} 1\n",
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count{} 1\n",
    ] {
        let caught = std::panic::catch_unwind(|| validate_prometheus(broken));
        assert!(caught.is_err(), "validator accepted:\n{broken}");
    }
}

#[test]
fn table_and_discovery() {
    let ns = namespace("table");
    let mut w = Written::new();
    write_three(&mut w, &ns);
    // Keys that are not stats hashes of a prefix: an entry, a string that
    // looks like stats, a key with ':' in the middle, another namespace.
    w.string(&format!("{ns}:alpha:AAAAAAAAAAAAAAAAAAAAAA"), "entry");
    w.string(&format!("{ns}:delta:stats"), "not a hash");
    w.hash(&format!("{ns}:a:b:stats"), &[("hits", "1")]);
    w.hash(&format!("{ns}x:omega:stats"), &[("hits", "1")]);

    let text = stats(&ns, &[]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("PREFIX"), "{text}");
    let rows: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(rows, ["alpha", "beta", "gamma"], "{text}");
    let alpha = lines[1];
    for expected in [
        "300",
        "75.0%",
        "400µs ± 100µs",
        "312µs",
        "750µs",
        "975µs",
        "1000 B",
        "4.00x",
    ] {
        assert!(alpha.contains(expected), "{expected} not in {alpha:?}");
    }
    assert!(
        lines[2].contains("8.75s") && lines[2].contains(">10.0s"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains("100.0%") && lines[3].contains(" - "),
        "{}",
        lines[3]
    );

    // JSON discovery finds exactly the same prefixes.
    let v: serde_json::Value = serde_json::from_str(&stats(&ns, &["--json"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);

    // An empty namespace: no rows, still success.
    let empty = namespace("nothing-here");
    assert_eq!(stats(&empty, &["--json"]), "[]\n");
    assert!(stats(&empty, &[]).contains("(no stats)"));
}

/// A variable that is not UTF-8 is refused, not taken for unset: with
/// `REDIS_URL` beside it, that would read another server's stats.
#[test]
fn a_variable_that_is_not_utf8_is_refused() {
    use std::os::unix::ffi::OsStringExt;
    let out = Command::new(env!("CARGO_BIN_EXE_cached-stats"))
        .env(
            "CACHED_REDIS_URL",
            std::ffi::OsString::from_vec(b"redis://127.0.0.1:1/0\xff".to_vec()),
        )
        .env("REDIS_URL", "redis://127.0.0.1:1/0")
        .env_remove("CACHED_REDIS_NAMESPACE")
        .output()
        .expect("cached-stats runs");
    assert_one_line_failure(&out, 2, "CACHED_REDIS_URL is set to text that is not UTF-8");
    // One it does not read (hidden by CACHED_REDIS_URL, or by --url) is
    // not its concern, as it is not the library's.
    let url = common::redis_url();
    let bad = std::ffi::OsString::from_vec(b"redis://x/0\xff".to_vec());
    for (via_env, args) in [
        (true, vec!["--json"]),
        (false, vec!["--url", &url, "--json"]),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cached-stats"));
        cmd.args(&args)
            .env("REDIS_URL", &bad)
            .env("CACHED_REDIS_NAMESPACE", namespace("cli-unread"));
        if via_env {
            cmd.env("CACHED_REDIS_URL", &url);
        } else {
            cmd.env_remove("CACHED_REDIS_URL");
        }
        let out = cmd.output().expect("cached-stats runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A blank namespace in the environment counts as unset, as the library
/// reads it: the default namespace's hashes are read.
#[test]
fn a_blank_namespace_is_the_default_one() {
    let prefix = namespace("blank");
    let mut written = Written::new();
    written.hash(&format!("cached:{prefix}:stats"), &[("hits", "7")]);
    let url = common::redis_url();
    let out = run_with(
        &["--json", &prefix],
        &[
            ("CACHED_REDIS_URL", &url),
            ("CACHED_REDIS_NAMESPACE", "   "),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["prefix"], prefix.as_str());
    assert_eq!(v[0]["hits"], 7, "read from the default namespace: {v}");
}

/// A URL the library refuses is a usage error (exit 2), as a bad flag is:
/// nothing was tried, unlike an unreachable server (exit 1).
#[test]
fn a_url_the_library_refuses_is_a_usage_error() {
    let out = run(&["--url", "foo://127.0.0.1:1"]);
    assert_one_line_failure(&out, 2, "foo://");
}

fn assert_one_line_failure(out: &Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("cached-stats: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[test]
fn broken_field_is_one_line_exit_1() {
    let ns = namespace("broken");
    let mut w = Written::new();
    w.hash(&format!("{ns}:fine:stats"), &[("hits", "1")]);
    w.hash(
        &format!("{ns}:foo:stats"),
        &[("hits", "2"), ("miss_us_le_100", "abc")],
    );
    let url = common::redis_url();
    for extra in [&[][..], &["--json"], &["--prometheus"], &["foo"]] {
        let mut args = vec!["--url", url.as_str(), "--namespace", ns.as_str()];
        args.extend_from_slice(extra);
        let out = run(&args);
        let line = assert_one_line_failure(&out, 1, "miss_us_le_100");
        assert!(line.contains(&format!("{ns}:foo:stats")), "{line}");
        assert!(line.contains("\"abc\""), "{line}");
    }
    // A negative value too; the healthy prefix alone still works.
    w.hash(&format!("{ns}:neg:stats"), &[("misses", "-3")]);
    let args = ["--url", url.as_str(), "--namespace", ns.as_str(), "neg"];
    assert_one_line_failure(&run(&args), 1, "field misses");
    assert!(stats(&ns, &["fine"]).contains("fine"));
}

#[test]
fn unreachable_redis_is_one_line_exit_1() {
    let url = format!("redis://127.0.0.1:{}/0", common::free_port());
    let started = std::time::Instant::now();
    let out = run(&["--url", &url, "--json"]);
    assert_one_line_failure(&out, 1, "127.0.0.1");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn usage() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("Usage: cached-stats"), "{help}");
    for flag in [
        "--url",
        "--namespace",
        "--json",
        "--prometheus",
        "--watch",
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
        "--tls-insecure",
        "completions",
    ] {
        assert!(help.contains(flag), "{flag}");
    }
    assert_one_line_failure(&run(&["--frobnicate"]), 2, "--frobnicate");
    assert_one_line_failure(&run(&["--json", "--prometheus"]), 2, "cannot be used with");
    assert_one_line_failure(&run(&["--watch", "never"]), 2, "--watch");
    assert_one_line_failure(&run(&["a:b"]), 2, "without ':'");
}

#[test]
fn completions_for_the_shells() {
    for (shell, needle) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cached-stats"),
        ("fish", "complete -c cached-stats"),
    ] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(needle), "{shell}: {script}");
        assert!(script.contains("prometheus"), "{shell}");
    }
}

#[test]
fn one_prefix_draws_its_histogram() {
    let ns = namespace("hist");
    let mut w = Written::new();
    write_three(&mut w, &ns);
    // alpha: (0,100]: 10, (100,250]: 30, (250,500]: 40, (500,1000]: 20.
    let text = stats(&ns, &["alpha"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("PREFIX") && lines[1].starts_with("alpha"),
        "{text}"
    );
    assert_eq!(lines[3], "Miss time of alpha (100 timed misses)", "{text}");
    let bars: Vec<(&str, usize)> = lines[4..]
        .iter()
        .map(|l| {
            let (numbers, bar) = l.split_once('│').unwrap();
            (numbers.trim(), bar.chars().filter(|&c| c == '█').count())
        })
        .collect();
    let numbers: Vec<Vec<&str>> = bars
        .iter()
        .map(|(n, _)| n.split_whitespace().collect())
        .collect();
    assert_eq!(
        numbers,
        [
            ["≤100µs", "10", "10.0%"],
            ["≤250µs", "30", "30.0%"],
            ["≤500µs", "40", "40.0%"],
            ["≤1.00ms", "20", "20.0%"],
        ],
        "{text}"
    );
    // Bar lengths in proportion: 40 misses fill the 40-cell width.
    let lengths: Vec<usize> = bars.iter().map(|(_, n)| *n).collect();
    assert_eq!(lengths, [10, 30, 40, 20], "{text}");

    // beta reaches the unbounded bucket.
    let beta = stats(&ns, &["beta"]);
    assert!(beta.contains("≤10.0s") && beta.contains(">10.0s"), "{beta}");
    // Several prefixes, or none named, or a machine format: no histogram.
    for args in [&["alpha", "beta"][..], &[], &["--json", "alpha"]] {
        assert!(!stats(&ns, args).contains("Miss time of"), "{args:?}");
    }
}

/// A variable `scripts/test.sh` sets for the TLS servers it starts.
fn topology_env(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{name} names a TLS server under test: run scripts/test.sh"))
}

#[test]
fn tls_flags_reach_a_mutual_tls_server() {
    let url = topology_env("CACHED_REDIS_TEST_MTLS_URL");
    let ca = topology_env("CACHED_REDIS_TEST_TLS_CA");
    let cert = topology_env("CACHED_REDIS_TEST_TLS_CLIENT_CERT");
    let key = topology_env("CACHED_REDIS_TEST_TLS_CLIENT_KEY");
    let read = |path: &str| std::fs::read(path).unwrap();
    let client = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read(&cert),
                client_key: read(&key),
            }),
            root_cert: Some(read(&ca)),
        },
    )
    .unwrap();
    let mut conn = client
        .get_connection()
        .expect("mutual TLS server reachable");
    let ns = namespace("tls");
    let stats_key = format!("{ns}:secure:stats");
    let _: () = conn
        .hset_multiple(&stats_key, &[("hits", "5"), ("misses", "1")])
        .unwrap();

    let base = ["--url", url.as_str(), "--namespace", ns.as_str(), "--json"];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.push("secure");
        run(&args)
    };

    let out = with(&["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // The key is deleted before asserting, so a failure leaves nothing.
    let _: () = conn.del(&stats_key).unwrap();
    assert!(out.status.success(), "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows[0]["hits"], 5, "{stdout}");
    assert_eq!(rows[0]["misses"], 1, "{stdout}");

    // The server asks for a client certificate: without one, no answer.
    assert_one_line_failure(&with(&["--tls-ca", &ca]), 1, "reading stats");
    // A server certificate signed by a CA the system does not know.
    assert_one_line_failure(&with(&["--tls-cert", &cert, "--tls-key", &key]), 1, "");
    // A certificate without its key, or TLS options on a plain URL, are
    // refused before anything is sent: usage errors.
    assert_one_line_failure(&with(&["--tls-cert", &cert]), 2, "--tls-key");
    assert_one_line_failure(
        &run(&["--url", &common::redis_url(), "--tls-ca", &ca]),
        2,
        "not rediss://",
    );
}

/// A sentinel that asks for a password of its own gets it from the
/// variable the library reads; without it, the sentinel's refusal is a
/// one-line failure.
#[test]
fn the_sentinels_password_comes_from_the_environment() {
    let url = topology_env("CACHED_REDIS_TEST_TLS_SENTINEL_URL");
    let ca = topology_env("CACHED_REDIS_TEST_TLS_CA");
    let password = topology_env("CACHED_REDIS_TEST_TLS_SENTINEL_PASSWORD");
    let ns = namespace("sentinel");
    let args = [
        "--url",
        &url,
        "--tls-ca",
        &ca,
        "--namespace",
        &ns,
        "--json",
        "nothing",
    ];
    // A prefix without stats reads as zeros: the read went through.
    let out = run_with(&args, &[("CACHED_REDIS_SENTINEL_PASSWORD", &password)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["hits"], 0, "{rows}");
    assert_one_line_failure(&run(&args), 1, "");
}

/// `--watch` with `--json` writes one JSON document per refresh and
/// nothing else (no screen codes), so a pipe can read them one by one.
#[test]
fn watch_json_is_plain_documents() {
    let ns = namespace("watch");
    let mut w = Written::new();
    write_three(&mut w, &ns);
    let url = common::redis_url();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cached-stats"))
        .args([
            "--url",
            &url,
            "--namespace",
            &ns,
            "--json",
            "--watch",
            "0.2",
        ])
        .env_remove("CACHED_REDIS_URL")
        .env_remove("REDIS_URL")
        .env_remove("CACHED_REDIS_NAMESPACE")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cached-stats runs");
    let stdout = child.stdout.take().unwrap();
    let mut documents =
        serde_json::Deserializer::from_reader(stdout).into_iter::<serde_json::Value>();
    for _ in 0..2 {
        let document = documents
            .next()
            .expect("a document per refresh")
            .expect("plain JSON");
        assert_eq!(document.as_array().unwrap().len(), 3, "{document}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
