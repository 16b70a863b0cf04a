//! Who gets the scrypt workers next: the hasher's queue.
//!
//! At most `workers` password hashes run at once (one per core by default: each takes 128 MiB at
//! the default cost). A request that finds no worker it may use waits in one of two queues,
//! logins ahead of registrations, first come first served within each; and with two workers or
//! more, [`WORKERS_KEPT_FOR_LOGINS`] of them never hash a registration. A flood of registrations
//! (which anyone can send, and which each cost a hash and a write of the users file) then never
//! delays an account's owner: a login waits only for the logins ahead of it, not even for a
//! registration already hashing.
//!
//! Every request has a deadline (its connection's authentication deadline). A request that would
//! start hashing only after its deadline is answered at once instead of waiting to be timed out:
//! [`HashQueue::enter`] estimates its wait from its place in the queue and a running average of
//! recent hashes ([`expected_wait`]), and a request still waiting at its deadline gives up its
//! place ([`Waiting::wait`]). So a registration kept waiting by a stream of logins is told
//! `busy`, not starved forever.
//!
//! Memory is bounded by the connections: a connection has at most one request waiting. This
//! module never hashes, reads the users file or talks to a client; `login` does.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use crate::connection::AuthAction;
use crate::runtime;

/// Weight of the newest hash in the running average of hash times (an exponentially weighted
/// moving average): 1/4 follows a change of cost or load within a few hashes, and one slow hash
/// (a page fault storm, a slow fsync) moves the estimate by a quarter of its excess only.
pub const HASH_TIME_WEIGHT: f64 = 0.25;

/// Workers that hash logins only, when there are at least two: without one, a login arriving
/// while every worker hashes a registration waits for one of them to finish (a second or more
/// at the default cost on a loaded machine). Registrations get the other workers.
pub const WORKERS_KEPT_FOR_LOGINS: usize = 1;

/// Why a request is not hashed: the server is busy; the client should try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    /// Refused on arrival: the estimated wait ends after the deadline.
    #[error(
        "no worker free for it and {ahead} queued ahead of it: about {:.1} s to wait, {:.1} s left",
        expected.as_secs_f64(),
        left.as_secs_f64()
    )]
    WouldMissDeadline {
        ahead: usize,
        expected: Duration,
        left: Duration,
    },
    /// Waited in the queue until its deadline (the estimate was too hopeful, or logins kept
    /// coming ahead of a registration).
    #[error("still waiting for the hasher at its deadline")]
    DeadlinePassed,
}

/// The hasher's queue: see the module header.
pub struct HashQueue {
    workers: usize,
    /// Workers that may hash registrations at once.
    for_registrations: usize,
    state: Mutex<State>,
}

struct State {
    /// Workers not hashing. While one is free nobody waits, but registrations that would pass
    /// `for_registrations`.
    free: usize,
    /// Workers hashing a registration.
    registering: usize,
    /// Waiting logins, then waiting registrations, each oldest first.
    logins: VecDeque<Waiter>,
    registrations: VecDeque<Waiter>,
    /// Tells waiters apart, so that one that gives up can find and remove itself.
    next_ticket: u64,
    /// The running average of recent hash times; `None` until the first hash is measured.
    average: Option<Duration>,
}

/// A request waiting for a worker; a worker is handed over by sending on `grant`.
struct Waiter {
    ticket: u64,
    grant: oneshot::Sender<()>,
}

