//! Every feature on every topology `scripts/test.sh` starts: one server,
//! TLS on a server hardened like a managed service (`KEYS`, `FLUSHALL`,
//! `FLUSHDB`, `CONFIG`, `DEBUG` renamed away), the same as the README's
//! least-privilege ACL user, mutual TLS, a 3-master cluster, the same
//! over TLS with a password, and a master found through a sentinel, with
//! and without TLS (the TLS sentinel asks for a password of its own).
//!
//! The engine is one per process, so each topology runs the `child::`
//! tests in a process of its own: [`every_feature_on_every_topology`]
//! starts this test binary once per topology with the topology in the
//! environment, and fails if any child fails. The children are `#[ignore]`d
//! so that a plain run does not start them without a topology.

mod common;

use std::process::Command;

/// How a child finds its topology.
const CHILD_URL: &str = "CACHED_REDIS_TOPOLOGY_URL";
const CHILD_ADMIN_URL: &str = "CACHED_REDIS_TOPOLOGY_ADMIN_URL";
const CHILD_NAMESPACE: &str = "CACHED_REDIS_TOPOLOGY_NAMESPACE";
const CHILD_CA: &str = "CACHED_REDIS_TOPOLOGY_CA";
const CHILD_CERT: &str = "CACHED_REDIS_TOPOLOGY_CERT";
const CHILD_KEY: &str = "CACHED_REDIS_TOPOLOGY_KEY";
/// Set: TLS without verification (`tls_insecure`), in a process whose
/// rustls provider was installed before the cache's, as a service may do.
const CHILD_INSECURE: &str = "CACHED_REDIS_TOPOLOGY_INSECURE";
/// The sentinel's own password, where it asks for one.
const CHILD_SENTINEL_PASSWORD: &str = "CACHED_REDIS_TOPOLOGY_SENTINEL_PASSWORD";

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run the tests with scripts/test.sh, which starts the topologies"
        ),
    }
}

/// How long one topology's child may run: they take seconds each, and
/// one that hangs must fail the run rather than stall it.
const CHILD_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

struct Topology {
    name: &'static str,
    url: String,
    /// For checks the test makes behind the library's back (the default
    /// user where `url` is a restricted one).
    admin_url: String,
    ca: bool,
    client_cert: bool,
    insecure: bool,
    /// The sentinel asks for the password `scripts/topologies.sh` exports.
    sentinel_password: bool,
}

