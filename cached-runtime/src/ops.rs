//! The store operations of the call path, once for async callers and once
//! for blocking ones, behind one trait, so that [`crate::flow`] is written
//! once.
//!
//! Sync cached functions run the same `async` flow through
//! [`block_on_ready`]: every [`BlockingIo`] operation completes before it
//! returns (it blocks the thread, as a sync function does), so the flow's
//! future is ready at its first poll and needs no runtime.

use std::future::Future;
use std::pin::pin;
use std::sync::mpsc::RecvTimeoutError;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::flight::{Follower, Turn};
use crate::store::{Announcement, Payload, Store, Touch};

/// What the call path asks of the store and of time.
pub(crate) trait Io {
    async fn get(&self, key: &str, touch: Option<Duration>) -> Result<Option<Payload>, StoreError>;
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// [`Io::get`], with what was left of the entry's lifetime by the
    /// store's clock just before this read, in the same round trip.
    async fn get_with_left(
        &self,
        key: &str,
        touch: Option<Touch>,
    ) -> Result<(Option<Payload>, Option<Duration>), StoreError>;
    /// Sets what is left of an entry's lifetime (zero: removes it), if it
    /// still holds `bytes`.
    async fn expire_if_same(
        &self,
        key: &str,
        bytes: &[u8],
        left: Duration,
    ) -> Result<(), StoreError>;
    async fn try_lock(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError>;
    async fn unlock(&self, lock_key: &str, token: &str) -> Result<(), StoreError>;
    /// Releases a lock whose holder is going away without finishing (its
    /// body panicked, its future was dropped), without awaiting: from a
    /// `Drop`. Best effort: a lock left behind ends with its lease.
    fn unlock_abandoned(&self, lock_key: &str, token: &str);
    /// Runs `body` while holding the lock `lock_key` (token `token`):
    /// renewed to a whole `lease` every third of it until the body is
    /// done, so that a body slower than its lease keeps the lock.
    async fn holding<F: Future>(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
        body: F,
    ) -> F::Output;
    async fn sleep(&self, duration: Duration);
    /// Waits for the leader of the follower's flight, for at most
    /// `patience`.
    async fn wait(&self, follower: Follower, patience: Duration) -> Turn;
    /// [`Io::set`], and `news` published with it in one step: the other
    /// processes' `local` levels hear of every write that happened.
    async fn set_announced(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        news: &Announcement,
    ) -> Result<(), StoreError>;
    /// Removes `key`; true if an entry was there.
    async fn del(&self, key: &str) -> Result<bool, StoreError>;
    /// [`Io::del`], and `news` published with it in one step.
    async fn del_announced(&self, key: &str, news: &Announcement) -> Result<bool, StoreError>;
    /// Removes `key` if it still holds `bytes` (a value written since
    /// keeps its own), with `news` published in the same step when given.
    async fn del_if_same(
        &self,
        key: &str,
        bytes: &[u8],
        news: Option<&Announcement>,
    ) -> Result<(), StoreError>;
}

/// How long a holder renews its lock at most: as long as the others wait
/// for it ([`crate::lease::LEASE_CEILING`]). A body still running then
/// loses the lock within a lease, and another caller may compute its key.
const RENEW_AT_MOST: Duration = crate::lease::LEASE_CEILING;

/// For `async fn`s: awaits the store.
pub(crate) struct AsyncIo<'a>(pub(crate) &'a Store);

/// For sync `fn`s: blocks on the store.
pub(crate) struct BlockingIo<'a>(pub(crate) &'a Store);

impl Io for AsyncIo<'_> {
    async fn get(&self, key: &str, touch: Option<Duration>) -> Result<Option<Payload>, StoreError> {
        self.0.get(key, touch).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.0.set(key, value, ttl).await
    }
    async fn expire_if_same(
        &self,
        key: &str,
        bytes: &[u8],
        left: Duration,
    ) -> Result<(), StoreError> {
        self.0.expire_if_same(key, bytes, left).await
    }
    async fn get_with_left(
        &self,
        key: &str,
        touch: Option<Touch>,
    ) -> Result<(Option<Payload>, Option<Duration>), StoreError> {
        self.0.get_with_left(key, touch).await
    }
    async fn try_lock(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        self.0.try_lock(lock_key, token, lease).await
    }
    async fn unlock(&self, lock_key: &str, token: &str) -> Result<(), StoreError> {
        self.0.unlock(lock_key, token).await
    }
    fn unlock_abandoned(&self, lock_key: &str, token: &str) {
        self.0.unlock_soon(lock_key, token);
    }
    async fn holding<F: Future>(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
        body: F,
    ) -> F::Output {
        // Polled beside the body, in the caller's task: no task to spawn,
        // and nothing left running once the call is done or dropped.
        let renewals = async {
            let taken = Instant::now();
            loop {
                tokio::time::sleep(lease / 3).await;
                if taken.elapsed() >= RENEW_AT_MOST {
                    // A body that hangs loses the lock, as a dead holder
                    // does: the others are not kept waiting for good.
                    std::future::pending::<()>().await;
                }
                if let Ok(false) = self.0.renew(lock_key, token, lease).await {
                    // Lost (its lease ran out, another caller took it):
                    // nothing left to keep. Never completes, so is never
                    // polled again once done.
                    std::future::pending::<()>().await;
                }
            }
        };
        let (mut body, mut renewals) = (pin!(body), pin!(renewals));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = body.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            let _ = renewals.as_mut().poll(cx);
            Poll::Pending
        })
        .await
    }
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
    async fn wait(&self, follower: Follower, patience: Duration) -> Turn {
        follower.wait(patience).await
    }
    async fn set_announced(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        news: &Announcement,
    ) -> Result<(), StoreError> {
        self.0.set_announced(key, value, ttl, news).await
    }
    async fn del(&self, key: &str) -> Result<bool, StoreError> {
        self.0.del(key).await
    }
    async fn del_announced(&self, key: &str, news: &Announcement) -> Result<bool, StoreError> {
        self.0.del_announced(key, news).await
    }
    async fn del_if_same(
        &self,
        key: &str,
        bytes: &[u8],
        news: Option<&Announcement>,
    ) -> Result<(), StoreError> {
        match news {
            Some(news) => self.0.del_if_same_announced(key, bytes, news).await,
            None => self.0.expire_if_same(key, bytes, Duration::ZERO).await,
        }
    }
}

