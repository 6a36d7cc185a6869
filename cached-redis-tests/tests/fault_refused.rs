//! Redis refusing connections: every call still answers, and once the
//! breaker trips Redis is not even tried.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cached_redis::cached;

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "refused")]
fn refused(x: u32) -> u32 {
    CALLS.fetch_add(1, SeqCst);
    x + 1
}

#[cached(prefix = "refused_async")]
async fn refused_async(x: u32) -> u32 {
    CALLS.fetch_add(1, SeqCst);
    x + 1
}

#[tokio::test]
async fn refused_connections_degrade_to_running_the_function() {
    let port = common::free_port();
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(format!("redis://127.0.0.1:{port}/0"))
            .breaker_threshold(3)
            .breaker_cooldown(Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .unwrap();
    for i in 0..10 {
        assert_eq!(refused(i), i + 1);
        assert_eq!(refused_async(i).await, i + 1);
    }
    assert_eq!(CALLS.load(SeqCst), 20, "every call ran the function");
    let sync = cached_redis::local_stats("refused").unwrap();
    let async_ = cached_redis::local_stats("refused_async").unwrap();
    assert_eq!(sync.misses + async_.misses, 20);
    assert_eq!(sync.hits + async_.hits, 0);
    assert!(
        sync.errors + async_.errors >= 20,
        "store failures are counted"
    );
    let err = cached_redis::flush_stats().await.unwrap_err();
    assert!(matches!(err, cached_redis::Error::Store(_)), "{err}");
}
