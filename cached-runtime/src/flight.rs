//! In-process coalescing: concurrent calls with the same key run the body
//! once; the others wait for its encoded result. Always on.
//!
//! The leader holds a [`Leader`] guard. Whatever way it ends (value, error,
//! `None`, panic, a cancelled future), dropping the guard settles the
//! flight:
//!
//! - with an encoded value, every waiter gets it then (a leader shares it
//!   before writing it to the store, so one cancelled during the write
//!   still feeds them; otherwise they get it once the write is answered);
//! - with a result that says there is nothing (a `None` not cached), every
//!   waiter answers `None` too;
//! - without one (nothing shareable: an error, a panic, a value too
//!   large, a leader cancelled before its value was encoded), exactly one
//!   waiter is handed the lead and runs its own call, while the others
//!   keep waiting for that call: a backend that failed once gets one more
//!   try before the herd, and the first call that succeeds feeds everyone
//!   still waiting;
//! - after [`FAILED_RUNS_TO_RELEASE`] runs in a row that ended without a
//!   value (an error, a panic, a value too large; a cancelled leader is
//!   not one), every waiter runs its own call at once ([`Turn::Alone`]),
//!   as it would without the cache, and later calls start a new flight.
//!   An error cannot be shared, so passing the lead on for good would
//!   queue a key whose calls keep failing (a `Result` that says "not
//!   found") behind itself: the k-th waiter waiting k runs, a queue that
//!   grows without bound once calls arrive faster than one run takes.
//!
//! Each caller sees what a call would have produced: the shared value, or
//! the outcome of its own run (an error cannot be shared: `E` needs no
//! traits). Nobody is left hanging: a waiter that gives up (its future is
//! dropped) leaves the queue, the lead passes on as long as anyone waits,
//! and a waiter's patience is bounded ([`Turn::OutOfPatience`]), for a
//! leader whose future is alive but no longer polled.
//!
//! A call made by the leader's own body for the same key (a retry that
//! calls the function again with a skipped argument, a method delegating
//! to another instance whose `self` the key leaves out) would wait for
//! itself. It is told so ([`Role::Nested`]) and runs on its own; see
//! [`Leading`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Where a flight stands; guarded by [`Flight::state`].
#[derive(Debug)]
struct State {
    /// The entry (header included), once a leader shared one.
    value: Option<Shared>,
    /// A leader ended without a value and nobody has taken the lead since.
    lead_vacant: bool,
    /// A leader's result said there is nothing (a `None` not cached):
    /// every waiter's call says so too.
    absent: bool,
    /// Followers registered and not yet served or gone.
    waiters: usize,
    /// When the current leader took the lead: a follower's patience
    /// counts from there.
    led_since: Instant,
    /// A follower found the leader stalled past its patience and took the
    /// flight out of the table: every waiter joins the key afresh.
    retired: bool,
    /// Runs in a row that ended without a value.
    failed_runs: u32,
    /// The current leader's body panicked.
    leader_panicked: bool,
    /// [`FAILED_RUNS_TO_RELEASE`] runs failed: every waiter runs its own
    /// call (the flight has left the table).
    released: bool,
}

/// Runs of one flight that may end without a value, one after the other,
/// before its waiters stop waiting for another: the first leader's and
/// one waiter's. A backend that failed once (a timeout, a restart) most
/// often answers the next call, which then feeds everyone; one that fails
/// twice in a row is taken to fail for everyone, and each waiter gets its
/// own answer in the time of one run rather than after everyone ahead.
pub(crate) const FAILED_RUNS_TO_RELEASE: u32 = 2;

/// The calls of one key that are under way.
#[derive(Debug)]
pub(crate) struct Flight {
    state: Mutex<State>,
    done: Condvar,
    notify: tokio::sync::Notify,
}

impl Flight {
    /// A flight whose leader takes the lead now.
    fn led_now() -> Self {
        Self {
            state: Mutex::new(State {
                value: None,
                lead_vacant: false,
                absent: false,
                waiters: 0,
                led_since: Instant::now(),
                retired: false,
                failed_runs: 0,
                leader_panicked: false,
                released: false,
            }),
            done: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        }
    }
}

