//! The embedded in-process store: what serves when no Redis is configured.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cached_redis::cached;

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 1, prefix = "embedded")]
async fn embedded(x: u32) -> Vec<u32> {
    CALLS.fetch_add(1, SeqCst);
    vec![x; 3]
}

static SYNC_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "embedded_sync")]
fn embedded_sync(x: u32) -> Option<String> {
    SYNC_CALLS.fetch_add(1, SeqCst);
    (x > 0).then(|| x.to_string())
}

static SLIDING_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 600, refresh = true, cache_none = 1, prefix = "embedded_sliding")]
fn embedded_sliding(x: u32) -> Option<u32> {
    SLIDING_CALLS.fetch_add(1, SeqCst);
    (x > 0).then_some(x)
}

static LOCAL_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 1, prefix = "embedded_local", local = 10)]
async fn embedded_local(x: u32) -> Vec<u32> {
    LOCAL_CALLS.fetch_add(1, SeqCst);
    vec![x; 2]
}

#[tokio::test]
async fn the_embedded_store_caches_expires_and_invalidates() {
    // No URL: the embedded store, whatever the environment says.
    cached_redis::init(cached_redis::Config::builder().embedded().build().unwrap()).unwrap();
    assert_eq!(embedded(4).await, vec![4, 4, 4]);
    assert_eq!(embedded(4).await, vec![4, 4, 4]);
    assert_eq!(CALLS.load(SeqCst), 1);
    // Expiry: waited for (a deadline, not a bound: on a loaded machine
    // the second may take longer to pass).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut hits_while_waiting = 0;
    while CALLS.load(SeqCst) == 1 {
        assert!(Instant::now() < deadline, "the entry expires after ttl = 1");
        tokio::time::sleep(Duration::from_millis(100)).await;
        embedded(4).await;
        hits_while_waiting += 1;
    }
    // The last call of the loop was the miss.
    hits_while_waiting -= 1;
    assert_eq!(CALLS.load(SeqCst), 2, "expired once, then cached again");
    assert!(embedded_invalidate(4).await.unwrap());
    embedded(4).await;
    assert_eq!(CALLS.load(SeqCst), 3);

    embedded_sync(1);
    embedded_sync(1);
    embedded_sync(0);
    embedded_sync(0);
    assert_eq!(SYNC_CALLS.load(SeqCst), 3, "Some cached, None not");

    // With `refresh`, reads restart an entry's lifetime, but a cached
    // `None` keeps its own (`cache_none = 1`): reads never keep it.
    assert_eq!(embedded_sliding(0), None);
    assert_eq!(embedded_sliding(0), None);
    assert_eq!(SLIDING_CALLS.load(SeqCst), 1, "None cached");
    let deadline = Instant::now() + Duration::from_secs(30);
    while SLIDING_CALLS.load(SeqCst) == 1 {
        assert!(
            Instant::now() < deadline,
            "reads keep a cached None with cache_none = 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(embedded_sliding(0), None);
    }
    let s = cached_redis::local_stats("embedded").unwrap();
    assert_eq!((s.hits, s.misses, s.errors), (1 + hits_while_waiting, 3, 0));
    // Nothing to flush to, and that is not an error.
    cached_redis::flush_stats().await.unwrap();

    // A `local` level in front of the embedded store: same behaviour.
    assert_eq!(embedded_local(2).await, vec![2, 2]);
    assert_eq!(embedded_local(2).await, vec![2, 2]);
    assert_eq!(LOCAL_CALLS.load(SeqCst), 1);
    assert!(embedded_local_invalidate(2).await.unwrap());
    embedded_local(2).await;
    assert_eq!(LOCAL_CALLS.load(SeqCst), 2, "invalidated in the level too");
    assert_eq!(
        cached_redis::invalidate_prefix("embedded_local")
            .await
            .unwrap(),
        1
    );
    embedded_local(2).await;
    assert_eq!(
        LOCAL_CALLS.load(SeqCst),
        3,
        "prefix invalidated in the level too"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    embedded_local(2).await;
    assert_eq!(
        LOCAL_CALLS.load(SeqCst),
        4,
        "expired after ttl = 1, in the level too"
    );
}

static FAILING_REFRESHES: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 1, stale = 30, prefix = "embedded_stale")]
async fn embedded_stale(x: u32) -> Result<u32, String> {
    if FAILING_REFRESHES.fetch_add(1, SeqCst) == 0 {
        Ok(x)
    } else {
        Err("backend down".into())
    }
}

/// A refresh that fails keeps its lock until its lease ends, here as on
/// Redis: the hits meanwhile are served the old value, and do not each run
/// the failing body again (the embedded store's lock always succeeded).
#[tokio::test]
async fn a_failing_refresh_runs_once_per_lease_in_the_embedded_store() {
    let cache =
        cached_redis::Cache::new(cached_redis::Config::builder().embedded().build().unwrap())
            .unwrap();
    assert_eq!(cache.scope(embedded_stale(1)).await, Ok(1));
    // Past its ttl, within its stale window.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for _ in 0..5 {
        assert_eq!(cache.scope(embedded_stale(1)).await, Ok(1), "the old value");
    }
    assert_eq!(FAILING_REFRESHES.load(SeqCst), 2, "one failing refresh");
}
