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
//! back. The channel counts as lost when a probe a master accepted does
//! not come back in time, and when any master has had no probe come back
//! for a while, whatever the reason (its probe refused, stuck, or never
//! sent): a master this process cannot reach may still take other
//! processes' writes.
//!
//! A master can also restart (with its address, its slots and its place
//! in the cluster, but none of its entries) faster than it would count as
//! unheard: a change published on it before its bus links are back
//! reaches no other node, and its probes may all come back. So each probe
//! also asks its master for its run id (`INFO server`); a new one means a
//! restart, which loses the channel too. A master that refuses `INFO` (an
//! ACL may deny it) is left to the other rules.
//!
//! A probe is `{origin}:0 h {serial}`: every process ignores messages of
//! kind `h` ([`super::channel`]'s receiver), and only this one waits for
//! its own.
//!
//! Everything a probe needs that may wait on the network (opening the
//! probes' cluster connection, learning the masters, the `PUBLISH`) runs
//! on a task of its own: the subscriber goes on reading messages
//! meanwhile, so no change waits behind a probe.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::FromRedisValue as _;
use tokio::sync::oneshot;

use super::channel::{origin, timeout_error};

/// Opening the probes' cluster connection: each node's own budget (the
/// client reaches every node it learns of), and the whole connect's.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Learning the masters (`CLUSTER SLOTS`).
const SLOTS_TIMEOUT: Duration = Duration::from_millis(500);
/// A `PUBLISH` this slow is given up.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);
/// Longer than a probe's task can take (its steps time out before: the
/// `PUBLISH`, then the `INFO`, each within [`PUBLISH_TIMEOUT`]): past it,
/// the probe is given up all the same.
const TASK_MAX: Duration = CONNECT_TIMEOUT
    .saturating_add(SLOTS_TIMEOUT)
    .saturating_add(PUBLISH_TIMEOUT)
    .saturating_add(PUBLISH_TIMEOUT)
    .saturating_add(Duration::from_secs(1));
/// The longest pause between the probes of a master that keeps failing.
const PAUSE_MAX: Duration = Duration::from_secs(2);
/// How often the masters are learnt again (a reshard may add one; a
/// failover replaces one, which the probes notice sooner by failing).
const MASTERS_REFRESH: Duration = Duration::from_secs(2);
/// How long a master may go without a probe of its own coming back, on
/// top of two rounds of probes over all masters (its turn comes once a
/// round; a failed probe is tried again on the next tick), before the
/// channel counts as lost.
pub(super) const UNHEARD_MAX: Duration = Duration::from_secs(3);

/// Whether a master's refusal of `INFO` has been logged (once a process).
static INFO_REFUSED: AtomicBool = AtomicBool::new(false);

/// Numbers every probe of the process: two caches subscribed to one
/// namespace never send the same text.
static SERIAL: AtomicU64 = AtomicU64::new(1);

type Addr = (String, u16);

/// A cluster's masters, probed in turn.
pub(super) struct Prober {
    client: ClusterClient,
    /// The first seed node's host: `CLUSTER SLOTS` names the node that
    /// answers with an empty host.
    seed: Option<String>,
    /// The time between two probes: one round over the masters takes this
    /// times their number.
    period: Duration,
    /// Opened by a probe's task on the subscriber's own runtime (a probe
    /// that finds it being opened waits for it), again after a failure of
    /// the connection, and anew with each subscription.
    conn: Arc<tokio::sync::Mutex<Option<ClusterConnection>>>,
    /// The masters probed in turn, and when they were last learnt on this
    /// subscription.
    masters: Vec<Addr>,
    learnt: Option<Instant>,
    /// Learn them again with the next probe: none learnt on this
    /// subscription yet, or the last probe failed (one may have failed
    /// over).
    relearn: bool,
    /// Counts the probes sent: the next goes to this master (modulo their
    /// number). A failed probe's master is tried again next.
    turn: usize,
    /// No probe before this, after a failed one: a master that refuses
    /// them is not hammered, nor the connection reopened in a loop.
    paused_until: Option<Instant>,
    /// Probes failed in a row: the pause doubles with each, up to
    /// [`PAUSE_MAX`].
    failures: u32,
    /// Each master listed since [`Prober::restart`]: when its last probe
    /// came back (or when it was listed), and whether one has.
    watch: HashMap<Addr, Watch>,
    /// When the current connection's check began.
    since: Instant,
    pending: Option<Pending>,
    /// The run id each master gave on this subscription, and the master
    /// seen with another one since (a restart), until [`Prober::check`]
    /// reports it.
    run_ids: HashMap<Addr, Box<str>>,
    restarted: Option<Addr>,
}

