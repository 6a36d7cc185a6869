//! On a cluster, the check that the invalidation channel hears every
//! master.
//!
//! Entries change on the master of their slot, which publishes the
//! change's message there; the subscriber listens on one node, which gets
//! the other masters' messages over the cluster bus. A node cut off from
//! that bus while it still answers its clients would answer every `PING`
//! and pass on no message: the levels would keep serving copies that
//! other processes replaced. So the subscriber publishes probes of its
//! own, each on the next master in turn, and must hear each one come
//! back: a probe that does not come back in time counts as a lost channel.
//!
//! A probe is `{origin}:0 h {serial}`: every process ignores messages of
//! kind `h` ([`super::channel`]'s receiver), and only this one waits for
//! its own.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use tokio::sync::oneshot;

use super::channel::origin;

/// Opening the probes' cluster connection: each node's own budget (the
/// client reaches every node it learns of), and the whole connect's.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A `PUBLISH` this slow is given up (the master is stuck: it takes no
/// writes either, so no change is published meanwhile).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// The masters are learnt again every this many rounds (and after any
/// failure).
const ROUNDS_PER_REFRESH: u32 = 16;
/// How long probes may fail to go out (no connection, no `CLUSTER SLOTS`,
/// `PUBLISH` refused or stuck) before the channel counts as unchecked,
/// hence lost.
pub(super) const UNCHECKED_MAX: Duration = Duration::from_secs(3);

/// Numbers every probe of the process: two caches subscribed to one
/// namespace never send the same text.
static SERIAL: AtomicU64 = AtomicU64::new(1);

/// A cluster's masters, probed in turn.
pub(super) struct Prober {
    client: ClusterClient,
    /// The first seed node's host: `CLUSTER SLOTS` names the node that
    /// answers with an empty host.
    seed: Option<String>,
    /// Opened on the subscriber's own runtime, on first use, and again
    /// after a failure.
    conn: Option<ClusterConnection>,
    /// The masters probed in turn.
    masters: Vec<(String, u16)>,
    /// The master the next probe goes to.
    next: usize,
    rounds: u32,
    pending: Option<Pending>,
    /// Since when no probe could be sent or published.
    failing_since: Option<Instant>,
}

/// A probe on its way.
struct Pending {
    message: String,
    master: (String, u16),
    started: Instant,
    state: Publish,
}

enum Publish {
    /// Its `PUBLISH`, on a task of its own: the subscriber goes on reading
    /// messages meanwhile. Answers when the master accepted it.
    Sending(oneshot::Receiver<redis::RedisResult<Instant>>),
    /// Accepted by the master at this instant.
    Accepted(Instant),
}

/// What the probe on its way says, at a check.
pub(super) enum Check {
    /// None is on its way: time to send the next.
    Idle,
    Waiting,
    /// The master accepted the probe, which did not come back in time:
    /// the subscriber's node does not hear that master.
    Lost(String),
}

fn timed_out(what: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("invalidation channel: {what} timed out"),
    ))
}

impl Prober {
    pub(super) fn new(client: ClusterClient, seed: Option<String>) -> Self {
        Self {
            client,
            seed,
            conn: None,
            masters: Vec::new(),
            next: 0,
            rounds: 0,
            pending: None,
            failing_since: None,
        }
    }

    /// Notes `message` if it is the probe on its way.
    pub(super) fn heard(&mut self, message: &str) {
        if self.pending.as_ref().is_some_and(|p| p.message == message) {
            self.pending = None;
            self.failing_since = None;
        }
    }

    /// Whether a probe is on its way.
    pub(super) fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether the last probe sent was on the last master of its round.
    pub(super) fn round_done(&self) -> bool {
        !self.masters.is_empty() && self.next >= self.masters.len()
    }

    /// Starts a new round: no probe waited for, the masters learnt anew.
    pub(super) fn restart(&mut self) {
        self.pending = None;
        self.masters.clear();
        self.next = 0;
        self.failing_since = None;
    }

