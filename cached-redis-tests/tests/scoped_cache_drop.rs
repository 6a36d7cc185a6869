//! Dropping the last clone of a `Cache` ends its background work: its
//! connections to Redis close (counted as this process's own sockets to
//! the server), its invalidation subscriber unsubscribes and its thread
//! ends, and the counts it had not written arrive in one last flush. The
//! default cache goes on untouched. A test binary of its own: no other
//! test opens connections meanwhile.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cached_redis::{cached, Cache, Config};
use redis::Commands;

#[cached(prefix = "drop_async")]
async fn twice(x: u32) -> u32 {
    x * 2
}

#[cached(prefix = "drop_local", local = 10)]
fn thrice(x: u32) -> u32 {
    x * 3
}

fn config(namespace: &str) -> Config {
    Config::builder()
        .redis_url(common::redis_url())
        .namespace(namespace)
        .stats_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// The port of the Redis under test.
fn redis_port() -> u16 {
    let url = common::redis_url();
    let host_port = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    host_port.rsplit(':').next().unwrap().parse().unwrap()
}

/// This process's established TCP connections to the Redis under test:
/// the sockets among its open files that `/proc/net/tcp` shows connected
/// to that port.
fn own_connections() -> usize {
    let inodes: HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let port = format!("{:04X}", redis_port());
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .map(|line| {
                    line.split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        // Columns: sl, local, remote, state (01: established), ..., inode.
        .filter(|cols| {
            cols.len() > 9
                && cols[2].ends_with(&format!(":{port}"))
                && cols[3] == "01"
                && inodes.contains(&cols[9])
        })
        .count()
}

/// Threads of this process running an invalidation subscriber (thread
/// names are cut to 15 bytes).
fn subscriber_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "cached-redis-in")
        .count()
}

/// Subscribers of `namespace`'s invalidation channel on the server.
fn subscribers(namespace: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("{namespace}:__invalidate"))
        .query(&mut common::raw())
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_cache_ends_its_background_work() {
    let ns_default = common::namespace("drop-default");
    let ns_dropped = common::namespace("drop-scoped");
    cached_redis::init(config(&ns_default)).unwrap();
    // The default cache's connections are open before counting.
    assert_eq!(twice(1).await, 2);
    assert_eq!(tokio::task::spawn_blocking(|| thrice(1)).await.unwrap(), 3);
    common::eventually("the default cache's subscriber", || {
        subscribers(&ns_default) == 1
    })
    .await;
    let connections_before = own_connections();
    let threads_before = subscriber_threads();

    let cache = Cache::new(config(&ns_dropped)).unwrap();
    assert_eq!(cache.scope(twice(1)).await, 2);
    assert_eq!(cache.scope(twice(1)).await, 2);
    let scoped = cache.clone();
    let sync = tokio::task::spawn_blocking(move || scoped.in_scope(|| thrice(1)))
        .await
        .unwrap();
    assert_eq!(sync, 3);
    common::eventually("the scoped cache's subscriber", || {
        subscribers(&ns_dropped) == 1
    })
    .await;
    // Its async, blocking and subscriber connections.
    assert!(
        own_connections() >= connections_before + 3,
        "{} connections, {connections_before} before",
        own_connections()
    );
    assert_eq!(subscriber_threads(), threads_before + 1);

    drop(cache);
    common::eventually("the subscriber unsubscribed", || {
        subscribers(&ns_dropped) == 0
    })
    .await;
    common::eventually("the subscriber thread ended", || {
        subscriber_threads() == threads_before
    })
    .await;
    // The last flush wrote the counts it had not written.
    common::eventually("the last flush", || {
        let stats: HashMap<String, String> = common::raw()
            .hgetall(format!("{ns_dropped}:drop_async:stats"))
            .unwrap();
        stats.get("hits").map(String::as_str) == Some("1")
    })
    .await;
    common::eventually("the connections closed", || {
        own_connections() == connections_before
    })
    .await;

    // The default cache is untouched: still subscribed, still hitting.
    assert_eq!(subscribers(&ns_default), 1);
    assert_eq!(twice(1).await, 2);
    let stats = cached_redis::local_stats("drop_async").unwrap();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    cached_redis::flush_stats().await.unwrap();
    let written: HashMap<String, String> = common::raw()
        .hgetall(format!("{ns_default}:drop_async:stats"))
        .unwrap();
    assert_eq!(written.get("hits").map(String::as_str), Some("1"));
}
