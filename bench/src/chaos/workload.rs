//! The load of the chaos run: cached functions of each kind (async and
//! sync, with and without `lock`), and the workers that call them as fast
//! as they can, checking every answer and recording every call.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cached_redis::cached;
use serde::{Deserialize, Serialize};

/// Keys per function in the working set at any moment.
pub const KEYS: u32 = 250;
/// Keys entering (and leaving) the working set per second: a working set
/// that drifts, as real ones do, so that new values are stored all the
/// time (and a fault that prevents storing shows).
pub const DRIFT_PER_S: u64 = 25;
/// Entry lifetime of every function, seconds.
pub const TTL_SECS: u64 = 10;
/// What one body run costs (a backend call).
pub const BODY_COST: Duration = Duration::from_millis(2);

/// The four kinds of cached function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Async = 0,
    AsyncLock = 1,
    Sync = 2,
    SyncLock = 3,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Async, Kind::AsyncLock, Kind::Sync, Kind::SyncLock];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Async => "async",
            Kind::AsyncLock => "async, lock",
            Kind::Sync => "sync",
            Kind::SyncLock => "sync, lock",
        }
    }

    fn is_async(self) -> bool {
        matches!(self, Kind::Async | Kind::AsyncLock)
    }
}

/// The cached value: about 600 bytes, fully determined by the key, so
/// that every answer can be checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: u32,
    pub title: String,
    pub tags: Vec<String>,
    pub scores: Vec<u32>,
}

impl Item {
    pub fn of(id: u32) -> Item {
        Item {
            id,
            title: format!("item {id}: {}", "lorem ipsum ".repeat(20)),
            tags: (0..8).map(|t| format!("tag-{}", (id + t) % 37)).collect(),
            scores: (0..64)
                .map(|s| id.wrapping_mul(2654435761).rotate_left(s))
                .collect(),
        }
    }
}

/// Never produced: the bodies are infallible, so every `Err` a caller
/// sees would be the library's.
#[derive(Debug, Clone)]
pub struct Never;

/// One body run: when (µs since the start), which function, which key.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub t_us: u64,
    pub kind: Kind,
    pub key: u32,
}

/// Where the bodies record their runs.
pub struct Recorder {
    pub start: Instant,
    runs: Mutex<Vec<Run>>,
}

fn recorder() -> &'static Recorder {
    static R: OnceLock<Recorder> = OnceLock::new();
    R.get_or_init(|| Recorder {
        start: Instant::now(),
        runs: Mutex::new(Vec::with_capacity(1 << 20)),
    })
}

/// The instant every timestamp counts from.
pub fn epoch() -> Instant {
    recorder().start
}

pub fn since_start_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

fn record_run(kind: Kind, key: u32) {
    let run = Run {
        t_us: since_start_us(),
        kind,
        key,
    };
    recorder().runs.lock().unwrap().push(run);
}

/// Every body run so far.
pub fn take_runs() -> Vec<Run> {
    std::mem::take(&mut *recorder().runs.lock().unwrap())
}

#[cached(ttl = 10, prefix = "chaos_async")]
async fn item_async(id: u32) -> Result<Item, Never> {
    record_run(Kind::Async, id);
    tokio::time::sleep(BODY_COST).await;
    Ok(Item::of(id))
}

#[cached(ttl = 10, prefix = "chaos_async_lock", lock = true)]
async fn item_async_lock(id: u32) -> Result<Item, Never> {
    record_run(Kind::AsyncLock, id);
    tokio::time::sleep(BODY_COST).await;
    Ok(Item::of(id))
}

#[cached(ttl = 10, prefix = "chaos_sync")]
fn item_sync(id: u32) -> Option<Item> {
    record_run(Kind::Sync, id);
    std::thread::sleep(BODY_COST);
    Some(Item::of(id))
}

