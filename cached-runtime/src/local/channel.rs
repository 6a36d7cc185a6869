//! The invalidation channel: `PUBLISH {namespace}:__invalidate` when an
//! entry changes, and one subscriber per Redis cache of the process that
//! applies what others publish to its `local` levels.
//!
//! The subscriber has its own connection (a subscribed connection can do
//! nothing else), opened from the store's `redis::Client`, on a thread of
//! its own with a one-thread runtime, so it outlives every runtime of the
//! program and serves sync programs too. It reconnects by itself, and ends
//! (closing its connection) when its cache is dropped. While it
//! is not subscribed, [`Channel::is_live`] is false: the cache's levels
//! are bypassed and emptied, because invalidations published meanwhile are
//! lost. (Levels are registered by key head, not by cache, so a lost
//! channel empties every level of the process: that can only drop copies,
//! never keep a stale one.) A connection that answers no `PING` within
//! [`PING_TIMEOUT`] counts as lost; on a cluster, so does a probe
//! published on a master that does not come back ([`super::probe`]).
//!
//! Messages are text: `{origin}:{nonce} k {key}` (one entry) or
//! `{origin}:{nonce} p {head}` (every entry under `{namespace}:{prefix}:`),
//! or a subscriber's probe, `{origin}:0 h {serial}`, which only its sender
//! heeds.
//! `origin` identifies the publishing process, which has already applied
//! the change to its own levels and skips its own messages, except the
//! message of a write whose answer never came (numbered by `nonce`: see
//! [`Change::failed`]), which may have run later than its own reads.
//! Plain `PUBLISH`/`SUBSCRIBE` (RESP2) work on Redis 5 and later and on a
//! cluster.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;

use super::probe::{Check, Prober};
use crate::error::StoreError;
use crate::store::{Announcement, PubSubSource, Store, Switches};

/// How long the channel may be silent before the subscriber checks that
/// its connection still answers. A loss the connection does not report (a
/// partition that drops packets) is noticed within this and
/// [`PING_TIMEOUT`]: until then the levels serve what they hold, while
/// the other processes may be changing entries. A quarter of a second
/// costs an idle process four `PING`s a second.
const PING_EVERY: Duration = Duration::from_millis(250);
/// How long a `PING` may take before the connection counts as lost: well
/// above a loaded server's reply time, since a loss empties every level.
pub(super) const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// Failed attempts in a row (about ten seconds' worth) before the channel
/// warns that it cannot go live.
const FAILURES_BEFORE_WARNING: u32 = 12;
/// Pause between reconnection attempts.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// One cache's invalidation channel: its subscriber (started on first
/// use) and whether that subscriber is subscribed now.
#[derive(Debug, Default)]
pub(crate) struct Channel {
    /// Set when the subscriber starts; dropping it (with the cache) stops
    /// the subscriber.
    stop: OnceLock<tokio::sync::oneshot::Sender<()>>,
    /// Whether invalidations from other processes are arriving now.
    live: Arc<AtomicBool>,
}

impl Channel {
    /// Whether the `local` levels may serve and be filled: with Redis,
    /// only while the channel is subscribed.
    pub(crate) fn is_live(&self) -> bool {
        self.live.load(SeqCst)
    }

    /// Starts the subscriber (once), listening on `namespace`'s channel
    /// through a node of the cache's Redis (`source` is asked only the
    /// first time).
    pub(crate) fn ensure_subscriber(&self, source: impl FnOnce() -> PubSubSource, namespace: &str) {
        self.stop.get_or_init(|| {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let source = source();
            let channel = channel_name(namespace);
            let live = self.live.clone();
            let spawned = std::thread::Builder::new()
                .name("cached-redis-invalidation".into())
                .spawn(move || {
                    // However this thread ends (a panic included), the
                    // levels stop serving: nothing tells them of changes
                    // any more.
                    let _off = LiveOff(live.clone());
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "no runtime for the invalidation channel; local levels stay off");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        tokio::select! {
                            () = subscribe_forever(source, channel, live) => {}
                            // The sender is never used: only its drop counts.
                            _ = stopped => {}
                        }
                    });
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the invalidation channel; local levels stay off");
            }
            stop
        });
    }
}

