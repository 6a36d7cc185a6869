//! The report's section on the `local` level and on the client work of a
//! Redis hit: L1 goals, coherence delay, and the micro figures of keying,
//! canonical JSON against serde_json, and the codec.

use std::fmt::Write as _;

use crate::report::{fmt_int, fmt_ns};
use crate::results::Results;

fn ops(r: &Results, id: &str, level: usize) -> f64 {
    r.series(id)
        .and_then(|s| s.at(level))
        .map_or(f64::NAN, |s| s.ops_per_sec)
}

fn p99(r: &Results, id: &str, level: usize) -> f64 {
    r.series(id)
        .and_then(|s| s.at(level))
        .map_or(f64::NAN, |s| s.p99_ns as f64)
}

fn micro(r: &Results, id: &str) -> f64 {
    r.micro(id).map_or(f64::NAN, |m| m.ns)
}

fn ratio(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.2}×")
    }
}

/// `x` against a goal of at least `target`: with a third decimal when two
/// would round a miss up to the target (0.996 is not "1.00×, missed").
fn ratio_to(x: f64, target: f64) -> String {
    let two = (x * 100.0).round() / 100.0;
    if x < target && two >= target {
        format!("{x:.3}×")
    } else {
        ratio(x)
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}

/// The cell and verdict of a goal that `id`'s throughput be at least
/// `target` × `to`'s at `level`, judged round by round
/// ([`Results::paired_ratio`]): met when every round reaches it, missed
/// when none does, and not resolved by the run when the rounds disagree.
/// `with_ops` adds both throughputs (their medians over the rounds).
pub fn ratio_goal(
    r: &Results,
    id: &str,
    to: &str,
    level: usize,
    target: f64,
    with_ops: bool,
) -> (String, &'static str) {
    let Some(p) = r.paired_ratio(id, to, level) else {
        return ("–".into(), "**missed**");
    };
    let mut cell = format!(
        "{} (rounds {} – {})",
        ratio_to(p.median, target),
        ratio_to(p.min, target),
        ratio_to(p.max, target)
    );
    if with_ops {
        let _ = write!(
            cell,
            "; {} vs {} calls/s",
            fmt_int(ops(r, id, level)),
            fmt_int(ops(r, to, level))
        );
    }
    let verdict = if p.min >= target {
        "**met**"
    } else if p.max < target {
        "**missed**"
    } else {
        "**not resolved** by this run"
    };
    (cell, verdict)
}

fn tasks(level: usize) -> &'static str {
    if level == 1 {
        "task"
    } else {
        "tasks"
    }
}

