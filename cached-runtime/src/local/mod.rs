//! The `local = N` level: decoded values held in this process in front of
//! the store, so a hot key costs no round trip and no decode.
//!
//! Each function with `local` has its own [`LocalLevel`], a
//! [`quick_cache`] cache bounded both by N entries and by
//! `local_max_bytes`: an entry weighs its estimated size, but never less
//! than `local_max_bytes / N`, so at most N entries fit and their sizes
//! add up to at most the budget. Eviction is quick_cache's CLOCK-Pro, O(1).
//! Each entry carries a deadline: the end of the store entry's fresh
//! lifetime as its header tells it, never later.
//!
//! Coherence ([`channel`]): every change of an entry (a miss that stores,
//! `_refresh`, `_invalidate`, `invalidate_args`, `invalidate_prefix`, the
//! PostgreSQL listener) is published on `{namespace}:__invalidate`; each
//! process removes what it names from its levels. While that channel is
//! not connected, levels are emptied and bypassed. A lookup that races an
//! invalidation never stores what it read: each level counts the
//! invalidations it has seen, and a value read before the count moved is
//! dropped (see [`LocalLevel::put`]).

pub(crate) mod channel;
mod probe;

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use quick_cache::{OptionsBuilder, Weighter};

/// A held value, type-erased: the level belongs to one function, whose
/// value type is the only one ever stored in it.
type Held = Arc<dyn Any + Send + Sync>;

#[derive(Clone)]
struct Slot {
    value: Held,
    expires_at: Instant,
    weight: u64,
}

#[derive(Clone, Copy)]
struct SlotWeight;

impl Weighter<String, Slot> for SlotWeight {
    fn weight(&self, _key: &String, slot: &Slot) -> u64 {
        slot.weight
    }
}

/// A value read before this point may be held only if nothing was
/// invalidated since: see [`LocalLevel::ticket`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

/// One function's in-process level.
pub(crate) struct LocalLevel {
    cache: Cache<String, Slot, SlotWeight, foldhash::fast::RandomState>,
    /// The weight of an entry of no size: about `max_bytes / entries`
    /// ([`Layout`]).
    floor: u64,
    /// Invalidations seen by this level (bumped before entries go).
    seq: AtomicU64,
}

impl std::fmt::Debug for LocalLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLevel")
            .field("entries", &self.cache.len())
            .field("weight", &self.cache.weight())
            .field("capacity", &self.cache.capacity())
            .finish_non_exhaustive()
    }
}

/// Shards of a bounded cache. Each shard holds `max_bytes / shards` and an
/// entry never spans shards, so: never more shards than `entries / 32`
/// (quick_cache halves the shards of fewer expected entries anyway, and a
/// shard must hold a whole number of entries: see [`Layout`]), nor than
/// `max_bytes / largest` (the largest value allowed must fit one shard),
/// and at most 8 (little contention is left beyond).
pub(crate) fn shards_for(entries: u64, max_bytes: u64, largest: u64) -> usize {
    let limit = (entries / 32).min(max_bytes / largest.max(1)).clamp(1, 8);
    let mut shards = 1usize;
    while (shards as u64) * 2 <= limit {
        shards *= 2;
    }
    shards
}

/// quick_cache's default share of a shard for its hot entries. It admits
/// no entry weighing more than that share (see `CacheShard::insert`), so
/// the share is raised where a floor-weight or a largest entry needs more.
const HOT_ALLOCATION: f64 = 0.97;

/// Weight allowed beyond the largest value: its key (namespace, prefix
/// and digest) and, in a level, the value's inline size. A value of the
/// largest size under a longer key may not fit a shard.
const ENTRY_ROOM: u64 = 256;

/// How a cache of at most `entries` entries and `max_bytes` weight is
/// laid out in quick_cache, whose only bound is the weight of each shard.
///
/// Every entry weighs at least `floor`, and each shard holds exactly
/// `entries / shards` floor weights: so no shard holds more than its share
/// of entries, all of them hold at most `entries` and weigh at most
/// `max_bytes` (the weight left over by the rounding is unused), and a
/// cache of one shard holds exactly `entries` entries of no size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Layout {
    pub(crate) shards: usize,
    /// The weight of an entry of no size.
    pub(crate) floor: u64,
    /// The weight one shard holds.
    pub(crate) shard_capacity: u64,
    /// The share of a shard for hot entries: enough to admit both an
    /// entry of the floor weight and the largest entry that fits a shard.
    pub(crate) hot_allocation: f64,
    /// Entries expected (quick_cache sizes its ghost list by them).
    estimated_items: usize,
}