/// Turns the levels off when dropped: the subscriber thread's last act.
struct LiveOff(Arc<AtomicBool>);

impl Drop for LiveOff {
    fn drop(&mut self) {
        self.0.store(false, SeqCst);
        if std::thread::panicking() {
            tracing::error!(
                "the invalidation subscriber panicked; local levels stay off for this process"
            );
        }
    }
}

/// The channel of a namespace.
pub(crate) fn channel_name(namespace: &str) -> String {
    format!("{namespace}:__invalidate")
}

/// This process's identity in messages: random, fixed for its lifetime.
pub(super) fn origin() -> &'static str {
    static ORIGIN: OnceLock<String> = OnceLock::new();
    ORIGIN.get_or_init(|| {
        use std::hash::{BuildHasher, RandomState};
        let n = RandomState::new().hash_one(std::process::id());
        format!("{n:016x}")
    })
}

/// A change of one entry (`key`) or of every entry under `head`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    Key(&'a str),
    Head(&'a str),
}

impl Change<'_> {
    /// The message, numbered `nonce` (0 for a message no write waits on).
    fn message_numbered(self, nonce: u64) -> String {
        match self {
            Change::Key(key) => format!("{}:{nonce} k {key}", origin()),
            Change::Head(head) => format!("{}:{nonce} p {head}", origin()),
        }
    }

    fn message(self) -> String {
        self.message_numbered(0)
    }

    /// The message that tells the other processes of `namespace` about the
    /// change, to send with the write that makes it. Each is numbered, so
    /// that this process can tell the message of a write of its own that
    /// failed without an answer from the others it skips ([`Change::failed`]).
    pub(crate) fn announcement(self, namespace: &str) -> Announcement {
        let nonce = NEXT_NONCE.fetch_add(1, SeqCst);
        Announcement {
            channel: channel_name(namespace),
            message: self.message_numbered(nonce),
            nonce,
        }
    }

    /// Applies the change to this process's own levels.
    pub(crate) fn apply_here(self) {
        match self {
            Change::Key(key) => super::invalidate_key(key),
            Change::Head(head) => super::invalidate_head(head),
        }
    }

    /// The write or removal that was to make this change, announced by
    /// `news` (if it was), failed with `error`. The change is applied here
    /// all the same; and if the command may have run without an answer
    /// coming back (a timeout), it may still run, later than reads this
    /// process makes meanwhile, so its message, whenever it comes, is
    /// applied here too.
    pub(crate) fn failed(self, news: Option<&Announcement>, error: &StoreError) {
        // Registered first: a message that comes meanwhile is applied
        // (twice is harmless), not skipped.
        if let (Some(news), true) = (news, error.may_have_run()) {
            unsettled::add(news.nonce);
        }
        self.apply_here();
    }
}

/// Numbers the messages of this process's announced writes; 0 is never
/// one of them.
static NEXT_NONCE: AtomicU64 = AtomicU64::new(1);

/// The numbers of this process's announced writes that failed without an
/// answer: their messages, if they ever come, are applied here.
///
/// Some never see their message: a write refused by a connection that was
/// already closed (it looks sent, but Redis never read it), a message that
/// came before its write's failure was known, one published while the
/// channel was down. They stay until pushed out, so looking one up must
/// stay cheap: a set, with the order of arrival on the side.
mod unsettled {
    use std::collections::{HashSet, VecDeque};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::{LazyLock, Mutex};

    /// More than a process could have in flight when Redis stalls; past
    /// it, the oldest is forgotten (its message, should it still come, is
    /// then skipped as any of this process's own).
    pub(super) const KEPT: usize = 4096;

