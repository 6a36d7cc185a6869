//! A redis-server killed in the middle of a test and restarted: calls keep
//! answering throughout, and caching resumes by itself.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cached_redis::cached;

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "restart")]
async fn item(x: u32) -> u32 {
    CALLS.fetch_add(1, SeqCst);
    x + 100
}

static SYNC_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "restart_sync")]
fn item_sync(x: u32) -> u32 {
    SYNC_CALLS.fetch_add(1, SeqCst);
    x + 100
}

/// Calls `f` until it reports a hit (the body did not run) or time is up.
async fn eventually_cached(mut attempt: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if attempt().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_survives_a_redis_restart() {
    let mut server = common::RedisServer::start();
    let port = server.port;
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(server.url())
            .timeout(Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(200))
            .breaker_threshold(2)
            .breaker_cooldown(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap();

    assert_eq!(item(1).await, 101);
    assert_eq!(item(1).await, 101);
    assert_eq!(item_sync(1), 101);
    assert_eq!(item_sync(1), 101);
    assert_eq!(CALLS.load(SeqCst), 1);
    assert_eq!(SYNC_CALLS.load(SeqCst), 1);

    server.kill();
    for i in 0..20 {
        assert_eq!(
            item(1000 + i).await,
            1100 + i,
            "answers while redis is down"
        );
        assert_eq!(item_sync(1000 + i), 1100 + i);
    }
    assert_eq!(CALLS.load(SeqCst), 21);

    // Same port, empty server: entries are gone, caching must come back.
    let _server = common::RedisServer::start_on(port);
    let recovered = eventually_cached(async || {
        item(5).await;
        let before = CALLS.load(SeqCst);
        item(5).await;
        CALLS.load(SeqCst) == before
    })
    .await;
    assert!(recovered, "async calls cache again after the restart");
    let recovered_sync = eventually_cached(async || {
        item_sync(5);
        let before = SYNC_CALLS.load(SeqCst);
        item_sync(5);
        SYNC_CALLS.load(SeqCst) == before
    })
    .await;
    assert!(recovered_sync, "sync calls cache again after the restart");
}

static SPREAD_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "restart_runtimes")]
async fn spread(x: u32) -> u32 {
    SPREAD_CALLS.fetch_add(1, SeqCst);
    x + 7
}

/// Never found: nothing is stored, so a call is a lookup and nothing else
/// (no write whose success would close the breaker again).
#[cached(prefix = "restart_nothing")]
async fn nothing(x: u32) -> Option<u32> {
    let _ = x;
    None
}

/// Several runtimes (one per thread, as some servers run), each with its
/// connection: one restart of Redis costs one failed call, not one per
/// runtime. The first runtime to find its connection broken drops the
/// others' too, so the breaker (open after 2 failures in a row here, for
/// a minute) does not open although Redis answers again.
#[test]
fn a_restart_does_not_open_the_breaker_once_per_runtime() {
    let mut server = common::RedisServer::start();
    let port = server.port;
    let cache = cached_redis::Cache::new(
        cached_redis::Config::builder()
            .redis_url(server.url())
            .timeout(Duration::from_millis(500))
            .breaker_threshold(2)
            .breaker_cooldown(Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .unwrap();
    let runtimes: Vec<_> = (0..4)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        })
        .collect();
    for (i, rt) in (0..).zip(&runtimes) {
        assert_eq!(rt.block_on(cache.scope(spread(i))), i + 7);
    }
    server.kill();
    let _server = common::RedisServer::start_on(port);
    // A lookup on each runtime in turn: the first finds its connection
    // broken; the others must not.
    for (i, rt) in (100..).zip(&runtimes) {
        assert_eq!(rt.block_on(cache.scope(nothing(i))), None);
    }
    for (i, rt) in (200..).zip(&runtimes[1..]) {
        let before = SPREAD_CALLS.load(SeqCst);
        assert_eq!(rt.block_on(cache.scope(spread(i))), i + 7);
        assert_eq!(rt.block_on(cache.scope(spread(i))), i + 7);
        assert_eq!(
            SPREAD_CALLS.load(SeqCst),
            before + 1,
            "runtime {}: the second call of {i} ran the body (the breaker opened, or its connection failed)",
            i - 199
        );
    }
}
