// The README is the crate's documentation. Its code blocks are compiled as
// doc tests of `cached-redis-tests` (they use axum, serde_json, ...: test
// dependencies this package does not carry), not here.
#![cfg_attr(not(doctest), doc = include_str!("../README.md"))]
#![warn(missing_docs)]

pub use cached_macro::cached;
pub use cached_runtime::config::redact_url;
#[cfg(feature = "postgres")]
pub use cached_runtime::postgres;
pub use cached_runtime::{
    build, flush_stats, init, init_named, invalidate_args, invalidate_prefix, is_cache_skipped,
    local_stats, report, skip_cache, skip_cache_sync, Cache, Compression, Config, ConfigBuilder,
    Error, RedisStore, ScanCursor, Scoped, StatsSnapshot, StoreError, StoreErrorKind,
    MISS_BUCKETS_US, SKIP_CACHE_HEADER,
};
pub use cached_runtime::{with_entry_info, CacheStatus, EntryInfo};
#[cfg(feature = "tower")]
pub use cached_runtime::{AllowSkip, AnyClient, SkipCacheLayer, SkipCacheService};

#[doc(hidden)]
pub use cached_runtime::__private;
