//! A write of a `local` function whose reply is lost still reaches the
//! other processes' levels when Redis applied it: the entry and the message
//! that announces it go in one step (`Store::set_announced`), so a client
//! timeout while Redis was slow cannot leave a changed entry unannounced.
//!
//! Runs on a Redis server of its own, which it freezes (`SIGSTOP`) while a
//! write is on its way: the write waits in the socket, the client gives up
//! after its timeout, and Redis runs the write when it wakes. The other process is this test binary run again (the
//! ignored `peer` test). No timing is asserted: waits are bounded only so
//! that a broken build fails instead of hanging.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cached_redis::cached;
use redis::Commands;

const URL: &str = "CACHED_REDIS_WT_URL";
const NS: &str = "CACHED_REDIS_WT_NS";
/// How long a behaviour may take to show before the test gives up.
const PATIENCE: Duration = Duration::from_secs(15);
/// The cache's command timeout; Redis is frozen for longer than this.
const TIMEOUT: Duration = Duration::from_millis(100);

/// The server of this test (the parent's, passed to the peer).
fn url() -> &'static str {
    static SERVER_URL: OnceLock<String> = OnceLock::new();
    SERVER_URL.get_or_init(|| std::env::var(URL).expect("the server's URL is set"))
}

fn raw() -> redis::Connection {
    redis::Client::open(url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// What `value(id)` computes, kept in a file both processes read: the body
/// must not need Redis while Redis is frozen.
fn source_path(id: u64) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}-src-{id}", std::env::var(NS).unwrap()))
}

fn set_source(id: u64, value: u64) {
    std::fs::write(source_path(id), value.to_string()).unwrap();
}

#[cached(local = 100, ttl = 600, prefix = "wt_value")]
async fn value(id: u64) -> u64 {
    std::fs::read_to_string(source_path(id)).map_or(0, |text| text.parse().unwrap())
}

fn init() {
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(url())
            .namespace(std::env::var(NS).unwrap())
            .timeout(TIMEOUT)
            .build()
            .unwrap(),
    )
    .unwrap();
}

/// The other process: answers each id pushed on its request list with
/// `value(id)`, until `quit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "spawned by the test below"]
async fn peer() {
    if std::env::var(URL).is_err() {
        return;
    }
    init();
    let ns = std::env::var(NS).unwrap();
    let mut raw = raw();
    loop {
        let Some((_, request)): Option<(String, String)> =
            raw.blpop(format!("{ns}:test:req"), 60.0).unwrap()
        else {
            return;
        };
        if request == "quit" {
            return;
        }
        let answer = value(request.parse().unwrap()).await;
        let _: () = raw.rpush(format!("{ns}:test:rep"), answer).unwrap();
    }
}

struct Peer(Child);

impl Peer {
    fn start() -> Peer {
        Peer(
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "peer", "--ignored", "--nocapture"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Brings the peer to hold a value for `id` that is no longer the
    /// source's, with no Redis entry behind it: returns the value held.
    fn hold(&self, id: u64) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        let mut next = 1_000 * id;
        set_source(id, next);
        let mut last = self.call(id);
        loop {
            next += 1;
            set_source(id, next);
            let _: () = raw().del(value_cache_key(id).unwrap()).unwrap();
            let answer = self.call(id);
            if answer == last {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "the peer's level never held the value of {id}"
            );
            last = answer;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn call(&self, id: u64) -> u64 {
        let ns = std::env::var(NS).unwrap();
        let _: () = raw().rpush(format!("{ns}:test:req"), id).unwrap();
        let reply: Option<(String, u64)> = raw()
            .blpop(format!("{ns}:test:rep"), PATIENCE.as_secs_f64())
            .unwrap();
        reply.expect("the peer answers").1
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let ns = std::env::var(NS).unwrap();
        let _: Result<(), _> = raw().rpush(format!("{ns}:test:req"), "quit");
        let _ = common::wait_within(&mut self.0, common::CHILD_LIMIT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_reply_timed_out_still_reaches_the_peer() {
    let server = common::RedisServer::start();
    // Set before anything reads them; the peer inherits them.
    std::env::set_var(URL, server.url());
    std::env::set_var(NS, common::namespace("wt"));
    init();
    let peer = Peer::start();
    let id = 1;

    // The peer holds a value for `id` and one for `other`: their Redis
    // entries are then removed without telling anyone and their sources
    // move on, yet the peer still answers with what it holds.
    let other = 2;
    let held = peer.hold(id);
    let other_held = peer.hold(other);

    // This process recomputes while Redis is frozen for longer than the
    // cache's timeout: the write's reply never comes back in time, but
    // Redis runs it when it wakes.
    let new = held + 100;
    set_source(id, new);
    // Connected and the write's script loaded before Redis freezes: what
    // is tested is a write sent, not a connection that cannot open.
    value(id + 100).await;
    let errors_before = cached_redis::local_stats("wt_value").unwrap().errors;
    // Frozen until the write has timed out, and no longer: the peer's
    // channel counts itself lost after 500 ms without an answer to its
    // `PING`, which would empty the peer's level and hide what is tested
    // (the test checks it did not). Woken as soon as the error is counted,
    // not after a fixed time a loaded machine could overrun.
    let hung = server.hang();
    let waker = std::thread::spawn(move || {
        let deadline = Instant::now() + PATIENCE;
        while cached_redis::local_stats("wt_value").unwrap().errors <= errors_before
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(hung);
    });
    assert_eq!(value_refresh(id).await, new);
    waker.join().unwrap();
    assert!(
        cached_redis::local_stats("wt_value").unwrap().errors > errors_before,
        "the write did not time out: the test did not test what it claims"
    );
    // Redis holds the new value...
    let deadline = Instant::now() + PATIENCE;
    while !raw()
        .exists::<_, bool>(value_cache_key(id).unwrap())
        .unwrap()
    {
        assert!(
            Instant::now() < deadline,
            "the timed-out write never landed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // ...and the peer stops serving the copy it held.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = peer.call(id);
        if answer == new {
            break;
        }
        assert_eq!(answer, held);
        assert!(
            Instant::now() < deadline,
            "the peer still serves {held} although Redis holds {new}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The message did it, not a lost channel (which would have emptied the
    // peer's level): the other value is still held.
    assert_eq!(
        peer.call(other),
        other_held,
        "the peer's level was emptied: its channel was lost"
    );
    drop(peer);
    drop(server);
    for id in [id, other, id + 100] {
        let _ = std::fs::remove_file(source_path(id));
    }
}
