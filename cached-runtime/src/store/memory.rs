//! The embedded in-process store: what serves when no Redis is configured,
//! so a program runs the same on a laptop with nothing installed.
//!
//! A [`quick_cache`] cache of encoded entries with deadlines, bounded by
//! `memory_max_entries` and `memory_max_bytes` at once: an entry weighs its
//! bytes and key, but never less than about `max_bytes / max_entries`, so
//! at most that many entries fit and their sizes never add up to more than
//! the budget (the exact rule: [`Layout`]). Eviction (CLOCK-Pro) is O(1)
//! and knows nothing of deadlines, so expired entries are dropped when met,
//! and swept out once an insert has evicted a live entry while one of them
//! held room ([`WatchEvictions`]): that entry is lost, but from the next
//! insert on expired entries make room before live ones do. A sweep is one
//! pass over the store, at most once per [`SWEEP_EVERY`] (live entries
//! evicted within that second are lost too); a store with nothing expired
//! never pays for one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, Weighter};

use crate::local::Layout;

#[derive(Debug)]
struct Entry {
    bytes: Arc<[u8]>,
    /// Deadline in ms since [`epoch`]; atomic so that `touch` needs no
    /// write access to the cache.
    expires_ms: AtomicU64,
    weight: u64,
}

use crate::clock::monotonic_ms as now_ms;

fn deadline(ttl: Duration) -> u64 {
    now_ms().saturating_add((ttl.as_millis() as u64).max(1))
}

#[derive(Clone, Copy)]
struct EntryWeight;

impl Weighter<String, Arc<Entry>> for EntryWeight {
    fn weight(&self, _key: &String, entry: &Arc<Entry>) -> u64 {
        entry.weight
    }
}

/// How often, at most, expired entries are swept out: a full store whose
/// entries keep expiring (the usual state of a busy one) pays one pass a
/// second, about 3 ms for 100 000 entries.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What the store and its cache's eviction hook share.
#[derive(Debug)]
struct Watch {
    /// No entry expires before this (ms, [`now_ms`]): before it, nothing
    /// is expired and a sweep would find nothing.
    earliest_deadline_ms: AtomicU64,
    /// An insert evicted a live entry (or a live one was refused for its
    /// size) since the last sweep.
    live_evicted: AtomicBool,
}

/// The cache's eviction hook: notes when a live entry is evicted, so that
/// the expired entries that may have been chosen instead are swept out.
#[derive(Clone, Debug)]
struct WatchEvictions(Arc<Watch>);

impl Lifecycle<String, Arc<Entry>> for WatchEvictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut (), key: String, entry: Arc<Entry>) {
        // quick_cache reports the value an insert replaces as evicted too:
        // that one made room for its own key, not for another.
        let replaced = INSERTING.with(|inserting| *inserting.borrow() == key);
        if !replaced && entry.expires_ms.load(Relaxed) > now_ms() {
            self.0.live_evicted.store(true, Relaxed);
        }
    }
}

thread_local! {
    /// The key this thread is inserting, for [`WatchEvictions`] (which
    /// runs inside the insert, on the same thread).
    static INSERTING: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

pub(crate) struct MemoryStore {
    cache: Cache<String, Arc<Entry>, EntryWeight, foldhash::fast::RandomState, WatchEvictions>,
    /// The weight of an entry of no size.
    floor: u64,
    watch: Arc<Watch>,
    /// When (ms, [`now_ms`]) the next sweep may run.
    next_sweep_ms: AtomicU64,
    /// The locks of `lock = true` and of `stale`/`early` refreshes, held as
    /// Redis holds them (`SET NX PX`, released by compare-and-delete).
    /// In-process coalescing already gives a miss one computation per key;
    /// a refresh that failed keeps its lock until the lease ends, so that
    /// the hits meanwhile are served the old value instead of each running
    /// the failing body again. Apart from the entries: a lock is neither
    /// evicted to make room nor weighed against the budget.
    locks: std::sync::Mutex<Locks>,
}

/// Lock tokens and deadlines by lock key.
#[derive(Default)]
struct Locks {
    held: std::collections::HashMap<String, (String, u64)>,
    /// Expired locks are swept out when this many are kept (then twice
    /// what is left), so that keys locked once do not pile up.
    sweep_at: usize,
}

/// The fewest locks kept before a sweep.
const LOCKS_SWEEP_MIN: usize = 64;

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.cache.len())
            .field("weight", &self.cache.weight())
            .field("capacity", &self.cache.capacity())
            .finish()
    }
}

