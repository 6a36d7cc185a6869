//! `CACHED_REDIS_DISABLE=1`: every call runs the function and counts a skip.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use cached_redis::cached;

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "disabled")]
fn disabled(x: u32) -> u32 {
    CALLS.fetch_add(1, SeqCst);
    x
}

#[test]
fn the_disable_variable_turns_caching_off() {
    // This test binary is its own process: setting the variable here affects
    // only it, before the first cached call reads the environment.
    // SAFETY: no other thread of this process reads the environment yet.
    unsafe {
        std::env::set_var("CACHED_REDIS_DISABLE", "1");
        std::env::set_var("CACHED_REDIS_URL", "redis://127.0.0.1:1/0");
    }
    for _ in 0..3 {
        assert_eq!(disabled(9), 9);
    }
    assert_eq!(CALLS.load(SeqCst), 3);
    let s = cached_redis::local_stats("disabled").unwrap();
    assert_eq!((s.skips, s.hits, s.misses, s.errors), (3, 0, 0, 0));
    assert!(
        !disabled_invalidate(9).unwrap(),
        "nothing stored, nothing removed"
    );
}
