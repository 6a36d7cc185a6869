//! In-process coalescing: concurrent calls with one key run the body once;
//! an error or a panic in that run reaches every waiter as its own call
//! would, and nobody is left waiting.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use cached_redis::cached;

fn setup() {
    common::init_once("coalescing");
}

static SLOW_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "coalesce_slow")]
async fn slow(x: u32) -> u32 {
    SLOW_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    x * 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_calls_run_the_body_once() {
    setup();
    let tasks: Vec<_> = (0..100).map(|_| tokio::spawn(slow(21))).collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 42);
    }
    assert_eq!(SLOW_RUNS.load(SeqCst), 1);
    let s = cached_redis::local_stats("coalesce_slow").unwrap();
    assert_eq!((s.misses, s.hits, s.errors), (1, 99, 0));
}

static FAILING_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "coalesce_err")]
async fn failing(x: u32) -> Result<u32, String> {
    FAILING_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Err(format!("backend down for {x}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_error_reaches_every_waiter_and_is_not_cached() {
    setup();
    let tasks: Vec<_> = (0..50).map(|_| tokio::spawn(failing(7))).collect();
    for t in tasks {
        let result = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("no waiter is left hanging")
            .unwrap();
        assert_eq!(result, Err("backend down for 7".to_owned()));
    }
    // The leader's error is not shared: each waiter ran its own call.
    assert_eq!(FAILING_RUNS.load(SeqCst), 50);
    assert_eq!(failing(7).await, Err("backend down for 7".to_owned()));
}

static PANICKED_ONCE: AtomicBool = AtomicBool::new(false);
static PANIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "coalesce_panic")]
async fn panics_first(x: u32) -> u32 {
    PANIC_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    if !PANICKED_ONCE.swap(true, SeqCst) {
        panic!("first run fails");
    }
    x + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_leader_releases_its_waiters() {
    setup();
    let leader = tokio::spawn(panics_first(1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiters: Vec<_> = (0..20).map(|_| tokio::spawn(panics_first(1))).collect();
    assert!(leader.await.unwrap_err().is_panic());
    for w in waiters {
        let value = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("no waiter is left hanging")
            .unwrap();
        assert_eq!(value, 2);
    }
    assert!(PANIC_RUNS.load(SeqCst) >= 2);
}

static SYNC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "coalesce_sync")]
fn slow_sync(x: u32) -> u32 {
    SYNC_RUNS.fetch_add(1, SeqCst);
    std::thread::sleep(Duration::from_millis(200));
    x * 3
}

#[test]
fn sync_callers_coalesce_too() {
    setup();
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                slow_sync(5)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 15);
    }
    assert_eq!(SYNC_RUNS.load(SeqCst), 1);
}
