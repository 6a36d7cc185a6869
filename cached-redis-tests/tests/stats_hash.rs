//! The stats hash holds exactly what happened: a known pattern of hits,
//! misses, skips and errors, a body of known duration, and two processes
//! adding into the same hash.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use cached_redis::cached;
use redis::Commands;

const CHILD_ENV: &str = "CACHED_REDIS_STATS_CHILD_NS";
const SLEEP: Duration = Duration::from_millis(60);

#[cached(prefix = "timed")]
fn timed(x: f64) -> String {
    std::thread::sleep(SLEEP);
    format!("{x:>20}")
}

/// 3 misses, 4 hits, 2 skips, 1 error (a NaN argument cannot be keyed).
fn pattern() {
    for x in [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0] {
        timed(x);
    }
    cached_redis::skip_cache_sync(|| {
        timed(1.0);
        timed(9.0);
    });
    timed(f64::NAN);
}

fn init(namespace: &str) {
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(common::redis_url())
            .namespace(namespace)
            // Only explicit flushes: the test controls when counts arrive.
            .stats_flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
    )
    .unwrap();
}

fn field(fields: &HashMap<String, String>, name: &str) -> u128 {
    fields.get(name).map_or(0, |v| v.parse().unwrap())
}

/// What the child process measured itself.
struct ChildTotals {
    sum: u128,
    sumsq: u128,
    /// Its miss-time histogram, bucket by bucket.
    buckets: Vec<u128>,
}

/// Runs [`pattern`] in another process, against the same namespace, and
/// returns that process's own totals of compute time.
fn run_child(namespace: &str) -> ChildTotals {
    let (out, killed) = common::output_within(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_process", "--ignored", "--nocapture"])
            .env(CHILD_ENV, namespace)
            .env("CACHED_REDIS_TEST_URL", common::redis_url()),
        common::CHILD_LIMIT,
    );
    assert!(!killed, "the child hung");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD_TOTALS "))
        .expect("child reports its totals");
    let mut parts = line.split_whitespace().map(|p| p.parse::<u128>().unwrap());
    ChildTotals {
        sum: parts.next().unwrap(),
        sumsq: parts.next().unwrap(),
        buckets: parts.collect(),
    }
}

/// The child side of [`two_processes_add_up_exactly`]; runs only when
/// spawned by it.
#[test]
#[ignore = "spawned by two_processes_add_up_exactly"]
fn child_process() {
    let Ok(namespace) = std::env::var(CHILD_ENV) else {
        return;
    };
    init(&namespace);
    pattern();
    let s = cached_redis::local_stats("timed").unwrap();
    // No explicit flush: the exit hook must write the counts.
    let buckets: Vec<String> = s.miss_buckets.iter().map(u64::to_string).collect();
    println!(
        "CHILD_TOTALS {} {} {}",
        s.miss_us_sum,
        s.miss_us_sumsq,
        buckets.join(" ")
    );
}