impl Layout {
    /// The layout for `entries` entries, `max_bytes` bytes and values of
    /// up to `largest` bytes.
    pub(crate) fn new(entries: u64, max_bytes: u64, largest: u64) -> Self {
        // Every entry weighs at least a byte: more entries than bytes
        // cannot be held, and the byte budget is never raised.
        let max_bytes = max_bytes.max(1);
        let entries = entries.clamp(1, max_bytes);
        let largest = largest.saturating_add(ENTRY_ROOM);
        let mut shards = shards_for(entries, max_bytes, largest) as u64;
        // Rounding to whole floor weights can leave a shard just short of
        // the largest entry; fewer, larger shards hold it.
        while shards > 1 && Self::capacity_of(entries, max_bytes, shards) < largest {
            shards /= 2;
        }
        let per_shard = entries / shards;
        let floor = max_bytes / (shards * per_shard);
        let shard_capacity = per_shard * floor;
        let admitted = largest.min(shard_capacity).max(floor);
        Self {
            shards: shards as usize,
            floor,
            shard_capacity,
            hot_allocation: Self::hot_share(admitted, shard_capacity),
            estimated_items: entries.min(1 << 20) as usize,
        }
    }

    /// The weight a shard holds when there are `shards`.
    fn capacity_of(entries: u64, max_bytes: u64, shards: u64) -> u64 {
        let per_shard = entries / shards;
        per_shard * (max_bytes / (shards * per_shard))
    }

    /// The least hot share, from quick_cache's default up, whose hot
    /// target admits `weight` in a shard of `capacity`. quick_cache
    /// computes the target as `(capacity as f64 * share) as u64`; the half
    /// unit keeps the product from rounding down below `weight`.
    fn hot_share(weight: u64, capacity: u64) -> f64 {
        let needed = (weight as f64 + 0.5) / capacity.max(1) as f64;
        needed.clamp(HOT_ALLOCATION, 1.0)
    }

    /// The weight every shard together holds.
    pub(crate) fn capacity(&self) -> u64 {
        self.shard_capacity * self.shards as u64
    }

    /// quick_cache's options for this layout.
    pub(crate) fn options(&self) -> quick_cache::Options {
        OptionsBuilder::new()
            .estimated_items_capacity(self.estimated_items)
            .weight_capacity(self.capacity())
            .shards(self.shards)
            .hot_allocation(self.hot_allocation)
            .build()
            .expect("valid cache options")
    }
}

impl LocalLevel {
    /// A level of at most `entries` values and `max_bytes` estimated bytes,
    /// for values of up to `largest` bytes.
    pub(crate) fn new(entries: u64, max_bytes: u64, largest: u64) -> Self {
        let layout = Layout::new(entries, max_bytes, largest);
        let cache = Cache::with_options(
            layout.options(),
            SlotWeight,
            Default::default(),
            Default::default(),
        );
        Self {
            cache,
            floor: layout.floor,
            seq: AtomicU64::new(0),
        }
    }

