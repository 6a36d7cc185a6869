//! `lock = true` across real processes: one computation per key however
//! many processes miss at once, and a holder that dies delays the others by
//! no more than the lock's lease.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cached_redis::cached;
use redis::Commands;

const ROLE: &str = "CACHED_REDIS_LOCK_ROLE";
const NS: &str = "CACHED_REDIS_LOCK_NS";
const KEY: &str = "CACHED_REDIS_LOCK_KEY";
/// How long a test waits for a holder to take its lock: a holder whose
/// `SET NX` failed (a loaded machine) runs without one, and the test must
/// fail then, not wait for good.
const LOCK_WAIT_MAX: Duration = Duration::from_secs(30);

/// Waits until some holder has taken `lock`, for [`LOCK_WAIT_MAX`] at most.
async fn until_taken(raw: &mut redis::Connection, lock: &str) {
    let waiting = Instant::now();
    while !raw.exists::<_, bool>(lock).unwrap() {
        assert!(
            waiting.elapsed() < LOCK_WAIT_MAX,
            "the holder never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Counts its runs in Redis, where every process sees them. How long it
/// takes depends on the process's role.
#[cached(lock = true, prefix = "locked")]
async fn locked(key: u64) -> u64 {
    let ns = std::env::var(NS).unwrap();
    let mut raw = common::raw();
    let _: i64 = raw.incr(format!("{ns}:test:runs:{key}"), 1).unwrap();
    let _: () = raw.set(format!("{ns}:test:started:{key}"), 1).unwrap();
    let body = match std::env::var(ROLE).as_deref() {
        Ok("holder") => Duration::from_secs(60),
        Ok("parent") => Duration::from_millis(10),
        _ => Duration::from_millis(200),
    };
    tokio::time::sleep(body).await;
    key * 10
}

#[cached(prefix = "unlocked")]
async fn unlocked(key: u64) -> u64 {
    let ns = std::env::var(NS).unwrap();
    let _: i64 = common::raw()
        .incr(format!("{ns}:test:unlocked_runs:{key}"), 1)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    key * 10
}

fn init(namespace: &str) {
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(common::redis_url())
            .namespace(namespace)
            .build()
            .unwrap(),
    )
    .unwrap();
}

/// Child side: 100 concurrent calls, released together by a start flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "spawned by the tests below"]
async fn child() {
    let (Ok(ns), Ok(role)) = (std::env::var(NS), std::env::var(ROLE)) else {
        return;
    };
    let key: u64 = std::env::var(KEY).unwrap().parse().unwrap();
    init(&ns);
    let go = format!("{ns}:test:go:{key}");
    while !common::raw().exists::<_, bool>(&go).unwrap() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let calls = if role == "holder" { 1 } else { 100 };
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let role = role.clone();
            tokio::spawn(async move {
                if role == "unlocked" {
                    unlocked(key).await
                } else {
                    locked(key).await
                }
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), key * 10);
    }
}

fn spawn_child(ns: &str, role: &str, key: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--ignored", "--nocapture"])
        .env(NS, ns)
        .env(ROLE, role)
        .env(KEY, key.to_string())
        .env("CACHED_REDIS_TEST_URL", common::redis_url())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn runs(ns: &str, what: &str, key: u64) -> i64 {
    common::raw()
        .get::<_, Option<i64>>(format!("{ns}:test:{what}:{key}"))
        .unwrap()
        .unwrap_or(0)
}

#[test]
fn four_processes_on_a_cold_key_run_the_body_once() {
    let ns = common::namespace("lock4");
    let key = 1;
    let children: Vec<_> = (0..4).map(|_| spawn_child(&ns, "worker", key)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let _: () = common::raw().set(format!("{ns}:test:go:{key}"), 1).unwrap();
    for mut c in children {
        let status = common::wait_within(&mut c, common::CHILD_LIMIT).expect("a child hung");
        assert!(status.success(), "a child failed");
    }
    assert_eq!(
        runs(&ns, "runs", key),
        1,
        "4 processes x 100 calls, one computation"
    );

    // Without the lock each process computes once (in-process coalescing
    // only): shown for contrast, not a promise.
    let key = 2;
    let children: Vec<_> = (0..4).map(|_| spawn_child(&ns, "unlocked", key)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let _: () = common::raw().set(format!("{ns}:test:go:{key}"), 1).unwrap();
    for mut c in children {
        let status = common::wait_within(&mut c, common::CHILD_LIMIT).expect("a child hung");
        assert!(status.success());
    }
    let unlocked = runs(&ns, "unlocked_runs", key);
    eprintln!("without lock: {unlocked} computations for 4 processes x 100 calls");
    assert!((1..=4).contains(&unlocked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_delays_the_others_by_at_most_the_lease() {
    let ns = common::namespace("lockkill");
    let key = 3;
    // SAFETY: set before this process's first cached call reads them; the
    // test binary runs this test alone in its process when it matters.
    unsafe {
        std::env::set_var(NS, &ns);
        std::env::set_var(ROLE, "parent");
    }
    init(&ns);
    let _: () = common::raw().set(format!("{ns}:test:go:{key}"), 1).unwrap();
    let mut holder = spawn_child(&ns, "holder", key);
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs(&ns, "started", key) == 0 {
        assert!(Instant::now() < deadline, "holder never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = Instant::now();
    holder.kill().unwrap();
    holder.wait().unwrap();

    assert_eq!(locked(key).await, key * 10);
    let waited = killed_at.elapsed();
    eprintln!(
        "the holder died; the next caller waited {waited:?} (lease for an unmeasured body: 5 s)"
    );
    assert!(
        waited <= Duration::from_secs(5) + Duration::from_secs(1),
        "waited {waited:?}"
    );
    assert_eq!(runs(&ns, "runs", key), 2, "the dead holder's run and ours");
}

/// What the keys other than 100 cost in `leased` and `sync_leased`.
const TEACHING_BODY: Duration = Duration::from_millis(200);

/// What key 100 costs in `leased` and `sync_leased`: far past the lease
/// the other keys teach.
const SLOW_BODY_MS: u64 = 2_500;

static LEASED_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// 200 ms for most keys; key 100 takes `slow_ms`, far past the lease that
/// the other keys taught the function (4 × 200 + 100 = 900 ms, renewed
/// every 300 ms: a renewal late by up to 600 ms on a loaded machine still
/// keeps the lock).
#[cached(lock = true, prefix = "leased", skip = "slow_ms")]
async fn leased(key: u64, slow_ms: u64) -> u64 {
    if key == 100 {
        LEASED_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    } else {
        tokio::time::sleep(TEACHING_BODY).await;
    }
    key
}

static SYNC_LEASED_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cached(lock = true, prefix = "sync_leased", skip = "slow_ms")]
fn sync_leased(key: u64, slow_ms: u64) -> u64 {
    if key == 100 {
        SYNC_LEASED_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(slow_ms));
    } else {
        std::thread::sleep(TEACHING_BODY);
    }
    key
}

/// A cache of its own on the shared namespace of one test: two of them
/// coalesce nothing in the process, and meet only at the Redis lock, as
/// two processes do.
fn cache_on(namespace: &str) -> cached_redis::Cache {
    cached_redis::Cache::new(
        cached_redis::Config::builder()
            .redis_url(common::redis_url())
            .namespace(namespace)
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// A holder whose body runs past its lease keeps the lock (renewed while
/// the body runs): the other caller waits for its value instead of
/// computing the key again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_its_lease_keeps_the_lock() {
    let namespace = common::namespace("lock_processes_lease");
    let (a, b) = (cache_on(&namespace), cache_on(&namespace));
    for key in 0..4 {
        a.scope(leased(key, 0)).await;
    }
    let first = tokio::spawn({
        let a = a.clone();
        async move { a.scope(leased(100, SLOW_BODY_MS)).await }
    });
    // Until the holder has the lock.
    let lock = format!(
        "{}:lock",
        a.scope(async { leased_cache_key(100) }).await.unwrap()
    );
    let mut raw = common::raw();
    until_taken(&mut raw, &lock).await;
    let second = tokio::spawn(async move { b.scope(leased(100, SLOW_BODY_MS)).await });
    assert_eq!((first.await.unwrap(), second.await.unwrap()), (100, 100));
    assert_eq!(LEASED_RUNS.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_sync_body_slower_than_its_lease_keeps_the_lock() {
    let namespace = common::namespace("lock_processes_sync_lease");
    let (a, b) = (cache_on(&namespace), cache_on(&namespace));
    for key in 0..4 {
        a.in_scope(|| sync_leased(key, 0));
    }
    let lock = format!(
        "{}:lock",
        a.in_scope(|| sync_leased_cache_key(100)).unwrap()
    );
    let first = std::thread::spawn({
        let a = a.clone();
        move || a.in_scope(|| sync_leased(100, SLOW_BODY_MS))
    });
    let mut raw = common::raw();
    let waiting = Instant::now();
    while !raw.exists::<_, bool>(&lock).unwrap() {
        assert!(
            waiting.elapsed() < LOCK_WAIT_MAX,
            "the holder never took the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = std::thread::spawn(move || b.in_scope(|| sync_leased(100, SLOW_BODY_MS)));
    assert_eq!((first.join().unwrap(), second.join().unwrap()), (100, 100));
    assert_eq!(
        SYNC_LEASED_RUNS.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

static RELEARNED_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Keys from 100 take `slow_ms`; the runs of key 100 are counted.
#[cached(lock = true, prefix = "relearned", skip = "slow_ms")]
async fn relearned(key: u64, slow_ms: u64) -> u64 {
    if key == 100 {
        RELEARNED_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    let ms = if key >= 100 { slow_ms } else { 10 };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    key
}

/// The renewals extend the lease the lock was taken for. The function's
/// estimate grows while the holder waits (another key's slow run), so a
/// lease worked out again when the body starts is four times longer, and
/// its first renewal came after the lock had lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_the_lease_the_lock_was_taken_for() {
    let namespace = common::namespace("lock_processes_relearned");
    let (a, b) = (cache_on(&namespace), cache_on(&namespace));
    for key in 0..4 {
        a.scope(relearned(key, 0)).await;
    }
    // Held by someone else while the estimate grows: the holder-to-be
    // waits, with the lease of a fast function (0.5 s).
    let key = a.scope(async { relearned_cache_key(100) }).await.unwrap();
    let lock = format!("{key}:lock");
    let mut raw = common::raw();
    let _: () = redis::cmd("SET")
        .arg(&lock)
        .arg("someone")
        .arg("PX")
        .arg(2_500)
        .query(&mut raw)
        .unwrap();
    let first = tokio::spawn({
        let a = a.clone();
        async move { a.scope(relearned(100, 1_500)).await }
    });
    a.scope(relearned(200, 2_000)).await;
    // Until the holder-to-be has the lock.
    let waiting = Instant::now();
    loop {
        assert!(
            waiting.elapsed() < LOCK_WAIT_MAX,
            "the holder-to-be never took the lock"
        );
        let holder: Option<String> = raw.get(&lock).unwrap();
        if holder.as_deref().is_some_and(|h| h != "someone") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = tokio::spawn(async move { b.scope(relearned(100, 1_500)).await });
    assert_eq!((first.await.unwrap(), second.await.unwrap()), (100, 100));
    assert_eq!(RELEARNED_RUNS.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[cached(lock = true, prefix = "hangs")]
async fn hangs(key: u64) -> u64 {
    std::future::pending::<()>().await;
    key
}

/// A holder whose body hangs stops renewing once the others have waited
/// as long as they ever wait (30 s): its lock then lapses like a dead
/// holder's, instead of making every miss of the key wait for good.
/// (About 35 s: the wait is the rule under test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_hangs_loses_its_lock() {
    let namespace = common::namespace("lock_processes_hangs");
    let a = cache_on(&namespace);
    let lock = format!(
        "{}:lock",
        a.scope(async { hangs_cache_key(1) }).await.unwrap()
    );
    let holder = tokio::spawn(async move { a.scope(hangs(1)).await });
    let mut raw = common::raw();
    until_taken(&mut raw, &lock).await;
    let taken = Instant::now();
    // Bounded only so that a broken build fails instead of hanging: 30 s
    // of renewals, then at most one lease (5 s before any run) to lapse.
    while raw.exists::<_, bool>(&lock).unwrap() {
        assert!(
            taken.elapsed() < Duration::from_secs(60),
            "still held after a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!holder.is_finished(), "the body still hangs");
    holder.abort();
}
