//! The background compaction: a thread that folds the journal ([`super::journal`]) into the
//! users file once registrations pause for [`QUIET`], so that someone who registers and then
//! looks finds `users.json` complete almost at once, and that at rest the users file is the only
//! file. The registrations themselves never wait for it (they are durable in the journal); only
//! one that comes while it writes waits for the writer's lock, as behind any write. Logins never
//! take that lock.
//!
//! The thread sleeps on a condition variable while there is nothing to fold in; a registration
//! wakes it ([`Activity::appended`]). It holds the store until it is stopped:
//! [`Compactor::finish`] (a graceful shutdown) stops it and folds in what is left.

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
    stopping: bool,
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

    /// Waits until registrations have paused for [`QUIET`] after an append (true), or until told
    /// to stop (false).
    fn wait_for_quiet(&self) -> bool {
        let mut state = self.lock();
        loop {
            if state.stopping {
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

    fn stop(&self, stopping: bool) {
        self.lock().stopping = stopping;
        self.wake.notify_one();
    }
}

/// The running compaction thread; dropping it stops the thread (without a last compaction).
pub struct Compactor {
    store: Arc<UserStore>,
    thread: Option<JoinHandle<()>>,
}

impl UserStore {
    /// Starts the thread that folds the journal into the users file once registrations pause
    /// (see [`QUIET`]). One at a time.
    pub fn start_compactor(self: &Arc<UserStore>) -> std::io::Result<Compactor> {
        self.activity.stop(false);
        let store = self.clone();
        let thread = std::thread::Builder::new()
            .name("users-journal".into())
            .spawn(move || {
                while store.activity.wait_for_quiet() {
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
            thread: Some(thread),
        })
    }
}

impl Compactor {
    /// Stops the thread and folds in whatever the journal still holds (a graceful shutdown):
    /// the users file is left complete and alone. Blocks (fsync).
    pub fn finish(mut self) {
        self.stop();
        if let Err(error) = self.store.compact() {
            log::error!(
                "could not fold the users journal into the users file at shutdown: {error}; the \
                 next start does"
            );
        }
    }

    fn stop(&mut self) {
        self.store.activity.stop(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop();
    }
}
