//! A Redis that accepts connections and never answers: calls come back
//! within the configured timeout, and once the breaker trips they wait on
//! the network no more.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cached_redis::cached;

/// Accepts connections, reads and discards what comes, never writes.
fn blackhole() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, SeqCst);
            std::thread::spawn(move || {
                use std::io::Read;
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    (port, accepted)
}

#[cached(prefix = "blackhole")]
async fn slow_store(x: u32) -> u32 {
    x * 3
}

#[cached(prefix = "blackhole_sync")]
fn slow_store_sync(x: u32) -> u32 {
    x * 3
}

#[tokio::test]
async fn a_silent_redis_costs_at_most_the_timeout_then_nothing() {
    let (port, accepted) = blackhole();
    let timeout = Duration::from_millis(200);
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(format!("redis://127.0.0.1:{port}/0"))
            .timeout(timeout)
            .connect_timeout(timeout)
            .breaker_threshold(2)
            .breaker_cooldown(Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .unwrap();

    // Until the breaker trips, each call waits at most for its timeouts
    // (connect, then read and write), never indefinitely.
    for i in 0..2 {
        let started = Instant::now();
        assert_eq!(slow_store(i).await, i * 3);
        let took = started.elapsed();
        assert!(took < timeout * 6, "call {i} took {took:?}");
    }
    let tried = accepted.load(SeqCst);
    assert!(tried >= 1, "redis was tried");

    // Tripped: no further connection, and (generously measured on a shared
    // machine) no network wait.
    let started = Instant::now();
    for i in 0..50 {
        assert_eq!(slow_store(i).await, i * 3);
        assert_eq!(slow_store_sync(i), i * 3);
    }
    let took = started.elapsed();
    assert_eq!(
        accepted.load(SeqCst),
        tried,
        "no connection attempts while tripped"
    );
    assert!(
        took < timeout,
        "100 calls took {took:?} with the breaker open"
    );
    let s = cached_redis::local_stats("blackhole").unwrap();
    assert_eq!(s.misses, 52);
    assert_eq!(s.hits, 0);
}
