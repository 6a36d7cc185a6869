//! In-process coalescing: concurrent calls with one key run the body once;
//! when that run fails (an error, a panic), one waiter takes over while the
//! rest keep waiting, so a failing backend sees one call at a time; each
//! caller sees what its own call would have produced, and nobody is left
//! waiting.

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

/// Tracks how many runs of a body overlap, and the most that ever did.
struct Gauge {
    running: AtomicUsize,
    most: AtomicUsize,
}

impl Gauge {
    const fn new() -> Self {
        Self {
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        }
    }

    fn enter(&self) {
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
    }

    fn leave(&self) {
        self.running.fetch_sub(1, SeqCst);
    }

    fn most(&self) -> usize {
        self.most.load(SeqCst)
    }
}

static FAILING_RUNS: AtomicUsize = AtomicUsize::new(0);
static FAILING_GAUGE: Gauge = Gauge::new();
/// Runs of `failing` that have ended.
static FAILING_ENDED: AtomicUsize = AtomicUsize::new(0);
/// The most runs that had ended when a run began: how many failed runs a
/// caller waited for before running its own.
static FAILING_ENDED_BEFORE_A_RUN: AtomicUsize = AtomicUsize::new(0);
const FAILING_CALLERS: usize = 50;
/// Callers of `failing` that have started.
static FAILING_STARTED: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "coalesce_err")]
async fn failing(x: u32) -> Result<u32, String> {
    if FAILING_RUNS.fetch_add(1, SeqCst) == 0 {
        // The first run lasts until every caller has joined.
        for _ in 0..1000 {
            if FAILING_STARTED.load(SeqCst) == FAILING_CALLERS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    FAILING_ENDED_BEFORE_A_RUN.fetch_max(FAILING_ENDED.load(SeqCst), SeqCst);
    FAILING_GAUGE.enter();
    // Long enough for every released waiter to start its run before any
    // of theirs ends.
    tokio::time::sleep(Duration::from_millis(100)).await;
    FAILING_GAUGE.leave();
    FAILING_ENDED.fetch_add(1, SeqCst);
    Err(format!("backend down for {x}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_that_keeps_failing_releases_its_waiters_after_two_runs() {
    setup();
    let tasks: Vec<_> = (0..FAILING_CALLERS)
        .map(|_| {
            tokio::spawn(async {
                FAILING_STARTED.fetch_add(1, SeqCst);
                failing(7).await
            })
        })
        .collect();
    for t in tasks {
        let result = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("no waiter is left hanging")
            .unwrap();
        assert_eq!(result, Err("backend down for 7".to_owned()));
    }
    // An error cannot be shared, so each caller ran its own call, and so
    // saw its own error. The first run failed, one waiter tried again and
    // failed too; then every other waiter ran its own call at once rather
    // than after everyone ahead of it (the k-th waiting k runs).
    assert_eq!(FAILING_RUNS.load(SeqCst), FAILING_CALLERS);
    assert_eq!(
        FAILING_ENDED_BEFORE_A_RUN.load(SeqCst),
        2,
        "no caller waited for more than two failed runs"
    );
    assert!(
        FAILING_GAUGE.most() > 1,
        "the released waiters ran side by side"
    );
    assert_eq!(failing(7).await, Err("backend down for 7".to_owned()));
}

/// How many calls of a backend fail before it recovers: one (a timeout, a
/// restart), after which one waiter's call feeds everyone.
const FAIL_FIRST: usize = 1;
const CALLERS: usize = 40;

static FLAKY_RUNS: AtomicUsize = AtomicUsize::new(0);
static FLAKY_GAUGE: Gauge = Gauge::new();

#[cached(prefix = "coalesce_flaky")]
async fn flaky(x: u32) -> Result<u32, String> {
    let run = FLAKY_RUNS.fetch_add(1, SeqCst);
    FLAKY_GAUGE.enter();
    tokio::time::sleep(Duration::from_millis(20)).await;
    FLAKY_GAUGE.leave();
    if run < FAIL_FIRST {
        return Err(format!("run {run} failed"));
    }
    Ok(x * 5)
}

static FLAKY_LOCK_RUNS: AtomicUsize = AtomicUsize::new(0);
static FLAKY_LOCK_GAUGE: Gauge = Gauge::new();

#[cached(prefix = "coalesce_flaky_lock", lock = true)]
async fn flaky_locked(x: u32) -> Result<u32, String> {
    let run = FLAKY_LOCK_RUNS.fetch_add(1, SeqCst);
    FLAKY_LOCK_GAUGE.enter();
    tokio::time::sleep(Duration::from_millis(20)).await;
    FLAKY_LOCK_GAUGE.leave();
    if run < FAIL_FIRST {
        return Err(format!("run {run} failed"));
    }
    Ok(x * 5)
}

/// Checks what `CALLERS` concurrent callers of a backend failing its first
/// `FAIL_FIRST` calls got: the callers whose own run failed see that
/// error, everyone else the value, and the body ran once per failure plus
/// the one success.
fn check_results(results: &[Result<u32, String>], runs: usize, most_at_once: usize) {
    let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let mut expected: Vec<_> = (0..FAIL_FIRST).map(|r| format!("run {r} failed")).collect();
    let mut seen: Vec<_> = errors.iter().map(|e| e.to_string()).collect();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected, "each failed run reached its own caller");
    assert!(
        results.iter().filter(|r| r.is_ok()).all(|r| *r == Ok(35)),
        "everyone else got the value"
    );
    assert_eq!(
        runs,
        FAIL_FIRST + 1,
        "one run per failure, then one success"
    );
    assert_eq!(most_at_once, 1, "the backend saw one call at a time");
}

async fn call_together<F: std::future::Future<Output = Result<u32, String>> + Send + 'static>(
    call: fn() -> F,
) -> Vec<Result<u32, String>> {
    let tasks: Vec<_> = (0..CALLERS).map(|_| tokio::spawn(call())).collect();
    let mut results = Vec::new();
    for t in tasks {
        let result = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("no waiter is left hanging")
            .unwrap();
        results.push(result);
    }
    results
}

/// Runs `call` on `threads` threads released at once; their answers.
fn threads_together<T: Send + 'static>(threads: usize, call: fn() -> T) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(threads));
    let threads: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                call()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_leader_hands_over_to_one_waiter_at_a_time() {
    setup();
    let results = call_together(|| flaky(7)).await;
    check_results(&results, FLAKY_RUNS.load(SeqCst), FLAKY_GAUGE.most());
    assert_eq!(flaky(7).await, Ok(35), "the value is cached");
    assert_eq!(FLAKY_RUNS.load(SeqCst), FAIL_FIRST + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_lock_a_failing_leader_hands_over_to_one_waiter_at_a_time() {
    setup();
    let results = call_together(|| flaky_locked(7)).await;
    check_results(
        &results,
        FLAKY_LOCK_RUNS.load(SeqCst),
        FLAKY_LOCK_GAUGE.most(),
    );
    assert_eq!(flaky_locked(7).await, Ok(35), "the value is cached");
}

static FLAKY_SYNC_RUNS: AtomicUsize = AtomicUsize::new(0);
static FLAKY_SYNC_GAUGE: Gauge = Gauge::new();

#[cached(prefix = "coalesce_flaky_sync")]
fn flaky_sync(x: u32) -> Result<u32, String> {
    let run = FLAKY_SYNC_RUNS.fetch_add(1, SeqCst);
    FLAKY_SYNC_GAUGE.enter();
    std::thread::sleep(Duration::from_millis(20));
    FLAKY_SYNC_GAUGE.leave();
    if run < FAIL_FIRST {
        return Err(format!("run {run} failed"));
    }
    Ok(x * 5)
}

#[test]
fn sync_waiters_take_over_one_at_a_time_too() {
    setup();
    let results = threads_together(16, || flaky_sync(7));
    check_results(
        &results,
        FLAKY_SYNC_RUNS.load(SeqCst),
        FLAKY_SYNC_GAUGE.most(),
    );
}

static PANICKED_ONCE: AtomicBool = AtomicBool::new(false);
static PANIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "coalesce_panic")]
async fn panics_first(x: u32) -> u32 {
    PANIC_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    if !PANICKED_ONCE.swap(true, SeqCst) {
        panic!("first run fails");
    }
    x + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_leader_releases_its_waiters() {
    setup();
    let tasks: Vec<_> = (0..21).map(|_| tokio::spawn(panics_first(1))).collect();
    let mut panicked = 0;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("no waiter is left hanging")
        {
            Ok(value) => assert_eq!(value, 2),
            Err(e) => {
                assert!(e.is_panic());
                panicked += 1;
            }
        }
    }
    // Only the run that panicked panics its caller; one waiter then ran
    // the body again and fed the rest.
    assert_eq!(panicked, 1);
    assert_eq!(PANIC_RUNS.load(SeqCst), 2);
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
    assert_eq!(threads_together(8, || slow_sync(5)), [15; 8]);
    assert_eq!(SYNC_RUNS.load(SeqCst), 1);
}

static RETRIED_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Retries by calling itself with the skipped `attempt`: the same key,
/// asked for from inside its own computation.
#[cached(prefix = "coalesce_retried", skip = "attempt", lock = true)]
async fn retried(x: u32, attempt: u32) -> u32 {
    RETRIED_RUNS.fetch_add(1, SeqCst);
    if attempt < 2 {
        return Box::pin(retried(x, attempt + 1)).await;
    }
    x * 3
}

/// A call made by the leader's own body for its key runs on its own
/// instead of waiting (in the process, and at the lock) for the call it
/// is part of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_inside_its_own_computation_does_not_wait_for_itself() {
    setup();
    let answer = tokio::time::timeout(Duration::from_secs(20), retried(7, 0))
        .await
        .expect("the nested call waited for the call it is part of");
    assert_eq!(answer, 21);
    assert_eq!(RETRIED_RUNS.load(SeqCst), 3, "each attempt ran once");
    // Stored: the next call is a hit.
    assert_eq!(retried(7, 0).await, 21);
    assert_eq!(RETRIED_RUNS.load(SeqCst), 3);
}

static RETRIED_SYNC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "coalesce_retried_sync", skip = "attempt")]
fn retried_sync(x: u32, attempt: u32) -> u32 {
    RETRIED_SYNC_RUNS.fetch_add(1, SeqCst);
    if attempt < 2 {
        return retried_sync(x, attempt + 1);
    }
    x * 3
}