    #[derive(Default)]
    struct Nonces {
        set: HashSet<u64>,
        /// Every nonce added, oldest first, including some taken since
        /// (the set says which are still here).
        order: VecDeque<u64>,
    }

    static ANY: AtomicBool = AtomicBool::new(false);
    static NONCES: LazyLock<Mutex<Nonces>> = LazyLock::new(Default::default);

    pub(super) fn add(nonce: u64) {
        let mut nonces = NONCES.lock().unwrap_or_else(|e| e.into_inner());
        let Nonces { set, order } = &mut *nonces;
        // KEPT bounds the waiting ones: the oldest waiting goes (those
        // taken already, met on the way, go too).
        if set.len() >= KEPT {
            while let Some(oldest) = order.pop_front() {
                if set.remove(&oldest) {
                    break;
                }
            }
        }
        // Taken ones left in the middle are dropped once they are as many
        // as the waiting ones could be: the order stays within 2 * KEPT.
        if order.len() >= 2 * KEPT {
            order.retain(|n| set.contains(n));
        }
        order.push_back(nonce);
        set.insert(nonce);
        ANY.store(true, SeqCst);
    }

    /// Whether `nonce` is one of them; it is forgotten then (each message
    /// comes once).
    pub(super) fn take(nonce: u64) -> bool {
        if !ANY.load(SeqCst) {
            return false;
        }
        let mut nonces = NONCES.lock().unwrap_or_else(|e| e.into_inner());
        if !nonces.set.remove(&nonce) {
            return false;
        }
        if nonces.set.is_empty() {
            nonces.order.clear();
            ANY.store(false, SeqCst);
        }
        true
    }

    /// How many are waiting (tests).
    #[cfg(test)]
    pub(super) fn len() -> usize {
        NONCES.lock().unwrap_or_else(|e| e.into_inner()).set.len()
    }
}

/// A write or removal on its way, whose change must reach this process's
/// levels even if the call is dropped before its outcome is known (a
/// request's timeout): then the command may still run, and its message
/// is applied here when it comes ([`Change::failed`]). Settled by
/// [`PendingChange::settle`] once the outcome is known.
pub(crate) struct PendingChange<'a> {
    change: Option<(Change<'a>, &'a Announcement)>,
}

impl<'a> PendingChange<'a> {
    /// `change`, announced by `news`, about to be sent.
    pub(crate) fn new(change: Change<'a>, news: &'a Announcement) -> Self {
        Self {
            change: Some((change, news)),
        }
    }

    /// The outcome is known: nothing is left to do on drop.
    pub(crate) fn settle(mut self) {
        self.change = None;
    }
}

impl Drop for PendingChange<'_> {
    fn drop(&mut self) {
        if let Some((change, news)) = self.change.take() {
            unsettled::add(news.nonce);
            change.apply_here();
        }
    }
}

/// Applies a received message, unless this process sent it (and it is not
/// the message of a write of this process that failed without an answer:
/// see [`Change::failed`]).
fn receive(message: &str) {
    let mut parts = message.splitn(3, ' ');
    let (Some(from), Some(kind), Some(what)) = (parts.next(), parts.next(), parts.next()) else {
        tracing::debug!(message, "ignoring a malformed invalidation message");
        return;
    };
    let (sender, nonce) = from.split_once(':').unwrap_or((from, "0"));
    if sender == origin() && !nonce.parse().is_ok_and(unsettled::take) {
        return;
    }
    match kind {
        "k" => super::invalidate_key(what),
        "p" => super::invalidate_head(what),
        // A subscriber's probe ([`super::probe`]): only its sender waits
        // for it.
        "h" => {}
        _ => tracing::debug!(message, "ignoring an invalidation message of unknown kind"),
    }
}

/// Tells the other processes about `change` (the caller applied it here).
pub(crate) async fn publish(
    store: &Store,
    namespace: &str,
    change: Change<'_>,
) -> Result<(), StoreError> {
    store
        .publish(&channel_name(namespace), &change.message())
        .await
}

