//! The one error type of the crate.
//!
//! Each variant carries either its own message or a source, never both in
//! its text, so that walking `source()` prints every cause once.
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
    /// float, a failing `Serialize` implementation); from
    /// [`crate::invalidate_args`], also: no function with that prefix is
    /// known in this process, the arguments are not a JSON array, or they
    /// fit too many of its instantiations.
    #[error("cannot build a cache key: {0}")]
    Key(String),
    /// The store (Redis) failed or could not be reached. The message says
    /// only that; what failed is the [source](std::error::Error::source),
    /// so error reporters (anyhow, eyre) print it once.
    #[error("cache store failed")]
    Store(#[source] StoreError),
    /// A stats hash (`{namespace}:{prefix}:stats`) holds a field that is not
    /// a counter, or is not a hash; the message names the key and field.
    #[error("invalid stats hash: {0}")]
    StatsField(String),
}

/// A failure of the store behind the cache.
#[derive(Debug, Clone)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    /// Whether the command may have run: false for a failure before
    /// anything was sent (no connection, the breaker) and for a refusal
    /// Redis answered with.
    maybe_ran: bool,
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
    /// A walk over a cluster's keys could not finish: the cluster's slots
    /// kept moving under it (a reshard in progress). Calling again later
    /// finishes it.
    Moving,
}

impl StoreError {
    pub(crate) fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            maybe_ran: true,
        }
    }

    /// The same failure, known not to have run the command: raised before
    /// it was sent (while connecting), or Redis's answer refusing it.
    pub(crate) fn not_run(mut self) -> Self {
        self.maybe_ran = false;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether the command may have run all the same: it was sent, and no
    /// answer came back (a timeout, a connection lost on the way).
    pub(crate) fn may_have_run(&self) -> bool {
        self.maybe_ran
            && matches!(
                self.kind,
                StoreErrorKind::Timeout | StoreErrorKind::Connection
            )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            StoreErrorKind::CoolingDown => "redis is cooling down",
            StoreErrorKind::Timeout => "redis timed out",
            StoreErrorKind::Connection => "redis connection failed",
            StoreErrorKind::Response => "redis answered with an error",
            StoreErrorKind::Moving => "redis cluster is moving slots",
        };
        write!(f, "{what}: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain as error reporters print it: each error's message, then
    /// its source's, and so on.
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(cause) = next {
            out.push(cause.to_string());
            next = cause.source();
        }
        out
    }

    #[test]
    fn a_store_failure_prints_its_cause_once() {
        let err = Error::from(StoreError::new(
            StoreErrorKind::Connection,
            "Connection refused (os error 111)",
        ));
        let chain = chain(&err);
        assert_eq!(
            chain,
            [
                "cache store failed",
                "redis connection failed: Connection refused (os error 111)"
            ]
        );
        let joined = chain.join(": ");
        assert_eq!(joined.matches("Connection refused").count(), 1, "{joined}");
    }

    #[test]
    fn message_variants_have_no_source() {
        for err in [
            Error::Config("namespace \"\"".into()),
            Error::AlreadyInitialized,
            Error::Key("NaN".into()),
            Error::StatsField("field hits of k is \"x\"".into()),
        ] {
            assert!(std::error::Error::source(&err).is_none(), "{err}");
        }
        let store = StoreError::new(StoreErrorKind::Timeout, "no answer within 250ms");
        assert!(std::error::Error::source(&store).is_none());
        assert_eq!(store.to_string(), "redis timed out: no answer within 250ms");
    }
}
