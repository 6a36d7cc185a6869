//! Async connections are kept per tokio runtime: servers that run one
//! `current_thread` runtime per worker (actix-web: one per core) must keep
//! one connection per worker, however many workers there are, and runtimes
//! that come and go must not cost the live ones theirs.
//!
//! The connections are counted on a redis-server of this test's own
//! (`total_connections_received` of `INFO stats`), so that no other client
//! of the shared test server is counted.

mod common;

use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::Duration;

use cached_redis::cached;

/// Live runtimes, one per OS thread, as a server with that many workers.
const WORKERS: usize = 12;

/// Calls each worker makes, about one a millisecond.
const CALLS: u64 = 300;

/// Short-lived runtimes started and dropped while the workers live: more
/// than any bound on the connections kept.
const CHURN: usize = 300;

#[cached(ttl = 600, prefix = "rt_square")]
async fn square(x: u64) -> u64 {
    x * x
}

/// The server of this test process, the cache installed on it once. The
/// tests take its lock: each counts the connections only it opens.
fn server() -> std::sync::MutexGuard<'static, common::RedisServer> {
    static SERVER: OnceLock<Mutex<common::RedisServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let server = common::RedisServer::start();
            cached_redis::init(
                cached_redis::Config::builder()
                    .redis_url(server.url())
                    .namespace(common::namespace("runtime-connections"))
                    // No flush: its connections would be counted too.
                    .stats_flush_interval(Duration::from_secs(3600))
                    .build()
                    .unwrap(),
            )
            .unwrap();
            Mutex::new(server)
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Connections `server` has accepted since it started.
fn connections_received(server: &common::RedisServer) -> u64 {
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .expect("test server reachable");
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats counts the connections")
}

/// A runtime like a server worker's: one thread, I/O and timers.
fn worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Calls `square` `calls` times on the current runtime, a millisecond
/// apart, checking every answer.
async fn call_often(calls: u64) {
    for i in 0..calls {
        assert_eq!(square(i % 4).await, (i % 4) * (i % 4));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn each_live_runtime_keeps_its_connection() {
    let server = server();
    // The entries exist: the workers only hit.
    worker_runtime().block_on(call_often(4));
    let before = connections_received(&server);
    let start = Arc::new(Barrier::new(WORKERS));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let rt = worker_runtime();
                start.wait();
                rt.block_on(call_often(CALLS));
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let opened = connections_received(&server) - before;
    // One per worker; the slack covers a reconnect or two, not churn
    // (evicting live runtimes' connections opens thousands here).
    assert!(
        opened <= WORKERS as u64 + 4,
        "{opened} connections opened for {WORKERS} runtimes making {} calls",
        WORKERS as u64 * CALLS
    );
}

#[test]
fn runtimes_that_come_and_go_leave_live_ones_their_connections() {
    let server = server();
    let warmed = Arc::new(Barrier::new(WORKERS + 1));
    let churned = Arc::new(Barrier::new(WORKERS + 1));
    let done = Arc::new(Barrier::new(WORKERS + 1));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (warmed, churned, done) =
                (Arc::clone(&warmed), Arc::clone(&churned), Arc::clone(&done));
            std::thread::spawn(move || {
                let rt = worker_runtime();
                rt.block_on(call_often(2));
                warmed.wait();
                churned.wait();
                rt.block_on(call_often(20));
                // Alive until counted.
                done.wait();
            })
        })
        .collect();
    warmed.wait();
    // Each of these runtimes connects once and is dropped.
    for _ in 0..CHURN {
        worker_runtime().block_on(call_often(1));
    }
    let before = connections_received(&server);
    churned.wait();
    done.wait();
    let opened = connections_received(&server) - before;
    for worker in workers {
        worker.join().unwrap();
    }
    assert!(
        opened <= 4,
        "{opened} connections reopened by {WORKERS} live runtimes after {CHURN} others came and went"
    );
}

static GATED_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cached(ttl = 600, prefix = "rt_gated")]
async fn gated(x: u64) -> u64 {
    GATED_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    x + 1
}

/// A runtime kept for an occasional `block_on` stops being driven while
/// one of its tasks is connecting: the other runtimes connect and cache
/// all the same (they waited for that task's connection, and cached
/// nothing, until it ran again).
#[test]
fn a_runtime_left_mid_connect_holds_no_other_up() {
    let _server = server();
    let idle = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    idle.block_on(async {
        // Runs until its connect waits for the socket, then is left there.
        tokio::spawn(async { gated(1).await });
        tokio::task::yield_now().await;
    });
    let busy = worker_runtime();
    let runs = || GATED_RUNS.load(std::sync::atomic::Ordering::SeqCst);
    let before = runs();
    for _ in 0..3 {
        assert_eq!(busy.block_on(gated(100)), 101);
    }
    assert_eq!(runs() - before, 1, "the first call stored, the others hit");
    drop(idle);
}
