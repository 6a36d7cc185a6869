//! Turns [`Results`] into BENCHMARKS.md, a console summary and an SVG chart.
//! Every number in the report comes from the run being reported; the only
//! fixed text is the method and the profiling notes, which say so.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use plotters::prelude::*;

use crate::report_local::ratio_goal;
use crate::results::{summarize, Micro, Probe, Results, Series, Summary};

// ---------------------------------------------------------------------------
// Formatting.

/// `532 ns`, `1.23 µs`, `45.6 µs`, `1.23 ms`, `2.10 s`.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 0.0 {
        return format!("−{}", fmt_ns(-ns));
    }
    if !ns.is_finite() {
        return "–".into();
    }
    let (v, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    if unit == "ns" || v >= 100.0 {
        format!("{v:.0} {unit}")
    } else if v >= 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.2} {unit}")
    }
}

/// The other client's cells of one phase: calls, p50, p99, max.
fn probe_cells(p: &Probe) -> String {
    format!(
        "{} | {} | {} | {}",
        fmt_int(p.ops as f64),
        fmt_ns(p.p50_ns as f64),
        fmt_ns(p.p99_ns as f64),
        fmt_ns(p.max_ns as f64)
    )
}

/// `1,234,567`.
pub fn fmt_int(v: f64) -> String {
    if v.is_nan() {
        return "–".into();
    }
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "–".into()
    }
}

fn fmt_pct(r: f64) -> String {
    format!("{:+.1} %", (r - 1.0) * 100.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time (civil-from-days, no dependency).
pub fn utc_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60
    )
}