/// What became of a request as it arrived.
pub enum Entry<'a> {
    /// A worker it may use was free: hash now.
    Granted(HashPermit<'a>),
    /// Every worker is busy: wait ([`Waiting::wait`]).
    Queued(Waiting<'a>),
    /// It could not start before its deadline: answer `busy`.
    Busy(Busy),
}

impl HashQueue {
    /// A queue for `workers` hashes at once.
    pub fn new(workers: NonZeroUsize) -> HashQueue {
        let for_registrations = match workers.get() {
            1 => 1,
            n => n.saturating_sub(WORKERS_KEPT_FOR_LOGINS).max(1),
        };
        HashQueue {
            workers: workers.get(),
            for_registrations,
            state: Mutex::new(State {
                free: workers.get(),
                registering: 0,
                logins: VecDeque::new(),
                registrations: VecDeque::new(),
                next_ticket: 0,
                average: None,
            }),
        }
    }

    /// A request for a worker, arriving at `now`, that must start hashing by `deadline`.
    pub fn enter(&self, action: AuthAction, deadline: Instant, now: Instant) -> Entry<'_> {
        let mut state = self.lock();
        if state.free > 0 && self.may_start(&state, action) {
            state.start(action);
            return Entry::Granted(HashPermit::new(self, action));
        }
        let (ahead, serving) = match action {
            AuthAction::Login => (state.logins.len(), self.workers),
            AuthAction::Registration => (
                state.logins.len() + state.registrations.len(),
                self.for_registrations,
            ),
        };
        let expected = expected_wait(ahead, serving, state.average);
        let left = deadline.saturating_duration_since(now);
        if expected > left {
            return Entry::Busy(Busy::WouldMissDeadline {
                ahead,
                expected,
                left,
            });
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let (grant, granted) = oneshot::channel();
        let waiting = state.line(action).len() + state.other_line(action).len();
        state.line(action).push_back(Waiter { ticket, grant });
        Entry::Queued(Waiting {
            queue: self,
            action,
            ticket,
            granted,
            deadline,
            ahead,
            waiting,
            expected,
            in_line: true,
        })
    }

    /// Whether a request of this kind may take a free worker.
    fn may_start(&self, state: &State, action: AuthAction) -> bool {
        action == AuthAction::Login || state.registering < self.for_registrations
    }

    /// A worker that hashed for `finished` is done: hands it to the first waiter that may use it
    /// (logins first), or frees it.
    fn release(&self, finished: AuthAction) {
        let mut state = self.lock();
        state.free += 1;
        if finished == AuthAction::Registration {
            state.registering -= 1;
        }
        while state.free > 0 {
            let action = if !state.logins.is_empty() {
                AuthAction::Login
            } else if !state.registrations.is_empty()
                && self.may_start(&state, AuthAction::Registration)
            {
                AuthAction::Registration
            } else {
                break;
            };
            let Some(next) = state.line(action).pop_front() else {
                break;
            };
            // Sent under the lock: a waiter that gives up takes the lock first, so it is either
            // still in its line (and removes itself) or already holds its grant.
            if next.grant.send(()).is_ok() {
                state.start(action);
            }
        }
    }

    fn record(&self, took: Duration) {
        let mut state = self.lock();
        state.average = Some(match state.average {
            None => took,
            Some(average) if took >= average => {
                average + (took - average).mul_f64(HASH_TIME_WEIGHT)
            }
            Some(average) => average - (average - took).mul_f64(HASH_TIME_WEIGHT),
        });
    }

    /// Takes the state's lock. It is held for a few list operations, never across an `.await`;
    /// a panic while holding it cannot leave the lists inconsistent, so a poisoned lock is used.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn start(&mut self, action: AuthAction) {
        self.free -= 1;
        if action == AuthAction::Registration {
            self.registering += 1;
        }
    }

    fn line(&mut self, action: AuthAction) -> &mut VecDeque<Waiter> {
        match action {
            AuthAction::Login => &mut self.logins,
            AuthAction::Registration => &mut self.registrations,
        }
    }

    fn other_line(&mut self, action: AuthAction) -> &mut VecDeque<Waiter> {
        match action {
            AuthAction::Login => &mut self.registrations,
            AuthAction::Registration => &mut self.logins,
        }
    }
}

