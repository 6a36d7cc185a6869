//! A sentinel, or the master it names, frozen (`SIGSTOP`, as a VM pause
//! does): a sync cached function that needs a new connection still answers
//! within the configured timeouts, running its body, and caching resumes
//! once the server runs again.
//!
//! Each test owns its topology (a master and a sentinel watching it, on
//! free ports): freezing the suite's shared sentinel would break the tests
//! running beside it. The calls run on a helper thread and are awaited with
//! a generous deadline, so that a call blocked for good fails the test
//! instead of hanging it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cached_redis::{cached, Cache, Config};
use common::sentinel::Sentinel;

const TIMEOUT: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Far above what a bounded call takes (a few connect timeouts).
const DEADLINE: Duration = Duration::from_secs(30);

/// The master is never flagged down during a test: the frozen master must
/// be reached, and its `ROLE` check time out.
const NEVER_DOWN: &str = "sentinel down-after-milliseconds mymaster 600000\n\
                          sentinel failover-timeout mymaster 600000\n";

/// A sentinel of the test's own watching `master`.
fn sentinel_of(master: u16) -> Sentinel {
    Sentinel::start(master, NEVER_DOWN)
}

fn cache_of(sentinel: &Sentinel, test: &str) -> Cache {
    Cache::new(
        Config::builder()
            .redis_url(sentinel.url())
            .namespace(common::namespace(test))
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .breaker_cooldown(Duration::from_millis(300))
            .stats_flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// Calls `f(x)` for each of `xs` on a helper thread, in `cache`'s scope;
/// each call's value and duration, or a failure if one of them has not
/// come back within [`DEADLINE`] (the thread is then left blocked).
fn calls_come_back(cache: &Cache, f: fn(u32) -> u32, xs: &[u32]) -> Vec<(u32, Duration)> {
    let (tx, rx) = mpsc::channel();
    let (cache, xs2) = (cache.clone(), xs.to_vec());
    std::thread::spawn(move || {
        cache.in_scope(|| {
            for x in xs2 {
                let started = Instant::now();
                let value = f(x);
                if tx.send((value, started.elapsed())).is_err() {
                    return;
                }
            }
        })
    });
    xs.iter()
        .map(|x| {
            rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                panic!("the call for {x} did not come back within {DEADLINE:?}")
            })
        })
        .collect()
}

/// Whether a call of `f(x)` is eventually served from the cache (its
/// body, counted by `runs`, not run), within [`DEADLINE`].
fn eventually_cached(cache: &Cache, f: fn(u32) -> u32, runs: &AtomicUsize, x: u32) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        let before = runs.load(SeqCst);
        let took = calls_come_back(cache, f, &[x]);
        assert_eq!(took[0].0, x + 1000);
        if runs.load(SeqCst) == before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Calls `f` with each of `xs` while `what` is frozen: each call comes
/// back with its body's value, the body having run.
fn run_uncached_while_frozen(
    cache: &Cache,
    f: fn(u32) -> u32,
    runs: &AtomicUsize,
    xs: [u32; 3],
    what: &str,
) {
    let before = runs.load(SeqCst);
    let took = calls_come_back(cache, f, &xs);
    eprintln!("{what} frozen: calls took {took:?}");
    for (x, (value, _)) in xs.iter().zip(&took) {
        assert_eq!(*value, x + 1000, "the body's value");
    }
    assert_eq!(runs.load(SeqCst), before + 3, "each call ran the body");
}

static SENTINEL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 600, prefix = "frozen_sentinel")]
fn behind_a_frozen_sentinel(x: u32) -> u32 {
    SENTINEL_RUNS.fetch_add(1, SeqCst);
    x + 1000
}

#[test]
fn a_frozen_sentinel_never_blocks_a_sync_call() {
    let master = common::RedisServer::start();
    let sentinel = sentinel_of(master.port);
    let cache = cache_of(&sentinel, "sentinel_frozen-sentinel");
    let f = behind_a_frozen_sentinel as fn(u32) -> u32;

    // No connection yet: every call must ask the frozen sentinel.
    let frozen = sentinel.hang();
    run_uncached_while_frozen(&cache, f, &SENTINEL_RUNS, [1, 2, 3], "sentinel");
    drop(frozen);
    assert!(
        eventually_cached(&cache, f, &SENTINEL_RUNS, 7),
        "caching resumed once the sentinel ran again"
    );
}

static MASTER_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 600, prefix = "frozen_master")]
fn behind_a_frozen_master(x: u32) -> u32 {
    MASTER_RUNS.fetch_add(1, SeqCst);
    x + 1000
}

#[test]
fn a_frozen_master_never_blocks_a_sync_call() {
    let master = common::RedisServer::start();
    let sentinel = sentinel_of(master.port);
    let cache = cache_of(&sentinel, "sentinel_frozen-master");
    let f = behind_a_frozen_master as fn(u32) -> u32;

    // Connected and caching first.
    assert!(
        eventually_cached(&cache, f, &MASTER_RUNS, 1),
        "caching through the sentinel"
    );

    // The pooled connection times out and is dropped; the next connects
    // find the master through the (running) sentinel and must give up on
    // its `ROLE` check.
    let frozen = master.hang();
    run_uncached_while_frozen(&cache, f, &MASTER_RUNS, [11, 12, 13], "master");
    drop(frozen);
    assert!(
        eventually_cached(&cache, f, &MASTER_RUNS, 17),
        "caching resumed once the master ran again"
    );
}

static SECOND_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 600, prefix = "frozen_first")]
fn behind_a_frozen_first_sentinel(x: u32) -> u32 {
    SECOND_RUNS.fetch_add(1, SeqCst);
    x + 1000
}

#[test]
fn a_frozen_first_sentinel_leaves_the_second_to_answer() {
    let master = common::RedisServer::start();
    let first = sentinel_of(master.port);
    let second = sentinel_of(master.port);
    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/mymaster",
        first.port, second.port
    );
    let cache = Cache::new(
        Config::builder()
            .redis_url(url)
            .namespace(common::namespace("sentinel_frozen-first"))
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .breaker_cooldown(Duration::from_millis(300))
            .stats_flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
    )
    .unwrap();
    let f = behind_a_frozen_first_sentinel as fn(u32) -> u32;

    // No connection yet: the first sentinel named is frozen, the second
    // one finds the master, and caching works while the first stays
    // frozen.
    let _frozen = first.hang();
    assert!(
        eventually_cached(&cache, f, &SECOND_RUNS, 1),
        "caching through the second sentinel"
    );
}