/// Connects, subscribes and applies messages; on any loss, empties the
/// levels and starts over (on a cluster, through the next seed node; behind
/// a sentinel, through the master it names now).
async fn subscribe_forever(source: PubSubSource, channel: String, live: Arc<AtomicBool>) {
    let mut probe = match &source {
        PubSubSource::Cluster { nodes, client } => Some(Prober::new(
            (**client).clone(),
            nodes
                .first()
                .and_then(|node| host_of(node.get_connection_info().addr())),
            PING_EVERY,
        )),
        _ => None,
    };
    let mut retry = RETRY_MIN;
    let mut attempt = 0usize;
    let mut failures = 0u32;
    loop {
        // Behind a sentinel: counted before asking for the master, so that
        // a switch from then on ends the subscription.
        let switches = source.switches().map(|s| (&**s, s.count()));
        let client = tokio::time::timeout(RETRY_MAX * 2, source.client(attempt))
            .await
            .unwrap_or_else(|_| Err(timeout_error("finding the node")));
        let outcome = match client {
            Ok(client) => listen(&client, &channel, &live, probe.as_mut(), switches).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                retry = RETRY_MIN;
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                // Said once loudly (then at debug): a channel that never
                // comes back keeps the levels off, which should not go
                // unnoticed.
                if failures == FAILURES_BEFORE_WARNING {
                    tracing::warn!(error = %e, attempts = failures, "invalidation channel cannot go live; local levels stay off until it does");
                } else {
                    tracing::debug!(error = %e, "invalidation channel unavailable");
                }
            }
        }
        attempt = attempt.wrapping_add(1);
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}

fn host_of(addr: &redis::ConnectionAddr) -> Option<String> {
    match addr {
        redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => {
            Some(host.clone())
        }
        _ => None,
    }
}

/// One connection's life: returns when it is lost (Ok if it had been
/// subscribed and live). On a cluster (`probe`), the levels go live only
/// once a probe published on each master has come back, and then one
/// master is probed every [`PING_EVERY`]. Behind a sentinel (`switches`:
/// their count before the master was looked up), it is lost when the
/// sentinels switch master: the old one may still answer, and hear
/// nothing of the processes that moved.
async fn listen(
    client: &redis::Client,
    channel: &str,
    live: &AtomicBool,
    mut probe: Option<&mut Prober>,
    switches: Option<(&Switches, u64)>,
) -> redis::RedisResult<()> {
    let pubsub = tokio::time::timeout(RETRY_MAX * 2, client.get_async_pubsub())
        .await
        .map_err(|_| timeout_error("connecting"))??;
    let (mut sink, mut stream) = pubsub.split();
    tokio::time::timeout(RETRY_MAX * 2, sink.subscribe(channel))
        .await
        .map_err(|_| timeout_error("subscribing"))??;
    // Whatever was held was read while no invalidation could arrive. A
    // panic there (a held value's `Drop`) leaves some of it: not live.
    if !clear_all_caught() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "invalidation channel: emptying the local levels panicked",
        )));
    }
    if let Some(probe) = probe.as_deref_mut() {
        hear_every_master(&mut stream, probe, channel).await?;
    }
    // A switch since the master was looked up: this one may be the old.
    if switches.is_some_and(|(switches, seen)| switches.count() != seen) {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "invalidation channel: the sentinels switched master while subscribing",
        )));
    }
    live.store(true, SeqCst);
    tracing::debug!(channel, "invalidation channel subscribed; local levels on");
    let mut probe_every = tokio::time::interval(PING_EVERY);
    probe_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let switched = async {
        match switches {
            Some((switches, seen)) => switches.after(seen).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(switched);
    let lost = loop {
        tokio::select! {
            () = &mut switched => break "the sentinels switched to another master".to_owned(),
            message = stream.next() => match message {
                Some(message) => if !take(&message, probe.as_deref_mut()) {
                    break "a panic while applying a message".to_owned();
                },
                None => break "connection closed".to_owned(),
            },
            // On a cluster the probes check the connection, and more.
            () = tokio::time::sleep(PING_EVERY), if probe.is_none() => {
                let ping = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    break "no answer to PING".to_owned();
                }
            }
            _ = probe_every.tick(), if probe.is_some() => {
                let Some(probe) = probe.as_deref_mut() else { continue };
                match probe.check(PING_TIMEOUT) {
                    Check::Lost(reason) => break reason,
                    Check::Waiting => {}
                    Check::Idle => probe.start(channel),
                }
            }
        }
    };
    live.store(false, SeqCst);
    // Emptied again before the levels go live.
    clear_all_caught();
    tracing::warn!(
        channel,
        reason = lost,
        "invalidation channel lost; local levels emptied and bypassed until it is back"
    );
    Ok(())
}