#[derive(Clone, Copy)]
struct Watch {
    since: Instant,
    heard: bool,
    /// Listed by the first `CLUSTER SLOTS` of a subscription, which may
    /// have had to open the connection first: given that time as well.
    first: bool,
}

/// A probe on its way.
struct Pending {
    message: String,
    started: Instant,
    /// Heard: taken into account once its task has said which master it
    /// went to (the message may come before the answer to the `PUBLISH`).
    came_back: bool,
    state: Publish,
    /// Its task, stopped when the probe is given up or the subscription
    /// starts anew: none goes on connecting or publishing unwatched.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Publish {
    /// Its task: connects and learns the masters when needed, then
    /// publishes.
    Sending(oneshot::Receiver<Outcome>),
    /// Sent to `master` at `sent`, accepted at `at`.
    Accepted {
        master: Addr,
        sent: Instant,
        at: Instant,
    },
}

/// What a probe's task did.
struct Outcome {
    /// The masters, when the task learnt them, and when `CLUSTER SLOTS`
    /// answered (kept even if the `PUBLISH` then failed).
    learnt: Option<(Vec<Addr>, Instant)>,
    published: redis::RedisResult<Sent>,
}

impl Outcome {
    fn failed(e: redis::RedisError) -> Self {
        Self {
            learnt: None,
            published: Err(e),
        }
    }
}

/// A probe its master accepted.
struct Sent {
    master: Addr,
    /// When its `PUBLISH` went out, and when the master accepted it.
    sent: Instant,
    at: Instant,
    /// The master's run id, asked once it accepted the probe; `None` when
    /// it refuses to tell.
    run_id: Option<Box<str>>,
}

/// What the probes say, at a check.
pub(super) enum Check {
    /// No probe is on its way: time to send the next.
    Idle,
    Waiting,
    /// The channel cannot be vouched for (the reason).
    Lost(String),
}

impl Prober {
    pub(super) fn new(client: ClusterClient, seed: Option<String>, period: Duration) -> Self {
        Self {
            client,
            seed,
            period,
            conn: Arc::new(tokio::sync::Mutex::new(None)),
            masters: Vec::new(),
            learnt: None,
            relearn: true,
            turn: 0,
            paused_until: None,
            failures: 0,
            watch: HashMap::new(),
            since: Instant::now(),
            pending: None,
            run_ids: HashMap::new(),
            restarted: None,
        }
    }

    /// A new subscription: every master must be heard on it anew, through
    /// a connection opened anew (the old one may be what failed, silently).
    pub(super) fn restart(&mut self) {
        self.pending = None;
        self.conn = Arc::new(tokio::sync::Mutex::new(None));
        self.paused_until = None;
        self.failures = 0;
        self.watch.clear();
        self.run_ids.clear();
        self.restarted = None;
        self.since = Instant::now();
        // Learnt again by the first probe, which has no list to fall
        // back on: they may have changed while the channel was down.
        self.learnt = None;
        self.relearn = true;
    }

    /// Notes `message` if it is the probe on its way.
    pub(super) fn heard(&mut self, message: &str) {
        let Some(pending) = &mut self.pending else {
            return;
        };
        if pending.message != message {
            return;
        }
        pending.came_back = true;
        // Its master is known once its task has answered (the message may
        // come before the answer to the `PUBLISH`).
        self.absorb();
    }

