//! The load benchmark: cached-redis against the physical limit (a raw
//! `GET` through the `redis` crate) and against the best peer (the `cached`
//! crate's `AsyncRedisCache`), in one run, against a real `redis-server`,
//! and then the report.
//!
//! ```text
//! load --redis-url redis://127.0.0.1:PORT/0 [--quick] [--out ../BENCHMARKS.md]
//!      [--chart ../docs/bench/load.svg] [--json last-run.json]
//!      [--criterion target/criterion] [--started-at UNIX_SECONDS]
//! ```
//!
//! Normally run by `scripts/bench.sh`, which starts a throwaway server on a
//! free port first. The server is flushed: never point this at a Redis that
//! holds anything (port 6379 is refused).
//!
//! cached-redis is configured once per process, so what needs another
//! configuration runs in a child process of this binary and hands back
//! JSON on stdout: `--scenario embedded` (the embedded store: no Redis
//! URL) and `--scenario stampede-child` (one of the processes of the
//! multi-process stampede).
//!
//! `load --scenario report --json last-run.json --out ... --chart ...`
//! writes the report again from a saved run without measuring anything.
//!
//! For profiling one scenario alone (e.g. under `perf record` or
//! `valgrind --tool=callgrind`): `load --scenario solo --only b --level 64
//! --seconds 10 --redis-url ...` (`--only` one of a, b, c, d, d0, e, f, f0, g, h, a1, b1;
//! `e` needs no URL).

use std::error::Error;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cached::macros::concurrent_cached;
use cached_redis::cached;
use cached_redis_bench::coherence::{self, Coherence};
use cached_redis_bench::fixtures::{self, Fixtures, SearchResponse, UserDoc};
use cached_redis_bench::hist::Hist;
use cached_redis_bench::report;
use cached_redis_bench::results::{
    EmbeddedChild, EntrySize, Invalidate, Machine, Probe, Results, Sample, Series, Stampede,
    StampedeChild, StatsCost, Timing,
};
use redis::aio::MultiplexedConnection;
use serde_json::Value;

type BoxError = Box<dyn Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

fn fx() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(fixtures::load)
}

/// How many distinct queries (bn) and (cn) take in turn.
const DISTINCT_QUERIES: u64 = 1_000;

/// The 1 KB query in [`DISTINCT_QUERIES`] variants that differ in one
/// field (`from`, the result offset, as paging does; never the fixture's
/// own 0, whose entries the other scenarios read): a service's stream
/// of arguments rather than one argument repeated. Far more than a
/// thread's front of recent keys (4), so each call's key comes from the
/// key memo's shared table.
fn distinct_query(seq: u64) -> &'static Value {
    static Q: OnceLock<Vec<Value>> = OnceLock::new();
    let all = Q.get_or_init(|| {
        (0..DISTINCT_QUERIES)
            .map(|i| {
                let mut q = fx().query.clone();
                q["from"] = Value::from((i + 1) * 10);
                q
            })
            .collect()
    });
    &all[(seq % DISTINCT_QUERIES) as usize]
}

/// The error type of the benchmarked functions (never produced).
#[derive(Debug, Clone)]
pub struct BenchError(String);

// ---------------------------------------------------------------------------
// The cached functions. Each body counts its runs, so that a "hit" scenario
// that silently missed would show.

static SEARCH_RUNS: AtomicU64 = AtomicU64::new(0);
static STAMPEDE_RUNS: AtomicU64 = AtomicU64::new(0);

/// (b), (e): the README's example, returning the 2 KB search response.
#[cached(ttl = 3600, prefix = "bench_search")]
async fn search(query: &Value) -> Result<SearchResponse, BenchError> {
    let _ = query;
    SEARCH_RUNS.fetch_add(1, Relaxed);
    Ok(fx().search.clone())
}

/// (g): the same function in a cache whose entries are LZ4-compressed
/// (`Config::builder().compression(Compression::Lz4)`, named `lz4`).
#[cached(ttl = 3600, prefix = "bench_search_lz4", cache = "lz4")]
async fn search_lz4(query: &Value) -> Result<SearchResponse, BenchError> {
    let _ = query;
    SEARCH_RUNS.fetch_add(1, Relaxed);
    Ok(fx().search.clone())
}

/// (f): the same function with a `local` level in front of Redis.
#[cached(ttl = 3600, prefix = "bench_search_local", local = 1000)]
async fn search_local(query: &Value) -> Result<SearchResponse, BenchError> {
    let _ = query;
    SEARCH_RUNS.fetch_add(1, Relaxed);
    Ok(fx().search.clone())
}

/// (b1): the smallest hit there is, a `u32` key and a one-byte value: what
/// the library's plumbing costs on top of a `GET`, key and codec aside.
#[cached(ttl = 3600, prefix = "bench_tiny")]
async fn tiny(k: u32) -> Result<u8, BenchError> {
    let _ = k;
    SEARCH_RUNS.fetch_add(1, Relaxed);
    Ok(7)
}

/// The cheapest hit there is, where counting weighs most (stats cost).
#[cached(ttl = 3600, prefix = "bench_tiny_sync")]
fn tiny_sync(k: u32) -> Result<u8, BenchError> {
    let _ = k;
    SEARCH_RUNS.fetch_add(1, Relaxed);
    Ok(7)
}

/// The sync path's hit.
#[cached(ttl = 3600, prefix = "bench_search_sync")]
fn search_sync(query: &Value) -> Result<SearchResponse, BenchError> {
    let _ = query;
    SEARCH_RUNS.fetch_add(1, Relaxed);
    Ok(fx().search.clone())
}

/// (d0): the body of (d) alone: 1 ms of waiting, as an I/O-bound backend
/// does, then the response.
async fn miss_body() -> Result<SearchResponse, BenchError> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(fx().search.clone())
}

/// (d): every call a new key (`n` grows), so every call misses, runs the
/// body, encodes, compresses and stores. Short TTL: the entries go away.
#[cached(ttl = 5, prefix = "bench_miss")]
async fn search_miss(query: &Value, n: u64) -> Result<SearchResponse, BenchError> {
    let _ = (query, n);
    miss_body().await
}

static PEER_URL: OnceLock<String> = OnceLock::new();
static PEER_RUNS: AtomicU64 = AtomicU64::new(0);

