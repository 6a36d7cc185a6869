//! `search-load`: the load demo. Sends Zipf-distributed searches to a
//! running search service from `--concurrency` keep-alive connections,
//! first normally (through the cache), then with the skip header (every
//! request reaches PostgreSQL), and prints hit ratio, requests/s, p50 and
//! p99 of each run as a Markdown table.
//!
//! ```sh
//! search-load --addr 127.0.0.1:3000 [--seconds 30] [--concurrency 16] [--queries 1000] [--zipf 1.0]
//! ```
//! `scripts/search-service-load.sh` starts everything and runs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use search_service::client::HttpClient;
use search_service::zipf::{queries, Query, Rng, Zipf};
use search_service::BoxError;

struct Args {
    addr: SocketAddr,
    seconds: u64,
    concurrency: usize,
    queries: usize,
    zipf: f64,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        addr: "127.0.0.1:3000".parse()?,
        seconds: 30,
        concurrency: 16,
        queries: 1000,
        zipf: 1.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?.parse()?,
            "--seconds" => args.seconds = value()?.parse()?,
            "--concurrency" => args.concurrency = value()?.parse()?,
            "--queries" => args.queries = value()?.parse()?,
            "--zipf" => args.zipf = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

/// What one run measured.
#[derive(Default)]
struct Run {
    latencies_us: Vec<u64>,
    hits: u64,
    errors: u64,
    elapsed: Duration,
}

impl Run {
    fn percentile(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

async fn worker(
    addr: SocketAddr,
    queries: Arc<Vec<Query>>,
    zipf: Arc<Zipf>,
    seed: u64,
    skip: bool,
    until: Instant,
) -> Result<Run, BoxError> {
    let mut client = HttpClient::connect(addr).await?;
    let mut rng = Rng::new(seed);
    let mut run = Run::default();
    let headers: &[(&str, &str)] = if skip {
        &[(cached_redis::SKIP_CACHE_HEADER, "1")]
    } else {
        &[]
    };
    while Instant::now() < until {
        let query = &queries[zipf.sample(&mut rng)];
        let started = Instant::now();
        let reply = client.get(&query.path(), headers).await?;
        run.latencies_us.push(started.elapsed().as_micros() as u64);
        if reply.status != 200 {
            run.errors += 1;
        }
        if reply.header("x-cache") == Some("HIT") {
            run.hits += 1;
        }
    }
    Ok(run)
}

async fn measure(args: &Args, skip: bool) -> Result<Run, BoxError> {
    let queries = Arc::new(queries(args.queries));
    let zipf = Arc::new(Zipf::new(queries.len(), args.zipf));
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        tasks.push(tokio::spawn(worker(
            args.addr,
            queries.clone(),
            zipf.clone(),
            // Different streams per worker; the same streams in both runs.
            0xC0FFEE + i as u64,
            skip,
            until,
        )));
    }
    let mut total = Run::default();
    for task in tasks {
        let run = task.await??;
        total.latencies_us.extend(run.latencies_us);
        total.hits += run.hits;
        total.errors += run.errors;
    }
    total.elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    Ok(total)
}

fn row(name: &str, run: &Run) -> String {
    let n = run.latencies_us.len() as f64;
    format!(
        "| {name} | {requests} | {rps:.0} | {hit:.1}% | {p50:.2} ms | {p99:.2} ms | {errors} |",
        requests = run.latencies_us.len(),
        rps = n / run.elapsed.as_secs_f64(),
        hit = if n > 0.0 {
            run.hits as f64 / n * 100.0
        } else {
            0.0
        },
        p50 = run.percentile(0.50),
        p99 = run.percentile(0.99),
        errors = run.errors,
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    eprintln!(
        "search-load: {} s per run, {} connections, {} distinct queries, Zipf s = {}",
        args.seconds, args.concurrency, args.queries, args.zipf
    );
    eprintln!("search-load: run 1, through the cache");
    let cached = measure(&args, false).await?;
    eprintln!(
        "search-load: run 2, with {}: 1",
        cached_redis::SKIP_CACHE_HEADER
    );
    let skipped = measure(&args, true).await?;
    println!("| run | requests | req/s | X-Cache: HIT | p50 | p99 | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!("{}", row("with the cache", &cached));
    println!("{}", row("skip header (no cache)", &skipped));
    Ok(())
}
