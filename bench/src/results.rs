//! What a run measures, as data: written to `bench/last-run.json`, passed
//! from child processes to the parent as JSON, and turned into
//! BENCHMARKS.md and the chart by [`crate::report`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hist::Hist;

/// One measurement window of one scenario at one concurrency.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    pub ops_per_sec: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub ops: u64,
    /// The process's CPU time over the window (all threads, user and
    /// system) per call started in it; `None` in runs from before it was
    /// measured.
    #[serde(default)]
    pub cpu_ns_per_op: Option<f64>,
}

impl Sample {
    pub fn from_hist(h: &Hist, seconds: f64) -> Self {
        Self {
            ops_per_sec: h.count() as f64 / seconds,
            p50_ns: h.quantile(0.50),
            p99_ns: h.quantile(0.99),
            max_ns: h.max(),
            ops: h.count(),
            cpu_ns_per_op: None,
        }
    }

    /// With `cpu`, the process's CPU time over the window, spread over its
    /// calls.
    pub fn with_cpu(self, cpu: std::time::Duration) -> Self {
        Self {
            cpu_ns_per_op: (self.ops > 0).then(|| cpu.as_nanos() as f64 / self.ops as f64),
            ..self
        }
    }
}

/// The median of the rounds, field by field (each field's own median).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub ops_per_sec: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// Lowest and highest throughput over the rounds: the spread.
    pub ops_min: f64,
    pub ops_max: f64,
    pub rounds: usize,
    /// The median of the rounds' CPU per call, if every round measured it.
    pub cpu_ns_per_op: Option<f64>,
}

pub fn median_f64(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn median_u64(v: Vec<u64>) -> u64 {
    median_f64(v.into_iter().map(|x| x as f64).collect()).round() as u64
}

pub fn summarize(rounds: &[Sample]) -> Summary {
    let ops: Vec<f64> = rounds.iter().map(|s| s.ops_per_sec).collect();
    Summary {
        ops_per_sec: median_f64(ops.clone()),
        p50_ns: median_u64(rounds.iter().map(|s| s.p50_ns).collect()),
        p99_ns: median_u64(rounds.iter().map(|s| s.p99_ns).collect()),
        ops_min: ops.iter().copied().fold(f64::INFINITY, f64::min),
        ops_max: ops.iter().copied().fold(0.0, f64::max),
        rounds: rounds.len(),
        cpu_ns_per_op: rounds
            .iter()
            .map(|s| s.cpu_ns_per_op)
            .collect::<Option<Vec<f64>>>()
            .filter(|v| !v.is_empty())
            .map(median_f64),
    }
}

/// A scenario measured at several concurrency levels, each over rounds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    /// `a`, `b`, ... as in BENCHMARKS.md.
    pub id: String,
    pub label: String,
    /// Concurrency (tasks or threads) → one sample per round.
    pub points: BTreeMap<usize, Vec<Sample>>,
}

impl Series {
    pub fn new(id: &str, label: &str) -> Self {
        Self {
            id: id.to_owned(),
            label: label.to_owned(),
            points: BTreeMap::new(),
        }
    }
    pub fn push(&mut self, level: usize, s: Sample) {
        self.points.entry(level).or_default().push(s);
    }
    pub fn at(&self, level: usize) -> Option<Summary> {
        self.points.get(&level).map(|r| summarize(r))
    }
}

/// Bytes one entry of the 2 KB response takes in Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EntrySize {
    pub who: String,
    pub key: String,
    pub key_len: usize,
    /// `STRLEN`: the value's bytes.
    pub value_bytes: u64,
    /// `MEMORY USAGE key SAMPLES 0`: key, value and Redis' overhead.
    pub memory_usage: u64,
}

/// Stats counting on versus off, same run: pairs of short back-to-back
/// windows (on then off, or off then on, alternately), one throughput
/// ratio per pair, so that the machine's drift cancels within each pair.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsCost {
    pub store: String,
    /// What is called, e.g. "2 KB hit, 64 tasks".
    pub what: String,
    /// Throughput with stats on ÷ throughput off, one per pair.
    pub ratios: Vec<f64>,
}

