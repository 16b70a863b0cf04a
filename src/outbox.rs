//! One client's send buffer: the bytes owed to one client, appended by whoever has something to
//! tell it (the broker, the client's own session) and drained by the connection's writer — an
//! IRC server's per-client "sendQ", one growable byte buffer rather than a queue of lines.
//!
//! The rule for dropping a client is about the client, not about how far the broker got ahead of
//! its writer ([`QueueLimits`]; the defaults are here):
//! - **bytes owed** (appended and not yet taken by the socket) may not pass
//!   `--send-queue-bytes`: [`Outbox::push`] that would pass it closes the connection through its
//!   [`Closer`] ("send queue exceeded"). The cap is large enough that a full room's bursts
//!   (`--max-clients` × `--flood-burst` lines) always fit, so a reading client is never dropped
//!   for what flood control allows;
//! - **no progress**: the writer drops a client whose socket has accepted no byte for
//!   `--send-stall-timeout` while bytes are owed ("send stalled"; [`Outbox::stalled`]).
//!
//! Appending never waits. It wakes the writer only when the buffer was empty, so a burst of
//! deliveries costs one copy each into the buffer and one wake-up, and the writer then writes
//! everything owed in one write call. Idle, a connection keeps no buffer bigger than
//! [`RETAINED_BUFFER_BYTES`].
//!
//! This module never does I/O and never decides who receives what: the writer that drains the
//! buffer into the socket is [`crate::connection::write_queued`], and the fan-out is the broker's.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::protocol::{encode_line, ServerMessage};

/// Default for `--send-queue-bytes`: the bytes one client may be owed. 1 MiB holds the default
/// room's worst burst of ordinary lines many times over (64 clients × 10 lines × ~150 bytes =
/// 96 KiB) and sixteen of the longest messages, and bounds the server's memory per client.
pub const DEFAULT_SEND_QUEUE_BYTES: usize = 1024 * 1024;

/// Default for `--send-stall-timeout`: how long a client's socket may accept nothing while bytes
/// are owed before the client counts as not reading. TCP's own retransmissions give up on a dead
/// peer after minutes; 30 s is the ping timeout's grace.
pub const DEFAULT_SEND_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An idle connection keeps a send buffer of at most this capacity; a bigger one (after a
/// `welcome` with many peers, or a burst) is freed once written, so that thousands of idle
/// clients cost little. Ordinary lines (~100–200 bytes) fit without a new allocation.
pub const RETAINED_BUFFER_BYTES: usize = 512;

/// Closes a connection from outside its own tasks (both directions), waking its reader and writer.
pub type Closer = Box<dyn Fn() + Send + Sync>;

/// When a client counts as not reading, and is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Bytes owed (appended, not yet accepted by the socket) that one more append may not pass.
    pub bytes: usize,
    /// How long the socket may accept nothing while bytes are owed.
    pub stall_timeout: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            bytes: DEFAULT_SEND_QUEUE_BYTES,
            stall_timeout: DEFAULT_SEND_STALL_TIMEOUT,
        }
    }
}

/// Makes a client's send buffer: the [`Outbox`] that the broker and the connection append to,
/// and the [`OutboxReader`] that the connection's writer drains. `closer` is called when the
/// client is dropped for not reading.
pub fn channel(limits: QueueLimits, closer: Closer) -> (Outbox, OutboxReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buffer: Vec::new(),
            taken: 0,
            senders: 1,
            reader_alive: true,
            waker: None,
        }),
        limits,
        closer,
        exceeded: AtomicBool::new(false),
        stalled: AtomicBool::new(false),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxReader {
            shared,
            spare: Vec::new(),
        },
    )
}

struct Shared {
    state: Mutex<State>,
    limits: QueueLimits,
    closer: Closer,
    /// The client was dropped because it was owed more than the cap.
    exceeded: AtomicBool,
    /// The client was dropped because its socket accepted nothing for the stall timeout.
    stalled: AtomicBool,
}

