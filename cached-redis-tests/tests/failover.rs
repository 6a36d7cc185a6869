//! Failover under load: 64 tasks call cached functions in a loop while a
//! cluster master, or the sentinel's master, is killed with `kill -9`.
//! Every call must return the function's value (calls fail open while the
//! topology is broken), no task may panic, and caching must resume by
//! itself, with the same client, once a replica is promoted.
//!
//! Each topology runs in a process of its own (the engine is one per
//! process): the test starts this binary again with the topology in the
//! environment. The time from the kill to the last failed cache operation
//! and the p99 call latency before and during the failover are printed.

mod common;

use std::process::Command;

const CHILD_URL: &str = "CACHED_REDIS_FAILOVER_URL";

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run the tests with scripts/test.sh, which starts the topologies"
        ),
    }
}

fn run_child(url: String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child::fail_over", "--nocapture"])
        .env(CHILD_URL, url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(out.status.success(), "the failover child failed");
    assert!(
        stdout.contains("1 passed"),
        "the failover child ran nothing"
    );
}

#[test]
fn cluster_master_killed() {
    run_child(env("CACHED_REDIS_TEST_CLUSTER_URL"));
}

#[test]
fn sentinel_master_killed() {
    run_child(env("CACHED_REDIS_TEST_SENTINEL_URL"));
}

mod child {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use cached_redis::{cached, Config, RedisStore};

    use super::*;

    const TASKS: usize = 64;
    const KEYS: u64 = 48;
    /// Generous: a failover here takes a few seconds.
    const RECOVERY_BOUND: Duration = Duration::from_secs(40);

    static RUNS: AtomicU64 = AtomicU64::new(0);

    #[cached(ttl = 600, prefix = "failover")]
    async fn value(k: u64) -> u64 {
        RUNS.fetch_add(1, SeqCst);
        k * 2
    }

    fn stats() -> (u64, u64) {
        let s = cached_redis::local_stats("failover").unwrap_or_default();
        (s.hits, s.errors)
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
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -9 {pid}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "run by cluster_master_killed and sentinel_master_killed"]
    async fn fail_over() {
        let url = env(CHILD_URL);
        let config = Config::builder()
            .redis_url(&url)
            .namespace(common::namespace("failover"))
            .build()
            .unwrap();
        cached_redis::init(config.clone()).unwrap();
        let admin = RedisStore::open(&config).unwrap();
        let topology = if url.starts_with("redis+cluster") {
            "cluster"
        } else {
            "sentinel"
        };

        let stop = Arc::new(AtomicBool::new(false));
        let wrong = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (stop, wrong) = (stop.clone(), wrong.clone());
                tokio::spawn(async move {
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
                })
            })
            .collect();

        // Steady state: hits flowing, no errors.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (hits_before, errors_before) = stats();
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
            let (_, errors) = stats();
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
        let (hits_mid, _) = stats();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (hits_after, errors_after) = stats();
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
        for k in 0..KEYS {
            value(k).await;
        }
        let runs = RUNS.load(SeqCst);
        for k in 0..KEYS {
            assert_eq!(value(k).await, k * 2);
        }
        assert_eq!(RUNS.load(SeqCst), runs, "every key hits again");

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
}
