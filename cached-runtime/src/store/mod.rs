//! Where entries live: Redis, or the embedded in-process store. Both speak
//! in encoded bytes; neither knows about types.

mod breaker;
mod connect;
mod memory;
mod redis;
mod sentinel_watch;
pub(crate) mod target;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

pub(crate) use self::connect::PubSubSource;
pub(crate) use self::memory::MemoryStore;
pub(crate) use self::redis::{glob_escape, masters_in};
pub use self::redis::{RedisStore, ScanCursor};
pub(crate) use self::sentinel_watch::Switches;
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

/// Shared (`Arc`), so that work which outlives a call (a sync holder's
/// lock renewals) can own a handle; a clone is a reference count.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    Memory(Arc<MemoryStore>),
    Redis(Arc<RedisStore>),
}

fn px(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

/// How a read with `refresh` restarts the lifetime of the entry it finds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Touch {
    /// The lifetime it restarts: `ttl + stale`.
    pub(crate) to: Duration,
    /// No restart when less than this was left: the entry is in its stale
    /// window (nobody read it for `ttl`), which keeps running. Decided by
    /// the store in the same step as the read, so that no call dropped
    /// between a read and a correction can leave a stale entry fresh again.
    pub(crate) unless_below: Duration,
}

/// The entry's `PTTL`, then its bytes; restarted to `ARGV[1]` ms unless
/// less than `ARGV[2]` ms was left (no expiry: restarted, as `GETEX` does).
const GET_TOUCH_UNLESS_STALE: &str = r#"
local left = redis.call('PTTL', KEYS[1])
local bytes = redis.call('GET', KEYS[1])
if bytes and (left < 0 or left >= tonumber(ARGV[2])) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return {left, bytes}
"#;

static GET_TOUCH_UNLESS_STALE_SCRIPT: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(GET_TOUCH_UNLESS_STALE));

/// The entry's `PTTL` and bytes, in one round trip, the read restarting
/// its lifetime as `touch` says: a pipeline of `PTTL` and [`get_cmd`], or
/// [`GET_TOUCH_UNLESS_STALE`] when the restart depends on what is left.
enum ReadWithLeft {
    Pipeline(::redis::Pipeline),
    Script(::redis::ScriptInvocation<'static>),
}

impl ReadWithLeft {
    fn new(key: &str, touch: Option<Touch>) -> Self {
        match touch {
            Some(touch) if !touch.unless_below.is_zero() => {
                let mut invocation = GET_TOUCH_UNLESS_STALE_SCRIPT.key(key);
                // Rounded up: `left < unless_below` (stale) in whole ms is
                // `left < ceil(unless_below)`, so the store and the caller's
                // `freshness::sliding_age` judge the same `PTTL` alike.
                let below = touch.unless_below.as_nanos().div_ceil(1_000_000) as u64;
                invocation.arg(px(touch.to)).arg(below);
                ReadWithLeft::Script(invocation)
            }
            touch => {
                let mut pipe = ::redis::pipe();
                pipe.cmd("PTTL").arg(key);
                pipe.add_command(get_cmd(key, touch.map(|t| t.to)));
                ReadWithLeft::Pipeline(pipe)
            }
        }
    }

    async fn query_async(
        self,
        c: &mut impl ::redis::aio::ConnectionLike,
    ) -> ::redis::RedisResult<(i64, Option<Vec<u8>>)> {
        match self {
            ReadWithLeft::Pipeline(pipe) => pipe.query_async(c).await,
            ReadWithLeft::Script(invocation) => invocation.invoke_async(c).await,
        }
    }

    fn query(
        self,
        c: &mut impl ::redis::ConnectionLike,
    ) -> ::redis::RedisResult<(i64, Option<Vec<u8>>)> {
        match self {
            ReadWithLeft::Pipeline(pipe) => pipe.query(c),
            ReadWithLeft::Script(invocation) => invocation.invoke(c),
        }
    }
}

/// A `PTTL` reply as a lifetime: negative ones say there is no entry
/// (-2) or no expiry (-1).
fn left_of(pttl: i64) -> Option<Duration> {
    u64::try_from(pttl).ok().map(Duration::from_millis)
}

/// Sets what is left of an entry's lifetime (`ARGV[2]` ms; `0`: removes
/// it) only if it still holds the bytes read (`ARGV[1]`): a value written
/// since keeps its own.
const EXPIRE_IF_SAME: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '0' then
  return redis.call('DEL', KEYS[1])
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"#;

static EXPIRE_IF_SAME_SCRIPT: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(EXPIRE_IF_SAME));

