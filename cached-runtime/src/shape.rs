//! How a function's return value maps to what is stored (`ReturnShape` and
//! its shapes), and the marker traits whose only job is a clear compile
//! error at the user's token (`KeyArg`, `CacheValue`, `LocalValue`,
//! `ShapeDeclared`). Reached by generated code through `__private`.

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

/// A value type a `local` level can hold: returned by clone, shared
/// between threads. Exists for its error message.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be held by a `local` level: it must be `Clone + Send + Sync + 'static`",
    label = "the cached value type",
    note = "derive `Clone` for it (wrap it in `std::sync::Arc` if cloning is expensive), or drop the `local` option"
)]
pub trait LocalValue: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> LocalValue for T {}

/// How a function's return value maps to what is stored: a plain `T` is
/// always stored, `Option<T>` only when `Some`, `Result<T, E>` only when
/// `Ok`.
#[diagnostic::on_unimplemented(
    message = "`{R}` does not have the return shape `#[cached]` was told (`{Self}`)",
    label = "the function's return type",
    note = "`returns = \"result\"` needs a `Result<T, E>` (or an alias of one), `returns = \"option\"` an `Option<T>`; `returns = \"plain\"` caches any value whole"
)]
pub trait ReturnShape<R> {
    /// The stored type. Its [`CacheValue`] bound is on the entry points,
    /// not here, so that a value type that is not one gets that trait's
    /// message at its own token rather than a bare `Serialize` error.
    type Value;
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
    /// Whether `ret` says there is nothing (an `Option`'s `None` that is
    /// not cached), as opposed to a failure (an `Err`): a recomputation
    /// that was asked for (`_refresh`, a stale or early refresh) and gets
    /// it removes the entry instead of keeping the old value.
    #[inline]
    fn is_absent(_ret: &R) -> bool {
        false
    }
    /// The return value that says there is nothing, if this shape has one
    /// ([`Self::is_absent`]): what the callers waiting for a call that
    /// returned it are answered.
    #[inline]
    fn absent() -> Option<R> {
        None
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

impl<T> ReturnShape<T> for PlainShape {
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

impl<T> ReturnShape<Option<T>> for OptionShape {
    type Value = T;
    #[inline]
    fn cacheable(ret: &Option<T>) -> Option<&T> {
        ret.as_ref()
    }
    #[inline]
    fn rebuild(value: T) -> Option<T> {
        Some(value)
    }
    #[inline]
    fn is_absent(ret: &Option<T>) -> bool {
        ret.is_none()
    }
    #[inline]
    fn absent() -> Option<Option<T>> {
        Some(None)
    }
}

impl<T, E> ReturnShape<Result<T, E>> for ResultShape {
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

impl<T> ReturnShape<Option<T>> for CacheNoneShape {
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

/// Checks that a return type read as a plain value is not a `Result` or an
/// `Option` under another name (see [`ShapeProbe`]).
pub struct ShapeProbe<T: ?Sized>(core::marker::PhantomData<T>);

impl<T: ?Sized> ShapeProbe<T> {
    /// A probe for the return type `T`.
    #[inline(always)]
    pub const fn new() -> Self {
        ShapeProbe(core::marker::PhantomData)
    }
}

/// The check every type passes: a trait method, so that the inherent
/// `check` of `ShapeProbe<Result<..>>` and `ShapeProbe<Option<..>>` wins
/// method lookup for those.
pub trait PlainShapeCheck {
    /// Does nothing.
    #[inline(always)]
    fn check(&self) {}
}
impl<T: ?Sized> PlainShapeCheck for ShapeProbe<T> {}

impl<T: ?Sized> Default for ShapeProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, E> ShapeProbe<Result<T, E>> {
    /// Fails to compile: the shape must be declared.
    #[inline(always)]
    pub fn check(&self)
    where
        Result<T, E>: ShapeDeclared,
    {
    }
}

impl<T> ShapeProbe<Option<T>> {
    /// Fails to compile: the shape must be declared.
    #[inline(always)]
    pub fn check(&self)
    where
        Option<T>: ShapeDeclared,
    {
    }
}

/// Implemented by `core::result::Result` alone: a return type named
/// `Result` that is another type (an enum of the user's own) gets this
/// trait's message instead of a bare type mismatch.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is named `Result` but is not `std::result::Result`, so `#[cached]` cannot read it as one",
    label = "read as a `Result` by its name",
    note = "to cache the whole value, say so in the attribute: `returns = \"plain\"`"
)]
pub trait NamedResult {}
impl<T, E> NamedResult for Result<T, E> {}

/// Implemented by `core::option::Option` alone (see [`NamedResult`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is named `Option` but is not `std::option::Option`, so `#[cached]` cannot read it as one",
    label = "read as an `Option` by its name",
    note = "to cache the whole value, say so in the attribute: `returns = \"plain\"`"
)]
pub trait NamedOption {}
impl<T> NamedOption for Option<T> {}

/// Checks at compile time that a return type named `Result` is one.
#[inline(always)]
pub fn named_result<R: NamedResult + ?Sized>() {}

/// Checks at compile time that a return type named `Option` is one.
#[inline(always)]
pub fn named_option<R: NamedOption + ?Sized>() {}

/// Never implemented: the error a `Result` or `Option` alias gets.
#[diagnostic::on_unimplemented(
    message = "this function returns `{Self}` under another name (a type alias), so `#[cached]` cannot tell what to cache",
    label = "a `Result` or `Option` through an alias",
    note = "say it in the attribute: `returns = \"result\"` caches `Ok` and never `Err`, `returns = \"option\"` caches `Some` (and `None` with `cache_none`), `returns = \"plain\"` caches the whole value, `Err` or `None` included"
)]
pub trait ShapeDeclared {}