impl MemoryStore {
    /// A store of at most `max_entries` entries and `max_bytes` bytes, for
    /// entries of up to `largest` bytes.
    pub(crate) fn new(max_entries: usize, max_bytes: u64, largest: u64) -> Self {
        let layout = Layout::new(max_entries as u64, max_bytes, largest);
        let watch = Arc::new(Watch {
            earliest_deadline_ms: AtomicU64::new(u64::MAX),
            live_evicted: AtomicBool::new(false),
        });
        let cache = Cache::with_options(
            layout.options(),
            EntryWeight,
            Default::default(),
            WatchEvictions(watch.clone()),
        );
        Self {
            cache,
            floor: layout.floor,
            watch,
            next_sweep_ms: AtomicU64::new(0),
            locks: Default::default(),
        }
    }

    /// Sweeps expired entries out if an insert evicted a live entry while
    /// an expired one may have held room (see the module docs).
    fn sweep_expired_if_evicting_live(&self) {
        if !self.watch.live_evicted.load(Relaxed) {
            return;
        }
        let now = now_ms();
        if now < self.watch.earliest_deadline_ms.load(Relaxed) {
            // Nothing expired: that was eviction as usual.
            self.watch.live_evicted.store(false, Relaxed);
            return;
        }
        let due = self.next_sweep_ms.load(Relaxed);
        let next = now.saturating_add(SWEEP_EVERY.as_millis() as u64);
        // One thread sweeps; the others insert as they would have.
        if now < due
            || self
                .next_sweep_ms
                .compare_exchange(due, next, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        self.watch.live_evicted.store(false, Relaxed);
        // The earliest deadline is found again among the entries kept. An
        // entry inserted meanwhile lowers it itself, after its insert: if
        // that came before this reset, the pass sees the entry.
        self.watch.earliest_deadline_ms.store(u64::MAX, Relaxed);
        self.cache.retain(|_, e| {
            let expires = e.expires_ms.load(Relaxed);
            if expires > now {
                self.watch.earliest_deadline_ms.fetch_min(expires, Relaxed);
            }
            expires > now
        });
    }

    /// Sets `entry`'s deadline.
    fn set_deadline(&self, entry: &Entry, ms: u64) {
        entry.expires_ms.store(ms, Relaxed);
        self.watch.earliest_deadline_ms.fetch_min(ms, Relaxed);
    }

    /// Takes the lock `lock_key` for `lease` unless someone else holds it;
    /// whether it was taken (a lock that holds `token` already is taken
    /// again, as Redis's script does).
    pub(crate) fn try_lock(&self, lock_key: &str, token: &str, lease: Duration) -> bool {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        if locks
            .held
            .get(lock_key)
            .is_some_and(|(held, ends)| *ends > now && held != token)
        {
            return false;
        }
        if locks.held.len() >= locks.sweep_at.max(LOCKS_SWEEP_MIN) {
            locks.held.retain(|_, &mut (_, ends)| ends > now);
            locks.sweep_at = locks.held.len() * 2;
        }
        locks
            .held
            .insert(lock_key.to_owned(), (token.to_owned(), deadline(lease)));
        true
    }

    /// Extends `lock_key` to `lease` from now if it is live and holds
    /// `token`; whether it did.
    pub(crate) fn renew(&self, lock_key: &str, token: &str, lease: Duration) -> bool {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        match locks.held.get_mut(lock_key) {
            Some((held, ends)) if held == token && *ends > now_ms() => {
                *ends = deadline(lease);
                true
            }
            _ => false,
        }
    }

    /// Releases `lock_key` if it still holds `token`.
    pub(crate) fn unlock(&self, lock_key: &str, token: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks
            .held
            .get(lock_key)
            .is_some_and(|(held, _)| held == token)
        {
            locks.held.remove(lock_key);
        }
    }

    /// The entry under `key`; with `touch`, its lifetime restarts.
    pub(crate) fn get(&self, key: &str, touch: Option<Duration>) -> Option<Arc<[u8]>> {
        let touch = touch.map(|to| super::Touch {
            to,
            unless_below: Duration::ZERO,
        });
        self.read(key, touch).map(|(bytes, _)| bytes)
    }

    /// [`MemoryStore::get`], with what was left of the entry's lifetime
    /// just before this read (which may restart it, as `touch` says).
    pub(crate) fn get_with_left(
        &self,
        key: &str,
        touch: Option<super::Touch>,
    ) -> (Option<super::Payload>, Option<Duration>) {
        match self.read(key, touch) {
            Some((bytes, left)) => (Some(super::Payload::Shared(bytes)), Some(left)),
            None => (None, None),
        }
    }

    /// The live entry under `key` and what was left of its lifetime; with
    /// `touch`, its lifetime restarts (unless less than its `unless_below`
    /// was left). An expired one is removed.
    fn read(&self, key: &str, touch: Option<super::Touch>) -> Option<(Arc<[u8]>, Duration)> {
        let entry = self.cache.get(key)?;
        let now = now_ms();
        let expires = entry.expires_ms.load(Relaxed);
        if expires <= now {
            self.cache.remove_if(key, |e| Arc::ptr_eq(e, &entry));
            return None;
        }
        let left = Duration::from_millis(expires - now);
        if let Some(touch) = touch.filter(|touch| left >= touch.unless_below) {
            self.set_deadline(&entry, deadline(touch.to));
        }
        Some((entry.bytes.clone(), left))
    }

    /// Sets what is left of `key`'s lifetime (zero: removes it), if it is
    /// live and still holds `bytes`.
    pub(crate) fn expire_if_same(&self, key: &str, bytes: &[u8], left: Duration) {
        let Some(entry) = self.cache.get(key) else {
            return;
        };
        if entry.expires_ms.load(Relaxed) <= now_ms() || *entry.bytes != *bytes {
            return;
        }
        if left.is_zero() {
            self.cache.remove_if(key, |e| Arc::ptr_eq(e, &entry));
        } else {
            self.set_deadline(&entry, deadline(left));
        }
    }

    pub(crate) fn set(&self, key: &str, bytes: &[u8], ttl: Duration) {
        let weight = (bytes.len() as u64 + key.len() as u64).max(self.floor);
        self.sweep_expired_if_evicting_live();
        let expires = deadline(ttl);
        let entry = Entry {
            bytes: bytes.into(),
            expires_ms: AtomicU64::new(expires),
            weight,
        };
        INSERTING.with(|inserting| {
            let mut inserting = inserting.borrow_mut();
            inserting.clear();
            inserting.push_str(key);
        });
        self.cache.insert(key.to_owned(), Arc::new(entry));
        // After the insert: see `sweep_expired_if_evicting_live`.
        self.watch.earliest_deadline_ms.fetch_min(expires, Relaxed);
    }

    pub(crate) fn del(&self, key: &str) -> bool {
        self.cache
            .remove(key)
            .is_some_and(|(_, e)| e.expires_ms.load(Relaxed) > now_ms())
    }

    /// Removes every live entry whose key satisfies `matches`; how many.
    pub(crate) fn remove_matching(&self, matches: impl Fn(&str) -> bool) -> u64 {
        let now = now_ms();
        let removed = AtomicU64::new(0);
        self.cache.retain(|k, e| {
            let hit = matches(k);
            if hit && e.expires_ms.load(Relaxed) > now {
                removed.fetch_add(1, Relaxed);
            }
            !hit
        });
        removed.into_inner()
    }

    /// Remaining lifetime of `key`, if present.
    #[cfg(test)]
    pub(crate) fn ttl(&self, key: &str) -> Option<Duration> {
        let entry = self.cache.peek(key)?;
        let left = entry.expires_ms.load(Relaxed).checked_sub(now_ms())?;
        Some(Duration::from_millis(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: u64 = 1 << 30;

    /// Locks as Redis holds them: one holder until the lease ends or its
    /// token releases it; expired locks do not pile up.
    #[test]
    fn locks_hold_until_released_or_expired() {
        let m = MemoryStore::new(10, BIG, BIG);
        let lease = Duration::from_secs(60);
        assert!(m.try_lock("k:lock", "a", lease));
        assert!(m.try_lock("k:lock", "a", lease), "a's already");
        assert!(!m.try_lock("k:lock", "b", lease), "held");
        m.unlock("k:lock", "b");
        assert!(!m.try_lock("k:lock", "b", lease), "not b's to release");
        m.unlock("k:lock", "a");
        assert!(m.try_lock("k:lock", "b", Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(m.try_lock("k:lock", "c", lease), "b's lease ended");
        for i in 0..100 {
            m.try_lock(&format!("short {i}:lock"), "t", Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(5));
        for i in 0..100 {
            m.try_lock(&format!("long {i}:lock"), "t", lease);
        }
        let kept = m.locks.lock().unwrap().held.len();
        assert!(kept < 201, "expired locks swept: {kept} kept");
    }

    /// A lifetime is set back only on the entry that was read: a value
    /// written since keeps its own.
    #[test]
    fn expire_if_same_spares_a_newer_value() {
        let m = MemoryStore::new(100, BIG, 1 << 20);
        m.set("k", b"old", Duration::from_secs(600));
        m.set("k", b"new", Duration::from_secs(600));
        m.expire_if_same("k", b"old", Duration::from_millis(1));
        assert!(m.ttl("k").unwrap() > Duration::from_secs(500));
        m.expire_if_same("k", b"new", Duration::from_secs(5));
        assert!(m.ttl("k").unwrap() <= Duration::from_secs(5));
        m.expire_if_same("k", b"new", Duration::ZERO);
        assert_eq!(m.get("k", None), None, "zero removes it");
    }

    /// In a store of `capacity` entries: `expired` entries that expire
    /// unread, then `live` new ones; how many of these are still held.
    fn live_kept_after(capacity: usize, expired: usize, live: usize) -> usize {
        let m = MemoryStore::new(capacity, BIG, 1 << 10);
        for i in 0..expired {
            m.set(&format!("short {i}"), b"v", Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..live {
            m.set(&format!("long {i}"), b"v", Duration::from_secs(600));
        }
        (0..live)
            .filter(|i| m.get(&format!("long {i}"), None).is_some())
            .count()
    }

    /// Expired entries nothing reads make room before live ones are
    /// evicted in their place: the first live entry evicted sets off the
    /// sweep, and is the only one lost.
    #[test]
    fn expired_entries_make_room_first() {
        let kept = live_kept_after(4, 4, 4);
        assert!(kept >= 3, "expired entries held room: {kept} of 4 kept");
        let kept = live_kept_after(1000, 800, 400);
        assert!(kept >= 390, "expired entries held room: {kept} of 400 kept");
    }

    /// A value replaced by a new one of its key made room for that key:
    /// it sets off no sweep.
    #[test]
    fn a_replaced_value_is_not_an_eviction() {
        let m = MemoryStore::new(1000, BIG, 1 << 10);
        m.set("short", b"v", Duration::from_millis(5));
        std::thread::sleep(Duration::from_millis(20));
        m.set("hot", b"1", Duration::from_secs(600));
        m.set("hot", b"2", Duration::from_secs(600));
        assert!(
            !m.watch.live_evicted.load(Relaxed),
            "a replaced value counted as a live entry evicted"
        );
    }

    #[test]
    fn set_get_expire() {
        let m = MemoryStore::new(100, BIG, 1);
        m.set("k", b"v", Duration::from_secs(3600));
        assert_eq!(m.get("k", None).as_deref(), Some(&b"v"[..]));
        // A short lifetime, waited out with a deadline rather than a sleep
        // of a guessed length.
        m.set("k", b"v", Duration::from_millis(20));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while m.get("k", None).is_some() {
            assert!(std::time::Instant::now() < deadline, "the entry expires");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(m.get("k", None), None, "and stays expired");
    }

    #[test]
    fn touch_extends() {
        let m = MemoryStore::new(100, BIG, 1);
        m.set("k", b"v", Duration::from_millis(50));
        m.get("k", Some(Duration::from_secs(10)));
        assert!(m.ttl("k").unwrap() > Duration::from_secs(9));
    }

    #[test]
    fn entry_count_is_bounded() {
        let m = MemoryStore::new(32, BIG, 1);
        for i in 0..1000 {
            m.set(&format!("k{i}"), b"v", Duration::from_secs(60));
        }
        assert!(m.cache.len() <= 32, "{} entries", m.cache.len());
        assert!(m.get("k999", None).is_some(), "newest entry kept");
    }

    /// The case the entry bound alone allowed: many large values.
    #[test]
    fn bytes_are_bounded() {
        let m = MemoryStore::new(100_000, 1 << 20, 1);
        let value = vec![7u8; 64 << 10];
        for i in 0..200 {
            m.set(&format!("k{i}"), &value, Duration::from_secs(60));
        }
        assert!(m.cache.weight() <= 1 << 20, "{} bytes", m.cache.weight());
        let held: usize = (0..200)
            .filter(|i| m.get(&format!("k{i}"), None).is_some())
            .count();
        assert!(held <= 16, "{held} values of 64 KiB in 1 MiB");
        assert!(held > 0);
    }

    #[test]
    fn del_reports_presence() {
        let m = MemoryStore::new(10, BIG, 1);
        m.set("k", b"v", Duration::from_secs(1));
        assert!(m.del("k"));
        assert!(!m.del("k"));
    }

    #[test]
    fn remove_matching_counts_live_entries() {
        let m = MemoryStore::new(100, BIG, 1);
        m.set("a:1", b"v", Duration::from_secs(60));
        m.set("a:2", b"v", Duration::from_secs(60));
        m.set("b:1", b"v", Duration::from_secs(60));
        assert_eq!(m.remove_matching(|k| k.starts_with("a:")), 2);
        assert!(m.get("b:1", None).is_some());
        assert!(m.get("a:1", None).is_none());
    }

    #[test]
    fn a_store_of_n_holds_n_entries_and_never_more() {
        for n in 1..=3usize {
            let m = MemoryStore::new(n, BIG, 8 << 20);
            for i in 0..n {
                m.set(&format!("k{i}"), b"v", Duration::from_secs(60));
            }
            for i in 0..n {
                assert!(m.get(&format!("k{i}"), None).is_some(), "{n} entries: k{i}");
            }
            for i in n..100 {
                m.set(&format!("k{i}"), b"v", Duration::from_secs(60));
            }
            assert_eq!(m.cache.len(), n, "{n} entries after 100 more");
            assert!(m.get("k99", None).is_some(), "the newest is held");
        }
    }

    #[test]
    fn the_largest_value_is_held() {
        // Room for eight values of the largest size, 8 MiB.
        let m = MemoryStore::new(100_000, 64 << 20, 8 << 20);
        let value = vec![7u8; 8 << 20];
        m.set("ns:p:big", &value, Duration::from_secs(60));
        assert_eq!(m.get("ns:p:big", None).map(|v| v.len()), Some(8 << 20));
        // An entry weighing the whole budget of a store of one.
        let m = MemoryStore::new(1, 1 << 20, 1 << 20);
        let key = "ns:p:whole";
        let value = vec![7u8; (1 << 20) - key.len()];
        m.set(key, &value, Duration::from_secs(60));
        assert!(m.get(key, None).is_some());
        assert!(m.cache.weight() <= 1 << 20, "{} bytes", m.cache.weight());
    }
}
