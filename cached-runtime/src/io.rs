//! The crate's own small tokio runtime, for background work that must not
//! depend on any caller's runtime staying alive: the stats flushes (the
//! interval flusher's, and `flush_stats`, which must finish even if its
//! caller gives up), the release of a lock whose holder was dropped
//! (its own runtime may never run it) and the PostgreSQL listener. Cached
//! calls themselves never hop onto it.

use std::sync::OnceLock;

/// A handle to the crate's I/O runtime, started on first use.
pub(crate) fn handle() -> &'static tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("cached-redis-io")
                .enable_all()
                .build()
                .expect("cannot start the cached-redis I/O thread")
        })
        .handle()
}
