//! In-process coalescing: concurrent calls with the same key run the body
//! once; the others wait for its encoded result. Always on.
//!
//! The leader holds a [`Leader`] guard. Whatever way it ends (value, error,
//! panic, a cancelled future), dropping the guard wakes every waiter: with
//! the encoded value when there is one, otherwise with [`Outcome::Failed`],
//! on which each waiter runs its own call, so an error reaches it just as
//! its own call would have produced it. Nobody is left hanging.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// What the leader left for its followers.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The stored entry, header included.
    Value(Arc<[u8]>),
    /// No shareable value (error, `None`, panic, too large, cancelled).
    Failed,
}

#[derive(Debug, Default)]
pub(crate) struct Flight {
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
    notify: tokio::sync::Notify,
}

/// How a call takes part in the flight of its key.
pub(crate) enum Role {
    /// Runs the body; others wait for it.
    Leader(Leader),
    /// Waits for the leader.
    Follower(Arc<Flight>),
}

type Table = Mutex<HashMap<String, Arc<Flight>>>;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Joins the flight of `key`, leading it if none is under way.
pub(crate) fn join(key: &str) -> Role {
    let mut flights = table().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(flight) = flights.get(key) {
        return Role::Follower(flight.clone());
    }
    let flight = Arc::new(Flight::default());
    flights.insert(key.to_owned(), flight.clone());
    Role::Leader(Leader {
        key: key.to_owned(),
        flight,
        outcome: Outcome::Failed,
    })
}

/// Whether some call in this process is computing `key` right now.
#[cfg(test)]
fn in_flight(key: &str) -> bool {
    table()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(key)
}

/// The leader's side; finishing (or dropping) it releases the followers.
pub(crate) struct Leader {
    key: String,
    flight: Arc<Flight>,
    outcome: Outcome,
}

impl Leader {
    /// Hands `bytes` (an encoded entry) to the followers.
    pub(crate) fn share(&mut self, bytes: Arc<[u8]>) {
        self.outcome = Outcome::Value(bytes);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut flights = table().lock().unwrap_or_else(|e| e.into_inner());
        // Remove first: a call arriving from now on starts afresh (it will
        // find the stored entry) instead of joining a finished flight.
        if flights
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(&self.key);
        }
        drop(flights);
        let outcome = std::mem::replace(&mut self.outcome, Outcome::Failed);
        *self
            .flight
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        self.flight.done.notify_all();
        self.flight.notify.notify_waiters();
    }
}

impl Flight {
    fn outcome(&self) -> Option<Outcome> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits for the leader without blocking the thread.
    pub(crate) async fn wait(&self) -> Outcome {
        loop {
            let mut notified = std::pin::pin!(self.notify.notified());
            // Registered before checking, so a wake-up between the check
            // and the await is not lost.
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome() {
                return outcome;
            }
            notified.await;
        }
    }

    /// Waits for the leader, blocking the thread.
    pub(crate) fn wait_blocking(&self) -> Outcome {
        let mut outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(o) = outcome.as_ref() {
                return o.clone();
            }
            outcome = self.done.wait(outcome).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_get_the_leaders_value() {
        let Role::Leader(mut leader) = join("k1") else {
            panic!("first is leader")
        };
        let Role::Follower(f) = join("k1") else {
            panic!("second follows")
        };
        let waiter = std::thread::spawn(move || f.wait_blocking());
        leader.share(Arc::from(&b"v"[..]));
        drop(leader);
        assert!(matches!(waiter.join().unwrap(), Outcome::Value(v) if &*v == b"v"));
        assert!(!in_flight("k1"));
    }

    #[test]
    fn a_leader_that_panics_releases_its_followers() {
        let Role::Leader(leader) = join("k2") else {
            panic!()
        };
        let Role::Follower(f) = join("k2") else {
            panic!()
        };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _leader = leader;
            panic!("body failed");
        }));
        assert!(matches!(f.wait_blocking(), Outcome::Failed));
    }

    #[tokio::test]
    async fn async_followers_wake_up() {
        let Role::Leader(mut leader) = join("k3") else {
            panic!()
        };
        let waiters: Vec<_> = (0..8)
            .map(|_| match join("k3") {
                Role::Follower(f) => tokio::spawn(async move { f.wait().await }),
                Role::Leader(_) => panic!("only one leader"),
            })
            .collect();
        tokio::task::yield_now().await;
        leader.share(Arc::from(&b"x"[..]));
        drop(leader);
        for w in waiters {
            assert!(matches!(w.await.unwrap(), Outcome::Value(_)));
        }
    }
}