/// `target` relative to the directory of `from` (both relative to the
/// current directory or both absolute), with `/` separators.
pub fn relative(target: &Path, from: &Path) -> String {
    let abs = |p: &Path| -> PathBuf {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                c => out.push(c),
            }
        }
        out
    };
    let t = abs(target);
    let base = abs(from.parent().unwrap_or(Path::new(".")));
    let tc: Vec<_> = t.components().collect();
    let bc: Vec<_> = base.components().collect();
    let common = tc.iter().zip(&bc).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); bc.len() - common];
    parts.extend(
        tc[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

// ---------------------------------------------------------------------------
// Criterion's estimates.

/// Every `group/bench` under criterion's output directory: the median and
/// its confidence interval from `new/estimates.json`.
pub fn read_criterion(dir: &Path) -> Vec<Micro> {
    let mut out = Vec::new();
    let Ok(groups) = std::fs::read_dir(dir) else {
        return out;
    };
    for group in groups.flatten() {
        let Ok(benches) = std::fs::read_dir(group.path()) else {
            continue;
        };
        for bench in benches.flatten() {
            let file = bench.path().join("new").join("estimates.json");
            let Ok(text) = std::fs::read(&file) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
                continue;
            };
            let m = &v["median"];
            let (Some(ns), Some(lo), Some(hi)) = (
                m["point_estimate"].as_f64(),
                m["confidence_interval"]["lower_bound"].as_f64(),
                m["confidence_interval"]["upper_bound"].as_f64(),
            ) else {
                continue;
            };
            out.push(Micro {
                id: format!(
                    "{}/{}",
                    group.file_name().to_string_lossy(),
                    bench.file_name().to_string_lossy()
                ),
                ns,
                lo,
                hi,
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

// ---------------------------------------------------------------------------
// Derived numbers, shared by the console summary, the goals and the prose.

struct Derived<'a> {
    r: &'a Results,
}

impl<'a> Derived<'a> {
    fn at(&self, id: &str, level: usize) -> Option<Summary> {
        self.r.series(id).and_then(|s| s.at(level))
    }
    fn ops(&self, id: &str, level: usize) -> f64 {
        self.at(id, level).map_or(f64::NAN, |s| s.ops_per_sec)
    }
    fn p50(&self, id: &str, level: usize) -> f64 {
        self.at(id, level).map_or(f64::NAN, |s| s.p50_ns as f64)
    }
    /// The process's CPU time per call, median of the rounds.
    fn cpu(&self, id: &str, level: usize) -> f64 {
        self.at(id, level)
            .and_then(|s| s.cpu_ns_per_op)
            .unwrap_or(f64::NAN)
    }
    fn ratio(&self, id: &str, to: &str, level: usize) -> f64 {
        self.ops(id, level) / self.ops(to, level)
    }
    fn top(&self) -> usize {
        self.r.timing.levels.iter().copied().max().unwrap_or(64)
    }
    fn micro(&self, id: &str) -> f64 {
        self.r.micro(id).map_or(f64::NAN, |m| m.ns)
    }
    fn size(&self, who: &str) -> Option<&crate::results::EntrySize> {
        self.r.sizes.iter().find(|s| s.who.starts_with(who))
    }
    fn bytes_ratio(&self) -> f64 {
        match (self.size("cached-redis"), self.size("cached (peer)")) {
            (Some(a), Some(b)) => a.value_bytes as f64 / b.value_bytes as f64,
            _ => f64::NAN,
        }
    }
    fn memory_ratio(&self) -> f64 {
        match (self.size("cached-redis"), self.size("cached (peer)")) {
            (Some(a), Some(b)) => a.memory_usage as f64 / b.memory_usage as f64,
            _ => f64::NAN,
        }
    }
}

// ---------------------------------------------------------------------------
// Console.

/// The ratios to (a), printed at the end of the run.
pub fn console(r: &Results) -> String {
    let d = Derived { r };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== hits of the 2 KB response: ratio to (a) raw GET, same run =="
    );
    let _ = writeln!(
        out,
        "{:>6}  {:>12} {:>12} {:>12} {:>12} | {:>7} {:>7} {:>7}",
        "tasks", "(a) ops/s", "(b) ops/s", "(c) ops/s", "(e) ops/s", "b/a", "c/a", "b/c"
    );
    for &l in &r.timing.levels {
        let _ = writeln!(
            out,
            "{l:>6}  {:>12} {:>12} {:>12} {:>12} | {:>7} {:>7} {:>7}",
            fmt_int(d.ops("a", l)),
            fmt_int(d.ops("b", l)),
            fmt_int(d.ops("c", l)),
            fmt_int(d.ops("e", l)),
            fmt_ratio(d.ratio("b", "a", l)),
            fmt_ratio(d.ratio("c", "a", l)),
            fmt_ratio(d.ratio("b", "c", l)),
        );
    }
    for &l in &r.timing.sync_levels {
        let _ = writeln!(
            out,
            "sync {l} threads: raw GET {} ops/s, #[cached] fn hit {} ops/s ({})",
            fmt_int(d.ops("sa", l)),
            fmt_int(d.ops("sb", l)),
            fmt_ratio(d.ratio("sb", "sa", l))
        );
    }
    for s in &r.sizes {
        let _ = writeln!(
            out,
            "entry of {}: {} value bytes, MEMORY USAGE {}",
            s.who, s.value_bytes, s.memory_usage
        );
    }
    let _ = writeln!(out, "load binary: {:.0} s", r.load_seconds);
    out
}

// ---------------------------------------------------------------------------
// Chart.

const COLORS: [RGBColor; 8] = [
    RGBColor(0x33, 0x33, 0x33),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x8c, 0x56, 0x4b),
];

type ChartResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[&Series],
    title: &str,
    y_desc: &str,
    value: impl Fn(&Summary) -> f64,
    y_fmt: &dyn Fn(&f64) -> String,
) -> ChartResult
where
    DB::ErrorType: 'static,
{
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .map(|(l, rounds)| (*l as f64, value(&summarize(rounds))))
                .filter(|(_, v)| *v > 0.0)
                .collect()
        })
        .collect();
    let all = points.iter().flatten().map(|p| p.1);
    let lo = all.clone().fold(f64::INFINITY, f64::min);
    let hi = all.fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (lo / 2.0, hi * 2.0)
    } else {
        (1.0, 10.0)
    };
    // x is log2(concurrency), labelled as the concurrency: 1, 2, 4, ... 64.
    let x_max = series
        .iter()
        .flat_map(|s| s.points.keys())
        .copied()
        .max()
        .unwrap_or(64) as f64;
    let x_hi = x_max.log2() + 0.3;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3f64..x_hi, (lo..hi).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("concurrent tasks")
        .y_desc(y_desc)
        .x_labels((x_hi.floor() as usize) + 1)
        .x_label_formatter(&|x| format!("{:.0}", 2f64.powf(x.round())))
        .y_label_formatter(y_fmt)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, pts) in points.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = pts.iter().map(|(x, y)| (x.log2(), *y)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Throughput and p99 against concurrency for (a) to (h).
pub fn chart(r: &Results, path: &Path) -> ChartResult {
    let series: Vec<&Series> = ["a", "b", "g", "c", "d", "e", "f", "h"]
        .iter()
        .filter_map(|id| r.series(id))
        .collect();
    let root = SVGBackend::new(path, (1100, 545)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (plots, legend) = root.split_vertically(450);
    let (left, right) = plots.split_horizontally(550);
    panel(
        &left,
        &series,
        "Throughput (higher is better)",
        "calls per second",
        |s| s.ops_per_sec,
        &|v| {
            if *v >= 1e6 {
                format!("{:.1}M", v / 1e6)
            } else if *v >= 1e3 {
                format!("{:.0}k", v / 1e3)
            } else {
                format!("{v:.0}")
            }
        },
    )?;
    panel(
        &right,
        &series,
        "p99 latency (lower is better)",
        "p99 per call",
        |s| s.p99_ns as f64,
        &|v| fmt_ns(*v),
    )?;
    // The legend, in two columns under both panels.
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let x = 90 + (i % 2) as i32 * 520;
        let y = 14 + (i / 2) as i32 * 22;
        legend
            .draw(&PathElement::new(
                vec![(x, y), (x + 28, y)],
                color.stroke_width(3),
            ))
            .map_err(|e| e.to_string())?;
        legend
            .draw(&Text::new(
                format!("({}) {}", s.id, s.label),
                (x + 36, y - 7),
                ("sans-serif", 14),
            ))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

// ---------------------------------------------------------------------------
// BENCHMARKS.md.

fn series_rows(
    out: &mut String,
    d: &Derived<'_>,
    ids: &[&str],
    levels: &[usize],
    unit: &str,
    base: &str,
) {
    let _ = writeln!(
        out,
        "| scenario | {unit} | calls/s (median) | spread over rounds | p50 | p99 | CPU per call | throughput ÷ ({base}) |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for &l in levels {
        for id in ids {
            let Some(series) = d.r.series(id) else {
                continue;
            };
            let Some(s) = series.at(l) else { continue };
            let _ = writeln!(
                out,
                "| ({id}) {} | {l} | {} | {} – {} | {} | {} | {} | {} |",
                series.label,
                fmt_int(s.ops_per_sec),
                fmt_int(s.ops_min),
                fmt_int(s.ops_max),
                fmt_ns(s.p50_ns as f64),
                fmt_ns(s.p99_ns as f64),
                s.cpu_ns_per_op.map_or_else(|| "–".into(), fmt_ns),
                fmt_ratio(s.ops_per_sec / d.ops(base, l)),
            );
        }
    }
}

/// The whole BENCHMARKS.md. `chart` is the chart's path relative to it.
pub fn markdown(r: &Results, chart: &str) -> String {
    let d = Derived { r };
    let top = d.top();
    let m = &r.machine;
    let t = &r.timing;
    let mut o = String::new();
    let w = &mut o;

    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "<!-- Generated by scripts/bench.sh (bench/src/report.rs). Edit the generator, not this file. -->\n"
    );
    let _ = writeln!(
        w,
        "How fast is a `#[cached]` call compared with the fastest thing that could \
         answer it (a raw Redis `GET` of the same bytes) and with the best-known peer \
         (the [`cached`](https://crates.io/crates/cached) crate's Redis store)? \
         All numbers below come from one run of `scripts/bench.sh` on the machine \
         described under [Machine](#machine), on {}.{}\n",
        m.date_utc,
        match (r.total_seconds, r.micro_seconds) {
            (Some(t), Some(mi)) => format!(
                " The whole command took {:.0} s (micro benchmarks {:.0} s, load benchmark {:.0} s, build excluded).",
                t, mi, r.load_seconds
            ),
            (Some(t), None) => format!(" The whole command took {t:.0} s."),
            _ => format!(" The load benchmark took {:.0} s.", r.load_seconds),
        }
    );

    // Goals.
    let _ = writeln!(w, "## Goals\n");
    let _ = writeln!(w, "| goal | target | this run | |");
    let _ = writeln!(w, "| --- | --- | --- | --- |");
    let (cell, v) = ratio_goal(r, "b", "a", 1, 0.95, true);
    let _ = writeln!(
        w,
        "| Redis hit throughput, 1 task | ≥ 0.95 × raw GET | {cell} | {v} |"
    );
    let (cell, v) = ratio_goal(r, "b", "a", top, 0.95, true);
    let _ = writeln!(
        w,
        "| Redis hit throughput, {top} tasks | ≥ 0.95 × raw GET | {cell} | {v} |"
    );
    let (cell, v) = ratio_goal(r, "b", "c", top, 1.5, true);
    let _ = writeln!(
        w,
        "| against the peer, {top} tasks | ≥ 1.5 × the `cached` crate's hit throughput | {cell} | {v} |"
    );
    let br = d.bytes_ratio();
    let _ = writeln!(
        w,
        "| bytes stored, 2 KB response | ≤ 1/3 of the peer's | value {} of the peer's ({} vs {} B); with key and Redis overhead (`MEMORY USAGE`) {} | {} |",
        fmt_ratio(br),
        d.size("cached-redis").map_or(0, |s| s.value_bytes),
        d.size("cached (peer)").map_or(0, |s| s.value_bytes),
        fmt_ratio(d.memory_ratio()),
        verdict(br <= 1.0 / 3.0)
    );
    let ks = d.micro("key/small_struct");
    let ks_new = d.micro("key_first_seen/small_struct");
    let _ = writeln!(
        w,
        "| key building, small struct | < 1 µs | {} seen before, {} first seen | {} |",
        fmt_ns(ks),
        fmt_ns(ks_new),
        verdict(ks.max(ks_new) < 1000.0)
    );
    // Met when some call resolves the cost to within ±2 % and no call shows
    // a cost above 2 % beyond its own noise.
    let cis: Vec<(f64, f64, f64)> = r.stats_cost.iter().map(|c| c.median_ci()).collect();
    let resolved = cis.iter().any(|&(_, lo, hi)| lo >= 0.98 && hi <= 1.02);
    let costly = cis.iter().any(|&(_, _, hi)| hi < 0.98);
    // A call whose median shows a cost above 2 % that its interval cannot
    // tell from noise leaves the goal open.
    let unsettled = cis.iter().any(|&(m, _, _)| m < 0.98);
    let tight = r
        .stats_cost
        .iter()
        .zip(&cis)
        .min_by(|a, b| (a.1 .2 - a.1 .1).total_cmp(&(b.1 .2 - b.1 .1)));
    let _ = writeln!(
        w,
        "| stats cost on the hit path | within 2 % | {}; {} ([table](#what-counting-stats-costs)) | {} |",
        tight.map_or("–".into(), |(c, &(m, lo, hi))| format!(
            "tightest measurement, {} {}: {} (95 % interval {} … {})",
            c.store,
            c.what,
            fmt_pct(m),
            fmt_pct(lo),
            fmt_pct(hi)
        )),
        if costly {
            "but a call shows a cost above 2 % beyond its noise"
        } else if unsettled {
            "a call's median shows a cost above 2 % that its interval does not tell from noise"
        } else {
            "no call shows a cost above 2 % beyond its noise"
        },
        if costly {
            "**missed**"
        } else if resolved && !unsettled {
            "**met**"
        } else {
            "**not resolved** by this run"
        }
    );
    let _ = write!(w, "{}", crate::report_local::goal_rows(r));
    let _ = writeln!(w);

    // Compile cost: measured by its own script into its own file; its
    // history (before and after changes of the expansion) is shown here.
    let _ = writeln!(w, "## Compile cost\n");
    let _ = writeln!(
        w,
        "What `#[cached]` costs at build time: the debug build time and binary size \
         of a crate with 200 cached functions against the same crate without the \
         attribute, measured by `scripts/compile-cost.sh` (details and the latest \
         run: [docs/bench/compile-cost.md](docs/bench/compile-cost.md)). Each row \
         is one run of that script; compare rows by their ratios.\n"
    );
    if let Some(history) = compile_cost_history() {
        let _ = writeln!(w, "{history}\n");
    }

    // Reproduce.
    let _ = writeln!(w, "## Reproduce\n");
    let _ = writeln!(
        w,
        "```sh\nscripts/bench.sh          # everything: about 5 minutes after the first build\n\
         scripts/bench.sh --quick  # a smoke run: short windows, one round (numbers not for publishing)\n```\n"
    );
    let _ = writeln!(
        w,
        "It builds `bench/` (a separate cargo workspace, release profile), runs the \
         criterion micro benchmarks on the embedded store, starts a throwaway \
         `redis-server` on a free port (nothing persisted; never the one on 6379), \
         runs `bench/target/release/load` against it, and writes this file, \
         [the chart]({chart}) and `bench/last-run.json` (every sample of every round). \
         The fixtures are JSON files in `bench/fixtures/`, written by \
         `cargo run --release --bin gen_fixtures` in `bench/` (deterministic).\n"
    );

    // Machine.
    let _ = writeln!(w, "## Machine\n");
    let _ = writeln!(w, "| | |\n| --- | --- |");
    let _ = writeln!(w, "| CPU | {} ({} cores visible) |", m.cpu, m.cores);
    let _ = writeln!(w, "| memory | {:.0} GiB |", m.memory_gib);
    let _ = writeln!(w, "| kernel | Linux {} |", m.kernel);
    let _ = writeln!(w, "| Redis | {} (same machine, loopback TCP) |", m.redis);
    let _ = writeln!(w, "| Rust | {} |", m.rustc);
    let _ = writeln!(
        w,
        "| date | {} |\n\nThe machine is a shared 2-core virtual machine: other builds may run \
         beside the benchmark, which is why every load figure is the median of {} \
         interleaved rounds and the tables show the spread.\n",
        m.date_utc, t.rounds
    );

    // Method.
    let _ = writeln!(w, "## Method\n");
    let _ = writeln!(
        w,
        "- **One value, one function.** The cached function is the README's \
         `search(query: &serde_json::Value) -> Result<SearchResponse, E>`: its key \
         argument is a 1 KB Elasticsearch-style query (`bench/fixtures/query_1kb.json`), \
         its value a {} B (as JSON) search response with typed fields \
         (`bench/fixtures/search_2kb.json`). The peer caches the same function with \
         `#[concurrent_cached(ty = \"AsyncRedisCache<String, SearchResponse>\", key = \"String\", \
         convert = \"{{ query.to_string() }}\")]` (`cached` 4.x renamed `#[io_cached]` to \
         `#[concurrent_cached]`).\n\
         - **(a) the limit**: a `GET` of the very entry (b) reads, through the `redis` \
         crate on a multiplexed async connection without a response timeout, bytes \
         returned and not decoded. **(b)** a cached-redis hit, **(c)** the peer's hit, \
         both on multiplexed async connections to the same server. **(d)** a cached-redis \
         miss whose body waits 1 ms (a timer, like an I/O-bound backend) and returns the \
         response: every call has a new key, so it also encodes, compresses and \
         `SET`s; **(d0)** is that body alone. **(e)** a hit on the embedded in-process \
         store (no Redis URL) in a child process, since cached-redis is configured once \
         per process. **(g)** is (b) in a cache configured with \
         `.compression(Compression::Lz4)` (the same function and value, its entry an \
         LZ4 block instead of a zlib stream). **(f)** is (b) with `local = 1000`, a hit \
         served by the in-process level; **(h)** the peer's in-process cache of the same \
         function (its `#[cached(max_size = 1000)]`, keyed like (c)); **(f0)** the floor \
         of any in-process hit, a clone of the value and nothing else.\n\
         - **One query or many.** (a) to (h) pass the same query on every call: for \
         cached-redis that is the key memo's best case, each key answered by the \
         calling thread's front of its last 4 keys.{}\n\
         - **Load**: N tasks on a multi-threaded tokio runtime (one worker per core) \
         each call in a loop for {} ms after a {} ms warm-up; with several tasks, each \
         yields to the scheduler between calls (outside the timed part) so that calls \
         that never wait (embedded and `local` hits) still interleave like a service's \
         requests. A lone task does not yield (its yield only handed it to the other \
         worker, a context switch per call): between round trips the runtime parks, as \
         in an idle service, and each round trip includes waking a sleeping thread, \
         which on this virtual machine costs tens of microseconds. Every call's \
         latency goes into a log-linear histogram (HdrHistogram-style, < 1.6 % error). \
         Throughput counts the calls started in the window; CPU per call is the \
         process's CPU time over the window divided by those calls. Concurrency levels {:?}; \
         {} rounds, interleaved (every scenario at one level, then the next level; \
         in the 2 KB hit table each round starts a level with the next scenario, so \
         none always runs first) and the median of each figure is reported.\n\
         - **Sync path**: N OS threads, each calling a sync `#[cached] fn` (hits go \
         through cached-redis' pool of blocking connections) or doing a raw sync `GET` \
         on its own connection.\n\
         - **Checks**: each function's body counts its runs; a hit scenario in which \
         the body ran would show here: body runs during hit scenarios: **{}**{}.\n\
         - **Micro benchmarks** (criterion, median with 95 % interval) call only public \
         paths: the `name_cache_key(...)` companion for keys, and for the codec (which \
         is crate-private) sync `#[cached] fn`s on the embedded store: `hit` (lookup, \
         decompress, decode) and `name_refresh` (run the body, encode, check that the \
         value reads back, compress, store), \
         from which the codec's share is derived by subtracting a one-byte value's \
         path and the body's clone.\n",
        r.json_bytes,
        if r.series("bn").is_some() {
            " **(bn)** and **(cn)** are (b) and (c) over 1,000 variants of the query \
             (differing in `from`, stored before the run) taken in turn: each \
             cached-redis key comes from the memo's shared table, each of the peer's \
             from the query's JSON text written again, as on every call of (c)."
        } else {
            " This run had no scenario of many distinct queries."
        },
        t.measure_ms,
        t.warmup_ms,
        t.levels,
        t.rounds,
        r.misses_during_hits,
        if r.runs_counted_after_warmup {
            ""
        } else {
            " (this run's count also took in the first call of (f), a miss made \
             while its level was warmed up before the hit scenarios, and counted \
             (b) and (g)'s misses twice: as body runs and as misses)"
        }
    );

    // Hits.
    let _ = writeln!(
        w,
        "## Hits of the 2 KB response: the limit, cached-redis, the peer\n"
    );
    let _ = writeln!(
        w,
        "![Throughput and p99 latency against concurrency]({chart})\n"
    );
    series_rows(
        w,
        &d,
        &["a", "b", "g", "c", "bn", "cn", "e", "f", "h", "f0"],
        &t.levels,
        "tasks",
        "a",
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "### Where the time of a 2 KB hit goes (one task)\n");
    let a1 = d.p50("a", 1);
    let key = d.micro("key/json_1kb");
    let dec = (d.micro("hit/2KB") - d.micro("hit/tiny")).max(0.0);
    let b1 = d.p50("b", 1);
    let _ = writeln!(
        w,
        "The client's own work, timed alone by criterion, against the round trip \
         measured in the same run. At one task the p50 of a round trip on this \
         machine moves by tens of microseconds from run to run (thread wake-ups on a \
         shared VM), so the remainder mixes the library's plumbing with that noise; \
         callgrind counts the plumbing (key of a `u32`, lookup, timeout, breaker, \
         1-byte decode) at about 5 000 instructions, 1–2 µs.\n"
    );
    let _ = writeln!(w, "| part | time | source |");
    let _ = writeln!(w, "| --- | ---: | --- |");
    let _ = writeln!(
        w,
        "| the round trip: raw `GET` of the entry | {} | (a) p50 |",
        fmt_ns(a1)
    );
    let _ = writeln!(
        w,
        "| building the key from the 1 KB query | {} | micro `key/json_1kb` |",
        fmt_ns(key)
    );
    let _ = writeln!(
        w,
        "| inflating and decoding the value | {} | micro `hit/2KB` − `hit/tiny` |",
        fmt_ns(dec)
    );
    let _ = writeln!(w, "| **expected** | **{}** | |", fmt_ns(a1 + key + dec));
    let _ = writeln!(
        w,
        "| measured cached-redis hit | {} | (b) p50 |",
        fmt_ns(b1)
    );
    let _ = writeln!(
        w,
        "| remainder: plumbing and noise | {} | |\n",
        fmt_ns(b1 - a1 - key - dec)
    );
    let _ = write!(w, "{}", cpu_table(&d, key + dec));
    let _ = writeln!(
        w,
        "### The smallest hit: what the library itself adds\n\n\
         A `#[cached]` function with a `u32` key and a one-byte value against a raw \
         `GET` of its entry: no key of any size to build, nothing to inflate.\n"
    );
    let ends: Vec<usize> =
        d.r.series("b1")
            .map(|s| s.points.keys().copied().collect())
            .unwrap_or_default();
    series_rows(w, &d, &["a1", "b1"], &ends, "tasks", "a1");
    let _ = writeln!(w);
    let _ = write!(w, "{}", crate::report_local::section(r));

    // Misses.
    let _ = writeln!(w, "## Misses with a 1 ms body (d)\n");
    series_rows(w, &d, &["d0", "d"], &t.levels, "tasks", "d0");
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "A miss costs the body plus a lookup (one round trip that finds nothing), \
         the encode and compression of the value and a `SET` (a second round trip). \
         At one task the median miss takes {} over the body alone. (tokio's timer \
         rounds the body's 1 ms sleep up to about 2 ms; (d0) measures it as it is.)\n",
        fmt_ns(d.p50("d", 1) - d.p50("d0", 1))
    );

    // Sync.
    let _ = writeln!(w, "## The sync path\n");
    series_rows(w, &d, &["sa", "sb"], &t.sync_levels, "threads", "sa");
    let _ = writeln!(w);

    // Bytes.
    let _ = writeln!(w, "## Bytes per entry (the 2 KB response)\n");
    let _ = writeln!(
        w,
        "The response is {} B as compact JSON. `STRLEN` is the value; `MEMORY USAGE` \
         (Redis 7, `SAMPLES 0`) adds the key and Redis' own overhead.\n",
        r.json_bytes
    );
    let _ = writeln!(
        w,
        "| library | key | key length | value bytes | `MEMORY USAGE` |"
    );
    let _ = writeln!(w, "| --- | --- | ---: | ---: | ---: |");
    for s in &r.sizes {
        let shown = if s.key.len() > 60 {
            format!("{}… (the query's JSON, escaped)", &s.key[..48])
        } else {
            s.key.clone()
        };
        let _ = writeln!(
            w,
            "| {} | `{}` | {} | {} | {} |",
            s.who, shown, s.key_len, s.value_bytes, s.memory_usage
        );
    }
    let _ = writeln!(
        w,
        "\ncached-redis stores a 20-byte header and the zlib-compressed bincode of the \
         value (an LZ4 block instead with `compression = lz4`); the peer stores MessagePack (`rmp_serde`, struct fields as arrays) \
         uncompressed, under a key that holds the whole argument text.\n"
    );

    // Stats.
    let _ = writeln!(w, "## What counting stats costs\n");
    let _ = writeln!(
        w,
        "The hit path with stats counting on and off \
         (`cached_redis::__private::set_stats_enabled`), same process, as pairs of \
         back-to-back windows (150 ms of calls, or 10 000 calls for the sync one) in \
         alternating order; each pair gives one throughput ratio, so the machine's \
         drift cancels within a pair. The table gives the median ratio and its 95 % \
         confidence interval (order statistics, no assumption about the distribution): \
         a call resolves the goal when its interval lies within ±2 %.\n"
    );
    let _ = writeln!(
        w,
        "| store | call | pairs | on vs off (median) | 95 % interval of the median |"
    );
    let _ = writeln!(w, "| --- | --- | ---: | ---: | ---: |");
    for c in &r.stats_cost {
        let (m, lo, hi) = c.median_ci();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} … {} |",
            c.store,
            c.what,
            c.ratios.len(),
            fmt_pct(m),
            fmt_pct(lo),
            fmt_pct(hi)
        );
    }
    let _ = writeln!(
        w,
        "\nCounting a hit is one relaxed atomic add on a per-prefix counter (a few \
         nanoseconds); the 1-byte embedded hit, the cheapest call there is, is where it \
         would show first.\n"
    );

    // Stampede.
    let _ = writeln!(
        w,
        "## Stampede: concurrent callers of a cold key (50 ms body)\n"
    );
    let _ = writeln!(
        w,
        "All callers are released at once (a barrier) on a key nobody has computed. \
         In one process, coalescing is always on, so the body runs once either way. \
         Across {} processes (each with the given number of callers, started at the \
         same wall-clock instant), `lock = true` adds a Redis lock so that one process \
         computes and the others poll for its result.\n",
        r.stampede.iter().map(|s| s.processes).max().unwrap_or(1)
    );
    let _ = writeln!(w, "| processes × callers | without lock: executions | p50 | p99 | with `lock = true`: executions | p50 | p99 |");
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut pairs: Vec<(usize, usize)> = r
        .stampede
        .iter()
        .map(|s| (s.processes, s.callers))
        .collect();
    pairs.dedup();
    for (p, n) in pairs {
        let find = |lock: bool| {
            r.stampede
                .iter()
                .find(|s| s.processes == p && s.callers == n && s.lock == lock)
        };
        let cell = |s: Option<&crate::results::Stampede>| match s {
            Some(s) => format!(
                "{} | {} | {}",
                s.executions,
                fmt_ns(s.p50_ns as f64),
                fmt_ns(s.p99_ns as f64)
            ),
            None => "– | – | –".into(),
        };
        let _ = writeln!(
            w,
            "| {p} × {n} | {} | {} |",
            cell(find(false)),
            cell(find(true))
        );
    }
    let _ = writeln!(w);

    // Invalidation.
    if let Some(inv) = &r.invalidate {
        let _ = writeln!(
            w,
            "## `invalidate_prefix` on {} entries\n",
            fmt_int(inv.entries as f64)
        );
        let _ = writeln!(
            w,
            "{} entries of one prefix (real keys from the function's `_cache_key` \
             companion, real values) are written with pipelined `SET`s ({:.0} ms), then \
             `cached_redis::invalidate_prefix` runs while another client, on its own \
             connection and thread, alternates `PING` and a 2 KB `GET` and records each \
             latency. For scale, the same entries are then written again and removed the \
             way `invalidate_prefix` avoids: one `KEYS` and one `UNLINK` of everything.\n",
            fmt_int(inv.entries as f64),
            inv.fill_ms
        );
        let _ = writeln!(
            w,
            "| phase | took | removed | other client: calls | p50 | p99 | max |"
        );
        let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        let _ = writeln!(
            w,
            "| idle, before (1 s) | – | – | {} |",
            probe_cells(&inv.probe_before)
        );
        let _ = writeln!(
            w,
            "| `invalidate_prefix` (SCAN + UNLINK batches) | {} | {} | {} |",
            fmt_ns(inv.duration_ms * 1e6),
            fmt_int(inv.removed as f64),
            probe_cells(&inv.probe_during)
        );
        let _ = writeln!(
            w,
            "| for scale: `KEYS` + one `UNLINK` | {} | {} | {} |",
            fmt_ns(inv.naive_duration_ms * 1e6),
            fmt_int(inv.entries as f64),
            probe_cells(&inv.probe_naive)
        );
        let _ = writeln!(
            w,
            "\nEntries of the prefix left afterwards: {}. Compare p99 and max: on this \
             virtual machine a client blocked on an otherwise idle machine wakes up more \
             slowly (see the one-task rows of the hit table), which can make the idle \
             phase's p50 the highest of the three.\n",
            inv.left_after
        );
    }

    crate::topologies::render(w, &r.topologies);

    // Micro.
    let _ = writeln!(w, "## Micro benchmarks\n");
    let _ = writeln!(w, "### Key building\n");
    let _ = writeln!(
        w,
        "`name_cache_key(...)`, the key a call uses. **Seen before**: the same argument \
         again, so the key memo finds its fingerprint (an exact record of its serde \
         calls) and no JSON is written. **First seen**: a new argument each call (one \
         number changed), as a function whose arguments never repeat sees it: after a \
         window of 256 counted lookups (one in eight) that missed, its keys skip the memo but for one window of \
         calls in eight (there: the fingerprint, its replay as canonical JSON, BLAKE3, \
         a memo insert). **No memo**: \
         a cache with `key_memo_max_bytes(0)`, canonical JSON and BLAKE3 every call. \
         Each adds base64url and the `{{namespace}}:{{prefix}}:` head. The floor is the \
         unmemoized work done the plain way (`serde_json::to_vec`, BLAKE3, base64, no \
         sorting, no plumbing).\n"
    );
    let _ = writeln!(
        w,
        "| key arguments | seen before | 95 % interval | first seen | no memo | floor | seen before ÷ floor |"
    );
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (id, label) in [
        ("small_struct", "a small struct (4 fields)"),
        ("json_1kb", "a 1 KB JSON query (`serde_json::Value`)"),
        ("hashmap_100", "a `HashMap<String, u64>` of 100 entries"),
    ] {
        let k = r.micro(&format!("key/{id}"));
        let f = d.micro(&format!("key_floor/{id}"));
        if let Some(k) = k {
            let _ = writeln!(
                w,
                "| {label} | {} | {} – {} | {} | {} | {} | {} |",
                fmt_ns(k.ns),
                fmt_ns(k.lo),
                fmt_ns(k.hi),
                fmt_ns(d.micro(&format!("key_first_seen/{id}"))),
                fmt_ns(d.micro(&format!("key_unmemoized/{id}"))),
                fmt_ns(f),
                fmt_ratio(k.ns / f)
            );
        }
    }
    let _ = writeln!(w, "\n### Codec, through the embedded store\n");
    let _ = writeln!(
        w,
        "`hit`: a sync `#[cached] fn` hit on the embedded store (key of a `u32`, \
         shard lookup, header check, inflate, bincode decode, drop). `refresh`: \
         `name_refresh` (run the body, encode, check that the value reads back from \
         its encoding, compress, store). `clone`: the body alone. Derived: **decode \
         ≈ hit − hit(1-byte value)**, **encode ≈ refresh − clone − refresh(1-byte \
         value)** (encode includes the read-back check, compression and the copies \
         into the store; the codec alone, without the check, is in the last table \
         below).\n"
    );
    let _ = writeln!(w, "| value (JSON size) | hit | refresh | clone | ≈ decompress + decode | ≈ encode + check + compress |");
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: | ---: |");
    let tiny_hit = d.micro("hit/tiny");
    let tiny_ref = d.micro("refresh/tiny");
    let _ = writeln!(
        w,
        "| 1-byte value (the path's fixed cost) | {} | {} | – | – | – |",
        fmt_ns(tiny_hit),
        fmt_ns(tiny_ref)
    );
    for (id, label) in [
        ("200B", "user document, 200 B"),
        ("2KB", "search response, 2 KB"),
        ("64KB", "rows, 64 KB"),
        ("1MB", "rows, 1 MB"),
    ] {
        let hit = d.micro(&format!("hit/{id}"));
        let rf = d.micro(&format!("refresh/{id}"));
        let cl = d.micro(&format!("clone/{id}"));
        if hit.is_nan() {
            continue;
        }
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {} | {} | {} |",
            fmt_ns(hit),
            fmt_ns(rf),
            fmt_ns(cl),
            fmt_ns((hit - tiny_hit).max(0.0)),
            fmt_ns((rf - cl - tiny_ref).max(0.0))
        );
    }
    let _ = writeln!(w, "{}", codec_table(&d));
    let ea = d.micro("embedded_async/search_2kb");
    if !ea.is_nan() {
        let _ = writeln!(
            w,
            "\nThe async `search` hit of (e), alone on a current-thread runtime (no other \
             tasks, no yield): {} per call, of which building the key from the 1 KB query \
             is {} and the 2 KB decode about {}.\n",
            fmt_ns(ea),
            fmt_ns(d.micro("key/json_1kb")),
            fmt_ns((d.micro("hit/2KB") - tiny_hit).max(0.0))
        );
    }

    let _ = writeln!(w, "{}", signing_table(&d));

    // Reading.
    let _ = writeln!(w, "## What the numbers mean when choosing a cache\n");
    let _ = writeln!(w, "{}", reading(&d));

    let _ = writeln!(w, "## What stands in the way of the goals\n");
    let _ = writeln!(w, "{}", PROFILE_NOTES.trim());
    o
}

