//! Behaviour of `#[cached]` against a real Redis: one test per promise of
//! the README and the API contract.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use cached_redis::cached;
use redis::Commands;
use serde::{Deserialize, Serialize};

fn setup() {
    common::init_once("basic");
}

fn stats(prefix: &str) -> cached_redis::StatsSnapshot {
    cached_redis::local_stats(prefix).unwrap_or_default()
}

static SQUARE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 60, prefix = "square")]
async fn square(x: u64) -> u64 {
    SQUARE_CALLS.fetch_add(1, SeqCst);
    x * x
}

#[tokio::test]
async fn miss_then_hit_runs_the_body_once() {
    setup();
    assert_eq!(square(7).await, 49);
    assert_eq!(square(7).await, 49);
    assert_eq!(SQUARE_CALLS.load(SeqCst), 1);
    let key = square_cache_key(7).unwrap();
    let ns = common::namespace("basic");
    assert!(key.starts_with(&format!("{ns}:square:")), "{key}");
    assert_eq!(key.len(), ns.len() + ":square:".len() + 22);
    let pttl: i64 = common::raw().pttl(&key).unwrap();
    assert!(
        (55_000..=60_000).contains(&pttl),
        "PTTL {pttl} not close to ttl = 60 s"
    );
}

static SYNC_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 30, prefix = "sync_double")]
fn sync_double(x: i32) -> i32 {
    SYNC_CALLS.fetch_add(1, SeqCst);
    x * 2
}

#[test]
fn sync_function_needs_no_runtime() {
    setup();
    assert_eq!(sync_double(21), 42);
    assert_eq!(sync_double(21), 42);
    assert_eq!(SYNC_CALLS.load(SeqCst), 1);
    let pttl: i64 = common::raw()
        .pttl(sync_double_cache_key(21).unwrap())
        .unwrap();
    assert!((25_000..=30_000).contains(&pttl), "PTTL {pttl}");
}

#[cached(ttl = 10, refresh = true, prefix = "sliding")]
async fn sliding(x: u32) -> u32 {
    x + 1
}

#[tokio::test]
async fn refresh_resets_the_ttl_on_every_hit() {
    setup();
    sliding(1).await;
    let key = sliding_cache_key(1).unwrap();
    let mut raw = common::raw();
    let _: () = raw.pexpire(&key, 2_000).unwrap();
    assert_eq!(sliding(1).await, 2);
    let pttl: i64 = raw.pttl(&key).unwrap();
    assert!(
        pttl > 8_000,
        "a hit should have restarted the 10 s TTL, PTTL is {pttl}"
    );
}

#[cached(ttl = 10, prefix = "fixed")]
async fn fixed(x: u32) -> u32 {
    x + 1
}

#[tokio::test]
async fn without_refresh_a_hit_keeps_the_ttl() {
    setup();
    fixed(1).await;
    let key = fixed_cache_key(1).unwrap();
    let mut raw = common::raw();
    let _: () = raw.pexpire(&key, 2_000).unwrap();
    fixed(1).await;
    let pttl: i64 = raw.pttl(&key).unwrap();
    assert!(pttl <= 2_000, "PTTL {pttl}");
}

/// Stands for a database client: not serializable, not part of the key.
struct Db {
    name: &'static str,
}

static LOOKUP_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(skip = "db", prefix = "lookup")]
async fn lookup(db: &Db, id: u32, lang: &str) -> String {
    LOOKUP_CALLS.fetch_add(1, SeqCst);
    format!("{id}-{lang}-{}", db.name.len())
}

#[tokio::test]
async fn skipped_arguments_do_not_change_the_key_the_others_do() {
    setup();
    let (a, b) = (Db { name: "primary" }, Db { name: "replica" });
    let first = lookup(&a, 1, "en").await;
    assert_eq!(
        lookup(&b, 1, "en").await,
        first,
        "served from the entry written via db a"
    );
    assert_eq!(LOOKUP_CALLS.load(SeqCst), 1);
    lookup(&a, 2, "en").await;
    lookup(&a, 1, "de").await;
    assert_eq!(LOOKUP_CALLS.load(SeqCst), 3);
    assert_ne!(
        lookup_cache_key(1, "en").unwrap(),
        lookup_cache_key(2, "en").unwrap()
    );
    assert_ne!(
        lookup_cache_key(1, "en").unwrap(),
        lookup_cache_key(1, "de").unwrap()
    );
}

static MAYBE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "maybe")]
async fn maybe(id: u32) -> Option<String> {
    MAYBE_CALLS.fetch_add(1, SeqCst);
    (id != 0).then(|| format!("user {id}"))
}

