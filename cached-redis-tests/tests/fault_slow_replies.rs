//! A server that answers a byte at a time: each read of a blocking
//! connection returns within the timeout, but a whole answer takes longer.
//! Sync calls still answer, and such answers count against the breaker,
//! which then spares the next calls the wait (before, every call waited
//! for every answer, however slow, and the breaker never opened).
//!
//! The server is this test's own, behind a proxy that forwards requests as
//! they come and, once told to, answers one byte every [`DRIP`].

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use cached_redis::cached;

/// Per byte of an answer, once dripping: well under the command timeout
/// per read, well over it for an answer of a few bytes.
const DRIP: Duration = Duration::from_millis(15);
const TIMEOUT: Duration = Duration::from_millis(60);

/// Forwards `127.0.0.1:{returned port}` to `upstream`; answers drip while
/// `dripping` is set.
fn drip_proxy(upstream: u16, dripping: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut client_in, mut server_out) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_in, &mut server_out);
            });
            let dripping = Arc::clone(&dripping);
            let (mut server_in, mut client_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = server_in.read(&mut buf) {
                    let sent = if dripping.load(SeqCst) {
                        buf[..n].iter().try_for_each(|byte| {
                            std::thread::sleep(DRIP);
                            client_out.write_all(std::slice::from_ref(byte))
                        })
                    } else {
                        client_out.write_all(&buf[..n])
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 60, prefix = "slow_item")]
fn item(x: u32) -> u32 {
    RUNS.fetch_add(1, SeqCst);
    x + 1
}

#[test]
fn answers_dripped_past_the_timeout_open_the_breaker() {
    let server = common::RedisServer::start();
    let dripping = Arc::new(AtomicBool::new(false));
    let port = drip_proxy(server.port, Arc::clone(&dripping));
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(format!("redis://127.0.0.1:{port}/0"))
            .namespace(common::namespace("fault_slow_replies"))
            .timeout(TIMEOUT)
            .breaker_threshold(3)
            .breaker_cooldown(Duration::from_secs(60))
            .stats_flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
    )
    .unwrap();
    // A connection in the pool, and a stored entry, at full speed: until a
    // call is a hit (a stall past the short timeout on a loaded machine
    // only costs a round more).
    let warm_until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let runs = RUNS.load(SeqCst);
        assert_eq!(item(0), 1);
        if RUNS.load(SeqCst) == runs {
            break;
        }
        assert!(std::time::Instant::now() < warm_until, "item(0) never hit");
    }
    let runs = RUNS.load(SeqCst);
    let before = server.gets_answered();
    dripping.store(true, SeqCst);
    for x in 1..=10 {
        assert_eq!(item(x), x + 1, "every call answers");
    }
    assert_eq!(RUNS.load(SeqCst), runs + 10);
    // Three slow answers (a `GET`, its `SET`, the next `GET`) open the
    // breaker; the calls after it do not go to Redis.
    let gets = server.gets_answered() - before;
    assert!(gets <= 3, "{gets} of 10 calls waited for a dripped answer");
}
