//! A holder dropped while its lock command is still on its way: the
//! release it starts must reach Redis after that command, or the lock is
//! taken after it was released and stays for its whole lease.
//!
//! The lock command (`SET NX`, in a script) goes on the caller runtime's
//! connection. The release of a dropped holder goes from the crate's own
//! runtime; sent only on that runtime's connection, it could overtake the
//! lock command. Here a proxy in front of Redis holds the first request
//! that names the lock back until the caller is dropped and its release
//! has had every chance to arrive first; the lock must then be gone long
//! before its lease ends.
//!
//! Its own test binary and Redis server: the library is configured once
//! per process, here through the proxy.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cached_redis::{cached, Config};

/// How long a behaviour may take to show before the test gives up.
const PATIENCE: Duration = Duration::from_secs(15);

#[cached(prefix = "lro_quick", lock = true)]
async fn quick(x: u32) -> u32 {
    x
}

#[cached(prefix = "lro_slow", lock = true)]
async fn slow(x: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    x
}

/// Where the held request is.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Hold {
    /// No request has named the needle yet.
    #[default]
    Waiting,
    /// One has, and is held back.
    Holding,
    /// Let go: it and everything behind it go on.
    LetGo,
}

/// A TCP proxy that holds back the first chunk, from a client, that
/// contains the needle ([`HoldingProxy::hold_first`]), and everything after
/// it on that connection, until [`HoldingProxy::let_go`]. Other
/// connections pass straight through.
struct HoldingProxy {
    port: u16,
    needle: Arc<Mutex<Vec<u8>>>,
    hold: Arc<(Mutex<Hold>, Condvar)>,
}

impl HoldingProxy {
    fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = Arc::new((Mutex::new(Hold::Waiting), Condvar::new()));
        let needle = Arc::new(Mutex::new(Vec::new()));
        let (shared, shared_needle) = (Arc::clone(&hold), Arc::clone(&needle));
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let (Ok(client), Ok(server)) = (inbound.try_clone(), outbound.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || pass(server, client, |_| {}));
                let (hold, needle) = (Arc::clone(&shared), Arc::clone(&shared_needle));
                std::thread::spawn(move || {
                    pass(inbound, outbound, |chunk| {
                        let (state, changed) = &*hold;
                        let mut state = state.lock().unwrap();
                        let needle = needle.lock().unwrap().clone();
                        let names_it =
                            !needle.is_empty() && chunk.windows(needle.len()).any(|w| w == needle);
                        if *state == Hold::Waiting && names_it {
                            *state = Hold::Holding;
                            changed.notify_all();
                            // This connection only: the others' threads
                            // never wait here.
                            while *state != Hold::LetGo {
                                state = changed.wait(state).unwrap();
                            }
                        }
                    })
                });
            }
        });
        Self { port, needle, hold }
    }

    /// Holds the first request that contains `needle` from now on.
    fn hold_first(&self, needle: &str) {
        *self.needle.lock().unwrap() = needle.as_bytes().to_vec();
    }

    /// Waits until a request naming the needle is held.
    fn until_holding(&self) {
        let (state, changed) = &*self.hold;
        let (state, timeout) = changed
            .wait_timeout_while(state.lock().unwrap(), PATIENCE, |s| *s != Hold::Holding)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "no request named the lock: {:?}",
            *state
        );
    }

    /// Lets the held request, and what came behind it, go on.
    fn let_go(&self) {
        let (state, changed) = &*self.hold;
        *state.lock().unwrap() = Hold::LetGo;
        changed.notify_all();
    }
}

/// Copies `from` to `to`, calling `before` with each chunk before it is
/// written.
fn pass(mut from: TcpStream, mut to: TcpStream, before: impl Fn(&[u8])) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        before(&buf[..n]);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_never_overtakes_the_lock_it_releases() {
    let server = common::RedisServer::start();
    let proxy = HoldingProxy::start(server.port);
    cached_redis::init(
        Config::builder()
            .redis_url(format!("redis://127.0.0.1:{}/0", proxy.port))
            .namespace(common::namespace("lock_release_order"))
            // Longer than the hold: the caller's connection must not be
            // given up as unanswering while its lock command is held.
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .unwrap();
    let lock_key = format!("{}:lock", slow_cache_key(1).unwrap());
    // A miss that takes and releases a lock: the scripts are loaded, so
    // the held lock command needs no second round trip (a `NOSCRIPT` and
    // the script sent again, which a dropped caller never sends).
    assert_eq!(quick(1).await, 1);

    // What happens to the lock, as Redis tells it: taken ("set"), then
    // deleted ("del") or left to its lease ("expired").
    let mut watch = server.connect();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Kg$x")
        .query::<()>(&mut watch)
        .unwrap();
    let mut events = watch.as_pubsub();
    events
        .subscribe(format!("__keyspace@0__:{lock_key}"))
        .unwrap();
    events.set_read_timeout(Some(PATIENCE)).unwrap();

    proxy.hold_first(&lock_key);
    let call = tokio::spawn(slow(1));
    proxy.until_holding();
    // Dropped with its lock command sent and held on the way: it starts
    // the release on the way out.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    // Time for a release on another connection to reach Redis first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.let_go();

    // The lock command gets through now. With nothing behind it, the lock
    // lives for its lease (5 s for a body never measured).
    let taken = Instant::now();
    let mut seen = Vec::new();
    while !seen.iter().any(|e| e == "del" || e == "expired") {
        let Ok(message) = events.get_message() else {
            break;
        };
        seen.push(message.get_payload::<String>().unwrap());
    }
    let gone_after = taken.elapsed();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("set"),
        "the lock command never reached Redis: {seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("del"),
        "the lock was taken after its holder's release had gone, and was \
         left to its lease (events: {seen:?}, {gone_after:?} after the hold)"
    );
}