/// How a call takes part in the flight of its key.
pub(crate) enum Role {
    /// Runs the body; others wait for it.
    Leader(Leader),
    /// Waits for the leader.
    Follower(Follower),
    /// Made by the body of the flight's own leader, on this thread: it
    /// cannot wait for the call it is part of.
    Nested,
}

/// What a leader hands its followers.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// The encoded entry, header included.
    pub(crate) bytes: Arc<[u8]>,
    /// Whether the store is known to hold it: a write that failed, or
    /// whose leader was dropped before its answer, leaves the value to the
    /// followers, but no entry known to describe.
    pub(crate) stored: bool,
}

/// What a follower's wait ends with.
pub(crate) enum Turn {
    /// A leader's encoded entry.
    Value(Shared),
    /// The leader ended without a value: this call leads now.
    Lead(Leader),
    /// [`FAILED_RUNS_TO_RELEASE`] leaders in a row ended without a value:
    /// this call runs on its own, beside the other waiters, coordinated
    /// with nobody.
    Alone,
    /// The leader's result said there is nothing (a `None` not cached).
    Absent,
    /// Neither came within the follower's patience: the leader's future
    /// is alive but nobody polls it (a `select!` branch that lost and was
    /// kept, a stream that is not read), or it runs far past any lease.
    /// The follower has left the queue, and the flight the table: joining
    /// again starts a new one (led by the first to join), instead of
    /// waiting for the same leader once more.
    OutOfPatience,
}

/// What a flight is for: a key of one cache. Two caches of a process may
/// share a namespace, and so their keys, over different stores (a named
/// cache or a `Cache` value beside the default one): their calls must not
/// feed each other, or one cache would count a hit for a value its own
/// store never received.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FlightKey {
    /// The cache's identity, stable while any of its calls runs.
    cache: usize,
    key: String,
}

type Table = Mutex<HashMap<FlightKey, Arc<Flight>>>;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

fn lock_table() -> MutexGuard<'static, HashMap<FlightKey, Arc<Flight>>> {
    table().lock().unwrap_or_else(|e| e.into_inner())
}

/// Joins the flight of `key` in the cache identified by `cache`, leading
/// it if none is under way.
pub(crate) fn join(cache: usize, key: &str) -> Role {
    let key = FlightKey {
        cache,
        key: key.to_owned(),
    };
    // Lock order everywhere: the table, then a flight's state.
    let mut flights = lock_table();
    if let Some(flight) = flights.get(&key) {
        if leading(flight) {
            return Role::Nested;
        }
        flight.lock_state().waiters += 1;
        return Role::Follower(Follower {
            flight: flight.clone(),
            key,
            queued: true,
        });
    }
    let flight = Arc::new(Flight::led_now());
    flights.insert(key.clone(), flight.clone());
    Role::Leader(Leader {
        key,
        flight,
        value: None,
        absent: false,
        failed: false,
    })
}

/// Removes `flight` from the table if it is still the one under `key`.
fn retire(flights: &mut HashMap<FlightKey, Arc<Flight>>, key: &FlightKey, flight: &Arc<Flight>) {
    if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
        flights.remove(key);
    }
}

/// Whether some call of cache 0 in this process is computing `key` right
/// now.
#[cfg(test)]
fn in_flight(key: &str) -> bool {
    lock_table().contains_key(&FlightKey {
        cache: 0,
        key: key.to_owned(),
    })
}

/// The leader's side; finishing (or dropping) it settles the flight.
pub(crate) struct Leader {
    key: FlightKey,
    flight: Arc<Flight>,
    value: Option<Shared>,
    /// The result said there is nothing.
    absent: bool,
    /// The run ended without a value to share ([`Leader::failed`]).
    failed: bool,
}

