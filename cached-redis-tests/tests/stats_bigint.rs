//! `miss_us_sumsq` outgrows 64 bits over a service's life; the flush adds
//! to it exactly, as a decimal big integer.

mod common;

use std::time::Duration;

use cached_redis::cached;
use redis::Commands;

#[cached(prefix = "huge_sumsq")]
fn slow_identity(x: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(2));
    x
}

#[tokio::test]
async fn the_sum_of_squares_is_exact_past_64_bits() {
    let namespace = common::namespace("sumsq");
    let hash = format!("{namespace}:huge_sumsq:stats");
    // Just under 2^64: the next flush must carry past it.
    let start: u128 = u64::MAX as u128 - 5;
    let _: () = common::raw()
        .hset(&hash, "miss_us_sumsq", start.to_string())
        .unwrap();
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(common::redis_url())
            .namespace(&namespace)
            .stats_flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
    )
    .unwrap();
    slow_identity(1);
    slow_identity(2);
    let local = cached_redis::local_stats("huge_sumsq").unwrap();
    assert!(local.miss_us_sumsq >= 2 * 2000 * 2000);
    cached_redis::flush_stats().await.unwrap();
    let written: String = common::raw().hget(&hash, "miss_us_sumsq").unwrap();
    let expected = start + local.miss_us_sumsq;
    assert!(expected > u64::MAX as u128);
    assert_eq!(written, expected.to_string());

    // A field that is not a decimal integer is left alone and the flush
    // reports the failure instead of corrupting it.
    let _: () = common::raw()
        .hset(&hash, "miss_us_sumsq", "garbage")
        .unwrap();
    slow_identity(3);
    assert!(cached_redis::flush_stats().await.is_err());
    let kept: String = common::raw().hget(&hash, "miss_us_sumsq").unwrap();
    assert_eq!(kept, "garbage");
    let _: () = common::raw().hdel(&hash, "miss_us_sumsq").unwrap();
    cached_redis::flush_stats().await.unwrap();

    // A counter that would pass 2^63 - 1 fails the whole flush of its
    // prefix, with nothing written: a write that stopped half-way would be
    // sent again whole by every later flush.
    let _: () = common::raw()
        .hset(&hash, "bytes_stored", i64::MAX.to_string())
        .unwrap();
    let misses: u64 = common::raw().hget(&hash, "misses").unwrap();
    slow_identity(4);
    for _ in 0..3 {
        assert!(cached_redis::flush_stats().await.is_err());
    }
    let after: u64 = common::raw().hget(&hash, "misses").unwrap();
    assert_eq!(after, misses, "counts written by a flush that failed");
    // Once the field is readable again, the counts go in once.
    let _: () = common::raw().hdel(&hash, "bytes_stored").unwrap();
    cached_redis::flush_stats().await.unwrap();
    let after: u64 = common::raw().hget(&hash, "misses").unwrap();
    assert_eq!(after, misses + 1);
}
