//! The background compaction: a thread that folds the journal into the users file once
//! registrations pause for [`QUIET`], so that at rest the users file is soon complete and alone.
//! Registrations never wait for it (they are durable in the journal) but behind its write, as
//! behind any; logins never do.
//!
//! Each registration wakes the thread through a bounded channel of one (a wake-up already pending
//! is enough). The thread holds only a weak reference to the store, and ends when the channel's
//! sender goes: [`Compactor::finish`] (a graceful shutdown) drops it, waits for the thread and
//! folds in what is left; dropping the [`Compactor`] drops it too but never waits, since a drop
//! may happen on an executor thread while the thread is in an fsync.

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::UserStore;

/// How long registrations must pause before the journal is folded in: short, so the users file
/// is soon complete; long enough that a stream of registrations (one every few milliseconds) is
/// not interrupted by one rewrite per registration.
pub const QUIET: Duration = Duration::from_millis(100);

/// The running thread's wake-up channel, if any. One thread per store (the server runs one).
#[derive(Default)]
pub(super) struct Wakeup(Mutex<Option<SyncSender<()>>>);

impl Wakeup {
    /// Notes an append (with or without a compaction thread to hear it).
    pub(super) fn appended(&self) {
        if let Some(wake) = &*self.lock() {
            let _ = wake.try_send(());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<SyncSender<()>>> {
        // A panic while holding it leaves a sender or none: still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running compaction thread; dropping it tells the thread to stop, without waiting.
pub struct Compactor {
    store: Arc<UserStore>,
    thread: Option<JoinHandle<()>>,
}

impl UserStore {
    /// Starts the thread that folds the journal in once registrations pause.
    pub fn start_compactor(self: &Arc<UserStore>) -> std::io::Result<Compactor> {
        let (wake, woken) = mpsc::sync_channel(1);
        let store = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("users-journal".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    // Until no registration has come for QUIET.
                    loop {
                        match woken.recv_timeout(QUIET) {
                            Ok(()) => continue,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    let Some(store) = store.upgrade() else { return };
                    if let Err(error) = store.compact() {
                        // The records stay durable in the journal; the next pause, the next
                        // start or the shutdown tries again.
                        log::error!(
                            "could not fold the users journal into the users file: {error}"
                        );
                    }
                }
            })?;
        *self.wakeup.lock() = Some(wake);
        Ok(Compactor {
            store: self.clone(),
            thread: Some(thread),
        })
    }
}

impl Compactor {
    /// Stops the thread, waits for it, and folds in what the journal still holds (a graceful
    /// shutdown). Blocks (a compaction in progress, fsync): call it on a blocking thread.
    pub fn finish(mut self) {
        *self.store.wakeup.lock() = None;
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
    fn drop(&mut self) {
        *self.store.wakeup.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

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
        store.wakeup.appended();
        // The thread holds the store once the pause is over: it is then compacting, waiting for
        // the writer's lock held here (the test and the compactor hold the other two).
        wait_until("the thread takes up the store", || {
            Arc::strong_count(&store) == 3
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
        // Its channel is gone: the thread's `recv` ends it rather than waiting for ever.
        assert!(store.wakeup.lock().is_none(), "the thread was never told");
    }
}
