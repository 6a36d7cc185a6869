//! A `local` level on a cluster one of whose masters restarts quickly.
//!
//! The restarted master comes back at its address, with its slots and its
//! place in the cluster, but with none of its entries, and a change
//! published on it before its bus links are back reaches no other node.
//! Its probes may all come back (it was gone for less than the unheard
//! limit), so only its new run id tells: the level must stop serving what
//! it holds, for that reason (the logs say which rule turned it off: the
//! others may fire too, by chance), and serve again once the channel is
//! checked anew.
//!
//! First, every node refuses `INFO` (an ACL rule): the level must go live
//! all the same, run ids or not.
//!
//! Its own test binary: the library is configured once per process.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cached_redis::{cached, RedisStore};
use common::free_port;

static SOURCE: AtomicU64 = AtomicU64::new(1);

#[cached(local = 100, ttl = 600, prefix = "restart")]
async fn value(id: u64) -> u64 {
    SOURCE.load(SeqCst) * 1000 + id
}

/// Whether the level serves `value(id)` within `within`
/// ([`common::level_serves`]).
async fn level_serves(store: &RedisStore, id: u64, serving: bool, within: Duration) -> bool {
    let key = value_cache_key(id).unwrap();
    common::level_serves(store, &key, &SOURCE, || value(id), serving, within).await
}

/// Until `within`, calls `value(id)` until it answers something else than
/// `held`; whether it did.
async fn until_answer_differs(id: u64, held: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while value(id).await == held {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_restarted_empties_the_level() {
    let logs = common::logs::logs();
    // A long node timeout: nobody marks the restarting master as failed.
    let buses: Vec<(u16, u16)> = (0..3).map(|_| free_port()).map(|bus| (bus, bus)).collect();
    let mut servers = common::start_cluster(&buses, 30_000);
    common::set_default_user_rule(&servers, "-info");

    // One seed, the first node: the subscriber listens there.
    let store = common::init_on_cluster(servers[0].port, "local_cluster_restart");
    let live_without_info = level_serves(&store, 1, true, Duration::from_secs(10)).await;

    // An entry on a master other than the subscriber's node: the one to
    // restart (the subscriber's own connection would drop with its node).
    let (id, owner) = (1..100)
        .map(|id| {
            (
                id,
                common::owner_of(&servers, &value_cache_key(id).unwrap()),
            )
        })
        .find(|&(_, owner)| owner != 0)
        .expect("an entry served by another node than the first");

    // Every master's run id is asked by its next probe (one master every
    // 250 ms): a few rounds.
    common::set_default_user_rule(&servers, "+info");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let live = level_serves(&store, id, true, Duration::from_secs(10)).await;

    // What the level holds now, and what the body would answer instead.
    let held = value(id).await;
    SOURCE.fetch_add(1, SeqCst);
    servers[owner].restart();
    common::until_cluster_ok(&servers[owner], servers.len());
    let restarted = Instant::now();
    let emptied = until_answer_differs(id, held, Duration::from_secs(10)).await;
    let noticed = restarted.elapsed();
    let back = level_serves(&store, id, true, Duration::from_secs(20)).await;
    drop(servers);
    let restart_told = logs
        .0
        .lock()
        .unwrap()
        .contains("restarted (its run id changed)");

    assert!(
        live_without_info,
        "the level never went live on a cluster whose nodes refuse INFO"
    );
    assert!(live, "the level did not serve once INFO was allowed");
    assert!(
        emptied,
        "10 s after a master restarted (its entries gone, changes published on \
         it meanwhile reaching nobody), the level still served what it held"
    );
    println!("the level let go of what it held {noticed:?} after the master was back");
    assert!(
        restart_told,
        "the level was emptied, but not because the master's run id changed"
    );
    assert!(back, "the level did not serve again after the restart");
}