    /// The value held under `key`, if it is still within its deadline.
    pub(crate) fn get<V: Clone + 'static>(&self, key: &str) -> Option<V> {
        let slot = self.cache.get(key)?;
        if slot.expires_at <= Instant::now() {
            self.cache.remove(key);
            return None;
        }
        slot.value.downcast_ref::<V>().cloned()
    }

    /// Taken before reading the store: the value read may be held only if
    /// no invalidation reached this level meanwhile.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.seq.load(SeqCst))
    }

    /// Holds `value` under `key` for `lifetime`, weighing `bytes` (its
    /// estimated size), unless an invalidation came after `ticket`.
    pub(crate) fn put<V: Send + Sync + 'static>(
        &self,
        ticket: Ticket,
        key: &str,
        value: V,
        bytes: usize,
        lifetime: Duration,
    ) {
        if lifetime.is_zero() || self.seq.load(SeqCst) != ticket.0 {
            return;
        }
        let Some(expires_at) = Instant::now().checked_add(lifetime) else {
            return;
        };
        let weight =
            (bytes as u64 + key.len() as u64 + std::mem::size_of::<V>() as u64).max(self.floor);
        let slot = Slot {
            value: Arc::new(value),
            expires_at,
            weight,
        };
        self.cache.insert(key.to_owned(), slot);
        // An invalidation between the check above and the insert removed
        // nothing (the entry was not there yet); it did move the count,
        // which this second look sees.
        if self.seq.load(SeqCst) != ticket.0 {
            self.cache.remove(key);
        }
    }

    /// Holds `value`, just written to the store by this process, in place
    /// of whatever was held: a read that started before the write (it took
    /// an older ticket) can no longer hold its older value over this one.
    /// Holds nothing if another change reached the level since `ticket`
    /// (taken before the write).
    pub(crate) fn replace<V: Send + Sync + 'static>(
        &self,
        ticket: Ticket,
        key: &str,
        value: V,
        bytes: usize,
        lifetime: Duration,
    ) {
        match self
            .seq
            .compare_exchange(ticket.0, ticket.0 + 1, SeqCst, SeqCst)
        {
            Ok(_) => {
                self.cache.remove(key);
                self.put(Ticket(ticket.0 + 1), key, value, bytes, lifetime);
            }
            Err(_) => self.invalidate(key),
        }
    }

    /// Drops `key` (an invalidation of it).
    pub(crate) fn invalidate(&self, key: &str) {
        self.seq.fetch_add(1, SeqCst);
        self.cache.remove(key);
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        self.seq.fetch_add(1, SeqCst);
        self.cache.clear();
    }

    /// Entries held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.cache.len()
    }

    /// Their total weight.
    #[cfg(test)]
    pub(crate) fn weight(&self) -> u64 {
        self.cache.weight()
    }
}

/// The `local` level as the call path sees it: [`Off`] for functions
/// without one (no bounds on their value type), [`On`] for the others.
pub(crate) trait Near<V> {
    /// The held value of `key`, if any.
    fn get(&self, key: &str) -> Option<V>;
    /// See [`LocalLevel::ticket`]; `None` when nothing may be held.
    fn ticket(&self) -> Option<Ticket>;
    /// Holds a clone of `value`; see [`LocalLevel::put`].
    fn hold(&self, ticket: Option<Ticket>, key: &str, value: &V, bytes: usize, lifetime: Duration);
    /// Holds a clone of `value` this process just wrote; see
    /// [`LocalLevel::replace`].
    fn replace(
        &self,
        ticket: Option<Ticket>,
        key: &str,
        value: &V,
        bytes: usize,
        lifetime: Duration,
    );
    /// Whether a change of this function's entries must be published.
    fn publishes(&self) -> bool;
}

/// No `local` level.
pub(crate) struct Off;

impl<V> Near<V> for Off {
    #[inline]
    fn get(&self, _key: &str) -> Option<V> {
        None
    }
    #[inline]
    fn ticket(&self) -> Option<Ticket> {
        None
    }
    #[inline]
    fn hold(&self, _: Option<Ticket>, _: &str, _: &V, _: usize, _: Duration) {}
    #[inline]
    fn replace(&self, _: Option<Ticket>, _: &str, _: &V, _: usize, _: Duration) {}
    #[inline]
    fn publishes(&self) -> bool {
        false
    }
}

/// A `local` level; `live` says whether it may serve and be filled now
/// (see [`channel::Channel::is_live`]).
pub(crate) struct On<'a> {
    pub(crate) level: &'a LocalLevel,
    pub(crate) live: bool,
}

impl<V: Clone + Send + Sync + 'static> Near<V> for On<'_> {
    #[inline]
    fn get(&self, key: &str) -> Option<V> {
        if self.live {
            self.level.get(key)
        } else {
            None
        }
    }
    #[inline]
    fn ticket(&self) -> Option<Ticket> {
        self.live.then(|| self.level.ticket())
    }
    fn hold(&self, ticket: Option<Ticket>, key: &str, value: &V, bytes: usize, lifetime: Duration) {
        if let Some(ticket) = ticket {
            self.level.put(ticket, key, value.clone(), bytes, lifetime);
        }
    }
    fn replace(
        &self,
        ticket: Option<Ticket>,
        key: &str,
        value: &V,
        bytes: usize,
        lifetime: Duration,
    ) {
        // The other levels of this process that may hold the key (the same
        // function under another cache on this namespace) drop it: the
        // message published for other processes skips this one.
        invalidate_key_elsewhere(key, self.level);
        match ticket {
            Some(ticket) => self
                .level
                .replace(ticket, key, value.clone(), bytes, lifetime),
            // Not live: nothing is served; still, drop what was held.
            None => self.level.invalidate(key),
        }
    }
    #[inline]
    fn publishes(&self) -> bool {
        true
    }
}

