//! Free functions, sync and async, with every return shape and every
//! companion; results are checked against a call counter.

use std::num::ParseIntError;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cached_redis::cached;
use serde::{Deserialize, Serialize};

static CALLS: AtomicU32 = AtomicU32::new(0);

fn count() {
    CALLS.fetch_add(1, SeqCst);
}

fn calls() -> u32 {
    CALLS.load(SeqCst)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: i64,
    name: String,
}

/// Not `Serialize`: skipped.
struct Db;

#[cached(ttl = 60, skip = "db", prefix = "ui_pass_user")]
fn user(db: &Db, id: i64) -> Option<User> {
    let _ = db;
    count();
    (id > 0).then(|| User {
        id,
        name: format!("user{id}"),
    })
}

#[cached(ttl = 60)]
fn parse(text: String) -> Result<u32, ParseIntError> {
    count();
    let n: u32 = text.trim().parse()?;
    if n == 0 {
        return Ok(100);
    }
    Ok(n)
}

#[cached]
fn square(mut n: u64) -> u64 {
    count();
    n *= n;
    n
}

#[cached(refresh = true, version = "2")]
fn unit(flag: bool) {
    if flag {
        return;
    }
    count();
}

#[cached(skip = "log")]
fn with_impl_arg(log: impl Fn(&str), id: u8) -> String {
    log("computing");
    id.to_string()
}

/// # Safety
/// None needed; checks that `unsafe fn` is kept.
#[cached]
unsafe fn raw(p: usize) -> usize {
    p + 1
}

#[cached(ttl = 5, prefix = "ui_pass_fetch")]
async fn fetch(id: u32, suffix: &str) -> Result<String, std::io::Error> {
    count();
    tokio::task::yield_now().await;
    if id == 0 {
        return Err(std::io::Error::other("zero"));
    }
    let text = format!("{id}{suffix}");
    Ok(text)
}

#[cached]
async fn no_args() -> Vec<u8> {
    count();
    vec![1, 2, 3]
}

fn main() {
    // A Redis given by the environment may hold entries of an earlier run.
    user_invalidate(7).unwrap();
    parse_invalidate("12".to_owned()).unwrap();
    square_invalidate(9).unwrap();

    let db = Db;
    let before = calls();
    assert_eq!(user(&db, 7).unwrap().name, "user7");
    assert_eq!(user(&db, 7).unwrap().name, "user7");
    assert_eq!(calls() - before, 1, "the second call is a hit");
    assert_eq!(user(&db, -1), None);
    assert_eq!(user(&db, -1), None);
    assert_eq!(calls() - before, 3, "None is not cached");

    let key = user_cache_key(7).unwrap();
    assert!(key.contains(":ui_pass_user:"), "{key}");
    assert_ne!(key, user_cache_key(8).unwrap());
    assert!(user_invalidate(7).unwrap());
    assert!(!user_invalidate(7).unwrap());
    assert_eq!(user_refresh(&db, 7).unwrap().id, 7);
    assert_eq!(calls() - before, 4);
    user(&db, 7);
    assert_eq!(calls() - before, 4, "refresh stored the value");

    assert_eq!(parse("12".to_owned()), Ok(12));
    assert_eq!(parse("12".to_owned()), Ok(12));
    assert_eq!(parse("0".to_owned()), Ok(100));
    assert!(parse("x".to_owned()).is_err());
    assert_eq!(square(9), 81);
    assert_eq!(square(9), 81);
    assert_eq!(square_refresh(9), 81);
    unit(true);
    unit(false);
    assert!(unit_cache_key(true).is_ok());
    assert_eq!(with_impl_arg(|_| {}, 3), "3");
    assert_eq!(
        with_impl_arg_cache_key(3).unwrap(),
        with_impl_arg_cache_key(3).unwrap()
    );
    // SAFETY: `raw` has no requirements.
    assert_eq!(unsafe { raw(1) }, 2);
    assert_eq!(unsafe { raw_refresh(1) }, 2);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        fetch_invalidate(1, "a").await.unwrap();
        let before = calls();
        assert_eq!(fetch(1, "a").await.unwrap(), "1a");
        assert_eq!(fetch(1, "a").await.unwrap(), "1a");
        assert_eq!(calls() - before, 1);
        assert!(fetch(0, "a").await.is_err());
        assert!(fetch(0, "a").await.is_err());
        assert_eq!(calls() - before, 3, "Err is not cached");
        assert!(fetch_cache_key(1, "a").unwrap().contains(":ui_pass_fetch:"));
        assert_eq!(fetch_refresh(1, "a").await.unwrap(), "1a");
        assert!(fetch_invalidate(1, "a").await.unwrap());
        assert_eq!(no_args().await, [1, 2, 3]);
        assert_eq!(no_args_refresh().await, [1, 2, 3]);
        no_args_invalidate().await.unwrap();
        assert!(no_args_cache_key().is_ok());
    });
}
