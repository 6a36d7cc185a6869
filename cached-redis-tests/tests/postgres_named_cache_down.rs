//! The PostgreSQL listener with a named cache whose Redis is down (feature
//! `postgres`), against a real PostgreSQL (`CACHED_REDIS_TEST_PG`) and the
//! Redis under test for the default cache.
//!
//! A prefix-wide invalidation walks every cache, so the dead one makes it
//! fail, and it is owed until that Redis is back. That must hold up no
//! other prefix: an invalidation of a call of the default cache still
//! removes its entry at once. A binary of its own, because named caches
//! are installed for the whole process: in `postgres_notify` this one
//! would fail every other test's prefix walk.
#![cfg(feature = "postgres")]

mod common;

use std::time::{Duration, Instant};

use cached_redis::cached;
use cached_redis::postgres::tokio_postgres::{self, NoTls};
use cached_redis::postgres::{listen, ListenerHandle};

/// A bound for a loaded machine, not a speed claim.
const WITHIN: Duration = Duration::from_secs(10);

#[cached(ttl = 600, prefix = "pgdown_user")]
async fn user(id: i64) -> String {
    format!("user {id}")
}

#[cached(ttl = 600, prefix = "pgdown_flag", cache = "gone")]
async fn flag(id: i64) -> bool {
    id % 2 == 0
}

fn pg_config() -> String {
    match std::env::var("CACHED_REDIS_TEST_PG") {
        Ok(config) if !config.is_empty() => config,
        _ => panic!(
            "CACHED_REDIS_TEST_PG is not set: run the tests with scripts/test.sh, \
             which starts a throwaway PostgreSQL and sets it"
        ),
    }
}

/// Waits until `done` holds, failing the test after [`WITHIN`].
async fn until(what: &str, listener: &ListenerHandle, mut done: impl FnMut() -> bool) {
    let since = Instant::now();
    while !done() {
        assert!(
            since.elapsed() < WITHIN,
            "{what}: not within {WITHIN:?}; {listener:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_cache_on_a_dead_redis_holds_up_no_other_prefix() {
    let pg = pg_config();
    common::init_once("postgres_named_cache_down");
    // Nothing listens on a fresh free port: every call to it is refused.
    cached_redis::init_named(
        "gone",
        cached_redis::Config::builder()
            .redis_url(format!("redis://127.0.0.1:{}/0", common::free_port()))
            .namespace(common::namespace("postgres_named_cache_down"))
            .timeout(Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .unwrap();
    let (client, connection) = tokio_postgres::connect(&pg, NoTls).await.unwrap();
    tokio::spawn(connection);
    let channel = format!("cr_{}_named_down", std::process::id());
    let notify = |payload: String| {
        let (client, channel) = (&client, &channel);
        async move {
            client
                .execute("SELECT pg_notify($1, $2)", &[channel, &payload])
                .await
                .unwrap();
        }
    };
    let listener = listen(&pg, &channel).unwrap();
    assert!(listener.wait_listening().await);

    assert_eq!(user(1).await, "user 1");
    assert!(flag(2).await, "the body answers with its cache down");
    let key = user_cache_key(1).unwrap();
    let mut conn = common::raw();
    let exists = move |conn: &mut redis::Connection| {
        redis::cmd("EXISTS").arg(&key).query::<i64>(conn).unwrap() == 1
    };
    assert!(exists(&mut conn), "cached in the default cache");

    // The walk of `pgdown_flag` reaches the dead cache: owed.
    notify("pgdown_flag".to_owned()).await;
    until(
        "the prefix refused by the dead cache owed",
        &listener,
        || listener.owed_prefixes() == 1,
    )
    .await;

    // Another prefix's call is not held up behind it.
    notify(r#"{"prefix":"pgdown_user","args":[1]}"#.to_owned()).await;
    until("the default cache's entry removed", &listener, || {
        !exists(&mut conn)
    })
    .await;
    assert_eq!(
        listener.owed_prefixes(),
        1,
        "only the prefix of the dead cache is owed: {listener:?}"
    );
}
