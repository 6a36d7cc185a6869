//! Following the sentinels' master switches as they happen.
//!
//! A connection moves to a new master when it breaks: the old master
//! killed, restarted, or demoted (the sentinels then close its clients).
//! One failover breaks nothing: the old master cut off from the sentinels
//! but not from this process (a network partition). The sentinels promote
//! a replica and the processes that reconnect write there, while this one
//! would go on reading, and listening for invalidations, on the old master,
//! which hears of none of their changes. So the store listens to the
//! sentinels' `+switch-master` events, as the pooling Redis clients do
//! (Jedis's `JedisSentinelPool`), and counts the switches of its service:
//! the store then drops its connections, so that the next calls reconnect
//! through the sentinels, and the invalidation channel subscribes again
//! (emptying the local levels in between).
//!
//! One sentinel is followed at a time, the next one when it stops
//! answering. Once subscribed, the sentinel is asked which master it names
//! now: a switch made while no sentinel was followed counts too.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::RedisResult;

/// How long a step (connecting, subscribing, asking, a `PING`) may take.
const STEP: Duration = Duration::from_secs(1);
/// A `PING` after this long without a message: a sentinel that silently
/// went away is replaced within about two seconds.
const PING_AFTER: Duration = Duration::from_secs(1);
/// Pauses between attempts, doubling from the first to the last.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The master switches of one service seen so far.
#[derive(Debug, Default)]
pub(crate) struct Switches {
    count: AtomicU64,
    notify: tokio::sync::Notify,
}

impl Switches {
    /// How many switches were seen: a connection made under another count
    /// may be to the old master.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Resolves once the count is no longer `seen`.
    pub(crate) async fn after(&self, seen: u64) {
        loop {
            let notified = self.notify.notified();
            if self.count() != seen {
                return;
            }
            notified.await;
        }
    }

    fn switched(&self, service: &str, to: &(String, u16)) {
        self.count.fetch_add(1, Relaxed);
        self.notify.notify_waiters();
        tracing::info!(
            service, master = %format!("{}:{}", to.0, to.1),
            "the sentinels switched to another master; connections to the old one are dropped"
        );
    }
}

/// The task following the switches, stopped when dropped.
pub(crate) struct Watch {
    switches: Arc<Switches>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Starts following `service` through `sentinels` (tried in turn), on
    /// the crate's I/O runtime.
    pub(crate) fn start(sentinels: Vec<redis::Client>, service: String) -> Self {
        let switches = Arc::new(Switches::default());
        let task =
            crate::io::handle().spawn(follow_forever(sentinels, service, Arc::clone(&switches)));
        Self { switches, task }
    }

    pub(crate) fn switches(&self) -> &Arc<Switches> {
        &self.switches
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow_forever(sentinels: Vec<redis::Client>, service: String, switches: Arc<Switches>) {
    let mut known = None;
    let mut retry = RETRY_MIN;
    // A refusal (of the login, or of a command to this process's user) is
    // said once at `warn` until a sentinel is followed again: it is a
    // setting to fix, and every retry would repeat it.
    let mut refusal_told = false;
    for sentinel in sentinels.iter().cycle() {
        match follow(sentinel, &service, &switches, &mut known).await {
            // It was followed: the next one is tried soon.
            Ok(()) => {
                retry = RETRY_MIN;
                refusal_told = false;
            }
            Err(e) => {
                match refusal(&e) {
                    Some(what) if !refusal_told => {
                        refusal_told = true;
                        tracing::warn!(error = %e, "{what}");
                    }
                    _ => tracing::debug!(error = %e, "cannot follow a sentinel's master switches"),
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// What to tell when `e` is a sentinel refusing this process: its login
/// (no password where it asks for one, a wrong one, or one where it asks
/// for none), or a command to its ACL user.
fn refusal(e: &redis::RedisError) -> Option<&'static str> {
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
    {
        Some(
            "a sentinel refused this process's login: check the sentinels' own credentials \
             (CACHED_REDIS_SENTINEL_PASSWORD and CACHED_REDIS_SENTINEL_USERNAME, or \
             ConfigBuilder::sentinel_password and sentinel_username), set where the sentinels \
             ask for a password and only there; while no sentinel accepts the login, no master \
             is found and cached functions run uncached",
        )
    } else if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) {
        Some(
            "a sentinel refused a command to this process's user: grant it what the README's \
             Sentinel section lists (+subscribe on the +switch-master channel, +ping, +role, \
             +sentinel|masters, +sentinel|master, +sentinel|get-master-addr-by-name); until \
             then a master switch that breaks no connection is not followed",
        )
    } else {
        None
    }
}

/// Follows one sentinel until it stops answering: `Ok` if it had been
/// followed, an error if that could not start.
async fn follow(
    sentinel: &redis::Client,
    service: &str,
    switches: &Switches,
    known: &mut Option<(String, u16)>,
) -> RedisResult<()> {
    let pubsub = step(sentinel.get_async_pubsub()).await?;
    let (mut sink, mut stream) = pubsub.split();
    step(sink.subscribe("+switch-master")).await?;
    // Asked once subscribed, so that no switch falls in between.
    let mut conn = step(sentinel.get_multiplexed_async_connection()).await?;
    let named: Option<(String, u16)> = step(
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(service)
            .query_async(&mut conn),
    )
    .await?;
    drop(conn);
    tracing::debug!(
        service, master = ?named,
        "following the sentinels' master switches"
    );
    if let Some(named) = named {
        if known.as_ref().is_some_and(|known| *known != named) {
            switches.switched(service, &named);
        }
        *known = Some(named);
    }
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    let text: String = message.get_payload().unwrap_or_default();
                    if let Some(to) = switched_to(&text, service) {
                        switches.switched(service, &to);
                        *known = Some(to);
                    }
                }
                None => return Ok(()),
            },
            () = tokio::time::sleep(PING_AFTER) => {
                if step(sink.ping::<redis::Value>()).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// `future` within [`STEP`].
async fn step<T>(future: impl std::future::Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the sentinel did not answer in time",
            )))
        })
}

/// The new master of a `+switch-master` message
/// (`<service> <old ip> <old port> <new ip> <new port>`) about `service`.
fn switched_to(message: &str, service: &str) -> Option<(String, u16)> {
    let fields: Vec<&str> = message.split(' ').collect();
    match fields.as_slice() {
        [name, _, _, ip, port] if *name == service => Some(((*ip).to_owned(), port.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_messages_of_the_service_name_its_new_master() {
        assert_eq!(
            switched_to("mymaster 127.0.0.1 6379 10.0.0.2 6380", "mymaster"),
            Some(("10.0.0.2".to_owned(), 6380))
        );
        assert_eq!(
            switched_to("other 127.0.0.1 6379 10.0.0.2 6380", "mymaster"),
            None
        );
        assert_eq!(switched_to("mymaster 127.0.0.1 6379", "mymaster"), None);
        assert_eq!(
            switched_to("mymaster 127.0.0.1 6379 10.0.0.2 port", "mymaster"),
            None
        );
    }

    #[tokio::test]
    async fn waiting_for_a_switch_ends_with_the_switch() {
        let switches = Arc::new(Switches::default());
        let seen = switches.count();
        let waiting = tokio::spawn({
            let switches = Arc::clone(&switches);
            async move { switches.after(seen).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        switches.switched("mymaster", &("127.0.0.1".to_owned(), 1));
        waiting.await.unwrap();
        // Already past: at once.
        switches.after(seen).await;
    }
}
