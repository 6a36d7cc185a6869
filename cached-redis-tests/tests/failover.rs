//! Failover under load: 64 tasks call cached functions in a loop while a
//! cluster master, or the sentinel's master, is killed with `kill -9`.
//! Every call must return the function's value (calls fail open while the
//! topology is broken), no task may panic, and caching must resume by
//! itself, with the same client, once a replica is promoted.
//!
//! Both topologies run in this one process, at the same time: each test
//! builds a [`Cache`] of its own for its topology and runs its load under
//! it. The time from the kill to the last failed cache operation and the
//! p99 call latency before and during the failover are printed.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cached_redis::{cached, Cache, Config, RedisStore};

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run the tests with scripts/test.sh, which starts the topologies"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_master_killed() {
    fail_over(env("CACHED_REDIS_TEST_CLUSTER_URL")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_master_killed() {
    fail_over(env("CACHED_REDIS_TEST_SENTINEL_URL")).await;
}

const TASKS: usize = 64;
const KEYS: u64 = 48;
/// Generous: a failover here takes a few seconds.
const RECOVERY_BOUND: Duration = Duration::from_secs(40);

#[cached(ttl = 600, prefix = "failover")]
async fn value(k: u64) -> u64 {
    k * 2
}

/// Hits, errors and misses (runs of the body) of `cache`.
fn stats(cache: &Cache) -> (u64, u64, u64) {
    let s = cache.local_stats("failover").unwrap_or_default();
    (s.hits, s.errors, s.misses)
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// The port of the server to kill: a cluster master that is not the
/// seed node, or the sentinel's current master.
async fn victim(url: &str, store: &RedisStore) -> u16 {
    if url.starts_with("redis+cluster://") {
        let seed: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        let nodes: String = store
            .query(redis::cmd("CLUSTER").arg("NODES"))
            .await
            .unwrap();
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .map(|l| {
                let addr = l.split_whitespace().nth(1).unwrap();
                let addr = addr.split('@').next().unwrap();
                addr.rsplit(':').next().unwrap().parse::<u16>().unwrap()
            })
            .find(|port| *port != seed)
            .expect("a master besides the seed")
    } else {
        let sentinel = url
            .trim_start_matches("redis+sentinel://")
            .split('/')
            .next()
            .unwrap();
        let mut conn = redis::Client::open(format!("redis://{sentinel}"))
            .unwrap()
            .get_connection()
            .unwrap();
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg("mymaster")
            .query(&mut conn)
            .unwrap();
        port
    }
}

fn kill_9(port: u16) {
    let pid_file = format!("{}/redis-{port}.pid", env("CACHED_REDIS_TEST_PIDDIR"));
    let pid = std::fs::read_to_string(&pid_file).expect("pid file of the victim");
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

async fn fail_over(url: String) {
    let topology = if url.starts_with("redis+cluster") {
        "cluster"
    } else {
        "sentinel"
    };
    let config = Config::builder()
        .redis_url(&url)
        .namespace(common::namespace(&format!("failover-{topology}")))
        .build()
        .unwrap();
    let cache = Cache::new(config.clone()).unwrap();
    let admin = RedisStore::open(&config).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let wrong = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (stop, wrong) = (stop.clone(), wrong.clone());
            // Spawned tasks do not inherit a scope: each gets its own.
            tokio::spawn(cache.scope(async move {
                let mut samples = Vec::new();
                let mut k = t as u64;
                while !stop.load(SeqCst) {
                    k = (k + 1) % KEYS;
                    let at = Instant::now();
                    if value(k).await != k * 2 {
                        wrong.fetch_add(1, SeqCst);
                    }
                    samples.push((at, at.elapsed()));
                    // Leave the machine some air.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                samples
            }))
        })
        .collect();

    // Steady state: hits flowing, no errors.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (hits_before, errors_before, _) = stats(&cache);
    assert!(hits_before > 0, "hits before the kill");

    let port = victim(&url, &admin).await;
    let killed_at = Instant::now();
    kill_9(port);
    eprintln!("{topology}: killed the master on port {port}");

    // Recovered once errors have stopped for 3 s and hits go on.
    let mut last_errors = errors_before;
    let mut last_error_at = killed_at;
    let mut saw_errors = false;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, errors, _) = stats(&cache);
        if errors != last_errors {
            last_errors = errors;
            last_error_at = Instant::now();
            saw_errors = true;
        }
        if saw_errors && last_error_at.elapsed() > Duration::from_secs(3) {
            break;
        }
        if !saw_errors && killed_at.elapsed() > Duration::from_secs(10) {
            // Nothing failed at all: the kill went unnoticed.
            break;
        }
        assert!(
            killed_at.elapsed() < RECOVERY_BOUND,
            "{topology}: the cache did not recover within {RECOVERY_BOUND:?}"
        );
    }
    let recovered_at = last_error_at;
    let (hits_mid, _, _) = stats(&cache);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (hits_after, errors_after, _) = stats(&cache);
    assert!(hits_after > hits_mid, "hits resumed");
    assert_eq!(errors_after, last_errors, "no more errors once recovered");

    stop.store(true, SeqCst);
    let mut before = Vec::new();
    let mut during = Vec::new();
    for task in tasks {
        // A panicking task fails the test here.
        for (at, took) in task.await.expect("no task panicked") {
            if at < killed_at {
                if at > started + Duration::from_secs(1) {
                    before.push(took);
                }
            } else if at <= recovered_at {
                during.push(took);
            }
        }
    }
    assert_eq!(wrong.load(SeqCst), 0, "every call returned its value");

    // Every key, the killed master's included, is cached again.
    cache
        .scope(async {
            for k in 0..KEYS {
                value(k).await;
            }
            let (_, _, runs) = stats(&cache);
            for k in 0..KEYS {
                assert_eq!(value(k).await, k * 2);
            }
            assert_eq!(stats(&cache).2, runs, "every key hits again");
        })
        .await;

    let (p99_before, p99_during) = (p99(before), p99(during));
    eprintln!(
        "FAILOVER {topology}: hits resumed {:?} after kill -9 (last cache error); \
         p99 before {:?}, during {:?} (added {:?}); errors counted {}",
        recovered_at - killed_at,
        p99_before,
        p99_during,
        p99_during.saturating_sub(p99_before),
        last_errors - errors_before,
    );
    assert!(saw_errors, "{topology}: the kill was noticed");
}
