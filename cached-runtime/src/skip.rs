//! The skip-cache flag: a call under it neither reads nor writes the cache.
//!
//! Async code carries the flag in a task-local ([`skip_cache`]), sync code in
//! a thread-local ([`skip_cache_sync`]); [`is_cache_skipped`] reads both.
//! The same mechanism carries the internal "force refresh" flag used by the
//! generated `*_refresh` companions.

use std::cell::Cell;
use std::future::Future;

/// The HTTP header that asks for a response computed without the cache.
/// Any value but `0` or `false` counts.
pub const SKIP_CACHE_HEADER: &str = "X-Skip-Redis-Cache";

tokio::task_local! {
    static SKIP_TASK: bool;
    static REFRESH_TASK: Cell<bool>;
}

/// A thread's flag, and who set it: the task it was set in, or `None`
/// for code outside any task. Only that code sees it. A thread can poll
/// other tasks while the closure runs (`skip_cache_sync(|| rt.block_on(..))`
/// on a current-thread runtime drives every task spawned on it); they are
/// other requests, which must keep their cache.
type ThreadFlag = Cell<Option<Option<tokio::task::Id>>>;

thread_local! {
    static SKIP_THREAD: ThreadFlag = const { Cell::new(None) };
    static REFRESH_THREAD: ThreadFlag = const { Cell::new(None) };
}

/// Whether `flag` is set for the code running now.
fn is_set_here(flag: &ThreadFlag) -> bool {
    flag.get()
        .is_some_and(|owner| owner == tokio::task::try_id())
}

/// Runs `future` with the cache bypassed: cached functions it calls run
/// their body and store nothing. Tasks it spawns do not inherit the flag
/// (wrap their futures in `skip_cache` too if they should).
///
/// ```
/// # async fn demo() {
/// let fresh = cached_runtime::skip_cache(async { cached_runtime::is_cache_skipped() }).await;
/// assert!(fresh);
/// # }
/// ```
pub async fn skip_cache<F: Future>(future: F) -> F::Output {
    SKIP_TASK.scope(true, future).await
}

/// Runs `f` with the cache bypassed on this thread: for `f`'s own code and
/// what it calls, including a future it drives with `block_on`; not for
/// other tasks the thread polls meanwhile.
///
/// ```
/// assert!(cached_runtime::skip_cache_sync(cached_runtime::is_cache_skipped));
/// assert!(!cached_runtime::is_cache_skipped());
/// ```
pub fn skip_cache_sync<R>(f: impl FnOnce() -> R) -> R {
    let _restore = SetThreadFlag::new(&SKIP_THREAD);
    f()
}

/// Whether the current call runs under [`skip_cache`] or [`skip_cache_sync`].
pub fn is_cache_skipped() -> bool {
    SKIP_TASK.try_with(|s| *s).unwrap_or(false) || SKIP_THREAD.with(is_set_here)
}

/// Sets a thread-local flag for the code running now and restores its
/// previous value on drop, so a panic inside the closure does not leave
/// the flag behind.
struct SetThreadFlag {
    flag: &'static std::thread::LocalKey<ThreadFlag>,
    previous: Option<Option<tokio::task::Id>>,
}

impl SetThreadFlag {
    fn new(flag: &'static std::thread::LocalKey<ThreadFlag>) -> Self {
        let previous = flag.with(|f| f.replace(Some(tokio::task::try_id())));
        Self { flag, previous }
    }
}

impl Drop for SetThreadFlag {
    fn drop(&mut self) {
        self.flag.with(|f| f.set(self.previous));
    }
}

/// Runs `future` so that the first cached call in it recomputes and stores
/// whatever the cache holds.
/// Not an `async fn`: its state would hold a second copy of `future`.
pub(crate) fn force_refresh<F: Future>(future: F) -> impl Future<Output = F::Output> {
    REFRESH_TASK.scope(Cell::new(true), future)
}

/// [`force_refresh`] for sync code.
pub(crate) fn force_refresh_sync<R>(f: impl FnOnce() -> R) -> R {
    let _restore = SetThreadFlag::new(&REFRESH_THREAD);
    f()
}

/// Takes the force-refresh flag: true once for the outermost cached call
/// under [`force_refresh`], false for the calls its body makes.
pub(crate) fn take_force_refresh() -> bool {
    let task = REFRESH_TASK.try_with(|c| c.replace(false)).unwrap_or(false);
    task || REFRESH_THREAD.with(|c| is_set_here(c) && c.take().is_some())
}

#[cfg(feature = "tower")]
pub use layer::{AllowSkip, AnyClient, SkipCacheLayer, SkipCacheService};

#[cfg(feature = "tower")]
mod layer {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::{SKIP_CACHE_HEADER, SKIP_TASK};

    /// Tower middleware (axum, tonic, hyper): a request carrying
    /// [`SKIP_CACHE_HEADER`] with any value but `0` or `false` is handled
    /// under [`super::skip_cache`].
    ///
    /// **By default every client may skip the cache**, which makes the header
    /// a lever for anyone who can reach the service to send all its traffic
    /// to the backend. On a service exposed to untrusted clients, honour it
    /// only for trusted requests with [`SkipCacheLayer::allow_if`].
    ///
    /// ```
    /// let layer = cached_runtime::SkipCacheLayer::new();
    /// # let _ = layer;
    /// ```
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SkipCacheLayer<P = AnyClient> {
        allow: P,
    }

    /// The default policy of [`SkipCacheLayer`]: every request may skip the
    /// cache.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct AnyClient;

