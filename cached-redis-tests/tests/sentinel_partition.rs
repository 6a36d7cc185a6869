//! A sentinel's master cut off from the sentinels but not from this
//! process (a network partition): the sentinels promote the replica, and
//! the processes that reconnect write there. This one must follow: its
//! `local` level stop serving what the old master held, its calls go to
//! the new master, and its invalidation channel listen there.
//!
//! The partition is made with an ACL: the sentinel logs in to the master
//! and replica as a user of its own, whose every command the master then
//! refuses (a user turned off would not do: the sentinel would go on as
//! the default user). The sentinel sees the master down and cannot demote
//! it, while this process, logged in as the default user, still reaches it
//! and gets its answers: nothing breaks on its side. The test owns its topology (a master, its
//! replica and a sentinel, on free ports).

mod common;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cached_redis::{cached, Cache, Config, RedisStore};
use common::sentinel::Sentinel;
use common::RedisServer;
use redis::Commands;

/// Bounds for a loaded machine, not speed claims.
const FAILOVER_WITHIN: Duration = Duration::from_secs(30);
const WITHIN: Duration = Duration::from_secs(15);

static SOURCE: AtomicU64 = AtomicU64::new(1);

#[cached(local = 100, ttl = 600, prefix = "partition")]
async fn value(id: u64) -> u64 {
    SOURCE.load(SeqCst) * 1000 + id
}

/// The same through the blocking path (its pool of connections), no level.
#[cached(ttl = 600, prefix = "partition_sync")]
fn sync_value(id: u64) -> u64 {
    SOURCE.load(SeqCst) * 1000 + id
}

/// Gives the sentinel its own user on `server`.
fn add_sentinel_user(server: &RedisServer) {
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("sentinel")
        .arg("on")
        .arg(">sentinel-pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query::<()>(&mut server.connect())
        .unwrap();
}

/// Waits until `done` holds, failing the test after `limit`.
fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a process on the new master does when the value changes: the
/// source moves, the entry is removed, the change announced there (the
/// message another process's write sends).
fn change_on(new_master: &mut redis::Connection, ns: &str, key: &str) {
    SOURCE.fetch_add(1, SeqCst);
    let _: () = new_master.del(key).unwrap();
    let _: () = new_master
        .publish(
            format!("{ns}:__invalidate"),
            format!("0123456789abcdef:0 k {key}"),
        )
        .unwrap();
}

/// Calls until the answer is no longer `held`, failing the test after
/// [`WITHIN`].
async fn until_changed<F, Fut>(held: u64, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let since = Instant::now();
    while call().await == held {
        assert!(
            since.elapsed() < WITHIN,
            "still answered {held} {WITHIN:?} after the change on the new master"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A store on one server, as a process that found it through the
/// sentinels uses it.
fn store_on(server: &RedisServer) -> RedisStore {
    RedisStore::open(&Config::builder().redis_url(server.url()).build().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_cut_off_from_the_sentinels_is_left_for_the_one_they_promote() {
    let master = RedisServer::start();
    let replica = RedisServer::start_with(
        common::free_port(),
        &format!("--replicaof 127.0.0.1 {}", master.port),
    );
    add_sentinel_user(&master);
    add_sentinel_user(&replica);
    until("the replica in sync", WITHIN, || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.connect())
            .unwrap();
        info.contains("master_link_status:up")
    });
    let sentinel = Sentinel::start(
        master.port,
        "sentinel auth-user mymaster sentinel\n\
         sentinel auth-pass mymaster sentinel-pw\n\
         sentinel down-after-milliseconds mymaster 1000\n\
         sentinel failover-timeout mymaster 10000\n",
    );
    until("the sentinel knows the replica", WITHIN, || {
        let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg("mymaster")
            .query(&mut sentinel.conn().unwrap())
            .unwrap();
        replicas.iter().any(|r| {
            r.get("port") == Some(&replica.port.to_string())
                && r.get("flags").is_some_and(|f| f == "slave")
                && r.get("master-link-status").is_some_and(|s| s == "ok")
        })
    });

    let ns = common::namespace("sentinel_partition");
    let cache = Cache::new(
        Config::builder()
            .redis_url(sentinel.url())
            .namespace(ns.clone())
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap();
    let key = cache.in_scope(|| value_cache_key(1)).unwrap();
    let (on_master, on_replica) = (store_on(&master), store_on(&replica));
    let call = || cache.scope(value(1));
    let sync_call = || {
        let cache = cache.clone();
        async move {
            tokio::task::spawn_blocking(move || cache.in_scope(|| sync_value(1)))
                .await
                .unwrap()
        }
    };
    let sync_key = cache.in_scope(|| sync_value_cache_key(1)).unwrap();
    // Stored on the master (and copied to the replica), then a hit there:
    // the pool holds a connection to the master.
    let sync_held = sync_call().await;
    assert_eq!(sync_call().await, sync_held, "a hit");

    // The level serves, the channel live on the master.
    assert!(
        common::level_serves(&on_master, &key, &SOURCE, call, true, WITHIN).await,
        "the level never went live"
    );

    // The partition: the master refuses the sentinel everything, and
    // still answers this process.
    let mut conn = master.connect();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("sentinel")
        .arg("-@all")
        .query::<()>(&mut conn)
        .unwrap();
    let cut = Instant::now();
    until("the sentinel promotes the replica", FAILOVER_WITHIN, || {
        sentinel.master_port() == Some(replica.port)
    });
    // Still answering this process: nothing broke on its side.
    let _: String = conn.ping().unwrap();
    eprintln!("failover {:?} after the partition", cut.elapsed());

    // A process that follows the sentinels changes the entry on the new
    // master (the old one still holds it): this one stops answering with
    // what its level took from the old master.
    let held = call().await;
    let mut new_master = replica.connect();
    change_on(&mut new_master, &ns, &key);
    until_changed(held, call).await;
    // The blocking path moves too: its entry removed on the new master
    // only, the next calls recompute.
    let _: () = new_master.del(&sync_key).unwrap();
    until_changed(sync_held, sync_call).await;
    // The level goes live again, its channel on the new master: a change
    // announced there reaches it (the first change could have been taken
    // from the new master's entry, with the level off).
    assert!(
        common::level_serves(&on_replica, &key, &SOURCE, call, true, WITHIN).await,
        "the level never went live again"
    );
    let held = call().await;
    change_on(&mut new_master, &ns, &key);
    until_changed(held, call).await;
}