/// The 2 KB search response with each codec: hit (decode) and store
/// (encode), side by side, with the automatic choice (which verifies each
/// store) for comparison.
/// What a hit costs the client's CPU at the top concurrency, beside a raw
/// `GET`; `client_work` is the key and decode timed alone.
fn cpu_table(d: &Derived<'_>, client_work: f64) -> String {
    let top = d.top();
    let base = d.cpu("a", top);
    if !base.is_finite() {
        return String::new();
    }
    let mut o = String::new();
    let _ = writeln!(o, "### What a hit costs the client's CPU ({top} tasks)\n");
    let _ = writeln!(
        o,
        "The \"CPU per call\" column of the tables: the benchmark process's CPU time \
         (all its threads, user and system: `CLOCK_PROCESS_CPUTIME_ID`) over the \
         measured window, divided by the calls started in it. Redis's own CPU is not in \
         it. Throughput at low concurrency depends on how fast this virtual machine wakes \
         a sleeping thread, and so does CPU per call at one task, where most of it is \
         the runtime's and the kernel's wake-ups (see the tables). At {top} tasks the \
         workers rarely sleep, so what a hit adds to a raw `GET` there is the client's \
         own work: for (b) it should be near the key and the decode timed alone, {}.\n",
        fmt_ns(client_work)
    );
    let _ = writeln!(o, "| scenario | CPU per call | beyond the raw `GET` (a) |");
    let _ = writeln!(o, "| --- | ---: | ---: |");
    for id in ["a", "b", "g", "c"] {
        let Some(series) = d.r.series(id) else {
            continue;
        };
        let cpu = d.cpu(id, top);
        let _ = writeln!(
            o,
            "| ({id}) {} | {} | {} |",
            series.label,
            fmt_ns(cpu),
            if id == "a" {
                "–".into()
            } else {
                fmt_ns(cpu - base)
            }
        );
    }
    if let Some(series) = d.r.series("f") {
        let _ = writeln!(
            o,
            "| ({}) {} | {} | no round trip |",
            series.id,
            series.label,
            fmt_ns(d.cpu("f", top))
        );
    }
    let _ = writeln!(o);
    o
}