/// (c): the same function cached by the `cached` crate (4.x: `#[io_cached]`
/// is called `#[concurrent_cached]` since 1.0) in its async Redis store, on
/// a multiplexed connection. Its key is the query's JSON text.
#[concurrent_cached(
    ty = "cached::AsyncRedisCache<String, SearchResponse>",
    create = r##"{
        cached::AsyncRedisCache::builder("bench_peer_search")
            .ttl(std::time::Duration::from_secs(3600))
            .connection_string(PEER_URL.get().expect("peer url set"))
            .build()
            .await
            .expect("peer cache")
    }"##,
    key = "String",
    convert = r##"{ query.to_string() }"##,
    map_error = r##"|e| BenchError(format!("{e:?}"))"##
)]
async fn peer_search(query: &Value) -> Result<SearchResponse, BenchError> {
    let _ = query;
    PEER_RUNS.fetch_add(1, Relaxed);
    Ok(fx().search.clone())
}

/// (h): the same function in the `cached` crate's in-process store (its
/// `#[cached]`, a bounded LRU behind a lock), keyed like (c) by the query's
/// JSON text: the peer's counterpart of the `local` level.
#[cached::macros::cached(
    max_size = 1000,
    key = "String",
    convert = r##"{ query.to_string() }"##
)]
async fn peer_local_search(query: &Value) -> Result<SearchResponse, BenchError> {
    let _ = query;
    PEER_RUNS.fetch_add(1, Relaxed);
    Ok(fx().search.clone())
}

/// (f0): what any in-process cache of this function must do at least on a
/// hit, with no key and no lookup: hand the caller its own copy of the
/// value (which the caller then drops, as after every hit).
async fn clone_floor() -> SearchResponse {
    std::hint::black_box(&fx().search).clone()
}

const STAMPEDE_BODY: Duration = Duration::from_millis(50);

#[cached(ttl = 600, prefix = "bench_stampede")]
async fn stampede_plain(run: u64) -> Result<UserDoc, BenchError> {
    let _ = run;
    STAMPEDE_RUNS.fetch_add(1, Relaxed);
    tokio::time::sleep(STAMPEDE_BODY).await;
    Ok(fx().user.clone())
}

#[cached(ttl = 600, prefix = "bench_stampede_lock", lock = true)]
async fn stampede_locked(run: u64) -> Result<UserDoc, BenchError> {
    let _ = run;
    STAMPEDE_RUNS.fetch_add(1, Relaxed);
    tokio::time::sleep(STAMPEDE_BODY).await;
    Ok(fx().user.clone())
}

async fn stampede_call(run: u64, lock: bool) {
    let r = if lock {
        stampede_locked(run).await
    } else {
        stampede_plain(run).await
    };
    assert!(r.is_ok());
}

/// The entries `invalidate_prefix` drops: their keys come from the
/// function's own `_cache_key` companion, so they have the real shape.
#[cached(ttl = 600, prefix = "bench_inval")]
async fn inval_entry(i: u64) -> Result<UserDoc, BenchError> {
    let _ = i;
    Ok(fx().user.clone())
}

// ---------------------------------------------------------------------------
// Arguments and timing.

#[derive(Debug, Default)]
struct Args {
    scenario: String,
    redis_url: Option<String>,
    quick: bool,
    out: Option<PathBuf>,
    chart: Option<PathBuf>,
    json: Option<PathBuf>,
    criterion: Option<PathBuf>,
    started_at: Option<f64>,
    micro_seconds: Option<f64>,
    // stampede-child
    run: u64,
    callers: usize,
    lock: bool,
    start_at_ms: u64,
    // solo
    only: String,
    level: usize,
    seconds: f64,
}

impl Args {
    fn parse() -> Res<Args> {
        let mut a = Args {
            scenario: "all".into(),
            ..Args::default()
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--scenario" => a.scenario = value()?,
                "--redis-url" => a.redis_url = Some(value()?),
                "--quick" => a.quick = true,
                "--out" => a.out = Some(value()?.into()),
                "--chart" => a.chart = Some(value()?.into()),
                "--json" => a.json = Some(value()?.into()),
                "--criterion" => a.criterion = Some(value()?.into()),
                "--started-at" => a.started_at = Some(value()?.parse()?),
                "--micro-seconds" => a.micro_seconds = Some(value()?.parse()?),
                "--run" => a.run = value()?.parse()?,
                "--callers" => a.callers = value()?.parse()?,
                "--lock" => a.lock = value()? == "1",
                "--start-at-ms" => a.start_at_ms = value()?.parse()?,
                "--only" => a.only = value()?,
                "--level" => a.level = value()?.parse()?,
                "--seconds" => a.seconds = value()?.parse()?,
                "-h" | "--help" => {
                    println!(
                        "{}",
                        include_str!("load.rs")
                            .lines()
                            .take(12)
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (see --help)").into()),
            }
        }
        Ok(a)
    }

    fn timing(&self) -> Timing {
        if self.quick {
            Timing {
                warmup_ms: 50,
                measure_ms: 250,
                rounds: 1,
                levels: vec![1, 64],
                sync_levels: vec![1, 8],
            }
        } else {
            Timing {
                warmup_ms: 250,
                measure_ms: 1000,
                rounds: 5,
                levels: vec![1, 4, 16, 64],
                sync_levels: vec![1, 8],
            }
        }
    }

    /// The arguments a child process needs to time things the same way.
    fn child_flags(&self) -> Vec<String> {
        if self.quick {
            vec!["--quick".into()]
        } else {
            vec![]
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    warmup: Duration,
    measure: Duration,
}

impl Window {
    fn of(t: &Timing) -> Self {
        Self {
            warmup: Duration::from_millis(t.warmup_ms),
            measure: Duration::from_millis(t.measure_ms),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // As many workers as cores: what `#[tokio::main]` gives a service.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------------------
// Drivers: `conc` tasks (or threads) each calling `op` in a loop; every
// call's latency is recorded once the warm-up is over; throughput counts
// the calls that started inside the measured window.

/// Async: `conc` tasks on the current runtime. With several, each task
/// yields after each call (outside the timed part): calls that complete
/// without waiting (embedded and `local` hits) then still interleave
/// between tasks as a service's requests would, and the runtime's workers
/// never park, so what is measured is the work of a call and not how fast
/// the machine wakes a sleeping thread.
///
/// A lone task does not yield: it has nothing to interleave with, and its
/// yield only handed it to the runtime's other worker, which tokio wakes to
/// take queued work. That was a context switch per call (`perf stat`: about
/// one per `local` hit, against a few hundred in a whole run without the
/// yield), which a lone caller of an in-process hit does not otherwise pay.
/// Between round trips it parks, as a lone request in an idle service does.
async fn drive<F, Fut>(conc: usize, w: Window, op: F) -> Sample
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let from = start + w.warmup;
    let end = from + w.measure;
    let yields = conc > 1;
    let mut tasks = Vec::with_capacity(conc);
    for t in 0..conc {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Hist::new();
            let mut seq = (t as u64) << 40;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                op(seq).await;
                seq += 1;
                if t0 >= from {
                    h.record(t0.elapsed());
                }
                if yields {
                    tokio::task::yield_now().await;
                }
            }
            h
        }));
    }
    // The process's CPU over the measured window, read from this future
    // (on the thread that blocks on the runtime, not on a worker).
    tokio::time::sleep_until(from.into()).await;
    let cpu_from = process_cpu();
    tokio::time::sleep_until(end.into()).await;
    let cpu = process_cpu().saturating_sub(cpu_from);
    let mut all = Hist::new();
    for t in tasks {
        all.merge(&t.await.expect("load task"));
    }
    Sample::from_hist(&all, w.measure.as_secs_f64()).with_cpu(cpu)
}

/// Sync: `threads` OS threads, each with its own state from `make` (e.g.
/// its own connection).
fn drive_sync<M, F>(threads: usize, w: Window, make: M) -> Sample
where
    M: Fn() -> F + Sync,
    F: FnMut(u64),
{
    let start = Instant::now();
    let from = start + w.warmup;
    let end = from + w.measure;
    let mut cpu = Duration::ZERO;
    let hists: Vec<Hist> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let make = &make;
                s.spawn(move || {
                    let mut op = make();
                    let mut h = Hist::new();
                    let mut seq = (t as u64) << 40;
                    loop {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        op(seq);
                        seq += 1;
                        if t0 >= from {
                            h.record(t0.elapsed());
                        }
                    }
                    h
                })
            })
            .collect();
        std::thread::sleep(from.saturating_duration_since(Instant::now()));
        let cpu_from = process_cpu();
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        cpu = process_cpu().saturating_sub(cpu_from);
        handles
            .into_iter()
            .map(|h| h.join().expect("load thread"))
            .collect()
    });
    let mut all = Hist::new();
    for h in &hists {
        all.merge(h);
    }
    Sample::from_hist(&all, w.measure.as_secs_f64()).with_cpu(cpu)
}

