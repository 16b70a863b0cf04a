//! The background compaction: a thread that folds the journal ([`super::journal`]) into the
//! users file once registrations pause for [`QUIET`], so that someone who registers and then
//! looks finds `users.json` complete almost at once, and that at rest the users file is the only
//! file. The registrations themselves never wait for it (they are durable in the journal); only
//! one that comes while it writes waits for the writer's lock, as behind any write. Logins never
//! take that lock.
//!
//! The thread sleeps on a condition variable while there is nothing to fold in; a registration
//! wakes it ([`Activity::appended`]). It holds the store until it is stopped:
//! [`Compactor::finish`] (a graceful shutdown, on a blocking thread) stops it, waits for it and
//! folds in what is left. Dropping the [`Compactor`] only tells the thread to stop and never
//! waits for it: a drop may happen on an executor thread (the server's `run` cancelled), and the
//! thread may be in the middle of a compaction (an fsync) or waiting for the writer's lock.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::UserStore;

/// How long registrations must pause before the journal is folded into the users file: short,
/// so the users file is soon complete; long enough that a stream of registrations (one every few
/// milliseconds) is not interrupted by one rewrite per registration.
pub const QUIET: Duration = Duration::from_millis(100);

/// What the compaction thread waits on: the time of the last append, and whether to stop.
#[derive(Default)]
pub(super) struct Activity {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// When the last record was appended since the last compaction began; `None`: nothing new.
    last_append: Option<Instant>,
    /// Which thread may run: one whose number is not this one stops. A number rather than a
    /// flag, because a stopped thread is not waited for: it may not have seen its stop when the
    /// next thread starts, and must not run on beside it.
    generation: u64,
}

impl Activity {
    /// Notes an append (with or without a compaction thread to hear it).
    pub(super) fn appended(&self) {
        self.lock().last_append = Some(Instant::now());
        self.wake.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves two plain fields: still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until registrations have paused for [`QUIET`] after an append (true), or until
    /// thread `generation` is told to stop (false).
    fn wait_for_quiet(&self, generation: u64) -> bool {
        let mut state = self.lock();
        loop {
            if state.generation != generation {
                return false;
            }
            state = match state.last_append {
                None => self
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(at) => {
                    let now = Instant::now();
                    let due = at + QUIET;
                    if now >= due {
                        state.last_append = None;
                        return true;
                    }
                    self.wake
                        .wait_timeout(state, due - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
    }

    /// Stops the running thread, if any; returns the number of the next one.
    fn next_generation(&self) -> u64 {
        let mut state = self.lock();
        state.generation += 1;
        // Every waiter: a stopped thread that has not seen its stop yet may be waiting too.
        self.wake.notify_all();
        state.generation
    }

    /// Stops thread `generation` if it is still the one that may run (not one started since).
    fn stop(&self, generation: u64) {
        let mut state = self.lock();
        if state.generation == generation {
            state.generation += 1;
            self.wake.notify_all();
        }
    }
}

/// The running compaction thread; dropping it tells the thread to stop (without a last
/// compaction) and does not wait for it.
pub struct Compactor {
    store: Arc<UserStore>,
    /// The thread's number ([`State::generation`]).
    generation: u64,
    thread: Option<JoinHandle<()>>,
}

impl UserStore {
    /// Starts the thread that folds the journal into the users file once registrations pause
    /// (see [`QUIET`]). One at a time.
    pub fn start_compactor(self: &Arc<UserStore>) -> std::io::Result<Compactor> {
        let generation = self.activity.next_generation();
        let store = self.clone();
        let thread = std::thread::Builder::new()
            .name("users-journal".into())
            .spawn(move || {
                while store.activity.wait_for_quiet(generation) {
                    if let Err(error) = store.compact() {
                        // The records stay durable in the journal; the next pause, the next
                        // start or the shutdown tries again.
                        log::error!(
                            "could not fold the users journal into the users file: {error}"
                        );
                    }
                }
            })?;
        Ok(Compactor {
            store: self.clone(),
            generation,
            thread: Some(thread),
        })
    }
}

impl Compactor {
    /// Stops the thread, waits for it, and folds in whatever the journal still holds (a graceful
    /// shutdown): the users file is left complete and alone. Blocks (a compaction in progress,
    /// fsync): call it on a blocking thread.
    pub fn finish(mut self) {
        self.store.activity.stop(self.generation);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Err(error) = self.store.compact() {
            log::error!(
                "could not fold the users journal into the users file at shutdown: {error}; the \
                 next start does"
            );
        }
    }
}

impl Drop for Compactor {
    /// Tells the thread to stop and lets it go (see the module's header). After `finish` there is
    /// no thread left to tell.
    fn drop(&mut self) {
        if self.thread.take().is_some() {
            self.store.activity.stop(self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::user_store::scrypt_params;

    /// Waits, with a deadline, until `done` holds.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 30 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Dropping the compactor (the server's `run` cancelled, on an executor thread) does not
    /// wait for its thread, even one in the middle of a compaction, stuck behind the writer's
    /// lock; the thread still stops once that compaction is done, letting go of the store.
    #[test]
    fn dropping_the_compactor_does_not_wait_for_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = Arc::new(UserStore::open(&path, scrypt_params(4, 8, 1).unwrap()).unwrap());
        let compactor = store.start_compactor().unwrap();
        let writing = store.writer();
        store.activity.appended();
        // The pause is over once the thread has taken it: it is then compacting, waiting for the
        // writer's lock held here.
        wait_until("the thread takes the pause", || {
            store.activity.lock().last_append.is_none()
        });
        let (dropped, answer) = mpsc::channel();
        std::thread::spawn(move || {
            drop(compactor);
            let _ = dropped.send(());
        });
        let returned = answer.recv_timeout(Duration::from_secs(10));
        drop(writing);
        assert!(
            returned.is_ok(),
            "the drop waited for the compaction thread"
        );
        wait_until("the thread stops and lets go of the store", || {
            Arc::strong_count(&store) == 1
        });
    }
}