    /// One turn over the masters.
    fn round(&self) -> Duration {
        self.period * self.masters.len().max(1) as u32
    }

    /// Whether every master has been heard since [`Prober::restart`],
    /// each within [`UNHEARD_MAX`] and a round: once live, each gets its
    /// next turn within a round, inside the limit of [`Prober::check`].
    pub(super) fn heard_every_master(&self) -> bool {
        let fresh = UNHEARD_MAX + self.round();
        !self.masters.is_empty()
            && self.masters.iter().all(|m| {
                self.watch
                    .get(m)
                    .is_some_and(|w| w.heard && w.since.elapsed() < fresh)
            })
    }

    /// Whether going live has taken longer than it can on a cluster that
    /// answers: a connection, and every master heard within the freshness
    /// [`Prober::heard_every_master`] asks for.
    pub(super) fn going_live_overdue(&self) -> bool {
        self.since.elapsed() > CONNECT_TIMEOUT + UNHEARD_MAX + self.round() * 3
    }

    /// Takes in the masters a probe's task learnt at `at`: a master new to
    /// the list is given its time from now.
    fn take_masters(&mut self, masters: Vec<Addr>, at: Instant) {
        let now = Instant::now();
        let first = self.watch.is_empty();
        self.watch.retain(|m, _| masters.contains(m));
        self.run_ids.retain(|m, _| masters.contains(m));
        for master in &masters {
            self.watch.entry(master.clone()).or_insert(Watch {
                since: now,
                heard: false,
                first,
            });
        }
        self.masters = masters;
        self.learnt = Some(at);
        self.relearn = false;
    }

    /// How long a master may go unheard: [`UNHEARD_MAX`] and two rounds.
    fn unheard_limit(&self) -> Duration {
        UNHEARD_MAX + self.round() * 2
    }

    /// How long the masters learnt last may stand in for a failed
    /// learning: no longer than a master may go unheard, past the time
    /// they are due to be learnt again (one added or failed over meanwhile
    /// is not probed).
    fn masters_trusted_for(&self) -> Duration {
        MASTERS_REFRESH + self.unheard_limit()
    }

    /// Takes in what the probe's task did, if it is done. A task that
    /// failed (no connection, no masters, the `PUBLISH` refused or too
    /// slow) ends the probe; its master's silence counts in
    /// [`Prober::check`].
    fn absorb(&mut self) {
        let Some(pending) = &mut self.pending else {
            return;
        };
        if let Publish::Sending(answer) = &mut pending.state {
            let outcome = match answer.try_recv() {
                Err(oneshot::error::TryRecvError::Empty)
                    if pending.started.elapsed() < TASK_MAX =>
                {
                    return
                }
                Ok(outcome) => outcome,
                Err(oneshot::error::TryRecvError::Empty) => {
                    Outcome::failed(timeout_error("a probe"))
                }
                Err(oneshot::error::TryRecvError::Closed) => Outcome::failed(
                    (
                        redis::ErrorKind::Client,
                        "a probe's task ended without an answer",
                    )
                        .into(),
                ),
            };
            let started = pending.started;
            if let Some((masters, at)) = outcome.learnt {
                self.take_masters(masters, at);
            }
            match outcome.published {
                Ok(sent) => {
                    self.failures = 0;
                    self.note_run_id(&sent.master, sent.run_id);
                    if let Some(pending) = &mut self.pending {
                        pending.state = Publish::Accepted {
                            master: sent.master,
                            sent: sent.sent,
                            at: sent.at,
                        };
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "an invalidation probe was not published");
                    // The masters are learnt again (one may have failed
                    // over), and the same master is tried again next, a
                    // tick after this one was sent, then with longer
                    // pauses. (The task dropped a connection that failed.)
                    self.relearn = true;
                    self.turn = self.turn.wrapping_sub(1);
                    let pause = (self.period * 2u32.pow(self.failures.min(3))).min(PAUSE_MAX);
                    self.failures = self.failures.saturating_add(1);
                    self.paused_until = Some(started + pause);
                    self.pending = None;
                    return;
                }
            }
        }
        let Some(pending) = &self.pending else {
            return;
        };
        if let Publish::Accepted { master, sent, .. } = &pending.state {
            if pending.came_back {
                // As of when it was sent: all it proves.
                let heard = Watch {
                    since: *sent,
                    heard: true,
                    first: false,
                };
                self.watch.insert(master.clone(), heard);
                self.pending = None;
            }
        }
    }