#[tokio::test]
async fn none_is_not_cached_some_is() {
    setup();
    assert_eq!(maybe(0).await, None);
    assert_eq!(maybe(0).await, None);
    assert_eq!(MAYBE_CALLS.load(SeqCst), 2);
    assert_eq!(maybe(5).await.as_deref(), Some("user 5"));
    assert_eq!(maybe(5).await.as_deref(), Some("user 5"));
    assert_eq!(MAYBE_CALLS.load(SeqCst), 3);
}

#[derive(Debug, PartialEq)]
struct NotSerializable;

static FALLIBLE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "fallible")]
fn fallible(id: u32) -> Result<u32, NotSerializable> {
    FALLIBLE_CALLS.fetch_add(1, SeqCst);
    if id == 0 {
        Err(NotSerializable)
    } else {
        Ok(id * 10)
    }
}

#[test]
fn err_is_not_cached_ok_is() {
    setup();
    assert_eq!(fallible(0), Err(NotSerializable));
    assert_eq!(fallible(0), Err(NotSerializable));
    assert_eq!(FALLIBLE_CALLS.load(SeqCst), 2);
    assert_eq!(fallible(3), Ok(30));
    assert_eq!(fallible(3), Ok(30));
    assert_eq!(FALLIBLE_CALLS.load(SeqCst), 3);
}

struct Repo {
    calls: AtomicUsize,
    version: u32,
}

impl Repo {
    #[cached(prefix = "repo_get")]
    async fn get(&self, id: u32) -> String {
        self.calls.fetch_add(1, SeqCst);
        format!("row {id} v{}", self.version)
    }

    #[cached(prefix = "repo_bump")]
    fn bump(&mut self, id: u32) -> u32 {
        self.version += 1;
        id + self.version
    }
}

#[tokio::test]
async fn methods_leave_self_out_of_the_key() {
    setup();
    let repo = Repo {
        calls: AtomicUsize::new(0),
        version: 1,
    };
    assert_eq!(repo.get(1).await, "row 1 v1");
    let other = Repo {
        calls: AtomicUsize::new(0),
        version: 2,
    };
    assert_eq!(
        other.get(1).await,
        "row 1 v1",
        "self is not part of the key"
    );
    assert_eq!(repo.calls.load(SeqCst) + other.calls.load(SeqCst), 1);
    assert!(Repo::get_cache_key(1).unwrap().contains(":repo_get:"));
    assert!(Repo::get_invalidate(1).await.unwrap());
    assert_eq!(other.get(1).await, "row 1 v2");

    let mut repo = repo;
    assert_eq!(repo.bump(10), 12);
    assert_eq!(repo.bump(10), 12, "hit: body (and its side effect) not run");
    assert_eq!(repo.version, 2);
    assert!(Repo::bump_invalidate(10).unwrap());
}

static GENERIC_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "generic")]
fn describe<T: Serialize + std::fmt::Display>(value: T) -> String {
    GENERIC_CALLS.fetch_add(1, SeqCst);
    format!("{value} as {}", std::any::type_name::<T>())
}

#[test]
fn generic_instances_never_share_an_entry() {
    setup();
    assert_eq!(describe::<u8>(5), "5 as u8");
    assert_eq!(describe::<u64>(5), "5 as u64");
    assert_eq!(describe::<u8>(5), "5 as u8");
    assert_eq!(GENERIC_CALLS.load(SeqCst), 2);
    assert_ne!(
        describe_cache_key::<u8>(5).unwrap(),
        describe_cache_key::<u64>(5).unwrap()
    );
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "counter")]
async fn counter(_name: String) -> usize {
    COUNTER.fetch_add(1, SeqCst) + 1
}