/// Goal rows for the `local` level and the Redis hit path, in the goals
/// table's format.
pub fn goal_rows(r: &Results) -> String {
    let mut w = String::new();
    let top = r.timing.levels.iter().copied().max().unwrap_or(64);
    let (cell, v) = ratio_goal(r, "f", "a", 1, 20.0, true);
    let _ = writeln!(w, "| `local` hit, 1 task | ≥ 20 × raw GET | {cell} | {v} |");
    let (cell, v) = ratio_goal(r, "f", "c", top, 10.0, true);
    let _ = writeln!(
        w,
        "| `local` hit, {top} tasks | ≥ 10 × the peer's hit | {cell} | {v} |"
    );
    let worst = r
        .timing
        .levels
        .iter()
        .map(|&l| p99(r, "f", l))
        .fold(0.0f64, f64::max);
    let _ = writeln!(
        w,
        "| `local` hit p99 | < 10 µs | {} at worst over {:?} tasks | {} |",
        fmt_ns(worst),
        r.timing.levels,
        verdict(worst < 10_000.0)
    );
    if let Some(c) = &r.coherence {
        let _ = writeln!(
            w,
            "| coherence delay, 2 processes | p99 ≤ 100 ms | p99 {} ({} changes) | {} |",
            fmt_ns(c.p99_us as f64 * 1e3),
            c.seen,
            verdict(c.seen > 0 && c.p99_us <= 100_000)
        );
    }
    for &l in &r.timing.levels {
        let (cell, v) = ratio_goal(r, "b", "c", l, 1.0, false);
        let _ = writeln!(
            w,
            "| Redis hit against the peer, {l} {} | ≥ 1.0 × | {cell} | {v} |",
            tasks(l)
        );
    }
    if r.series("bn").is_some() {
        for &l in &r.timing.levels {
            let (cell, v) = ratio_goal(r, "bn", "cn", l, 1.0, false);
            let _ = writeln!(
                w,
                "| Redis hit against the peer, {l} {}, 1,000 distinct queries in turn | ≥ 1.0 × | {cell} | {v} |",
                tasks(l)
            );
        }
    }
    if r.series("g").is_some() {
        let (cell, v) = ratio_goal(r, "g", "a", 1, 0.95, true);
        let _ = writeln!(
            w,
            "| Redis hit throughput, 1 task, with `compression = lz4` | ≥ 0.95 × raw GET | {cell} | {v} |"
        );
        for &l in &r.timing.levels {
            let (cell, v) = ratio_goal(r, "g", "c", l, 1.0, false);
            let _ = writeln!(
                w,
                "| Redis hit against the peer, {l} {}, with `compression = lz4` | ≥ 1.0 × | {cell} | {v} |",
                tasks(l)
            );
        }
    }
    // Judged like the small struct's key: by the dearer of an argument
    // seen before (the key memo answers) and one seen for the first time.
    let key = micro(r, "key/json_1kb");
    let key_new = micro(r, "key_first_seen/json_1kb");
    let _ = writeln!(
        w,
        "| keying the 1 KB query | ≤ 1.5 µs | {} seen before (key memo); {} first seen, {} without the memo | {} |",
        fmt_ns(key),
        fmt_ns(key_new),
        fmt_ns(micro(r, "key_unmemoized/json_1kb")),
        verdict(key.max(key_new) <= 1_500.0)
    );
    let dec = micro(r, "hit/2KB") - micro(r, "hit/tiny");
    let _ = writeln!(
        w,
        "| inflate + decode, 2 KB value | ≤ 3 µs | {} | {} |",
        fmt_ns(dec),
        verdict(dec <= 3_000.0)
    );
    let dec = micro(r, "codec_2kb/hit_lz4") - micro(r, "hit/tiny");
    if !dec.is_nan() {
        let _ = writeln!(
            w,
            "| inflate + decode, 2 KB value, with `compression = lz4` | ≤ 3 µs | {} | {} |",
            fmt_ns(dec),
            verdict(dec <= 3_000.0)
        );
    }
    // The store path when the issue asking for it to be halved was filed:
    // `refresh/2KB` 33–44 µs (miniz_oxide, level 3). Halving the fastest
    // of those figures is the target. The default level is now 1, part of
    // the gain, which the row says.
    for (label, id) in [
        ("", "refresh/2KB"),
        (", with `compression = lz4`", "codec_2kb/store_lz4"),
    ] {
        let store = micro(r, id);
        if store.is_nan() {
            continue;
        }
        let _ = writeln!(
            w,
            "| store path (`name_refresh` of the 2 KB value: body, encode, read-back check, compress, store){label} | ≥ 2 × faster than 33–44 µs (zlib level 3 then; level 1 now, whose entries are larger), i.e. ≤ {} | {} ({} faster than 33 µs) | {} |",
            fmt_ns(STORE_AT_FILING_NS / 2.0),
            fmt_ns(store),
            ratio(STORE_AT_FILING_NS / store),
            verdict(store <= STORE_AT_FILING_NS / 2.0)
        );
    }
    w
}

/// `refresh/2KB` when the store path's goal was set: 33–44 µs over several
/// runs (flate2 with miniz_oxide, zlib level 3); the fastest is the base.
const STORE_AT_FILING_NS: f64 = 33_000.0;