thread_local! {
    /// The flights whose leader's body this thread is polling right now,
    /// innermost last (by address: each is alive while its leader is).
    static LEADING: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Whether this thread is polling the body of `flight`'s leader.
fn leading(flight: &Arc<Flight>) -> bool {
    let id = Arc::as_ptr(flight) as usize;
    LEADING
        .try_with(|leading| leading.borrow().contains(&id))
        .unwrap_or(false)
}

pin_project_lite::pin_project! {
    /// A leader's body, marked as such on the thread while it is polled:
    /// a cached call it makes for the same key finds the flight led from
    /// within ([`Role::Nested`]) instead of waiting for itself. A call
    /// beside it (another future of the same task, another task) is not
    /// polled inside it, and still follows.
    pub(crate) struct Leading<F> {
        flight: Option<Arc<Flight>>,
        #[pin]
        body: F,
    }
}

impl<F> Leading<F> {
    /// `body`, run by `leader` (or by a call that leads no flight).
    pub(crate) fn new(leader: Option<&Leader>, body: F) -> Self {
        Self {
            flight: leader.map(|leader| leader.flight.clone()),
            body,
        }
    }
}

impl<F: Future> Future for Leading<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some(flight) = this.flight.as_ref() else {
            return this.body.poll(cx);
        };
        /// Marks the flight for one poll; unmarks it however the poll
        /// ends, and notes a panic of the body on the flight: the leader's
        /// guard is dropped later, once the panic was caught (a task's
        /// harness, `catch_unwind`), when it can no longer tell.
        struct Marked<'f>(&'f Flight, bool);
        impl Drop for Marked<'_> {
            fn drop(&mut self) {
                if self.1 {
                    let _ = LEADING.try_with(|leading| leading.borrow_mut().pop());
                }
                if std::thread::panicking() {
                    self.0.lock_state().leader_panicked = true;
                }
            }
        }
        let pushed = LEADING
            .try_with(|leading| leading.borrow_mut().push(Arc::as_ptr(flight) as usize))
            .is_ok();
        let marked = Marked(flight, pushed);
        let poll = this.body.poll(cx);
        drop(marked);
        poll
    }
}

impl Leader {
    /// Hands `bytes` (an encoded entry; `stored`: the store holds it) to
    /// the followers.
    pub(crate) fn share(&mut self, bytes: Arc<[u8]>, stored: bool) {
        self.value = Some(Shared { bytes, stored });
    }

    /// Tells the followers that the result says there is nothing (a
    /// `None` not cached): not a failure to take over from, and nothing
    /// to store, but an answer they can all give.
    pub(crate) fn share_absent(&mut self) {
        self.absent = true;
    }

    /// Tells the flight that the run ended and has nothing to share (an
    /// error, a value too large): one of the failed runs that release the
    /// waiters. A leader dropped without this (a cancelled call) only
    /// passes the lead on; one dropped by a panic counts as failed.
    pub(crate) fn failed(&mut self) {
        self.failed = true;
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut flights = lock_table();
        let mut state = self.flight.lock_state();
        match self.value.take() {
            Some(value) => {
                // Retired first: a call arriving from now on starts afresh
                // (it will find the entry, if its write landed) instead of
                // joining a finished flight.
                retire(&mut flights, &self.key, &self.flight);
                state.value = Some(value);
            }
            None if self.absent => {
                retire(&mut flights, &self.key, &self.flight);
                state.absent = true;
            }
            None if state.waiters == 0 => retire(&mut flights, &self.key, &self.flight),
            None => {
                let panicked = std::mem::take(&mut state.leader_panicked);
                if self.failed || panicked || std::thread::panicking() {
                    state.failed_runs += 1;
                }
                if state.failed_runs >= FAILED_RUNS_TO_RELEASE {
                    // Later calls start a flight of their own.
                    retire(&mut flights, &self.key, &self.flight);
                    state.released = true;
                } else {
                    // The flight stays in the table, so newcomers queue
                    // behind the next leader instead of running beside it.
                    state.lead_vacant = true;
                }
            }
        }
        drop(state);
        drop(flights);
        self.flight.done.notify_all();
        self.flight.notify.notify_waiters();
    }
}

impl Flight {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A follower's place in the queue of its key; dropping it (a cancelled
/// wait) leaves the queue.
pub(crate) struct Follower {
    key: FlightKey,
    flight: Arc<Flight>,
    /// Still counted in [`State::waiters`].
    queued: bool,
}

impl Follower {
    /// The end of the wait, if it has come.
    fn turn(&mut self, state: &mut State) -> Option<Turn> {
        let turn = if let Some(value) = &state.value {
            Turn::Value(value.clone())
        } else if state.absent {
            Turn::Absent
        } else if state.retired {
            // Before `released`: a flight retired for a stalled leader sends
            // its waiters to join the key afresh, even if that leader then
            // fails, rather than run beside the new flight's leader.
            Turn::OutOfPatience
        } else if state.released {
            Turn::Alone
        } else if state.lead_vacant {
            state.lead_vacant = false;
            state.led_since = Instant::now();
            Turn::Lead(Leader {
                key: std::mem::take(&mut self.key),
                flight: self.flight.clone(),
                value: None,
                absent: false,
                failed: false,
            })
        } else {
            return None;
        };
        self.leave(state);
        Some(turn)
    }

