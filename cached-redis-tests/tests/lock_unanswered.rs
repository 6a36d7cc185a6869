//! `lock = true`: a `SET NX` that was sent but whose answer never came may
//! have taken the lock all the same. The caller then computes as if it held
//! the lock, and releases it when done (a compare-and-delete, which does
//! nothing if the lock is not its own), so a result that is not stored (an
//! `Err`) does not leave the other callers a whole lease to wait.
//!
//! Runs on a Redis server of its own, paused for writes (`CLIENT PAUSE
//! ... WRITE`) before the call: its `GET` is answered (a miss), its
//! `SET NX` waits in Redis past the cache's timeout, and runs when the
//! pause ends, while the body runs. A second call's `SET NX`, sent later on
//! the same connection, keeps that connection open meanwhile (Redis would
//! drop a paused command whose connection closed). No timing is asserted:
//! the lengths only order the steps.

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cached_redis::cached;
use redis::Commands;

/// The cache's command timeout. The lengths below leave each step at
/// least a quarter of it (500 ms) on either side, for a loaded machine.
const TIMEOUT: Duration = Duration::from_millis(2000);
/// How long writes are paused: past the first call's timeout, short of
/// the second's (each by 500 ms).
const PAUSE: Duration = Duration::from_millis(2500);
/// When the second call starts, after the first: before the first gives
/// up its `SET NX` (and with it the connection), by 1 s.
const SECOND_AFTER: Duration = Duration::from_millis(1000);

static URL: OnceLock<String> = OnceLock::new();

fn raw() -> redis::Connection {
    redis::Client::open(URL.get().unwrap().as_str())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// When the body started, and who held its lock when it ended.
static BODY_STARTED: Mutex<Option<Instant>> = Mutex::new(None);
static HOLDER_AT_END: Mutex<Option<String>> = Mutex::new(None);

#[cached(prefix = "lu_fails", lock = true)]
async fn fails(x: u32) -> Result<u32, String> {
    *BODY_STARTED.lock().unwrap() = Some(Instant::now());
    // Outlive the pause: by then the `SET NX` has run.
    tokio::time::sleep(PAUSE + Duration::from_millis(1000)).await;
    let lock = format!("{}:lock", fails_cache_key(x).unwrap());
    *HOLDER_AT_END.lock().unwrap() = raw().get(&lock).unwrap();
    Err(format!("{x} is not found"))
}

#[cached(prefix = "lu_other", lock = true)]
async fn other(x: u32) -> u32 {
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_whose_answer_never_came_is_released_after_the_run() {
    let server = common::RedisServer::start();
    URL.set(server.url()).unwrap();
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(server.url())
            .namespace(common::namespace("lock_unanswered"))
            .timeout(TIMEOUT)
            .build()
            .unwrap(),
    )
    .unwrap();
    // Connected and the scripts loaded first: what is tested is a `SET NX`
    // sent, not a connection that cannot open.
    assert_eq!(other(0).await, 0);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(PAUSE.as_millis() as u64)
        .arg("WRITE")
        .query(&mut raw())
        .unwrap();
    let paused_until = Instant::now() + PAUSE;
    let first = tokio::spawn(fails(1));
    tokio::time::sleep(SECOND_AFTER).await;
    let second = tokio::spawn(other(2));
    assert!(first.await.unwrap().is_err());
    assert_eq!(second.await.unwrap(), 2);

    // The body started while writes were paused (the call gave up on its
    // `SET NX`), and that `SET NX` ran when the pause ended.
    let started = BODY_STARTED.lock().unwrap().expect("the body ran");
    assert!(
        started < paused_until,
        "the body started after the pause: the test did not test what it claims"
    );
    assert!(
        HOLDER_AT_END.lock().unwrap().is_some(),
        "the call's SET NX never ran: the test did not test what it claims"
    );
    let lock = format!("{}:lock", fails_cache_key(1).unwrap());
    assert!(
        !raw().exists::<_, bool>(&lock).unwrap(),
        "the lock is left to its lease ({} ms left)",
        raw().pttl::<_, i64>(&lock).unwrap()
    );
    drop(server);
}