/// [`EXPIRE_IF_SAME`] of `key` holding `bytes`, to `left`.
fn expire_if_same(key: &str, bytes: &[u8], left: Duration) -> ::redis::ScriptInvocation<'static> {
    let mut invocation = EXPIRE_IF_SAME_SCRIPT.key(key);
    let ms = if left.is_zero() { 0 } else { px(left) };
    invocation.arg(bytes).arg(ms);
    invocation
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

/// Takes the lock (`SET NX PX`), 1 if taken. A key there that is not a
/// string, or has no expiry, is no holder's (every lock is a string with a
/// lease): it is taken over, or it would hold every miss of its key for
/// the longest wait, for good. A lock that already holds this token was
/// taken by this very call, whose script ran twice: the client sent it
/// again after its first answer was late or its connection broke (the
/// cluster client retries so). It is taken, for the lease from now; a 0
/// would leave the call waiting for its own lock, and every other caller
/// with it, for a whole lease.
pub const LOCK: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' or redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// [`LOCK`] of `lock_key` for `token` and `lease`.
fn lock(lock_key: &str, token: &str, lease: Duration) -> ::redis::ScriptInvocation<'static> {
    let mut invocation = LOCK_SCRIPT.key(lock_key);
    invocation.arg(token).arg(px(lease));
    invocation
}

/// Extends the lock to a whole lease from now if it still holds our token:
/// a holder whose body runs longer than its lease keeps the others waiting
/// instead of letting one of them compute the same key.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

// The scripts, each sent as `EVALSHA` (its hash, not its text) and loaded
// by the client on the one `NOSCRIPT` reply after a server restart.
static LOCK_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(LOCK));
static UNLOCK_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(UNLOCK));
static RENEW_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(RENEW));
static SET_ANNOUNCED_SCRIPT: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(SET_ANNOUNCED));
static DEL_ANNOUNCED_SCRIPT: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(DEL_ANNOUNCED));

/// Removes an entry only if it still holds the bytes read (`ARGV[1]`),
/// and publishes the message that announces it in the same step, message
/// first (see [`SET_ANNOUNCED`]): a value written since keeps its own, and
/// no message goes for it.
const DEL_IF_SAME_ANNOUNCED: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return redis.call('UNLINK', KEYS[1])
"#;

static DEL_IF_SAME_ANNOUNCED_SCRIPT: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(DEL_IF_SAME_ANNOUNCED));

/// [`DEL_IF_SAME_ANNOUNCED`] of `key` holding `bytes`, with `news`.
fn del_if_same_announced(
    key: &str,
    bytes: &[u8],
    news: &Announcement,
) -> ::redis::ScriptInvocation<'static> {
    let mut invocation = DEL_IF_SAME_ANNOUNCED_SCRIPT.key(key);
    invocation.arg(bytes).arg(&news.channel).arg(&news.message);
    invocation
}

/// [`RENEW`] of `lock_key` for `token` and `lease`.
fn renew(lock_key: &str, token: &str, lease: Duration) -> ::redis::ScriptInvocation<'static> {
    let mut invocation = RENEW_SCRIPT.key(lock_key);
    invocation.arg(token).arg(px(lease));
    invocation
}

/// [`UNLOCK`] of `lock_key` for `token`.
fn unlock(lock_key: &str, token: &str) -> ::redis::ScriptInvocation<'static> {
    let mut invocation = UNLOCK_SCRIPT.key(lock_key);
    invocation.arg(token);
    invocation
}

/// Writes an entry and publishes the message that announces it, in one
/// step: Redis runs a script whole, so the entry never changes without its
/// message, even when the reply is lost (a client timeout while Redis was
/// slow, a dropped connection). The message goes first: a script is not
/// rolled back, and a `PUBLISH` refused (an ACL without the channel) must
/// stop the write, while a write refused after it (`OOM`) costs only a
/// needless invalidation. Subscribers get the message once the script is
/// done, so they never read the entry it replaces after it.
const SET_ANNOUNCED: &str = r#"
redis.call('PUBLISH', ARGV[3], ARGV[4])
return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
"#;

/// Removes an entry and publishes the message that announces it, in one
/// step, message first (see [`SET_ANNOUNCED`]); returns how many entries
/// went.
const DEL_ANNOUNCED: &str = r#"
redis.call('PUBLISH', ARGV[1], ARGV[2])
return redis.call('UNLINK', KEYS[1])
"#;