    /// Leaves the queue, its wait over.
    fn leave(&mut self, state: &mut State) {
        state.waiters -= 1;
        self.queued = false;
    }

    /// Waits for a value or the lead without blocking the thread, giving
    /// up on a leader that has led for `patience` without either.
    pub(crate) async fn wait(mut self, patience: Duration) -> Turn {
        let flight = self.flight.clone();
        loop {
            let mut notified = std::pin::pin!(flight.notify.notified());
            // Registered before checking, so a wake-up between the check
            // and the await is not lost.
            notified.as_mut().enable();
            let deadline = {
                let mut state = flight.lock_state();
                if let Some(turn) = self.turn(&mut state) {
                    return turn;
                }
                stalled_at(&state, patience)
            };
            let deadline = tokio::time::Instant::from_std(deadline);
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // On the timer's clock, which a test may have paused.
                let now = tokio::time::Instant::now().into_std();
                if let Some(turn) = self.give_up(patience, now) {
                    return turn;
                }
            }
        }
    }

    /// [`Follower::wait`], blocking the thread.
    pub(crate) fn wait_blocking(mut self, patience: Duration) -> Turn {
        let flight = self.flight.clone();
        let mut state = flight.lock_state();
        loop {
            if let Some(turn) = self.turn(&mut state) {
                return turn;
            }
            let left = stalled_at(&state, patience).saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(state);
                if let Some(turn) = self.give_up(patience, Instant::now()) {
                    return turn;
                }
                state = flight.lock_state();
                continue;
            }
            state = flight
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// After a wait that timed out: what came at the last moment, nothing
    /// yet if the lead passed on meanwhile (the new leader gets its own
    /// `patience`), or [`Turn::OutOfPatience`] after retiring the flight
    /// and telling every other waiter to join afresh too.
    fn give_up(&mut self, patience: Duration, now: Instant) -> Option<Turn> {
        let flight = self.flight.clone();
        let mut flights = lock_table();
        let mut state = flight.lock_state();
        if let Some(turn) = self.turn(&mut state) {
            return Some(turn);
        }
        if stalled_at(&state, patience) > now {
            return None;
        }
        tracing::warn!(
            key = self.key.key,
            "a computation of the key in this process neither finished nor failed within {patience:?}; starting afresh"
        );
        retire(&mut flights, &self.key, &self.flight);
        state.retired = true;
        self.leave(&mut state);
        drop(state);
        drop(flights);
        flight.done.notify_all();
        flight.notify.notify_waiters();
        Some(Turn::OutOfPatience)
    }
}

/// When the flight's leader counts as stalled: `patience` after it took
/// the lead.
fn stalled_at(state: &State, patience: Duration) -> Instant {
    let since = state.led_since;
    since.checked_add(patience).unwrap_or(since)
}

impl Drop for Follower {
    fn drop(&mut self) {
        if !self.queued {
            return;
        }
        let mut flights = lock_table();
        let mut state = self.flight.lock_state();
        state.waiters -= 1;
        // The last waiter gone while the lead is vacant: nobody is left to
        // take it, so the flight ends here.
        if state.waiters == 0 && state.lead_vacant {
            retire(&mut flights, &self.key, &self.flight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Longer than any of these tests waits.
    const PATIENT: Duration = Duration::from_secs(60);

    fn lead(key: &str) -> Leader {
        match join(0, key) {
            Role::Leader(leader) => leader,
            Role::Follower(_) | Role::Nested => panic!("{key}: expected to lead"),
        }
    }

    fn follow(key: &str) -> Follower {
        match join(0, key) {
            Role::Follower(f) => f,
            Role::Leader(_) | Role::Nested => panic!("{key}: expected to follow"),
        }
    }

    #[test]
    fn followers_get_the_leaders_value() {
        let mut leader = lead("k1");
        let f = follow("k1");
        let waiter = std::thread::spawn(move || f.wait_blocking(PATIENT));
        leader.share(Arc::from(&b"v"[..]), true);
        drop(leader);
        assert!(matches!(waiter.join().unwrap(), Turn::Value(v) if &*v.bytes == b"v"));
        assert!(!in_flight("k1"));
    }

    #[test]
    fn a_leader_that_panics_hands_the_lead_to_one_follower() {
        let leader = lead("k2");
        let (f1, f2) = (follow("k2"), follow("k2"));
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _leader = leader;
            panic!("body failed");
        }));
        let Turn::Lead(mut next) = f1.wait_blocking(PATIENT) else {
            panic!("the first follower to look takes the lead")
        };
        // The other one keeps waiting, for the new leader.
        let waiter = std::thread::spawn(move || f2.wait_blocking(PATIENT));
        assert!(in_flight("k2"), "newcomers queue behind the new leader");
        assert!(matches!(join(0, "k2"), Role::Follower(_)));
        next.share(Arc::from(&b"w"[..]), true);
        drop(next);
        assert!(matches!(waiter.join().unwrap(), Turn::Value(v) if &*v.bytes == b"w"));
        assert!(!in_flight("k2"));
    }