impl StatsCost {
    /// The median ratio and its 95 % confidence interval, from order
    /// statistics (the ranks n/2 ∓ 0.98·√n: no assumption about the
    /// distribution of the ratios).
    pub fn median_ci(&self) -> (f64, f64, f64) {
        let mut v = self.ratios.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n == 0 {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        let half = 0.98 * (n as f64).sqrt();
        let lo = ((n as f64 / 2.0 - half).floor() as isize - 1).clamp(0, n as isize - 1) as usize;
        let hi = ((n as f64 / 2.0 + half).ceil() as isize - 1).clamp(0, n as isize - 1) as usize;
        (median_f64(v.clone()), v[lo], v[hi])
    }
}

/// Concurrent callers of a cold key with a slow body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stampede {
    /// 1 (one process) or the number of processes.
    pub processes: usize,
    /// Callers per process.
    pub callers: usize,
    pub lock: bool,
    pub executions: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// One process's part of a multi-process stampede.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StampedeChild {
    pub executions: u64,
    pub latencies_ns: Vec<u64>,
}

/// Another client's latency while something runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Probe {
    pub ops: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Probe {
    pub fn from_hist(h: &Hist) -> Self {
        Self {
            ops: h.count(),
            p50_ns: h.quantile(0.5),
            p99_ns: h.quantile(0.99),
            max_ns: h.max(),
        }
    }
}

/// `invalidate_prefix` over many entries, with a client probing Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Invalidate {
    pub entries: u64,
    pub fill_ms: f64,
    pub duration_ms: f64,
    pub removed: u64,
    pub left_after: u64,
    pub probe_before: Probe,
    pub probe_during: Probe,
    /// For scale: `KEYS` + one `UNLINK` of all of them (what
    /// `invalidate_prefix` avoids), with the same probe.
    pub naive_duration_ms: f64,
    pub probe_naive: Probe,
}

/// What the embedded-store child process measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmbeddedChild {
    pub hits: Series,
    pub stats_cost: Vec<StatsCost>,
    pub misses_during_hits: u64,
}

/// One criterion estimate, read from `target/criterion`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Micro {
    /// `group/bench`.
    pub id: String,
    /// Median, ns, and its 95 % confidence interval.
    pub ns: f64,
    pub lo: f64,
    pub hi: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub redis: String,
    pub rustc: String,
    pub date_utc: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timing {
    pub warmup_ms: u64,
    pub measure_ms: u64,
    pub rounds: usize,
    pub levels: Vec<usize>,
    pub sync_levels: Vec<usize>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub machine: Machine,
    pub timing: Timing,
    /// (a) raw GET, (b) cached-redis hit, (c) peer hit, (d0) the miss body
    /// alone, (d) cached-redis miss, (e) embedded hit.
    pub load: Vec<Series>,
    /// Raw sync GET, sync `#[cached] fn` hit.
    pub sync: Vec<Series>,
    pub json_bytes: usize,
    pub sizes: Vec<EntrySize>,
    /// Body runs of the cached functions during the hit scenarios.
    pub misses_during_hits: u64,
    /// Whether that count starts after the `local` level's warm-up, whose
    /// first call is a miss (false in runs from before it did).
    #[serde(default)]
    pub runs_counted_after_warmup: bool,
    pub stats_cost: Vec<StatsCost>,
    pub stampede: Vec<Stampede>,
    pub invalidate: Option<Invalidate>,
    /// The `local` level's coherence delay with two processes.
    #[serde(default)]
    pub coherence: Option<crate::coherence::Coherence>,
    pub micro: Vec<Micro>,
    /// Hits on TLS and a cluster against plain TCP.
    #[serde(default)]
    pub topologies: Vec<crate::topologies::TopologyRow>,
    /// Seconds: the load binary, and the whole command when known.
    pub load_seconds: f64,
    pub total_seconds: Option<f64>,
    pub micro_seconds: Option<f64>,
}

impl Results {
    pub fn series(&self, id: &str) -> Option<&Series> {
        self.load.iter().chain(&self.sync).find(|s| s.id == id)
    }
    pub fn micro(&self, id: &str) -> Option<&Micro> {
        self.micro.iter().find(|m| m.id == id)
    }

    /// `id`'s throughput ÷ `to`'s at `level`, round by round: each round
    /// ran both side by side, so the machine's drift between rounds
    /// cancels in each ratio. `None` when either was not measured there.
    pub fn paired_ratio(&self, id: &str, to: &str, level: usize) -> Option<Paired> {
        let of = |id: &str| self.series(id).and_then(|s| s.points.get(&level));
        let ratios: Vec<f64> = of(id)?
            .iter()
            .zip(of(to)?)
            .map(|(x, y)| x.ops_per_sec / y.ops_per_sec)
            .collect();
        if ratios.is_empty() {
            return None;
        }
        Some(Paired {
            median: median_f64(ratios.clone()),
            min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// A throughput ratio over paired rounds: its median and its spread.
#[derive(Debug, Clone, Copy)]
pub struct Paired {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}
