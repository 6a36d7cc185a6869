//! Dropping entries: all of a prefix, or one call's named by its prefix and
//! key arguments as JSON (what an event from a database carries).
//!
//! Prefix-wide invalidation walks the prefix's keys with `SCAN` (every
//! master of a cluster) and removes them with `UNLINK` in batches: never
//! `KEYS`, never a long blocking command, so Redis keeps serving other
//! clients meanwhile. Only entry keys
//! match (`{namespace}:{prefix}:` followed by exactly 22 hash characters):
//! the stats hash and lock keys are left alone.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::call_site::CallSite;
use crate::engine::{bind, every_cache, Engine};
use crate::error::Error;
use crate::key::{self, CacheKey};
use crate::local::channel::{self, Change, PendingChange};
use crate::store::{glob_escape, Store};

/// Removes every entry of `prefix` (every function with that prefix, every
/// argument, in every cache: the default one and each named one; inside
/// [`crate::Cache::scope`], the scope's cache in place of the default one);
/// returns how many were removed. Safe while traffic flows: a
/// call that misses meanwhile simply recomputes.
///
/// ```no_run
/// # async fn demo() -> Result<(), cached_runtime::Error> {
/// let removed = cached_runtime::invalidate_prefix("user").await?;
/// # let _ = removed; Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Store`] when Redis fails part-way; what was removed stays
/// removed, and calling again finishes the job. On a cluster, also when
/// its slots kept moving during the walk over its masters (a reshard in
/// progress: see [`crate::RedisStore::scan`]), since an entry moved meanwhile
/// could have been missed.
pub async fn invalidate_prefix(prefix: &str) -> Result<u64, Error> {
    let mut removed = 0;
    let mut first_error = None;
    // Every cache: functions of one prefix may live in several.
    for engine in every_cache() {
        match invalidate_prefix_in(&engine, prefix).await {
            Ok(n) => removed += n,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(removed), Err)
}

/// [`invalidate_prefix`] in one cache.
pub(crate) async fn invalidate_prefix_in(engine: &Engine, prefix: &str) -> Result<u64, Error> {
    let head = format!("{}:{}:", engine.config.namespace, prefix);
    match engine.store() {
        None => Ok(0),
        Some(Store::Memory(m)) => {
            let removed = m.remove_matching(|k| is_entry_of(k, &head));
            Change::Head(&head).apply_here();
            Ok(removed)
        }
        Some(store @ Store::Redis(r)) => {
            let change = Change::Head(&head);
            // Announced before the scan, with each batch it removes, and
            // after it: a copy that a level takes meanwhile of an entry the
            // scan has not reached yet goes with that entry's batch, not
            // once the whole prefix is walked (which takes seconds for a
            // large one). A batch is never removed without its message.
            change.apply_here();
            if let Err(e) = channel::publish(store, &engine.config.namespace, change).await {
                tracing::debug!(prefix, error = %e, "prefix change not announced before the scan");
            }
            let pattern = format!("{}{}", glob_escape(&head), "?".repeat(key::HASH_LEN));
            let mut removed = 0u64;
            let walked = async {
                let mut scan = r.scan_keys(pattern);
                while let Some(keys) = scan.next_batch().await? {
                    let keys: Vec<&str> = keys
                        .iter()
                        .filter_map(|k| std::str::from_utf8(k).ok())
                        .filter(|k| is_entry_of(k, &head))
                        .collect();
                    if !keys.is_empty() {
                        // Removed with its message, in one script: Redis
                        // runs both or, when the `PUBLISH` is refused,
                        // neither; and once sent, both run even if this
                        // call is dropped before the answer (the drop
                        // applies the change here, see `PendingChange`).
                        let news = change.announcement(&engine.config.namespace);
                        let pending = PendingChange::new(change, &news);
                        let outcome = crate::store::del_all_announced(r, &keys, &news).await;
                        pending.settle();
                        crate::engine::settle(change, Some(&news), &outcome);
                        removed += outcome?;
                    }
                }
                Ok::<(), crate::error::StoreError>(())
            }
            .await;
            // One message for the whole prefix once its entries are gone
            // (a local level refilled during the scan is emptied by it);
            // sent after a failure part-way too, for what was removed.
            change.apply_here();
            let published = channel::publish(store, &engine.config.namespace, change).await;
            walked?;
            published?;
            tracing::debug!(prefix, removed, "prefix invalidated");
            Ok(removed)
        }
    }
}

/// Whether `key` is an entry key under `head` (`{namespace}:{prefix}:`).
fn is_entry_of(key: &str, head: &str) -> bool {
    key.strip_prefix(head).is_some_and(|rest| {
        rest.len() == key::HASH_LEN
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

type Registry = Mutex<HashMap<String, Vec<&'static CallSite>>>;

/// The program's cached functions by prefix, for turning an event's
/// arguments into the key a function would use. Each function registers
/// the first time it is called, has a key built, or is invalidated in this
/// process.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Records `site` in the registry (idempotent); the engine does, when it
/// binds the site to its cache.
pub(crate) fn register(site: &'static CallSite) {
    let prefix = site.prefix();
    let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
    let sites = map.entry(prefix).or_default();
    if !sites.iter().any(|s| std::ptr::eq(*s, site)) {
        sites.push(site);
    }
}

/// Removes the entry of one call, named the way an event from a database
/// names it: the function's `prefix` and its key arguments as a JSON array,
/// in parameter order (a single argument is still an array of one).
/// Returns whether an entry was removed.
///
/// The arguments must serialize as the function's own argument types would
/// (`42` for an `i64`, `0.1` for an `f32`, `"a"` for a `&str`, an object
/// for a struct): the key is the hash of that JSON. (An `f32` is its
/// decimal, as JSON text carries it; `json!` widens an `f32` to the `f64`
/// it converts to, `0.10000000149011612`, which names no entry: from Rust,
/// the function's `_invalidate` companion takes the typed arguments.)
/// Every function registered under `prefix` is tried, so two functions
/// sharing a prefix are both invalidated. JSON cannot name two kinds of argument this way,
/// whose entries are then reached by [`invalidate_prefix`] or the
/// function's `_invalidate` companion only: a `u128` or `i128` outside the
/// 64-bit range (a `serde_json::Value` holds it as an `f64`), and the
/// `Some` of an `Option` whose value is itself written `null`
/// (`Some(None)` of an `Option<Option<T>>`, which the key tells from `None`).
///
/// Inside [`crate::Cache::scope`], the functions of the default cache are
/// looked up in the scope's cache instead.
///
/// Methods work like free functions (their key also holds the `Self` type,
/// which their first call or companion call records). For generic
/// functions and methods of generic types, the entry of every instantiation
/// called in this process is removed, one round trip each.
///
/// ```no_run
/// # async fn demo() -> Result<(), cached_runtime::Error> {
/// // From a change-stream consumer: user 42 changed.
/// cached_runtime::invalidate_args("user", &serde_json::json!([42])).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Key`] when no function with that prefix has registered in
/// this process (call it once, or build its key with its `*_cache_key`
/// companion at start-up), when a generic one was called with more than
/// 256 different types (invalidate the prefix), or when the arguments are
/// not an array;
/// [`Error::Store`] when Redis fails: the first failure, after every
/// cache that holds one of the keys was tried (the ones that answered
/// have removed theirs).
pub async fn invalidate_args(prefix: &str, args: &serde_json::Value) -> Result<bool, Error> {
    let scoped = crate::cache::scoped();
    let keys = keys_for_args(prefix, args, &scoped)?;
    // Every cache is tried, as `invalidate_prefix` does: one that is down
    // must not keep the others' entries readable.
    let (mut removed, mut first_error) = (false, None);
    for (engine, key) in keys {
        let Some(store) = engine.store() else {
            continue;
        };
        match crate::engine::remove_announced(store, &engine.config.namespace, key.as_str()).await {
            Ok(was_there) => removed |= was_there,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(removed), |e| Err(e.into()))
}

/// The keys calls with `args` use, with the cache each lives in, for every
/// function registered under `prefix`; `scoped` is the current scope's
/// cache (see [`bind`]).
fn keys_for_args<'a>(
    prefix: &str,
    args: &serde_json::Value,
    scoped: &'a Option<std::sync::Arc<Engine>>,
) -> Result<Vec<(&'a Engine, CacheKey)>, Error> {
    if !args.is_array() {
        return Err(Error::Key(format!(
            "arguments for prefix {prefix:?} must be a JSON array in parameter order, got {args}"
        )));
    }
    let sites = registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(prefix)
        .cloned()
        .unwrap_or_default();
    if sites.is_empty() {
        return Err(Error::Key(format!(
            "no cached function with prefix {prefix:?} is known in this process yet"
        )));
    }
    let mut keys = Vec::new();
    for site in sites {
        // Registered sites are bound: registration happens when binding.
        let mut hold = None;
        let Some((engine, resolved)) = bind(site, scoped, &mut hold) else {
            continue;
        };
        // A function without key arguments hashes `()`, which is JSON
        // `null`, not `[]`.
        let hash = |salt: &[u8; 32]| match args.as_array() {
            Some(list) if list.is_empty() => key::hash_segment(salt, &()),
            _ => key::hash_segment(salt, args),
        };
        let Some(instantiations) = site.instantiations() else {
            return Err(Error::Key(format!(
                "{} has been called with too many different types to name each key; \
                 invalidate prefix {prefix:?} instead",
                site.ident.fn_name
            )));
        };
        if instantiations.is_empty() {
            let hash = hash(&resolved.salt_digest).map_err(|e| Error::Key(e.to_string()))?;
            keys.push((engine, CacheKey::new(&resolved.key_head, &hash)));
        }
        // Methods (`Self`) and generic functions: one key per list of type
        // names this process has seen; a method of a non-generic `impl`
        // has exactly one.
        for names in instantiations {
            let salt = key::with_type_names(&resolved.salt_digest, names);
            let hash = hash(&salt).map_err(|e| Error::Key(e.to_string()))?;
            keys.push((engine, CacheKey::new(&resolved.key_head, &hash)));
        }
    }
    // Each key once per cache: two functions sharing a prefix, or one
    // generic function's instantiations, can name the same key. Sorted by
    // key, then cache, so that equal pairs are adjacent.
    keys.sort_unstable_by(|a, b| {
        (a.1.as_str(), std::ptr::from_ref(a.0)).cmp(&(b.1.as_str(), std::ptr::from_ref(b.0)))
    });
    keys.dedup_by(|a, b| std::ptr::eq(a.0, b.0) && a.1 == b.1);
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_entry_keys_match() {
        let head = "ns:user:";
        assert!(is_entry_of("ns:user:Q2hhbmdlIG1lIHBsZWFzZQ", head));
        assert!(!is_entry_of("ns:user:stats", head));
        assert!(!is_entry_of("ns:user:Q2hhbmdlIG1lIHBsZWFzZQ:lock", head));
        assert!(!is_entry_of("ns:users:Q2hhbmdlIG1lIHBsZWFzZQ", head));
        assert!(!is_entry_of("ns:user:Q2hhbmdlIG1lIHBsZWFz*Q", head));
    }
}
