//! The expansion is clean under strict lints: this file is a trybuild pass
//! test and is also compiled into `tests/ui.rs`, where
//! `cargo clippy --all-targets -- -D warnings` checks it.
#![deny(warnings, unused_qualifications)]
#![warn(clippy::pedantic)]

use std::collections::BTreeMap;
use std::fmt::Debug;

use cached_redis::cached;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A crate-local `Result` alias shadowing the prelude's: the expansion must
/// not depend on the name `Result`.
type Result<T, E = Failure> = std::result::Result<T, E>;

/// An error type with no traits.
#[derive(Debug)]
pub struct Failure;

/// A value type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    x: i32,
    y: i32,
}

/// Skipped argument type, not `Serialize`.
pub struct Conn {
    queries: u32,
}

#[cached(
    ttl = 300,
    prefix = "lints_all",
    skip = "conn",
    refresh = true,
    version = "3"
)]
fn all_options(conn: &mut Conn, id: i64) -> Option<Point> {
    conn.queries += 1;
    let x = i32::try_from(id).ok()?;
    Some(Point { x, y: 0 })
}

#[cached(local = 16, prefix = "lints_local")]
fn held(id: i64) -> Option<Point> {
    let x = i32::try_from(id).ok()?;
    Some(Point { x, y: 1 })
}

#[cached]
fn plain(mut a: u32, b: String) -> u32 {
    a += 1;
    a + u32::try_from(b.len()).unwrap_or(0)
}

#[cached(ttl = 1)]
fn result_alias(text: &str) -> Result<u32> {
    text.parse().map_err(|_| Failure)
}

#[cached]
fn io_result(path: &str) -> std::io::Result<Vec<String>> {
    Ok(vec![path.to_owned()])
}

#[cached]
fn nothing(x: u8) {
    let _ = x;
}

#[cached(skip = "log")]
fn impl_args(log: &impl Fn(&str), key: impl Serialize + Debug) -> String {
    log("called");
    format!("{key:?}")
}

#[cached]
fn generic<T, U: Serialize, const N: usize>(values: &[T], extra: &U) -> usize
where
    T: Serialize + Clone,
{
    let _ = extra;
    values.len() + N
}

#[cached]
fn maps(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum()
}

#[cached]
#[expect(clippy::too_many_arguments)]
fn many(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) -> u32 {
    [a, b, c, d, e, f, g, h].iter().map(|&v| u32::from(v)).sum()
}

#[cached]
#[cfg(not(any()))]
fn with_cfg(x: u8) -> u8 {
    x
}

/// # Safety
/// None.
#[cached]
unsafe fn unsafe_fn(x: u8) -> u8 {
    x
}

#[cached(ttl = 10, skip = "conn")]
async fn async_fn(conn: &mut Conn, id: u64, name: &str) -> Result<String> {
    conn.queries += 1;
    tokio::task::yield_now().await;
    if id == 0 {
        return Err(Failure);
    }
    Ok(format!("{name}{id}"))
}

#[cached]
async fn async_generic<T: Serialize + Send + Sync>(value: &T) -> Option<u8> {
    let _ = value;
    Some(1)
}

#[cached]
fn mixed<T: Serialize>(explicit: T, anonymous: impl Serialize) -> u8 {
    let _ = (explicit, anonymous);
    1
}

#[cached(skip = "counter")]
fn mut_ref_key(counter: &mut u32) -> u32 {
    *counter += 1;
    *counter
}

/// A generic type with a cached method: `Self` enters the key.
pub struct Repo<T>(std::marker::PhantomData<T>);

impl<T: Serialize + DeserializeOwned + Default> Repo<T> {
    #[cached]
    fn load(&self, id: u32) -> T {
        let _ = id;
        T::default()
    }
}

impl Point {
    #[cached]
    fn norm1(&self, scale: i32) -> i32 {
        (self.x.abs() + self.y.abs()) * scale
    }

    #[cached(skip = "conn")]
    fn moved(&mut self, conn: &Conn, dx: i32) -> Point {
        let _ = conn.queries;
        self.x += dx;
        self.clone()
    }

    #[cached]
    fn consume(self) -> i32 {
        self.x
    }

    #[cached]
    fn shifted(dx: i32) -> Self {
        Point { x: dx, y: 0 }
    }

