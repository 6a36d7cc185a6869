//! `invalidate_prefix` never removes a batch of entries without the
//! message that tells the other processes' `local` levels: a `PUBLISH` the
//! ACL refuses stops the removal, and a call dropped part-way (a request's
//! timeout, a `select!`) still sends the message of every batch Redis
//! removes.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cached_redis::cached;
use redis::Commands;

#[cached(prefix = "pa_nopub", cache = "nopub")]
async fn nopub_value(id: u64) -> u64 {
    id
}

#[tokio::test]
async fn a_refused_publish_removes_nothing() {
    // A server of its own: its ACL changes.
    let server = common::RedisServer::start();
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER", "pa_nopub", "on", "nopass", "~*", "&*", "+@all", "-publish",
            ][..],
        )
        .query(&mut admin)
        .unwrap();
    let url = server.url().replace("redis://", "redis://pa_nopub:x@");
    cached_redis::init_named(
        "nopub",
        cached_redis::Config::builder()
            .redis_url(url)
            .namespace(common::namespace("prefix_announced_nopub"))
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(nopub_value(1).await, 1);
    let key = nopub_value_cache_key(1).unwrap();
    assert!(admin.exists::<_, bool>(&key).unwrap(), "stored");

    let outcome = cached_redis::invalidate_prefix("pa_nopub").await;
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(
        admin.exists::<_, bool>(&key).unwrap(),
        "removed without telling the other processes"
    );
}

const NS: &str = "PREFIX_ANNOUNCED_NS";

fn ns() -> String {
    std::env::var(NS).unwrap_or_else(|_| common::namespace("prefix_announced"))
}

fn source() -> u64 {
    common::raw()
        .get::<_, Option<u64>>(format!("{}:test:source", ns()))
        .unwrap()
        .unwrap_or(0)
}

fn set_source(v: u64) {
    let _: () = common::raw()
        .set(format!("{}:test:source", ns()), v)
        .unwrap();
}

#[cached(local = 100, ttl = 600, prefix = "pa_value")]
async fn value(id: u64) -> u64 {
    source() + id
}

fn init(ns: &str) {
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(common::redis_url())
            .namespace(ns)
            .build()
            .unwrap(),
    )
    .unwrap();
}

/// The other process: reads `value(0)` in a loop (refilling its level
/// whenever it can) and answers the test's questions with what it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "spawned by a_dropped_prefix_invalidation_still_tells_the_others"]
async fn reader_process() {
    let Ok(ns) = std::env::var(NS) else { return };
    init(&ns);
    for _ in 0..3 {
        tokio::spawn(async {
            loop {
                value(0).await;
                tokio::task::yield_now().await;
            }
        });
    }
    let mut raw = common::raw();
    loop {
        let asked: Option<(String, String)> = raw.blpop(format!("{ns}:test:ask"), 60.0).unwrap();
        match asked {
            Some((_, ask)) if ask != "quit" => {
                let _: () = raw
                    .rpush(format!("{ns}:test:answer"), value(0).await)
                    .unwrap();
            }
            _ => std::process::exit(0),
        }
    }
}

/// What the reader serves now.
fn ask() -> u64 {
    let mut raw = common::raw();
    let _: () = raw.rpush(format!("{}:test:ask", ns()), "value").unwrap();
    let answer: Option<(String, u64)> = raw.blpop(format!("{}:test:answer", ns()), 15.0).unwrap();
    answer.expect("the reader answers").1
}

/// Each round the reader holds the current value, the data changes, and
/// the prefix is invalidated by a call dropped as soon as the entry is
/// gone from Redis. Before, a batch's message was a command of its own
/// after the `UNLINK`: dropped with the call, it never went, and the reader
/// kept the copy it had taken before the `UNLINK` (about 1 round in 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_prefix_invalidation_still_tells_the_others() {
    let ns = ns();
    init(&ns);
    let mut reader: Child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "reader_process", "--ignored"])
        .env(NS, &ns)
        .env("CACHED_REDIS_TEST_URL", common::redis_url())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let key = value_cache_key(0).unwrap();
    let mut stale = Vec::new();
    for round in 1..=60 {
        set_source(round * 10);
        value_invalidate(0).await.unwrap();
        let asking = std::time::Instant::now();
        while ask() != round * 10 {
            assert!(
                asking.elapsed() < Duration::from_secs(60),
                "the reader kept an old value for a minute"
            );
            value_invalidate(0).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        set_source(round * 10 + 1);
        let mut invalidation = Box::pin(cached_redis::invalidate_prefix("pa_value"));
        let mut watch = common::raw();
        let gone = async {
            while watch.exists::<_, bool>(&key).unwrap() {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            biased;
            () = gone => {}
            _ = &mut invalidation => {}
        }
        drop(invalidation);
        // The channel's delay is a few ms at most; a copy kept for 10 s
        // (its entry lives 600 s) was never told.
        let telling = std::time::Instant::now();
        let mut kept = ask() == round * 10;
        while kept && telling.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            kept = ask() == round * 10;
        }
        if kept {
            stale.push(round);
        }
    }
    let _: () = common::raw()
        .rpush(format!("{ns}:test:ask"), "quit")
        .unwrap();
    let _ = common::wait_within(&mut reader, common::CHILD_LIMIT);
    assert!(
        stale.is_empty(),
        "the reader kept its old copy in rounds {stale:?}"
    );
}
