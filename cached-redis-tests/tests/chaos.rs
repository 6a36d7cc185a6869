//! The chaos run, short: callers of every kind of cached function (async and
//! sync, with and without `lock`) keep calling while the test's own
//! redis-server is killed and restarted, hung, cut off, filled to
//! `maxmemory`, made a read-only replica, and fed garbage. No call may fail
//! or panic, and after each fault caching resumes by itself. The same
//! faults, under load and measured, are `scripts/chaos.sh` (RELIABILITY.md).

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cached_redis::cached;
use common::faults::{Fault, Injector, Target};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    id: u32,
    name: String,
    scores: Vec<u32>,
}

impl Item {
    fn of(id: u32) -> Item {
        Item {
            id,
            name: format!("item {id} {}", "x".repeat(100)),
            scores: (0..16)
                .map(|s| id.wrapping_mul(2654435761).rotate_left(s))
                .collect(),
        }
    }
}

#[derive(Debug)]
struct Never;

/// Keys from here on are the test thread's probes, never the workers'.
const PROBE: u32 = 1_000_000;
/// Body runs of probe keys, per function (async, async lock, sync, sync lock).
static PROBE_RUNS: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

fn ran(kind: usize, id: u32) {
    if id >= PROBE {
        PROBE_RUNS[kind].fetch_add(1, SeqCst);
    }
}

#[cached(ttl = 30, prefix = "chaos_async")]
async fn item_async(id: u32) -> Result<Item, Never> {
    ran(0, id);
    Ok(Item::of(id))
}

#[cached(ttl = 30, prefix = "chaos_async_lock", lock = true)]
async fn item_async_lock(id: u32) -> Result<Item, Never> {
    ran(1, id);
    Ok(Item::of(id))
}

#[cached(ttl = 30, prefix = "chaos_sync")]
fn item_sync(id: u32) -> Option<Item> {
    ran(2, id);
    Some(Item::of(id))
}

#[cached(ttl = 30, prefix = "chaos_sync_lock", lock = true)]
fn item_sync_lock(id: u32) -> Item {
    ran(3, id);
    Item::of(id)
}

/// Calls function `kind` with `id` on the calling thread; the value it
/// returned, or a description of what went wrong instead.
fn call(rt: &tokio::runtime::Runtime, kind: usize, id: u32) -> Result<(), String> {
    let got = std::panic::catch_unwind(AssertUnwindSafe(|| match kind {
        0 => rt.block_on(item_async(id)).ok(),
        1 => rt.block_on(item_async_lock(id)).ok(),
        2 => item_sync(id),
        _ => Some(item_sync_lock(id)),
    }));
    match got {
        Ok(Some(item)) if item == Item::of(id) => Ok(()),
        Ok(other) => Err(format!("function {kind}, key {id}: got {other:?}")),
        Err(_) => Err(format!("function {kind}, key {id}: panicked")),
    }
}

/// Whether two calls in a row of `id` ran the body at most once: the
/// second was a hit.
fn second_call_hits(rt: &tokio::runtime::Runtime, kind: usize, id: u32) -> Result<bool, String> {
    call(rt, kind, id)?;
    let before = PROBE_RUNS[kind].load(SeqCst);
    call(rt, kind, id)?;
    Ok(PROBE_RUNS[kind].load(SeqCst) == before)
}

/// Waits until every function caches `id` again (a call stores it, the
/// next is a hit); false if that does not happen within a generous bound.
fn caching_resumes(rt: &tokio::runtime::Runtime, id: u32) -> Result<bool, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pending: Vec<usize> = (0..4).collect();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Ok(false);
        }
        let mut still = Vec::new();
        for kind in pending {
            if !second_call_hits(rt, kind, id)? {
                still.push(kind);
            }
        }
        pending = still;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

/// Callers on threads of their own (two per function), over 40 keys, each
/// checking every answer, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start() -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for kind in 0..4 {
            for worker in 0..2u32 {
                let (stop, calls, failures) = (stop.clone(), calls.clone(), failures.clone());
                threads.push(std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let mut id = worker * 7;
                    while !stop.load(SeqCst) {
                        id = (id + 13) % 40;
                        if let Err(e) = call(&rt, kind, id) {
                            failures.lock().unwrap().push(e);
                        }
                        calls.fetch_add(1, SeqCst);
                    }
                }));
            }
        }
        Load {
            stop,
            calls,
            failures,
            threads,
        }
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.failures.lock().unwrap())
    }
}

#[test]
fn callers_never_fail_and_caching_resumes_after_each_fault() {
    let mut server = common::RedisServer::start();
    let master = common::RedisServer::start();
    let namespace = common::namespace("chaos");
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(server.url())
            .namespace(&namespace)
            .timeout(Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(200))
            .breaker_threshold(2)
            .breaker_cooldown(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let port = server.port;
    let mut injector = Injector::new(Target {
        port,
        namespace,
        master_port: master.port,
    });

    let load = Load::start();
    for (n, fault) in Fault::ALL.into_iter().enumerate() {
        // A probe key cached before the fault (so the fault can lose or
        // garble its entry), read back after it.
        let probe = PROBE + n as u32;
        assert_eq!(
            caching_resumes(&rt, probe),
            Ok(true),
            "caching works before {fault:?}"
        );
        let calls_before = load.calls.load(SeqCst);

        injector
            .start(fault)
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(300));
            if fault.repeats() {
                injector
                    .repeat(fault)
                    .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
            }
        }
        // Calls answer while the fault lasts (a hung server included).
        for kind in 0..4 {
            call(&rt, kind, probe).unwrap();
        }
        let mut restart = || {
            // The killed server's watchdog has exited with it; the new one
            // is stopped when the test ends.
            let old = std::mem::replace(&mut server, common::RedisServer::start_on(port));
            std::mem::forget(old);
            Ok(())
        };
        injector
            .end(fault, &mut restart)
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert!(
            load.calls.load(SeqCst) > calls_before,
            "the callers made calls during {fault:?}"
        );

        assert_eq!(
            caching_resumes(&rt, probe),
            Ok(true),
            "caching resumes after {fault:?}"
        );
    }
    let failures = load.stop();
    assert!(
        failures.is_empty(),
        "{} failed calls: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    drop(master);
    drop(server);
}
