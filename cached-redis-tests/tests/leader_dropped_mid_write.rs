//! A call that computed its value and is dropped while the write of it is
//! on its way (a request's timeout): the calls of the same key waiting for
//! it in this process get that value, and none of them computes it again.
//!
//! A proxy in front of Redis holds the write back, so the call is dropped
//! exactly then.
//!
//! Its own test binary and Redis server: the library is configured once
//! per process, here through the proxy.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cached_redis::cached;
use common::holding_proxy::{HoldingProxy, PATIENCE};

/// Runs of the body.
static RUNS: AtomicU32 = AtomicU32::new(0);
/// Set once the second call waits for the first one: the body returns
/// only then.
static GO_ON: AtomicBool = AtomicBool::new(false);

#[cached(prefix = "ldw_value", ttl = 600)]
async fn value(x: u32) -> u32 {
    RUNS.fetch_add(1, SeqCst);
    common::eventually("the go-ahead", || GO_ON.load(SeqCst)).await;
    x * 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_value_of_a_call_dropped_while_writing_it() {
    let server = common::RedisServer::start();
    let proxy = HoldingProxy::start(server.port);
    proxy.init_library("leader_dropped_mid_write");
    let key = value_cache_key(1).unwrap();
    // The write of the entry (`SET key value PX ms`), not its reads.
    proxy.hold_first(&format!("SET\r\n${}\r\n{key}", key.len()));

    let first = tokio::spawn(value(1));
    common::eventually("the first call's body", || RUNS.load(SeqCst) == 1).await;
    // The second call misses too (its `GET` answered), then waits for the
    // first one; only then may the first one finish and write.
    let read = server.gets_answered();
    let second = tokio::spawn(value(1));
    common::eventually("the second call's read", || server.gets_answered() > read).await;
    // From its answer to joining the first call's flight, the second call
    // only decodes nothing and looks the key up in this process: far less
    // than this, even on a loaded machine.
    tokio::time::sleep(Duration::from_millis(200)).await;
    GO_ON.store(true, SeqCst);
    proxy.until_holding();
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // Either the second call got the value, or it runs the body itself
    // (its own write then waits behind the held one).
    common::eventually("the second call's answer or run", || {
        second.is_finished() || RUNS.load(SeqCst) > 1
    })
    .await;
    proxy.let_go();
    let answer = tokio::time::timeout(PATIENCE, second)
        .await
        .expect("the second call answers")
        .unwrap();
    assert_eq!(answer, 10);
    assert_eq!(
        RUNS.load(SeqCst),
        1,
        "the waiting call computed the value again, although the dropped \
         call had computed it"
    );
}