/// Removes entries and publishes the message that announces them, in one
/// step, message first (see [`SET_ANNOUNCED`]): a batch of a prefix's
/// invalidation. Returns how many entries went.
const DEL_ALL_ANNOUNCED: &str = r#"
redis.call('PUBLISH', ARGV[1], ARGV[2])
return redis.call('UNLINK', unpack(KEYS))
"#;

static DEL_ALL_ANNOUNCED_SCRIPT: LazyLock<::redis::Script> =
    LazyLock::new(|| ::redis::Script::new(DEL_ALL_ANNOUNCED));

/// [`SET_ANNOUNCED`] of `value` under `key` for `ttl`, with `news`.
fn set_announced(
    key: &str,
    value: &[u8],
    ttl: Duration,
    news: &Announcement,
) -> ::redis::ScriptInvocation<'static> {
    let mut invocation = SET_ANNOUNCED_SCRIPT.key(key);
    invocation
        .arg(value)
        .arg(px(ttl))
        .arg(&news.channel)
        .arg(&news.message);
    invocation
}

/// [`DEL_ANNOUNCED`] of `key`, with `news`.
fn del_announced(key: &str, news: &Announcement) -> ::redis::ScriptInvocation<'static> {
    let mut invocation = DEL_ANNOUNCED_SCRIPT.key(key);
    invocation.arg(&news.channel).arg(&news.message);
    invocation
}

/// A message sent once more after the removals it announces, also if the
/// call is dropped first (then from a task of its own, on the caller's
/// runtime).
struct AnnounceOnDrop {
    store: Store,
    /// Channel and message; `None` once sent.
    news: Option<(String, String)>,
}

impl AnnounceOnDrop {
    async fn send(mut self) -> Result<(), StoreError> {
        let Some((channel, message)) = self.news.take() else {
            return Ok(());
        };
        self.store.publish(&channel, &message).await
    }
}

impl Drop for AnnounceOnDrop {
    fn drop(&mut self) {
        let Some((channel, message)) = self.news.take() else {
            return;
        };
        let store = self.store.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = store.publish(&channel, &message).await {
                    tracing::debug!(error = %e, "prefix change not announced after a dropped call");
                }
            });
        }
    }
}

/// Removes `keys` (entries of one prefix) with `news` sent along, as
/// [`DEL_ALL_ANNOUNCED`]; how many were there.
///
/// On a cluster a script's keys must share a slot, and a batch from `SCAN`
/// spans about as many slots as keys: one script per slot would send one
/// message per key. So the message goes with the first slot's keys, in the
/// script; the other slots' keys follow with plain `UNLINK`s; and the
/// message goes again once they are done, for a copy taken in between.
/// Dropped before that, the call still sends it ([`AnnounceOnDrop`]).
pub(crate) async fn del_all_announced(
    r: &Arc<RedisStore>,
    keys: &[&str],
    news: &Announcement,
) -> Result<u64, StoreError> {
    if !r.is_cluster() {
        return del_announced_in_scripts(r, keys, news).await;
    }
    let mut by_slot: std::collections::HashMap<_, Vec<&str>> = Default::default();
    for key in keys {
        by_slot
            .entry(::redis::cluster_routing::Slot::for_key(key))
            .or_default()
            .push(key);
    }
    let mut groups = by_slot.into_values();
    let Some(first) = groups.next() else {
        return Ok(0);
    };
    let removed = del_announced_in_scripts(r, &first, news).await?;
    let again = AnnounceOnDrop {
        store: Store::Redis(r.clone()),
        news: Some((news.channel.clone(), news.message.clone())),
    };
    let unlinks = groups.map(|group| {
        let mut unlink = ::redis::cmd("UNLINK");
        unlink.arg(&group);
        r.run(|mut c| async move { unlink.query_async::<u64>(&mut c).await })
    });
    let unlinked = futures_util::future::try_join_all(unlinks).await;
    again.send().await?;
    Ok(removed + unlinked?.into_iter().sum::<u64>())
}