/// Every level of this process, by key head (`{namespace}:{prefix}:`),
/// whatever cache it belongs to: two caches of one process on one
/// namespace share entries, so a change reaches both. Held weakly: a
/// level lives as long as its function's binding, which a dropped
/// [`crate::Cache`] takes with it.
type Levels = Mutex<HashMap<String, Vec<Weak<LocalLevel>>>>;

fn levels() -> &'static Levels {
    static LEVELS: OnceLock<Levels> = OnceLock::new();
    LEVELS.get_or_init(Default::default)
}

/// Makes `level` reachable by invalidations of keys under `head`.
pub(crate) fn register(head: &str, level: &Arc<LocalLevel>) {
    let mut levels = levels().lock().unwrap_or_else(|e| e.into_inner());
    // Levels of dropped caches, and heads left without a level, go at the
    // next registration: caches made and dropped one after another (per
    // tenant, per test namespace) leave nothing behind. A registration is
    // once per function and cache, so the sweep is cheap.
    levels.retain(|_, list| {
        list.retain(|l| l.strong_count() > 0);
        !list.is_empty()
    });
    levels
        .entry(head.to_owned())
        .or_default()
        .push(Arc::downgrade(level));
}

/// The levels holding keys under `head`.
fn levels_of(head: &str) -> Vec<Arc<LocalLevel>> {
    levels()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(head)
        .map(|list| list.iter().filter_map(Weak::upgrade).collect())
        .unwrap_or_default()
}

/// `{namespace}:{prefix}:` of an entry key.
fn head_of(key: &str) -> &str {
    key.rfind(':').map_or("", |i| &key[..=i])
}

/// Drops `key` from this process's levels.
pub(crate) fn invalidate_key(key: &str) {
    for level in levels_of(head_of(key)) {
        level.invalidate(key);
    }
}

/// Drops `key` from this process's levels but `own`.
fn invalidate_key_elsewhere(key: &str, own: &LocalLevel) {
    for level in levels_of(head_of(key)) {
        if !std::ptr::eq(Arc::as_ptr(&level), own) {
            level.invalidate(key);
        }
    }
}

/// Drops every entry under `head` from this process's levels.
pub(crate) fn invalidate_head(head: &str) {
    for level in levels_of(head) {
        level.clear();
    }
}

