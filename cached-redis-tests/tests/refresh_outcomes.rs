//! What a recomputation leaves behind when its result is not a value:
//! a `None` (not cached) removes the entry it was to replace, under
//! `_refresh` and under `stale`; a failed refresh and an uncached call
//! report their own entry to `with_entry_info`, not one that a cached
//! call inside their body recorded. Bytes that do not decode, under the
//! key of a result that is not cached, go too.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cached_redis::{cached, CacheStatus};

fn setup() {
    common::init_once("refresh_outcomes");
}

static DELETED: AtomicBool = AtomicBool::new(false);

#[cached(ttl = 600, prefix = "outcome_refresh_none")]
async fn user(id: u32) -> Option<String> {
    (!DELETED.load(SeqCst)).then(|| format!("user {id}"))
}

static DELETED_LOCAL: AtomicBool = AtomicBool::new(false);

#[cached(ttl = 600, local = 100, prefix = "outcome_refresh_none_local")]
async fn held_user(id: u32) -> Option<String> {
    (!DELETED_LOCAL.load(SeqCst)).then(|| format!("user {id}"))
}

/// A write-through after the row was deleted: the old value is not served
/// afterwards, from Redis or from this process's level.
#[tokio::test]
async fn a_refresh_to_none_removes_the_entry() {
    setup();
    assert_eq!(user(1).await.as_deref(), Some("user 1"));
    DELETED.store(true, SeqCst);
    assert_eq!(user_refresh(1).await, None);
    assert_eq!(user(1).await, None, "the deleted user is not served");
    let key = user_cache_key(1).unwrap();
    let left: Option<Vec<u8>> = redis::cmd("GET")
        .arg(key.as_str())
        .query(&mut common::raw())
        .unwrap();
    assert_eq!(left, None, "the entry is gone");

    assert_eq!(held_user(1).await.as_deref(), Some("user 1"));
    assert_eq!(held_user(1).await.as_deref(), Some("user 1"), "held");
    DELETED_LOCAL.store(true, SeqCst);
    assert_eq!(held_user_refresh(1).await, None);
    assert_eq!(held_user(1).await, None, "the held copy is dropped too");
}

static GONE_STALE: AtomicBool = AtomicBool::new(false);
static STALE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 1, stale = 30, prefix = "outcome_stale_none")]
async fn listing(id: u32) -> Option<String> {
    STALE_RUNS.fetch_add(1, SeqCst);
    (!GONE_STALE.load(SeqCst)).then(|| format!("listing {id}"))
}

/// `stale` keeps the old value when recomputing fails; a `None` is not a
/// failure: it is returned, and the entry goes.
#[tokio::test]
async fn a_stale_refresh_to_none_is_not_a_failure() {
    setup();
    assert_eq!(listing(1).await.as_deref(), Some("listing 1"));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    GONE_STALE.store(true, SeqCst);
    assert_eq!(listing(1).await, None, "the refreshing call");
    assert_eq!(listing(1).await, None, "the next one");
    assert_eq!(STALE_RUNS.load(SeqCst), 3, "no entry left to serve");
    let stats = cached_redis::local_stats("outcome_stale_none").unwrap();
    assert_eq!(stats.errors, 0, "{stats:?}");
}

#[cached(ttl = 600, prefix = "outcome_inner")]
async fn inner(id: u32) -> u32 {
    id
}

static OUTER_FAILS: AtomicBool = AtomicBool::new(false);

#[cached(ttl = 1, stale = 30, prefix = "outcome_outer")]
async fn outer(id: u32) -> Result<String, String> {
    let inner = inner(id).await;
    if OUTER_FAILS.load(SeqCst) {
        return Err("backend down".into());
    }
    Ok(format!("outer {inner}"))
}

/// A stale value served because its refresh failed is reported as that
/// value's entry (stale: `max_age` zero), not as the entry of the cached
/// call its body made.
#[tokio::test]
async fn a_failed_refresh_reports_the_value_it_serves() {
    setup();
    let (_, first) = cached_redis::with_entry_info(outer(1)).await;
    let first = first.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    OUTER_FAILS.store(true, SeqCst);
    let (value, info) = cached_redis::with_entry_info(outer(1)).await;
    assert_eq!(value.as_deref(), Ok("outer 1"), "the stale value");
    let info = info.unwrap();
    assert_eq!(info.status, CacheStatus::Hit);
    assert_eq!(info.content_hash, first.content_hash, "{info:?}");
    assert_eq!(info.max_age, Some(Duration::ZERO), "{info:?}");
}

#[cached(ttl = 600, prefix = "outcome_unkeyed")]
async fn unkeyed(x: f64) -> String {
    format!("{x} {}", inner(5).await)
}

