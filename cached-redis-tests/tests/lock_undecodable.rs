//! `lock = true` waiting on an entry that does not decode: the wait reads
//! the key again and again, and the bad bytes are one error, not one per
//! read.

mod common;

use cached_redis::cached;
use redis::Commands;

#[cached(lock = true, prefix = "lock_undecodable")]
async fn lock_undecodable(x: u64) -> u64 {
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_read_while_waiting_for_a_lock_are_one_error() {
    common::init_once("lock_undecodable");
    let key = lock_undecodable_cache_key(1).unwrap();
    let mut raw = common::raw();
    // An entry that does not decode (a type changed without a version
    // bump), and another process's lock on it for 400 ms.
    let _: () = raw.set(key.as_str(), b"not an entry".as_slice()).unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{}:lock", key.as_str()))
        .arg("another process")
        .arg("PX")
        .arg(400)
        .query(&mut raw)
        .unwrap();
    assert_eq!(lock_undecodable(1).await, 1);
    let stats = cached_redis::local_stats("lock_undecodable").unwrap();
    assert_eq!((stats.misses, stats.errors), (1, 1), "{stats:?}");
    // The call replaced the bad entry: the next one is a hit.
    assert_eq!(lock_undecodable(1).await, 1);
    assert_eq!(
        cached_redis::local_stats("lock_undecodable").unwrap().hits,
        1
    );
}