/// Applies a message from the channel: the probe waited for, or a change.
/// False when applying it panicked (a held value's `Drop`, a `tracing`
/// layer): part of the change may be undone, and the levels are emptied
/// as after a lost channel.
fn take(message: &redis::Msg, probe: Option<&mut Prober>) -> bool {
    match message.get_payload::<String>() {
        Ok(text) => {
            if let Some(probe) = probe {
                probe.heard(&text);
            }
            std::panic::catch_unwind(AssertUnwindSafe(|| receive(&text))).is_ok()
        }
        Err(e) => {
            tracing::debug!(error = %e, "ignoring a non-text invalidation message");
            true
        }
    }
}

/// On a cluster, before the levels go live: a probe published on each
/// master must come back within [`PING_TIMEOUT`] of its master accepting
/// it (one after another, checked often: going live waits on it).
async fn hear_every_master<S>(
    stream: &mut S,
    probe: &mut Prober,
    channel: &str,
) -> redis::RedisResult<()>
where
    S: futures_util::Stream<Item = redis::Msg> + Unpin,
{
    const CHECK_EVERY: Duration = Duration::from_millis(20);
    probe.restart();
    loop {
        match probe.check(PING_TIMEOUT) {
            Check::Lost(reason) => {
                return Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("invalidation channel: {reason}"),
                )))
            }
            Check::Waiting => {}
            Check::Idle if probe.heard_every_master() => return Ok(()),
            Check::Idle => probe.start(channel),
        }
        if probe.going_live_overdue() {
            return Err(timeout_error("hearing a probe from every master"));
        }
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    if !take(&message, Some(probe)) {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "invalidation channel: applying a message panicked",
                        )));
                    }
                }
                None => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "invalidation channel: connection closed",
                    )))
                }
            },
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

/// [`super::clear_all`], a panic caught: whether it went through. It
/// drops the values held, and a value's `Drop` may panic on this thread,
/// which must go on applying messages.
fn clear_all_caught() -> bool {
    std::panic::catch_unwind(super::clear_all).is_ok()
}