#[tokio::test]
async fn two_processes_add_up_exactly() {
    let namespace = common::namespace("stats");
    // A fresh namespace: this process's entries and the child's are the
    // same keys, so run the child second to make its lookups hits.
    let child = run_child(&namespace);
    init(&namespace);
    pattern();
    cached_redis::flush_stats().await.unwrap();

    let hash = format!("{namespace}:timed:stats");
    let fields: HashMap<String, String> = common::raw().hgetall(&hash).unwrap();
    let mine = cached_redis::local_stats("timed").unwrap();

    // Child: 3 misses, 4 hits. This process: same keys, already stored by
    // the child, so 7 hits. Both: 2 skips and 1 error each.
    assert_eq!(field(&fields, "misses"), 3, "{fields:?}");
    assert_eq!(field(&fields, "hits"), 4 + 7);
    assert_eq!(field(&fields, "skips"), 4);
    assert_eq!(field(&fields, "errors"), 2);
    assert_eq!(field(&fields, "stores"), 3);
    assert_eq!(
        (mine.misses, mine.hits, mine.skips, mine.errors),
        (0, 7, 2, 1)
    );

    // bincode of a 20-character string: 1 length byte + 20, behind the
    // 20-byte header, uncompressed (under compress_min_bytes): both sizes
    // are the same.
    assert_eq!(field(&fields, "bytes_raw"), 3 * (20 + 21));
    assert_eq!(field(&fields, "bytes_stored"), 3 * (20 + 21));

    // The sums and the histogram are the child's exactly.
    assert_eq!(field(&fields, "miss_us_sum"), child.sum);
    assert_eq!(field(&fields, "miss_us_sumsq"), child.sumsq);
    let mut bounds: Vec<String> = cached_redis::MISS_BUCKETS_US
        .iter()
        .map(|b| format!("miss_us_le_{b}"))
        .collect();
    bounds.push("miss_us_le_inf".to_owned());
    // Every field is there, zero or not: a reader's `HGET` finds `0`.
    for name in ["hits", "misses", "skips", "errors", "stores", "bytes_raw"]
        .into_iter()
        .chain(["bytes_stored", "miss_us_sum", "miss_us_sumsq"])
        .chain(bounds.iter().map(String::as_str))
    {
        assert!(fields.contains_key(name), "{name} missing: {fields:?}");
    }
    let hash_buckets: Vec<u128> = bounds.iter().map(|b| field(&fields, b)).collect();
    assert_eq!(hash_buckets, child.buckets, "{fields:?}");
    assert_eq!(hash_buckets.iter().sum::<u128>(), 3, "one count per miss");

    // Each miss slept at least 60 ms (a sleep never ends early; a loaded
    // machine can only make it longer): no time below that, and so no
    // count in a bucket that ends below it.
    assert!(child.sum >= 3 * SLEEP.as_micros(), "{}", child.sum);
    assert!(child.sumsq * 3 >= child.sum * child.sum, "sumsq ≥ sum²/n");
    for (bound, count) in cached_redis::MISS_BUCKETS_US.iter().zip(&hash_buckets) {
        if u128::from(*bound) < SLEEP.as_micros() {
            assert_eq!(*count, 0, "miss_us_le_{bound}: {fields:?}");
        }
    }
}

#[cached(prefix = "in_doubt")]
async fn in_doubt(x: u64) -> u64 {
    x
}

/// A cache of its own on `server`, in `namespace`, configured by `config`
/// besides; its stats are flushed only when a test asks.
fn cache_on(
    server: &common::RedisServer,
    namespace: &str,
    config: cached_redis::ConfigBuilder,
) -> cached_redis::Cache {
    let config = config
        .redis_url(server.url())
        .namespace(namespace)
        .stats_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    cached_redis::Cache::new(config).unwrap()
}