/// A call that cannot be keyed (a NaN) runs uncached, and says so, even
/// when its body made a cached call.
#[tokio::test]
async fn an_uncached_call_reports_itself_not_its_body() {
    setup();
    let _ = inner(5).await;
    let (value, info) = cached_redis::with_entry_info(unkeyed(f64::NAN)).await;
    assert_eq!(value, "NaN 5");
    let info = info.unwrap();
    assert_eq!(info.status, CacheStatus::Miss, "{info:?}");
    assert_eq!((info.content_hash, info.max_age), (None, None));
}

static OUTER_PANICS: AtomicBool = AtomicBool::new(false);

#[cached(ttl = 1, stale = 30, prefix = "outcome_outer_panic")]
async fn outer_panicking(id: u32) -> Result<String, String> {
    let inner = inner(id).await;
    if OUTER_PANICS.load(SeqCst) {
        panic!("backend down");
    }
    Ok(format!("outer {inner}"))
}

/// The same when the refresh panics: the stale value it serves is
/// reported.
#[tokio::test]
async fn a_panicking_refresh_reports_the_value_it_serves() {
    setup();
    let (_, first) = cached_redis::with_entry_info(outer_panicking(1)).await;
    let first = first.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    OUTER_PANICS.store(true, SeqCst);
    let (value, info) = cached_redis::with_entry_info(outer_panicking(1)).await;
    assert_eq!(value.as_deref(), Ok("outer 1"), "the stale value");
    let info = info.unwrap();
    assert_eq!(info.content_hash, first.content_hash, "{info:?}");
    assert_eq!(info.max_age, Some(Duration::ZERO), "{info:?}");
}

static RACE_CALLS: AtomicUsize = AtomicUsize::new(0);
/// Lets the stale refresh's body end, once the newer write is done.
static REFRESH_MAY_END: AtomicBool = AtomicBool::new(false);

#[cached(ttl = 1, stale = 30, prefix = "outcome_late_none")]
async fn item(id: u32) -> Option<String> {
    match RACE_CALLS.fetch_add(1, SeqCst) {
        0 => Some(format!("v1 {id}")),
        // The stale refresh reads the row while it is gone, slowly: until
        // the row is back and written through.
        1 => {
            common::eventually("the newer write", || REFRESH_MAY_END.load(SeqCst)).await;
            None
        }
        // The row is back: a write-through stores it meanwhile.
        _ => Some(format!("v2 {id}")),
    }
}

/// A refresh that found nothing removes the entry it read, not a newer
/// one written while it ran.
#[tokio::test]
async fn a_late_refresh_to_none_leaves_a_newer_write() {
    setup();
    assert_eq!(item(1).await.as_deref(), Some("v1 1"));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let refreshing = tokio::spawn(item(1));
    common::eventually("the stale refresh's body", || RACE_CALLS.load(SeqCst) == 2).await;
    assert_eq!(item_refresh(1).await.as_deref(), Some("v2 1"));
    REFRESH_MAY_END.store(true, SeqCst);
    assert_eq!(refreshing.await.unwrap(), None);
    assert_eq!(item(1).await.as_deref(), Some("v2 1"), "the newer write");
    assert_eq!(RACE_CALLS.load(SeqCst), 3, "served from its entry");
}

static SLIDING_VALUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
static SLIDING_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 1, stale = 30, refresh = true, prefix = "outcome_sliding_stale")]
async fn sliding(id: u32) -> u64 {
    SLIDING_RUNS.fetch_add(1, SeqCst);
    SLIDING_VALUE.load(SeqCst) + u64::from(id)
}

/// A sliding entry nobody read for longer than `ttl` is stale: the next
/// call recomputes it (the entry was kept `ttl + stale` for that), where
/// it used to be served as fresh for as long as reads kept coming.
#[tokio::test]
async fn a_sliding_entry_idle_past_its_ttl_is_recomputed() {
    setup();
    assert_eq!(sliding(0).await, 1);
    assert_eq!(sliding(0).await, 1, "a hit");
    SLIDING_VALUE.store(2, SeqCst);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(sliding(0).await, 2, "recomputed by this call");
    assert_eq!(sliding(0).await, 2, "and stored");
    assert_eq!(SLIDING_RUNS.load(SeqCst), 2);
}

static SLIDING_PANICS: AtomicBool = AtomicBool::new(false);

#[cached(ttl = 1, stale = 30, refresh = true, prefix = "outcome_sliding_panic")]
async fn sliding_panicking(id: u32) -> Result<String, String> {
    if SLIDING_PANICS.load(SeqCst) {
        panic!("backend down");
    }
    Ok(format!("v {id}"))
}

