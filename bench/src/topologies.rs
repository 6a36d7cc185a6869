//! What each production topology costs: cached-redis hits at 1 and 64
//! tasks on one server over plain TCP, the same over TLS, and a 3-master
//! cluster, measured in one run.
//!
//! cached-redis is configured once per process, so each topology runs in a
//! child of the load binary (`--scenario topology-child`) that prints its
//! figures as JSON. `scripts/bench.sh` starts the servers
//! (`scripts/topologies.sh`) and names them in `BENCH_TOPOLOGIES`
//! (`name=url;name=url...`, the names `tcp`, `tls`, `cluster`) and the CA
//! of the TLS server in `BENCH_TLS_CA`. Without them the section is
//! skipped.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cached_redis::cached;
use serde::{Deserialize, Serialize};

/// One topology's hit throughput.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TopologyRow {
    pub name: String,
    /// (tasks, hits per second: the median of the rounds, mean latency µs).
    pub levels: Vec<(usize, f64, f64)>,
}

const LEVELS: [usize; 2] = [1, 64];

/// A 1-KB value behind a `u32` key.
#[cached(ttl = 3600, prefix = "bench_topology")]
async fn hit(k: u32) -> Vec<u8> {
    vec![k as u8; 1024]
}

/// Hits per second and mean latency of `tasks` tasks calling `hit` for
/// `window` after `warmup`.
async fn drive(tasks: usize, warmup: Duration, window: Duration) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let busy_ns = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (stop, counting, calls, busy_ns) = (
                stop.clone(),
                counting.clone(),
                calls.clone(),
                busy_ns.clone(),
            );
            tokio::spawn(async move {
                let mut k = t as u32;
                while !stop.load(Relaxed) {
                    k = (k + 1) % 64;
                    let at = Instant::now();
                    std::hint::black_box(hit(k).await);
                    if counting.load(Relaxed) {
                        calls.fetch_add(1, Relaxed);
                        busy_ns.fetch_add(at.elapsed().as_nanos() as u64, Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    counting.store(true, Relaxed);
    let began = Instant::now();
    tokio::time::sleep(window).await;
    counting.store(false, Relaxed);
    let took = began.elapsed();
    stop.store(true, Relaxed);
    for h in handles {
        let _ = h.await;
    }
    let n = calls.load(Relaxed).max(1);
    (
        n as f64 / took.as_secs_f64(),
        busy_ns.load(Relaxed) as f64 / n as f64 / 1000.0,
    )
}

/// The child: measures one topology and prints a [`TopologyRow`].
pub fn child(name: &str, url: &str, quick: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = cached_redis::Config::builder()
        .redis_url(url)
        .namespace("bench-topology");
    if let Ok(ca) = std::env::var("BENCH_TLS_CA") {
        if url.starts_with("rediss") {
            config = config.tls_ca_file(ca);
        }
    }
    cached_redis::init(config.build()?)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (warmup, window, rounds) = if quick {
        (Duration::from_millis(50), Duration::from_millis(250), 1)
    } else {
        (Duration::from_millis(250), Duration::from_secs(1), 3)
    };
    let mut row = TopologyRow {
        name: name.to_owned(),
        levels: Vec::new(),
    };
    rt.block_on(async {
        // Fill the entries first: what follows is hits only.
        for k in 0..64 {
            hit(k).await;
        }
    });
    for tasks in LEVELS {
        let mut runs: Vec<(f64, f64)> = (0..rounds)
            .map(|_| rt.block_on(drive(tasks, warmup, window)))
            .collect();
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (rate, mean_us) = runs[runs.len() / 2];
        eprintln!("  {name:>8} {tasks:>2} tasks: {rate:>9.0} hits/s, mean {mean_us:.1} µs");
        row.levels.push((tasks, rate, mean_us));
    }
    if let Some(s) = cached_redis::local_stats("bench_topology") {
        if s.errors > 0 {
            return Err(format!("{name}: {} cache errors during the run", s.errors).into());
        }
    }
    println!("{}", serde_json::to_string(&row)?);
    Ok(())
}

/// The parent: one child per topology of `BENCH_TOPOLOGIES`, in turn.
pub fn measure(quick: bool) -> Result<Vec<TopologyRow>, Box<dyn std::error::Error>> {
    let Ok(list) = std::env::var("BENCH_TOPOLOGIES") else {
        eprintln!("load: BENCH_TOPOLOGIES unset; topologies skipped");
        return Ok(Vec::new());
    };
    let mut rows = Vec::new();
    for pair in list.split(';').filter(|p| !p.is_empty()) {
        let (name, url) = pair
            .split_once('=')
            .ok_or("BENCH_TOPOLOGIES: name=url;...")?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "--scenario",
            "topology-child",
            "--only",
            name,
            "--redis-url",
            url,
        ])
        .env_remove("CACHED_REDIS_URL")
        .stderr(Stdio::inherit());
        if quick {
            cmd.arg("--quick");
        }
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(format!("topology {name} failed: {}", out.status).into());
        }
        rows.push(serde_json::from_slice(&out.stdout)?);
    }
    Ok(rows)
}

/// The report's section: each topology's hits against plain TCP's.
pub fn render(w: &mut String, rows: &[TopologyRow]) {
    if rows.is_empty() {
        return;
    }
    let base = rows.iter().find(|r| r.name == "tcp");
    let _ = writeln!(
        w,
        "## Topologies: TLS and cluster against one plain server\n"
    );
    let _ = writeln!(
        w,
        "cached-redis hits (1 KB value, `u32` key), each topology in a process of\n\
         its own, in the same run. Ratio: hits/s against plain TCP at the same\n\
         number of tasks.\n"
    );
    let _ = writeln!(
        w,
        "| topology | tasks | hits/s | mean latency | vs plain TCP |"
    );
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | ---: |");
    for row in rows {
        for &(tasks, rate, mean_us) in &row.levels {
            let ratio = base
                .and_then(|b| b.levels.iter().find(|l| l.0 == tasks))
                .map_or("".to_owned(), |b| format!("{:.2}×", rate / b.1));
            let _ = writeln!(
                w,
                "| {} | {tasks} | {rate:.0} | {mean_us:.1} µs | {ratio} |",
                row.name
            );
        }
    }
    let _ = writeln!(w);
}
