//! `compression`: a process configured for LZ4 (here through
//! `CACHED_REDIS_COMPRESSION=lz4`) stores LZ4 entries and hits them, and
//! processes configured differently (compression, zlib level) read each
//! other's entries, as during a rolling change of the setting.

mod common;

use std::process::{Command, Stdio};

use cached_redis::cached;
use redis::Commands;
use serde::{Deserialize, Serialize};

const NS: &str = "CACHED_REDIS_COMPRESSION_TEST_NS";
const KEY: &str = "CACHED_REDIS_COMPRESSION_TEST_KEY";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Hit {
    id: u64,
    title: String,
    tags: Vec<String>,
}

/// A page of hits, long enough to be compressed (over 256 bytes). Counts
/// its runs in Redis, where every process sees them.
#[cached(prefix = "compression_page")]
async fn page(n: u64) -> Vec<Hit> {
    let ns = std::env::var(NS).unwrap();
    let _: i64 = common::raw()
        .incr(format!("{ns}:test:runs:{n}"), 1)
        .unwrap();
    (0..20)
        .map(|i| Hit {
            id: n * 100 + i,
            title: format!("result {i} of page {n}: a cached search hit"),
            tags: vec!["rust".into(), "cache".into(), format!("page-{n}")],
        })
        .collect()
}

fn runs(ns: &str, n: u64) -> i64 {
    common::raw()
        .get::<_, Option<i64>>(format!("{ns}:test:runs:{n}"))
        .unwrap()
        .unwrap_or(0)
}

/// The stored entry of `page(n)`.
fn entry_of(n: u64) -> Vec<u8> {
    let key = page_cache_key(n).unwrap();
    common::raw().get(key.as_str()).unwrap()
}

/// Header byte 2 of the entry of `page(n)`: 1 = zlib, 2 = LZ4.
async fn flags_of(n: u64) -> u8 {
    entry_of(n)[2]
}

/// The second byte of the zlib stream of `page(n)` (after the 20-byte
/// header): its level class, `01` for level 1, `da` for level 9.
fn zlib_level_byte(n: u64) -> u8 {
    entry_of(n)[21]
}

/// Child side: the configuration comes from the environment, as a
/// service's would; two calls of `page(KEY)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "spawned by the test below"]
async fn child() {
    let (Ok(_), Ok(n)) = (std::env::var(NS), std::env::var(KEY)) else {
        return;
    };
    let n: u64 = n.parse().unwrap();
    cached_redis::init(cached_redis::Config::from_env().unwrap()).unwrap();
    let first = page(n).await;
    assert_eq!(page(n).await, first);
    assert_eq!(first.len(), 20);
}

/// Runs `page(n)` twice in a process whose compression is `compression`.
fn in_child(ns: &str, compression: &str, n: u64) {
    in_child_at(ns, compression, "1", n);
}

/// [`in_child`] with `CACHED_REDIS_ZLIB_LEVEL=zlib_level`.
fn in_child_at(ns: &str, compression: &str, zlib_level: &str, n: u64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--ignored", "--nocapture"])
        .env(NS, ns)
        .env(KEY, n.to_string())
        .env("CACHED_REDIS_TEST_URL", common::redis_url())
        .env("CACHED_REDIS_URL", common::redis_url())
        .env("CACHED_REDIS_NAMESPACE", ns)
        .env("CACHED_REDIS_COMPRESSION", compression)
        .env("CACHED_REDIS_ZLIB_LEVEL", zlib_level)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status = common::wait_within(&mut child, common::CHILD_LIMIT)
        .unwrap_or_else(|| panic!("the {compression} child hung"));
    assert!(status.success(), "the {compression} child failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_and_zlib_processes_share_entries() {
    let ns = common::namespace("compression");
    // SAFETY: set before any cached call of this process reads it (the
    // function bodies); no other test in this binary runs in this process.
    unsafe { std::env::set_var(NS, &ns) };
    // This process writes zlib, the default.
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(common::redis_url())
            .namespace(ns.clone())
            .build()
            .unwrap(),
    )
    .unwrap();

    // An LZ4 process: a miss stores an LZ4 entry, its second call hits it.
    in_child(&ns, "lz4", 1);
    assert_eq!(runs(&ns, 1), 1, "the LZ4 process hit its own entry");
    assert_eq!(flags_of(1).await, 2, "stored as an LZ4 block");

    // This zlib process reads the LZ4 entry: a hit, the body does not run.
    let from_lz4 = page(1).await;
    assert_eq!(runs(&ns, 1), 1, "a zlib process hit the LZ4 entry");
    assert_eq!(from_lz4[3].id, 103);
    assert_eq!(flags_of(1).await, 2, "a hit does not rewrite the entry");

    // And the other way: an entry this process stores with zlib is a hit
    // in an LZ4 process.
    let stored = page(2).await;
    assert_eq!(runs(&ns, 2), 1);
    assert_eq!(flags_of(2).await, 1, "stored as a zlib stream");
    in_child(&ns, "lz4", 2);
    assert_eq!(runs(&ns, 2), 1, "the LZ4 process hit the zlib entry");
    assert_eq!(page(2).await, stored);

    // A zlib process started from the environment behaves the same.
    in_child(&ns, "zlib", 1);
    assert_eq!(runs(&ns, 1), 1);

    // The zlib level is the writer's alone: this process writes level 1
    // (the default), a process set to level 9 writes level 9, and each
    // hits the other's entry.
    assert_eq!(zlib_level_byte(2), 0x01, "this process writes level 1");
    in_child_at(&ns, "zlib", "9", 3);
    assert_eq!(runs(&ns, 3), 1, "the level-9 process hit its own entry");
    assert_eq!(flags_of(3).await, 1);
    assert_eq!(zlib_level_byte(3), 0xda, "stored at level 9");
    assert_eq!(page(3).await[0].id, 300);
    assert_eq!(runs(&ns, 3), 1, "a level-1 process hit the level-9 entry");
    in_child_at(&ns, "zlib", "9", 2);
    assert_eq!(runs(&ns, 2), 1, "a level-9 process hit the level-1 entry");
}
