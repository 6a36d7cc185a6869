//! A redis-server that was connected and then hangs (`SIGSTOP`): once the
//! breaker has tripped and its cooldown is over, one call probes Redis and
//! waits for the timeout; every other concurrent call fails fast and runs
//! the function at once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cached_redis::cached;

/// Large next to a fast-failing call (microseconds), so that no scheduling
/// noise can make such a call look like one that waited for Redis.
const TIMEOUT: Duration = Duration::from_secs(1);
const COOLDOWN: Duration = Duration::from_millis(300);

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "hung")]
async fn item(x: u32) -> u32 {
    RUNS.fetch_add(1, SeqCst);
    x + 7
}

/// Calls `item` for 100 distinct keys at once (distinct, so coalescing
/// plays no part); each call's duration.
async fn hundred_at_once(base: u32) -> Vec<Duration> {
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                let started = Instant::now();
                let value = item(base + i).await;
                (value, started.elapsed(), base + i)
            })
        })
        .collect();
    let mut took = Vec::new();
    for t in tasks {
        let (value, elapsed, x) = t.await.unwrap();
        assert_eq!(value, x + 7, "every call answers correctly");
        took.push(elapsed);
    }
    took
}

/// Calls that waited for Redis: anything near the timeout.
fn waited(took: &[Duration]) -> usize {
    took.iter().filter(|d| **d >= TIMEOUT / 2).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_cooldown_one_caller_probes_a_hung_redis() {
    let server = common::RedisServer::start();
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(server.url())
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .breaker_threshold(2)
            .breaker_cooldown(COOLDOWN)
            .build()
            .unwrap(),
    )
    .unwrap();

    // Connected and caching.
    assert_eq!(item(1).await, 8);
    assert_eq!(item(1).await, 8);
    assert_eq!(RUNS.load(SeqCst), 1);

    let hung = server.hang();
    // Trip the breaker: calls wait for the timeout until it opens.
    for x in 10..12 {
        assert_eq!(item(x).await, x + 7);
    }
    for round in 0..3 {
        // The cooldown runs out; then a hundred callers arrive together.
        tokio::time::sleep(COOLDOWN * 2).await;
        let took = hundred_at_once(1000 * (round + 1)).await;
        assert!(
            waited(&took) <= 1,
            "round {round}: {} of 100 calls waited for the hung redis: {took:?}",
            waited(&took)
        );
    }
    // While hung, nothing was served from the cache.
    let stats = cached_redis::local_stats("hung").unwrap();
    assert_eq!(stats.hits, 1);

    drop(hung);
    // Running again: a probe finds it and caching resumes by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        item(5).await;
        let before = RUNS.load(SeqCst);
        item(5).await;
        if RUNS.load(SeqCst) == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "caching resumes after the server runs again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