/// CPU time this process has used so far, all threads, user and system
/// (`CLOCK_PROCESS_CPUTIME_ID`): divided by the calls of a window, what a
/// call costs the client, whatever the machine's wake-up latency.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration;
    // the clock id is a constant every Linux kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn show(id: &str, level: usize, unit: &str, s: &Sample) {
    eprintln!(
        "  [{id:>2}] {level:>3} {unit}: {:>10.0} ops/s  p50 {:>9}  p99 {:>9}  CPU {:>9}/call",
        s.ops_per_sec,
        report::fmt_ns(s.p50_ns as f64),
        report::fmt_ns(s.p99_ns as f64),
        report::fmt_ns(s.cpu_ns_per_op.unwrap_or(f64::NAN))
    );
}

// ---------------------------------------------------------------------------
// The parent process.

fn main() {
    let code = match Args::parse().and_then(|args| match args.scenario.as_str() {
        "all" => run_all(&args),
        "embedded" => child_embedded(&args),
        "stampede-child" => child_stampede(&args),
        "coherence-child" => child_coherence(&args),
        "coherence" => solo_coherence(&args),
        "solo" => solo(&args),
        "topology-child" => cached_redis_bench::topologies::child(
            &args.only,
            args.redis_url.as_deref().unwrap_or_default(),
            args.quick,
        )
        .map_err(|e| e.to_string().into()),
        "report" => rerender(&args),
        other => Err(format!("unknown scenario {other:?}").into()),
    }) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("load: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn redis_config(url: &str) -> Res<cached_redis::Config> {
    Ok(cached_redis::Config::builder().redis_url(url).build()?)
}

/// The default cache on `url`, and the cache `lz4` of (g) beside it.
fn init_redis(url: &str) -> Res<()> {
    cached_redis::init(redis_config(url)?)?;
    let lz4 = cached_redis::Config::builder()
        .redis_url(url)
        .compression(cached_redis::Compression::Lz4)
        .build()?;
    cached_redis::init_named("lz4", lz4)?;
    Ok(())
}

/// The scenarios of the 2 KB hit table, each run once per round and level:
/// (a), (b), (g), (c), (f), (h), (bn), (cn), (f0).
const SCENARIOS: usize = 9;

fn run_all(args: &Args) -> Res<()> {
    let began = Instant::now();
    let url = args
        .redis_url
        .clone()
        .ok_or("--redis-url is required (scripts/bench.sh starts a throwaway server)")?;
    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
    if info.addr().to_string().ends_with(":6379") {
        return Err("refusing port 6379: the benchmark flushes its server; use a throwaway one (scripts/bench.sh)".into());
    }
    let timing = args.timing();
    let w = Window::of(&timing);
    let _ = fx();
    PEER_URL.set(url.clone()).expect("once");
    init_redis(&url)?;
    let rt = runtime();
    let client = redis::Client::open(url.as_str())?;
    let mut results = Results {
        timing: timing.clone(),
        ..Results::default()
    };

    let setup = rt.block_on(setup(&client))?;
    results.machine = machine(&setup.redis_version);
    results.json_bytes = serde_json::to_vec(&fx().search)?.len();
    results.sizes = setup.sizes.clone();

    eprintln!("load: async hits, 2 KB response, {} rounds", timing.rounds);
    // The level goes live once its invalidation channel is subscribed; its
    // first call is a miss, so it comes before the body runs are counted.
    rt.block_on(local_warm());
    let runs_before = SEARCH_RUNS.load(Relaxed) + PEER_RUNS.load(Relaxed);
    let mut a = Series::new("a", "raw GET (redis crate): the limit");
    let mut b = Series::new("b", "cached-redis hit");
    let mut g = Series::new("g", "cached-redis hit, `compression = lz4`");
    let mut c = Series::new("c", "cached crate hit (peer)");
    let mut f = Series::new("f", "cached-redis `local` hit (in-process level)");
    let mut h = Series::new("h", "cached crate in-process hit (peer's `#[cached]`)");
    let mut f0 = Series::new("f0", "the floor of an in-process hit: a clone of the value");
    let mut bn = Series::new("bn", "cached-redis hit, 1,000 distinct queries in turn");
    let mut cn = Series::new(
        "cn",
        "cached crate hit (peer), 1,000 distinct queries in turn",
    );
    for round in 0..timing.rounds {
        eprintln!(" round {}", round + 1);
        for &level in &timing.levels {
            // Each round starts the level with the next scenario, so that
            // none always runs first after a change of level (or right
            // after another one's connections warmed up).
            for scenario in (0..SCENARIOS).map(|i| (i + round) % SCENARIOS) {
                match scenario {
                    0 => {
                        let s = rt.block_on(raw_get(&setup, level, w));
                        show("a", level, "tasks", &s);
                        a.push(level, s);
                    }
                    1 => {
                        let s = rt.block_on(drive(level, w, |_| async {
                            assert!(search(&fx().query).await.is_ok());
                        }));
                        show("b", level, "tasks", &s);
                        b.push(level, s);
                    }
                    2 => {
                        let s = rt.block_on(drive(level, w, |_| async {
                            assert!(search_lz4(&fx().query).await.is_ok());
                        }));
                        show("g", level, "tasks", &s);
                        g.push(level, s);
                    }
                    3 => {
                        let s = rt.block_on(drive(level, w, |_| async {
                            assert!(peer_search(&fx().query).await.is_ok());
                        }));
                        show("c", level, "tasks", &s);
                        c.push(level, s);
                    }
                    4 => {
                        let s = rt.block_on(drive(level, w, |_| async {
                            assert!(search_local(&fx().query).await.is_ok());
                        }));
                        show("f", level, "tasks", &s);
                        f.push(level, s);
                    }
                    5 => {
                        let s = rt.block_on(drive(level, w, |_| async {
                            assert!(peer_local_search(&fx().query).await.is_ok());
                        }));
                        show("h", level, "tasks", &s);
                        h.push(level, s);
                    }
                    6 => {
                        let s = rt.block_on(drive(level, w, |seq| async move {
                            assert!(search(distinct_query(seq)).await.is_ok());
                        }));
                        show("bn", level, "tasks", &s);
                        bn.push(level, s);
                    }
                    7 => {
                        let s = rt.block_on(drive(level, w, |seq| async move {
                            assert!(peer_search(distinct_query(seq)).await.is_ok());
                        }));
                        show("cn", level, "tasks", &s);
                        cn.push(level, s);
                    }
                    _ => {
                        let s = rt.block_on(drive(level, w, |_| async {
                            drop(clone_floor().await);
                        }));
                        show("f0", level, "tasks", &s);
                        f0.push(level, s);
                    }
                }
            }
        }
    }
    eprintln!("load: the smallest hit (u32 key, 1-byte value)");
    let mut a1 = Series::new("a1", "raw GET of a 1-byte entry");
    let mut b1 = Series::new("b1", "cached-redis hit, u32 key, 1-byte value");
    let ends = [timing.levels[0], *timing.levels.last().expect("levels")];
    for round in 0..timing.rounds {
        eprintln!(" round {}", round + 1);
        for level in ends {
            let s = rt.block_on(raw_get_of(
                &setup,
                &setup.tiny_key,
                setup.tiny_len,
                level,
                w,
            ));
            show("a1", level, "tasks", &s);
            a1.push(level, s);
            let s = rt.block_on(drive(level, w, |_| async {
                assert!(tiny(1).await.is_ok());
            }));
            show("b1", level, "tasks", &s);
            b1.push(level, s);
        }
    }
    let runs_after = SEARCH_RUNS.load(Relaxed) + PEER_RUNS.load(Relaxed);
    results.misses_during_hits = runs_after - runs_before;
    results.runs_counted_after_warmup = true;

    eprintln!("load: misses with a 1 ms body");
    let mut d0 = Series::new("d0", "the 1 ms body alone");
    let mut d = Series::new("d", "cached-redis miss (1 ms body, new key each call)");
    let counter = Arc::new(AtomicU64::new(0));
    for round in 0..timing.rounds {
        eprintln!(" round {}", round + 1);
        for &level in &timing.levels {
            let s = rt.block_on(drive(level, w, |_| async {
                assert!(miss_body().await.is_ok());
            }));
            show("d0", level, "tasks", &s);
            d0.push(level, s);
            let counter = counter.clone();
            let s = rt.block_on(drive(level, w, move |_| {
                let n = counter.fetch_add(1, Relaxed);
                async move {
                    assert!(search_miss(&fx().query, n).await.is_ok());
                }
            }));
            show("d", level, "tasks", &s);
            d.push(level, s);
        }
    }

    eprintln!("load: the embedded store (child process)");
    let embedded: EmbeddedChild = child_json(&["--scenario", "embedded"], args)?;
    results.misses_during_hits += embedded.misses_during_hits;
    results.load = vec![
        a,
        b,
        c,
        d0,
        d,
        embedded.hits.clone(),
        a1,
        b1,
        f,
        g,
        h,
        f0,
        bn,
        cn,
    ];

    eprintln!("load: sync path");
    results.sync = sync_path(&url, &setup, &timing, w)?;

    eprintln!("load: stats on vs off");
    results.stats_cost = embedded.stats_cost.clone();
    let pairs = if args.quick { 4 } else { 25 };
    let short = Window {
        warmup: Duration::from_millis(20),
        measure: Duration::from_millis(150),
    };
    for level in [1, 64] {
        let what = format!(
            "2 KB hit, {level} task{}",
            if level == 1 { "" } else { "s" }
        );
        results.stats_cost.push(rt.block_on(stats_cost(
            "Redis",
            &what,
            level,
            short,
            pairs,
            |_| async {
                assert!(search(&fx().query).await.is_ok());
            },
        )));
    }
    results.stats_cost.push(rt.block_on(stats_cost(
        "Redis",
        "1-byte hit, u32 key, 1 task",
        1,
        short,
        pairs,
        |_| async {
            assert!(tiny(1).await.is_ok());
        },
    )));

    eprintln!("load: stampede");
    results.stampede = stampedes(&rt, args, &url)?;

    eprintln!("load: invalidate_prefix");
    let entries = if args.quick { 20_000 } else { 200_000 };
    results.invalidate = Some(rt.block_on(invalidate(&client, &url, entries))?);

    eprintln!("load: topologies (child processes)");
    results.topologies =
        cached_redis_bench::topologies::measure(args.quick).map_err(|e| e.to_string())?;
    eprintln!("load: coherence of the local level (2 processes)");
    let changes = if args.quick { 50 } else { 300 };
    results.coherence = Some(rt.block_on(coherence(args, &url, changes))?);

    results.load_seconds = began.elapsed().as_secs_f64();
    results.micro_seconds = args.micro_seconds;
    if let Some(t) = args.started_at {
        results.total_seconds = Some(unix_now() - t);
    }
    if let Some(dir) = &args.criterion {
        results.micro = report::read_criterion(dir);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    write_report(args, &results)
}

/// Writes the report again from a saved run (`--json`), measuring nothing.
fn rerender(args: &Args) -> Res<()> {
    let path = args.json.as_ref().ok_or("--json RUN.json is required")?;
    let results: Results = serde_json::from_slice(&std::fs::read(path)?)?;
    write_report(args, &results)
}

fn write_report(args: &Args, results: &Results) -> Res<()> {
    let results = results.clone();
    println!("{}", report::console(&results));
    if let Some(path) = &args.chart {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        report::chart(&results, path)?;
    }
    if let Some(path) = &args.out {
        let chart_rel = args
            .chart
            .as_ref()
            .map(|c| report::relative(c, path))
            .unwrap_or_default();
        std::fs::write(path, report::markdown(&results, &chart_rel))?;
        eprintln!("load: wrote {}", path.display());
    }
    Ok(())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Runs this binary as a child with `extra` arguments and reads its JSON.
fn child_json<T: serde::de::DeserializeOwned>(extra: &[&str], args: &Args) -> Res<T> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(extra)
        .args(args.child_flags())
        // The child configures itself; nothing may leak in.
        .env_remove("CACHED_REDIS_URL")
        .env_remove("REDIS_URL")
        .stderr(Stdio::inherit());
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("child {extra:?} failed: {}", out.status).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

struct Setup {
    conn: MultiplexedConnection,
    /// The entry (b) reads, which (a) reads raw.
    key: String,
    /// The entry (b1) reads, which (a1) reads raw.
    tiny_key: String,
    tiny_len: usize,
    sync_key: String,
    entry_len: usize,
    sizes: Vec<EntrySize>,
    redis_version: String,
}

async fn setup(client: &redis::Client) -> Res<Setup> {
    // The limit: a multiplexed connection without a per-request timeout.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    let redis_version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();

    // One miss each stores the entries the hits read.
    let q = &fx().query;
    let expect = &fx().search;
    assert_eq!(&search(q).await.map_err(|e| e.0)?, expect);
    assert_eq!(&search_lz4(q).await.map_err(|e| e.0)?, expect);
    assert_eq!(&peer_search(q).await.map_err(|e| e.0)?, expect);
    assert_eq!(&peer_local_search(q).await.map_err(|e| e.0)?, expect);
    assert_eq!(&search_sync(q).map_err(|e| e.0)?, expect);
    // And now they are hits, answering the same value.
    let runs = SEARCH_RUNS.load(Relaxed) + PEER_RUNS.load(Relaxed);
    assert_eq!(&search(q).await.map_err(|e| e.0)?, expect);
    assert_eq!(&search_lz4(q).await.map_err(|e| e.0)?, expect);
    assert_eq!(&peer_search(q).await.map_err(|e| e.0)?, expect);
    assert_eq!(&peer_local_search(q).await.map_err(|e| e.0)?, expect);
    assert_eq!(&search_sync(q).map_err(|e| e.0)?, expect);
    assert_eq!(tiny(1).await.map_err(|e| e.0)?, 7);
    let runs = runs + 1;
    assert_eq!(tiny(1).await.map_err(|e| e.0)?, 7);
    assert_eq!(runs, SEARCH_RUNS.load(Relaxed) + PEER_RUNS.load(Relaxed));
    // The entries (bn) and (cn) read: one miss each, then one hit each.
    for round in 0..2 {
        let runs = SEARCH_RUNS.load(Relaxed) + PEER_RUNS.load(Relaxed);
        for i in 0..DISTINCT_QUERIES {
            assert_eq!(&search(distinct_query(i)).await.map_err(|e| e.0)?, expect);
            assert_eq!(
                &peer_search(distinct_query(i)).await.map_err(|e| e.0)?,
                expect
            );
        }
        let ran = SEARCH_RUNS.load(Relaxed) + PEER_RUNS.load(Relaxed) - runs;
        assert_eq!(ran, if round == 0 { 2 * DISTINCT_QUERIES } else { 0 });
    }

    let key = search_cache_key(q)?;
    let lz4_key = search_lz4_cache_key(q)?;
    let tiny_key = tiny_cache_key(1)?;
    let sync_key = search_sync_cache_key(q)?;
    let peer_key: String = {
        let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg("*bench_peer_search*")
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await?;
        keys.into_iter()
            .next()
            .ok_or("the peer's entry is not in Redis")?
    };
    let entry: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
    let tiny_entry: Vec<u8> = redis::cmd("GET")
        .arg(&tiny_key)
        .query_async(&mut conn)
        .await?;
    let mut sizes = Vec::new();
    for (who, k) in [
        ("cached-redis", &key),
        ("cached (peer)", &peer_key),
        ("cached-redis, `compression = lz4`", &lz4_key),
    ] {
        let value_bytes: u64 = redis::cmd("STRLEN").arg(k).query_async(&mut conn).await?;
        let memory_usage: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(k)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await?;
        sizes.push(EntrySize {
            who: who.into(),
            key: k.clone(),
            key_len: k.len(),
            value_bytes,
            memory_usage,
        });
    }
    Ok(Setup {
        conn,
        key,
        tiny_key,
        tiny_len: tiny_entry.len(),
        sync_key,
        entry_len: entry.len(),
        sizes,
        redis_version,
    })
}

/// (a): `GET` of the very entry (b) reads, bytes returned, nothing decoded.
async fn raw_get(setup: &Setup, level: usize, w: Window) -> Sample {
    raw_get_of(setup, &setup.key, setup.entry_len, level, w).await
}

/// `GET` of `key` (an entry of `len` bytes) from `level` tasks.
async fn raw_get_of(setup: &Setup, key: &str, len: usize, level: usize, w: Window) -> Sample {
    let conn = setup.conn.clone();
    let key: Arc<str> = key.into();
    drive(level, w, move |_| {
        let mut conn = conn.clone();
        let key = key.clone();
        async move {
            let bytes: Vec<u8> = redis::cmd("GET")
                .arg(&*key)
                .query_async(&mut conn)
                .await
                .expect("GET");
            debug_assert_eq!(bytes.len(), len);
            std::hint::black_box(bytes);
        }
    })
    .await
}

fn sync_path(url: &str, setup: &Setup, timing: &Timing, w: Window) -> Res<Vec<Series>> {
    let client = redis::Client::open(url)?;
    let mut raw = Series::new("sa", "raw sync GET (redis crate)");
    let mut hit = Series::new("sb", "sync #[cached] fn hit");
    let runs = SEARCH_RUNS.load(Relaxed);
    for round in 0..timing.rounds {
        eprintln!(" round {}", round + 1);
        for &threads in &timing.sync_levels {
            let s = drive_sync(threads, w, || {
                let mut conn = client.get_connection().expect("connection");
                let key = setup.sync_key.clone();
                move |_| {
                    let bytes: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut conn).expect("GET");
                    std::hint::black_box(bytes);
                }
            });
            show("sa", threads, "threads", &s);
            raw.push(threads, s);
            let s = drive_sync(threads, w, || |_| assert!(search_sync(&fx().query).is_ok()));
            show("sb", threads, "threads", &s);
            hit.push(threads, s);
        }
    }
    if SEARCH_RUNS.load(Relaxed) != runs {
        return Err("a sync hit ran the body".into());
    }
    Ok(vec![raw, hit])
}

/// Stats on and off in pairs of short windows (on-off, then off-on, ...),
/// one throughput ratio per pair.
async fn stats_cost<F, Fut>(
    store: &str,
    what: &str,
    level: usize,
    w: Window,
    pairs: usize,
    op: F,
) -> StatsCost
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut ratios = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let mut on = 0.0;
        let mut off = 0.0;
        for enabled in if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            cached_redis::__private::set_stats_enabled(enabled);
            let s = drive(level, w, op.clone()).await;
            *(if enabled { &mut on } else { &mut off }) = s.ops_per_sec;
        }
        ratios.push(on / off);
    }
    stats_cost_done(store, what, ratios)
}