fn codec_table(d: &Derived<'_>) -> String {
    let mut o = String::new();
    let w = &mut o;
    let tiny_hit = d.micro("hit/tiny");
    let tiny_ref = d.micro("refresh/tiny");
    let clone = d.micro("clone/2KB");
    if d.micro("codec_2kb/hit_json").is_nan() {
        return o;
    }
    let _ = writeln!(w, "\n### Codecs side by side, 2 KB search response\n");
    let _ = writeln!(
        w,
        "The same value and path as the `2KB` row above, with the codec forced \
         (`codec = \"bincode\"`, `codec = \"json\"`) or chosen automatically (the \
         default: bincode when the value reads back from it, each store verified by \
         decoding it once more). Derived columns as above.\n"
    );
    let _ = writeln!(
        w,
        "| codec | hit | ≈ decompress + decode | store (`name_refresh`) | ≈ encode (+ check where verified) + compress |"
    );
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: |");
    for (label, hit, store) in [
        (
            "bincode",
            "codec_2kb/hit_bincode",
            "codec_2kb/store_bincode",
        ),
        ("JSON", "codec_2kb/hit_json", "codec_2kb/store_json"),
        ("automatic (bincode, verified)", "hit/2KB", "refresh/2KB"),
        (
            "automatic, `compression = lz4`",
            "codec_2kb/hit_lz4",
            "codec_2kb/store_lz4",
        ),
    ] {
        let (hit, store) = (d.micro(hit), d.micro(store));
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {} | {} |",
            fmt_ns(hit),
            fmt_ns((hit - tiny_hit).max(0.0)),
            fmt_ns(store),
            fmt_ns((store - clone - tiny_ref).max(0.0))
        );
    }
    let rows = [
        (
            "zlib, level 1 (default)",
            "entry_2kb/encode_zlib",
            "entry_2kb/decode_zlib",
        ),
        (
            "zlib, level 3 (`zlib_level(3)`)",
            "entry_2kb/encode_zlib3",
            "entry_2kb/decode_zlib3",
        ),
        ("LZ4", "entry_2kb/encode_lz4", "entry_2kb/decode_lz4"),
    ];
    if rows.iter().any(|(_, e, _)| !d.micro(e).is_nan()) {
        let bytes = |who: &str| {
            d.r.sizes
                .iter()
                .find(|s| s.who == who)
                .map_or("–".into(), |s| s.value_bytes.to_string())
        };
        let _ = writeln!(
            w,
            "\nThe codec alone (`entry_2kb/*`: bincode and compression, no store, no \
             read-back verification), with each compression; bytes are the entry as \
             stored in Redis by the load run.\n"
        );
        let _ = writeln!(
            w,
            "| compression | encode + compress | decompress + decode | entry bytes |"
        );
        let _ = writeln!(w, "| --- | ---: | ---: | ---: |");
        // No load scenario stores level-3 entries: their size is the
        // codec's own, computed here (the header is in both).
        let search = crate::fixtures::load().search;
        let level3 = cached_redis::__private::entry::encode_zlib_at(&search, 3)
            .map_or("–".into(), |e| e.len().to_string());
        for ((label, enc, dec), size) in rows.into_iter().zip([
            bytes("cached-redis"),
            level3,
            bytes("cached-redis, `compression = lz4`"),
        ]) {
            let _ = writeln!(
                w,
                "| {label} | {} | {} | {} |",
                fmt_ns(d.micro(enc)),
                fmt_ns(d.micro(dec)),
                size
            );
        }
    }
    o
}

