//! A holder dropped while its lock command is still on its way: the
//! release it starts must reach Redis after that command, or the lock is
//! taken after it was released and stays for its whole lease.
//!
//! The lock command (`SET NX`, in a script) goes on the caller runtime's
//! connection. The release of a dropped holder goes from the crate's own
//! runtime; sent only on that runtime's connection, it could overtake the
//! lock command. Here a proxy in front of Redis holds the first request
//! that names the lock back until the caller is dropped and the release
//! on the crate's own connection has reached Redis (finding no lock); the
//! lock must then be gone long before its lease ends.
//!
//! Its own test binary and Redis server: the library is configured once
//! per process, here through the proxy.

mod common;

use std::time::{Duration, Instant};

use cached_redis::cached;
use common::holding_proxy::HoldingProxy;

use common::holding_proxy::PATIENCE;

#[cached(prefix = "lro_quick", lock = true)]
async fn quick(x: u32) -> u32 {
    x
}

#[cached(prefix = "lro_slow", lock = true)]
async fn slow(x: u32) -> u32 {
    tokio::time::sleep(Duration::from_secs(60)).await;
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_command_on_its_way_when_its_holder_is_dropped_is_still_released() {
    let server = common::RedisServer::start();
    let proxy = HoldingProxy::start(server.port);
    proxy.init_library("lock_release_order");
    let lock_key = format!("{}:lock", slow_cache_key(1).unwrap());
    // A miss that takes and releases a lock: the scripts are loaded, so
    // the held lock command needs no second round trip (a `NOSCRIPT` and
    // the script sent again, which a dropped caller never sends).
    assert_eq!(quick(1).await, 1);

    // What happens to the lock, as Redis tells it: taken ("set"), then
    // deleted ("del") or left to its lease ("expired").
    let mut watch = server.connect();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Kg$x")
        .query::<()>(&mut watch)
        .unwrap();
    let mut events = watch.as_pubsub();
    events
        .subscribe(format!("__keyspace@0__:{lock_key}"))
        .unwrap();
    events.set_read_timeout(Some(PATIENCE)).unwrap();

    proxy.hold_first(&lock_key);
    let call = tokio::spawn(slow(1));
    proxy.until_holding();
    // Dropped with its lock command sent and held on the way: it starts
    // the release on the way out.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    // The release sent on the crate's own connection gets to Redis first,
    // and finds no lock yet: let it be answered before the lock command
    // goes on.
    proxy.until_passed_beside();
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.let_go();

    // The lock command gets through now. With nothing behind it, the lock
    // lives for its lease (5 s for a body never measured).
    let taken = Instant::now();
    let mut seen = Vec::new();
    while !seen.iter().any(|e| e == "del" || e == "expired") {
        let Ok(message) = events.get_message() else {
            break;
        };
        seen.push(message.get_payload::<String>().unwrap());
    }
    let gone_after = taken.elapsed();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("set"),
        "the lock command never reached Redis: {seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("del"),
        "the lock was taken after its holder's release had gone, and was \
         left to its lease (events: {seen:?}, {gone_after:?} after the hold)"
    );
}