/// An I/O time-out error saying which step of the channel (or of its
/// probes) took too long.
pub(super) fn timeout_error(what: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("invalidation channel: {what} timed out"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that add unsettled nonces, which are process-wide.
    static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn own_messages_are_skipped_and_others_applied() {
        let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
        let level = std::sync::Arc::new(super::super::LocalLevel::new(10, 1 << 20, 1));
        super::super::register("chan-ns:p:", &level);
        level.put(
            level.ticket(),
            "chan-ns:p:k",
            1u8,
            1,
            Duration::from_secs(60),
        );
        receive(&Change::Key("chan-ns:p:k").message());
        assert_eq!(
            level.get::<u8>("chan-ns:p:k"),
            Some(1),
            "own message skipped"
        );
        // Another subscriber's probe changes nothing.
        receive("someoneelse000000:0 h chan-ns:p:k");
        assert_eq!(level.get::<u8>("chan-ns:p:k"), Some(1), "probe applied");
        receive("someoneelse000000 k chan-ns:p:k");
        assert_eq!(level.get::<u8>("chan-ns:p:k"), None);
        level.put(
            level.ticket(),
            "chan-ns:p:k",
            1u8,
            1,
            Duration::from_secs(60),
        );
        receive("someoneelse000000 p chan-ns:p:");
        assert_eq!(level.get::<u8>("chan-ns:p:k"), None);
        receive("garbage");
        // A write of this process whose outcome is unknown may still run:
        // its message, whenever it comes, is applied here too; the others
        // of this process are still skipped.
        let put = || {
            level.put(
                level.ticket(),
                "chan-ns:p:k",
                1u8,
                1,
                Duration::from_secs(60),
            )
        };
        let held = || level.get::<u8>("chan-ns:p:k").is_some();
        let change = Change::Key("chan-ns:p:k");
        // An error reply says it did not run.
        let refused = change.announcement("chan-ns");
        change.failed(
            Some(&refused),
            &StoreError::new(crate::error::StoreErrorKind::Response, "NOPERM"),
        );
        put();
        receive(&refused.message);
        assert!(held(), "the message of a write that did not run is skipped");
        // A timeout says nothing.
        let timed_out = change.announcement("chan-ns");
        change.failed(
            Some(&timed_out),
            &StoreError::new(crate::error::StoreErrorKind::Timeout, "no answer"),
        );
        put();
        receive(&change.announcement("chan-ns").message);
        assert!(held(), "another message of this process is skipped");
        receive(&timed_out.message);
        assert!(
            !held(),
            "the message of a write that may have run is applied"
        );
        put();
        receive(&timed_out.message);
        assert!(held(), "and only once");
        // A call dropped before the answer came.
        let dropped = change.announcement("chan-ns");
        drop(PendingChange::new(change, &dropped));
        assert!(!held(), "applied here at once");
        put();
        receive(&dropped.message);
        assert!(!held(), "and its message too");
        // One that got its answer.
        let answered = change.announcement("chan-ns");
        PendingChange::new(change, &answered).settle();
        put();
        receive(&answered.message);
        assert!(held(), "a settled write's message is skipped");
        // A write that failed before it was sent (while connecting) cannot
        // run: nothing waits for its message.
        let unsent = change.announcement("chan-ns");
        change.failed(
            Some(&unsent),
            &StoreError::new(crate::error::StoreErrorKind::Timeout, "connecting").not_run(),
        );
        put();
        receive(&unsent.message);
        assert!(held(), "the message of a write never sent is skipped");
    }

    /// Nonces whose message never comes are pushed out by newer ones, the
    /// oldest first; those taken meanwhile do not count against the bound.
    #[test]
    fn unsettled_nonces_are_bounded() {
        let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
        // Far above the nonces other tests of this binary use.
        let base = u64::MAX / 2;
        let count =
            |range: std::ops::Range<u64>| range.filter(|n| unsettled::take(base + n)).count();
        for n in 0..unsettled::KEPT as u64 {
            unsettled::add(base + n);
        }
        // Half of them come back; then as many new ones as came back, and
        // one more, which pushes out the oldest still waiting.
        let half = unsettled::KEPT as u64 / 2;
        let kept = unsettled::KEPT as u64;
        assert_eq!(count(0..half), half as usize);
        for n in 0..=half {
            unsettled::add(base + unsettled::KEPT as u64 + n);
        }
        assert!(unsettled::len() <= unsettled::KEPT);
        assert!(!unsettled::take(base + half), "the oldest waiting went");
        assert_eq!(
            count(half + 1..kept + half + 1),
            unsettled::KEPT,
            "every other one still waits"
        );
        // Two wait while many others come and go: the two stay.
        let base = base + 2 * kept;
        unsettled::add(base);
        unsettled::add(base + 1);
        for n in 2..2 + 3 * kept {
            unsettled::add(base + n);
            assert!(unsettled::take(base + n));
        }
        assert!(unsettled::take(base) && unsettled::take(base + 1));
    }
}
