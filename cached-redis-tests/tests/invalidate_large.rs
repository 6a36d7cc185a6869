//! `invalidate_prefix` on 200,000 entries, while another client keeps
//! talking to Redis: every entry goes, nothing else does, and the other
//! client's latency during the run is measured (printed, not asserted: the
//! machine is shared).

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cached_redis::cached;
use redis::Commands;

const ENTRIES: usize = 200_000;

#[cached(prefix = "bulk")]
async fn bulk(id: u64) -> u64 {
    id
}

#[cached(prefix = "bulk_neighbour")]
async fn neighbour(id: u64) -> u64 {
    id
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_entries_go_while_redis_keeps_answering() {
    let ns = common::namespace("bulk");
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(common::redis_url())
            .namespace(&ns)
            .build()
            .unwrap(),
    )
    .unwrap();
    // One real entry gives the key shape; the rest are written raw, in
    // pipelined batches, with keys of the same shape.
    bulk(0).await;
    neighbour(1).await;
    let mut raw = common::raw();
    let value: Vec<u8> = raw.get(bulk_cache_key(0).unwrap()).unwrap();
    for chunk in (1..ENTRIES as u64).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.set_ex(bulk_cache_key(*id).unwrap(), &value, 600)
                .ignore();
        }
        let _: () = pipe.query(&mut raw).unwrap();
    }
    cached_redis::flush_stats().await.unwrap();

    // Another client pings throughout.
    let running = Arc::new(AtomicBool::new(true));
    let prober = {
        let running = running.clone();
        std::thread::spawn(move || {
            let mut conn = common::raw();
            let mut samples = Vec::new();
            while running.load(SeqCst) {
                let t = Instant::now();
                let _: String = redis::cmd("PING").query(&mut conn).unwrap();
                samples.push(t.elapsed());
            }
            samples
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let removed = cached_redis::invalidate_prefix("bulk").await.unwrap();
    let took = started.elapsed();
    running.store(false, SeqCst);
    let mut samples = prober.join().unwrap();
    samples.sort();

    assert_eq!(removed, ENTRIES as u64);
    assert!(!raw.exists::<_, bool>(bulk_cache_key(0).unwrap()).unwrap());
    assert!(!raw
        .exists::<_, bool>(bulk_cache_key(123_456).unwrap())
        .unwrap());
    assert!(
        raw.exists::<_, bool>(neighbour_cache_key(1).unwrap())
            .unwrap(),
        "other prefixes stay"
    );
    assert!(
        raw.exists::<_, bool>(format!("{ns}:bulk:stats")).unwrap(),
        "the stats hash stays"
    );
    eprintln!(
        "invalidate_prefix removed {removed} entries in {took:?}; another client's PING meanwhile: \
         {} samples, p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().unwrap()
    );
}