#[cached(ttl = 10, prefix = "chaos_sync_lock", lock = true)]
fn item_sync_lock(id: u32) -> Item {
    record_run(Kind::SyncLock, id);
    std::thread::sleep(BODY_COST);
    Item::of(id)
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// The right value.
    Ok = 0,
    /// An `Err`/`None`, or a value that is not the key's.
    Wrong = 1,
    /// The call panicked.
    Panic = 2,
}

/// One call: when it started (µs since the start), how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub t_us: u64,
    pub latency_us: u32,
    pub kind: Kind,
    pub outcome: Outcome,
}

/// A future polled inside `catch_unwind`: a panicking call becomes
/// `Err(())` instead of ending the worker.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// A xorshift generator per worker: key choice without a shared lock.
struct Rng(u64);

impl Rng {
    /// A key of the working set of this moment, uniformly.
    fn key(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let base = since_start_us() * DRIFT_PER_S / 1_000_000;
        (base + self.0 % u64::from(KEYS)) as u32
    }
}

fn check(id: u32, got: Option<Item>) -> Outcome {
    match got {
        Some(item) if item == Item::of(id) => Outcome::Ok,
        _ => Outcome::Wrong,
    }
}

fn call_sync(kind: Kind, id: u32) -> Outcome {
    let res = std::panic::catch_unwind(|| match kind {
        Kind::Sync => item_sync(id),
        Kind::SyncLock => Some(item_sync_lock(id)),
        _ => unreachable!("async kinds run on tokio"),
    });
    match res {
        Ok(got) => check(id, got),
        Err(_) => Outcome::Panic,
    }
}

async fn call_async(kind: Kind, id: u32) -> Outcome {
    let res = match kind {
        Kind::Async => CatchUnwind(Box::pin(item_async(id))).await,
        Kind::AsyncLock => CatchUnwind(Box::pin(item_async_lock(id))).await,
        _ => unreachable!("sync kinds run on threads"),
    };
    match res {
        Ok(got) => check(id, got.ok()),
        Err(()) => Outcome::Panic,
    }
}

/// The workers: `per_kind` of each kind, async ones as tokio tasks on
/// `rt`, sync ones on threads of their own. They run until `stop` is set
/// and hand back their calls.
pub struct Workers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Call>>>,
    threads: Vec<std::thread::JoinHandle<Vec<Call>>>,
}

impl Workers {
    pub fn start(rt: &tokio::runtime::Handle, per_kind: usize) -> Workers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let mut threads = Vec::new();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for kind in Kind::ALL {
            for _ in 0..per_kind {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let mut rng = Rng(seed | 1);
                let stop = stop.clone();
                if kind.is_async() {
                    tasks.push(rt.spawn(async move {
                        let mut calls = Vec::with_capacity(1 << 16);
                        while !stop.load(Relaxed) {
                            let id = rng.key();
                            let t0 = Instant::now();
                            let outcome = call_async(kind, id).await;
                            calls.push(call(kind, t0, outcome));
                        }
                        calls
                    }));
                } else {
                    threads.push(std::thread::spawn(move || {
                        let mut calls = Vec::with_capacity(1 << 16);
                        while !stop.load(Relaxed) {
                            let id = rng.key();
                            let t0 = Instant::now();
                            let outcome = call_sync(kind, id);
                            calls.push(call(kind, t0, outcome));
                        }
                        calls
                    }));
                }
            }
        }
        Workers {
            stop,
            tasks,
            threads,
        }
    }

    /// Stops every worker; all their calls, in no particular order.
    pub fn stop(self, rt: &tokio::runtime::Runtime) -> Vec<Call> {
        self.stop.store(true, Relaxed);
        let mut calls = Vec::new();
        for t in self.threads {
            calls.extend(t.join().expect("a sync worker panicked outside a call"));
        }
        for t in self.tasks {
            calls.extend(
                rt.block_on(t)
                    .expect("an async worker panicked outside a call"),
            );
        }
        calls
    }
}

fn call(kind: Kind, t0: Instant, outcome: Outcome) -> Call {
    Call {
        t_us: t0.duration_since(epoch()).as_micros() as u64,
        latency_us: t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32,
        kind,
        outcome,
    }
}
