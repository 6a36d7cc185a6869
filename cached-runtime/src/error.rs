//! The one error type of the crate.
//!
//! Almost no failure reaches a caller of a cached function: a cache must not
//! take the service down, so store, codec and key failures degrade to "the
//! function runs" and are only counted (`errors`) and logged. [`Error`] is
//! what the explicit APIs return: [`crate::init`], [`crate::Config`]
//! builders, the generated `*_cache_key` / `*_invalidate` companions and
//! [`crate::flush_stats`].

use std::fmt;

/// An error of cached-redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (a bad URL, a zero size, an unparsable
    /// environment variable). The message names the offending setting.
    #[error("invalid cached-redis configuration: {0}")]
    Config(String),
    /// [`crate::init`] was called after the cache was already initialized
    /// (by an earlier `init` or by the first cached call).
    #[error("cached-redis is already initialized; call init() once, before the first cached call")]
    AlreadyInitialized,
    /// The key arguments could not be made canonical (a NaN or infinite
    /// float, a failing `Serialize` implementation).
    #[error("cannot build a cache key: {0}")]
    Key(String),
    /// A value could not be encoded or decoded.
    #[error("cannot encode or decode a cached value: {0}")]
    Codec(String),
    /// The store (Redis) failed or could not be reached.
    #[error("cache store failed: {0}")]
    Store(#[source] StoreError),
}

/// A failure of the store behind the cache.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
}

/// What kind of store failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// Redis is being skipped after repeated failures (circuit breaker open).
    CoolingDown,
    /// No answer within the configured timeout.
    Timeout,
    /// The connection failed or was refused.
    Connection,
    /// Redis answered with an error.
    Response,
}

impl StoreError {
    pub(crate) fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}
