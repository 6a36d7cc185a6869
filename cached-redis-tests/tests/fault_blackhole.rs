//! A Redis that accepts connections and never answers: calls come back
//! (after their timeouts), and once the breaker trips they touch the
//! network no more: no connection, not a byte sent.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use cached_redis::cached;

/// What the blackhole has seen: connections accepted, bytes received.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    bytes: AtomicUsize,
}

/// Accepts connections, reads and discards what comes, never writes.
fn blackhole() -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let counter = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.accepted.fetch_add(1, SeqCst);
            let counter = counter.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    counter.bytes.fetch_add(n, SeqCst);
                }
            });
        }
    });
    (port, seen)
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
async fn a_silent_redis_is_given_up_on_then_left_alone() {
    let (port, seen) = blackhole();
    let timeout = Duration::from_millis(200);
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(format!("redis://127.0.0.1:{port}/0"))
            .timeout(timeout)
            .connect_timeout(timeout)
            .breaker_threshold(2)
            .breaker_cooldown(Duration::from_secs(3600))
            .build()
            .unwrap(),
    )
    .unwrap();

    // Until the breaker trips, each call gives up on Redis after its
    // timeouts and answers; it never waits indefinitely (the generous
    // deadline only turns a hang into a failure).
    for i in 0..2 {
        let answer = tokio::time::timeout(Duration::from_secs(60), slow_store(i))
            .await
            .expect("a silent redis never hangs a call");
        assert_eq!(answer, i * 3);
    }
    let tried = seen.accepted.load(SeqCst);
    assert!(tried >= 1, "redis was tried");

    // Tripped: no further connection, and not a byte on the connections
    // already open, so nothing left to wait for.
    let bytes = seen.bytes.load(SeqCst);
    for i in 0..50 {
        assert_eq!(slow_store(i).await, i * 3);
        assert_eq!(slow_store_sync(i), i * 3);
    }
    assert_eq!(
        seen.accepted.load(SeqCst),
        tried,
        "no connection attempts while tripped"
    );
    assert_eq!(
        seen.bytes.load(SeqCst),
        bytes,
        "no command sent while tripped"
    );
    let s = cached_redis::local_stats("blackhole").unwrap();
    assert_eq!(s.misses, 52);
    assert_eq!(s.hits, 0);
}