    #[test]
    fn a_failed_leader_without_followers_ends_the_flight() {
        drop(lead("k4"));
        assert!(!in_flight("k4"));
        let _again = lead("k4");
    }

    #[test]
    fn a_follower_that_gives_up_leaves_no_flight_behind() {
        let leader = lead("k5");
        let f = follow("k5");
        drop(leader);
        assert!(in_flight("k5"), "the lead waits for its follower");
        drop(f);
        assert!(!in_flight("k5"));
    }

    #[test]
    fn a_follower_out_of_patience_leaves_the_queue() {
        let leader = lead("k7");
        let f = follow("k7");
        assert!(matches!(
            f.wait_blocking(Duration::from_millis(50)),
            Turn::OutOfPatience
        ));
        assert_eq!(leader.flight.lock_state().waiters, 0);
        assert!(!in_flight("k7"), "the stalled flight is retired");
        // The next caller leads a new flight, beside the stalled one.
        let next = lead("k7");
        drop(leader);
        assert!(in_flight("k7"), "the stalled leader retires only its own");
        drop(next);
        assert!(!in_flight("k7"));
    }

    #[tokio::test]
    async fn an_async_follower_out_of_patience_leaves_the_queue() {
        let leader = lead("k8");
        let f = follow("k8");
        assert!(matches!(
            f.wait(Duration::from_millis(50)).await,
            Turn::OutOfPatience
        ));
        assert_eq!(leader.flight.lock_state().waiters, 0);
        drop(leader);
        assert!(!in_flight("k8"), "nobody is left to hand the lead to");
    }

    #[test]
    fn a_follower_out_of_patience_sends_every_waiter_to_join_afresh() {
        let leader = lead("k9");
        let (impatient, patient) = (follow("k9"), follow("k9"));
        let patient = std::thread::spawn(move || patient.wait_blocking(Duration::from_secs(60)));
        assert!(matches!(
            impatient.wait_blocking(Duration::from_millis(50)),
            Turn::OutOfPatience
        ));
        // Long before its own minute.
        assert!(matches!(patient.join().unwrap(), Turn::OutOfPatience));
        assert_eq!(leader.flight.lock_state().waiters, 0);
        drop(leader);
        assert!(!in_flight("k9"));
    }

