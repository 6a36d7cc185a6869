//! Where entries live: Redis, or the embedded in-process store. Both speak
//! in encoded bytes; neither knows about types.

mod breaker;
mod connect;
mod memory;
mod redis;
pub(crate) mod target;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use self::memory::MemoryStore;
pub(crate) use self::redis::glob_escape;
pub use self::redis::{RedisStore, ScanCursor};
use crate::error::StoreError;

/// Bytes read from a store.
#[derive(Debug)]
pub(crate) enum Payload {
    Shared(Arc<[u8]>),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Shared(b) => b,
            Payload::Owned(b) => b,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Store {
    Memory(MemoryStore),
    // Boxed: the Redis store is large and there is one per process.
    Redis(Box<RedisStore>),
}

fn px(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

fn get_cmd(key: &str, touch: Option<Duration>) -> ::redis::Cmd {
    match touch {
        // GETEX reads and restarts the lifetime in one round trip.
        Some(ttl) => {
            let mut cmd = ::redis::cmd("GETEX");
            cmd.arg(key).arg("PX").arg(px(ttl));
            cmd
        }
        None => {
            let mut cmd = ::redis::cmd("GET");
            cmd.arg(key);
            cmd
        }
    }
}

fn set_cmd(key: &str, value: &[u8], ttl: Duration) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd("SET");
    cmd.arg(key).arg(value).arg("PX").arg(px(ttl));
    cmd
}

fn del_cmd(key: &str) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd("UNLINK");
    cmd.arg(key);
    cmd
}

/// Deletes the lock only if it still holds our token, so a holder whose
/// lease ran out never removes the next holder's lock.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

fn lock_cmd(lock_key: &str, token: &str, lease: Duration) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd("SET");
    cmd.arg(lock_key)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(px(lease));
    cmd
}

fn unlock_cmd(lock_key: &str, token: &str) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd("EVAL");
    cmd.arg(UNLOCK).arg(1).arg(lock_key).arg(token);
    cmd
}

impl Store {
    /// The entry under `key`; with `touch`, its lifetime restarts.
    pub(crate) async fn get(
        &self,
        key: &str,
        touch: Option<Duration>,
    ) -> Result<Option<Payload>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.get(key, touch).map(Payload::Shared)),
            Store::Redis(r) => {
                let cmd = get_cmd(key, touch);
                r.run(|mut c| async move { cmd.query_async::<Option<Vec<u8>>>(&mut c).await })
                    .await
                    .map(|v| v.map(Payload::Owned))
            }
        }
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.set(key, value, ttl);
                Ok(())
            }
            Store::Redis(r) => {
                let cmd = set_cmd(key, value, ttl);
                r.run(|mut c| async move { cmd.query_async::<()>(&mut c).await })
                    .await
            }
        }
    }

    /// Removes `key`; true if an entry was there.
    pub(crate) async fn del(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.del(key)),
            Store::Redis(r) => {
                let cmd = del_cmd(key);
                r.run(|mut c| async move { cmd.query_async::<u64>(&mut c).await })
                    .await
                    .map(|n| n > 0)
            }
        }
    }

    /// [`Store::get`] for sync callers.
    pub(crate) fn get_sync(
        &self,
        key: &str,
        touch: Option<Duration>,
    ) -> Result<Option<Payload>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.get(key, touch).map(Payload::Shared)),
            Store::Redis(r) => r
                .run_sync(|c| get_cmd(key, touch).query::<Option<Vec<u8>>>(c))
                .map(|v| v.map(Payload::Owned)),
        }
    }

    /// [`Store::set`] for sync callers.
    pub(crate) fn set_sync(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.set(key, value, ttl);
                Ok(())
            }
            Store::Redis(r) => r.run_sync(|c| set_cmd(key, value, ttl).query::<()>(c)),
        }
    }

    /// [`Store::del`] for sync callers.
    pub(crate) fn del_sync(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.del(key)),
            Store::Redis(r) => r.run_sync(|c| del_cmd(key).query::<u64>(c)).map(|n| n > 0),
        }
    }

    /// Takes the lock `lock_key` for `lease` unless someone holds it. The
    /// embedded store serves one process, where in-process coalescing
    /// already gives one computation per key: its lock always succeeds.
    pub(crate) async fn try_lock(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(_) => Ok(true),
            Store::Redis(r) => {
                let cmd = lock_cmd(lock_key, token, lease);
                r.run(|mut c| async move { cmd.query_async::<Option<String>>(&mut c).await })
                    .await
                    .map(|ok| ok.is_some())
            }
        }
    }

    /// Releases `lock_key` if it still holds `token`.
    pub(crate) async fn unlock(&self, lock_key: &str, token: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => {
                let cmd = unlock_cmd(lock_key, token);
                r.run(|mut c| async move { cmd.query_async::<i64>(&mut c).await })
                    .await
                    .map(drop)
            }
        }
    }

    /// [`Store::try_lock`] for sync callers.
    pub(crate) fn try_lock_sync(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(_) => Ok(true),
            Store::Redis(r) => r
                .run_sync(|c| lock_cmd(lock_key, token, lease).query::<Option<String>>(c))
                .map(|ok| ok.is_some()),
        }
    }

    /// [`Store::unlock`] for sync callers.
    pub(crate) fn unlock_sync(&self, lock_key: &str, token: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => r
                .run_sync(|c| unlock_cmd(lock_key, token).query::<i64>(c))
                .map(drop),
        }
    }

    /// The Redis store, if that is what this is.
    pub(crate) fn redis(&self) -> Option<&RedisStore> {
        match self {
            Store::Redis(r) => Some(r),
            Store::Memory(_) => None,
        }
    }
}
