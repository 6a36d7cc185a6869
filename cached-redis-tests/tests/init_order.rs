//! The process-wide operations before `init`: `invalidate_prefix`,
//! `flush_stats` and the stats readers reach what the environment
//! configures, and leave `init` free to install the service's own
//! configuration (they used to start the default cache from the
//! environment, and the `init` that followed was refused).

mod common;

use cached_redis::cached;
use redis::Commands;

#[cached(prefix = "io_value")]
async fn value(x: u32) -> u32 {
    x + 1
}

#[tokio::test]
async fn process_wide_operations_before_init_leave_init_free() {
    // What the environment names (this file's only test sets it).
    let env_ns = common::namespace("init_order_env");
    std::env::set_var("CACHED_REDIS_URL", common::redis_url());
    std::env::set_var("CACHED_REDIS_NAMESPACE", &env_ns);
    let stale = format!("{env_ns}:io_value:AAAAAAAAAAAAAAAAAAAAAA");
    let _: () = common::raw().set(&stale, 1).unwrap();

    assert_eq!(
        cached_redis::invalidate_prefix("io_value").await.unwrap(),
        1,
        "the environment's Redis and namespace are reached"
    );
    assert!(!common::raw().exists::<_, bool>(&stale).unwrap());
    cached_redis::flush_stats().await.unwrap();
    cached_redis::report::read_all().await.unwrap();

    let ns = common::namespace("init_order");
    cached_redis::init(
        cached_redis::Config::builder()
            .redis_url(common::redis_url())
            .namespace(&ns)
            .build()
            .unwrap(),
    )
    .expect("init after the process-wide operations");
    assert_eq!(value(1).await, 2);
    let key = value_cache_key(1).unwrap();
    assert!(
        key.starts_with(&format!("{ns}:")),
        "{key} is not in the namespace init gave"
    );
    assert!(common::raw().exists::<_, bool>(key.as_str()).unwrap());
}
