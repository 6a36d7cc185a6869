//! A Redis Cluster that cannot serve (`CLUSTERDOWN`, as while a master is
//! failing over) costs a cached call a few tries, not the cluster client's
//! default of 16 with sleeps growing from 1.28 s: a sync call has no
//! timeout around the whole command and would wait them out. After a few
//! such calls the breaker opens and calls run without asking Redis at all.
//!
//! Runs on a one-node cluster of its own. What is counted is what the
//! server received (its command statistics), not time; waits are bounded
//! only so that a broken build fails instead of hanging.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cached_redis::cached;

/// How long a behaviour may take to show before the test gives up.
const PATIENCE: Duration = Duration::from_secs(20);

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "cu_item")]
fn item(x: u32) -> u32 {
    RUNS.fetch_add(1, SeqCst);
    x + 7
}

#[cached(prefix = "cu_item_async")]
async fn item_async(x: u32) -> u32 {
    RUNS.fetch_add(1, SeqCst);
    x + 7
}

/// A one-node cluster serving every slot; stopped on drop.
struct Cluster {
    port: u16,
    shell: std::process::Child,
    dir: std::path::PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        let port = common::free_port();
        let dir = std::env::temp_dir().join(format!("cached-redis-cu-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let shell = common::watched(&format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no \
             --dir '{}' --cluster-enabled yes --cluster-config-file nodes.conf",
            dir.display()
        ));
        let cluster = Cluster { port, shell, dir };
        let deadline = Instant::now() + PATIENCE;
        let mut conn = loop {
            if let Ok(conn) = redis::Client::open(cluster.url_of_node())
                .unwrap()
                .get_connection()
            {
                break conn;
            }
            assert!(Instant::now() < deadline, "the cluster node never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        let _: () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query(&mut conn)
            .unwrap();
        cluster.wait_for_state("cluster_state:ok");
        cluster
    }

    fn url_of_node(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn node(&self) -> redis::Connection {
        redis::Client::open(self.url_of_node())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn wait_for_state(&self, state: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut self.node())
                .unwrap();
            if info.contains(state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster never reached {state}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET`s the node received since its statistics were reset, refused
    /// ones included.
    fn gets(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.node())
            .unwrap();
        let Some(line) = info.lines().find(|l| l.starts_with("cmdstat_get:")) else {
            return 0;
        };
        line["cmdstat_get:".len()..]
            .split(',')
            .filter_map(|field| field.split_once('='))
            .filter(|(name, _)| *name == "calls" || *name == "rejected_calls")
            .map(|(_, n)| n.parse::<u64>().unwrap())
            .sum()
    }

    fn reset_stats(&self) {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut self.node())
            .unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // `TERM` to the watchdog shell, which stops the server (a `KILL`
        // would leave the server running).
        let _ = Command::new("kill")
            .arg(self.shell.id().to_string())
            .status();
        let _ = self.shell.wait();
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "the cluster node did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_cluster_that_cannot_serve_costs_a_few_tries_then_none() {
    let cluster = Cluster::start();
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(format!("redis+cluster://127.0.0.1:{}", cluster.port))
            .namespace(common::namespace("cluster_unavailable"))
            .build()
            .unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(item(1), 8);
    assert_eq!(item(1), 8);
    assert_eq!(rt.block_on(item_async(1)), 8);
    assert_eq!(rt.block_on(item_async(1)), 8);
    assert_eq!(RUNS.load(SeqCst), 2, "cached on the cluster");
    rt.block_on(cached_redis::flush_stats()).unwrap();
    let reader = cached_redis::report::StatsReader::new(
        &cached_redis::Config::builder()
            .redis_url(format!("redis+cluster://127.0.0.1:{}", cluster.port))
            .namespace(common::namespace("cluster_unavailable"))
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rt.block_on(reader.all()).unwrap().len(), 2, "both prefixes");

    // No slot is served now: every command is refused with CLUSTERDOWN.
    let _: () = redis::cmd("CLUSTER")
        .arg("DELSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query(&mut cluster.node())
        .unwrap();
    cluster.wait_for_state("cluster_state:fail");
    cluster.reset_stats();

    // The stats reader fails rather than leave out the prefixes whose
    // hashes it cannot read.
    let read = rt.block_on(reader.all());
    assert!(read.is_err(), "read while the cluster is down: {read:?}");

    // A sync call: a few tries of its GET, then its body runs.
    let call = std::thread::spawn(|| item(2));
    let deadline = Instant::now() + PATIENCE;
    while !call.is_finished() {
        assert!(
            Instant::now() < deadline,
            "a sync call is still waiting for a cluster that is down"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(call.join().unwrap(), 9);
    let tries = cluster.gets();
    assert!(
        (1..=4).contains(&tries),
        "the call's GET reached the node {tries} times"
    );

    // Refusals count against the breaker like failures: after a few calls
    // (sync and async alike), calls stop asking the cluster.
    for x in 3..8 {
        assert_eq!(item(x), x + 7);
        assert_eq!(rt.block_on(item_async(x)), x + 7);
    }
    cluster.reset_stats();
    assert_eq!(item(100), 107);
    assert_eq!(rt.block_on(item_async(100)), 107);
    assert_eq!(
        cluster.gets(),
        0,
        "calls still ask a cluster that refuses every command"
    );
}