    /// Keeps `master`'s run id, noting a restart when it gave another one
    /// before on this subscription.
    fn note_run_id(&mut self, master: &Addr, run_id: Option<Box<str>>) {
        let Some(run_id) = run_id else {
            return;
        };
        match self.run_ids.get(master) {
            Some(known) if *known != run_id => {
                self.restarted = Some(master.clone());
                self.run_ids.insert(master.clone(), run_id);
            }
            Some(_) => {}
            None => {
                self.run_ids.insert(master.clone(), run_id);
            }
        }
    }

    /// The probes' verdict: a master that restarted is a lost channel, and
    /// so is a probe accepted by its master and not heard
    /// `within` is a lost channel, and so is a master not heard for
    /// [`UNHEARD_MAX`] and two rounds, or masters last learnt longer ago
    /// than [`MASTERS_REFRESH`] more than that. Before the first learning
    /// since [`Prober::restart`], and for masters not heard yet that it
    /// listed, the time a connection may take to open is given as well.
    pub(super) fn check(&mut self, within: Duration) -> Check {
        self.absorb();
        if let Some(master) = self.restarted.take() {
            return Check::Lost(format!(
                "the master {}:{} restarted (its run id changed)",
                master.0, master.1
            ));
        }
        if let Some(Pending {
            state: Publish::Accepted { master, at, .. },
            ..
        }) = &self.pending
        {
            if at.elapsed() > within {
                return Check::Lost(format!(
                    "a probe published on the master {}:{} did not come back",
                    master.0, master.1
                ));
            }
        }
        let limit = self.unheard_limit();
        let first_limit = limit + CONNECT_TIMEOUT;
        let unlearnt = match self.learnt {
            Some(t) => t.elapsed() > self.masters_trusted_for(),
            None => self.since.elapsed() > first_limit,
        };
        if unlearnt {
            return Check::Lost("the cluster's masters could not be learnt".to_owned());
        }
        for master in &self.masters {
            let (last, limit) = match self.watch.get(master) {
                Some(w) if w.first && !w.heard => (w.since, first_limit),
                Some(w) => (w.since, limit),
                None => (self.since, first_limit),
            };
            if last.elapsed() > limit {
                return Check::Lost(format!(
                    "no probe came back from the master {}:{} for {limit:?}",
                    master.0, master.1
                ));
            }
        }
        if self.pending.is_some() || self.paused_until.is_some_and(|t| Instant::now() < t) {
            Check::Waiting
        } else {
            Check::Idle
        }
    }

    /// Sends a probe to the next master, on a task of its own (which
    /// first connects and learns the masters when needed): never waits.
    pub(super) fn start(&mut self, channel: &str) {
        let message = format!("{}:0 h {}", origin(), SERIAL.fetch_add(1, Relaxed));
        let relearn = self.relearn
            || self.masters.is_empty()
            || self.learnt.is_none_or(|t| t.elapsed() >= MASTERS_REFRESH);
        // Those known stand in for a failed learning only while `check`
        // still vouches for them.
        let fall_back = self
            .learnt
            .is_some_and(|t| t.elapsed() < self.masters_trusted_for());
        let job = Job {
            client: self.client.clone(),
            conn: Arc::clone(&self.conn),
            seed: self.seed.clone(),
            masters: self.masters.clone(),
            relearn,
            fall_back,
            turn: self.turn,
            channel: channel.to_owned(),
            message: message.clone(),
        };
        self.turn = self.turn.wrapping_add(1);
        let (answer, answered) = oneshot::channel();
        let task = tokio::spawn(async move {
            let _ = answer.send(job.run().await);
        });
        self.pending = Some(Pending {
            message,
            started: Instant::now(),
            came_back: false,
            state: Publish::Sending(answered),
            task,
        });
    }
}