/// Turns counting back on and summarizes the on/off ratios of one call.
fn stats_cost_done(store: &str, what: &str, ratios: Vec<f64>) -> StatsCost {
    cached_redis::__private::set_stats_enabled(true);
    let cost = StatsCost {
        store: store.into(),
        what: what.into(),
        ratios,
    };
    let (m, lo, hi) = cost.median_ci();
    eprintln!("  [{store} stats] {what}: on/off {m:.4} (95 % interval {lo:.4} – {hi:.4})");
    cost
}

/// [`stats_cost`] for a sync call on the calling thread: blocks of `n`
/// calls instead of timed windows.
fn stats_cost_sync(store: &str, what: &str, pairs: usize, n: usize, op: impl Fn()) -> StatsCost {
    let time = |enabled: bool| {
        cached_redis::__private::set_stats_enabled(enabled);
        let t = Instant::now();
        for _ in 0..n {
            op();
        }
        t.elapsed().as_secs_f64()
    };
    time(true);
    let mut ratios = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let (on, off) = if i % 2 == 0 {
            let on = time(true);
            (on, time(false))
        } else {
            let off = time(false);
            (time(true), off)
        };
        ratios.push(off / on);
    }
    stats_cost_done(store, what, ratios)
}

// ---------------------------------------------------------------------------
// Stampede: many callers of one cold key whose body takes 50 ms.

