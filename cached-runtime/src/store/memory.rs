//! The embedded in-process store: what serves when no Redis is configured,
//! so a program runs the same on a laptop with nothing installed.
//!
//! Sharded mutex-protected maps of encoded entries with deadlines. Expired
//! entries are dropped when met; a full shard first sweeps its expired
//! entries, then evicts the entry closest to expiry.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

#[derive(Debug)]
struct Entry {
    bytes: Arc<[u8]>,
    expires_at: Instant,
}

#[derive(Debug)]
pub(crate) struct MemoryStore {
    shards: Box<[Mutex<HashMap<String, Entry>>]>,
    hasher: RandomState,
    max_per_shard: usize,
}

impl MemoryStore {
    pub(crate) fn new(max_entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            max_per_shard: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while holding the lock cannot leave an entry half-written.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry under `key`; with `touch`, its lifetime restarts.
    pub(crate) fn get(&self, key: &str, touch: Option<Duration>) -> Option<Arc<[u8]>> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let entry = shard.get_mut(key)?;
        if entry.expires_at <= now {
            shard.remove(key);
            return None;
        }
        if let Some(ttl) = touch {
            entry.expires_at = now + ttl;
        }
        Some(entry.bytes.clone())
    }

    pub(crate) fn set(&self, key: &str, bytes: &[u8], ttl: Duration) {
        let now = Instant::now();
        let mut shard = self.shard(key);
        if shard.len() >= self.max_per_shard && !shard.contains_key(key) {
            shard.retain(|_, e| e.expires_at > now);
            if shard.len() >= self.max_per_shard {
                let victim = shard
                    .iter()
                    .min_by_key(|(_, e)| e.expires_at)
                    .map(|(k, _)| k.clone());
                if let Some(victim) = victim {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            key.to_owned(),
            Entry {
                bytes: bytes.into(),
                expires_at: now + ttl,
            },
        );
    }

    pub(crate) fn del(&self, key: &str) -> bool {
        let now = Instant::now();
        self.shard(key)
            .remove(key)
            .is_some_and(|e| e.expires_at > now)
    }

    /// Removes every live entry whose key satisfies `matches`; how many.
    pub(crate) fn remove_matching(&self, matches: impl Fn(&str) -> bool) -> u64 {
        let now = Instant::now();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|k, e| {
                let hit = matches(k);
                removed += u64::from(hit && e.expires_at > now);
                !hit
            });
        }
        removed
    }

    /// Remaining lifetime of `key`, if present.
    #[cfg(test)]
    pub(crate) fn ttl(&self, key: &str) -> Option<Duration> {
        let shard = self.shard(key);
        shard
            .get(key)
            .and_then(|e| e.expires_at.checked_duration_since(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_expire() {
        let m = MemoryStore::new(100);
        m.set("k", b"v", Duration::from_secs(3600));
        assert_eq!(m.get("k", None).as_deref(), Some(&b"v"[..]));
        // A short lifetime, waited out with a deadline rather than a sleep
        // of a guessed length.
        m.set("k", b"v", Duration::from_millis(20));
        let deadline = Instant::now() + Duration::from_secs(30);
        while m.get("k", None).is_some() {
            assert!(Instant::now() < deadline, "the entry expires");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(m.get("k", None), None, "and stays expired");
    }

    #[test]
    fn touch_extends() {
        let m = MemoryStore::new(100);
        m.set("k", b"v", Duration::from_millis(50));
        m.get("k", Some(Duration::from_secs(10)));
        assert!(m.ttl("k").unwrap() > Duration::from_secs(9));
    }

    #[test]
    fn capacity_is_bounded() {
        let m = MemoryStore::new(32);
        for i in 0..1000 {
            m.set(&format!("k{i}"), b"v", Duration::from_secs(60));
        }
        let total: usize = m.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= 32, "{total} entries");
        assert!(m.get("k999", None).is_some(), "newest entry kept");
    }

    #[test]
    fn del_reports_presence() {
        let m = MemoryStore::new(10);
        m.set("k", b"v", Duration::from_secs(1));
        assert!(m.del("k"));
        assert!(!m.del("k"));
    }
}