/// The README's `ACL SETUSER` line for `namespace`, with `password`.
fn readme_acl(namespace: &str, password: &str) -> Vec<String> {
    let readme = include_str!("../../README.md");
    let line = readme
        .lines()
        .find(|l| l.trim_start().starts_with("ACL SETUSER cache "))
        .expect("the README gives the cache user's ACL SETUSER line");
    line.split_whitespace()
        .map(|word| {
            word.replace("cached:", &format!("{namespace}:"))
                .replace("<password>", password)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feature_on_every_topology() {
    let tls = env("CACHED_REDIS_TEST_TLS_URL");
    let namespace = common::namespace("topologies");
    // The least-privilege user, created on the hardened TLS server with the
    // README's line.
    let password = format!("acl-{}", std::process::id());
    let admin = cached_redis::RedisStore::open(
        &cached_redis::Config::builder()
            .redis_url(&tls)
            .tls_ca_file(env("CACHED_REDIS_TEST_TLS_CA"))
            .build()
            .unwrap(),
    )
    .unwrap();
    let acl = readme_acl(&format!("{namespace}-acl"), &password);
    let mut cmd = redis::cmd(&acl[0]);
    for arg in &acl[1..] {
        cmd.arg(arg);
    }
    let ok: String = admin.query(&cmd).await.expect("ACL SETUSER accepted");
    assert_eq!(ok, "OK");
    let user = acl[2].clone();
    // On database 1: selecting it is one of the commands the user runs.
    let tls_db1 = tls
        .strip_suffix("/0")
        .map(|base| format!("{base}/1"))
        .expect("the TLS URL names database 0");
    let restricted = tls_db1.replacen("rediss://", &format!("rediss://{user}:{password}@"), 1);

    let topologies = [
        Topology {
            name: "single",
            url: common::redis_url(),
            admin_url: common::redis_url(),
            ca: false,
            client_cert: false,
            insecure: false,
            sentinel_password: false,
        },
        Topology {
            name: "tls-hardened",
            url: tls.clone(),
            admin_url: tls.clone(),
            ca: true,
            client_cert: false,
            insecure: false,
            sentinel_password: false,
        },
        Topology {
            name: "acl",
            url: restricted,
            admin_url: tls_db1.clone(),
            ca: true,
            client_cert: false,
            insecure: false,
            sentinel_password: false,
        },
        Topology {
            name: "mtls",
            url: env("CACHED_REDIS_TEST_MTLS_URL"),
            admin_url: env("CACHED_REDIS_TEST_MTLS_URL"),
            ca: true,
            client_cert: true,
            insecure: false,
            sentinel_password: false,
        },
        Topology {
            name: "tls-insecure",
            url: tls.clone(),
            admin_url: tls.clone(),
            ca: false,
            client_cert: false,
            insecure: true,
            sentinel_password: false,
        },
        Topology {
            name: "cluster",
            url: env("CACHED_REDIS_TEST_CLUSTER_URL"),
            admin_url: env("CACHED_REDIS_TEST_CLUSTER_URL"),
            ca: false,
            client_cert: false,
            insecure: false,
            sentinel_password: false,
        },
        Topology {
            name: "tls-cluster",
            url: env("CACHED_REDIS_TEST_TLS_CLUSTER_URL"),
            admin_url: env("CACHED_REDIS_TEST_TLS_CLUSTER_URL"),
            ca: true,
            client_cert: false,
            insecure: false,
            sentinel_password: false,
        },
        Topology {
            name: "tls-sentinel",
            url: env("CACHED_REDIS_TEST_TLS_SENTINEL_URL"),
            admin_url: env("CACHED_REDIS_TEST_TLS_SENTINEL_URL"),
            ca: true,
            client_cert: false,
            insecure: false,
            sentinel_password: true,
        },
        Topology {
            name: "sentinel",
            url: env("CACHED_REDIS_TEST_SENTINEL_URL"),
            admin_url: env("CACHED_REDIS_TEST_SENTINEL_URL"),
            ca: false,
            client_cert: false,
            insecure: false,
            sentinel_password: false,
        },
    ];
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = topologies
        .iter()
        .map(|t| {
            let mut child = Command::new(&exe);
            child
                .args(["--ignored", "--test-threads", "4", "child::"])
                .env(CHILD_URL, &t.url)
                .env(CHILD_ADMIN_URL, &t.admin_url)
                .env(
                    CHILD_NAMESPACE,
                    if t.name == "acl" {
                        format!("{namespace}-acl")
                    } else {
                        format!("{namespace}-{}", t.name)
                    },
                );
            if t.ca {
                child.env(CHILD_CA, env("CACHED_REDIS_TEST_TLS_CA"));
            }
            if t.insecure {
                child.env(CHILD_INSECURE, "1");
            }
            if t.sentinel_password {
                child.env(
                    CHILD_SENTINEL_PASSWORD,
                    env("CACHED_REDIS_TEST_TLS_SENTINEL_PASSWORD"),
                );
            }
            if t.client_cert {
                child
                    .env(CHILD_CERT, env("CACHED_REDIS_TEST_TLS_CLIENT_CERT"))
                    .env(CHILD_KEY, env("CACHED_REDIS_TEST_TLS_CLIENT_KEY"));
            }
            (
                t.name,
                std::thread::spawn(move || common::output_within(&mut child, CHILD_LIMIT)),
            )
        })
        .collect();
    let mut failed = Vec::new();
    for (name, child) in children {
        let (out, killed) = child.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "--- {name}: {}",
            if killed {
                "killed after running for too long"
            } else {
                stdout
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("test result"))
                    .unwrap_or("no result")
            }
        );
        // A child that ran nothing must not pass.
        if killed
            || !out.status.success()
            || !stdout.contains(" passed;")
            || stdout.contains("0 passed;")
        {
            eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "failed on: {failed:?}");
}

/// The tests each topology runs, in a process of its own.
mod child {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::{Duration, Instant};

    use cached_redis::{cached, Config, RedisStore, ScanCursor};
    use serde_json::json;

    use super::*;

    fn config(url_var: &str) -> Config {
        let mut b = Config::builder()
            .redis_url(env(url_var))
            .namespace(env(CHILD_NAMESPACE))
            .stats_flush_interval(Duration::from_secs(3600))
            // Generous: on a loaded machine the TLS handshakes of a
            // cluster's nodes or a sentinel's two hops can outlast the
            // defaults (250 ms a command, 500 ms a connection), and each
            // timeout counts an error these tests assert there is none of.
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(5));
        if let Ok(ca) = std::env::var(CHILD_CA) {
            b = b.tls_ca_file(ca);
        }
        if let (Ok(cert), Ok(key)) = (std::env::var(CHILD_CERT), std::env::var(CHILD_KEY)) {
            b = b.tls_client_cert(cert, key);
        }
        if std::env::var_os(CHILD_INSECURE).is_some() {
            b = b.tls_insecure(true);
        }
        if let Ok(password) = std::env::var(CHILD_SENTINEL_PASSWORD) {
            b = b.sentinel_password(password);
        }
        b.build().unwrap()
    }

    fn setup() {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            if std::env::var_os(CHILD_INSECURE).is_some() {
                // The service installed its rustls provider first: the
                // cache must use it, not panic installing its own.
                rustls::crypto::ring::default_provider()
                    .install_default()
                    .expect("the first provider of the process");
            }
            cached_redis::init(config(CHILD_URL)).unwrap()
        });
    }

    /// A store for checks behind the library's back.
    fn admin() -> RedisStore {
        RedisStore::open(&config(CHILD_ADMIN_URL)).unwrap()
    }

    fn key_of(prefix: &str, hash_key: &str) -> String {
        assert!(hash_key.starts_with(&format!("{}:{prefix}:", env(CHILD_NAMESPACE))));
        hash_key.to_owned()
    }

    fn errors(prefix: &str) -> u64 {
        cached_redis::local_stats(prefix).map_or(0, |s| s.errors)
    }

    async fn exists(key: &str) -> bool {
        let value: Option<Vec<u8>> = admin().query(redis::cmd("GET").arg(key)).await.unwrap();
        value.is_some()
    }

    /// Behind sentinels (over TLS too), the store follows their master
    /// switches: the sentinel it follows answered, and named the master.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "run by every_feature_on_every_topology"]
    async fn sentinel_switches_are_followed() {
        if !env(CHILD_URL).contains("+sentinel://") {
            return;
        }
        let logs = common::logs::logs();
        let _store = admin();
        common::eventually("a sentinel followed", || {
            logs.0.lock().unwrap().lines().any(|line| {
                line.contains("following the sentinels' master switches")
                    && line.contains("master=Some(")
            })
        })
        .await;
    }

    static DOUBLE_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cached(ttl = 60, prefix = "topo_double")]
    async fn double(x: u64) -> u64 {
        DOUBLE_RUNS.fetch_add(1, SeqCst);
        x * 2
    }

    static SYNC_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cached(ttl = 60, prefix = "topo_sync")]
    fn triple(x: u64) -> u64 {
        SYNC_RUNS.fetch_add(1, SeqCst);
        x * 3
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "run by every_feature_on_every_topology"]
    async fn miss_then_hit_and_the_stats_flush() {
        setup();
        assert_eq!(double(21).await, 42);
        assert_eq!(double(21).await, 42);
        assert_eq!(DOUBLE_RUNS.load(SeqCst), 1, "the second call is a hit");
        // The blocking path too.
        let sync = tokio::task::spawn_blocking(|| (triple(5), triple(5)))
            .await
            .unwrap();
        assert_eq!(sync, (15, 15));
        assert_eq!(SYNC_RUNS.load(SeqCst), 1, "the second sync call is a hit");
        cached_redis::flush_stats().await.unwrap();
        let hash = format!("{}:topo_double:stats", env(CHILD_NAMESPACE));
        let stats: std::collections::HashMap<String, u64> = admin()
            .query(redis::cmd("HGETALL").arg(&hash))
            .await
            .unwrap();
        assert_eq!(stats.get("hits"), Some(&1), "{stats:?}");
        assert_eq!(stats.get("misses"), Some(&1), "{stats:?}");
        assert_eq!(errors("topo_double") + errors("topo_sync"), 0);

        // Every stats hash is found by a walk over the whole namespace
        // (every master of a cluster), as the stats reader does it.
        let mut cursor = ScanCursor::new();
        let mut found = Vec::new();
        let pattern = format!("{}:*:stats", env(CHILD_NAMESPACE));
        let store = admin();
        while !cursor.is_done() {
            found.extend(store.scan(&mut cursor, &pattern, 100).await.unwrap());
        }
        assert!(found.contains(&hash), "{found:?}");

        // The stats reader `cached-stats` prints from finds and parses the
        // same hashes on this topology.
        let reader = cached_redis::report::StatsReader::new(&config(CHILD_URL)).unwrap();
        let reports = reader.all().await.unwrap();
        let double = reports
            .iter()
            .find(|r| r.prefix == "topo_double")
            .unwrap_or_else(|| panic!("topo_double among {reports:?}"));
        assert_eq!((double.counters.hits, double.counters.misses), (1, 1));
        assert!(
            reports.iter().any(|r| r.prefix == "topo_sync"),
            "{reports:?}"
        );
    }

    static LOCK_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cached(ttl = 60, lock = true, prefix = "topo_lock")]
    async fn locked(x: u64) -> u64 {
        LOCK_RUNS.fetch_add(1, SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        x + 1
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "run by every_feature_on_every_topology"]
    async fn lock_gives_one_computation() {
        setup();
        // Connect first (a TLS connect can outlast the callers' wait for
        // it on a loaded machine, and they would run uncached).
        assert_eq!(locked(0).await, 1);
        let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(locked(7))).collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 8);
        }
        assert_eq!(LOCK_RUNS.load(SeqCst), 2, "one run each");
        // The lock key was taken and released with its script.
        let lock = format!("{}:lock", locked_cache_key(7).unwrap());
        assert!(!exists(&lock).await, "the lock is released");

        // A lock another process holds: this call waits for it rather
        // than computing beside it (the lock script's path for a key that
        // is taken), and takes over once it is released.
        let other = format!("{}:lock", locked_cache_key(9).unwrap());
        let store = admin();
        let _: () = store
            .query(
                redis::cmd("SET")
                    .arg(&other)
                    .arg("another process")
                    .arg("PX")
                    .arg(30_000),
            )
            .await
            .unwrap();
        let waiting = tokio::spawn(locked(9));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            LOCK_RUNS.load(SeqCst),
            2,
            "no run while another process holds the lock"
        );
        let _: () = store.query(redis::cmd("DEL").arg(&other)).await.unwrap();
        assert_eq!(waiting.await.unwrap(), 10);
        assert_eq!(LOCK_RUNS.load(SeqCst), 3, "run once the lock was free");
        assert_eq!(errors("topo_lock"), 0);
    }

    static STALE_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cached(ttl = 1, stale = 30, prefix = "topo_stale")]
    async fn stale_value(x: u64) -> Result<String, String> {
        // Every run after the first fails: the stale value stands in.
        match STALE_RUNS.fetch_add(1, SeqCst) {
            0 => Ok(format!("{x} fresh")),
            _ => Err("backend down".into()),
        }
    }

    static EARLY_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cached(ttl = 60, early = true, prefix = "topo_early")]
    async fn early_value(x: u64) -> u64 {
        EARLY_RUNS.fetch_add(1, SeqCst);
        x
    }

    static NONE_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cached(ttl = 60, cache_none = 60, prefix = "topo_none")]
    async fn maybe(x: u64) -> Option<u64> {
        NONE_RUNS.fetch_add(1, SeqCst);
        (x > 100).then_some(x)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "run by every_feature_on_every_topology"]
    async fn stale_early_and_cache_none() {
        setup();
        assert_eq!(stale_value(1).await.unwrap(), "1 fresh");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(
            stale_value(1).await.unwrap(),
            "1 fresh",
            "past the ttl, recomputing failed: the stale value"
        );
        assert_eq!(STALE_RUNS.load(SeqCst), 2, "it did recompute");
        assert_eq!(early_value(3).await, 3);
        assert_eq!(early_value(3).await, 3);
        assert_eq!(EARLY_RUNS.load(SeqCst), 1);
        assert_eq!(maybe(1).await, None);
        assert_eq!(maybe(1).await, None);
        assert_eq!(NONE_RUNS.load(SeqCst), 1, "None was cached");
        // topo_stale counts its failed recomputation as an error.
        for prefix in ["topo_early", "topo_none"] {
            assert_eq!(errors(prefix), 0, "{prefix}");
        }
    }

    static SLIDING_NONE_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cached(
        ttl = 60,
        refresh = true,
        cache_none = 60,
        prefix = "topo_sliding_none"
    )]
    async fn sliding_maybe(x: u64) -> Option<u64> {
        SLIDING_NONE_RUNS.fetch_add(1, SeqCst);
        (x > 100).then_some(x)
    }

    static LOCAL_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cached(ttl = 60, local = 10, prefix = "topo_local")]
    async fn held(x: u64) -> u64 {
        LOCAL_RUNS.fetch_add(1, SeqCst);
        x
    }

    /// The reads that also ask what is left of an entry (`refresh` with
    /// `cache_none`, a live `local` level) and the script that sets a
    /// cached `None`'s lifetime back, on every topology, as the README's
    /// least-privilege user.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "run by every_feature_on_every_topology"]
    async fn sliding_none_and_local_reads() {
        setup();
        assert_eq!(sliding_maybe(1).await, None);
        assert_eq!(sliding_maybe(1).await, None);
        assert_eq!(sliding_maybe(101).await, Some(101));
        assert_eq!(sliding_maybe(101).await, Some(101));
        assert_eq!(SLIDING_NONE_RUNS.load(SeqCst), 2, "both were cached");
        // The first call writes; once the level's channel is live, the
        // next reads the entry from Redis (with its PTTL) and holds it.
        assert_eq!(held(5).await, 5);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(held(5).await, 5);
        assert_eq!(held(5).await, 5);
        assert_eq!(LOCAL_RUNS.load(SeqCst), 1, "cached and held");
        for prefix in ["topo_sliding_none", "topo_local"] {
            assert_eq!(errors(prefix), 0, "{prefix}");
        }
    }

    static COMPANION_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cached(ttl = 60, prefix = "topo_companion")]
    async fn companion(x: u64) -> u64 {
        COMPANION_RUNS.fetch_add(1, SeqCst) as u64 + x
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "run by every_feature_on_every_topology"]
    async fn companions_and_invalidate_args() {
        setup();
        let key = key_of("topo_companion", &companion_cache_key(1).unwrap());
        assert_eq!(companion(1).await, 1);
        assert!(exists(&key).await);
        assert!(companion_invalidate(1).await.unwrap());
        assert!(!companion_invalidate(1).await.unwrap());
        assert_eq!(companion(1).await, 2, "recomputed");
        assert_eq!(companion_refresh(1).await, 3, "refresh runs");
        assert_eq!(companion(1).await, 3, "and stores");
        assert!(cached_redis::invalidate_args("topo_companion", &json!([1]))
            .await
            .unwrap());
        assert!(!exists(&key).await);
        assert_eq!(errors("topo_companion"), 0);
    }

    static MANY_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cached(ttl = 60, prefix = "topo_many")]
    async fn many(x: u64) -> u64 {
        MANY_RUNS.fetch_add(1, SeqCst);
        x
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "run by every_feature_on_every_topology"]
    async fn invalidate_prefix_reaches_every_entry() {
        setup();
        // On a cluster these spread over every master: a walk of one node
        // would find about a third.
        for x in 0..300 {
            many(x).await;
        }
        assert_eq!(MANY_RUNS.load(SeqCst), 300);
        let listener = cluster_listener();
        let removed = cached_redis::invalidate_prefix("topo_many").await.unwrap();
        assert_eq!(removed, 300);
        if let Some(listener) = listener {
            let channel = format!("{}:__invalidate", env(CHILD_NAMESPACE));
            let _: u64 = admin()
                .query(redis::cmd("PUBLISH").arg(&channel).arg(STOP_LISTENING))
                .await
                .unwrap();
            let head = format!("{}:topo_many:", env(CHILD_NAMESPACE));
            let announcements = listener.join().unwrap();
            let announcements = announcements
                .iter()
                .filter(|text| text.ends_with(&format!(" p {head}")))
                .count();
            // Before the walk, after it, and two per `SCAN` batch: about
            // one batch per master here (a batch is up to a thousand keys).
            // One message per slot would be one for nearly every key.
            assert!(
                (2..=20).contains(&announcements),
                "{announcements} announcements for 300 entries on three masters"
            );
        }
        for x in 0..300 {
            many(x).await;
        }
        assert_eq!(MANY_RUNS.load(SeqCst), 600, "every entry was gone");
        assert_eq!(errors("topo_many"), 0);
    }

    /// What ends [`cluster_listener`]'s listening, once no other message
    /// has come for a second after it.
    const STOP_LISTENING: &str = "stop listening";

    /// On the plain cluster, the messages of the namespace's invalidation
    /// channel that one master hears (a cluster sends every `PUBLISH` to
    /// every node) until [`STOP_LISTENING`]; `None` elsewhere.
    fn cluster_listener() -> Option<std::thread::JoinHandle<Vec<String>>> {
        let node = env(CHILD_URL).strip_prefix("redis+cluster://")?.to_owned();
        let mut connection = redis::Client::open(format!("redis://{node}"))
            .unwrap()
            .get_connection()
            .unwrap();
        let channel = format!("{}:__invalidate", env(CHILD_NAMESPACE));
        let (subscribed, ready) = std::sync::mpsc::channel();
        let listener = std::thread::spawn(move || {
            let mut pubsub = connection.as_pubsub();
            pubsub.subscribe(&channel).unwrap();
            pubsub
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            subscribed.send(()).unwrap();
            // The subscribers' probes (kind `h`, a few a second) keep the
            // channel busy: quiet means no other message for a second.
            let (mut heard, mut told_to_stop) = (Vec::new(), false);
            let mut last_heard = Instant::now();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if told_to_stop && last_heard.elapsed() > Duration::from_secs(1) {
                    return heard;
                }
                assert!(Instant::now() < deadline, "never told to stop");
                match pubsub.get_message() {
                    Ok(message) => match message.get_payload::<String>().unwrap() {
                        text if text.split(' ').nth(1) == Some("h") => {}
                        text if text == STOP_LISTENING => {
                            told_to_stop = true;
                            last_heard = Instant::now();
                        }
                        text => {
                            heard.push(text);
                            last_heard = Instant::now();
                        }
                    },
                    Err(e) if e.is_timeout() => {}
                    Err(e) => panic!("listening: {e}"),
                }
            }
        });
        ready.recv().unwrap();
        Some(listener)
    }

    #[cfg(feature = "postgres")]
    static PG_RUNS: AtomicUsize = AtomicUsize::new(0);

    #[cfg(feature = "postgres")]
    #[cached(ttl = 60, prefix = "topo_pg")]
    async fn pg_user(id: i64) -> String {
        PG_RUNS.fetch_add(1, SeqCst);
        format!("user {id}")
    }

    #[cfg(feature = "postgres")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "run by every_feature_on_every_topology"]
    async fn the_postgres_listener_invalidates() {
        use cached_redis::postgres::tokio_postgres::{self, NoTls};
        setup();
        let pg = env("CACHED_REDIS_TEST_PG");
        let channel = format!("topo_{}", std::process::id());
        let listener = cached_redis::postgres::listen(&pg, &channel).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), listener.wait_listening())
                .await
                .unwrap()
        );
        pg_user(42).await;
        let key = pg_user_cache_key(42).unwrap();
        assert!(exists(&key).await);
        let (client, conn) = tokio_postgres::connect(&pg, NoTls).await.unwrap();
        tokio::spawn(conn);
        let payload = r#"{"prefix":"topo_pg","args":[42]}"#;
        client
            .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while exists(&key).await {
            assert!(Instant::now() < deadline, "the entry was not invalidated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pg_user(42).await;
        assert_eq!(PG_RUNS.load(SeqCst), 2);
    }
}