/// Empties every level of this process.
pub(crate) fn clear_all() {
    let all: Vec<_> = levels()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .flatten()
        .filter_map(Weak::upgrade)
        .collect();
    for level in all {
        level.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn holds_and_returns_clones() {
        let l = LocalLevel::new(10, 1 << 20, 1);
        l.put(l.ticket(), "ns:p:a", vec![1u8, 2], 2, LONG);
        assert_eq!(l.get::<Vec<u8>>("ns:p:a"), Some(vec![1, 2]));
        assert_eq!(l.get::<Vec<u8>>("ns:p:b"), None);
        // Another type under the same key is not served.
        assert_eq!(l.get::<String>("ns:p:a"), None);
    }

    #[test]
    fn an_own_write_wins_over_a_read_that_started_before_it() {
        let l = LocalLevel::new(10, 1 << 20, 1);
        // A reader takes its ticket and reads the old value...
        let reader = l.ticket();
        // ...meanwhile this process writes and holds the new one...
        let writer = l.ticket();
        l.replace(writer, "ns:p:a", 2u32, 4, LONG);
        assert_eq!(l.get::<u32>("ns:p:a"), Some(2));
        // ...so the reader's older value is not held over it.
        l.put(reader, "ns:p:a", 1u32, 4, LONG);
        assert_eq!(l.get::<u32>("ns:p:a"), Some(2));
    }

    #[test]
    fn an_own_write_after_another_change_holds_nothing() {
        let l = LocalLevel::new(10, 1 << 20, 1);
        l.put(l.ticket(), "ns:p:a", 1u32, 4, LONG);
        let writer = l.ticket();
        // Another process's change arrives between the write and the hold.
        l.invalidate("ns:p:a");
        l.replace(writer, "ns:p:a", 2u32, 4, LONG);
        assert_eq!(l.get::<u32>("ns:p:a"), None);
    }

    #[test]
    fn entry_bound_holds() {
        let l = LocalLevel::new(16, 1 << 30, 1);
        for i in 0..1000 {
            l.put(l.ticket(), &format!("ns:p:{i}"), i, 8, LONG);
        }
        assert!(l.len() <= 16, "{} entries", l.len());
        assert!(l.len() > 0);
    }

    #[test]
    fn byte_bound_holds() {
        let l = LocalLevel::new(1000, 100_000, 1);
        for i in 0..1000 {
            l.put(l.ticket(), &format!("ns:p:{i}"), i, 10_000, LONG);
        }
        assert!(l.weight() <= 100_000, "{} bytes", l.weight());
        assert!(l.len() <= 10, "{} entries of 10 KB in 100 KB", l.len());
        assert!(l.len() > 0);
    }

    /// More entries than bytes: the byte budget still binds (it was once
    /// raised to the entry count).
    #[test]
    fn byte_bound_holds_with_more_entries_than_bytes() {
        let l = LocalLevel::new(1_000_000, 10_000, 1);
        for i in 0..10_000 {
            l.put(l.ticket(), &format!("ns:p:{i}"), i, 100, LONG);
        }
        assert!(l.weight() <= 10_000, "{} bytes", l.weight());
        assert!(l.len() > 0);
    }

    /// A lifetime past what the clock can count holds nothing (the cache
    /// bounds lifetimes long before that) instead of panicking.
    #[test]
    fn an_endless_lifetime_holds_nothing() {
        let l = LocalLevel::new(10, 1 << 20, 1);
        l.put(l.ticket(), "ns:p:a", 1u32, 4, Duration::MAX);
        assert_eq!(l.get::<u32>("ns:p:a"), None);
    }

    #[test]
    fn deadline_is_kept() {
        let l = LocalLevel::new(10, 1 << 20, 1);
        l.put(l.ticket(), "ns:p:a", 1u32, 4, Duration::from_millis(20));
        assert_eq!(l.get::<u32>("ns:p:a"), Some(1));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(l.get::<u32>("ns:p:a"), None);
        l.put(l.ticket(), "ns:p:a", 1u32, 4, Duration::ZERO);
        assert_eq!(l.get::<u32>("ns:p:a"), None);
    }

    #[test]
    fn a_read_older_than_an_invalidation_is_not_held() {
        let l = LocalLevel::new(10, 1 << 20, 1);
        let ticket = l.ticket();
        l.invalidate("ns:p:a");
        l.put(ticket, "ns:p:a", 1u32, 4, LONG);
        assert_eq!(l.get::<u32>("ns:p:a"), None);
        l.put(l.ticket(), "ns:p:a", 2u32, 4, LONG);
        assert_eq!(l.get::<u32>("ns:p:a"), Some(2));
    }

    #[test]
    fn invalidations_reach_registered_levels() {
        let a = Arc::new(LocalLevel::new(10, 1 << 20, 1));
        let b = Arc::new(LocalLevel::new(10, 1 << 20, 1));
        register("unit-ns:a:", &a);
        register("unit-ns:b:", &b);
        a.put(a.ticket(), "unit-ns:a:k1", 1u8, 1, LONG);
        a.put(a.ticket(), "unit-ns:a:k2", 2u8, 1, LONG);
        b.put(b.ticket(), "unit-ns:b:k1", 3u8, 1, LONG);
        invalidate_key("unit-ns:a:k1");
        assert_eq!(a.get::<u8>("unit-ns:a:k1"), None);
        assert_eq!(a.get::<u8>("unit-ns:a:k2"), Some(2));
        invalidate_head("unit-ns:b:");
        assert_eq!(b.get::<u8>("unit-ns:b:k1"), None);
        assert_eq!(a.get::<u8>("unit-ns:a:k2"), Some(2));
    }

    #[test]
    fn shard_count_never_exceeds_entries() {
        assert_eq!(shards_for(1, 1 << 30, 1), 1);
        // Shards of fewer than 32 entries: quick_cache would merge them.
        assert_eq!(shards_for(3, 1 << 30, 1), 1);
        assert_eq!(shards_for(63, 1 << 30, 1), 1);
        assert_eq!(shards_for(64, 1 << 30, 1), 2);
        assert_eq!(shards_for(1000, 1 << 30, 1), 8);
        // The largest value fits one shard.
        assert_eq!(shards_for(1000, 64 << 20, 8 << 20), 8);
        assert_eq!(shards_for(1000, 64 << 10, 8 << 20), 1);
        assert_eq!(shards_for(1000, 32 << 20, 8 << 20), 4);
    }

    /// quick_cache's hot target for a shard of `capacity` and a hot share
    /// (`CacheShard::new`): it admits no entry weighing more.
    fn hot_target(capacity: u64, share: f64) -> u64 {
        ((capacity as f64 * share) as u64).clamp(capacity.min(1), capacity)
    }

    #[test]
    fn layouts_bound_entries_and_bytes_and_admit_the_largest() {
        let sizes = [1u64, 2, 3, 5, 31, 64, 100, 1000, 100_000, 1 << 21];
        let budgets = [1u64, 7, 1000, 100_000, 64 << 20, 1 << 30];
        let largest = [1u64, 1000, 8 << 20];
        for &entries in &sizes {
            for &max_bytes in &budgets {
                for &value in &largest {
                    let l = Layout::new(entries, max_bytes, value);
                    let case = format!("{entries} entries, {max_bytes} bytes, {value}: {l:?}");
                    let shards = l.shards as u64;
                    assert!(l.capacity() <= max_bytes.max(entries), "{case}");
                    // Every entry weighs the floor at least.
                    assert!(shards * (l.shard_capacity / l.floor) <= entries, "{case}");
                    let target = hot_target(l.shard_capacity, l.hot_allocation);
                    assert!(target >= l.floor, "{case}");
                    let entry = (value + ENTRY_ROOM).min(l.shard_capacity);
                    assert!(target >= entry, "{case}");
                    assert!(l.hot_allocation >= HOT_ALLOCATION, "{case}");
                }
            }
        }
    }

    /// Puts `count` values of no size into `l` under distinct keys.
    fn fill(l: &LocalLevel, count: u64) {
        for i in 0..count {
            l.put(l.ticket(), &format!("ns:p:{i}"), i, 0, LONG);
        }
    }

    #[test]
    fn a_level_of_n_holds_n_entries_and_never_more() {
        for n in 1..=3u64 {
            let l = LocalLevel::new(n, 1 << 30, 8 << 20);
            fill(&l, n);
            assert_eq!(l.len() as u64, n, "local = {n}");
            for i in 0..n {
                assert_eq!(l.get::<u64>(&format!("ns:p:{i}")), Some(i), "local = {n}");
            }
            fill(&l, 100);
            assert_eq!(l.len() as u64, n, "local = {n} after 100 more");
            assert!(l.get::<u64>("ns:p:99").is_some(), "the newest is held");
        }
    }

    #[test]
    fn the_largest_value_is_held() {
        // The default budgets: 64 MiB, values up to 8 MiB.
        let l = LocalLevel::new(1000, 64 << 20, 8 << 20);
        l.put(l.ticket(), "ns:p:big", vec![0u8; 0], 8 << 20, LONG);
        assert!(l.get::<Vec<u8>>("ns:p:big").is_some());
        // An entry weighing the whole budget of a level of one.
        let l = LocalLevel::new(1, 1 << 20, 1 << 20);
        let key = "ns:p:whole";
        let bytes = (1 << 20) - key.len() - std::mem::size_of::<u64>();
        l.put(l.ticket(), key, 1u64, bytes, LONG);
        assert_eq!(l.get::<u64>(key), Some(1));
        assert!(l.weight() <= 1 << 20, "{} bytes", l.weight());
        // One byte over the budget is not held.
        l.put(l.ticket(), "ns:p:over", 2u64, bytes + 2, LONG);
        assert_eq!(l.get::<u64>("ns:p:over"), None);
    }
}