/// The stale value of a sliding entry, served because its refresh
/// failed, is reported as stale (`max_age` zero).
#[tokio::test]
async fn a_stale_sliding_value_reports_no_freshness() {
    setup();
    assert_eq!(sliding_panicking(1).await.as_deref(), Ok("v 1"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    SLIDING_PANICS.store(true, SeqCst);
    let (value, info) = cached_redis::with_entry_info(sliding_panicking(1)).await;
    assert_eq!(value.as_deref(), Ok("v 1"), "the stale value");
    assert_eq!(info.unwrap().max_age, Some(Duration::ZERO));
}

static SLIDING_FAILS: AtomicBool = AtomicBool::new(false);
static SLIDING_SOURCE: AtomicUsize = AtomicUsize::new(1);

#[cached(ttl = 1, stale = 30, refresh = true, prefix = "outcome_sliding_retry")]
async fn sliding_failing(id: u32) -> Result<usize, String> {
    if SLIDING_FAILS.load(SeqCst) {
        return Err("down".into());
    }
    Ok(SLIDING_SOURCE.load(SeqCst) + id as usize)
}

/// A sliding entry whose refresh failed stays stale, so that the refresh
/// is tried again, rather than being made fresh by the read that found
/// it stale.
#[tokio::test]
async fn a_failed_sliding_refresh_is_tried_again() {
    setup();
    assert_eq!(sliding_failing(0).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    SLIDING_FAILS.store(true, SeqCst);
    SLIDING_SOURCE.store(2, SeqCst);
    assert_eq!(sliding_failing(0).await, Ok(1), "stale, its refresh failed");
    SLIDING_FAILS.store(false, SeqCst);
    // Read well within `ttl`, past the failed refresh's lock lease.
    let mut last = 0;
    for _ in 0..14 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        last = sliding_failing(0).await.unwrap();
    }
    assert_eq!(last, 2, "the refresh was tried again");
}

static LONG_SLIDING_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(
    ttl = 3600,
    stale = 30,
    refresh = true,
    prefix = "outcome_sliding_dropped"
)]
async fn long_sliding(id: u32) -> usize {
    LONG_SLIDING_RUNS.fetch_add(1, SeqCst) + id as usize
}

/// Polls a future until it has been pending `pendings` times, then drops
/// it: what a timeout or `select!` does when it fires at that moment.
/// `Some` when it finished first.
async fn dropped_after<F: std::future::Future>(pendings: usize, f: F) -> Option<F::Output> {
    let mut f = Box::pin(f);
    let mut left = pendings;
    std::future::poll_fn(move |cx| match f.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending if left <= 1 => std::task::Poll::Ready(None),
        std::task::Poll::Pending => {
            left -= 1;
            std::task::Poll::Pending
        }
    })
    .await
}

/// A read of a stale sliding entry that is dropped at any point (a
/// request timing out) leaves the entry stale: the store restarts a
/// sliding entry's lifetime only when it is not in its stale window, in
/// the same step as the read. It used to restart it, then set it back in
/// a second round trip, which a dropped call never sent: the old value was
/// then served as fresh for another whole `ttl`.
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_read_leaves_a_stale_sliding_entry_stale() {
    setup();
    let key = long_sliding_cache_key(1).unwrap();
    let mut raw = common::raw();
    assert_eq!(long_sliding(1).await, 1);
    for pendings in 1..=8 {
        // Nobody read it for longer than `ttl`: 20 s of its 30 s window left.
        let _: () = redis::Commands::pexpire(&mut raw, &key, 20_000).unwrap();
        let before: Vec<u8> = redis::Commands::get(&mut raw, &key).unwrap();
        let finished = dropped_after(pendings, long_sliding(1)).await;
        if finished.is_some() {
            break;
        }
        // What the dropped call had sent has run by now.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let left: i64 = redis::Commands::pttl(&mut raw, &key).unwrap();
        let after: Vec<u8> = redis::Commands::get(&mut raw, &key).unwrap();
        // A new value (its refresh stored it before the drop) is fresh.
        assert!(
            left <= 20_000 || after != before,
            "dropped after {pendings} pendings: the old entry has {left} ms left, fresh again"
        );
        // A dropped refresh leaves its lock to its lease (documented).
        let _: () = redis::Commands::del(&mut raw, format!("{key}:lock")).unwrap();
    }
    let _: () = redis::Commands::pexpire(&mut raw, &key, 20_000).unwrap();
    assert!(long_sliding(1).await > 1, "the stale entry is recomputed");
}

static HOT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(
    ttl = 1,
    stale = 30,
    refresh = true,
    local = 100,
    prefix = "outcome_sliding_hot"
)]
async fn hot(id: u32) -> u32 {
    HOT_RUNS.fetch_add(1, SeqCst);
    id
}

