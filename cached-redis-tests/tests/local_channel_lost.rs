//! The lost-channel rule: while a process cannot receive invalidations,
//! its `local` levels are emptied and bypassed; once the channel is back,
//! they serve again. Runs against a Redis of its own, whose ACL it changes
//! to keep the channel from coming back.

mod common;

use std::time::{Duration, Instant};

use cached_redis::cached;
use common::RedisServer;
use redis::Commands;

const PATIENCE: Duration = Duration::from_secs(15);

fn url() -> String {
    std::env::var("CACHED_REDIS_L1_LOST_URL").unwrap()
}

fn raw() -> redis::Connection {
    redis::Client::open(url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn set_source(value: u64) {
    let _: () = raw().set("src", value).unwrap();
}

#[cached(local = 10, ttl = 600, prefix = "lost")]
async fn value(id: u64) -> u64 {
    raw().get::<_, Option<u64>>("src").unwrap().unwrap_or(0) + id
}

/// Changes the source and removes the Redis entry, telling no one: a call
/// that still answers `old` is served by the level.
fn change_behind(new: u64) {
    set_source(new);
    let _: () = raw().del(value_cache_key(0).unwrap()).unwrap();
}

/// Waits until the level holds: a call answers the value from before an
/// unannounced change.
async fn until_held(mut next: u64) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    set_source(next);
    let mut last = value(0).await;
    loop {
        next += 1;
        change_behind(next);
        let answer = value(0).await;
        if answer == last {
            return next;
        }
        assert!(Instant::now() < deadline, "the level never held the value");
        last = answer;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_channel_empties_and_bypasses_the_level_until_it_is_back() {
    let server = RedisServer::start();
    // SAFETY: set before any thread of this test process reads it.
    unsafe { std::env::set_var("CACHED_REDIS_L1_LOST_URL", server.url()) };
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(server.url())
            .namespace("lost")
            .build()
            .unwrap(),
    )
    .unwrap();

    let source = until_held(100).await;
    // The channel is cut, and cannot come back: the default user may no
    // longer use any pub/sub channel (Redis 7 drops its subscribers at
    // once; the kill is for servers that do not).
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "resetchannels"][..])
        .query(&mut raw())
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"][..])
        .query(&mut raw())
        .unwrap();
    // Emptied: the current source shows.
    let deadline = Instant::now() + PATIENCE;
    while value(0).await != source {
        assert!(
            Instant::now() < deadline,
            "the level still served after its channel was lost"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Bypassed: every unannounced change shows at once, nothing is held.
    for next in source + 1..source + 5 {
        change_behind(next);
        assert_eq!(
            value(0).await,
            next,
            "served from the level without a channel"
        );
    }

    // The channel may come back: the level serves again.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "allchannels"][..])
        .query(&mut raw())
        .unwrap();
    until_held(source + 10).await;
    drop(server);
}