#[tokio::test]
async fn companions_invalidate_and_refresh() {
    setup();
    let name = || "c".to_owned();
    let first = counter(name()).await;
    assert_eq!(counter(name()).await, first);
    let refreshed = counter_refresh(name()).await;
    assert_eq!(
        refreshed,
        first + 1,
        "refresh runs the body whatever the cache holds"
    );
    assert_eq!(
        counter(name()).await,
        refreshed,
        "and stores what it computed"
    );
    assert!(counter_invalidate(name()).await.unwrap());
    assert!(
        !counter_invalidate(name()).await.unwrap(),
        "nothing left to remove"
    );
    assert_eq!(counter(name()).await, refreshed + 1);
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Hit {
    id: u64,
    title: String,
    tags: Vec<String>,
    score: f32,
}

#[cached(prefix = "search_page")]
async fn search_page(query: String) -> Vec<Hit> {
    (0..180)
        .map(|id| Hit {
            id,
            title: format!("{query}: result number {id} of the search"),
            tags: vec!["rust".into(), "cache".into(), "redis".into()],
            score: 1.0 / (id + 1) as f32,
        })
        .collect()
}

#[tokio::test]
async fn large_values_are_compressed() {
    setup();
    let page = search_page("compressible".into()).await;
    let json_len = serde_json::to_vec(&page).unwrap().len();
    assert!(json_len > 20_000, "fixture is {json_len} bytes of JSON");
    let stored: usize = common::raw()
        .strlen(search_page_cache_key("compressible".into()).unwrap())
        .unwrap();
    assert!(
        stored * 3 < json_len,
        "stored {stored} bytes for {json_len} bytes of JSON"
    );
    assert_eq!(search_page("compressible".into()).await, page);
}

static CONCURRENT_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "concurrent")]
async fn concurrent(x: u32) -> u32 {
    CONCURRENT_CALLS.fetch_add(1, SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    x + 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_tasks_without_errors() {
    setup();
    for round in 0..2 {
        let tasks: Vec<_> = (0..64)
            .map(|i| tokio::spawn(async move { concurrent(i % 16).await }))
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), (i as u32 % 16) + 1000, "round {round}");
        }
    }
    assert_eq!(stats("concurrent").errors, 0);
    assert!(CONCURRENT_CALLS.load(SeqCst) >= 16);
    let s = stats("concurrent");
    assert_eq!(s.hits + s.misses, 128);
    assert!(s.hits >= 64, "second round all hits: {s:?}");
}

static GARBAGE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "garbage")]
async fn garbage(case: u32) -> String {
    GARBAGE_CALLS.fetch_add(1, SeqCst);
    format!("value of case {case}").repeat(40)
}

/// A small xorshift generator: deterministic "random" bytes, no dependency.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.max(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

#[tokio::test]
async fn garbage_under_a_key_is_a_miss_and_gets_replaced() {
    setup();
    let mut raw = common::raw();
    // A real entry, to damage in several ways.
    let good = garbage(0).await;
    let valid: Vec<u8> = raw.get(garbage_cache_key(0).unwrap()).unwrap();
    let mut huge = valid.clone();
    huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    let cases: Vec<Vec<u8>> = vec![
        noise(1, 3),
        noise(2, 64),
        noise(3, 5000),
        valid[..valid.len() / 2].to_vec(),
        valid[..10].to_vec(),
        huge,
        Vec::new(),
    ];
    for (i, bytes) in cases.into_iter().enumerate() {
        let case = i as u32 + 1;
        let key = garbage_cache_key(case).unwrap();
        let _: () = raw.set(&key, bytes).unwrap();
        let before_calls = GARBAGE_CALLS.load(SeqCst);
        let before_errors = stats("garbage").errors;
        let value = garbage(case).await;
        assert_eq!(value, format!("value of case {case}").repeat(40));
        assert_eq!(
            GARBAGE_CALLS.load(SeqCst),
            before_calls + 1,
            "case {case}: a miss"
        );
        assert_eq!(
            stats("garbage").errors,
            before_errors + 1,
            "case {case}: counted"
        );
        garbage(case).await;
        assert_eq!(
            GARBAGE_CALLS.load(SeqCst),
            before_calls + 1,
            "case {case}: the entry was replaced by a valid one"
        );
    }
    assert_eq!(garbage(0).await, good);
}

#[cached(prefix = "too_big")]
async fn too_big(mib: usize) -> String {
    "x".repeat(mib << 20)
}

#[tokio::test]
async fn a_value_over_max_value_bytes_is_returned_not_stored() {
    setup();
    let value = too_big(9).await;
    assert_eq!(value.len(), 9 << 20);
    let exists: bool = common::raw().exists(too_big_cache_key(9).unwrap()).unwrap();
    assert!(!exists, "9 MiB is over the default 8 MiB max_value_bytes");
    too_big(1).await;
    let exists: bool = common::raw().exists(too_big_cache_key(1).unwrap()).unwrap();
    assert!(exists, "1 MiB is stored");
}

static FLOAT_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "float_arg")]
fn float_arg(x: Option<f64>) -> String {
    FLOAT_CALLS.fetch_add(1, SeqCst);
    format!("{x:?}")
}