/// How long a request that finds no worker it may use, with `ahead` requests to be served before
/// it and `workers` workers that may serve it, expects to wait: `ahead + 1` hashes must finish on
/// those workers, and with all of them busy one finishes every `average / workers` on average.
/// Zero before any hash has been measured (nobody is refused on a guess).
pub fn expected_wait(ahead: usize, workers: usize, average: Option<Duration>) -> Duration {
    let Some(average) = average else {
        return Duration::ZERO;
    };
    let finishes = u32::try_from(ahead.saturating_add(1)).unwrap_or(u32::MAX);
    let workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
    average.saturating_mul(finishes) / workers
}

/// A request in line for a worker. Dropping it gives up its place (or its worker, if one was
/// handed to it meanwhile).
pub struct Waiting<'a> {
    queue: &'a HashQueue,
    action: AuthAction,
    ticket: u64,
    granted: oneshot::Receiver<()>,
    deadline: Instant,
    /// Requests to be served before it, when it arrived.
    pub ahead: usize,
    /// Requests waiting in both lines when it arrived (those behind it included).
    pub waiting: usize,
    /// Its expected wait when it arrived.
    pub expected: Duration,
    /// Still in its line (not granted, not withdrawn).
    in_line: bool,
}

impl<'a> Waiting<'a> {
    /// Waits for a worker until the deadline.
    ///
    /// # Errors
    /// [`Busy::DeadlinePassed`] when the deadline comes first.
    pub async fn wait(mut self) -> Result<HashPermit<'a>, Busy> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let queue = self.queue;
        match runtime::timeout(left, &mut self.granted).await {
            Some(Ok(())) => {
                self.in_line = false;
                Ok(HashPermit::new(queue, self.action))
            }
            // Only when the queue itself is gone; nothing will be handed over.
            Some(Err(oneshot::Canceled)) => {
                self.in_line = false;
                Err(Busy::DeadlinePassed)
            }
            None => {
                let granted = self.withdraw();
                self.in_line = false;
                match granted {
                    // Handed a worker just as the deadline passed: use it.
                    true => Ok(HashPermit::new(queue, self.action)),
                    false => Err(Busy::DeadlinePassed),
                }
            }
        }
    }

    /// Leaves the line. `true` when it was no longer in it: a worker was handed over (and is now
    /// the caller's).
    fn withdraw(&mut self) -> bool {
        let mut state = self.queue.lock();
        let line = state.line(self.action);
        match line.iter().position(|w| w.ticket == self.ticket) {
            Some(at) => {
                line.remove(at);
                false
            }
            None => true,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.in_line && self.withdraw() {
            self.queue.release(self.action);
        }
    }
}

/// A worker, held while one hash runs. [`HashPermit::finished`] counts its time in the average;
/// dropping it without (the hash was never run) only frees the worker.
pub struct HashPermit<'a> {
    queue: &'a HashQueue,
    action: AuthAction,
    granted: Instant,
}

