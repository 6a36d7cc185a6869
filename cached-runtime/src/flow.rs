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

use crate::codec::{self, CodecError, CodecLimits, Header};
use crate::config::Config;
use crate::entry_info;
use crate::error::{StoreError, StoreErrorKind};
use crate::flight::{self, Leader, Leading, Role, Turn};
use crate::freshness::{self, Age};
use crate::key::CacheKey;
use crate::lease;
use crate::local::channel::{Change, PendingChange};
use crate::local::Near;
use crate::ops::Io;
use crate::shape::{CacheValue, ReturnShape};
use crate::signing;
use crate::site::ResolvedSite;
use crate::store::Payload;
use crate::unwind::CatchUnwind;

/// How far a writer's clock may lag a reader's before a signed entry it
/// wrote, read within its life, looks replayed ([`Call::replayed`]).
const REPLAY_SKEW: Duration = Duration::from_secs(60);

/// Longest pause between two looks at a value another process is computing.
const LOCK_POLL_MAX: Duration = Duration::from_millis(50);
/// The pause cap while nothing is known of the body's cost.
const LOCK_POLL_UNKNOWN: Duration = Duration::from_millis(10);

/// One call in play.
pub(crate) struct Call<'a> {
    /// The configuration of the cache the function uses.
    pub(crate) config: &'a Config,
    /// Its codec limits, derived from `config` once.
    pub(crate) limits: CodecLimits,
    pub(crate) site: &'a ResolvedSite,
    pub(crate) key: CacheKey,
}

