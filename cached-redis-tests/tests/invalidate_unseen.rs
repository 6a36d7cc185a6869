//! `invalidate_args` in a process that never called the function: a worker
//! that only consumes database events knows every plain cached function of
//! the program from the start.

mod common;

use cached_redis::cached;
use redis::Commands;

const WORKER_ENV: &str = "CACHED_REDIS_UNSEEN_WORKER_NS";

#[cached(prefix = "unseen_user")]
async fn user_name(id: u64) -> String {
    format!("user {id}")
}

/// A generic function: its keys hold the type names a call carries.
#[cached(prefix = "unseen_generic")]
async fn generic_name<T: serde::Serialize + std::fmt::Debug + Send + Sync>(id: T) -> String {
    format!("{id:?}")
}

/// The worker: invalidates by prefix and arguments, having called nothing,
/// and prints what each call answered.
#[test]
#[ignore = "spawned by a_worker_that_never_called_the_function_invalidates_its_entry"]
fn worker() {
    let Ok(namespace) = std::env::var(WORKER_ENV) else {
        return;
    };
    common::init_in(&namespace);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let args = serde_json::json!([42]);
    let plain = rt.block_on(cached_redis::invalidate_args("unseen_user", &args));
    let generic = rt.block_on(cached_redis::invalidate_args("unseen_generic", &args));
    println!("PLAIN {plain:?}");
    println!("GENERIC {}", generic.is_err());
}

#[tokio::test]
async fn a_worker_that_never_called_the_function_invalidates_its_entry() {
    let namespace = common::namespace("unseen");
    common::init_in(&namespace);
    assert_eq!(user_name(42).await, "user 42");
    assert_eq!(generic_name(42u64).await, "42");
    let key = user_name_cache_key(42).unwrap();
    let generic_key = generic_name_cache_key(42u64).unwrap();
    let mut raw = common::raw();
    let stored = |raw: &mut redis::Connection, key: &str| raw.exists::<_, bool>(key).unwrap();
    assert!(stored(&mut raw, &key) && stored(&mut raw, &generic_key));

    let stdout = common::run_child_test("worker", &[(WORKER_ENV, &namespace)]);
    assert!(
        stdout.contains("PLAIN Ok(true)"),
        "the worker removed the entry: {stdout}"
    );
    assert!(!stored(&mut raw, &key), "the entry is gone");
    // A generic function's keys need the type names of a call, which the
    // worker never made: it says so rather than removing nothing quietly.
    assert!(stdout.contains("GENERIC true"), "{stdout}");
    assert!(stored(&mut raw, &generic_key));
}
