//! A `local` level on a cluster whose subscriber's node is cut off from
//! the cluster bus while it still answers its clients.
//!
//! Changes are published on the master of their entry's slot and reach
//! the subscriber's node over the bus. Here three masters form a cluster
//! of the test's own; the inbound bus links of the node the subscriber
//! listens on go through a proxy that the test cuts (a partition between
//! the nodes, not between the process and its node: the node still
//! answers `PING`). The level must stop serving what it holds, because no
//! change reaches it any more, and serve again once the bus is back.
//!
//! Then another master stops answering (`SIGSTOP`) while the cluster
//! still counts it in: its probes get no answer, so nothing vouches that
//! its changes reach the subscriber, and the level must go off as well,
//! and come back once the master answers again.
//!
//! Last, every node refuses `CLUSTER SLOTS` (an ACL rule): the probes may
//! go on to the masters they know for a while, but a master added or
//! failed over meanwhile would not be probed, so the level must go off,
//! and come back once the masters can be learnt again.
//!
//! Its own test binary: the library is configured once per process.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cached_redis::{cached, RedisStore};
use common::free_port;

static SOURCE: AtomicU64 = AtomicU64::new(1);

#[cached(local = 100, ttl = 600, prefix = "partition")]
async fn value(id: u64) -> u64 {
    SOURCE.load(SeqCst) * 1000 + id
}

/// A TCP proxy that can be cut (every connection closed, new ones closed
/// at once) and healed.
struct Proxy {
    /// Whether it passes connections on, and the streams it passes on:
    /// one lock, so that no connection slips past a cut.
    state: Arc<Mutex<(bool, Vec<TcpStream>)>>,
}

impl Proxy {
    fn start(listener: TcpListener, target: u16) -> Self {
        let state = Arc::new(Mutex::new((true, Vec::new())));
        let shared = state.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                let mut state = shared.lock().unwrap();
                if !state.0 {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                state.1.push(inbound.try_clone().unwrap());
                state.1.push(outbound.try_clone().unwrap());
                let pairs = [
                    (inbound.try_clone(), outbound.try_clone()),
                    (Ok(outbound), Ok(inbound)),
                ];
                for (from, to) in pairs {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { state }
    }

    fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = false;
        for stream in state.1.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.state.lock().unwrap().0 = true;
    }
}

/// Whether the level serves `value(1)`, whose entry is `key`, within
/// `within` ([`common::level_serves`]).
async fn level_serves(store: &RedisStore, key: &str, serving: bool, within: Duration) -> bool {
    common::level_serves(store, key, &SOURCE, || value(1), serving, within).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_bus_or_a_stuck_master_turns_the_level_off() {
    // Three masters; the third one's inbound bus links go through the
    // proxy. A long node timeout keeps the cluster "ok" meanwhile: the
    // nodes do not notice the partition either.
    let buses: Vec<u16> = (0..3).map(|_| free_port()).collect();
    // Bound now: its port is taken before anything else can take it.
    let proxy_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = proxy_listener.local_addr().unwrap().port();
    let proxy = Proxy::start(proxy_listener, buses[2]);
    let servers = common::start_cluster(
        &[
            (buses[0], buses[0]),
            (buses[1], buses[1]),
            (buses[2], proxy_port),
        ],
        30_000,
    );

    // One seed, the third node: the subscriber listens there.
    let store = common::init_on_cluster(servers[2].port, "local_cluster_partition");
    let key = value_cache_key(1).unwrap();
    assert!(
        level_serves(&store, &key, true, Duration::from_secs(10)).await,
        "the level never went live on a healthy cluster"
    );

    proxy.cut();
    let cut = Instant::now();
    let off = !level_serves(&store, &key, false, Duration::from_secs(5)).await;
    let noticed = cut.elapsed();

    proxy.heal();
    let back = level_serves(&store, &key, true, Duration::from_secs(20)).await;

    // A master that neither serves the key nor is the subscriber's node.
    let owner = common::owner_of(&servers, &key);
    let stuck = (0..2).find(|&i| i != owner).unwrap();
    let hung = servers[stuck].hang();
    let frozen = Instant::now();
    let off_while_stuck = !level_serves(&store, &key, false, Duration::from_secs(8)).await;
    let noticed_stuck = frozen.elapsed();
    drop(hung);
    let back_after_stuck = level_serves(&store, &key, true, Duration::from_secs(20)).await;

    // Every node answers, but none tells the masters any more: those known
    // may stand in for a while, not for good (one may have been added or
    // failed over meanwhile).
    common::set_default_user_rule(&servers, "-cluster|slots");
    let denied = Instant::now();
    let off_unlearnt = !level_serves(&store, &key, false, Duration::from_secs(12)).await;
    let noticed_unlearnt = denied.elapsed();
    common::set_default_user_rule(&servers, "+cluster|slots");
    let back_learnt = level_serves(&store, &key, true, Duration::from_secs(20)).await;
    drop(servers);

    assert!(
        off,
        "5 s after the subscriber's node was cut off from the bus, the level \
         still served what it held (no change can reach it)"
    );
    println!("the level went off {noticed:?} after the cut");
    assert!(back, "the level did not serve again once the bus was back");
    assert!(
        off_while_stuck,
        "8 s after a master stopped answering, the level still served what \
         it held (nothing vouches for that master's changes)"
    );
    println!("the level went off {noticed_stuck:?} after a master stopped");
    assert!(
        back_after_stuck,
        "the level did not serve again once the master answered"
    );
    assert!(
        off_unlearnt,
        "12 s after the masters could no longer be learnt, the level still \
         served what it held (nothing vouches for the list it probes)"
    );
    println!("the level went off {noticed_unlearnt:?} after CLUSTER SLOTS was refused");
    assert!(
        back_learnt,
        "the level did not serve again once the masters could be learnt"
    );
}
