//! A walk over a cluster's keys (what `invalidate_prefix` and the stats
//! reader do) while a slot moves between masters, as a reshard moves it.
//!
//! The walk visits the masters one after another. A key that moves from a
//! master not walked yet to one walked already would be missed, and an
//! `invalidate_prefix` would say it removed everything while that entry
//! kept serving. Here the slot moves between the walk's steps, exactly as
//! `redis-cli --cluster reshard` moves one (`SETSLOT IMPORTING/MIGRATING`,
//! `MIGRATE`, `SETSLOT NODE`), and is moved back afterwards.
//!
//! On a cluster of its own: moving slots leaves a cluster's epochs and
//! gossip busy for a while, which other tests need not share.

mod common;

use cached_redis::{Config, RedisStore, ScanCursor, StoreError};

/// A master: its id and its address.
#[derive(Debug, Clone)]
struct Master {
    id: String,
    host: String,
    port: u16,
    first_slot: u16,
}

impl Master {
    fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}:{}/", self.host, self.port))
            .and_then(|c| c.get_connection())
            .expect("connect to a master")
    }
}

/// The masters, in the order of their first slot: the order a walk takes.
fn masters(any: &mut redis::Connection) -> Vec<Master> {
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(any).unwrap();
    let mut masters: Vec<Master> = nodes
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 9 || f[2].contains("fail") || !f[2].split(',').any(|x| x == "master") {
                return None;
            }
            let address = f[1].split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            let first_slot = f[8..]
                .iter()
                .filter_map(|s| s.split('-').next()?.parse::<u16>().ok())
                .min()?;
            Some(Master {
                id: f[0].to_owned(),
                host: host.to_owned(),
                port: port.parse().ok()?,
                first_slot,
            })
        })
        .collect();
    masters.sort_by_key(|m| m.first_slot);
    masters
}

/// Moves `slot`, with its keys, from `from` to `to`, telling every master.
fn move_slot(slot: u16, from: &Master, to: &Master, all: &[Master]) {
    setslot(to, slot, "IMPORTING", &from.id);
    setslot(from, slot, "MIGRATING", &to.id);
    let mut source = from.conn();
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query(&mut source)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let _: redis::Value = redis::cmd("MIGRATE")
            .arg(&to.host)
            .arg(to.port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut source)
            .unwrap();
    }
    setslot(to, slot, "NODE", &to.id);
    setslot(from, slot, "NODE", &to.id);
    for other in all {
        if other.id != from.id && other.id != to.id {
            setslot(other, slot, "NODE", &to.id);
        }
    }
    until_settled(slot, to, all);
}

/// Waits until every master names `owner` as the owner of `slot` and all
/// agree on the cluster's current epoch. Otherwise a move that follows
/// could start while `owner`'s new epoch is still spreading: the next
/// importer would then not raise its own above it, and a message `owner`
/// sent before it let go of the slot would claim it back.
fn until_settled(slot: u16, owner: &Master, all: &[Master]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let views: Vec<(Option<String>, Option<String>)> = all
            .iter()
            .map(|m| {
                let mut conn = m.conn();
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).unwrap();
                let epoch = info
                    .lines()
                    .find_map(|l| l.strip_prefix("cluster_current_epoch:"))
                    .map(|e| e.trim().to_owned());
                (owner_seen(&mut conn, slot), epoch)
            })
            .collect();
        let agreed = views.iter().all(|(seen, epoch)| {
            seen.as_deref() == Some(owner.id.as_str()) && *epoch == views[0].1
        });
        if agreed {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster did not settle on {} owning slot {slot}: {views:?}",
            owner.port
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The id of the node that owns `slot`, as the node behind `conn` sees it.
fn owner_seen(conn: &mut redis::Connection, slot: u16) -> Option<String> {
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(conn).unwrap();
    nodes.lines().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let owns = f.get(8..)?.iter().any(|range| {
            let mut ends = range.split('-').map(|n| n.parse::<u16>());
            match (ends.next(), ends.next()) {
                (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                (Some(Ok(a)), None) => a == slot,
                _ => false,
            }
        });
        owns.then(|| f[0].to_owned())
    })
}

/// A key `{prefix}:{n}` in a slot that `owner` serves, and the slot.
fn key_served_by(
    owner: &Master,
    all: &[Master],
    prefix: &str,
    any: &mut redis::Connection,
) -> (String, u16) {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .find_map(|key| {
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query(any)
                .unwrap();
            let serving = all.iter().rfind(|m| m.first_slot <= slot)?;
            (serving.id == owner.id).then_some((key, slot))
        })
        .unwrap()
}

/// `CLUSTER SETSLOT slot how id` on `master`.
fn setslot(master: &Master, slot: u16, how: &str, id: &str) {
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(how)
        .arg(id)
        .query(&mut master.conn())
        .unwrap_or_else(|e| panic!("SETSLOT {slot} {how} on {}: {e}", master.port));
}

