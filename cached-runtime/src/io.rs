//! The crate's own small tokio runtime. Redis connections are opened on it
//! so that their driver tasks do not die with the runtime of whoever made
//! the first call; the stats flusher runs on it too.

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
