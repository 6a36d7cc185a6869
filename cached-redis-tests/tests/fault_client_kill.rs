//! Redis closes the library's connections (`CLIENT KILL`; a restart or a
//! failover does the same to them): callers find out on the next command,
//! and the library must not then fail once per connection it kept.
//!
//! - Sync calls keep idle connections in a pool. When one turns out to be
//!   closed, the others were closed with it: the pool is emptied, so the
//!   next call connects afresh instead of failing on the next dead
//!   connection (three such failures would open the breaker although Redis
//!   answers).
//! - The probe after a cooldown runs on a new connection: connections kept
//!   from before the cooldown may have been closed meanwhile, and a probe
//!   failing on one of them would cost another whole cooldown.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cached_redis::{cached, RedisStore, StoreErrorKind};

static SYNC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "client_kill_sync")]
fn item_sync(x: u32) -> u32 {
    SYNC_RUNS.fetch_add(1, SeqCst);
    x + 100
}

/// Connections of clients other than `raw` itself.
fn other_clients(raw: &mut redis::Connection) -> usize {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(raw).unwrap();
    list.lines().count().saturating_sub(1)
}

/// Closes every client connection but `raw`'s; returns how many.
fn kill_clients(raw: &mut redis::Connection) -> usize {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(raw)
        .unwrap()
}

#[test]
fn closed_pooled_connections_cost_one_failure_not_the_breaker() {
    let server = common::RedisServer::start();
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(server.url())
            .namespace("client_kill")
            // Generous: tens of thousands of calls below must each be a
            // hit, and a stall past a short timeout on a loaded machine
            // would make one a miss (and count towards the breaker).
            .timeout(Duration::from_secs(2))
            .breaker_threshold(3)
            // Longer than the test: once open, the breaker would stay open.
            .breaker_cooldown(Duration::from_secs(3600))
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();

    assert_eq!(item_sync(1), 101);
    // Concurrent calls until the pool holds several idle connections.
    let mut rounds = 0;
    while other_clients(&mut raw) < 4 {
        rounds += 1;
        assert!(rounds <= 50, "sync calls never used 4 connections at once");
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..200 {
                        assert_eq!(item_sync(1), 101);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
    assert_eq!(SYNC_RUNS.load(SeqCst), 1, "every call after the first hit");

    let killed = kill_clients(&mut raw);
    assert!(killed >= 4, "{killed} connections closed");
    let before = cached_redis::local_stats("client_kill_sync").unwrap();
    let runs_before = SYNC_RUNS.load(SeqCst);
    for _ in 0..10 {
        assert_eq!(item_sync(1), 101);
    }
    let after = cached_redis::local_stats("client_kill_sync").unwrap();
    // The first call meets a closed connection (a miss: it runs the body
    // and stores on a new connection); every later one is a hit.
    assert_eq!(
        after.errors - before.errors,
        1,
        "one failure for the whole closed pool"
    );
    assert_eq!(SYNC_RUNS.load(SeqCst) - runs_before, 1);
    assert_eq!(after.hits - before.hits, 9, "the breaker stayed closed");
}

#[test]
fn the_probe_does_not_use_a_connection_closed_during_the_cooldown() {
    let server = common::RedisServer::start();
    let config = cached_redis::Config::builder()
        .redis_url(server.url())
        .timeout(Duration::from_millis(200))
        .breaker_threshold(1)
        .breaker_cooldown(Duration::from_millis(300))
        .build()
        .unwrap();
    let store = Arc::new(RedisStore::open(&config).unwrap());
    let ping = redis::cmd("PING");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // This runtime's connection, open and working.
    let pong: String = runtime.block_on(store.query(&ping)).unwrap();
    assert_eq!(pong, "PONG");

    // Another runtime (another connection) finds Redis hung: the breaker
    // opens, this runtime's connection stays as it was.
    let hung = server.hang();
    let other = store.clone();
    let tripped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(other.query::<String>(&redis::cmd("PING")))
            .unwrap_err()
            .kind()
    })
    .join()
    .unwrap();
    assert_eq!(tripped, StoreErrorKind::Timeout);
    drop(hung);

    // During the cooldown, Redis closes every connection.
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    assert!(kill_clients(&mut raw) >= 1);

    // Callers fail fast until the cooldown is over; then one probes, and
    // its verdict is Redis', not that of the closed connection.
    let deadline = Instant::now() + Duration::from_secs(30);
    let verdict = loop {
        match runtime.block_on(store.query::<String>(&ping)) {
            Err(e) if e.kind() == StoreErrorKind::CoolingDown => {
                assert!(Instant::now() < deadline, "the cooldown never ended");
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other,
        }
    };
    assert_eq!(verdict.map_err(|e| e.to_string()).as_deref(), Ok("PONG"));
}
