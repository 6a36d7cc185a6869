//! The call path after the cache is known to be in play: look up, judge
//! the entry's age, coalesce, lock, compute, store. Written once over
//! [`Io`], for async and sync functions alike.
//!
//! ```text
//! lookup ─┬─ fresh ──────────────── hit (or, with `early`, XFetch may refresh)
//!         ├─ stale (in `stale`) ─── one caller refreshes, the rest get the old value
//!         └─ absent / bad ───────── miss: one computation per key in this process
//!                                   (followers wait for the leader's bytes), and
//!                                   with `lock` one per key across processes
//! ```
//!
//! Counting: a call answered from the store, from another call's
//! computation or from a stale value is a hit; a call that ran the body is
//! a miss (with its compute time); failures of the store, the codec or a
//! refresh are errors.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::__private::ReturnShape;
use crate::codec::{self, CodecError, Header};
use crate::engine::Engine;
use crate::entry_info;
use crate::error::StoreError;
use crate::flight::{self, Leader, Outcome, Role};
use crate::freshness::{self, Age};
use crate::key::CacheKey;
use crate::ops::Io;
use crate::site::ResolvedSite;
use crate::store::Payload;
use crate::unwind::CatchUnwind;

/// Longest pause between two looks at a value another process is computing.
const LOCK_POLL_MAX: Duration = Duration::from_millis(50);
/// The pause cap while nothing is known of the body's cost.
const LOCK_POLL_UNKNOWN: Duration = Duration::from_millis(10);

/// One call in play.
pub(crate) struct Call<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) site: &'a ResolvedSite,
    pub(crate) key: CacheKey,
}

impl Call<'_> {
    fn key(&self) -> &str {
        self.key.as_str()
    }

    fn lock_key(&self) -> String {
        format!("{}:lock", self.key.as_str())
    }

    fn hit(&self) {
        self.site.stats.hit();
        tracing::debug!(prefix = %self.site.prefix, key = self.key(), "cache hit");
    }

    fn decode<V: DeserializeOwned>(&self, bytes: &[u8]) -> Option<(V, Header)> {
        match codec::decode::<V>(bytes, self.engine.limits) {
            Ok(decoded) => Some(decoded),
            Err(e) => {
                self.site.stats.error();
                tracing::warn!(
                    prefix = %self.site.prefix, key = self.key(), error = %e,
                    "cache error: undecodable entry; recomputing and replacing it"
                );
                None
            }
        }
    }

    fn read_failed(&self, e: &StoreError) {
        self.site.stats.error();
        tracing::debug!(
            prefix = %self.site.prefix, key = self.key(), error = %e,
            "cache error: read failed; running uncached"
        );
    }
}

