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
//! Its own test binary: the library is configured once per process.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cached_redis::{cached, Config, RedisStore};
use common::{free_port, RedisServer};

static SOURCE: AtomicU64 = AtomicU64::new(1);

#[cached(local = 100, ttl = 600, prefix = "partition")]
async fn value(id: u64) -> u64 {
    SOURCE.load(SeqCst) * 1000 + id
}

/// A TCP proxy that can be cut (every connection closed, new ones closed
/// at once) and healed.
struct Proxy {
    open: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(listen: u16, target: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", listen)).unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (is_open, all) = (open.clone(), streams.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                if !is_open.load(SeqCst) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut all = all.lock().unwrap();
                all.push(inbound.try_clone().unwrap());
                all.push(outbound.try_clone().unwrap());
                for (from, to) in [
                    (inbound.try_clone(), outbound.try_clone()),
                    (Ok(outbound), Ok(inbound)),
                ] {
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
        Self { open, streams }
    }

    fn cut(&self) {
        self.open.store(false, SeqCst);
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.open.store(true, SeqCst);
    }
}

fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> T {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .unwrap();
    cmd.query(&mut conn).unwrap()
}

/// Until `within`, calls `value(1)` after removing its entry from Redis
/// and changing what the body returns: the answer is the old value only
/// when the level served it. Returns whether the level served.
async fn level_serves(store: &RedisStore, key: &str, serving: bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let held = value(1).await;
        let _: i64 = store.query(redis::cmd("DEL").arg(key)).await.unwrap_or(0);
        SOURCE.fetch_add(1, SeqCst);
        let served = value(1).await == held;
        if served == serving || Instant::now() >= deadline {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_node_cut_off_from_the_bus_turns_the_level_off() {
    // Three masters; the third one's inbound bus links go through the
    // proxy. A long node timeout keeps the cluster "ok" meanwhile: the
    // nodes do not notice the partition either.
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let proxy_port = free_port();
    let cluster =
        "--cluster-enabled yes --cluster-node-timeout 15000 --cluster-config-file nodes.conf";
    let servers: Vec<RedisServer> = ports
        .iter()
        .enumerate()
        .map(|(i, &(port, bus))| {
            let announce = if i == 2 {
                format!("--cluster-announce-bus-port {proxy_port}")
            } else {
                String::new()
            };
            RedisServer::start_with(port, &format!("{cluster} --cluster-port {bus} {announce}"))
        })
        .collect();
    let proxy = Proxy::start(proxy_port, ports[2].1);
    for (i, &(port, _)) in ports.iter().enumerate() {
        let (first, last) = (i * 16384 / 3, (i + 1) * 16384 / 3 - 1);
        let _: () = query(
            port,
            redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last),
        );
    }
    // The third node is met at the proxy's port: every node reaches its
    // bus through the proxy.
    for (port, bus) in [ports[1], (ports[2].0, proxy_port)] {
        let _: () = query(
            ports[0].0,
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(port)
                .arg(bus),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ports.iter().all(|&(port, _)| {
        let info: String = query(port, redis::cmd("CLUSTER").arg("INFO"));
        info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
    }) {
        assert!(Instant::now() < deadline, "the cluster did not form");
        std::thread::sleep(Duration::from_millis(100));
    }

    // One seed, the third node: the subscriber listens there.
    let url = format!("redis+cluster://127.0.0.1:{}", ports[2].0);
    cached_redis::init(
        Config::builder()
            .redis_url(&url)
            .namespace(common::namespace("local_cluster_partition"))
            .build()
            .unwrap(),
    )
    .unwrap();
    let store = RedisStore::open(&Config::builder().redis_url(&url).build().unwrap()).unwrap();
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
    drop(servers);
    assert!(
        off,
        "5 s after the subscriber's node was cut off from the bus, the level \
         still served what it held (no change can reach it)"
    );
    println!("the level went off {noticed:?} after the cut");
    assert!(back, "the level did not serve again once the bus was back");
}
