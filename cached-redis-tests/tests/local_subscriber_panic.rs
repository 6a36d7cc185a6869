//! A panic while the invalidation subscriber applies a message (here a
//! held value's `Drop`, run on the subscriber's thread when its copy is
//! removed) may leave part of the change undone. The levels are then
//! emptied as after a lost channel, and the subscriber carries on: the
//! levels hold values again, and a later change from another process
//! still reaches this one.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cached_redis::cached;
use redis::Commands;

static SOURCE: AtomicU64 = AtomicU64::new(1);
/// The panics of `Touchy(1)`'s `Drop`, so that the test knows each message
/// did reach a held copy.
static PANICS: AtomicU64 = AtomicU64::new(0);

/// A value whose `Drop` panics for `Touchy(1)` on the subscriber thread.
#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Touchy(u64);

impl Drop for Touchy {
    fn drop(&mut self) {
        if self.0 == 1 && std::thread::current().name() == Some("cached-redis-invalidation") {
            PANICS.fetch_add(1, SeqCst);
            panic!("Drop of a held value panicked on the subscriber thread");
        }
    }
}

#[cached(local = 10, ttl = 600, prefix = "lsp_touchy")]
async fn touchy(id: u64) -> Touchy {
    Touchy(SOURCE.load(SeqCst) + id)
}

/// What another process's write of `key` sends (another origin).
fn announce_from_elsewhere(ns: &str, key: &str) {
    let _: () = common::raw()
        .publish(
            format!("{ns}:__invalidate"),
            format!("0123456789abcdef:0 k {key}"),
        )
        .unwrap();
}

/// What another process's `invalidate_prefix` sends.
fn announce_prefix_from_elsewhere(ns: &str) {
    let _: () = common::raw()
        .publish(
            format!("{ns}:__invalidate"),
            format!("0123456789abcdef:0 p {ns}:lsp_touchy:"),
        )
        .unwrap();
}

/// Waits until the level holds values again (the channel is back): a
/// value filled, then removed from Redis without a message, is still
/// served. Fails if the subscriber stopped.
async fn until_held_again(key: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 10;
    loop {
        n += 1;
        SOURCE.store(n, SeqCst);
        let _: () = common::raw().del(key).unwrap();
        let filled = touchy(0).await;
        let _: () = common::raw().del(key).unwrap();
        SOURCE.store(n + 1_000, SeqCst);
        if touchy(0).await == filled {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the level never held a value again: the subscriber stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_applying_a_message_does_not_leave_the_level_deaf() {
    common::init_once("local_subscriber_panic");
    let ns = common::namespace("local_subscriber_panic");
    let key = touchy_cache_key(0).unwrap();
    // The level goes live once its channel is subscribed.
    until_held_again(key.as_str()).await;
    SOURCE.store(1, SeqCst);
    touchy_invalidate(0).await.unwrap();
    assert_eq!(touchy(0).await, Touchy(1));
    // Removing the held copy panics in its `Drop`.
    announce_from_elsewhere(&ns, key.as_str());
    until_panicked(1).await;
    until_held_again(key.as_str()).await;

    // The same from a message for the whole prefix: the copy is dropped
    // while the level is being emptied, under its lock, which must not
    // fail the function's later calls.
    SOURCE.store(1, SeqCst);
    touchy_invalidate(0).await.unwrap();
    assert_eq!(touchy(0).await, Touchy(1));
    announce_prefix_from_elsewhere(&ns);
    until_panicked(2).await;
    until_held_again(key.as_str()).await;

    // Another process changes the value and says so.
    SOURCE.store(3, SeqCst);
    let _: () = common::raw().del(key.as_str()).unwrap();
    announce_from_elsewhere(&ns, key.as_str());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while touchy(0).await != Touchy(3) {
        assert!(
            std::time::Instant::now() < deadline,
            "10 s after its change was announced, the held copy was still served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the held copy's `Drop` panicked `n` times in all: the
/// message reached it.
async fn until_panicked(n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while PANICS.load(SeqCst) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the message never reached the held copy"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(PANICS.load(SeqCst), n, "one message, one panic");
}