    #[cached]
    async fn async_method(&self, factor: i32) -> Result<i32, String> {
        Ok(self.x * factor)
    }

    #[cached]
    fn generic_method<K: Serialize>(&self, key: K) -> bool {
        let _ = key;
        self.x > 0
    }

    /// A deprecated method: its key names it, in its companions too.
    #[cached]
    #[deprecated = "use `norm1`"]
    fn old_norm(&self, scale: i32) -> i32 {
        self.x * scale
    }

    /// `impl Trait` arguments of a method, in the key and skipped.
    #[cached(skip = "log")]
    fn impl_trait_method<T: Serialize>(&self, log: impl Fn(&str), a: T, b: impl Serialize) -> i32 {
        log("impl_trait_method");
        let _ = (a, b);
        self.x
    }
}

/// A trait's default method with an `impl Trait` argument.
trait Finder {
    #[cached(prefix = "lints_trait_impl_arg")]
    fn find(&self, key: impl Serialize) -> u32 {
        let _ = key;
        2
    }
}

impl Finder for Point {}

/// `expect` written for the function as the user wrote it: the expansion
/// may no longer trigger the lint, and must not fail the expectation.
#[cached(prefix = "lints_expect_value")]
#[expect(clippy::needless_pass_by_value)]
fn by_value(s: String) -> usize {
    s.len()
}

#[cached(prefix = "lints_expect_wraps")]
#[expect(clippy::unnecessary_wraps)]
fn wraps(x: u32) -> Option<u32> {
    Some(x)
}

#[cached(prefix = "lints_expect_async")]
#[expect(clippy::unused_async)]
async fn no_await(x: u32) -> u32 {
    x
}

/// A `_`-prefixed key argument: the key reads it, the user does not.
#[cached(prefix = "lints_underscore")]
fn underscore(_ctx: u32, id: u32) -> u32 {
    id
}

/// An error that borrows from an argument: errors are never stored.
#[derive(Debug)]
pub struct ParseFailure<'a>(pub &'a str);

#[cached(prefix = "lints_borrowed_err")]
fn parse<'a>(s: &'a str) -> Result<u32, ParseFailure<'a>> {
    s.parse().map_err(|_| ParseFailure(s))
}

#[cached(prefix = "lints_borrowed_err_async")]
async fn parse_async<'a>(s: &'a str) -> Result<u32, &'a str> {
    s.parse().map_err(|_| s)
}

/// A module without the prelude: the expansion names everything by path.
mod no_prelude {
    #![no_implicit_prelude]

    #[::cached_redis::cached(prefix = "lints_no_prelude")]
    pub fn doubled(x: u32) -> u32 {
        x * 2
    }
}

/// Runs everything once, companions included.
/// A deprecated function: its companions are deprecated too, and the
/// expansion's own call of it (in `_refresh`) warns no one.
#[deprecated(note = "use `plain`")]
#[cached(prefix = "lints_deprecated")]
pub fn superseded(x: u32) -> u32 {
    x + 1
}

/// Methods with `impl Trait` arguments, a trait's default method and a
/// deprecated method, companions included.
fn more_methods(p: &Point) {
    assert_eq!(p.impl_trait_method(|_| {}, 1_u8, "b"), p.x);
    assert_eq!(p.find(3_u8), 2);
    #[allow(deprecated)]
    {
        assert_eq!(p.old_norm(2), p.x * 2);
        let _ = Point::old_norm_cache_key(2);
        let _ = Point::old_norm_invalidate(2);
    }
}

