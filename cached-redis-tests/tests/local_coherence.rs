//! The `local` level across real processes: every way of changing an entry
//! reaches another process's level, which then stops serving its copy; the
//! level keeps its byte budget and never outlives the Redis entry.
//!
//! The other process is this test binary run again (the ignored `peer`
//! test), driven through Redis lists. No timing is asserted: waits are
//! bounded only so that a broken build fails instead of hanging.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cached_redis::cached;
use redis::Commands;

const NS: &str = "CACHED_REDIS_L1_NS";
const TOKEN: &str = "CACHED_REDIS_L1_TOKEN";
/// How long a behaviour may take to show before the test gives up.
const PATIENCE: Duration = Duration::from_secs(15);

fn ns() -> String {
    std::env::var(NS).unwrap_or_else(|_| common::namespace("l1"))
}

/// What the functions compute: a number kept in Redis, which the tests
/// change behind the cache's back.
fn source(what: &str, id: u64) -> u64 {
    common::raw()
        .get::<_, Option<u64>>(format!("{}:test:src:{what}:{id}", ns()))
        .unwrap()
        .unwrap_or(0)
}

fn set_source(what: &str, id: u64, value: u64) {
    let _: () = common::raw()
        .set(format!("{}:test:src:{what}:{id}", ns()), value)
        .unwrap();
}

#[cached(local = 100, ttl = 600, prefix = "l1_value")]
async fn value(id: u64) -> u64 {
    source("value", id)
}

#[cached(local = 100, ttl = 600, prefix = "l1_prefixed")]
async fn prefixed(id: u64) -> u64 {
    source("prefixed", id)
}

#[cached(local = 100, ttl = 2, prefix = "l1_short")]
async fn short(id: u64) -> u64 {
    source("short", id)
}

#[cached(local = 100, ttl = 600, prefix = "l1_skewed")]
async fn skewed(id: u64) -> u64 {
    source("skewed", id)
}

/// Values of about 18 KiB encoded (2048 numbers over 2^32, 9 bytes each):
/// the level's byte budget (64 KiB) holds 3 of them.
#[cached(local = 1000, ttl = 600, prefix = "l1_big")]
async fn big(id: u64) -> Vec<u64> {
    vec![source("big", id) | (1 << 40); 2048]
}

async fn call(what: &str, id: u64) -> u64 {
    match what {
        "value" => value(id).await,
        "prefixed" => prefixed(id).await,
        "short" => short(id).await,
        other => panic!("unknown function {other}"),
    }
}

/// The Redis key of `what(id)`.
fn entry_key(what: &str, id: u64) -> String {
    match what {
        "value" => value_cache_key(id),
        "prefixed" => prefixed_cache_key(id),
        "short" => short_cache_key(id),
        "big" => big_cache_key(id),
        other => panic!("unknown function {other}"),
    }
    .unwrap()
}

fn init(namespace: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        cached_redis::init(
            cached_redis::Config::builder()
                .redis_url(common::redis_url())
                .namespace(namespace)
                .local_max_bytes(64 << 10)
                .build()
                .unwrap(),
        )
        .unwrap();
    });
}

/// The other process: answers `{function} {id}` requests with the value
/// its call returns, until `quit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "spawned by the tests below"]
async fn peer() {
    let (Ok(ns), Ok(token)) = (std::env::var(NS), std::env::var(TOKEN)) else {
        return;
    };
    init(&ns);
    let mut raw = common::raw();
    let requests = format!("{ns}:test:req:{token}");
    let replies = format!("{ns}:test:rep:{token}");
    loop {
        let Some((_, request)): Option<(String, String)> = raw.blpop(&requests, 60.0).unwrap()
        else {
            return;
        };
        if request == "quit" {
            return;
        }
        let (what, id) = request.split_once(' ').unwrap();
        let answer = call(what, id.parse().unwrap()).await;
        let _: () = raw.rpush(&replies, answer).unwrap();
    }
}

/// A peer process and the way to ask it for a call's result.
struct Peer {
    child: Child,
    requests: String,
    replies: String,
}