/// A cached call from lookup to result.
pub(crate) async fn run<I, S, R, F>(io: &I, call: &Call<'_>, force: bool, body: F) -> R
where
    I: Io,
    S: ReturnShape<R>,
    F: Future<Output = R>,
{
    if force {
        return compute_and_store::<I, S, R, F>(io, call, body, None).await;
    }
    let found = match io.get(call.key(), call.site.touch()).await {
        Ok(found) => found,
        Err(e) => {
            call.read_failed(&e);
            None
        }
    };
    if let Some(((value, header), bytes)) =
        found.and_then(|bytes| Some((call.decode::<S::Value>(&bytes)?, bytes)))
    {
        // A refresh that succeeds records its new entry over this one.
        entry_info::hit(call.site, &bytes);
        let age = freshness::classify(
            header.created_at_ms,
            freshness::now_ms(),
            call.site.ttl,
            call.site.stale,
            call.site.refresh,
        );
        let refresh_now = match age {
            Age::Stale => true,
            Age::Fresh { remaining } => {
                call.site.early
                    && freshness::xfetch(compute_time(&header), remaining, call.site.early_beta)
            }
        };
        if !refresh_now {
            call.hit();
            return S::rebuild(value);
        }
        return refresh_or_serve::<I, S, R, F>(io, call, &header, value, body).await;
    }
    miss::<I, S, R, F>(io, call, body).await
}

fn compute_time(header: &Header) -> Duration {
    Duration::from_micros(u64::from(header.compute_us))
}

/// An entry due for refreshing (stale, or picked by XFetch): one caller
/// recomputes it; everyone else, and that caller if recomputing fails, gets
/// the old value at once.
async fn refresh_or_serve<I, S, R, F>(
    io: &I,
    call: &Call<'_>,
    header: &Header,
    old: S::Value,
    body: F,
) -> R
where
    I: Io,
    S: ReturnShape<R>,
    F: Future<Output = R>,
{
    let Role::Leader(mut leader) = flight::join(call.key()) else {
        call.hit();
        return S::rebuild(old);
    };
    let lock_key = call.lock_key();
    let token = freshness::lock_token();
    let lease = freshness::lease_for(Some(compute_time(header)));
    if !matches!(io.try_lock(&lock_key, &token, lease).await, Ok(true)) {
        call.hit();
        return S::rebuild(old);
    }
    let started = Instant::now();
    let outcome = CatchUnwind::new(body).await;
    let elapsed = started.elapsed();
    call.site.record_miss(call.key(), elapsed);
    match outcome {
        Ok(ret) => {
            if let Some(value) = S::cacheable(&ret) {
                if let Some(bytes) = store_value::<I, S, R>(io, call, value, elapsed).await {
                    leader.share(bytes);
                }
                let _ = io.unlock(&lock_key, &token).await;
                return ret;
            }
            call.site.stats.error();
            tracing::warn!(
                prefix = %call.site.prefix, key = call.key(),
                "cache error: refresh returned no cacheable value; serving the previous one"
            );
        }
        Err(_panic) => {
            call.site.stats.error();
            tracing::warn!(
                prefix = %call.site.prefix, key = call.key(),
                "cache error: refresh panicked; serving the previous value"
            );
        }
    }
    // The lock stays until its lease ends: a failing backend is retried by
    // one caller per lease, not by every caller at once.
    S::rebuild(old)
}

/// No usable entry: compute once per key in this process (and, with
/// `lock`, across processes); the other callers wait for that result.
async fn miss<I, S, R, F>(io: &I, call: &Call<'_>, body: F) -> R
where
    I: Io,
    S: ReturnShape<R>,
    F: Future<Output = R>,
{
    let mut leader = match flight::join(call.key()) {
        Role::Leader(leader) => leader,
        Role::Follower(flight) => {
            if let Outcome::Value(bytes) = io.wait(&flight).await {
                if let Some((value, _)) = call.decode::<S::Value>(&bytes) {
                    call.hit();
                    entry_info::hit(call.site, &bytes);
                    return S::rebuild(value);
                }
            }
            // The leader had nothing to share (an error, a panic, `None`):
            // this call runs as if it had been alone.
            return compute_and_store::<I, S, R, F>(io, call, body, None).await;
        }
    };
    if !call.site.lock {
        return compute_and_store::<I, S, R, F>(io, call, body, Some(&mut leader)).await;
    }
    match acquire::<I, S::Value>(io, call).await {
        Acquired::Lock(token) => {
            let ret = compute_and_store::<I, S, R, F>(io, call, body, Some(&mut leader)).await;
            if let Err(e) = io.unlock(&call.lock_key(), &token).await {
                tracing::debug!(key = call.key(), error = %e, "lock not released; it expires with its lease");
            }
            ret
        }
        Acquired::Value(value, bytes) => {
            leader.share(bytes);
            call.hit();
            S::rebuild(value)
        }
        Acquired::GaveUp => {
            compute_and_store::<I, S, R, F>(io, call, body, Some(&mut leader)).await
        }
    }
}

/// The result of waiting for the distributed lock.
enum Acquired<V> {
    /// This call holds the lock (with this token) and computes.
    Lock(String),
    /// Another process computed and stored the value meanwhile.
    Value(V, Arc<[u8]>),
    /// The store failed or the wait grew too long: compute uncoordinated.
    GaveUp,
}

/// Takes the key's lock, or waits (backing off, not hammering the store)
/// for whoever holds it to store the value. A holder that died leaves a
/// lock that expires with its lease; the next attempt then takes it.
async fn acquire<I: Io, V: DeserializeOwned>(io: &I, call: &Call<'_>) -> Acquired<V> {
    let lock_key = call.lock_key();
    let token = freshness::lock_token();
    let lease = freshness::lease_for(call.site.compute_estimate());
    let deadline = Instant::now() + freshness::LEASE_CEILING;
    // Pauses grow to a tenth of what the body usually costs: a waiter sees
    // the value at most that late, and a slow body is not polled often.
    let pause_cap = call.site.compute_estimate().map_or(LOCK_POLL_UNKNOWN, |e| {
        (e / 10).clamp(Duration::from_millis(2), LOCK_POLL_MAX)
    });
    let mut pause = Duration::from_millis(2);
    loop {
        match io.try_lock(&lock_key, &token, lease).await {
            Ok(true) => {
                // The previous holder may have stored the value just before
                // its lock went away.
                if let Some((value, bytes)) = fetch::<I, V>(io, call).await {
                    let _ = io.unlock(&lock_key, &token).await;
                    return Acquired::Value(value, bytes);
                }
                return Acquired::Lock(token);
            }
            Ok(false) => {}
            Err(_) => return Acquired::GaveUp,
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                key = call.key(),
                "waited a full lease ceiling for a lock; computing"
            );
            return Acquired::GaveUp;
        }
        io.sleep(pause).await;
        pause = (pause * 3 / 2).min(pause_cap);
        if let Some((value, bytes)) = fetch::<I, V>(io, call).await {
            return Acquired::Value(value, bytes);
        }
    }
}

/// The decoded entry and its bytes, if the store has a good one now.
async fn fetch<I: Io, V: DeserializeOwned>(io: &I, call: &Call<'_>) -> Option<(V, Arc<[u8]>)> {
    let bytes: Payload = io.get(call.key(), None).await.ok()??;
    let (value, _) = call.decode::<V>(&bytes)?;
    entry_info::hit(call.site, &bytes);
    Some((value, Arc::from(&*bytes)))
}

/// Runs the body, counts the miss, stores the cacheable part of the result
/// and hands its bytes to the followers.
async fn compute_and_store<I, S, R, F>(
    io: &I,
    call: &Call<'_>,
    body: F,
    leader: Option<&mut Leader>,
) -> R
where
    I: Io,
    S: ReturnShape<R>,
    F: Future<Output = R>,
{
    let started = Instant::now();
    let ret = body.await;
    let elapsed = started.elapsed();
    call.site.record_miss(call.key(), elapsed);
    match S::cacheable(&ret) {
        Some(value) => {
            if let Some(bytes) = store_value::<I, S, R>(io, call, value, elapsed).await {
                if let Some(leader) = leader {
                    leader.share(bytes);
                }
            }
        }
        None => entry_info::uncached(),
    }
    ret
}

/// Encodes and stores `value`; its bytes, when it could be encoded.
async fn store_value<I, S, R>(
    io: &I,
    call: &Call<'_>,
    value: &S::Value,
    elapsed: Duration,
) -> Option<Arc<[u8]>>
where
    I: Io,
    S: ReturnShape<R>,
    S::Value: Serialize,
{
    let encoded = match codec::encode(value, elapsed, call.engine.limits) {
        Ok(encoded) => encoded,
        Err(CodecError::TooLarge(size)) => {
            tracing::debug!(
                key = call.key(),
                size,
                "value over max_value_bytes; returned, not stored"
            );
            entry_info::uncached();
            return None;
        }
        Err(e) => {
            call.site.stats.error();
            call.site.mark_unreadable(&e.to_string());
            entry_info::uncached();
            return None;
        }
    };
    let reads_back = call.site.check_readback(|| {
        codec::decode::<S::Value>(&encoded.bytes, call.engine.limits)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    if !reads_back {
        call.site.stats.error();
        entry_info::uncached();
        return None;
    }
    let fresh_for = if S::is_negative(value) {
        call.site.negative_ttl
    } else {
        call.site.ttl
    };
    entry_info::stored(&encoded.bytes, fresh_for);
    let ttl = if S::is_negative(value) {
        fresh_for
    } else {
        fresh_for + call.site.stale
    };
    match io.set(call.key(), &encoded.bytes, ttl).await {
        // Both sizes count the header, so an uncompressed entry has a
        // compression ratio of exactly 1.
        Ok(()) => call
            .site
            .stats
            .stored(codec::HEADER_LEN + encoded.raw_len, encoded.bytes.len()),
        Err(e) => {
            call.site.stats.error();
            tracing::debug!(prefix = %call.site.prefix, key = call.key(), error = %e, "cache error: write failed");
        }
    }
    Some(Arc::from(encoded.bytes))
}