    /// Which requests [`SkipCacheLayer`] lets skip the cache: implemented
    /// by [`AnyClient`] and by every `Fn(&http::Request<B>) -> bool`.
    pub trait AllowSkip<B> {
        /// Whether `request`, which carries the header, may skip the cache.
        fn allows(&self, request: &http::Request<B>) -> bool;
    }

    impl<B> AllowSkip<B> for AnyClient {
        fn allows(&self, _: &http::Request<B>) -> bool {
            true
        }
    }

    impl<B, F: Fn(&http::Request<B>) -> bool> AllowSkip<B> for F {
        fn allows(&self, request: &http::Request<B>) -> bool {
            self(request)
        }
    }

    impl SkipCacheLayer {
        /// The layer, honouring the header from every client.
        pub fn new() -> Self {
            Self { allow: AnyClient }
        }
    }

    impl<P> SkipCacheLayer<P> {
        /// Honours the header only on requests for which `predicate`
        /// returns true; on the others it is ignored (the request is served
        /// with the cache, as if the header were absent). The predicate
        /// runs only on requests that carry the header.
        ///
        /// Honouring it only from internal callers, here those that present
        /// a shared token (an address check through
        /// `axum::extract::ConnectInfo` in the request's extensions works
        /// the same way):
        ///
        /// ```
        /// use cached_runtime::SkipCacheLayer;
        ///
        /// const INTERNAL_TOKEN: &str = "token from the service's config";
        ///
        /// let layer = SkipCacheLayer::new().allow_if(|req: &http::Request<String>| {
        ///     req.headers()
        ///         .get("x-internal-token")
        ///         .is_some_and(|token| token == INTERNAL_TOKEN)
        /// });
        /// # let _ = layer;
        /// ```
        pub fn allow_if<F>(self, predicate: F) -> SkipCacheLayer<F> {
            SkipCacheLayer { allow: predicate }
        }
    }

    impl<S, P: Clone> tower_layer::Layer<S> for SkipCacheLayer<P> {
        type Service = SkipCacheService<S, P>;
        fn layer(&self, inner: S) -> Self::Service {
            SkipCacheService {
                inner,
                allow: self.allow.clone(),
            }
        }
    }

    /// The service [`SkipCacheLayer`] wraps around another.
    #[derive(Clone, Debug)]
    pub struct SkipCacheService<S, P = AnyClient> {
        inner: S,
        allow: P,
    }

    /// Whether a request asks to skip the cache.
    pub(crate) fn wants_skip(headers: &http::HeaderMap) -> bool {
        headers
            .get_all(SKIP_CACHE_HEADER)
            .iter()
            .any(|v| value_wants_skip(v.as_bytes()))
    }

    /// One line of the header. It is a list: a proxy may fold two lines
    /// into one, `0, 0` (RFC 9110, 5.3), which must read as the two lines
    /// did. Empty elements are no values; a line with none at all is a
    /// value, like any but `0` or `false`.
    fn value_wants_skip(line: &[u8]) -> bool {
        let mut values = line
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|v| !v.is_empty())
            .peekable();
        if values.peek().is_none() {
            return true;
        }
        values.any(|v| !(v == b"0" || v.eq_ignore_ascii_case(b"false")))
    }

    pin_project_lite::pin_project! {
        /// The response future of [`SkipCacheService`].
        pub struct SkipCacheFuture<F> {
            #[pin]
            inner: tokio::task::futures::TaskLocalFuture<bool, F>,
        }
    }

    impl<F: Future> Future for SkipCacheFuture<F> {
        type Output = F::Output;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.project().inner.poll(cx)
        }
    }

    impl<S, P, B> tower_service::Service<http::Request<B>> for SkipCacheService<S, P>
    where
        S: tower_service::Service<http::Request<B>>,
        P: AllowSkip<B>,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = SkipCacheFuture<S::Future>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            // Outside the header's reach the flag is whatever the caller had
            // (normally off), so nested layers compose.
            let honoured = wants_skip(req.headers()) && {
                let allowed = self.allow.allows(&req);
                if !allowed {
                    tracing::debug!("skip-cache header ignored: request not allowed to skip");
                }
                allowed
            };
            let skip = honoured || super::is_cache_skipped();
            // The inner service's `call` runs under the flag too: a service
            // may do its work there and return a ready future, and an inner
            // layer reads the flag there.
            let inner = SKIP_TASK.sync_scope(skip, || self.inner.call(req));
            SkipCacheFuture {
                inner: SKIP_TASK.scope(skip, inner),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::wants_skip;

        fn headers(values: &[&str]) -> http::HeaderMap {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append("x-skip-redis-cache", v.parse().unwrap());
            }
            h
        }

        #[test]
        fn header_values() {
            assert!(!wants_skip(&headers(&[])));
            assert!(!wants_skip(&headers(&["0"])));
            assert!(!wants_skip(&headers(&["false"])));
            assert!(!wants_skip(&headers(&["FALSE"])));
            assert!(wants_skip(&headers(&["1"])));
            assert!(wants_skip(&headers(&["yes"])));
            assert!(wants_skip(&headers(&[""])));
            // Folded by a proxy: read as the lines were.
            assert!(!wants_skip(&headers(&["0, 0"])));
            assert!(!wants_skip(&headers(&["0,false", " 0 ,"])));
            assert!(wants_skip(&headers(&["0, 1"])));
            assert!(wants_skip(&headers(&[" , "])));
        }
    }
}