/// Walks on from `cursor` to the end (each step far above a master's
/// keys), adding what it finds to `seen`; stops at the first error.
async fn walk_on(
    store: &RedisStore,
    cursor: &mut ScanCursor,
    pattern: &str,
    seen: &mut Vec<String>,
) -> Result<(), StoreError> {
    while !cursor.is_done() {
        seen.extend(store.scan(cursor, pattern, 1_000_000).await?);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_moves_during_a_walk_is_still_found() {
    let buses: Vec<(u16, u16)> = (0..3)
        .map(|_| common::free_port())
        .map(|bus| (bus, bus))
        .collect();
    let servers = common::start_cluster(&buses, 15_000);
    let url = format!("redis+cluster://127.0.0.1:{}", servers[0].port);
    let namespace = common::namespace("cluster_reshard");
    let store = RedisStore::open(&Config::builder().redis_url(&url).build().unwrap()).unwrap();
    let seed = url.trim_start_matches("redis+cluster://");
    let seed = format!("redis://{}", seed.split(',').next().unwrap());
    let mut any = redis::Client::open(seed)
        .and_then(|c| c.get_connection())
        .unwrap();
    let all = masters(&mut any);
    assert!(all.len() >= 2, "a cluster of one master: {all:?}");
    let (first, last) = (all[0].clone(), all[all.len() - 1].clone());

    // A key in a slot of the master walked last.
    let (key, slot) = key_served_by(&last, &all, &format!("{namespace}:moving"), &mut any);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query(&mut last.conn())
        .unwrap();

    // The first step walks the first master whole (the count is far above
    // its keys); then the key's slot moves to that master.
    let pattern = format!("{namespace}:*");
    let mut cursor = ScanCursor::new();
    let mut seen: Vec<String> = store.scan(&mut cursor, &pattern, 1_000_000).await.unwrap();
    assert!(!cursor.is_done());
    move_slot(slot, &last, &first, &all);
    let walk = walk_on(&store, &mut cursor, &pattern, &mut seen).await;

    // Back as it was, before judging: the next part starts from there.
    move_slot(slot, &first, &last, &all);
    let _: () = redis::cmd("DEL").arg(&key).query(&mut last.conn()).unwrap();
    walk.expect("the walk ends (the slot moved once, then stayed)");
    assert!(
        seen.contains(&key),
        "the walk said it was done but never returned {key}, which moved from \
         the last master to the first one during it: {seen:?}"
    );

    // A slot half-moved all along (a reshard in progress, or one that
    // stopped part-way): its key goes from the master walked last to the
    // one walked first during the walk, and the slot never changes hands.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query(&mut last.conn())
        .unwrap();
    setslot(&first, slot, "IMPORTING", &last.id);
    setslot(&last, slot, "MIGRATING", &first.id);
    let mut cursor = ScanCursor::new();
    let mut seen: Vec<String> = store.scan(&mut cursor, &pattern, 1_000_000).await.unwrap();
    let _: redis::Value = redis::cmd("MIGRATE")
        .arg(&first.host)
        .arg(first.port)
        .arg(&key)
        .arg(0)
        .arg(5000)
        .query(&mut last.conn())
        .unwrap();
    let walk = walk_on(&store, &mut cursor, &pattern, &mut seen).await;

    // Back as it was: the slot finishes its move, and moves back.
    for master in &all {
        setslot(master, slot, "NODE", &first.id);
    }
    until_settled(slot, &first, &all);
    move_slot(slot, &first, &last, &all);
    let _: () = redis::cmd("DEL").arg(&key).query(&mut last.conn()).unwrap();
    walk.expect("a walk while a slot is half-moved, nothing changing hands");
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        [key],
        "the key moved within a half-moved slot during the walk"
    );
}

/// A master that serves no slot yet (a node just added, a reshard moving
/// its first slot onto it) is left out of `CLUSTER SLOTS`, but may hold
/// keys of the slot it imports already: the walk finds them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_on_a_master_importing_its_first_slot_is_found() {
    let buses: Vec<(u16, u16)> = (0..2)
        .map(|_| common::free_port())
        .map(|bus| (bus, bus))
        .collect();
    let servers = common::start_cluster(&buses, 15_000);
    let bus = common::free_port();
    let added = common::RedisServer::start_with(
        common::free_port(),
        &format!(
            "--cluster-enabled yes --cluster-config-file nodes.conf \
             --cluster-node-timeout 15000 --cluster-port {bus}"
        ),
    );
    let mut any = servers[0].connect();
    let _: () = redis::cmd("CLUSTER")
        .arg("MEET")
        .arg("127.0.0.1")
        .arg(added.port)
        .arg(bus)
        .query(&mut any)
        .unwrap();
    let added_id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut added.connect())
        .unwrap();
    // Until every node knows the new one, and it knows the slots' owners.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !servers.iter().chain([&added]).all(|node| {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut node.connect())
            .unwrap();
        info.contains("cluster_known_nodes:3") && info.contains("cluster_state:ok")
    }) {
        assert!(std::time::Instant::now() < deadline, "the node was not met");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let all = masters(&mut any);
    let owner = all[0].clone();
    let added = Master {
        id: added_id,
        host: "127.0.0.1".to_owned(),
        port: added.port,
        first_slot: 0,
    };
    let namespace = common::namespace("cluster_reshard_added");
    let (key, slot) = key_served_by(&owner, &all, &format!("{namespace}:importing"), &mut any);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query(&mut owner.conn())
        .unwrap();
    setslot(&added, slot, "IMPORTING", &owner.id);
    setslot(&owner, slot, "MIGRATING", &added.id);
    let _: redis::Value = redis::cmd("MIGRATE")
        .arg(&added.host)
        .arg(added.port)
        .arg(&key)
        .arg(0)
        .arg(5000)
        .query(&mut owner.conn())
        .unwrap();

    let url = format!("redis+cluster://127.0.0.1:{}", servers[0].port);
    let store = RedisStore::open(&Config::builder().redis_url(&url).build().unwrap()).unwrap();
    let mut cursor = ScanCursor::new();
    let mut seen = Vec::new();
    walk_on(&store, &mut cursor, &format!("{namespace}:*"), &mut seen)
        .await
        .expect("a walk while the slot is half-moved");
    assert!(
        seen.contains(&key),
        "{key} sits on the master importing its slot, which serves no slot yet, \
         and the walk missed it: {seen:?}"
    );
}