/// A sliding entry read often, mostly from the `local` level, is not
/// taken for idle by the store.
#[tokio::test]
async fn a_hot_sliding_entry_held_locally_is_not_idle() {
    setup();
    for _ in 0..30 {
        assert_eq!(hot(7).await, 7);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(HOT_RUNS.load(SeqCst), 1, "computed once");
}

static MISSING_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 600, prefix = "outcome_garbage_none")]
async fn missing(id: u32) -> Option<u32> {
    MISSING_RUNS.fetch_add(1, SeqCst);
    (id > 100).then_some(id)
}

/// Bytes that do not decode, under the key of a call whose result is not
/// cached (a `None`), are removed: nothing else would replace them, and
/// every call until they expire would count them again.
#[tokio::test]
async fn undecodable_bytes_a_none_does_not_replace_are_removed() {
    setup();
    let key = missing_cache_key(1).unwrap();
    let mut raw = common::raw();
    let _: () = redis::cmd("SET")
        .arg(key.as_str())
        .arg(b"not an entry".as_slice())
        .arg("EX")
        .arg(600)
        .query(&mut raw)
        .unwrap();
    assert_eq!(missing(1).await, None);
    assert_eq!(missing(1).await, None);
    assert_eq!(MISSING_RUNS.load(SeqCst), 2);
    let stats = cached_redis::local_stats("outcome_garbage_none").unwrap();
    assert_eq!(stats.errors, 1, "counted once: {stats:?}");
    let left: Option<Vec<u8>> = redis::cmd("GET").arg(key.as_str()).query(&mut raw).unwrap();
    assert_eq!(left, None, "removed");
}

/// A cache whose values may not exceed 4 KiB, for results too large to
/// store.
fn setup_small() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        cached_redis::init_named(
            "outcome_small",
            cached_redis::Config::builder()
                .redis_url(common::redis_url())
                .namespace(common::namespace("refresh_outcomes_small"))
                .max_value_bytes(4096)
                .build()
                .unwrap(),
        )
        .unwrap();
    });
}

static BIG_LEN: AtomicUsize = AtomicUsize::new(10);

#[cached(ttl = 600, prefix = "outcome_big", cache = "outcome_small")]
async fn blob(id: u8) -> Vec<u8> {
    vec![id; BIG_LEN.load(SeqCst)]
}

static BIG_LEN_LOCAL: AtomicUsize = AtomicUsize::new(10);

#[cached(
    ttl = 600,
    local = 10,
    prefix = "outcome_big_local",
    cache = "outcome_small"
)]
async fn held_blob(id: u8) -> Vec<u8> {
    vec![id; BIG_LEN_LOCAL.load(SeqCst)]
}

/// `_refresh` whose new value is too large to store returns it, and the
/// old value is not served in its place afterwards, from Redis or from
/// this process's level.
#[tokio::test]
async fn a_refresh_too_large_to_store_removes_the_old_entry() {
    setup_small();
    assert_eq!(blob(1).await.len(), 10);
    BIG_LEN.store(100_000, SeqCst);
    assert_eq!(blob_refresh(1).await.len(), 100_000);
    let key = blob_cache_key(1).unwrap();
    let left: Option<Vec<u8>> = redis::cmd("GET")
        .arg(key.as_str())
        .query(&mut common::raw())
        .unwrap();
    assert_eq!(left, None, "the old entry is gone");
    assert_eq!(blob(1).await.len(), 100_000, "the old value is not served");

    assert_eq!(held_blob(1).await.len(), 10);
    assert_eq!(held_blob(1).await.len(), 10, "held");
    BIG_LEN_LOCAL.store(100_000, SeqCst);
    assert_eq!(held_blob_refresh(1).await.len(), 100_000);
    assert_eq!(
        held_blob(1).await.len(),
        100_000,
        "the held copy is dropped too"
    );
}

static BIG_STALE_LEN: AtomicUsize = AtomicUsize::new(10);

#[cached(
    ttl = 1,
    stale = 30,
    prefix = "outcome_big_stale",
    cache = "outcome_small"
)]
async fn stale_blob(id: u8) -> Vec<u8> {
    vec![id; BIG_STALE_LEN.load(SeqCst)]
}

/// A stale refresh whose value is too large to store: the refreshing call
/// returns it, and the stale value is not served any more.
#[tokio::test]
async fn a_stale_refresh_too_large_to_store_removes_the_old_entry() {
    setup_small();
    assert_eq!(stale_blob(1).await.len(), 10);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    BIG_STALE_LEN.store(100_000, SeqCst);
    assert_eq!(stale_blob(1).await.len(), 100_000, "the refreshing call");
    let key = stale_blob_cache_key(1).unwrap();
    let left: Option<Vec<u8>> = redis::cmd("GET")
        .arg(key.as_str())
        .query(&mut common::raw())
        .unwrap();
    assert_eq!(left, None, "the stale entry is gone");
    assert_eq!(stale_blob(1).await.len(), 100_000, "the next call");
}