struct State {
    /// Bytes appended and not yet taken by the writer.
    buffer: Vec<u8>,
    /// Bytes the writer has taken and the socket has not accepted yet: owed too.
    taken: usize,
    /// Live [`Outbox`]es; at 0 the writer ends once the buffer is written.
    senders: usize,
    reader_alive: bool,
    /// The writer, waiting for the buffer to become non-empty.
    waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held leaves plain bytes and counters behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_client(&self, flag: &AtomicBool) {
        if !self.exceeded.load(Ordering::SeqCst) && !self.stalled.load(Ordering::SeqCst) {
            flag.store(true, Ordering::SeqCst);
            (self.closer)();
        }
    }
}

/// The appending side of one client's send buffer.
pub struct Outbox {
    shared: Arc<Shared>,
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            if state.senders == 0 {
                state.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Why a line could not be queued for a client.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Undeliverable {
    /// The client is not reading: it has been disconnected.
    #[error("send queue exceeded")]
    QueueFull,
    /// The connection is already closing.
    #[error("the connection is closing")]
    Closed,
}

impl Outbox {
    /// Appends a message without waiting.
    pub fn push(&mut self, message: &ServerMessage) -> Result<(), Undeliverable> {
        self.push_line(&encode_line(message))
    }

    /// Appends an encoded line without waiting (the broker encodes a room message once and
    /// appends the same text to every receiver). Passing the cap on bytes owed closes the
    /// connection. A line longer than the cap still goes to a client owed nothing, so that a small
    /// cap cannot make a message undeliverable to everyone.
    pub fn push_line(&mut self, line: &str) -> Result<(), Undeliverable> {
        let shared = &*self.shared;
        let waker = {
            let mut state = shared.lock();
            if !state.reader_alive {
                return Err(Undeliverable::Closed);
            }
            if shared.exceeded.load(Ordering::Relaxed) || shared.stalled.load(Ordering::Relaxed) {
                return Err(Undeliverable::Closed);
            }
            let owed = state.buffer.len() + state.taken;
            if owed > 0 && owed + line.len() > shared.limits.bytes {
                drop(state);
                shared.drop_client(&shared.exceeded);
                return Err(Undeliverable::QueueFull);
            }
            let was_empty = state.buffer.is_empty();
            state.buffer.extend_from_slice(line.as_bytes());
            if was_empty {
                state.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the client was dropped for not reading, and how: bytes owed over the cap or a
    /// stalled socket. The session gives that as the reason the connection ended.
    pub fn dropped(&self) -> Option<NotReading> {
        if self.shared.exceeded.load(Ordering::SeqCst) {
            Some(NotReading::Exceeded)
        } else if self.shared.stalled.load(Ordering::SeqCst) {
            Some(NotReading::Stalled)
        } else {
            None
        }
    }
}

/// How a client showed that it does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReading {
    /// It was owed more than `--send-queue-bytes`.
    Exceeded,
    /// Its socket accepted nothing for `--send-stall-timeout` while bytes were owed.
    Stalled,
}

/// The draining side of a client's send buffer: the writer takes everything owed at once.
pub struct OutboxReader {
    shared: Arc<Shared>,
    /// The writer's half of the double buffer: swapped with the shared one on each take, so a
    /// busy connection reuses two allocations.
    spare: Vec<u8>,
}

impl OutboxReader {
    /// Everything appended since the last take, in one buffer; `None` once every [`Outbox`] is
    /// dropped and everything was taken. The bytes count as owed until [`Self::written`] says the
    /// socket accepted them; give the buffer back with [`Self::recycle`].
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if !state.buffer.is_empty() {
                let mut bytes = std::mem::take(&mut self.spare);
                std::mem::swap(&mut bytes, &mut state.buffer);
                state.taken += bytes.len();
                return Poll::Ready(Some(bytes));
            }
            if state.senders == 0 {
                return Poll::Ready(None);
            }
            match &mut state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// The socket accepted `n` of the taken bytes: they are no longer owed.
    pub fn written(&mut self, n: usize) {
        let mut state = self.shared.lock();
        state.taken = state.taken.saturating_sub(n);
    }

    /// Gives a written buffer back for the next take; a big one is freed instead (see
    /// [`RETAINED_BUFFER_BYTES`]).
    pub fn recycle(&mut self, mut bytes: Vec<u8>) {
        bytes.clear();
        if bytes.capacity() <= RETAINED_BUFFER_BYTES {
            self.spare = bytes;
        }
        let mut state = self.shared.lock();
        if state.buffer.is_empty() && state.buffer.capacity() > RETAINED_BUFFER_BYTES {
            state.buffer = Vec::new();
        }
    }

    /// How long the socket may accept nothing while bytes are owed.
    pub fn stall_timeout(&self) -> Duration {
        self.shared.limits.stall_timeout
    }

    /// The socket accepted nothing for the stall timeout: drops the client (closes the
    /// connection, and [`Outbox::dropped`] says why).
    pub fn stalled(&self) {
        self.shared.drop_client(&self.shared.stalled);
    }
}

impl Drop for OutboxReader {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.reader_alive = false;
        state.buffer = Vec::new();
        state.taken = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::FutureExt;

    fn closing_flag() -> (Arc<AtomicBool>, Closer) {
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        (closed, Box::new(move || flag.store(true, Ordering::SeqCst)))
    }

    fn limits(bytes: usize) -> QueueLimits {
        QueueLimits {
            bytes,
            ..QueueLimits::default()
        }
    }

    #[test]
    fn lines_come_out_together_in_order() {
        let (_closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(limits(1 << 20), closer);
        outbox.push_line("a\n").unwrap();
        outbox.push_line("b\n").unwrap();
        let bytes = block_on(reader.next()).unwrap();
        assert_eq!(bytes, b"a\nb\n");
        assert!(reader.next().now_or_never().is_none(), "nothing more owed");
        drop(outbox);
        reader.recycle(bytes);
        assert_eq!(block_on(reader.next()), None);
    }

    #[test]
    fn bytes_owed_over_the_cap_close_the_connection() {
        let (closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(limits(6), closer);
        outbox.push_line("xx\n").unwrap();
        let taken = block_on(reader.next()).unwrap();
        // Taken by the writer but not accepted by the socket: still owed.
        outbox.push_line("yy\n").unwrap();
        assert_eq!(outbox.push_line("z\n"), Err(Undeliverable::QueueFull));
        assert!(closed.load(Ordering::SeqCst));
        assert_eq!(outbox.dropped(), Some(NotReading::Exceeded));
        assert_eq!(outbox.push_line("z\n"), Err(Undeliverable::Closed));
        drop(taken);
    }

    #[test]
    fn bytes_the_socket_accepted_are_no_longer_owed() {
        let (closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(limits(6), closer);
        for _ in 0..10 {
            outbox.push_line("xxx\n").unwrap();
            let taken = block_on(reader.next()).unwrap();
            reader.written(taken.len());
            reader.recycle(taken);
        }
        assert!(!closed.load(Ordering::SeqCst));
    }

    #[test]
    fn a_line_longer_than_the_cap_still_goes_to_a_client_owed_nothing() {
        let (closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(limits(4), closer);
        assert_eq!(outbox.push_line("too long\n"), Ok(()));
        assert_eq!(outbox.push_line("x\n"), Err(Undeliverable::QueueFull));
        assert!(closed.load(Ordering::SeqCst));
        assert_eq!(block_on(reader.next()).unwrap(), b"too long\n");
    }

    #[test]
    fn a_stalled_writer_drops_the_client_once() {
        let (closed, closer) = closing_flag();
        let (outbox, reader) = channel(limits(1 << 20), closer);
        reader.stalled();
        assert!(closed.load(Ordering::SeqCst));
        assert_eq!(outbox.dropped(), Some(NotReading::Stalled));
    }

    #[test]
    fn a_dropped_reader_makes_lines_undeliverable_without_closing() {
        let (closed, closer) = closing_flag();
        let (mut outbox, reader) = channel(QueueLimits::default(), closer);
        drop(reader);
        assert_eq!(outbox.push_line("x\n"), Err(Undeliverable::Closed));
        assert!(!closed.load(Ordering::SeqCst));
    }

    #[test]
    fn a_big_buffer_is_not_kept_once_written() {
        let (_closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(QueueLimits::default(), closer);
        outbox.push_line(&"x".repeat(10_000)).unwrap();
        let taken = block_on(reader.next()).unwrap();
        reader.written(taken.len());
        reader.recycle(taken);
        assert_eq!(reader.spare.capacity(), 0);
        outbox.push_line("small\n").unwrap();
        let taken = block_on(reader.next()).unwrap();
        reader.recycle(taken);
        assert!(reader.spare.capacity() <= RETAINED_BUFFER_BYTES);
    }
}
