//! What a cached call's value is, as a cache entry: hit or miss, the
//! content hash of its stored bytes, when it was created and how long it
//! stays fresh. Enough for HTTP caching headers (`ETag`, `Last-Modified`,
//! `Cache-Control: max-age`) and for answering `If-None-Match` with
//! `304 Not Modified`.
//!
//! A task-local scope ([`with_entry_info`]) collects it; the call path
//! records into the scope only when one is active, so calls outside a scope
//! pay nothing (no hashing).

use std::cell::RefCell;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::freshness::{self, Age};
use crate::site::ResolvedSite;

tokio::task_local! {
    static SCOPE: RefCell<Option<EntryInfo>>;
}

/// Where a cached call's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// Read from the cache (including a value another caller was computing,
    /// and a stale value served while one caller recomputes).
    Hit,
    /// Computed by running the function (and stored, when cacheable).
    Miss,
    /// The cache was bypassed (skip flag, or caching disabled).
    Skip,
}

impl CacheStatus {
    /// `"HIT"`, `"MISS"` or `"SKIP"`: the usual values of an `X-Cache`
    /// response header.
    ///
    /// ```
    /// assert_eq!(cached_runtime::CacheStatus::Hit.as_str(), "HIT");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Skip => "SKIP",
        }
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cache entry behind the value a cached call returned, as seen by
/// [`with_entry_info`].
///
/// The entry fields are `None` when there is no entry: a skipped call, or a
/// result that is not stored (`Err`, `None` without `cache_none`, a value
/// over `max_value_bytes`, arguments that cannot be keyed).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// Hit, miss or skip.
    pub status: CacheStatus,
    /// base64url (no padding, 43 characters) of the BLAKE3 hash of the
    /// entry's stored payload: the bytes after the header, i.e. the encoded
    /// and possibly compressed value. Equal values encode to equal bytes, so
    /// a recomputed but unchanged value keeps its hash, unless it holds a
    /// `HashMap` or `HashSet`: each instance iterates in its own order, so
    /// its bytes (and hash) change with every recomputation. Use a
    /// `BTreeMap` or `BTreeSet` where the hash must stay.
    pub content_hash: Option<String>,
    /// When the entry was computed (its header's creation time, ms
    /// precision).
    pub created_at: Option<SystemTime>,
    /// How long the entry stays fresh from now: the rest of its `ttl` on a
    /// hit (the whole `ttl` with `refresh = true`, zero for a stale value
    /// being served), the whole `ttl` (or the `cache_none` lifetime) on a
    /// miss.
    pub max_age: Option<Duration>,
}

impl EntryInfo {
    /// The content hash as a strong HTTP entity tag, quotes included
    /// (`"…"`).
    ///
    /// ```
    /// # async fn demo() {
    /// let (_, info) = cached_runtime::with_entry_info(async { 1 }).await;
    /// assert!(info.is_none()); // no cached call ran
    /// # }
    /// ```
    pub fn etag(&self) -> Option<String> {
        self.content_hash.as_ref().map(|h| format!("\"{h}\""))
    }

    /// Whether an `If-None-Match` request header value names this entry,
    /// so the response can be `304 Not Modified`. Follows RFC 9110's weak
    /// comparison: `*` matches any entry, a list matches when one of its
    /// tags does, and `W/"…"` counts as `"…"`.
    pub fn matches_if_none_match(&self, if_none_match: &str) -> bool {
        let Some(hash) = &self.content_hash else {
            return false;
        };
        if_none_match.split(',').map(str::trim).any(|tag| {
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag == "*" || tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) == Some(hash)
        })
    }
}

/// Runs `future` and reports the cache entry behind the value of the last
/// cached call that finished inside it: `(output, info)`, with `info`
/// `None` when no cached call ran.
///
/// "Last finished" is the outermost call when cached functions call each
/// other (the outer one finishes after its body), so wrap the one call whose
/// value the response carries, or a handler that makes a single cached
/// call. Sync cached functions called from within `future` are seen too.
///
/// ```
/// use cached_runtime::CacheStatus;
/// # async fn demo() {
/// async fn product(id: i64) -> String { format!("product {id}") } // a #[cached] fn in practice
/// let (value, info) = cached_runtime::with_entry_info(product(7)).await;
/// if let Some(info) = info {
///     let _etag = info.etag();                           // for ETag
///     let _fresh_for = info.max_age;                     // for Cache-Control: max-age
///     let _from_cache = info.status == CacheStatus::Hit; // for X-Cache
/// }
/// # let _ = value;
/// # }
/// ```
pub async fn with_entry_info<F: Future>(future: F) -> (F::Output, Option<EntryInfo>) {
    SCOPE
        .scope(RefCell::new(None), async move {
            let output = future.await;
            let info = SCOPE.with(|slot| slot.borrow_mut().take());
            (output, info)
        })
        .await
}

/// Whether a scope is collecting: the call path hashes nothing otherwise.
pub(crate) fn active() -> bool {
    SCOPE.try_with(|_| ()).is_ok()
}

fn record(info: EntryInfo) {
    let _ = SCOPE.try_with(|slot| *slot.borrow_mut() = Some(info));
}