/// The section on the `local` level.
pub fn section(r: &Results) -> String {
    let mut w = String::new();
    let _ = writeln!(w, "## The `local` level\n");
    let _ = writeln!(
        w,
        "(f) is the same 2 KB `search` with `local = 1000`: after its first call a hit \
         builds the key and clones the value held in this process; no round trip, no \
         decode. Its rows are in the table above and in the chart. Two baselines from \
         the same rounds put it in scale: (h) is the peer's own in-process cache (the \
         `cached` crate's `#[cached]`, keyed by the query's JSON text), and (f0) is the \
         floor of any in-process cache of this function: no key, no lookup, only the \
         copy of the value that the caller owns (and drops). (f) ÷ (f0) is how close \
         the level comes to that floor; what separates them is mostly the key of the \
         1 KB query.\n"
    );
    let _ = writeln!(
        w,
        "| tasks | (f) calls/s | p99 | ÷ (a) raw GET | ÷ (c) peer | (h) peer in-process | (f) ÷ (h) | (f0) floor | (f) ÷ (f0) |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for &l in &r.timing.levels {
        let _ = writeln!(
            w,
            "| {l} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt_int(ops(r, "f", l)),
            fmt_ns(p99(r, "f", l)),
            ratio(ops(r, "f", l) / ops(r, "a", l)),
            ratio(ops(r, "f", l) / ops(r, "c", l)),
            fmt_int(ops(r, "h", l)),
            ratio(ops(r, "f", l) / ops(r, "h", l)),
            fmt_int(ops(r, "f0", l)),
            ratio(ops(r, "f", l) / ops(r, "f0", l)),
        );
    }
    let f0_1 = ops(r, "f0", 1) / ops(r, "a", 1);
    let top = r.timing.levels.iter().copied().max().unwrap_or(64);
    let f0_top = ops(r, "f0", top) / ops(r, "c", top);
    if !f0_1.is_nan() && !f0_top.is_nan() {
        let _ = writeln!(
            w,
            "\nThe floor itself, against the `local` goals: (f0) is {} of the raw `GET` at \
             1 task (goal for (f): 20×) and {} of the peer's Redis hit at {top} tasks \
             (goal for (f): 10×).",
            ratio(f0_1),
            ratio(f0_top),
        );
    }
    if let Some(c) = &r.coherence {
        let _ = writeln!(
            w,
            "\n### Coherence across processes\n\n\
             A second process reads the entry in a loop (`local` hits) while this one \
             replaces it {} times with `_refresh`, 10 ms apart. Each delay runs from the \
             moment the writer's body produced the value (before its `SET` and \
             `PUBLISH`) to the reader's first call that returns it: {} changes seen, \
             p50 {}, p99 {}, max {} (the reader made {} calls).\n",
            c.changes,
            c.seen,
            fmt_ns(c.p50_us as f64 * 1e3),
            fmt_ns(c.p99_us as f64 * 1e3),
            fmt_ns(c.max_us as f64 * 1e3),
            fmt_int(c.reader_calls as f64),
        );
    }
    let _ = writeln!(w, "\n### Canonical JSON against serde_json\n");
    let _ = writeln!(
        w,
        "The whole key without the key memo (canonical JSON, BLAKE3 with the salt, \
         base64url, the head: `key_unmemoized/*`) against the same key through \
         `serde_json::to_value` (objects sorted by its `BTreeMap`) and \
         `serde_json::to_writer`, on the same inputs. A memo miss writes the canonical \
         JSON the same way, from the argument's fingerprint.\n"
    );
    let _ = writeln!(
        w,
        "| key arguments | canonical (`name_cache_key`) | `to_value` + `to_writer` | canonical ÷ serde_json |\n| --- | ---: | ---: | ---: |"
    );
    for (name, id) in [
        ("a small struct (4 fields)", "small_struct"),
        ("a 1 KB JSON query", "json_1kb"),
        ("a `HashMap<String, u64>` of 100 entries", "hashmap_100"),
    ] {
        let ours = micro(r, &format!("key_unmemoized/{id}"));
        let serde = micro(r, &format!("key_serde_value/{id}"));
        let _ = writeln!(
            w,
            "| {name} | {} | {} | {} |",
            fmt_ns(ours),
            fmt_ns(serde),
            ratio(ours / serde)
        );
    }
    let _ = writeln!(
        w,
        "\nMicro benchmarks of the `local` level (criterion, same run):\n\n\
         | what | median |\n| --- | ---: |\n\
         | `local` hit through the embedded store, sync, 2 KB value (key of a `u32`, lookup, clone) | {} |\n\
         | `local` hit of the async `search`, 2 KB value, keyed by the 1 KB query (`local_hit/search_2kb`: scenario (f) without the scheduler) | {} |\n\
         | of which the key of the 1 KB query, seen before (`key/json_1kb`) | {} |\n",
        fmt_ns(micro(r, "local_hit/2KB")),
        fmt_ns(micro(r, "local_hit/search_2kb")),
        fmt_ns(micro(r, "key/json_1kb")),
    );
    w
}