pub fn main() {
    #[allow(deprecated)]
    {
        assert_eq!(superseded(1), 2);
        assert_eq!(superseded_refresh(1), 2);
    }
    let mut conn = Conn { queries: 0 };
    let _ = all_options(&mut conn, 1);
    let _ = all_options_cache_key(1);
    let _ = all_options_invalidate(1);
    let _ = all_options_refresh(&mut conn, 1);
    assert_eq!(held(2), Some(Point { x: 2, y: 1 }));
    assert_eq!(held(2), Some(Point { x: 2, y: 1 }));
    let _ = held_invalidate(2);
    assert_eq!(plain(1, "ab".to_owned()), 4);
    let _ = plain_refresh(1, "ab".to_owned());
    assert_eq!(result_alias("5").ok(), Some(5));
    assert!(result_alias_refresh("x").is_err());
    let _ = result_alias_cache_key("5");
    assert_eq!(io_result("p").unwrap(), ["p"]);
    nothing(1);
    nothing_refresh(1);
    assert_eq!(impl_args(&|_| {}, 5_u8), "5");
    let _ = impl_args_refresh(&|_| {}, 5_u8);
    assert_ne!(
        impl_args_cache_key(5_u8).unwrap(),
        impl_args_cache_key(5_u32).unwrap()
    );
    assert_eq!(generic::<u8, u8, 2>(&[1, 2], &0), 4);
    assert_eq!(generic_refresh::<i64, &str, 3>(&[1, 2, 3], &"x"), 6);
    assert_ne!(
        generic_cache_key::<u8, u8, 1>(&[1], &0).unwrap(),
        generic_cache_key::<u16, u8, 1>(&[1], &0).unwrap()
    );
    let _ = maps(&BTreeMap::from([("a".to_owned(), 1.5)]));
    assert_eq!(many(1, 1, 1, 1, 1, 1, 1, 1), 8);
    let _ = many_refresh(1, 1, 1, 1, 1, 1, 1, 1);
    assert_eq!(with_cfg(2), with_cfg_refresh(2));
    // SAFETY: no requirements.
    assert_eq!(unsafe { unsafe_fn(3) }, 3);
    // SAFETY: no requirements.
    let _ = unsafe { unsafe_fn_refresh(3) };

    assert_eq!(by_value("abc".to_owned()), 3);
    assert_eq!(wraps(2), Some(2));
    assert_eq!(underscore(1, 2), 2);
    assert_eq!(underscore_refresh(1, 2), 2);
    assert_eq!(parse("7").ok(), Some(7));
    assert_eq!(parse("x").unwrap_err().0, "x");
    assert_eq!(no_prelude::doubled(2), 4);
    assert_eq!(mixed(1_u8, 2_u16), 1);
    assert_eq!(mixed_refresh(1_u8, "x"), 1);
    let mut counter = 0;
    let _ = mut_ref_key(&mut counter);
    let _ = mut_ref_key_refresh(&mut counter);
    let repo = Repo::<u8>(std::marker::PhantomData);
    assert_eq!(repo.load(1), 0);
    assert_eq!(repo.load_refresh(1), 0);
    assert_ne!(
        Repo::<u8>::load_cache_key(1).unwrap(),
        Repo::<u16>::load_cache_key(1).unwrap()
    );

    let mut p = Point { x: 1, y: -2 };
    assert_eq!(p.norm1(2), 6);
    assert_eq!(p.norm1_refresh(2), 6);
    let _ = Point::norm1_cache_key(2);
    let _ = Point::norm1_invalidate(2);
    let _ = p.moved(&conn, 1);
    let _ = p.moved_refresh(&conn, 1);
    let _ = Point::moved_cache_key(1);
    let _ = p.clone().consume();
    let _ = p.clone().consume_refresh();
    let _ = Point::consume_cache_key();
    assert_eq!(Point::shifted(4).x, 4);
    let _ = Point::shifted_refresh(4);
    assert!(p.generic_method("k"));
    more_methods(&p);
    let _ = p.generic_method_refresh(1_u8);
    let _ = Point::generic_method_cache_key::<u8>(1);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(async_fn(&mut conn, 2, "n").await.unwrap(), "n2");
        assert!(async_fn(&mut conn, 0, "n").await.is_err());
        let _ = async_fn_refresh(&mut conn, 2, "n").await;
        let _ = async_fn_invalidate(2, "n").await;
        let _ = async_fn_cache_key(2, "n");
        assert_eq!(async_generic(&1_u8).await, Some(1));
        let _ = async_generic_refresh(&1_u8).await;
        let _ = async_generic_invalidate(&1_u8).await;
        assert_eq!(no_await(3).await, 3);
        assert_eq!(parse_async("8").await, Ok(8));
        assert_eq!(parse_async("y").await, Err("y"));
        assert!(p.async_method(2).await.is_ok());
        let _ = p.async_method_refresh(2).await;
        let _ = Point::async_method_invalidate(2).await;
    });
}