/// A call that bypassed the cache.
pub(crate) fn skipped() {
    if active() {
        record(EntryInfo {
            status: CacheStatus::Skip,
            content_hash: None,
            created_at: None,
            max_age: None,
        });
    }
}

/// A call whose result has no entry (not cacheable, not encodable, or
/// run uncached after an error).
pub(crate) fn uncached() {
    if active() {
        record(EntryInfo {
            status: CacheStatus::Miss,
            content_hash: None,
            created_at: None,
            max_age: None,
        });
    }
}

/// A call handed another caller's value that no entry is known to hold
/// (its write failed, or its caller was dropped before the answer):
/// served from the cache, with nothing to describe.
pub(crate) fn hit_unstored() {
    if active() {
        record(EntryInfo {
            status: CacheStatus::Hit,
            content_hash: None,
            created_at: None,
            max_age: None,
        });
    }
}

/// A call answered from the entry `stored` (header and payload) of `site`;
/// `negative`: a cached `None`, fresh for `cache_none` from its writing
/// (reads with `refresh` do not restart it).
pub(crate) fn hit(site: &ResolvedSite, stored: &[u8], negative: bool) {
    if !active() {
        return;
    }
    let created_at_ms = created_at_ms(stored);
    if negative {
        let left = freshness::left_of(created_at_ms, site.negative_ttl);
        entry(CacheStatus::Hit, stored, left);
        return;
    }
    let max_age = match freshness::classify(
        created_at_ms,
        freshness::now_ms(),
        site.ttl,
        site.stale,
        site.refresh,
    ) {
        // A sliding entry's lifetime was just reset by this read.
        Age::Fresh { .. } if site.refresh => site.ttl,
        Age::Fresh { remaining } => remaining,
        Age::Stale => Duration::ZERO,
    };
    entry(CacheStatus::Hit, stored, max_age);
}

/// A call answered from the entry `stored`, past its `ttl`, within its
/// `stale` window (a sliding entry's staleness is the store's to say, not
/// the header's).
pub(crate) fn hit_stale(stored: &[u8]) {
    if active() {
        entry(CacheStatus::Hit, stored, Duration::ZERO);
    }
}

/// A call that computed and stored `stored`, fresh for `ttl`.
pub(crate) fn stored(stored: &[u8], ttl: Duration) {
    if active() {
        entry(CacheStatus::Miss, stored, ttl);
    }
}

/// The header's creation time: a little-endian u64 of Unix ms at bytes
/// 4..12 (docs/FORMAT.md). Read here rather than through a decoded header
/// so every place of the call path can report from the bytes it holds.
fn created_at_ms(stored: &[u8]) -> u64 {
    stored
        .get(4..12)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn entry(status: CacheStatus, stored: &[u8], max_age: Duration) {
    let payload = stored.get(crate::codec::HEADER_LEN..).unwrap_or_default();
    record(EntryInfo {
        status,
        content_hash: Some(URL_SAFE_NO_PAD.encode(blake3::hash(payload).as_bytes())),
        // Never in the future (a writer whose clock runs ahead): it goes
        // into `Last-Modified`, which must not be later than the reply.
        created_at: Some(
            UNIX_EPOCH + Duration::from_millis(created_at_ms(stored).min(freshness::now_ms())),
        ),
        max_age: Some(max_age),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(hash: Option<&str>) -> EntryInfo {
        EntryInfo {
            status: CacheStatus::Hit,
            content_hash: hash.map(str::to_owned),
            created_at: None,
            max_age: None,
        }
    }

    #[test]
    fn if_none_match_forms() {
        let i = info(Some("abc"));
        assert!(i.matches_if_none_match("\"abc\""));
        assert!(i.matches_if_none_match("W/\"abc\""));
        assert!(i.matches_if_none_match("\"x\", \"abc\""));
        assert!(i.matches_if_none_match("*"));
        assert!(!i.matches_if_none_match("\"abcd\""));
        assert!(!i.matches_if_none_match("abc"));
        assert!(!info(None).matches_if_none_match("*"));
        assert_eq!(i.etag().as_deref(), Some("\"abc\""));
    }

    #[tokio::test]
    async fn scope_records_the_last_entry_and_nothing_outside() {
        let mut bytes = [0u8; 25];
        bytes[4..12].copy_from_slice(&1_000u64.to_le_bytes());
        stored(&bytes, Duration::ZERO); // no scope: ignored
        let ((), got) = with_entry_info(async {
            assert!(active());
            skipped();
            stored(&bytes, Duration::from_secs(9));
        })
        .await;
        let got = got.expect("recorded");
        assert_eq!(got.status, CacheStatus::Miss);
        assert_eq!(
            got.content_hash.as_deref(),
            Some(&*URL_SAFE_NO_PAD.encode(blake3::hash(&[0u8; 5]).as_bytes()))
        );
        assert_eq!(got.created_at, Some(UNIX_EPOCH + Duration::from_secs(1)));
        assert_eq!(got.max_age, Some(Duration::from_secs(9)));
        assert!(!active());
    }
}
