//! The `returns` and `codec` options, and `&mut` parameters that are
//! skipped: accepted, and the declared shape is what is cached.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cached_redis::cached;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiError;

type ApiResult<T> = Result<T, ApiError>;
type Maybe<T> = Option<T>;

static RUNS: AtomicU32 = AtomicU32::new(0);

#[cached(returns = "result")]
fn user_name(id: u32) -> ApiResult<String> {
    RUNS.fetch_add(1, SeqCst);
    if id == 0 {
        Err(ApiError)
    } else {
        Ok(id.to_string())
    }
}

#[cached(returns = "option", cache_none = 30)]
fn nickname(id: u32) -> Maybe<String> {
    (id > 0).then(|| format!("n{id}"))
}

// The whole value, `Err` included, on purpose.
#[cached(returns = "plain", codec = "json")]
fn checked(id: u32) -> ApiResult<u32> {
    Ok(id)
}

pub struct Conn;

#[cached(skip = "conn", codec = "bincode")]
fn with_conn(conn: &mut Conn, id: u32) -> u32 {
    let _ = conn;
    id
}

pub struct Counter(u32);

impl Counter {
    // `&mut self` is never in the key: on a hit, `self` is not changed.
    #[cached]
    fn next(&mut self, step: u32) -> u32 {
        self.0 += step;
        self.0
    }
}

/// An alias whose name says `Result` but which is an `Option`: `returns`
/// is what counts.
mod odd {
    pub type Result<T> = Option<T>;
}

#[cached(returns = "option")]
fn misnamed(id: u32) -> odd::Result<u32> {
    (id > 0).then_some(id)
}

/// A parameter attribute that only adds a lint level stays.
#[cached]
fn linted(#[cfg_attr(debug_assertions, allow(unused_variables))] id: u32) -> u32 {
    7
}

fn main() {
    cached_redis::init(cached_redis::Config::builder().build().unwrap()).unwrap();
    assert_eq!((misnamed(0), misnamed(3)), (None, Some(3)));
    assert_eq!(linted(1), 7);
    assert_eq!(user_name(0), Err(ApiError));
    assert_eq!(user_name(0), Err(ApiError));
    assert_eq!(RUNS.load(SeqCst), 2, "an Err is never cached");
    assert_eq!(user_name(2).unwrap(), "2");
    assert_eq!(user_name(2).unwrap(), "2");
    assert_eq!(RUNS.load(SeqCst), 3);
    assert_eq!(nickname(0), None);
    assert_eq!(nickname(3).as_deref(), Some("n3"));
    assert_eq!(checked(4), Ok(4));
    assert_eq!(with_conn(&mut Conn, 5), 5);
    let mut c = Counter(0);
    assert_eq!(c.next(1), 1);
    assert_eq!(c.next(1), 1, "a hit");
    assert_eq!(c.0, 1, "and the hit did not change self");
}
