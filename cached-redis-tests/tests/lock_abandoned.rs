//! `lock = true`: a holder that never finishes (its body panicked, its
//! future was dropped) releases its Redis lock on the way out, so the
//! callers behind it, in this process and in others, take over at once
//! instead of when the lease runs out.
//!
//! How it is told apart from the lease running out: Redis's own clock. The
//! lock of a body that never ran has a 5 s lease; each poll reads the lock's
//! remaining lifetime (`PTTL`), and the lock must vanish while the last
//! reading still gave it over a second: deleted, not expired. Waits are
//! bounded only so that a broken build fails instead of hanging.

mod common;

use std::time::{Duration, Instant};

use cached_redis::cached;
use redis::Commands;

/// How long a behaviour may take to show before the test gives up.
const PATIENCE: Duration = Duration::from_secs(15);

#[cached(prefix = "la_panics", lock = true)]
async fn panics(x: u32) -> u32 {
    tokio::time::sleep(Duration::from_millis(5)).await;
    panic!("the body of {x} fails")
}

#[cached(prefix = "la_slow", lock = true)]
async fn slow(x: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    x
}

#[cached(prefix = "la_sync_panics", lock = true)]
fn sync_panics(x: u32) -> u32 {
    panic!("the body of {x} fails")
}

/// Waits until the lock `lock_key` is gone, and says whether it was
/// deleted while its lease still had over a second to run.
fn released_before_its_lease(lock_key: &str) -> bool {
    let mut raw = common::raw();
    let deadline = Instant::now() + PATIENCE;
    let mut last_pttl = i64::MAX;
    loop {
        let pttl: i64 = raw.pttl(lock_key).unwrap();
        if pttl == -2 {
            return last_pttl > 1_000;
        }
        assert!(Instant::now() < deadline, "the lock never went");
        last_pttl = pttl;
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `call` in `runtime`'s `block_on` until it holds the lock
/// `lock_key`, then gives it up as a timeout would: the call is dropped as
/// `block_on` returns.
fn drop_once_locked(
    runtime: &tokio::runtime::Runtime,
    call: impl std::future::Future<Output = u32>,
    lock_key: &str,
) {
    runtime.block_on(async {
        tokio::pin!(call);
        let mut raw = common::raw();
        let deadline = Instant::now() + PATIENCE;
        while !raw.exists::<_, bool>(lock_key).unwrap() {
            assert!(Instant::now() < deadline, "the call never took its lock");
            tokio::select! {
                _ = &mut call => panic!("the body returned"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    });
}

/// The lock of the entry under `key` (its key with `:lock` appended).
fn lock_key(key: String) -> String {
    format!("{key}:lock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_body_panics_releases_its_lock() {
    common::init_once("lock_abandoned");
    let key = lock_key(panics_cache_key(1).unwrap());
    assert!(tokio::spawn(panics(1)).await.is_err(), "the body panicked");
    assert!(
        released_before_its_lease(&key),
        "the lock was left to its lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_future_is_dropped_releases_its_lock() {
    common::init_once("lock_abandoned");
    let key = lock_key(slow_cache_key(1).unwrap());
    let call = tokio::spawn(slow(1));
    // Dropped while its body runs, holding the lock.
    let mut raw = common::raw();
    let deadline = Instant::now() + PATIENCE;
    while !raw.exists::<_, bool>(&key).unwrap() {
        assert!(Instant::now() < deadline, "the call never took its lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    assert!(
        released_before_its_lease(&key),
        "the lock was left to its lease"
    );
}

#[test]
fn a_sync_holder_whose_body_panics_releases_its_lock() {
    common::init_once("lock_abandoned");
    let key = lock_key(sync_panics_cache_key(1).unwrap());
    assert!(std::panic::catch_unwind(|| sync_panics(1)).is_err());
    // Released before the call returned: a sync caller waits for it.
    let pttl: i64 = common::raw().pttl(&key).unwrap();
    assert_eq!(pttl, -2, "the lock is still there");
}

#[cached(prefix = "la_foreign", lock = true)]
async fn foreign(x: u32) -> u32 {
    x + 1
}

#[cached(prefix = "la_sync_foreign", lock = true)]
fn sync_foreign(x: u32) -> u32 {
    x + 1
}

/// Puts under the lock of `entry_key` what no holder writes: a list, or a
/// string without an expiry. Returns the lock's key.
fn foreign_lock(entry_key: String, as_list: bool) -> String {
    let key = lock_key(entry_key);
    let mut raw = common::raw();
    if as_list {
        let _: () = raw.rpush(&key, "junk").unwrap();
    } else {
        let _: () = raw.set(&key, "left by hand").unwrap();
    }
    key
}

/// A lock key that no holder wrote is taken over: it made every miss of its
/// key wait for the longest wait (30 s), for good, since nothing removed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_key_no_holder_wrote_is_taken_over() {
    common::init_once("lock_abandoned");
    for (x, as_list) in [(1, true), (2, false)] {
        let key = foreign_lock(foreign_cache_key(x).unwrap(), as_list);
        let answer = tokio::time::timeout(PATIENCE, foreign(x)).await;
        assert_eq!(answer.ok(), Some(x + 1), "the miss waited for the lock");
        let pttl: i64 = common::raw().pttl(&key).unwrap();
        assert_eq!(pttl, -2, "taken over and released (list: {as_list})");
    }
}

#[test]
fn a_sync_caller_takes_over_a_lock_key_no_holder_wrote() {
    common::init_once("lock_abandoned");
    for (x, as_list) in [(1, true), (2, false)] {
        let key = foreign_lock(sync_foreign_cache_key(x).unwrap(), as_list);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(sync_foreign(x)));
        assert_eq!(
            rx.recv_timeout(PATIENCE).ok(),
            Some(x + 1),
            "the miss waited"
        );
        let pttl: i64 = common::raw().pttl(&key).unwrap();
        assert_eq!(pttl, -2, "taken over and released (list: {as_list})");
    }
}

#[cached(prefix = "la_shut_down", lock = true)]
async fn held_at_shutdown(x: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    x
}

/// A runtime shutting down drops the holder it runs; the release it then
/// starts cannot run on that runtime, and left the lock to its lease (a
/// test's or a program's next runtime waited for it).
#[test]
fn a_holder_dropped_by_its_runtime_shutting_down_releases_its_lock() {
    common::init_once("lock_abandoned");
    let key = lock_key(held_at_shutdown_cache_key(1).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.spawn(held_at_shutdown(1));
    let mut raw = common::raw();
    let deadline = Instant::now() + PATIENCE;
    while !raw.exists::<_, bool>(&key).unwrap() {
        assert!(Instant::now() < deadline, "the call never took its lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(runtime);
    // Released before the runtime's drop returns: a program whose `main`
    // returns next exits at once.
    let pttl: i64 = common::raw().pttl(&key).unwrap();
    assert_eq!(pttl, -2, "the lock is still there");
}

#[cached(prefix = "la_block_on", lock = true)]
async fn held_in_block_on(x: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    x
}

/// A current-thread runtime runs its tasks only inside `block_on`: a
/// holder dropped by a timeout as its `block_on` returns, after which
/// the runtime is dropped (or just left idle), cannot release its lock
/// from there, and the next caller waited for the whole lease.
#[test]
fn a_holder_dropped_as_its_block_on_returns_releases_its_lock() {
    common::init_once("lock_abandoned");
    let key = lock_key(held_in_block_on_cache_key(1).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    drop_once_locked(&runtime, held_in_block_on(1), &key);
    // Idle, not dropped: still nothing of it runs.
    assert!(
        released_before_its_lease(&key),
        "the lock was left to its lease"
    );
    drop(runtime);
}

#[cached(prefix = "la_dropped_next", lock = true)]
async fn held_then_dropped(x: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    x
}

/// A holder dropped as a multi-threaded runtime's `block_on` returns,
/// the runtime dropped right after: a release spawned on that runtime
/// was cancelled with it (or waited on its connection, whose driver went
/// too), and the lock was left to its lease.
#[test]
fn a_holder_dropped_just_before_its_runtime_releases_its_lock() {
    common::init_once("lock_abandoned");
    for x in 0..3 {
        let key = lock_key(held_then_dropped_cache_key(x).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        drop_once_locked(&runtime, held_then_dropped(x), &key);
        drop(runtime);
        assert!(
            released_before_its_lease(&key),
            "round {x}: the lock was left to its lease"
        );
    }
}

/// The lock script run twice for one call (a client that sent it again
/// after a late answer or a broken connection, as the cluster client
/// does): the second run finds the call's own token and reports the lock
/// taken, for a lease from then; another token still finds it held.
#[test]
fn the_lock_script_run_twice_for_one_call_takes_the_lock_both_times() {
    let mut raw = common::raw();
    let lock = format!("{}:script:lock", common::namespace("lock_abandoned"));
    let script = redis::Script::new(cached_redis::__private::LOCK_SCRIPT);
    let take = |raw: &mut redis::Connection, token: &str, lease_ms: u64| -> i64 {
        script
            .key(&lock)
            .arg(token)
            .arg(lease_ms)
            .invoke(raw)
            .unwrap()
    };
    assert_eq!(take(&mut raw, "mine", 1_000), 1, "a free lock is taken");
    assert_eq!(
        take(&mut raw, "mine", 60_000),
        1,
        "taken by this call already"
    );
    let pttl: i64 = raw.pttl(&lock).unwrap();
    assert!(
        pttl > 30_000,
        "the second run's lease counts from it: {pttl} ms"
    );
    assert_eq!(take(&mut raw, "theirs", 1_000), 0, "held by another call");
    let holder: String = raw.get(&lock).unwrap();
    assert_eq!(holder, "mine");
    let _: () = raw.del(&lock).unwrap();
}