/// What a probe's task has to do.
struct Job {
    client: ClusterClient,
    /// Where the connection is kept: opened here when there is none.
    conn: Arc<tokio::sync::Mutex<Option<ClusterConnection>>>,
    seed: Option<String>,
    /// The masters known, whether to learn them again first, and whether
    /// those known are probed if that fails.
    masters: Vec<Addr>,
    relearn: bool,
    fall_back: bool,
    turn: usize,
    channel: String,
    message: String,
}

impl Job {
    async fn run(self) -> Outcome {
        let mut learnt = None;
        let published = self.publish(&mut learnt).await;
        Outcome { learnt, published }
    }

    /// Connects and learns the masters when needed (into `learnt`), then
    /// publishes the probe.
    async fn publish(self, learnt: &mut Option<(Vec<Addr>, Instant)>) -> redis::RedisResult<Sent> {
        let mut conn = {
            // Held while connecting: a probe sent meanwhile waits for this
            // connection instead of opening another.
            let mut kept = self.conn.lock().await;
            match &*kept {
                Some(conn) => conn.clone(),
                None => {
                    let config = ClusterConfig::new().set_connection_timeout(NODE_CONNECT_TIMEOUT);
                    let connect = self.client.get_async_connection_with_config(config);
                    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                        .await
                        .map_err(|_| timeout_error("connecting for probes"))??;
                    *kept = Some(conn.clone());
                    conn
                }
            }
        };
        let masters = if self.relearn || self.masters.is_empty() {
            match learn_masters(&mut conn, self.seed.as_deref()).await {
                Ok(masters) => {
                    *learnt = Some((masters.clone(), Instant::now()));
                    masters
                }
                Err(e) if !self.fall_back || self.masters.is_empty() => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "the masters could not be learnt again; probing those known");
                    self.masters
                }
            }
        } else {
            self.masters
        };
        let master = masters[self.turn % masters.len()].clone();
        let publish = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(&self.message)
            .clone();
        let sent = Instant::now();
        let published = ask(
            &mut conn,
            publish,
            at_address(&master),
            PUBLISH_TIMEOUT,
            "publishing a probe",
        )
        .await;
        let at = Instant::now();
        let asked = match published {
            Ok(_) => run_id_of(&mut conn, &master).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &asked {
            // An error reply (a master loading, or refusing the probe)
            // leaves the connection as it is; a failed connection is
            // opened afresh by the next probe.
            if connection_failed(e) {
                *self.conn.lock().await = None;
            }
        }
        let run_id = asked?;
        Ok(Sent {
            master,
            sent,
            at,
            run_id,
        })
    }
}

/// The route to the node at `addr`.
fn at_address((host, port): &Addr) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: host.clone(),
        port: *port,
    })
}

/// The run id of the master at `addr` (`INFO server`): another one than
/// before means it restarted. `None` when it refuses `INFO` (an ACL may
/// deny it, a renamed command hides it) or names none; any other failure
/// fails the probe.
async fn run_id_of(
    conn: &mut ClusterConnection,
    addr: &Addr,
) -> redis::RedisResult<Option<Box<str>>> {
    let info = redis::cmd("INFO").arg("server").clone();
    let answer = ask(
        conn,
        info,
        at_address(addr),
        PUBLISH_TIMEOUT,
        "asking a master for its run id",
    )
    .await;
    match answer {
        Ok(value) => Ok(run_id_in(&String::from_redis_value(value)?)),
        Err(e) if !refused(&e) => Err(e),
        Err(e) => {
            // Said once: every probe would say it again.
            if !INFO_REFUSED.swap(true, Relaxed) {
                tracing::warn!(
                    error = %e,
                    "a cluster master refused INFO: the local levels will not notice it \
                     restarting quickly (allow INFO to the cache's user, e.g. +info)"
                );
            }
            Ok(None)
        }
    }
}