    #[test]
    fn patience_counts_from_the_current_leader() {
        let patience = Duration::from_secs(2);
        let first = lead("k10");
        let (a, b) = (follow("k10"), follow("k10"));
        let (sent, turns) = std::sync::mpsc::channel();
        for follower in [a, b] {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let _ = sent.send(follower.wait_blocking(patience));
            });
        }
        std::thread::sleep(patience / 2);
        // Fails: one of them leads now, the other waits for it.
        drop(first);
        let Ok(Turn::Lead(mut second)) = turns.recv_timeout(patience) else {
            panic!("a follower takes the lead")
        };
        // Past the first leader's patience, within the second's.
        std::thread::sleep(patience * 3 / 4);
        assert!(
            turns.try_recv().is_err(),
            "the other follower gave up on a leader that had led for less than its patience"
        );
        second.share(Arc::from(&b"v"[..]), true);
        drop(second);
        assert!(matches!(turns.recv_timeout(patience), Ok(Turn::Value(_))));
        assert!(!in_flight("k10"));
    }

    #[tokio::test]
    async fn async_followers_wake_up() {
        let mut leader = lead("k3");
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let f = follow("k3");
                tokio::spawn(async move { f.wait(PATIENT).await })
            })
            .collect();
        tokio::task::yield_now().await;
        leader.share(Arc::from(&b"x"[..]), true);
        drop(leader);
        for w in waiters {
            assert!(matches!(w.await.unwrap(), Turn::Value(_)));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_failure_in_a_row_releases_every_waiter() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        static LEADING: AtomicUsize = AtomicUsize::new(0);
        static MOST_LEADING: AtomicUsize = AtomicUsize::new(0);
        let mut leader = lead("k6");
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let f = follow("k6");
                tokio::spawn(async move {
                    match f.wait(PATIENT).await {
                        // The new leader fails too.
                        Turn::Lead(mut next) => {
                            let now = LEADING.fetch_add(1, SeqCst) + 1;
                            MOST_LEADING.fetch_max(now, SeqCst);
                            tokio::task::yield_now().await;
                            LEADING.fetch_sub(1, SeqCst);
                            next.failed();
                            drop(next);
                            "led"
                        }
                        Turn::Alone => "alone",
                        Turn::Value(_) | Turn::Absent | Turn::OutOfPatience => "other",
                    }
                })
            })
            .collect();
        leader.failed();
        drop(leader);
        let mut turns = Vec::new();
        for w in waiters {
            turns.push(w.await.unwrap());
        }
        turns.sort_unstable();
        let mut expected = vec!["alone"; 7];
        expected.push("led");
        assert_eq!(turns, expected, "one more try, then everyone on their own");
        assert_eq!(MOST_LEADING.load(SeqCst), 1);
        assert!(!in_flight("k6"), "later calls start afresh");
    }

    #[test]
    fn a_cancelled_leader_is_not_a_failed_run() {
        let leader = lead("k8");
        let followers: Vec<_> = (0..4).map(|_| follow("k8")).collect();
        let mut followers = followers.into_iter();
        let mut next_turn = || followers.next().unwrap().wait_blocking(PATIENT);
        // Dropped without a result (a request's timeout): the lead passes
        // on and nobody is released.
        drop(leader);
        let Turn::Lead(second) = next_turn() else {
            panic!("a cancelled leader hands the lead on")
        };
        drop(second);
        let Turn::Lead(mut third) = next_turn() else {
            panic!("two cancellations release nobody")
        };
        third.failed();
        drop(third);
        let Turn::Lead(mut fourth) = next_turn() else {
            panic!("one failed run releases nobody")
        };
        fourth.failed();
        drop(fourth);
        assert!(
            matches!(next_turn(), Turn::Alone),
            "two failed runs in a row do"
        );
        assert!(!in_flight("k8"));
    }

    #[test]
    fn a_panicking_body_counts_as_a_failed_run() {
        let mut leader = lead("k9");
        let f1 = follow("k9");
        let f2 = follow("k9");
        leader.failed();
        drop(leader);
        let Turn::Lead(next) = f1.wait_blocking(PATIENT) else {
            panic!("the first failure hands the lead on")
        };
        // Polled as the flow polls a leader's body; the panic is caught
        // outside the poll and the leader dropped afterwards, as a task's
        // harness does.
        let body = Leading::new(Some(&next), async { panic!("body failed") });
        let mut body = std::pin::pin!(body);
        let waker = futures_util::task::noop_waker();
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = body.as_mut().poll(&mut Context::from_waker(&waker));
        }));
        assert!(polled.is_err());
        drop(next);
        assert!(matches!(f2.wait_blocking(PATIENT), Turn::Alone));
    }

    #[test]
    fn caches_sharing_a_key_fly_apart() {
        // Two caches on one namespace over different stores: a call of
        // the second must not wait for, or be served by, the first's.
        let first = lead("shared");
        let second = match join(1, "shared") {
            Role::Leader(leader) => leader,
            Role::Follower(_) | Role::Nested => panic!("another cache's flight was joined"),
        };
        assert!(matches!(join(1, "shared"), Role::Follower(_)));
        drop(first);
        assert!(!in_flight("shared"));
        drop(second);
    }
}
