//! `stale`, `early` (XFetch) and `cache_none` against a real Redis, and
//! invalidation by prefix and by arguments.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cached_redis::cached;
use redis::Commands;
use serde_json::json;

fn setup() {
    common::init_once("freshness");
}

fn errors(prefix: &str) -> u64 {
    cached_redis::local_stats(prefix).map_or(0, |s| s.errors)
}

static VERSION: AtomicU64 = AtomicU64::new(1);
static FAIL: AtomicBool = AtomicBool::new(false);
static PAGE_1_RUNS: AtomicUsize = AtomicUsize::new(0);
static HOLD_REFRESH: AtomicBool = AtomicBool::new(false);

#[cached(ttl = 1, stale = 30, prefix = "stale_page")]
async fn page(id: u32) -> Result<String, String> {
    // Page 1's runs only: the tests of this file run in parallel, and page
    // 2's refreshes would be counted in the middle of page 1's test.
    if id == 1 {
        PAGE_1_RUNS.fetch_add(1, SeqCst);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A refresh the test holds back, to see who waits for it.
    while id == 1 && HOLD_REFRESH.load(SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Only page 2 (a_failing_refresh_keeps_serving_the_stale_value) fails:
    // the tests of this file run in parallel and must not see each other's
    // failures.
    if FAIL.load(SeqCst) && id == 2 {
        return Err("backend down".into());
    }
    Ok(format!("page {id} v{}", VERSION.load(SeqCst)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_values_are_served_while_one_caller_refreshes() {
    setup();
    assert_eq!(page(1).await.unwrap(), "page 1 v1");
    let pttl: i64 = common::raw().pttl(page_cache_key(1).unwrap()).unwrap();
    assert!(pttl > 30_000, "entries live ttl + stale: PTTL {pttl}");

    // Past the TTL, inside the stale window.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    VERSION.store(2, SeqCst);
    let runs_before = PAGE_1_RUNS.load(SeqCst);
    // The refresh is held back until every other caller has its answer:
    // they are served the stale value without waiting for it.
    HOLD_REFRESH.store(true, SeqCst);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..10 {
        let tx = tx.clone();
        tokio::spawn(async move { tx.send(page(1).await.unwrap()).unwrap() });
    }
    let mut stale = Vec::new();
    for _ in 0..9 {
        let value = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("stale callers do not wait for the refresh")
            .unwrap();
        stale.push(value);
    }
    assert!(
        stale.iter().all(|v| v == "page 1 v1"),
        "stale served at once: {stale:?}"
    );
    HOLD_REFRESH.store(false, SeqCst);
    let refreshed = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("the refresh ends once released")
        .unwrap();
    assert_eq!(
        refreshed, "page 1 v2",
        "the refreshing caller gets the new value"
    );
    assert_eq!(
        PAGE_1_RUNS.load(SeqCst),
        runs_before + 1,
        "one caller refreshes"
    );
    assert_eq!(page(1).await.unwrap(), "page 1 v2", "fresh again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_refresh_keeps_serving_the_stale_value() {
    setup();
    assert!(page(2).await.unwrap().starts_with("page 2 v"));
    let first = page(2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    FAIL.store(true, SeqCst);
    let errors_before = errors("stale_page");
    // The refreshing caller's Err is replaced by the stale value, and the
    // failure counted; the others are served at once.
    for _ in 0..5 {
        assert_eq!(page(2).await.unwrap(), first);
    }
    FAIL.store(false, SeqCst);
    assert!(
        errors("stale_page") > errors_before,
        "the failed refresh is counted"
    );
}

static PANIC_NEXT: AtomicBool = AtomicBool::new(false);

#[cached(ttl = 1, stale = 30, prefix = "stale_panic")]
fn report(id: u32) -> u64 {
    if PANIC_NEXT.swap(false, SeqCst) {
        panic!("report generator crashed");
    }
    u64::from(id) * 100
}

#[test]
fn a_panicking_refresh_keeps_serving_the_stale_value() {
    setup();
    assert_eq!(report(3), 300);
    std::thread::sleep(Duration::from_millis(1_100));
    PANIC_NEXT.store(true, SeqCst);
    let errors_before = errors("stale_panic");
    assert_eq!(report(3), 300, "panic in the refresh: the old value");
    assert_eq!(errors("stale_panic"), errors_before + 1);
}

static EARLY_RUNS: Mutex<Vec<i64>> = Mutex::new(Vec::new());

/// Each run records the entry's remaining lifetime at the moment it starts:
/// -2 means the entry had expired (a plain miss), anything else an early
/// refresh of an entry still there.
#[cached(ttl = 1, early = true, prefix = "early_hot")]
async fn hot(id: u32) -> u32 {
    let pttl: i64 = common::raw().pttl(hot_cache_key(id).unwrap()).unwrap();
    EARLY_RUNS.lock().unwrap().push(pttl);
    tokio::time::sleep(Duration::from_millis(50)).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xfetch_refreshes_a_hot_key_before_it_expires() {
    setup();
    let run_for = Duration::from_secs(4);
    let started = Instant::now();
    let slow_calls = std::sync::Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let slow_calls = slow_calls.clone();
            tokio::spawn(async move {
                while started.elapsed() < run_for {
                    let t = Instant::now();
                    assert_eq!(hot(9).await, 9);
                    if t.elapsed() >= Duration::from_millis(50) {
                        slow_calls.fetch_add(1, SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let runs = EARLY_RUNS.lock().unwrap().clone();
    let expired = runs.iter().filter(|p| **p == -2).count();
    let early = runs.len() - expired;
    eprintln!(
        "xfetch over {run_for:?} with ttl 1 s: {} runs, {early} early refreshes, {expired} after expiry, \
         {} calls waited for a computation",
        runs.len(),
        slow_calls.load(SeqCst)
    );
    // The first call finds no entry. After that, refreshes come early as a
    // rule; a loaded machine that stalls every caller through an entry's
    // last moments can let one expire now and then, never most of them.
    assert!(
        runs.first() == Some(&-2),
        "the first call found no entry: {runs:?}"
    );
    assert!(
        expired < early,
        "most recomputations happen before the entry expires: {runs:?}"
    );
    assert!(
        (2..=8).contains(&early),
        "about one refresh per TTL period over 4 periods: {runs:?}"
    );
}

static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache_none = 7, prefix = "neg_user")]
async fn user(id: u32) -> Option<String> {
    LOOKUPS.fetch_add(1, SeqCst);
    (id < 100).then(|| format!("user {id}"))
}

#[tokio::test]
async fn none_is_cached_with_its_own_ttl() {
    setup();
    assert_eq!(user(404).await, None);
    assert_eq!(user(404).await, None);
    assert_eq!(LOOKUPS.load(SeqCst), 1, "None served from the cache");
    let pttl: i64 = common::raw().pttl(user_cache_key(404).unwrap()).unwrap();
    assert!(
        (6_000..=7_000).contains(&pttl),
        "cache_none = 7: PTTL {pttl}"
    );
    assert_eq!(user(1).await.as_deref(), Some("user 1"));
    let pttl: i64 = common::raw().pttl(user_cache_key(1).unwrap()).unwrap();
    assert!(pttl > 200_000, "Some keeps the default TTL: PTTL {pttl}");
}

static SLIDING_LOOKUPS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 600, refresh = true, cache_none = 1, prefix = "neg_sliding")]
async fn sliding_user(id: u32) -> Option<String> {
    SLIDING_LOOKUPS.fetch_add(1, SeqCst);
    (id < 100).then(|| format!("user {id}"))
}

/// With `refresh`, a read restarts an entry's lifetime (`GETEX`), before
/// anyone knows the entry is a cached `None`: a `None` keeps its own
/// lifetime all the same, or reads would keep it for good.
#[tokio::test]
async fn reads_do_not_stretch_a_cached_none() {
    setup();
    assert_eq!(sliding_user(404).await, None);
    assert_eq!(sliding_user(404).await, None);
    assert_eq!(
        SLIDING_LOOKUPS.load(SeqCst),
        1,
        "None served from the cache"
    );
    let pttl: i64 = common::raw()
        .pttl(sliding_user_cache_key(404).unwrap())
        .unwrap();
    assert!(
        (1..=1_000).contains(&pttl),
        "a cached None read with refresh keeps cache_none = 1: PTTL {pttl}"
    );
    // Read on past its lifetime: it ends all the same.
    let deadline = Instant::now() + Duration::from_secs(30);
    while SLIDING_LOOKUPS.load(SeqCst) == 1 {
        assert!(
            Instant::now() < deadline,
            "reads keep a cached None with cache_none = 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sliding_user(404).await, None);
    }
    // A value still slides.
    assert_eq!(sliding_user(1).await.as_deref(), Some("user 1"));
    let pttl: i64 = common::raw()
        .pttl(sliding_user_cache_key(1).unwrap())
        .unwrap();
    assert!(pttl > 500_000, "Some keeps the function's ttl: PTTL {pttl}");
}

static LOCKED_LOOKUPS: AtomicUsize = AtomicUsize::new(0);

#[cached(
    ttl = 600,
    refresh = true,
    cache_none = 1,
    lock = true,
    prefix = "neg_sliding_locked"
)]
async fn sliding_locked(id: u32) -> Option<String> {
    LOCKED_LOOKUPS.fetch_add(1, SeqCst);
    (id < 100).then(|| format!("user {id}"))
}

/// A cached `None` that Redis keeps past its own lifetime (a restore of
/// it that failed) is not served once that lifetime is over, with
/// `lock = true` too, whose wait reads the entry again.
#[tokio::test]
async fn a_none_kept_too_long_ends_with_its_lifetime() {
    setup();
    assert_eq!(sliding_locked(404).await, None);
    let key = sliding_locked_cache_key(404).unwrap();
    let _: () = common::raw().pexpire(&key, 600_000).unwrap();
    // No read before its own lifetime is over: a read within it would set
    // the lifetime back (tested above).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while LOCKED_LOOKUPS.load(SeqCst) == 1 {
        assert!(
            Instant::now() < deadline,
            "a None past cache_none = 1 is still served (PTTL {})",
            common::raw().pttl::<_, i64>(&key).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sliding_locked(404).await, None);
    }
    let pttl: i64 = common::raw().pttl(&key).unwrap();
    assert!(
        (1..=1_000).contains(&pttl),
        "the new None lives cache_none = 1: PTTL {pttl}"
    );
}

#[cached(prefix = "inv_item")]
async fn item(id: u32, lang: String) -> String {
    format!("{id}/{lang}")
}

#[cached(prefix = "inv_other")]
async fn other(id: u32) -> u32 {
    id
}

#[cached(prefix = "inv_none")]
async fn no_args() -> u32 {
    7
}

#[cached(prefix = "inv_generic")]
async fn generic_item<T: serde::Serialize + Send>(id: T) -> u32 {
    let _ = id;
    1
}

#[tokio::test]
async fn invalidation_by_prefix_and_by_arguments() {
    setup();
    for id in 0..50 {
        item(id, "en".into()).await;
    }
    other(1).await;
    no_args().await;
    cached_redis::flush_stats().await.unwrap();
    let mut raw = common::raw();

    // By arguments, as an event would name them.
    let key = item_cache_key(3, "en".into()).unwrap();
    assert!(raw.exists::<_, bool>(&key).unwrap());
    assert!(cached_redis::invalidate_args("inv_item", &json!([3, "en"]))
        .await
        .unwrap());
    assert!(!raw.exists::<_, bool>(&key).unwrap());
    assert!(
        !cached_redis::invalidate_args("inv_item", &json!([3, "en"]))
            .await
            .unwrap()
    );
    assert!(cached_redis::invalidate_args("inv_none", &json!([]))
        .await
        .unwrap());
    assert!(cached_redis::invalidate_args("never_called", &json!([1]))
        .await
        .is_err());
    assert!(cached_redis::invalidate_args("inv_item", &json!({"id": 3}))
        .await
        .is_err());

    // By prefix: the other 49 entries, nothing else.
    assert_eq!(
        cached_redis::invalidate_prefix("inv_item").await.unwrap(),
        49
    );
    assert!(raw.exists::<_, bool>(other_cache_key(1).unwrap()).unwrap());
    let stats = format!("{}:inv_item:stats", common::namespace("freshness"));
    assert!(
        raw.exists::<_, bool>(&stats).unwrap(),
        "the stats hash stays"
    );
    assert_eq!(
        cached_redis::invalidate_prefix("inv_item").await.unwrap(),
        0
    );
}

static NONE_EARLY_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 1, cache_none = 30, early = true, prefix = "neg_early")]
async fn none_early(_id: u32) -> Option<u32> {
    NONE_EARLY_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    None
}

/// A cached `None` lives `cache_none`: `early` must not take it for an
/// entry past its `ttl` (it was recomputed about once a second here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_judges_a_cached_none_by_cache_none() {
    setup();
    for _ in 0..25 {
        assert_eq!(none_early(1).await, None);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(NONE_EARLY_RUNS.load(SeqCst), 1, "computed once in 2.5 s");
}

static SLOW_REFRESH_RUNS: AtomicU64 = AtomicU64::new(0);
static SLOW_REFRESH: AtomicBool = AtomicBool::new(false);

/// 250 ms the first time (the entry records it, so a refresh takes its
/// lock for 4 × 250 + 100 = 1.1 s, renewed every third of that: a
/// renewal late by up to 700 ms on a loaded machine still keeps the
/// lock); 3 s once refreshed.
#[cached(ttl = 1, stale = 60, prefix = "stale_slow_refresh")]
async fn slow_refresh(x: u64) -> u64 {
    let run = SLOW_REFRESH_RUNS.fetch_add(1, SeqCst);
    let pause = if SLOW_REFRESH.load(SeqCst) {
        3_000
    } else {
        250
    };
    tokio::time::sleep(Duration::from_millis(pause)).await;
    x * 100 + run
}

/// A refresh slower than its lease keeps its lock while it runs: another
/// process (a second cache on the same Redis and namespace stands for
/// one) is served the stale value at once instead of starting the same
/// refresh again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_slower_than_its_lease_keeps_its_lock() {
    let ns = common::namespace("freshness_slow_refresh");
    let config = || {
        cached_redis::Config::builder()
            .redis_url(common::redis_url())
            .namespace(&ns)
            .build()
            .unwrap()
    };
    let a = cached_redis::Cache::new(config()).unwrap();
    let b = cached_redis::Cache::new(config()).unwrap();
    assert_eq!(a.scope(slow_refresh(1)).await, 100);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    SLOW_REFRESH.store(true, SeqCst);
    let refreshing = tokio::spawn(a.scope(slow_refresh(1)));
    // Past the lease it was taken for (1.1 s), well before the body ends.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(
        b.scope(slow_refresh(1)).await,
        100,
        "the other process is served the stale value"
    );
    assert_eq!(refreshing.await.unwrap(), 101);
    assert_eq!(
        SLOW_REFRESH_RUNS.load(SeqCst),
        2,
        "the refresh ran once, not once per process"
    );
}