/// What signed entries (`signing_key`) cost on the 2 KB search response: a
/// hit (decode) and a store (encode), each without and with the MAC,
/// measured by the same criterion run, and how keys are rotated.
fn signing_table(d: &Derived<'_>) -> String {
    let mut o = String::new();
    let w = &mut o;
    let rows = [
        (
            "hit: decode (with: check the MAC, then decode)",
            d.micro("signing/decode_2kb"),
            d.micro("signing/verify_decode_2kb"),
        ),
        (
            "store: encode (with: encode, then append the MAC)",
            d.micro("signing/encode_2kb"),
            d.micro("signing/encode_seal_2kb"),
        ),
    ];
    if rows.iter().all(|(_, off, on)| off.is_nan() && on.is_nan()) {
        return o;
    }
    let _ = writeln!(
        w,
        "\n### Signed entries (`signing_key`), 2 KB search response\n"
    );
    let _ = writeln!(
        w,
        "The entry of the `2KB` row (bincode, default limits), decoded as a hit \
         decodes it and encoded as a store encodes it, without and with the MAC of \
         signed entries: one keyed BLAKE3 pass over the Redis key, header and payload, \
         32 bytes appended to the entry. Both columns come from the same criterion run \
         (the `signing/*` benchmarks); the network round trip, which a hit through \
         Redis adds to both, is not included.\n"
    );
    let _ = writeln!(
        w,
        "| 2 KB entry | without signing | with `signing_key` | added | with ÷ without |"
    );
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: |");
    for (label, off, on) in rows {
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {} | {} |",
            fmt_ns(off),
            fmt_ns(on),
            fmt_ns(on - off),
            fmt_ratio(on / off)
        );
    }
    let p50 = d.p50("b", 1);
    let added = d.micro("signing/verify_decode_2kb") - d.micro("signing/decode_2kb");
    if p50.is_finite() && added.is_finite() {
        let _ = writeln!(
            w,
            "\nAgainst a whole hit through Redis (scenario (b), one task, p50 {}), \
             checking the MAC adds {} ({:.1} % of it).",
            fmt_ns(p50),
            fmt_ns(added),
            added / p50 * 100.0
        );
    }
    let _ = writeln!(
        w,
        "\n**Key rotation** (README, [Signed entries](README.md#signed-entries)): give the \
         new key to `signing_key` and keep the old one in `signing_keys_accepted`, deploy, \
         and drop the old key once every process writes with the new one. Entries are \
         always written with the current key, and a read tries the current key first, so \
         an entry written with it costs what the table shows. During a rotation, an entry \
         still signed with an old key costs one more MAC pass (about the *added* column) \
         for each key tried before its own, and an entry that verifies with no key costs \
         one pass per key before it counts as a miss."
    );
    o
}