impl Call<'_> {
    fn key(&self) -> &str {
        self.key.as_str()
    }

    /// The identity of the cache this call runs in, for the in-process
    /// coalescing: the address of its config, owned by the cache and
    /// fixed while any of its calls runs (each call holds the cache).
    fn cache_id(&self) -> usize {
        std::ptr::from_ref(self.config) as usize
    }

    fn lock_key(&self) -> String {
        format!("{}:lock", self.key.as_str())
    }

    fn hit(&self) {
        self.site.stats.hit();
        tracing::debug!(prefix = %self.site.prefix, key = self.key(), "cache hit");
    }

    /// The entry inside `bytes` (header and payload) without its MAC
    /// trailer, for a caller that already had it verified.
    fn unsealed<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        match self.config.signing.active() {
            Some(_) => &bytes[..bytes.len().saturating_sub(signing::MAC_LEN)],
            None => bytes,
        }
    }

    fn decode<V: DeserializeOwned>(
        &self,
        bytes: &[u8],
        is_negative: IsNegative<V>,
    ) -> Option<(V, Header)> {
        let bytes = match self.config.signing.active() {
            None => bytes,
            Some(keys) => match signing::open(keys, self.key(), bytes) {
                Ok(entry) => entry,
                Err(e) => {
                    // Never decoded: whoever wrote it lacks the key.
                    self.site.stats.error();
                    tracing::warn!(
                        prefix = %self.site.prefix, key = self.key(), error = %e,
                        "cache error: unsigned or forged entry; recomputing and replacing it"
                    );
                    return None;
                }
            },
        };
        match codec::decode::<V>(bytes, self.limits) {
            Ok((value, header))
                if self.config.signing.active().is_some()
                    && self.replayed(&header, is_negative(&value)) =>
            {
                self.site.stats.error();
                tracing::warn!(
                    prefix = %self.site.prefix, key = self.key(), created_at_ms = header.created_at_ms,
                    "cache error: signed entry past its end (put back after it expired?); \
                     recomputing and replacing it"
                );
                None
            }
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

    /// Whether a signed entry is older than an entry of its kind can be:
    /// its signed creation time, plus the life it is stored for (`ttl` and
    /// `stale`, or `cache_none` for a cached `None`) and [`REPLAY_SKEW`],
    /// is past. The store's expiry is the entry's
    /// clock otherwise ([`freshness::classify`] trusts it), but bytes put
    /// back under the key with a new expiry would be served for as long as
    /// whoever put them wished, with a valid MAC. A sliding (`refresh`)
    /// entry has no end its writer could sign: not checked.
    fn replayed(&self, header: &Header, negative: bool) -> bool {
        if self.site.refresh {
            return false;
        }
        // As `store_value` sets the store's expiry: a cached `None` has no
        // `stale` window.
        let stored_for = if negative {
            self.site.negative_ttl
        } else {
            self.site.ttl.saturating_add(self.site.stale)
        };
        let life = stored_for.saturating_add(REPLAY_SKEW);
        // In u128: a life of `Duration::MAX` has more milliseconds than u64.
        u128::from(header.created_at_ms) + life.as_millis() <= u128::from(freshness::now_ms())
    }

    fn read_failed(&self, e: &StoreError) {
        self.site.stats.error();
        tracing::debug!(
            prefix = %self.site.prefix, key = self.key(), error = %e,
            "cache error: read failed; running uncached"
        );
    }

    /// Taking the key's lock failed: counted like a failed read (a lock
    /// that Redis refuses, say to a user not allowed a command of its
    /// script, would otherwise leave every process computing, unseen),
    /// unless the breaker skipped it, as it did this call's read, which
    /// counted already.
    fn lock_failed(&self, e: &StoreError) {
        if e.kind() != StoreErrorKind::CoolingDown {
            self.site.stats.error();
        }
        tracing::debug!(
            prefix = %self.site.prefix, key = self.key(), error = %e,
            "cache error: lock failed; computing without it"
        );
    }
}

/// The value the `local` level holds for the call, as the call's result
/// (a hit), if any. Looked at before [`run`], whose [`lookup`] does not
/// look again.
#[inline]
pub(crate) fn held<S, R, N>(call: &Call<'_>, near: &N) -> Option<R>
where
    S: ReturnShape<R>,
    S::Value: CacheValue,
    N: Near<S::Value>,
{
    // A handler that asks for the entry's metadata (`with_entry_info`)
    // gets it from the store's copy: the level holds decoded values only.
    if entry_info::active() {
        return None;
    }
    let value = near.get(call.key())?;
    call.hit();
    Some(S::rebuild(value))
}

/// A cached call from lookup to result, after [`held`]; `near` is the
/// function's `local` level, in front of the store.
///
/// This is the only part generic over the body (`F`) and the return type
/// (`R`): it awaits the body between [`lookup`] and [`Pending::finish`],
/// which are generic over the stored value type alone, so a program with
/// many cached functions of few value types compiles the flow a few times,
/// not once per function.
pub(crate) async fn run<I, S, R, F, N>(io: &I, call: &Call<'_>, force: bool, body: F, near: &N) -> R
where
    I: Io,
    S: ReturnShape<R>,
    S::Value: CacheValue,
    F: Future<Output = R>,
    N: Near<S::Value>,
{
    let negative = <S as ReturnShape<R>>::is_negative;
    let pending = match lookup::<I, S::Value, N>(io, call, force, near, negative).await {
        Step::Serve(value) => return S::rebuild(value),
        Step::Run(pending) => pending,
        // Only a function whose shape has an absent value gets here (the
        // leader's result was one); any other runs its own call.
        Step::Absent => match S::absent() {
            Some(absent) => return absent,
            None => Pending::alone(),
        },
    };
    let lock = pending.lock(call);
    let body = Leading::new(pending.leader(), body);
    let mut abandoned = Abandoned {
        io,
        lock: lock
            .as_ref()
            .map(|(lock_key, token, _)| (lock_key.clone(), token.clone())),
    };
    let started = Instant::now();
    let ret = if let Some((lock_key, token, lease)) = &lock {
        // Kept for as long as the body runs: the lease is four times what
        // the function usually takes, and a key that takes longer (a rare
        // heavy query) would otherwise be computed again by a waiter.
        io.holding(lock_key, token, *lease, body).await
    } else if let Some((lock_key, token, lease)) = pending.refresh_lock() {
        // Renewed as a miss's is, for the same reason: other processes
        // would start the same refresh once the lease ran out.
        match io
            .holding(&lock_key, &token, lease, CatchUnwind::new(body))
            .await
        {
            Ok(ret) => ret,
            Err(_panic) => {
                // The lock is kept on purpose (see `Pending::panicked`).
                abandoned.lock = None;
                return S::rebuild(pending.panicked(call, started.elapsed()));
            }
        }
    } else {
        body.await
    };
    let elapsed = started.elapsed();
    let stored = S::cacheable(&ret).map(|v| (v, negative(v)));
    let absent = S::is_absent(&ret);
    let old = pending
        .finish(io, call, stored, absent, elapsed, near)
        .await;
    abandoned.lock = None;
    match old {
        Some(old) => S::rebuild(old),
        None => ret,
    }
}

/// The lock (key and token) of a call between its lookup and the end of
/// [`Pending::finish`], released if the call never gets there: its body
/// panicked, or its future was dropped (a request's timeout, a `select!`
/// that went the other way). Its waiters, in this process and in others,
/// then take over at once rather than when the lease runs out.
struct Abandoned<'a, I: Io> {
    io: &'a I,
    lock: Option<(String, String)>,
}

impl<I: Io> Drop for Abandoned<'_, I> {
    fn drop(&mut self) {
        if let Some((lock_key, token)) = self.lock.take() {
            // The release only deletes the lock if it still holds this
            // token: harmless after a release that did happen.
            self.io.unlock_abandoned(&lock_key, &token);
        }
    }
}

/// What a call does after its lookup.
pub(crate) enum Step<V> {
    /// Return this value: a hit, another caller's result, or an entry
    /// served while one caller refreshes it.
    Serve(V),
    /// Run the body, then hand its result to [`Pending::finish`].
    Run(Pending<V>),
    /// Return the value that says there is nothing: the call this one
    /// waited for returned it.
    Absent,
}

/// A call that runs the body, and what it holds meanwhile.
pub(crate) struct Pending<V> {
    kind: PendingKind<V>,
}

enum PendingKind<V> {
    /// No usable entry. `leader`: the other callers of this process wait
    /// for this one (`None` when it computes on its own: a forced refresh,
    /// or a follower whose shared bytes did not decode). `lock`: the token
    /// of the cross-process lock it holds (`lock = true`) and the lease it
    /// was taken for. `forced`: a recomputation asked for (`_refresh`),
    /// whatever the store holds.
    Miss {
        leader: Option<Leader>,
        lock: Option<(String, Duration)>,
        forced: bool,
        /// The entry's bytes, found undecodable (and counted) by this call.
        undecodable: Option<Payload>,
    },
    /// An entry due for refreshing: this call recomputes it under the lock
    /// `lock_key` (token `token`, taken for `lease`); `old` is served if
    /// that fails. `entry`: the old value's entry as read, what
    /// `with_entry_info` reports then.
    Refresh {
        leader: Leader,
        lock_key: String,
        token: String,
        lease: Duration,
        old: V,
        entry: OldEntry,
    },
}

/// An entry as a lookup read it, kept while its value is served or
/// refreshed: what `with_entry_info` reports of the value served.
struct OldEntry {
    bytes: Payload,
    /// A cached `None`.
    negative: bool,
    /// Past its `ttl`, within its `stale` window.
    stale: bool,
}

impl OldEntry {
    /// Records this entry as the call's, for `with_entry_info`.
    fn record(&self, call: &Call<'_>) {
        let stored = call.unsealed(&self.bytes);
        if self.stale {
            entry_info::hit_stale(stored);
        } else {
            entry_info::hit(call.site, stored, self.negative);
        }
    }
}

/// Whether a stored value is a negative one (a cached `None`).
type IsNegative<V> = fn(&V) -> bool;

/// Everything up to the body after [`held`]: the store, the entry's age,
/// coalescing in this process and, with `lock`, across processes (and
/// filling the `local` level).
pub(crate) async fn lookup<I, V, N>(
    io: &I,
    call: &Call<'_>,
    force: bool,
    near: &N,
    is_negative: IsNegative<V>,
) -> Step<V>
where
    I: Io,
    V: DeserializeOwned,
    N: Near<V>,
{
    if force {
        return Step::Run(Pending::forced());
    }
    let ticket = near.ticket();
    let reading = Instant::now();
    // The store can also say (its own clock, same round trip) what was
    // left of the entry before this read: with a live `local` level, a held
    // copy never outlives it, whatever the writer's clock wrote in the
    // header; with `refresh`, a cached `None` gets it back (below), and
    // with `stale` too, an entry idle past `ttl` is told apart (below).
    let read = if ticket.is_some()
        || (call.site.refresh && !(call.site.negative_ttl.is_zero() && call.site.stale.is_zero()))
    {
        io.get_with_left(call.key(), call.site.touch_unless_stale())
            .await
    } else {
        io.get(call.key(), call.site.touch())
            .await
            .map(|found| (found, None))
    };
    let (found, store_left) = match read {
        Ok(read) => read,
        Err(e) => {
            call.read_failed(&e);
            (None, None)
        }
    };
    // Bytes that did not decode (counted once, here): the lock's wait
    // reads the key again and again, and must not count them each time.
    let mut undecodable = None;
    if let Some(((value, header), bytes)) =
        found.and_then(|bytes| match call.decode::<V>(&bytes, is_negative) {
            Some(decoded) => Some((decoded, bytes)),
            None => {
                undecodable = Some(bytes);
                None
            }
        })
    {
        let negative = is_negative(&value);
        if negative && call.site.refresh {
            // The read (`refresh`) restarted the entry's lifetime to
            // `ttl + stale`; a cached `None` keeps its own, or reads would
            // keep it for good: what the store said was left before the
            // read, and no more than `cache_none` from when it was written
            // (a restore that failed once left it longer). Only if the
            // entry still holds it: a value written since keeps its own.
            let mut left = freshness::left_of(header.created_at_ms, call.site.negative_ttl);
            if let Some(store_left) = store_left {
                left = left.min(store_left.saturating_sub(reading.elapsed()));
            }
            if let Err(e) = io.expire_if_same(call.key(), &bytes, left).await {
                tracing::debug!(key = call.key(), error = %e, "a cached None's lifetime not restored");
            }
            if left.is_zero() {
                // Removed above (if it still was this one): past its life.
                return miss(io, call, is_negative, None).await;
            }
        }
        // A cached `None` lives `cache_none`, with no stale window: judged
        // by `ttl`, `early` would recompute it once `ttl` passed (each
        // read, when `cache_none` is the longer) or never (when shorter).
        let (ttl, stale) = if negative {
            (call.site.negative_ttl, Duration::ZERO)
        } else {
            (call.site.ttl, call.site.stale)
        };
        let sliding_stale = call.site.refresh && !stale.is_zero();
        let age = if sliding_stale {
            freshness::sliding_age(store_left, call.site.ttl, stale)
        } else {
            freshness::classify(
                header.created_at_ms,
                freshness::now_ms(),
                ttl,
                stale,
                call.site.refresh,
            )
        };
        let stale_now = matches!(age, Age::Stale);
        // A refresh that succeeds records its new entry over this one.
        let old = OldEntry {
            bytes,
            negative,
            stale: stale_now,
        };
        old.record(call);
        let refresh_now = match age {
            Age::Stale => true,
            Age::Fresh { remaining } => {
                call.site.early
                    && freshness::xfetch(compute_time(&header), remaining, call.site.early_beta)
            }
        };
        if !refresh_now {
            call.hit();
            let lifetime = held_for(
                call,
                negative,
                Some(&header),
                compute_time(&header),
                reading,
            );
            let lifetime = within_store_left(call, negative, lifetime, store_left, reading);
            near.hold(
                ticket,
                call.key(),
                &value,
                header.raw_len as usize,
                lifetime,
            );
            return Step::Serve(value);
        }
        return refresh_or_serve(io, call, &header, value, old).await;
    }
    miss(io, call, is_negative, undecodable).await
}

/// How long the `local` level may hold a value (`negative`: a cached
/// `None`): what is left of the store entry's fresh lifetime (`header` of
/// the entry read; `None` for an entry just written), never more. With
/// `early`, less by an XFetch draw on the body's `compute` time
/// ([`freshness::xfetch_margin`]), so that the held copies of an entry do
/// not all end, and send their callers to the store, at once. `sent` is
/// when the read or write was sent: a lifetime the store restarted (a
/// write, a read with `refresh`) started no earlier.
fn held_for(
    call: &Call<'_>,
    negative: bool,
    header: Option<&Header>,
    compute: Duration,
    sent: Instant,
) -> Duration {
    let lifetime = if negative {
        call.site.negative_ttl
    } else if call.site.refresh && !call.site.stale.is_zero() {
        // Hits on the level do not reach the store, which judges a
        // sliding entry idle (stale) when less than `stale` is left of it:
        // the store must see a read of a hot entry well within `ttl`.
        call.site.ttl / 2
    } else {
        call.site.ttl
    };
    let held = match header {
        // A read with `refresh` restarted the entry's lifetime in Redis,
        // to `ttl + stale` (a cached `None` keeps its own: see `lookup`).
        Some(_) if call.site.refresh && !negative => lifetime
            .min(call.site.touch().unwrap_or(lifetime))
            .saturating_sub(sent.elapsed()),
        Some(header) => freshness::left_of(header.created_at_ms, lifetime),
        None => lifetime.saturating_sub(sent.elapsed()),
    };
    ended_early(held, call.site.early, compute, call.site.early_beta)
}

/// `lifetime`, but no longer than the entry stays fresh in the store by
/// the store's clock: `store_left` (its `PTTL` just before the read sent
/// at `sent`), less the `stale` window it also covers (a cached `None` has
/// none).
fn within_store_left(
    call: &Call<'_>,
    negative: bool,
    lifetime: Duration,
    store_left: Option<Duration>,
    sent: Instant,
) -> Duration {
    let Some(left) = store_left else {
        return lifetime;
    };
    if call.site.refresh && !negative {
        // Left before the read, which restarted it: `lifetime` counts
        // from the read already.
        return lifetime;
    }
    let fresh_left = if negative {
        left
    } else {
        left.saturating_sub(call.site.stale)
    };
    lifetime.min(fresh_left.saturating_sub(sent.elapsed()))
}

/// `held`, less an XFetch draw on `compute` with `early`.
fn ended_early(held: Duration, early: bool, compute: Duration, beta: f64) -> Duration {
    if early {
        held.saturating_sub(freshness::xfetch_margin(compute, beta))
    } else {
        held
    }
}

fn compute_time(header: &Header) -> Duration {
    Duration::from_micros(u64::from(header.compute_us))
}

/// An entry due for refreshing (stale, or picked by XFetch): one caller
/// recomputes it; everyone else, and that caller if recomputing fails, gets
/// the old value at once.
async fn refresh_or_serve<I: Io, V>(
    io: &I,
    call: &Call<'_>,
    header: &Header,
    old: V,
    entry: OldEntry,
) -> Step<V> {
    let Role::Leader(leader) = flight::join(call.cache_id(), call.key()) else {
        call.hit();
        return Step::Serve(old);
    };
    let lock_key = call.lock_key();
    let token = lease::lock_token();
    let lease = lease::lease_for(Some(compute_time(header)));
    match io.try_lock(&lock_key, &token, lease).await {
        Ok(true) => {}
        Ok(false) => {
            call.hit();
            return Step::Serve(old);
        }
        Err(e) => {
            call.lock_failed(&e);
            call.hit();
            return Step::Serve(old);
        }
    }
    Step::Run(Pending {
        kind: PendingKind::Refresh {
            leader,
            lock_key,
            token,
            lease,
            old,
            entry,
        },
    })
}

/// No usable entry: compute once per key in this process (and, with
/// `lock`, across processes); the other callers wait for that result.
async fn miss<I: Io, V: DeserializeOwned>(
    io: &I,
    call: &Call<'_>,
    is_negative: IsNegative<V>,
    undecodable: Option<Payload>,
) -> Step<V> {
    // Joined again after waiting a lease ceiling for a leader that never
    // finished: the stalled flight is retired then, so this call leads a
    // new one or follows whoever does (the others still waiting too).
    let leader = loop {
        break match flight::join(call.cache_id(), call.key()) {
            Role::Leader(leader) => leader,
            // As long as a waiter in another process waits at the lock.
            Role::Follower(follower) => match io.wait(follower, lease::LEASE_CEILING).await {
                Turn::Value(shared) => {
                    if let Some((value, _)) = call.decode::<V>(&shared.bytes, is_negative) {
                        call.hit();
                        if shared.stored {
                            let entry = call.unsealed(&shared.bytes);
                            entry_info::hit(call.site, entry, is_negative(&value));
                        } else {
                            entry_info::hit_unstored();
                        }
                        return Step::Serve(value);
                    }
                    return Step::Run(Pending::alone());
                }
                // The leader had nothing to share (an error, a panic):
                // this call leads now, as if it had been first, while the other
                // waiters keep waiting for it.
                Turn::Lead(leader) => leader,
                // Two runs in a row had nothing to share: every waiter
                // runs its own call, as without the cache.
                Turn::Alone => return Step::Run(Pending::alone()),
                // Its call's answer too: served, like a shared value.
                Turn::Absent => {
                    call.hit();
                    entry_info::hit_unstored();
                    return Step::Absent;
                }
                // The leader stalled (said once, by the follower that
                // found it so): join the key afresh.
                Turn::OutOfPatience => continue,
            },
            // Made by the leader's own body: waiting (in this process, or at
            // the lock the leader holds) would wait for itself.
            Role::Nested => {
                tracing::debug!(
                    prefix = %call.site.prefix, key = call.key(),
                    "cached call inside its own computation; running it on its own"
                );
                return Step::Run(Pending::alone());
            }
        };
    };
    let mut undecodable = undecodable;
    if !call.site.lock {
        return Step::Run(Pending::miss(leader, None, undecodable));
    }
    // Boxed: the lock's wait is a large future, and only `lock = true`
    // misses pay for its allocation; inline, it would grow every cached
    // function's future past clippy's `large_futures` limit.
    match Box::pin(acquire::<I, V>(io, call, is_negative, &mut undecodable)).await {
        Acquired::Lock(token, lease) => {
            Step::Run(Pending::miss(leader, Some((token, lease)), undecodable))
        }
        Acquired::Value(value, bytes) => {
            let mut leader = leader;
            leader.share(bytes, true);
            call.hit();
            Step::Serve(value)
        }
        Acquired::GaveUp => Step::Run(Pending::miss(leader, None, undecodable)),
    }
}

impl<V> Pending<V> {
    /// A computation of this call's own, coordinated with nobody.
    fn alone() -> Self {
        Self {
            kind: PendingKind::Miss {
                leader: None,
                lock: None,
                forced: false,
                undecodable: None,
            },
        }
    }

    /// A recomputation asked for (`_refresh`): alone, whatever the store
    /// holds.
    fn forced() -> Self {
        Self {
            kind: PendingKind::Miss {
                leader: None,
                lock: None,
                forced: true,
                undecodable: None,
            },
        }
    }

    fn miss(
        leader: Leader,
        lock: Option<(String, Duration)>,
        undecodable: Option<Payload>,
    ) -> Self {
        Self {
            kind: PendingKind::Miss {
                leader: Some(leader),
                lock,
                forced: false,
                undecodable,
            },
        }
    }

    /// The flight this call leads, if it leads one.
    fn leader(&self) -> Option<&Leader> {
        match &self.kind {
            PendingKind::Miss { leader, .. } => leader.as_ref(),
            PendingKind::Refresh { leader, .. } => Some(leader),
        }
    }

    /// The cross-process lock this call holds for a miss, as its key,
    /// token and the lease it was taken for (what its renewals extend it
    /// to: a lease worked out again could be longer than the one it holds,
    /// and come too late): the lock a call that never finishes releases. A refresh's
    /// lock is kept until its lease ends whatever happens (see
    /// [`Pending::panicked`]), so that a backend that hangs past the
    /// callers' timeouts is retried once per lease; callers are served the
    /// old value meanwhile, except `lock = true` misses of the same key
    /// once the entry is gone, which wait for that lease.
    fn lock(&self, call: &Call<'_>) -> Option<(String, String, Duration)> {
        match &self.kind {
            PendingKind::Miss { lock, .. } => lock
                .as_ref()
                .map(|(token, lease)| (call.lock_key(), token.clone(), *lease)),
            PendingKind::Refresh { .. } => None,
        }
    }

    /// The lock of a refresh, whose body is answered with the old value
    /// if it fails (a panic, a result that is not cacheable): its key,
    /// token and lease. Renewed while the body runs, so that a refresh
    /// slower than its lease (four times what the entry took) is not
    /// started again by another process meanwhile; left to its lease once
    /// the body is done without a result or dropped (see [`Self::lock`]).
    fn refresh_lock(&self) -> Option<(String, String, Duration)> {
        match &self.kind {
            PendingKind::Refresh {
                lock_key,
                token,
                lease,
                ..
            } => Some((lock_key.clone(), token.clone(), *lease)),
            PendingKind::Miss { .. } => None,
        }
    }

    /// The refreshing body panicked: the old value, counted as an error.
    /// The lock stays until its lease ends, so a failing backend is retried
    /// by one caller per lease, not by every caller at once.
    pub(crate) fn panicked(self, call: &Call<'_>, elapsed: Duration) -> V {
        call.site.record_miss(call.key(), elapsed);
        call.site.stats.error();
        tracing::warn!(
            prefix = %call.site.prefix, key = call.key(),
            "cache error: refresh panicked; serving the previous value"
        );
        match self.kind {
            PendingKind::Refresh {
                mut leader,
                old,
                entry,
                ..
            } => {
                leader.failed();
                // What the body's own cached calls recorded is not what
                // this call returns.
                entry.record(call);
                old
            }
            PendingKind::Miss { .. } => unreachable!("only a refresh catches the body's panic"),
        }
    }

    /// After the body: counts the miss, stores `stored` (the cacheable
    /// part of the result and whether it is a negative one; `None` when
    /// nothing is to be stored), hands its bytes to the waiting callers and
    /// releases the lock. `absent`: the result says there is nothing (a
    /// `None` not cached); a recomputation asked for (`_refresh`, a
    /// refresh) then removes the entry. Returns the old value when the
    /// caller must serve it instead of the body's result (a refresh that
    /// failed).
    pub(crate) async fn finish<I, N>(
        self,
        io: &I,
        call: &Call<'_>,
        stored: Option<(&V, bool)>,
        absent: bool,
        elapsed: Duration,
        near: &N,
    ) -> Option<V>
    where
        I: Io,
        V: Serialize + DeserializeOwned,
        N: Near<V>,
    {
        call.site.record_miss(call.key(), elapsed);
        match self.kind {
            PendingKind::Miss {
                mut leader,
                lock,
                forced,
                undecodable,
            } => {
                // Whether the result went to the store, and so replaced
                // what the key held.
                let replaced = match stored {
                    Some((value, negative)) => {
                        match store_value(io, call, value, negative, elapsed, near, leader.as_mut())
                            .await
                        {
                            Some((bytes, stored)) => {
                                // Dropped here, settling the flight: the
                                // waiters need nothing more. Without a
                                // value the guard is kept to the end, so
                                // that a waiter handed the lead starts
                                // after the clean-up and the release below.
                                if let Some(mut leader) = leader.take() {
                                    leader.share(bytes, stored);
                                }
                                true
                            }
                            // Too large, or not encodable: returned only.
                            None => false,
                        }
                    }
                    None => {
                        entry_info::uncached();
                        if absent {
                            if let Some(leader) = leader.as_mut() {
                                leader.share_absent();
                            }
                        }
                        false
                    }
                };
                if let Some(leader) = leader.as_mut().filter(|_| !replaced && !absent) {
                    // An error, or a value that could not be stored:
                    // nothing for the waiters.
                    leader.failed();
                }
                if !replaced {
                    if forced && (absent || stored.is_some()) {
                        // `_refresh` after the row went, or of a value
                        // that cannot be stored: the old value must not
                        // outlive what replaced it. (A plain miss found
                        // no entry to remove.)
                        remove_value(io, call, near, None).await;
                    } else if let Some(bad) = &undecodable {
                        // Nothing replaces them: removed, or every call
                        // until they expire would read, fail to decode
                        // and count them again. Only if they are still
                        // there: a value written meanwhile is newer.
                        remove_value(io, call, near, Some(bad)).await;
                    }
                }
                if let Some((token, _)) = lock {
                    if let Err(e) = io.unlock(&call.lock_key(), &token).await {
                        tracing::debug!(key = call.key(), error = %e, "lock not released; it expires with its lease");
                    }
                }
                None
            }
            PendingKind::Refresh {
                mut leader,
                lock_key,
                token,
                old,
                entry,
                ..
            } => {
                if absent {
                    // Not a failure: what the entry stood for is gone, and
                    // callers that missed meanwhile get the same answer.
                    leader.share_absent();
                    remove_value(io, call, near, Some(&entry.bytes)).await;
                    entry_info::uncached();
                    let _ = io.unlock(&lock_key, &token).await;
                    return None;
                }
                let Some((value, negative)) = stored else {
                    leader.failed();
                    // What the body's own cached calls recorded is not
                    // what this call returns.
                    entry.record(call);
                    call.site.stats.error();
                    tracing::warn!(
                        prefix = %call.site.prefix, key = call.key(),
                        "cache error: refresh returned no cacheable value; serving the previous one"
                    );
                    // The lock stays until its lease ends (see `panicked`).
                    return Some(old);
                };
                match store_value(io, call, value, negative, elapsed, near, Some(&mut leader)).await
                {
                    Some((bytes, stored)) => leader.share(bytes, stored),
                    // Too large, or not encodable: the new value is
                    // returned, and the old one must not be served in its
                    // place (if the entry still holds it).
                    None => {
                        leader.failed();
                        remove_value(io, call, near, Some(&entry.bytes)).await;
                    }
                }
                let _ = io.unlock(&lock_key, &token).await;
                None
            }
        }
    }
}

/// The result of waiting for the distributed lock.
enum Acquired<V> {
    /// This call holds the lock (with this token, for this lease), or may
    /// hold it (its `SET NX` got no answer), and computes.
    Lock(String, Duration),
    /// Another process computed and stored the value meanwhile.
    Value(V, Arc<[u8]>),
    /// The store failed or the wait grew too long: compute uncoordinated.
    GaveUp,
}

/// Takes the key's lock, or waits (backing off, not hammering the store)
/// for whoever holds it to store the value. A holder that died leaves a
/// lock that expires with its lease; the next attempt then takes it.
/// `undecodable`: the entry's bytes, if the lookup found them undecodable;
/// bytes found undecodable while waiting take their place.
async fn acquire<I: Io, V: DeserializeOwned>(
    io: &I,
    call: &Call<'_>,
    is_negative: IsNegative<V>,
    undecodable: &mut Option<Payload>,
) -> Acquired<V> {
    let lock_key = call.lock_key();
    let token = lease::lock_token();
    // Armed while the lock is asked for and, once taken, until it goes to
    // the body's run, which guards it from then on: a call dropped there
    // (a `SET NX` whose reply never came may have taken the lock) releases
    // it. A `SET NX` that was sent but got no answer goes to the run as if
    // it took the lock: the run releases it when done, with the same
    // compare-and-delete (nothing happens if it did not take it), instead
    // of leaving the others a whole lease to wait.
    let mut abandoned = Abandoned { io, lock: None };
    let lease = lease::lease_for(call.site.compute_estimate());
    let deadline = Instant::now() + lease::LEASE_CEILING;
    // Pauses grow to a tenth of what the body usually costs: a waiter sees
    // the value at most that late, and a slow body is not polled often.
    let pause_cap = call.site.compute_estimate().map_or(LOCK_POLL_UNKNOWN, |e| {
        (e / 10).clamp(Duration::from_millis(2), LOCK_POLL_MAX)
    });
    let mut pause = Duration::from_millis(2);
    loop {
        abandoned.lock = Some((lock_key.clone(), token.clone()));
        match io.try_lock(&lock_key, &token, lease).await {
            Ok(true) => {
                // The previous holder may have stored the value just before
                // its lock went away.
                if let Some((value, bytes)) =
                    fetch::<I, V>(io, call, is_negative, undecodable).await
                {
                    let _ = io.unlock(&lock_key, &token).await;
                    abandoned.lock = None;
                    return Acquired::Value(value, bytes);
                }
                abandoned.lock = None;
                return Acquired::Lock(token, lease);
            }
            Ok(false) => abandoned.lock = None,
            Err(e) => {
                abandoned.lock = None;
                call.lock_failed(&e);
                if e.may_have_run() {
                    return Acquired::Lock(token, lease);
                }
                return Acquired::GaveUp;
            }
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
        if let Some((value, bytes)) = fetch::<I, V>(io, call, is_negative, undecodable).await {
            return Acquired::Value(value, bytes);
        }
    }
}

/// Removes the call's entry, announced to the other processes' `local`
/// levels as a write is (in the same step), and drops this process's
/// copy: a recomputation asked for found nothing, so the old value must
/// not be served. `only_if`: the bytes a refresh read; the entry goes only
/// if it still holds them, since a value written meanwhile (a `_refresh`,
/// another process's miss) is newer than what this call found. A failure
/// is counted; the entry then ends with its TTL.
async fn remove_value<I: Io, V, N: Near<V>>(
    io: &I,
    call: &Call<'_>,
    near: &N,
    only_if: Option<&[u8]>,
) {
    let change = Change::Key(call.key());
    let news = near
        .publishes()
        .then(|| change.announcement(&call.config.namespace));
    let pending = news.as_ref().map(|news| PendingChange::new(change, news));
    let removed = match only_if {
        Some(bytes) => Box::pin(io.del_if_same(call.key(), bytes, news.as_ref())).await,
        None => match &news {
            Some(news) => Box::pin(io.del_announced(call.key(), news)).await.map(drop),
            None => Box::pin(io.del(call.key())).await.map(drop),
        },
    };
    if let Some(pending) = pending {
        pending.settle();
    }
    crate::engine::settle(change, news.as_ref(), &removed);
    if let Err(e) = removed {
        call.site.stats.error();
        tracing::debug!(prefix = %call.site.prefix, key = call.key(), error = %e, "cache error: removal failed");
    }
}

/// The decoded entry and its bytes, if the store has a good one now.
/// `undecodable`: bytes this call already found undecodable, and counted;
/// the same bytes again are passed over (not another error), and new ones
/// that do not decode take their place.
async fn fetch<I: Io, V: DeserializeOwned>(
    io: &I,
    call: &Call<'_>,
    is_negative: IsNegative<V>,
    undecodable: &mut Option<Payload>,
) -> Option<(V, Arc<[u8]>)> {
    let bytes: Payload = io.get(call.key(), None).await.ok()??;
    if undecodable.as_deref() == Some(&*bytes) {
        return None;
    }
    let Some((value, _)) = call.decode::<V>(&bytes, is_negative) else {
        *undecodable = Some(bytes);
        return None;
    };
    entry_info::hit(call.site, call.unsealed(&bytes), is_negative(&value));
    Some((value, Arc::from(&*bytes)))
}

/// Encodes and stores `value` (`negative`: a cached `None`); its bytes,
/// when it could be encoded, and whether the store took them. With a
/// `local` level, the other processes are told and this one holds it.
/// `leader` (the call's flight, if it leads one) is handed the bytes
/// before the write, as not stored.
async fn store_value<I, V, N>(
    io: &I,
    call: &Call<'_>,
    value: &V,
    negative: bool,
    elapsed: Duration,
    near: &N,
    leader: Option<&mut Leader>,
) -> Option<(Arc<[u8]>, bool)>
where
    I: Io,
    V: Serialize + DeserializeOwned,
    N: Near<V>,
{
    let mut encoded = match call
        .site
        .codec
        .encode(&call.site.prefix, value, elapsed, call.limits)
    {
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
            // This value only: the next one is tried again.
            call.site.stats.error();
            tracing::warn!(
                prefix = %call.site.prefix, key = call.key(), error = %e,
                "cache error: value cannot be stored and read back; returned, not stored"
            );
            entry_info::uncached();
            return None;
        }
    };
    let fresh_for = if negative {
        call.site.negative_ttl
    } else {
        call.site.ttl
    };
    // Before sealing: the content hash is of the value, not of its MAC
    // (which changes with the creation time).
    entry_info::stored(&encoded.bytes, fresh_for);
    if let Some(keys) = call.config.signing.active() {
        signing::seal(keys, call.key(), &mut encoded.bytes);
    }
    let bytes: Arc<[u8]> = Arc::from(encoded.bytes);
    // Handed to this key's waiters before the write, as not stored: should
    // this call be dropped while the write is on its way (a request's
    // timeout), they get the value it computed instead of one of them
    // computing it again. A write that completes says whether it stored.
    if let Some(leader) = leader {
        leader.share(Arc::clone(&bytes), false);
    }
    let ttl = if negative {
        fresh_for
    } else {
        fresh_for + call.site.stale
    };
    // Taken before the write: a change another process makes after it
    // keeps this value out of the level.
    let ticket = near.ticket();
    let writing = Instant::now();
    // A function with `local` announces its writes to the other processes'
    // levels in the same step as the write: a write whose reply is lost
    // (a timeout) may still have happened, and then its message went too.
    let change = Change::Key(call.key());
    let news = near
        .publishes()
        .then(|| change.announcement(&call.config.namespace));
    let written = match &news {
        Some(news) => {
            // Should this call be dropped before the answer, the write may
            // still run: its change then reaches this process as well.
            let pending = PendingChange::new(change, news);
            // Boxed, as the plain write: a write is a miss's, rare next to
            // hits, and every cached function's future would otherwise
            // carry the store command's future inline.
            let written = Box::pin(io.set_announced(call.key(), &bytes, ttl, news)).await;
            pending.settle();
            written
        }
        None => Box::pin(io.set(call.key(), &bytes, ttl)).await,
    };
    let stored = written.is_ok();
    match written {
        // Both sizes count the header, so an uncompressed entry has a
        // compression ratio of exactly 1.
        Ok(()) => {
            call.site
                .stats
                .stored(codec::HEADER_LEN + encoded.raw_len, bytes.len());
            if news.is_some() {
                let lifetime = held_for(call, negative, None, elapsed, writing);
                near.replace(ticket, call.key(), value, encoded.raw_len, lifetime);
            }
        }
        Err(e) => {
            call.site.stats.error();
            // No entry to describe: an `ETag` or `max-age` would speak of
            // one that is not there.
            entry_info::uncached();
            tracing::debug!(prefix = %call.site.prefix, key = call.key(), error = %e, "cache error: write failed");
            if news.is_some() {
                // It may have happened all the same, or happen later.
                change.failed(news.as_ref(), &e);
            }
        }
    }
    Some((bytes, stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `early`, held copies of one entry end at spread times before
    /// its end (never after it); without, all at its end.
    #[test]
    fn early_spreads_the_end_of_held_copies() {
        let held = Duration::from_secs(10);
        let compute = Duration::from_secs(1);
        assert_eq!(ended_early(held, false, compute, 1.0), held);
        assert_eq!(ended_early(held, true, Duration::ZERO, 1.0), held);
        let n = 10_000;
        let mut ends: Vec<Duration> = (0..n)
            .map(|_| ended_early(held, true, compute, 1.0))
            .collect();
        assert!(ends.iter().all(|e| *e <= held));
        // On average one compute time early (E[−ln u] = 1).
        let mean = ends.iter().map(Duration::as_secs_f64).sum::<f64>() / n as f64;
        assert!((mean - 9.0).abs() < 0.1, "mean {mean}");
        ends.sort();
        ends.dedup();
        assert!(ends.len() > n / 2, "{} distinct ends", ends.len());
    }
}
