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

pub use crate::call_site::CallSite;
pub use crate::codec_choice::CodecOption;
pub use crate::engine::{
    build_key, call_async, call_async_local, call_sync, call_sync_local, force_refresh_async,
    force_refresh_sync, invalidate_async, invalidate_sync,
};
pub use crate::key::CacheKey;

/// Forgets this thread's recent key-memo inputs, so that the next keys
/// built on it look in the cache's shared memo: for tests of that path.
pub use crate::key::forget_thread_front;
pub use crate::site::{SiteIdent, SiteOptions};

/// Entry points for property tests and fuzzers of the stored format: encode
/// a valid entry with a given codec, decode arbitrary bytes as a given type.
pub mod fuzz {
    pub use crate::fuzzing::{
        decode_entry, encode_entry, Codec, Compression, CODECS, COMPRESSIONS, HEADER_LEN,
    };
}

pub use crate::shape::{
    key_arg, named_option, named_result, CacheNoneShape, CacheValue, KeyArg, LocalValue,
    OptionShape, PlainShape, PlainShapeCheck, ResultShape, ReturnShape, ShapeDeclared, ShapeProbe,
};
pub use crate::stats::set_enabled as set_stats_enabled;
/// The script that takes a key's lock (`KEYS[1]` the lock, `ARGV` the
/// token and the lease in ms; 1 if taken), for tests that run it against
/// a real Redis.
pub use crate::store::LOCK as LOCK_SCRIPT;

/// The stored-entry format with the default limits, for the benchmarks.
pub mod entry {
    pub use crate::bench_entry::{decode, encode, encode_with, encode_zlib_at, Signer};
}
