//! A TCP proxy in front of a Redis server that holds one request back:
//! for ordering what a dropped call left on its way against what it sends
//! on the way out.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a held request may take to come before the test gives up.
pub const PATIENCE: Duration = Duration::from_secs(15);

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

/// What the proxy has seen; guarded by one lock with its condition.
#[derive(Debug, Default)]
struct Seen {
    hold: Hold,
    /// Chunks naming the needle that other connections passed on while
    /// one was held.
    passed_beside: usize,
}

/// A TCP proxy that holds back the first chunk, from a client, that
/// contains the needle ([`HoldingProxy::hold_first`]), and everything after
/// it on that connection, until [`HoldingProxy::let_go`]. Other
/// connections pass straight through.
pub struct HoldingProxy {
    pub port: u16,
    needle: Arc<Mutex<Vec<u8>>>,
    seen: Arc<(Mutex<Seen>, Condvar)>,
}

impl HoldingProxy {
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let needle = Arc::new(Mutex::new(Vec::new()));
        let (shared, shared_needle) = (Arc::clone(&seen), Arc::clone(&needle));
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let (Ok(client), Ok(server)) = (inbound.try_clone(), outbound.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || pass(server, client, |_| {}, |_| {}));
                let (seen, needle) = (Arc::clone(&shared), Arc::clone(&shared_needle));
                std::thread::spawn(move || {
                    let names_it = |chunk: &[u8]| {
                        let needle = needle.lock().unwrap();
                        !needle.is_empty() && chunk.windows(needle.len()).any(|w| w == *needle)
                    };
                    let holds = std::cell::Cell::new(false);
                    let before = |chunk: &[u8]| {
                        let (seen, changed) = &*seen;
                        let mut seen = seen.lock().unwrap();
                        if seen.hold == Hold::Waiting && names_it(chunk) {
                            holds.set(true);
                            seen.hold = Hold::Holding;
                            changed.notify_all();
                            // This connection only: the others' threads
                            // never wait here.
                            while seen.hold != Hold::LetGo {
                                seen = changed.wait(seen).unwrap();
                            }
                        }
                    };
                    let after = |chunk: &[u8]| {
                        let (seen, changed) = &*seen;
                        let mut seen = seen.lock().unwrap();
                        if !holds.get() && seen.hold == Hold::Holding && names_it(chunk) {
                            seen.passed_beside += 1;
                            changed.notify_all();
                        }
                    };
                    pass(inbound, outbound, before, after);
                });
            }
        });
        Self { port, needle, seen }
    }

    /// Configures the library, for this test process, to reach its server
    /// through the proxy, in the namespace of `test_file`. Its command
    /// timeout (10 s) outlasts a hold: a held request must not time out,
    /// nor its connection be given up as unanswering.
    pub fn init_library(&self, test_file: &str) {
        cached_redis::init(
            cached_redis::Config::builder()
                .redis_url(format!("redis://127.0.0.1:{}/0", self.port))
                .namespace(super::namespace(test_file))
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        )
        .unwrap();
    }

    /// Holds the first request that contains `needle` from now on.
    pub fn hold_first(&self, needle: &str) {
        *self.needle.lock().unwrap() = needle.as_bytes().to_vec();
    }

    /// Waits until `done` holds of what the proxy saw.
    fn until(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        let (seen, changed) = &*self.seen;
        let (seen, timeout) = changed
            .wait_timeout_while(seen.lock().unwrap(), PATIENCE, |s| !done(s))
            .unwrap();
        assert!(!timeout.timed_out(), "{what} never happened: {seen:?}");
    }

    /// Waits until a request naming the needle is held.
    pub fn until_holding(&self) {
        self.until("a request naming the needle held", |s| {
            s.hold == Hold::Holding
        });
    }

    /// Waits until another connection passed on a request naming the
    /// needle while one is held.
    pub fn until_passed_beside(&self) {
        self.until("a request naming the needle on another connection", |s| {
            s.passed_beside > 0
        });
    }

    /// Lets the held request, and what came behind it, go on.
    pub fn let_go(&self) {
        let (seen, changed) = &*self.seen;
        seen.lock().unwrap().hold = Hold::LetGo;
        changed.notify_all();
    }
}

/// Copies `from` to `to`, calling `before` with each chunk before it is
/// written and `after` once it is.
fn pass(mut from: TcpStream, mut to: TcpStream, before: impl Fn(&[u8]), after: impl Fn(&[u8])) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        before(&buf[..n]);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        after(&buf[..n]);
    }
    let _ = to.shutdown(Shutdown::Both);
}