/// [`DEL_ALL_ANNOUNCED`] of `keys` (of one slot on a cluster), in as many
/// scripts as Lua's `unpack` needs (it takes a few thousand values at
/// most); how many were there.
async fn del_announced_in_scripts(
    r: &RedisStore,
    keys: &[&str],
    news: &Announcement,
) -> Result<u64, StoreError> {
    const MAX_KEYS: usize = 1000;
    let mut removed = 0;
    for chunk in keys.chunks(MAX_KEYS) {
        let mut invocation = DEL_ALL_ANNOUNCED_SCRIPT.prepare_invoke();
        for key in chunk {
            invocation.key(*key);
        }
        invocation.arg(&news.channel).arg(&news.message);
        removed += r
            .run(|mut c| async move { invocation.invoke_async::<u64>(&mut c).await })
            .await?;
    }
    Ok(removed)
}

/// A message for the other processes that goes with a write: `message`
/// published on `channel`; `nonce` numbers it among this process's.
#[derive(Debug)]
pub(crate) struct Announcement {
    pub(crate) channel: String,
    pub(crate) message: String,
    pub(crate) nonce: u64,
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

    /// [`Store::get`], with what was left of the entry's lifetime by the
    /// store's own clock just before this read (which may restart it),
    /// in the same round trip. `None`: no entry then, or one that does not
    /// expire.
    pub(crate) async fn get_with_left(
        &self,
        key: &str,
        touch: Option<Touch>,
    ) -> Result<(Option<Payload>, Option<Duration>), StoreError> {
        match self {
            Store::Memory(m) => Ok(m.get_with_left(key, touch)),
            Store::Redis(r) => {
                let read = ReadWithLeft::new(key, touch);
                r.run(|mut c| async move { read.query_async(&mut c).await })
                    .await
                    .map(|(pttl, bytes)| (bytes.map(Payload::Owned), left_of(pttl)))
            }
        }
    }

    /// [`Store::get_with_left`] for sync callers.
    pub(crate) fn get_with_left_sync(
        &self,
        key: &str,
        touch: Option<Touch>,
    ) -> Result<(Option<Payload>, Option<Duration>), StoreError> {
        match self {
            Store::Memory(m) => Ok(m.get_with_left(key, touch)),
            Store::Redis(r) => r
                .run_sync(|c| ReadWithLeft::new(key, touch).query(c))
                .map(|(pttl, bytes)| (bytes.map(Payload::Owned), left_of(pttl))),
        }
    }