/// The `run_id` field of an `INFO` answer.
fn run_id_in(info: &str) -> Option<Box<str>> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(Box::from)
}

/// The masters (at least one), from `CLUSTER SLOTS` asked of any node.
async fn learn_masters(
    conn: &mut ClusterConnection,
    seed: Option<&str>,
) -> redis::RedisResult<Vec<Addr>> {
    let slots = ask(
        conn,
        redis::cmd("CLUSTER").arg("SLOTS").clone(),
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        SLOTS_TIMEOUT,
        "asking for the masters",
    )
    .await?;
    let masters = crate::store::masters_in(slots, seed)
        .map_err(|(_, message)| redis::RedisError::from((redis::ErrorKind::Client, message)))?
        .0;
    if masters.is_empty() {
        return Err((redis::ErrorKind::Client, "CLUSTER SLOTS named no master").into());
    }
    Ok(masters)
}

/// Runs `cmd` on the node `route` names, within `limit` (else a time-out
/// error saying `what`). An error reply is an error, as `query_async`
/// gives it (the cluster client hands it back as a value).
async fn ask(
    conn: &mut ClusterConnection,
    cmd: redis::Cmd,
    route: RoutingInfo,
    limit: Duration,
    what: &str,
) -> redis::RedisResult<redis::Value> {
    tokio::time::timeout(limit, conn.route_command(cmd, route))
        .await
        .map_err(|_| timeout_error(what))?
        .and_then(redis::Value::extract_error)
}

/// Whether `e` is a refusal of the command itself: no permission, or no
/// such command.
fn refused(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
        || e.detail()
            .is_some_and(|detail| detail.starts_with("unknown command"))
}

/// Whether `e` says the connection failed (rather than the server
/// answering with an error).
fn connection_failed(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prober() -> Prober {
        let client = ClusterClient::new(vec!["redis://127.0.0.1:1"]).unwrap();
        Prober::new(client, None, Duration::from_millis(250))
    }

    fn master(port: u16) -> Addr {
        ("127.0.0.1".to_owned(), port)
    }

    #[test]
    fn the_run_id_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:3f1c0a\r\ntcp_port:7000\r\n";
        assert_eq!(run_id_in(info).as_deref(), Some("3f1c0a"));
        assert_eq!(run_id_in("# Server\r\nredis_version:7.0.15\r\n"), None);
        assert_eq!(run_id_in("run_id:\r\n"), None);
    }

    #[test]
    fn a_new_run_id_of_a_master_loses_the_channel_once() {
        let mut probe = prober();
        probe.note_run_id(&master(7000), Some("a".into()));
        probe.note_run_id(&master(7001), Some("b".into()));
        probe.note_run_id(&master(7000), Some("a".into()));
        probe.note_run_id(&master(7000), None);
        assert!(probe.restarted.is_none(), "the same run id, or none told");

        probe.note_run_id(&master(7001), Some("c".into()));
        match probe.check(Duration::from_millis(500)) {
            Check::Lost(reason) => assert!(reason.contains("127.0.0.1:7001 restarted"), "{reason}"),
            _ => panic!("a master with a new run id did not lose the channel"),
        }
        // Reported once; the new run id is the one compared from now on.
        assert!(probe.restarted.is_none());
        probe.note_run_id(&master(7001), Some("c".into()));
        assert!(probe.restarted.is_none());
    }

    #[test]
    fn a_new_subscription_forgets_the_run_ids() {
        let mut probe = prober();
        probe.note_run_id(&master(7000), Some("a".into()));
        probe.note_run_id(&master(7000), Some("b".into()));
        probe.restart();
        assert!(probe.restarted.is_none(), "a restart noted before is moot");
        probe.note_run_id(&master(7000), Some("c".into()));
        assert!(
            probe.restarted.is_none(),
            "a master restarted while the channel was down: the levels were emptied then"
        );
    }
}
