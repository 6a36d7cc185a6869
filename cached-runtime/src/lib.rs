//! The runtime of [cached-redis](https://docs.rs/cached-redis): keys, codec,
//! stores, stats, skip flag. Users depend on `cached-redis`, which
//! re-exports everything public here together with the `#[cached]`
//! attribute; see its documentation.
//!
//! Module map: [`config`] (settings), `key` (canonical keys), `codec`
//! (stored format), `codec_choice` (which codec a function writes), `store` (Redis and the embedded store, with the circuit
//! breaker), `stats` and `flush` (counters and their trip to Redis), `skip`
//! (the skip-cache flag and its tower layer), `engine` (the call path),
//! `cache` (a cache as a value, and its scopes),
//! `entry_info` (what a call's entry is, for HTTP caching headers),
//! [`report`] (reading the stats back),
//! [`build`] (build-script helper), `__private` (what the macro expands to).

#![warn(missing_docs)]

mod bench_entry;
mod cache;
mod call_site;
mod clock;
mod codec;
mod codec_choice;
mod codec_readback;
pub mod config;
mod engine;
mod entry_info;
mod error;
mod flight;
mod flow;
mod flush;
mod freshness;
mod fuzzing;
mod invalidate;
mod io;
mod key;
mod lease;
mod local;
#[cfg(feature = "metrics")]
mod metrics_facade;
mod ops;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod report;
mod shape;
mod signing;
mod site;
mod skip;
mod stats;
mod store;
mod unwind;

/// Build-script helpers.
pub mod build {
    pub use crate::build_helper::emit_git_sha;
}
mod build_helper;

#[doc(hidden)]
pub mod __private;

pub use cache::{Cache, Scoped};
pub use config::{Compression, Config, ConfigBuilder};
pub use engine::{flush_stats, init, init_named, local_stats};
pub use entry_info::{with_entry_info, CacheStatus, EntryInfo};
pub use error::{Error, StoreError, StoreErrorKind};
pub use invalidate::{invalidate_args, invalidate_prefix};
pub use skip::{is_cache_skipped, skip_cache, skip_cache_sync, SKIP_CACHE_HEADER};
#[cfg(feature = "tower")]
pub use skip::{AllowSkip, AnyClient, SkipCacheLayer, SkipCacheService};
pub use stats::{StatsSnapshot, MISS_BUCKETS_US};
pub use store::{RedisStore, ScanCursor};