impl Io for BlockingIo<'_> {
    async fn get(&self, key: &str, touch: Option<Duration>) -> Result<Option<Payload>, StoreError> {
        self.0.get_sync(key, touch)
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.0.set_sync(key, value, ttl)
    }
    async fn expire_if_same(
        &self,
        key: &str,
        bytes: &[u8],
        left: Duration,
    ) -> Result<(), StoreError> {
        self.0.expire_if_same_sync(key, bytes, left)
    }
    async fn get_with_left(
        &self,
        key: &str,
        touch: Option<Touch>,
    ) -> Result<(Option<Payload>, Option<Duration>), StoreError> {
        self.0.get_with_left_sync(key, touch)
    }
    async fn try_lock(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        self.0.try_lock_sync(lock_key, token, lease)
    }
    async fn unlock(&self, lock_key: &str, token: &str) -> Result<(), StoreError> {
        self.0.unlock_sync(lock_key, token)
    }
    fn unlock_abandoned(&self, lock_key: &str, token: &str) {
        // A sync caller may block, even while unwinding: within the
        // timeout, as every command.
        let _ = self.0.unlock_sync(lock_key, token);
    }
    async fn holding<F: Future>(
        &self,
        lock_key: &str,
        token: &str,
        lease: Duration,
        body: F,
    ) -> F::Output {
        // The body blocks this thread: the renewals run on a thread of
        // their own until it is done (or unwinds: the sender goes either
        // way). Not joined: a renewal still waiting on a slow Redis when
        // the body ends must not hold up the return, and one that lands
        // late finds the lock released or another holder's, and does
        // nothing.
        let (done, until_done) = std::sync::mpsc::channel::<()>();
        let (store, lock_key, token) = (self.0.clone(), lock_key.to_owned(), token.to_owned());
        let renewing = std::thread::Builder::new()
            .name("cached-redis-lock".into())
            .spawn(move || {
                let taken = Instant::now();
                while let Err(RecvTimeoutError::Timeout) = until_done.recv_timeout(lease / 3) {
                    if taken.elapsed() >= RENEW_AT_MOST {
                        break;
                    }
                    if let Ok(false) = store.renew_sync(&lock_key, &token, lease) {
                        break;
                    }
                }
            });
        if let Err(e) = renewing {
            // The body runs all the same; its lock keeps the first lease.
            tracing::debug!(error = %e, "no thread to renew a lock");
        }
        let output = block_on_ready(body);
        drop(done);
        output
    }
    async fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
    async fn wait(&self, follower: Follower, patience: Duration) -> Turn {
        follower.wait_blocking(patience)
    }
    async fn set_announced(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        news: &Announcement,
    ) -> Result<(), StoreError> {
        self.0.set_announced_sync(key, value, ttl, news)
    }
    async fn del(&self, key: &str) -> Result<bool, StoreError> {
        self.0.del_sync(key)
    }
    async fn del_announced(&self, key: &str, news: &Announcement) -> Result<bool, StoreError> {
        self.0.del_announced_sync(key, news)
    }
    async fn del_if_same(
        &self,
        key: &str,
        bytes: &[u8],
        news: Option<&Announcement>,
    ) -> Result<(), StoreError> {
        match news {
            Some(news) => self.0.del_if_same_announced_sync(key, bytes, news),
            None => self.0.expire_if_same_sync(key, bytes, Duration::ZERO),
        }
    }
}

/// Runs a future whose every step completes without waiting on a waker
/// (the flow over [`BlockingIo`] and a sync body).
pub(crate) fn block_on_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        // Not reached with BlockingIo; yielding keeps a mistake from
        // spinning a core flat out.
        std::thread::yield_now();
    }
}