    /// Sets what is left of the lifetime of the entry under `key` (zero:
    /// removes it), if it still holds `bytes`.
    pub(crate) async fn expire_if_same(
        &self,
        key: &str,
        bytes: &[u8],
        left: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.expire_if_same(key, bytes, left);
                Ok(())
            }
            Store::Redis(r) => {
                let invocation = expire_if_same(key, bytes, left);
                r.run(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
                    .await
                    .map(drop)
            }
        }
    }

    /// Removes the entry under `key` if it still holds `bytes`, with
    /// `news` published in the same step when it does.
    pub(crate) async fn del_if_same_announced(
        &self,
        key: &str,
        bytes: &[u8],
        news: &Announcement,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => self.expire_if_same(key, bytes, Duration::ZERO).await,
            Store::Redis(r) => {
                let invocation = del_if_same_announced(key, bytes, news);
                r.run(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
                    .await
                    .map(drop)
            }
        }
    }

    /// [`Store::del_if_same_announced`] for sync callers.
    pub(crate) fn del_if_same_announced_sync(
        &self,
        key: &str,
        bytes: &[u8],
        news: &Announcement,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => self.expire_if_same_sync(key, bytes, Duration::ZERO),
            Store::Redis(r) => r
                .run_sync(|c| del_if_same_announced(key, bytes, news).invoke::<i64>(c))
                .map(drop),
        }
    }

    /// [`Store::expire_if_same`] for sync callers.
    pub(crate) fn expire_if_same_sync(
        &self,
        key: &str,
        bytes: &[u8],
        left: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.expire_if_same(key, bytes, left);
                Ok(())
            }
            Store::Redis(r) => r
                .run_sync(|c| expire_if_same(key, bytes, left).invoke::<i64>(c))
                .map(drop),
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

    /// [`Store::set`], and `news` published with it in one step. The
    /// embedded store serves one process: nobody to tell.
    pub(crate) async fn set_announced(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        news: &Announcement,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => self.set(key, value, ttl).await,
            Store::Redis(r) => {
                let invocation = set_announced(key, value, ttl, news);
                r.run(|mut c| async move { invocation.invoke_async::<()>(&mut c).await })
                    .await
            }
        }
    }

    /// [`Store::del`], and `news` published with it in one step.
    pub(crate) async fn del_announced(
        &self,
        key: &str,
        news: &Announcement,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(_) => self.del(key).await,
            Store::Redis(r) => {
                let invocation = del_announced(key, news);
                r.run(|mut c| async move { invocation.invoke_async::<u64>(&mut c).await })
                    .await
                    .map(|n| n > 0)
            }
        }
    }

    /// Publishes `message` on `channel` (Redis only).
    pub(crate) async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let Store::Redis(r) = self else {
            return Ok(());
        };
        let mut publish = ::redis::cmd("PUBLISH");
        publish.arg(channel).arg(message);
        r.run(|mut c| async move { publish.query_async::<i64>(&mut c).await })
            .await
            .map(drop)
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

    /// [`Store::set_announced`] for sync callers.
    pub(crate) fn set_announced_sync(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        news: &Announcement,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => self.set_sync(key, value, ttl),
            Store::Redis(r) => r.run_sync(|c| set_announced(key, value, ttl, news).invoke::<()>(c)),
        }
    }

    /// [`Store::del_announced`] for sync callers.
    pub(crate) fn del_announced_sync(
        &self,
        key: &str,
        news: &Announcement,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(_) => self.del_sync(key),
            Store::Redis(r) => r
                .run_sync(|c| del_announced(key, news).invoke::<u64>(c))
                .map(|n| n > 0),
        }
    }

    /// [`Store::del`] for sync callers.
    pub(crate) fn del_sync(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.del(key)),
            Store::Redis(r) => r.run_sync(|c| del_cmd(key).query::<u64>(c)).map(|n| n > 0),
        }
    }

    /// Takes the lock `lock_key` for `lease` unless someone holds it.
    pub(crate) async fn try_lock(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.try_lock(lock_key, token, lease)),
            Store::Redis(r) => {
                let invocation = lock(lock_key, token, lease);
                r.run(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
                    .await
                    .map(|taken| taken == 1)
            }
        }
    }

    /// Extends `lock_key` to `lease` from now if it still holds `token`;
    /// whether it did.
    pub(crate) async fn renew(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.renew(lock_key, token, lease)),
            Store::Redis(r) => {
                let invocation = renew(lock_key, token, lease);
                r.run(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
                    .await
                    .map(|renewed| renewed == 1)
            }
        }
    }

    /// [`Store::renew`] for sync callers.
    pub(crate) fn renew_sync(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.renew(lock_key, token, lease)),
            Store::Redis(r) => r
                .run_sync(|c| renew(lock_key, token, lease).invoke::<i64>(c))
                .map(|renewed| renewed == 1),
        }
    }

    /// Releases `lock_key` if it still holds `token`.
    pub(crate) async fn unlock(&self, lock_key: &str, token: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.unlock(lock_key, token);
                Ok(())
            }
            Store::Redis(r) => {
                let invocation = unlock(lock_key, token);
                r.run(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
                    .await
                    .map(drop)
            }
        }
    }

    /// [`Store::unlock`] without waiting for it, for a holder that is
    /// going away (a panic, a dropped future); see
    /// [`RedisStore::release_soon`] for where it is sent from.
    pub(crate) fn unlock_soon(&self, lock_key: &str, token: &str) {
        match self {
            Store::Memory(m) => m.unlock(lock_key, token),
            Store::Redis(r) => {
                let (key, owned_token) = (lock_key.to_owned(), token.to_owned());
                r.release_soon(
                    move |mut c| {
                        let invocation = unlock(&key, &owned_token);
                        async move { invocation.invoke_async::<i64>(&mut c).await }
                    },
                    |r| {
                        if let Err(e) = r.run_sync(|c| unlock(lock_key, token).invoke::<i64>(c)) {
                            tracing::debug!(lock_key, error = %e, "an abandoned lock not released; it expires with its lease");
                        }
                    },
                );
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
            Store::Memory(m) => Ok(m.try_lock(lock_key, token, lease)),
            Store::Redis(r) => r
                .run_sync(|c| lock(lock_key, token, lease).invoke::<i64>(c))
                .map(|taken| taken == 1),
        }
    }

    /// [`Store::unlock`] for sync callers.
    pub(crate) fn unlock_sync(&self, lock_key: &str, token: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.unlock(lock_key, token);
                Ok(())
            }
            Store::Redis(r) => r
                .run_sync(|c| unlock(lock_key, token).invoke::<i64>(c))
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