#[test]
fn nan_and_infinities_bypass_the_cache() {
    setup();
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(float_arg_cache_key(Some(x)).is_err());
        let before = FLOAT_CALLS.load(SeqCst);
        let errors = stats("float_arg").errors;
        float_arg(Some(x));
        float_arg(Some(x));
        assert_eq!(FLOAT_CALLS.load(SeqCst), before + 2, "{x} runs every time");
        assert_eq!(
            stats("float_arg").errors,
            errors + 2,
            "{x} counted as errors"
        );
    }
    // None keys like JSON null and is cached normally; it never shares an
    // entry with NaN (which has no entry at all).
    assert_eq!(float_arg(None), "None");
    let before = FLOAT_CALLS.load(SeqCst);
    assert_eq!(float_arg(None), "None");
    assert_eq!(FLOAT_CALLS.load(SeqCst), before);
    assert_eq!(float_arg(Some(f64::NAN)), "Some(NaN)");
}

#[cached(prefix = "by_map")]
fn by_map(filters: HashMap<String, u32>) -> usize {
    filters.len()
}

#[test]
fn a_hashmap_keys_the_same_whatever_its_order() {
    setup();
    let mut a = HashMap::new();
    let mut b = HashMap::new();
    for i in 0..100 {
        a.insert(format!("field{i}"), i);
    }
    for i in (0..100).rev() {
        b.insert(format!("field{i}"), i);
    }
    assert_eq!(by_map_cache_key(a).unwrap(), by_map_cache_key(b).unwrap());
}

static RT_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "across_runtimes")]
async fn across_runtimes(x: u32) -> u32 {
    RT_CALLS.fetch_add(1, SeqCst);
    x
}

#[test]
fn a_runtime_shutting_down_does_not_break_the_next_one() {
    setup();
    for round in 0..3 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(across_runtimes(7)), 7);
        drop(rt);
        assert_eq!(
            RT_CALLS.load(SeqCst),
            1,
            "round {round}: hit in every new runtime"
        );
    }
    let s = stats("across_runtimes");
    assert_eq!((s.misses, s.hits, s.errors), (1, 2, 0));
}

#[cached(prefix = "flushed")]
async fn flushed(x: u32) -> u32 {
    x
}

#[tokio::test]
async fn hits_and_misses_reach_the_stats_hash() {
    setup();
    flushed(1).await;
    flushed(1).await;
    flushed(1).await;
    flushed(2).await;
    cached_redis::flush_stats().await.unwrap();
    let hash = format!("{}:flushed:stats", common::namespace("basic"));
    let fields: HashMap<String, String> = common::raw().hgetall(&hash).unwrap();
    assert_eq!(
        fields.get("hits").map(String::as_str),
        Some("2"),
        "{fields:?}"
    );
    assert_eq!(
        fields.get("misses").map(String::as_str),
        Some("2"),
        "{fields:?}"
    );
    assert_eq!(
        fields.get("stores").map(String::as_str),
        Some("2"),
        "{fields:?}"
    );
}

#[cached(prefix = "no_runtime")]
async fn no_runtime(x: u32) -> u32 {
    x + 1
}

/// A minimal executor that is not tokio.
fn block_on_without_tokio<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

#[test]
fn outside_a_tokio_runtime_the_function_still_runs() {
    setup();
    assert_eq!(block_on_without_tokio(no_runtime(1)), 2);
    assert_eq!(block_on_without_tokio(no_runtime(1)), 2);
    let s = stats("no_runtime");
    assert_eq!((s.errors, s.hits), (2, 0), "uncached and counted, no panic");
}

#[cached(ttl = 60, prefix = "unbounded_async")]
async fn unbounded_async(x: u64) -> u64 {
    x + 1
}

#[cached(ttl = 60, prefix = "unbounded_sync")]
fn unbounded_sync(x: u64) -> u64 {
    x + 2
}

/// Timeouts and a cooldown of `Duration::MAX` are accepted by `build()`
/// and mean "no bound": calls answer and store, where doubling the
/// connect timeout once panicked in every async call.
#[test]
fn the_longest_timeouts_mean_no_bound() {
    let max = std::time::Duration::MAX;
    let namespace = format!("{}-max", common::namespace("basic"));
    let cache = cached_redis::Cache::new(
        cached_redis::Config::builder()
            .redis_url(common::redis_url())
            .namespace(namespace.as_str())
            .connect_timeout(max)
            .timeout(max)
            .breaker_cooldown(max)
            .build()
            .expect("accepted"),
    )
    .expect("cache");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let answered = rt
        .block_on(async { tokio::spawn(cache.clone().scope(unbounded_async(1))).await })
        .expect("the call did not panic");
    assert_eq!(answered, 2);
    assert_eq!(cache.in_scope(|| unbounded_sync(1)), 3);
    for prefix in ["unbounded_async", "unbounded_sync"] {
        assert_eq!(
            common::entry_keys(&namespace, prefix).len(),
            1,
            "{prefix}: stored"
        );
    }
}