static RUN_IDS: AtomicU64 = AtomicU64::new(1);

fn fresh_run() -> u64 {
    // Distinct from any earlier run's keys even if the server was not
    // flushed: wall-clock microseconds plus a counter.
    (unix_now() * 1e6) as u64 + RUN_IDS.fetch_add(1, Relaxed)
}

/// `n` tasks released at once on `run`'s cold key; their latencies.
async fn stampede_burst(run: u64, n: usize, lock: bool) -> Vec<u64> {
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.wait().await;
                let t0 = Instant::now();
                stampede_call(run, lock).await;
                t0.elapsed().as_nanos() as u64
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("stampede task"));
    }
    out
}

fn stampede_row(
    processes: usize,
    callers: usize,
    lock: bool,
    executions: u64,
    lat: &[u64],
) -> Stampede {
    let mut h = Hist::new();
    for &ns in lat {
        h.record_ns(ns);
    }
    Stampede {
        processes,
        callers,
        lock,
        executions,
        p50_ns: h.quantile(0.5),
        p99_ns: h.quantile(0.99),
        max_ns: h.max(),
    }
}

const PROCESSES: usize = 4;

fn stampedes(rt: &tokio::runtime::Runtime, args: &Args, url: &str) -> Res<Vec<Stampede>> {
    let mut rows = Vec::new();
    // Warm: the lock function's connection and compute estimate.
    rt.block_on(stampede_call(fresh_run(), true));
    rt.block_on(stampede_call(fresh_run(), false));
    for n in [1usize, 10, 100, 1000] {
        for lock in [false, true] {
            let before = STAMPEDE_RUNS.load(Relaxed);
            let lat = rt.block_on(stampede_burst(fresh_run(), n, lock));
            let row = stampede_row(1, n, lock, STAMPEDE_RUNS.load(Relaxed) - before, &lat);
            eprintln!(
                "  1 process × {n:>4} callers, lock {lock:>5}: {} executions, p50 {}, p99 {}",
                row.executions,
                report::fmt_ns(row.p50_ns as f64),
                report::fmt_ns(row.p99_ns as f64)
            );
            rows.push(row);
        }
    }
    for n in [1usize, 10, 100, 1000] {
        for lock in [false, true] {
            let run = fresh_run();
            // Every child connects first, then all start at the same instant.
            let start_at_ms = (unix_now() * 1000.0) as u64 + 1_500;
            let children: Vec<_> = (0..PROCESSES)
                .map(|_| {
                    Command::new(std::env::current_exe()?)
                        .args(["--scenario", "stampede-child", "--redis-url", url])
                        .args(["--run", &run.to_string(), "--callers", &n.to_string()])
                        .args(["--lock", if lock { "1" } else { "0" }])
                        .args(["--start-at-ms", &start_at_ms.to_string()])
                        .args(args.child_flags())
                        .env_remove("CACHED_REDIS_URL")
                        .env_remove("REDIS_URL")
                        .stdout(Stdio::piped())
                        .stderr(Stdio::inherit())
                        .spawn()
                })
                .collect::<Result<_, _>>()?;
            let mut executions = 0;
            let mut lat = Vec::new();
            for child in children {
                let out = child.wait_with_output()?;
                if !out.status.success() {
                    return Err(format!("stampede child failed: {}", out.status).into());
                }
                let part: StampedeChild = serde_json::from_slice(&out.stdout)?;
                executions += part.executions;
                lat.extend(part.latencies_ns);
            }
            let row = stampede_row(PROCESSES, n, lock, executions, &lat);
            eprintln!(
                "  {PROCESSES} processes × {n:>4} callers, lock {lock:>5}: {} executions, p50 {}, p99 {}",
                row.executions,
                report::fmt_ns(row.p50_ns as f64),
                report::fmt_ns(row.p99_ns as f64)
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

fn child_stampede(args: &Args) -> Res<()> {
    let url = args.redis_url.clone().ok_or("--redis-url")?;
    cached_redis::init(redis_config(&url)?)?;
    let rt = runtime();
    // Connect before the start: a hit on the entry the parent stored.
    rt.block_on(async { search(&fx().query).await.map_err(|e| e.0) })?;
    let before = STAMPEDE_RUNS.load(Relaxed);
    let wait_ms = args
        .start_at_ms
        .saturating_sub((unix_now() * 1000.0) as u64);
    std::thread::sleep(Duration::from_millis(wait_ms));
    let latencies_ns = rt.block_on(stampede_burst(args.run, args.callers, args.lock));
    let out = StampedeChild {
        executions: STAMPEDE_RUNS.load(Relaxed) - before,
        latencies_ns,
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

// ---------------------------------------------------------------------------
// Coherence of the `local` level across two processes.

/// Gives `search_local`'s level time to go live (its invalidation channel
/// subscribes in a few ms) and fills it.
async fn local_warm() {
    for _ in 0..20 {
        assert!(search_local(&fx().query).await.is_ok());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const COHERENCE_STOP: &str = "bench:coherence:stop";

/// The writer side: starts the reader process, lets it settle, changes the
/// entry `changes` times and collects the reader's delays.
async fn coherence(args: &Args, url: &str, changes: usize) -> Res<Coherence> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("DEL")
        .arg(COHERENCE_STOP)
        .query_async(&mut conn)
        .await?;
    coherence::stamped(0).await;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--scenario", "coherence-child", "--redis-url", url])
        .args(args.child_flags())
        .env_remove("CACHED_REDIS_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let child = cmd.spawn()?;
    // The reader's channel subscribes within its first second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    coherence::write(changes, Duration::from_millis(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _: () = redis::cmd("SET")
        .arg(COHERENCE_STOP)
        .arg(1)
        .query_async(&mut conn)
        .await?;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    if !out.status.success() {
        return Err(format!("coherence reader failed: {}", out.status).into());
    }
    let report: coherence::ReaderReport = serde_json::from_slice(&out.stdout)?;
    let c = Coherence::of(changes, report);
    eprintln!(
        "  {} changes, {} seen: p50 {} µs, p99 {} µs, max {} µs",
        c.changes, c.seen, c.p50_us, c.p99_us, c.max_us
    );
    Ok(c)
}

/// The coherence measurement alone (`--scenario coherence`).
fn solo_coherence(args: &Args) -> Res<()> {
    let url = args.redis_url.clone().ok_or("--redis-url")?;
    cached_redis::init(redis_config(&url)?)?;
    let changes = if args.quick { 50 } else { 300 };
    let c = runtime().block_on(coherence(args, &url, changes))?;
    println!("{}", serde_json::to_string(&c)?);
    Ok(())
}

/// The reader side, in its own process.
fn child_coherence(args: &Args) -> Res<()> {
    let url = args.redis_url.clone().ok_or("--redis-url")?;
    cached_redis::init(redis_config(&url)?)?;
    let rt = runtime();
    let mut raw = redis::Client::open(url.as_str())?.get_connection()?;
    let report = rt.block_on(coherence::read_until(move || {
        redis::cmd("EXISTS")
            .arg(COHERENCE_STOP)
            .query::<bool>(&mut raw)
            .unwrap_or(true)
    }));
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// One scenario at one level for a while, for a profiler.
fn solo(args: &Args) -> Res<()> {
    let w = Window {
        warmup: Duration::from_millis(100),
        measure: Duration::from_secs_f64(args.seconds.max(0.1)),
    };
    let level = args.level.max(1);
    let rt = runtime();
    let s = if args.only == "e" {
        cached_redis::init(cached_redis::Config::builder().embedded().build()?)?;
        rt.block_on(async {
            search(&fx().query).await.map_err(|e| e.0)?;
            Ok::<_, String>(())
        })?;
        rt.block_on(drive(level, w, |_| async {
            assert!(search(&fx().query).await.is_ok());
        }))
    } else {
        let url = args.redis_url.clone().ok_or("--redis-url")?;
        PEER_URL.set(url.clone()).expect("once");
        init_redis(&url)?;
        let client = redis::Client::open(url.as_str())?;
        let setup = rt.block_on(setup(&client))?;
        match args.only.as_str() {
            "a" => rt.block_on(raw_get(&setup, level, w)),
            "a1" => rt.block_on(raw_get_of(
                &setup,
                &setup.tiny_key,
                setup.tiny_len,
                level,
                w,
            )),
            "b1" => rt.block_on(drive(level, w, |_| async {
                assert!(tiny(1).await.is_ok());
            })),
            "b" => rt.block_on(drive(level, w, |_| async {
                assert!(search(&fx().query).await.is_ok());
            })),
            "g" => rt.block_on(drive(level, w, |_| async {
                assert!(search_lz4(&fx().query).await.is_ok());
            })),
            "c" => rt.block_on(drive(level, w, |_| async {
                assert!(peer_search(&fx().query).await.is_ok());
            })),
            "f" => {
                rt.block_on(local_warm());
                rt.block_on(drive(level, w, |_| async {
                    assert!(search_local(&fx().query).await.is_ok());
                }))
            }
            "h" => rt.block_on(drive(level, w, |_| async {
                assert!(peer_local_search(&fx().query).await.is_ok());
            })),
            "f0" => rt.block_on(drive(level, w, |_| async {
                drop(clone_floor().await);
            })),
            "d" => {
                let counter = Arc::new(AtomicU64::new(0));
                rt.block_on(drive(level, w, move |_| {
                    let n = counter.fetch_add(1, Relaxed);
                    async move {
                        assert!(search_miss(&fx().query, n).await.is_ok());
                    }
                }))
            }
            "d0" => rt.block_on(drive(level, w, |_| async {
                assert!(miss_body().await.is_ok());
            })),
            other => {
                return Err(
                    format!("--only {other:?}: one of a, b, c, d, d0, e, f, f0, g, h, a1, b1").into(),
                )
            }
        }
    };
    show(&args.only, level, "tasks", &s);
    Ok(())
}

// ---------------------------------------------------------------------------
// The embedded store, in its own process.

fn child_embedded(args: &Args) -> Res<()> {
    let timing = args.timing();
    let w = Window::of(&timing);
    cached_redis::init(cached_redis::Config::builder().embedded().build()?)?;
    let rt = runtime();
    let _ = fx();
    let q = &fx().query;
    rt.block_on(async {
        assert_eq!(&search(q).await.map_err(|e| e.0)?, &fx().search);
        Ok::<_, String>(())
    })?;
    let runs = SEARCH_RUNS.load(Relaxed);
    let mut e = Series::new("e", "embedded store hit (no Redis)");
    for round in 0..timing.rounds {
        eprintln!(" round {}", round + 1);
        for &level in &timing.levels {
            let s = rt.block_on(drive(level, w, |_| async {
                assert!(search(&fx().query).await.is_ok());
            }));
            show("e", level, "tasks", &s);
            e.push(level, s);
        }
    }
    let misses_during_hits = SEARCH_RUNS.load(Relaxed) - runs;
    let pairs = if args.quick { 4 } else { 25 };
    let short = Window {
        warmup: Duration::from_millis(20),
        measure: Duration::from_millis(150),
    };
    let mut stats = Vec::new();
    for level in [1, 64] {
        let what = format!(
            "2 KB hit, {level} task{}",
            if level == 1 { "" } else { "s" }
        );
        stats.push(rt.block_on(stats_cost(
            "embedded",
            &what,
            level,
            short,
            pairs,
            |_| async {
                assert!(search(&fx().query).await.is_ok());
            },
        )));
    }
    assert_eq!(tiny_sync(1).map_err(|e| e.0)?, 7);
    stats.push(stats_cost_sync(
        "embedded",
        "1-byte sync hit, u32 key, 1 thread",
        if args.quick { 21 } else { 301 },
        10_000,
        || assert!(tiny_sync(1).is_ok()),
    ));
    let out = EmbeddedChild {
        hits: e,
        stats_cost: stats,
        misses_during_hits,
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

// ---------------------------------------------------------------------------
// invalidate_prefix on many entries while another client probes Redis.

const PHASE_IDLE: u8 = 0;
const PHASE_RUN: u8 = 1;
const PHASE_PAUSE: u8 = 2;
const PHASE_NAIVE: u8 = 3;
const PHASE_STOP: u8 = 4;

/// A client on its own thread and connection, alternating `PING` and a
/// `GET` of a 2 KB value, recording each latency under the current phase.
struct Prober {
    phase: Arc<AtomicU8>,
    thread: std::thread::JoinHandle<Vec<Hist>>,
}

impl Prober {
    fn start(url: &str, key: String) -> Res<Prober> {
        let mut conn = redis::Client::open(url)?.get_connection()?;
        let phase = Arc::new(AtomicU8::new(PHASE_IDLE));
        let p = phase.clone();
        let thread = std::thread::spawn(move || {
            let mut hists = vec![Hist::new(); PHASE_STOP as usize];
            let mut i = 0u64;
            loop {
                let ph = p.load(Relaxed);
                if ph == PHASE_STOP {
                    break;
                }
                let t0 = Instant::now();
                if i % 2 == 0 {
                    let _: String = redis::cmd("PING").query(&mut conn).expect("PING");
                } else {
                    let _: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut conn).expect("GET");
                }
                hists[ph as usize].record(t0.elapsed());
                i += 1;
            }
            hists
        });
        Ok(Prober { phase, thread })
    }
    fn set(&self, phase: u8) {
        self.phase.store(phase, Relaxed);
    }
    fn stop(self) -> Vec<Hist> {
        self.set(PHASE_STOP);
        self.thread.join().expect("prober")
    }
}

async fn fill(conn: &mut MultiplexedConnection, entries: u64, value: &[u8]) -> Res<()> {
    const BATCH: u64 = 1_000;
    let mut i = 0;
    while i < entries {
        let mut pipe = redis::pipe();
        for j in i..(i + BATCH).min(entries) {
            pipe.cmd("SET")
                .arg(inval_entry_cache_key(j)?)
                .arg(value)
                .arg("PX")
                .arg(600_000)
                .ignore();
        }
        let () = pipe.query_async(conn).await?;
        i += BATCH;
    }
    Ok(())
}

async fn count_entries(conn: &mut MultiplexedConnection) -> Res<u64> {
    let pattern = format!("cached:bench_inval:{}", "?".repeat(22));
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await?;
        n += keys.len() as u64;
        if next == 0 {
            return Ok(n);
        }
        cursor = next;
    }
}

async fn invalidate(client: &redis::Client, url: &str, entries: u64) -> Res<Invalidate> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await?;
    // A real entry's bytes, under real keys.
    inval_entry(0).await.map_err(|e| e.0)?;
    let value: Vec<u8> = redis::cmd("GET")
        .arg(inval_entry_cache_key(0)?)
        .query_async(&mut conn)
        .await?;
    let probe_key = "bench:probe".to_owned();
    let probe_value = serde_json::to_vec(&fx().search)?;
    let _: () = redis::cmd("SET")
        .arg(&probe_key)
        .arg(&probe_value)
        .query_async(&mut conn)
        .await?;
    let t = Instant::now();
    fill(&mut conn, entries, &value).await?;
    let fill_ms = t.elapsed().as_secs_f64() * 1e3;
    eprintln!("  filled {entries} entries in {fill_ms:.0} ms");

    let prober = Prober::start(url, probe_key)?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    prober.set(PHASE_RUN);
    let t = Instant::now();
    let removed = cached_redis::invalidate_prefix("bench_inval").await?;
    let duration_ms = t.elapsed().as_secs_f64() * 1e3;
    prober.set(PHASE_PAUSE);
    let left_after = count_entries(&mut conn).await?;
    eprintln!("  invalidate_prefix: {removed} removed in {duration_ms:.0} ms, {left_after} left");

    // For scale: what invalidate_prefix avoids.
    fill(&mut conn, entries, &value).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    prober.set(PHASE_NAIVE);
    let t = Instant::now();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("cached:bench_inval:{}", "?".repeat(22)))
        .query_async(&mut conn)
        .await?;
    let _: u64 = redis::cmd("UNLINK")
        .arg(&keys)
        .query_async(&mut conn)
        .await?;
    let naive_duration_ms = t.elapsed().as_secs_f64() * 1e3;
    let hists = prober.stop();
    eprintln!(
        "  KEYS + UNLINK: {} keys in {naive_duration_ms:.0} ms",
        keys.len()
    );
    Ok(Invalidate {
        entries,
        fill_ms,
        duration_ms,
        removed,
        left_after,
        probe_before: Probe::from_hist(&hists[PHASE_IDLE as usize]),
        probe_during: Probe::from_hist(&hists[PHASE_RUN as usize]),
        naive_duration_ms,
        probe_naive: Probe::from_hist(&hists[PHASE_NAIVE as usize]),
    })
}

// ---------------------------------------------------------------------------

fn machine(redis_version: &str) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        redis: redis_version.to_owned(),
        rustc,
        date_utc: report::utc_date(unix_now() as i64),
    }
}