#[test]
fn a_sync_call_inside_its_own_computation_does_not_wait_for_itself() {
    setup();
    let (sent, answer) = std::sync::mpsc::channel();
    // A thread of its own: a call waiting for itself would block it
    // forever.
    std::thread::spawn(move || sent.send(retried_sync(8, 0)));
    let answer = answer
        .recv_timeout(Duration::from_secs(20))
        .expect("the nested call waited for the call it is part of");
    assert_eq!(answer, 24);
    assert_eq!(RETRIED_SYNC_RUNS.load(SeqCst), 3, "each attempt ran once");
}

static BESIDE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "coalesce_beside")]
async fn beside(x: u32) -> u32 {
    BESIDE_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    x + 1
}

/// Two calls of one key side by side in one task (not one inside the
/// other's computation) still run the body once.
#[tokio::test]
async fn calls_side_by_side_in_one_task_still_coalesce() {
    setup();
    let (a, b) = tokio::join!(beside(1), beside(1));
    assert_eq!((a, b), (2, 2));
    assert_eq!(BESIDE_RUNS.load(SeqCst), 1);
}

static STALLED_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Its first run never ends; the others answer at once.
#[cached(prefix = "coalesce_stalled")]
async fn stalled(x: u32) -> u32 {
    if STALLED_RUNS.fetch_add(1, SeqCst) == 0 {
        std::future::pending::<()>().await;
    }
    x * 5
}

