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

use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::channel::origin;

/// Opening the probes' cluster connection (it reaches every master).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A cluster's masters, probed in turn.
pub(super) struct Prober {
    client: ClusterClient,
    /// The first seed node's host: `CLUSTER SLOTS` names the node that
    /// answers with an empty host.
    seed: Option<String>,
    /// Opened on the subscriber's own runtime, on first use, and again
    /// after a failure.
    conn: Option<ClusterConnection>,
    /// The masters of this round, learnt again when a round starts.
    masters: Vec<(String, u16)>,
    /// The master the next probe goes to.
    next: usize,
    serial: u64,
    pending: Option<Pending>,
}

fn timed_out(what: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("invalidation channel: {what} timed out"),
    ))
}

/// A probe on its way.
struct Pending {
    message: String,
    sent: Instant,
    master: (String, u16),
}

impl Prober {
    pub(super) fn new(client: ClusterClient, seed: Option<String>) -> Self {
        Self {
            client,
            seed,
            conn: None,
            masters: Vec::new(),
            next: 0,
            serial: 0,
            pending: None,
        }
    }

    /// Notes `message` if it is the probe on its way.
    pub(super) fn heard(&mut self, message: &str) {
        if self.pending.as_ref().is_some_and(|p| p.message == message) {
            self.pending = None;
        }
    }

    /// Whether a probe is on its way.
    pub(super) fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// The master whose probe has not come back within `within`.
    pub(super) fn overdue(&self, within: Duration) -> Option<String> {
        self.pending
            .as_ref()
            .filter(|p| p.sent.elapsed() > within)
            .map(|p| format!("{}:{}", p.master.0, p.master.1))
    }

    /// Whether the last probe sent was on the last master of its round.
    pub(super) fn round_done(&self) -> bool {
        !self.masters.is_empty() && self.next >= self.masters.len()
    }

    /// Starts a new round: no probe waited for, the masters learnt anew
    /// by the next [`Prober::send`].
    pub(super) fn restart(&mut self) {
        self.pending = None;
        self.masters.clear();
        self.next = 0;
    }

    /// Publishes a probe on the next master of the round (a new round
    /// after the last one), within `within` (opening the connection, when
    /// there is none, has a budget of its own). On failure the connection
    /// and the masters are forgotten, to be found again.
    pub(super) async fn send(&mut self, channel: &str, within: Duration) -> redis::RedisResult<()> {
        let sent = match self.connect().await {
            Err(e) => Err(e),
            Ok(()) => match tokio::time::timeout(within, self.try_send(channel)).await {
                Ok(sent) => sent,
                Err(_) => Err(timed_out("publishing a probe")),
            },
        };
        if sent.is_err() {
            self.conn = None;
            self.restart();
        }
        sent
    }

    async fn connect(&mut self) -> redis::RedisResult<()> {
        if self.conn.is_none() {
            let config = ClusterConfig::new().set_connection_timeout(CONNECT_TIMEOUT);
            let connect = self.client.get_async_connection_with_config(config);
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| timed_out("connecting for probes"))??;
            self.conn = Some(conn);
        }
        Ok(())
    }

    async fn try_send(&mut self, channel: &str) -> redis::RedisResult<()> {
        let new_round = self.round_done() || self.masters.is_empty();
        let Some(conn) = &mut self.conn else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "invalidation channel: no connection for probes",
            )));
        };
        if new_round {
            let slots = conn
                .route_command(
                    redis::cmd("CLUSTER").arg("SLOTS").clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                )
                .await?;
            self.masters = crate::store::masters_in(slots, self.seed.as_deref())
                .map_err(|(_, message)| {
                    redis::RedisError::from((redis::ErrorKind::Client, message))
                })?
                .0;
            self.next = 0;
        }
        let master = self.masters[self.next].clone();
        self.next += 1;
        self.serial += 1;
        let message = format!("{}:0 h {}", origin(), self.serial);
        let (host, port) = master.clone();
        conn.route_command(
            redis::cmd("PUBLISH").arg(channel).arg(&message).clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port }),
        )
        .await?;
        self.pending = Some(Pending {
            message,
            sent: Instant::now(),
            master,
        });
        Ok(())
    }
}