impl Peer {
    fn start(test: &str) -> Peer {
        let ns = ns();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "peer", "--ignored", "--nocapture"])
            .env(NS, &ns)
            .env(TOKEN, test)
            .env("CACHED_REDIS_TEST_URL", common::redis_url())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Peer {
            child,
            requests: format!("{ns}:test:req:{test}"),
            replies: format!("{ns}:test:rep:{test}"),
        }
    }

    fn call(&self, what: &str, id: u64) -> u64 {
        let mut raw = common::raw();
        let _: () = raw.rpush(&self.requests, format!("{what} {id}")).unwrap();
        let reply: Option<(String, u64)> =
            raw.blpop(&self.replies, PATIENCE.as_secs_f64()).unwrap();
        reply.expect("the peer answers").1
    }

    /// Brings the peer to hold `what(id)` in its level, and leaves the
    /// source changed behind it: returns (held value, new source value).
    /// The Redis entry is removed without telling anyone, so only the
    /// level can still answer with the old value.
    fn hold(&self, what: &str, id: u64) -> (u64, u64) {
        let deadline = Instant::now() + PATIENCE;
        let mut next = 1_000 * id;
        set_source(what, id, next);
        let mut last = self.call(what, id);
        loop {
            next += 1;
            set_source(what, id, next);
            let _: () = common::raw().del(entry_key(what, id)).unwrap();
            let answer = self.call(what, id);
            if answer == last {
                // Served although Redis has no entry and the source moved:
                // from the level.
                return (answer, next);
            }
            assert!(
                Instant::now() < deadline,
                "the peer's level never held {what}({id})"
            );
            last = answer;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the peer answers `expected` for `what(id)`.
    fn sees(&self, what: &str, id: u64, expected: u64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = self.call(what, id);
            if answer == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the peer still serves {answer} for {what}({id}), expected {expected}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _: Result<(), _> = common::raw().rpush(&self.requests, "quit");
        let _ = common::wait_within(&mut self.child, common::CHILD_LIMIT);
    }
}

/// Each test: the peer holds an old value, this process changes the entry
/// one way, and the peer then serves the new one.
async fn reaches_the_peer(test: &str, what: &str, id: u64, change: impl AsyncFnOnce()) {
    init(&ns());
    let peer = Peer::start(test);
    let (old, new) = peer.hold(what, id);
    assert_ne!(old, new);
    // Held: without a change the peer keeps serving the old value.
    assert_eq!(peer.call(what, id), old);
    change().await;
    peer.sees(what, id, new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companion_invalidate_reaches_the_peer() {
    reaches_the_peer("companion", "value", 1, async || {
        value_invalidate(1).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_args_reaches_the_peer() {
    reaches_the_peer("args", "value", 2, async || {
        // Registers `value` in this process, as a service does at start.
        value_cache_key(2).unwrap();
        assert!(
            !cached_redis::invalidate_args("l1_value", &serde_json::json!([2]))
                .await
                .unwrap(),
            "the Redis entry was already gone"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_prefix_reaches_the_peer() {
    reaches_the_peer("prefix", "prefixed", 3, async || {
        cached_redis::invalidate_prefix("l1_prefixed")
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reaches_the_peer() {
    reaches_the_peer("refresh", "value", 4, async || {
        value_refresh(4).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_stored_by_a_miss_reaches_the_peer() {
    reaches_the_peer("miss", "value", 5, async || {
        // The Redis entry is gone: this call misses and stores the new value.
        let stored = value(5).await;
        assert_eq!(stored, source("value", 5));
    })
    .await;
}

/// A value read by the peer from an entry written here is held no longer
/// than that entry lives in Redis (its header's creation time plus the TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_level_never_outlives_the_redis_entry() {
    init(&ns());
    let peer = Peer::start("ttl");
    let id = 6;
    let deadline = Instant::now() + PATIENCE;
    loop {
        set_source("short", id, 1);
        let _: () = common::raw().del(entry_key("short", id)).unwrap();
        // Stored here with a 2 s TTL; then read by the peer, whose level
        // holds it from a Redis hit.
        assert_eq!(short(id).await, 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(peer.call("short", id), 1);
        set_source("short", id, 2);
        // Wait for Redis to expire the entry (nothing else removes it).
        while common::raw()
            .exists::<_, bool>(entry_key("short", id))
            .unwrap()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let answer = peer.call("short", id);
        if answer == 2 {
            return;
        }
        // 1 only if the peer's level served past the entry's life; retried
        // in case the peer's channel was not yet live (nothing was held).
        assert!(
            Instant::now() < deadline,
            "the peer served {answer} after the entry expired"
        );
    }
}

/// A writer whose clock runs ahead stamps its entries in the future; a
/// reader's copy still ends with the Redis entry, by Redis's own clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_clock_ahead_does_not_stretch_a_held_copy() {
    init(&ns());
    let id = 1;
    let key = skewed_cache_key(id).unwrap();
    // The level holds values once its channel is live.
    let deadline = Instant::now() + PATIENCE;
    loop {
        set_source("skewed", id, 1);
        assert!(skewed_invalidate(id).await.is_ok());
        assert_eq!(skewed(id).await, 1);
        set_source("skewed", id, 2);
        let _: () = common::raw().del(&key).unwrap();
        if skewed(id).await == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the level never held a value");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An entry of 2, as a process whose clock is ten minutes ahead writes
    // it (its header's creation time, little-endian milliseconds at byte
    // 4: docs/FORMAT.md), with half a second left in Redis.
    assert!(skewed_invalidate(id).await.is_ok());
    assert_eq!(skewed(id).await, 2);
    let mut entry: Vec<u8> = common::raw().get(&key).unwrap();
    assert!(skewed_invalidate(id).await.is_ok());
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + Duration::from_secs(600);
    entry[4..12].copy_from_slice(&(ahead.as_millis() as u64).to_le_bytes());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&entry)
        .arg("PX")
        .arg(500)
        .query(&mut common::raw())
        .unwrap();
    set_source("skewed", id, 3);
    // Read from Redis and held here.
    assert_eq!(skewed(id).await, 2);
    while common::raw().exists::<_, bool>(&key).unwrap() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        skewed(id).await,
        3,
        "the copy outlived its Redis entry by the writer's clock"
    );
}

/// The level holds no more than its byte budget: 64 KiB over 18 KiB values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_budget_bounds_the_level() {
    init(&ns());
    // The channel goes live shortly after the first call.
    let deadline = Instant::now() + PATIENCE;
    let mut round = 0;
    let held = loop {
        // New ids each round: nothing of an earlier round is held.
        let ids = round * 32..(round + 1) * 32;
        round += 1;
        for id in ids.clone() {
            set_source("big", id, 1);
            assert_eq!(big(id).await[0] & 0xff, 1);
        }
        // Every source changes and every Redis entry goes, unannounced: a
        // call still answering 1 is served by the level.
        for id in ids.clone() {
            set_source("big", id, 2);
            let _: () = common::raw().del(entry_key("big", id)).unwrap();
        }
        // Newest first: the level keeps recent entries, and a miss here
        // stores (and holds) its value, which may evict an older one.
        let mut held = 0;
        for id in ids.rev() {
            held += usize::from(big(id).await[0] & 0xff == 1);
        }
        if held > 0 || Instant::now() > deadline {
            break held;
        }
    };
    assert!(held > 0, "the level held nothing");
    assert!(held <= 3, "{held} values of 18 KiB held within 64 KiB");
}

/// A large prefix takes seconds to walk, and a level may take a copy of an
/// entry the walk has not reached yet: every batch the walk removes is
/// announced, so that copy goes with its entry, not at the end of the walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_a_prefix_invalidation_removes_is_announced() {
    const ENTRIES: usize = 5_000;
    let ns = ns();
    init(&ns);
    let head = format!("{ns}:l1_batches:");
    let _: () = redis::cmd("EVAL")
        .arg(
            "for i = 1, tonumber(ARGV[2]) do \
               redis.call('SET', ARGV[1] .. string.format('%022d', i), 'x', 'EX', 600) \
             end",
        )
        .arg(0)
        .arg(&head)
        .arg(ENTRIES)
        .query(&mut common::raw())
        .unwrap();
    // Listens on the namespace's channel, as another process's level does.
    let mut listener = redis::Client::open(common::redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut pubsub = listener.as_pubsub();
    pubsub.subscribe(format!("{ns}:__invalidate")).unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let removed = cached_redis::invalidate_prefix("l1_batches").await.unwrap();
    assert_eq!(removed, ENTRIES as u64);
    // Every announcement was published before `invalidate_prefix`
    // returned: they are all queued once half a second passes without one
    // (the other tests' messages on the namespace's channel, which may
    // never stop for that long, do not count).
    let mut announcements = 0;
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_millis(500) {
        let message = match pubsub.get_message() {
            Ok(message) => message,
            Err(e) if e.is_timeout() => break,
            Err(e) => panic!("listening: {e}"),
        };
        let text: String = message.get_payload().unwrap();
        if text.ends_with(&format!(" p {head}")) {
            announcements += 1;
            last = Instant::now();
        }
    }
    // Before the walk, after it, and one per batch between: SCAN returns
    // about a thousand keys per call (its COUNT), so there are several
    // batches; with the two end messages alone this would be 2.
    assert!(
        announcements >= 4,
        "{announcements} announcements for {ENTRIES} entries"
    );
}