fn connect(server: &common::RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Holds the server for `busy` with a script that spins (under Redis's
/// 5 s busy-script limit, other clients' commands just queue meanwhile).
fn hold_server(server: &common::RedisServer, busy: Duration) -> std::thread::JoinHandle<()> {
    let micros = busy.as_micros() as u64;
    let mut raw = connect(server);
    std::thread::spawn(move || {
        let spin = "local s = redis.call('TIME') \
                    repeat local n = redis.call('TIME') \
                    until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > tonumber(ARGV[1]) \
                    return 1";
        let _: i64 = redis::cmd("EVAL")
            .arg(spin)
            .arg(0)
            .arg(micros)
            .query(&mut raw)
            .unwrap();
    })
}

/// Returns once the server is held: a `PING` on `probe` (a connection
/// opened before, since opening one waits for the server) gets no answer
/// within 200 ms, which even a loaded machine answers well within. Rather
/// than a guessed sleep, which a loaded machine can outlast before the
/// script has even started. (`CLIENT PAUSE` would hold at once, but Redis
/// drops a paused command whose connection closes, and the cache closes
/// the connection of a command that timed out: the late run would not
/// happen.)
fn wait_until_held(mut probe: redis::Connection) {
    probe
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while redis::cmd("PING").query::<String>(&mut probe).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server was never held"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A flush that got no answer in time may still run (a slow server runs it
/// late): its counts are not sent again, or they would be counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_without_an_answer_is_not_sent_again() {
    // A server of its own: holding it must not slow the other tests.
    let server = common::RedisServer::start();
    let namespace = common::namespace("stats_hash_in_doubt");
    let cache = cache_on(
        &server,
        &namespace,
        cached_redis::Config::builder().timeout(Duration::from_millis(150)),
    );
    for x in 0..5 {
        cache.scope(in_doubt(x)).await;
    }
    // Connected (where a flush runs) and flushed once before the server
    // is held.
    cache.flush_stats().await.unwrap();
    // A loaded machine can be slow to answer the probe's `PING` before
    // the script holds the server: the flush is then answered, and the
    // round is tried again with five more misses.
    let mut calls = 5;
    for round in 1.. {
        for x in calls..calls + 5 {
            cache.scope(in_doubt(x)).await;
        }
        calls += 5;
        let probe = connect(&server);
        let held = hold_server(&server, Duration::from_secs(3));
        wait_until_held(probe);
        let during = cache.flush_stats().await;
        held.join().unwrap();
        if during.is_err() {
            break;
        }
        assert!(
            round < 3,
            "the flush got an answer in {round} rounds: {during:?}"
        );
    }
    // The late script has run once the server answers again.
    let mut raw = connect(&server);
    let _: String = redis::cmd("PING").query(&mut raw).unwrap();
    cache.flush_stats().await.unwrap();
    let fields: HashMap<String, String> =
        raw.hgetall(format!("{namespace}:in_doubt:stats")).unwrap();
    assert_eq!(field(&fields, "misses"), u128::from(calls), "{fields:?}");
    assert_eq!(field(&fields, "stores"), u128::from(calls), "{fields:?}");
}

#[cached(prefix = "flush_dropped")]
async fn flush_dropped(x: u64) -> u64 {
    x
}

/// A `flush_stats()` whose caller gave up on it (a shutdown path under a
/// timeout) after its counts went out: the next flush does not send them
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_its_caller_dropped_is_not_sent_again() {
    // A server of its own: holding it must not slow the other tests.
    let server = common::RedisServer::start();
    let namespace = common::namespace("stats_hash_dropped");
    let cache = cache_on(
        &server,
        &namespace,
        cached_redis::Config::builder().timeout(Duration::from_secs(5)),
    );
    for x in 0..10 {
        cache.scope(flush_dropped(x)).await;
    }
    // Connected (where a flush runs) and flushed once before the server
    // is held.
    cache.flush_stats().await.unwrap();
    for x in 10..20 {
        cache.scope(flush_dropped(x)).await;
    }
    let probe = connect(&server);
    let held = hold_server(&server, Duration::from_millis(1_500));
    wait_until_held(probe);
    let dropped = tokio::time::timeout(Duration::from_millis(300), cache.flush_stats()).await;
    assert!(dropped.is_err(), "the flush got an answer: {dropped:?}");
    held.join().unwrap();
    let mut raw = connect(&server);
    let _: String = redis::cmd("PING").query(&mut raw).unwrap();
    cache.flush_stats().await.unwrap();
    let fields: HashMap<String, String> = raw
        .hgetall(format!("{namespace}:flush_dropped:stats"))
        .unwrap();
    assert_eq!(field(&fields, "misses"), 20, "{fields:?}");
    assert_eq!(field(&fields, "stores"), 20, "{fields:?}");
}

#[cached(prefix = "after_kill")]
async fn after_kill(x: u64) -> u64 {
    x
}

/// A flush on a connection Redis had closed (a restart, `CLIENT KILL`, a
/// failover) never reached it: its counts are sent again by the next flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_on_a_closed_connection_is_sent_again() {
    // A server of its own: the kill must not reach the other tests.
    let server = common::RedisServer::start();
    let namespace = common::namespace("stats_hash_after_kill");
    let cache = cache_on(&server, &namespace, cached_redis::Config::builder());
    for x in 0..3 {
        cache.scope(after_kill(x)).await;
    }
    cache.flush_stats().await.unwrap();
    for x in 3..8 {
        cache.scope(after_kill(x)).await;
    }
    let mut raw = connect(&server);
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut raw)
        .unwrap();
    // The first flush may find the connection closed; the next one sends
    // whatever it could not.
    let _ = cache.flush_stats().await;
    cache.flush_stats().await.unwrap();
    let fields: HashMap<String, String> = raw
        .hgetall(format!("{namespace}:after_kill:stats"))
        .unwrap();
    assert_eq!(field(&fields, "misses"), 8, "{fields:?}");
}
