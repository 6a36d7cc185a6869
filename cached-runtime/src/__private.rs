//! What `#[cached]` expands to. Not a public API: everything here may change
//! in any release. Generated code reaches it as `::cached_redis::__private`
//! (or `<crate = "...">::__private`).
//!
//! The expansion of
//!
//! ```ignore
//! #[cached(ttl = 60, skip = "conn", prefix = "user")]
//! async fn user(conn: &Db, id: i64) -> Result<User, DbError> { body }
//! ```
//!
//! is, in outline,
//!
//! ```ignore
//! async fn user(conn: &Db, id: i64) -> Result<User, DbError> {
//!     static __CACHED_SITE: __private::CallSite = __private::CallSite::new(
//!         __private::SiteIdent { module_path: module_path!(), fn_name: "user", .. },
//!         __private::SiteOptions { ttl_secs: Some(60), prefix: Some("user"), ..__private::SiteOptions::DEFAULT },
//!     );
//!     let __cached_key = __private::build_key(&__CACHED_SITE, &(__private::key_arg(&id),), &[]);
//!     __private::call_async(&__CACHED_SITE, __cached_key, __private::ResultShape, async move { body }).await
//! }
//! ```

pub use crate::engine::{
    build_key, call_async, call_sync, force_refresh_async, force_refresh_sync, invalidate_async,
    invalidate_sync,
};
pub use crate::key::CacheKey;
pub use crate::site::{CallSite, SiteIdent, SiteOptions};

/// Entry points for property tests and fuzzers of the stored format: encode
/// a valid entry with a given codec, decode arbitrary bytes as a given type.
pub mod fuzz {
    pub use crate::fuzzing::{decode_entry, encode_entry, Codec, CODECS, HEADER_LEN};
}

/// Turns the stats counters on or off for the whole process. For
/// benchmarks that measure what counting costs; not for services.
pub fn set_stats_enabled(enabled: bool) {
    crate::stats::set_enabled(enabled);
}

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A type usable as a key argument. Exists for its error message: a
/// parameter whose type is not `Serialize` is reported by name.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key: it does not implement `serde::Serialize`",
    label = "this argument is part of the cache key",
    note = "derive or implement `serde::Serialize` for it, or leave it out of the key with `skip = \"name\"`"
)]
pub trait KeyArg: Serialize {}
impl<T: Serialize + ?Sized> KeyArg for T {}

/// Passes a key argument through, checking at compile time that it can be
/// serialized (the check carries the argument's span).
#[inline(always)]
pub fn key_arg<T: KeyArg + ?Sized>(value: &T) -> &T {
    value
}

/// A type usable as a cached value. Exists for its error message.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it must implement `serde::Serialize` and `serde::Deserialize`",
    label = "the cached value type",
    note = "derive `Serialize` and `Deserialize` for it (the `Err` of a `Result` needs neither)"
)]
pub trait CacheValue: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> CacheValue for T {}

/// How a function's return value maps to what is stored: a plain `T` is
/// always stored, `Option<T>` only when `Some`, `Result<T, E>` only when
/// `Ok`.
pub trait ReturnShape<R> {
    /// The stored type.
    type Value: CacheValue;
    /// The part of the return value to store, if it is to be stored.
    fn cacheable(ret: &R) -> Option<&Self::Value>;
    /// The return value a stored value stands for.
    fn rebuild(value: Self::Value) -> R;
    /// Whether `value` is a negative result, stored with the `cache_none`
    /// lifetime instead of the TTL.
    #[inline]
    fn is_negative(_value: &Self::Value) -> bool {
        false
    }
}

/// Shape of a function returning a plain `T`.
#[derive(Clone, Copy, Debug)]
pub struct PlainShape;
/// Shape of a function returning `Option<T>`.
#[derive(Clone, Copy, Debug)]
pub struct OptionShape;
/// Shape of a function returning `Option<T>` with `cache_none`: `None` is
/// stored too, with its own lifetime.
#[derive(Clone, Copy, Debug)]
pub struct CacheNoneShape;
/// Shape of a function returning `Result<T, E>`.
#[derive(Clone, Copy, Debug)]
pub struct ResultShape;

impl<T: CacheValue> ReturnShape<T> for PlainShape {
    type Value = T;
    #[inline]
    fn cacheable(ret: &T) -> Option<&T> {
        Some(ret)
    }
    #[inline]
    fn rebuild(value: T) -> T {
        value
    }
}

impl<T: CacheValue> ReturnShape<Option<T>> for OptionShape {
    type Value = T;
    #[inline]
    fn cacheable(ret: &Option<T>) -> Option<&T> {
        ret.as_ref()
    }
    #[inline]
    fn rebuild(value: T) -> Option<T> {
        Some(value)
    }
}

impl<T: CacheValue, E> ReturnShape<Result<T, E>> for ResultShape {
    type Value = T;
    #[inline]
    fn cacheable(ret: &Result<T, E>) -> Option<&T> {
        ret.as_ref().ok()
    }
    #[inline]
    fn rebuild(value: T) -> Result<T, E> {
        Ok(value)
    }
}

impl<T: CacheValue> ReturnShape<Option<T>> for CacheNoneShape {
    type Value = Option<T>;
    #[inline]
    fn cacheable(ret: &Option<T>) -> Option<&Option<T>> {
        Some(ret)
    }
    #[inline]
    fn rebuild(value: Option<T>) -> Option<T> {
        value
    }
    #[inline]
    fn is_negative(value: &Option<T>) -> bool {
        value.is_none()
    }
}
