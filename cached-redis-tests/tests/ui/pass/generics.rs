//! Generic functions: the concrete type names enter the key.

use std::fmt::Display;

use cached_redis::cached;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[cached]
fn echo<T: Serialize + DeserializeOwned + Clone>(value: T) -> T {
    value.clone()
}

#[cached]
fn describe<T>(value: &T) -> String
where
    T: Serialize + Display + ?Sized,
{
    format!("<{value}>")
}

#[cached]
fn default_of<T: Default + Serialize + DeserializeOwned>() -> T {
    T::default()
}

#[cached]
fn sized<const N: usize>(bytes: [u8; 4]) -> usize {
    bytes.len() * N
}

#[cached(skip = "log")]
fn with_impl(log: impl Fn(&str), key: impl Serialize) -> bool {
    log("computing");
    let _ = key;
    true
}

fn main() {
    assert_eq!(echo(5_u8), 5);
    assert_eq!(echo(String::from("x")), "x");
    assert_ne!(
        echo_cache_key(1_u8).unwrap(),
        echo_cache_key(1_u16).unwrap()
    );
    assert_eq!(echo_refresh(7_i32), 7);
    assert!(echo_invalidate(7_i32).is_ok());

    assert_eq!(describe("hi"), "<hi>");
    assert_eq!(describe(&3.5), "<3.5>");
    assert_ne!(
        describe_cache_key("1").unwrap(),
        describe_cache_key(&1).unwrap()
    );

    assert_eq!(default_of::<u32>(), 0);
    assert_eq!(default_of_refresh::<String>(), "");
    assert_ne!(
        default_of_cache_key::<u32>().unwrap(),
        default_of_cache_key::<u64>().unwrap()
    );

    assert_eq!(sized::<2>([0; 4]), 8);
    assert_eq!(sized_refresh::<3>([0; 4]), 12);

    assert!(with_impl(|_| {}, 1_u8));
    assert_ne!(
        with_impl_cache_key(1_u8).unwrap(),
        with_impl_cache_key(1_i8).unwrap()
    );
}
