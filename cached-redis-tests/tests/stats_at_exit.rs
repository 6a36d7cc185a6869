//! The stats flush at exit sends what the last interval flush did not:
//! when the process exits while that flush is on its way, the exit hook
//! waits for it (within twice the command timeout) instead of giving up
//! on the counts made after its snapshot.
//!
//! The process that exits is this test binary run again (the ignored
//! `child` test), on a Redis server of its own, which it pauses for writes
//! while an interval flush is on its way. No timing is asserted: waits are
//! bounded only so that a broken build fails instead of hanging.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cached_redis::cached;
use redis::Commands;

const URL: &str = "CACHED_REDIS_EXIT_URL";
const NS: &str = "CACHED_REDIS_EXIT_NS";

fn raw() -> redis::Connection {
    redis::Client::open(std::env::var(URL).unwrap())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn stats() -> std::collections::HashMap<String, u64> {
    let key = format!("{}:se_counted:stats", std::env::var(NS).unwrap());
    raw().hgetall(key).unwrap()
}

#[cached(prefix = "se_counted")]
async fn counted(x: u32) -> u32 {
    x
}

/// Counts two misses (the second sent by an interval flush that Redis
/// holds back), then a skip, and exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "spawned by the test below"]
async fn child() {
    if std::env::var(URL).is_err() {
        return;
    }
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(std::env::var(URL).unwrap())
            .namespace(std::env::var(NS).unwrap())
            .timeout(Duration::from_secs(2))
            .stats_flush_interval(Duration::from_millis(50))
            .build()
            .unwrap(),
    )
    .unwrap();
    counted(1).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while stats().get("misses") != Some(&1) {
        assert!(Instant::now() < deadline, "the interval flush never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    counted(2).await;
    // The next interval flush (the second miss) waits in Redis...
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(600)
        .arg("WRITE")
        .query(&mut raw())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...while this skip is counted after its snapshot, with no I/O.
    cached_redis::skip_cache(counted(3)).await;
}

#[test]
fn the_exit_flush_sends_what_the_last_interval_flush_did_not() {
    let server = common::RedisServer::start();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--ignored", "--nocapture"])
        .env(URL, server.url())
        .env(NS, common::namespace("stats_at_exit"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status = common::wait_within(&mut child, common::CHILD_LIMIT).expect("the child hung");
    assert!(status.success());
    std::env::set_var(URL, server.url());
    std::env::set_var(NS, common::namespace("stats_at_exit"));
    let stats = stats();
    assert_eq!(stats.get("misses"), Some(&2), "{stats:?}");
    assert_eq!(
        stats.get("skips"),
        Some(&1),
        "the skip counted after the last interval flush's snapshot was lost: {stats:?}"
    );
    drop(server);
}