/// A leader whose future is kept but never polled again (a `select!`
/// branch that lost and stays in scope) holds its followers for a lease
/// ceiling (30 s) at most, as a holder of the Redis lock holds the other
/// processes; then they compute on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_nobody_polls_holds_its_followers_a_lease_ceiling_at_most() {
    setup();
    let mut kept = Box::pin(stalled(3));
    while STALLED_RUNS.load(SeqCst) == 0 {
        // Polled until its body runs (it leads the flight), then kept.
        let _ = tokio::time::timeout(Duration::from_millis(1), kept.as_mut()).await;
    }
    let answer = tokio::time::timeout(Duration::from_secs(90), stalled(3))
        .await
        .expect("the follower waited past its patience");
    assert_eq!(answer, 15);
    assert_eq!(STALLED_RUNS.load(SeqCst), 2);
    drop(kept);
}

static MISSING_RUNS: AtomicUsize = AtomicUsize::new(0);

/// A row that is not there: `None`, not cached.
#[cached(prefix = "coalesce_missing")]
async fn missing(x: u32) -> Option<u32> {
    MISSING_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    (x == 0).then_some(1)
}

static MISSING_SYNC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "coalesce_missing_sync")]
fn missing_sync(x: u32) -> Option<u32> {
    MISSING_SYNC_RUNS.fetch_add(1, SeqCst);
    std::thread::sleep(Duration::from_millis(200));
    (x == 0).then_some(1)
}

/// A `None` is an answer, not a failure: the callers waiting for the call
/// that returned it answer `None` too, instead of each running the body
/// in turn. It is still not cached: the next call runs the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_waiting_for_a_none_answer_none() {
    setup();
    let tasks: Vec<_> = (0..20).map(|_| tokio::spawn(missing(5))).collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), None);
    }
    assert_eq!(MISSING_RUNS.load(SeqCst), 1, "the body ran once for all");
    assert_eq!(missing(5).await, None);
    assert_eq!(MISSING_RUNS.load(SeqCst), 2, "and the None was not cached");

    assert_eq!(threads_together(8, || missing_sync(5)), [None; 8]);
    assert_eq!(MISSING_SYNC_RUNS.load(SeqCst), 1, "sync callers too");
}
