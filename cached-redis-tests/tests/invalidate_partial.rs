//! `invalidate_args` over a prefix whose functions live in two caches, one
//! of them down: the healthy cache's entry is removed all the same.

mod common;

use cached_redis::{cached, Config};
use redis::Commands;

#[cached(prefix = "ip_user")]
async fn user_in_default(id: u32) -> u32 {
    id
}

#[cached(prefix = "ip_user", cache = "down")]
async fn user_in_down(id: u32) -> u32 {
    id
}

#[tokio::test]
async fn a_cache_that_is_down_does_not_keep_the_others_entries() {
    common::init_once("invalidate_partial");
    // Its namespace sorts before the default one's (`t-...`): its key is
    // tried first.
    let dead = format!("redis://127.0.0.1:{}/0", common::free_port());
    cached_redis::init_named(
        "down",
        Config::builder()
            .redis_url(dead)
            .namespace(format!("a-{}", std::process::id()))
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(user_in_default(1).await, 1);
    assert_eq!(user_in_down(1).await, 1);
    let key = user_in_default_cache_key(1).unwrap();
    let exists: bool = common::raw().exists(&key).unwrap();
    assert!(exists, "the healthy cache stored its entry");

    let outcome = cached_redis::invalidate_args("ip_user", &serde_json::json!([1])).await;
    assert!(
        matches!(outcome, Err(cached_redis::Error::Store(_))),
        "the cache that is down is reported: {outcome:?}"
    );
    let exists: bool = common::raw().exists(&key).unwrap();
    assert!(!exists, "the healthy cache's entry is still readable");
}