/// The reading of this run's numbers, in words.
fn reading(d: &Derived<'_>) -> String {
    let top = d.top();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- **A Redis hit costs one round trip plus the client's own work.** At one \
         task the raw `GET` takes {} (p50) and the cached-redis hit {}. Of the \
         difference, the work that depends on the function, timed alone, is building \
         the key from the 1 KB query (≈ {}) and inflating and decoding the 2 KB value \
         (≈ {}); the rest is plumbing and this machine's run-to-run noise (see *Where \
         the time of a 2 KB hit goes*). A single caller gets {} of the limit's \
         throughput; {}",
        fmt_ns(d.p50("a", 1)),
        fmt_ns(d.p50("b", 1)),
        fmt_ns(d.micro("key/json_1kb")),
        fmt_ns((d.micro("hit/2KB") - d.micro("hit/tiny")).max(0.0)),
        fmt_ratio(d.ratio("b", "a", 1)),
        if d.ratio("b", "a", top) >= 0.95 {
            format!(
                "under load ({top} tasks) the client work overlaps the waiting and the hit reaches {} of it.",
                fmt_ratio(d.ratio("b", "a", top))
            )
        } else {
            format!(
                "under load ({top} tasks) the two cores are shared by that client work, Redis and the loopback, so the hit reaches {} of the raw `GET`'s throughput.",
                fmt_ratio(d.ratio("b", "a", top))
            )
        }
    );
    let (p1, pt) = (d.ratio("b1", "a1", 1), d.ratio("b1", "a1", top));
    let _ = writeln!(
        s,
        "- **The library's own plumbing** (a `u32` key, a one-byte value: no key of any \
         size, nothing to inflate) reaches {} of the raw `GET` at one task and {} at \
         {top} tasks. {}",
        fmt_ratio(p1),
        fmt_ratio(pt),
        if pt >= 0.9 {
            "It is small: what separates the 2 KB hit from the limit is the work that depends on the function, hashing a large argument and inflating the value.".to_owned()
        } else {
            format!(
                "With a single caller it is lost in the round trip; when the two cores are saturated by a `GET` that costs only a few µs of CPU, its 1–2 µs per call show ({}). For the 2 KB function it is still far smaller than hashing the 1 KB argument and inflating the value.",
                fmt_ratio(pt)
            )
        }
    );
    let _ = writeln!(
        s,
        "- **A lone request in an idle service** waits mostly for the machine: on a \
         runtime that parks between calls (one task) the raw `GET` takes {} (p50) and \
         the cached-redis hit {} ({} of the raw throughput), the peer's {}.",
        fmt_ns(d.p50("a", 1)),
        fmt_ns(d.p50("b", 1)),
        fmt_ratio(d.ratio("b", "a", 1)),
        fmt_ns(d.p50("c", 1)),
    );
    let _ = writeln!(
        s,
        "- **Against the `cached` crate**, cached-redis serves {} of the peer's hit \
         throughput at one task and {} at {top} tasks, and each entry takes {} of the \
         peer's value bytes ({} of its `MEMORY USAGE`, which also counts the peer's \
         key: the whole query text, escaped). The peer formats and escapes the query as \
         its key on every call and decodes uncompressed MessagePack; cached-redis \
         hashes a canonical form (equal maps key the same, keys stay about 40 bytes) \
         and inflates on every hit the value it stored compressed.",
        fmt_ratio(d.ratio("b", "c", 1)),
        fmt_ratio(d.ratio("b", "c", top)),
        fmt_ratio(d.bytes_ratio()),
        fmt_ratio(d.memory_ratio()),
    );
    let _ = writeln!(
        s,
        "- **The embedded store** answers a hit in {} at one task ({} calls/s) with no \
         Redis at all: {} the Redis hit's throughput at one task and {} at {top}. \
         It is per process, so it suits a laptop, tests, or one instance; several \
         instances each keep their own copy.",
        fmt_ns(d.p50("e", 1)),
        fmt_int(d.ops("e", 1)),
        fmt_ratio(d.ratio("e", "b", 1)),
        fmt_ratio(d.ratio("e", "b", top)),
    );
    let _ = writeln!(
        s,
        "- **A miss** adds {} to a 1 ms body at one task (lookup, encode, compress, \
         `SET`): worth it for anything that takes milliseconds; for a body of a few \
         microseconds, caching in Redis only adds latency.",
        fmt_ns(d.p50("d", 1) - d.p50("d0", 1)),
    );
    let multi: Vec<_> = d.r.stampede.iter().filter(|s| s.processes > 1).collect();
    if let (Some(nolock), Some(lock)) = (
        multi.iter().filter(|s| !s.lock).map(|s| s.executions).max(),
        multi.iter().filter(|s| s.lock).map(|s| s.executions).max(),
    ) {
        let single =
            d.r.stampede
                .iter()
                .filter(|s| s.processes == 1)
                .map(|s| s.executions)
                .max()
                .unwrap_or(0);
        let _ = writeln!(
            s,
            "- **Stampedes**: within a process at most {single} execution of the body, \
             whatever the number of callers. Across {} processes without `lock`, up to \
             {nolock} executions (one per process); with `lock = true`, at most {lock}, \
             for callers that wait a little longer (they poll for the result).",
            multi[0].processes
        );
    }
    if let Some(inv) = &d.r.invalidate {
        let _ = writeln!(
            s,
            "- **`invalidate_prefix`** removed {} entries in {}; meanwhile another client's \
             p99 went from {} to {} (max {}), where one `KEYS` + `UNLINK` stalls it for up to {}.",
            fmt_int(inv.removed as f64),
            fmt_ns(inv.duration_ms * 1e6),
            fmt_ns(inv.probe_before.p99_ns as f64),
            fmt_ns(inv.probe_during.p99_ns as f64),
            fmt_ns(inv.probe_during.max_ns as f64),
            fmt_ns(inv.probe_naive.max_ns as f64),
        );
    }
    s
}

/// Findings of profiling the hit path (callgrind on the micro benchmarks
/// and on a single-task Redis hit loop). Fixed text: it describes the
/// library as profiled when this benchmark was written, not this run.
const PROFILE_NOTES: &str = include_str!("profile_notes.md");

/// The history table of docs/bench/compile-cost.md, if it can be read.
fn compile_cost_history() -> Option<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench/compile-cost.md");
    let text = std::fs::read_to_string(path).ok()?;
    let start = text.find("<!-- history -->")? + "<!-- history -->".len();
    let end = text.find("<!-- /history -->")?;
    Some(text.get(start..end)?.trim().to_owned())
}