    /// How long probes have been failing to go out.
    pub(super) fn unchecked_for(&self) -> Duration {
        self.failing_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// The probe on its way, `within` the time it has to come back once
    /// its master accepted it. A `PUBLISH` that failed or is stuck does
    /// not count as lost (the master takes no writes either); it starts
    /// the connection and the masters afresh.
    pub(super) fn check(&mut self, within: Duration) -> Check {
        let Some(pending) = &mut self.pending else {
            return Check::Idle;
        };
        if let Publish::Sending(answer) = &mut pending.state {
            match answer.try_recv() {
                Ok(Ok(at)) => pending.state = Publish::Accepted(at),
                Err(oneshot::error::TryRecvError::Empty)
                    if pending.started.elapsed() < PUBLISH_TIMEOUT =>
                {
                    return Check::Waiting;
                }
                failed => {
                    tracing::debug!(outcome = ?failed.map(|r| r.map(|_| ())), "an invalidation probe was not published");
                    self.fail();
                    return Check::Idle;
                }
            }
        }
        match pending.state {
            Publish::Accepted(at) if at.elapsed() > within => {
                Check::Lost(format!("{}:{}", pending.master.0, pending.master.1))
            }
            _ => Check::Waiting,
        }
    }

    /// Probes could not go out: the connection and the masters are found
    /// again for the next.
    fn fail(&mut self) {
        self.conn = None;
        let since = self.failing_since.unwrap_or_else(Instant::now);
        self.restart();
        self.failing_since = Some(since);
    }

    /// Sends a probe to the next master of the round (a new round after
    /// the last one); its `PUBLISH` goes on in the background. Fails when
    /// the connection or the masters cannot be had.
    pub(super) async fn start(&mut self, channel: &str) -> redis::RedisResult<()> {
        let started = self.prepare().await;
        if started.is_err() {
            self.fail();
        }
        started?;
        let master = self.masters[self.next].clone();
        self.next += 1;
        let message = format!("{}:0 h {}", origin(), SERIAL.fetch_add(1, Relaxed));
        let Some(mut conn) = self.conn.clone() else {
            return Ok(());
        };
        let publish = redis::cmd("PUBLISH").arg(channel).arg(&message).clone();
        let (host, port) = master.clone();
        let (answer, answered) = oneshot::channel();
        tokio::spawn(async move {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let outcome =
                match tokio::time::timeout(PUBLISH_TIMEOUT, conn.route_command(publish, route))
                    .await
                {
                    Ok(published) => published.map(|_| Instant::now()),
                    Err(_) => Err(timed_out("publishing a probe")),
                };
            let _ = answer.send(outcome);
        });
        self.pending = Some(Pending {
            message,
            master,
            started: Instant::now(),
            state: Publish::Sending(answered),
        });
        Ok(())
    }

    /// The connection, and the masters when a round begins.
    async fn prepare(&mut self) -> redis::RedisResult<()> {
        if self.conn.is_none() {
            let config = ClusterConfig::new().set_connection_timeout(NODE_CONNECT_TIMEOUT);
            let connect = self.client.get_async_connection_with_config(config);
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| timed_out("connecting for probes"))??;
            self.conn = Some(conn);
        }
        let Some(conn) = &mut self.conn else {
            return Ok(());
        };
        if self.masters.is_empty() || self.next >= self.masters.len() {
            self.rounds = self.rounds.wrapping_add(1);
            if self.masters.is_empty() || self.rounds % ROUNDS_PER_REFRESH == 0 {
                let slots = tokio::time::timeout(
                    super::channel::PING_TIMEOUT,
                    conn.route_command(
                        redis::cmd("CLUSTER").arg("SLOTS").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    ),
                )
                .await
                .map_err(|_| timed_out("asking for the masters"))??;
                self.masters = crate::store::masters_in(slots, self.seed.as_deref())
                    .map_err(|(_, message)| {
                        redis::RedisError::from((redis::ErrorKind::Client, message))
                    })?
                    .0;
            }
            self.next = 0;
        }
        Ok(())
    }
}