impl<'a> HashPermit<'a> {
    fn new(queue: &'a HashQueue, action: AuthAction) -> HashPermit<'a> {
        HashPermit {
            queue,
            action,
            granted: Instant::now(),
        }
    }

    /// The hash is done: its time joins the running average, and the worker goes to the next
    /// request.
    pub fn finished(self) {
        self.queue.record(self.granted.elapsed());
    }
}

impl Drop for HashPermit<'_> {
    fn drop(&mut self) {
        self.queue.release(self.action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures::FutureExt;

    const LOGIN: AuthAction = AuthAction::Login;
    const REGISTRATION: AuthAction = AuthAction::Registration;

    fn queue(workers: usize) -> HashQueue {
        HashQueue::new(NonZeroUsize::new(workers).unwrap())
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn granted(entry: Entry<'_>) -> HashPermit<'_> {
        match entry {
            Entry::Granted(permit) => permit,
            _ => panic!("expected a worker at once"),
        }
    }

    fn queued(entry: Entry<'_>) -> Waiting<'_> {
        match entry {
            Entry::Queued(waiting) => waiting,
            Entry::Granted(_) => panic!("expected to wait, got a worker"),
            Entry::Busy(busy) => panic!("expected to wait, got busy: {busy}"),
        }
    }

    /// The worker handed to a waiter, if it has been (without waiting for it).
    fn handed<'a>(waiting: &mut Waiting<'a>) -> Option<HashPermit<'a>> {
        match waiting.granted.try_recv() {
            Ok(Some(())) => {
                waiting.in_line = false;
                Some(HashPermit::new(waiting.queue, waiting.action))
            }
            _ => None,
        }
    }

    #[test]
    fn at_most_one_hash_per_worker_then_requests_wait() {
        let q = queue(2);
        let a = granted(q.enter(REGISTRATION, far(), Instant::now()));
        let _b = granted(q.enter(LOGIN, far(), Instant::now()));
        let mut c = queued(q.enter(LOGIN, far(), Instant::now()));
        assert!(handed(&mut c).is_none());
        a.finished();
        let _hashing = handed(&mut c).expect("the worker is handed on");
    }

    #[test]
    fn with_two_workers_or_more_one_is_kept_for_logins() {
        let q = queue(2);
        q.record(Duration::from_secs(1));
        let first = granted(q.enter(REGISTRATION, far(), Instant::now()));
        // A worker is free, but not for a second registration...
        let mut second = queued(q.enter(REGISTRATION, far(), Instant::now()));
        assert_eq!(
            second.expected,
            Duration::from_secs(1),
            "one worker serves it"
        );
        // ...while a login gets it at once.
        let login = granted(q.enter(LOGIN, far(), Instant::now()));
        login.finished();
        assert!(handed(&mut second).is_none());
        first.finished();
        let _hashing = handed(&mut second).expect("the registrations' worker is free");
    }

    #[test]
    fn one_worker_serves_registrations_too() {
        let q = queue(1);
        granted(q.enter(REGISTRATION, far(), Instant::now())).finished();
        granted(q.enter(REGISTRATION, far(), Instant::now()));
    }

    #[test]
    fn logins_are_served_before_registrations_that_came_first() {
        let q = queue(1);
        let running = granted(q.enter(REGISTRATION, far(), Instant::now()));
        let mut registration = queued(q.enter(REGISTRATION, far(), Instant::now()));
        let mut login = queued(q.enter(LOGIN, far(), Instant::now()));
        assert_eq!((registration.ahead, login.ahead), (0, 0));
        assert_eq!((registration.waiting, login.waiting), (0, 1));
        drop(running);
        let _hashing = handed(&mut login).expect("the login goes first");
        assert!(handed(&mut registration).is_none());
    }

    #[test]
    fn each_line_is_first_come_first_served() {
        let q = queue(1);
        let running = granted(q.enter(LOGIN, far(), Instant::now()));
        let mut registrations: Vec<_> = (0..3)
            .map(|_| queued(q.enter(REGISTRATION, far(), Instant::now())))
            .collect();
        let mut logins: Vec<_> = (0..3)
            .map(|_| queued(q.enter(LOGIN, far(), Instant::now())))
            .collect();
        let mut order = Vec::new();
        drop(running);
        for _ in 0..6 {
            let mut permits = Vec::new();
            for (i, login) in logins.iter_mut().enumerate() {
                permits.extend(handed(login).map(|p| (("login", i), p)));
            }
            for (i, registration) in registrations.iter_mut().enumerate() {
                permits.extend(handed(registration).map(|p| (("registration", i), p)));
            }
            assert_eq!(permits.len(), 1, "one worker, one request served at a time");
            let (next, permit) = permits.pop().unwrap();
            order.push(next);
            permit.finished(); // That request's hash is done.
        }
        assert_eq!(
            order,
            [
                ("login", 0),
                ("login", 1),
                ("login", 2),
                ("registration", 0),
                ("registration", 1),
                ("registration", 2)
            ]
        );
    }

    #[test]
    fn the_wait_is_estimated_from_the_place_in_line_and_the_average_hash_time() {
        let second = Some(Duration::from_secs(1));
        assert_eq!(expected_wait(7, 2, None), Duration::ZERO);
        assert_eq!(expected_wait(0, 1, second), Duration::from_secs(1));
        assert_eq!(expected_wait(0, 2, second), Duration::from_millis(500));
        assert_eq!(expected_wait(5, 2, second), Duration::from_secs(3));
        assert_eq!(
            expected_wait(usize::MAX, 1, Some(Duration::MAX)),
            Duration::MAX
        );
    }

    #[test]
    fn the_average_follows_recent_hash_times() {
        let q = queue(1);
        assert_eq!(q.lock().average, None);
        q.record(Duration::from_millis(400));
        assert_eq!(q.lock().average, Some(Duration::from_millis(400)));
        q.record(Duration::from_millis(800));
        assert_eq!(q.lock().average, Some(Duration::from_millis(500)));
        q.record(Duration::from_millis(100));
        assert_eq!(q.lock().average, Some(Duration::from_millis(400)));
    }

    #[test]
    fn a_request_that_would_start_after_its_deadline_is_busy_at_once() {
        let q = queue(1);
        q.record(Duration::from_secs(1));
        let now = Instant::now();
        let deadline = now + Duration::from_millis(2500);
        let _running = granted(q.enter(LOGIN, deadline, now));
        // Expected waits: 1 s, 2 s, then 3 s > 2.5 s.
        let _r1 = queued(q.enter(REGISTRATION, deadline, now));
        let _r2 = queued(q.enter(REGISTRATION, deadline, now));
        match q.enter(REGISTRATION, deadline, now) {
            Entry::Busy(Busy::WouldMissDeadline {
                ahead,
                expected,
                left,
            }) => {
                assert_eq!(ahead, 2);
                assert_eq!(expected, Duration::from_secs(3));
                assert_eq!(left, Duration::from_millis(2500));
            }
            _ => panic!("expected busy"),
        }
        // A login does not count the registrations: it still fits.
        let login = queued(q.enter(LOGIN, deadline, now));
        assert_eq!(login.expected, Duration::from_secs(1));
    }

    #[test]
    fn a_request_still_waiting_at_its_deadline_is_busy_and_leaves_the_line() {
        let q = queue(1);
        let running = granted(q.enter(LOGIN, far(), Instant::now()));
        let soon = Instant::now() + Duration::from_millis(20);
        let late = queued(q.enter(REGISTRATION, soon, Instant::now()));
        let mut next = queued(q.enter(REGISTRATION, far(), Instant::now()));
        let answer = runtime::block_on(late.wait()).err();
        assert_eq!(answer, Some(Busy::DeadlinePassed));
        drop(running);
        let _hashing = handed(&mut next).expect("the worker skips the one that left");
    }

    #[test]
    fn a_waiter_dropped_after_being_handed_a_worker_passes_it_on() {
        let q = queue(1);
        let running = granted(q.enter(LOGIN, far(), Instant::now()));
        let first = queued(q.enter(LOGIN, far(), Instant::now()));
        let second = queued(q.enter(LOGIN, far(), Instant::now()));
        drop(running); // Hands the worker to `first`...
        drop(first); // ...which goes away without using it.
        let permit = runtime::block_on(second.wait()).expect("a worker");
        drop(permit);
        granted(q.enter(LOGIN, far(), Instant::now()));
    }

    #[test]
    fn a_granted_waiter_gets_its_permit() {
        let q = queue(1);
        let running = granted(q.enter(LOGIN, far(), Instant::now()));
        let waiting = queued(q.enter(REGISTRATION, far(), Instant::now()));
        let mut wait = Box::pin(waiting.wait());
        assert!((&mut wait).now_or_never().is_none());
        running.finished();
        let permit = runtime::block_on(wait).expect("a worker");
        assert!(matches!(
            q.enter(LOGIN, far(), Instant::now()),
            Entry::Queued(_)
        ));
        drop(permit);
    }
}
