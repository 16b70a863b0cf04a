//! One client's send queue: the bytes owed to one client, appended by whoever has something to
//! tell it (the broker, the client's own session) and drained by the connection's writer — an
//! IRC server's per-client "sendQ", kept as a short queue of byte segments rather than lines.
//!
//! A segment is either bytes of this client's own (`welcome`, `peers`, errors, pongs) or a range
//! of a shared, immutable chunk of room and presence lines that the broker sealed once for
//! everyone ([`Outbox::push_shared`]): a line said to a room of a thousand is held once, not a
//! thousand times, and handing a client its share costs one reference-count update and one lock.
//! Appending to a segment that ends where the new bytes begin extends it.
//!
//! The rule for dropping a client is about the client, not about how far the broker got ahead of
//! its writer ([`QueueLimits`]; the defaults are here):
//! - **bytes owed** (appended and not yet taken by the socket) may not pass
//!   `--send-queue-bytes`: an append that would pass it closes the connection through its
//!   [`Closer`] ("send queue exceeded"). The cap is large enough that a full room's bursts
//!   (`--max-clients` × `--flood-burst` lines) always fit, so a reading client is never dropped
//!   for what flood control allows;
//! - **no progress**: the writer drops a client whose socket has accepted no byte for
//!   `--send-stall-timeout` while bytes are owed ("send stalled"; [`OutboxReader::stalled`]).
//!
//! Appending never waits. It wakes the writer only when the queue was empty, and the writer then
//! takes everything owed and writes it in one vectored write call. Idle, a connection keeps no
//! queue at all.
//!
//! This module never does I/O and never decides who receives what: the writer that drains the
//! queue into the socket is [`crate::connection::write_queued`], and the fan-out is the broker's.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::ops::Range;
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

/// A busy connection reuses its two queues (the shared one and the writer's spare) while they
/// hold at most this many segments; a longer one (after a burst) is freed once written, and an
/// idle connection keeps neither, so that thousands of idle clients cost little. A tick's
/// deliveries (a chunk and a private line or two) fit.
pub const RETAINED_SEGMENTS: usize = 4;

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

/// Bytes owed to a client, in the order they go out.
#[derive(Debug)]
pub enum Segment {
    /// Bytes of this client's own.
    Owned(Vec<u8>),
    /// `chunk[start..end]`: part of lines shared with other clients. Offsets are `u32` to keep a
    /// segment at 32 bytes; a chunk is far smaller than 4 GiB (the broker's bound plus a line).
    Shared {
        chunk: Arc<[u8]>,
        start: u32,
        end: u32,
    },
}

impl Segment {
    /// The bytes to write.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Segment::Owned(bytes) => bytes,
            Segment::Shared { chunk, start, end } => &chunk[*start as usize..*end as usize],
        }
    }
}

/// What the writer takes at once: every segment owed, in order.
pub type Batch = VecDeque<Segment>;

/// Makes a client's send queue: the [`Outbox`] that the broker and the connection append to,
/// and the [`OutboxReader`] that the connection's writer drains. `closer` is called when the
/// client is dropped for not reading.
pub fn channel(limits: QueueLimits, closer: Closer) -> (Outbox, OutboxReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            segments: VecDeque::new(),
            queued: 0,
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
            spare: VecDeque::new(),
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
    /// Segments appended and not yet taken by the writer.
    segments: VecDeque<Segment>,
    /// Bytes in `segments`.
    queued: usize,
    /// Bytes the writer has taken and the socket has not accepted yet: owed too.
    taken: usize,
    /// Live [`Outbox`]es; at 0 the writer ends once the queue is written.
    senders: usize,
    reader_alive: bool,
    /// The writer, waiting for the queue to become non-empty.
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

    /// Appends `len` bytes with `append` under one lock, after the checks every append makes;
    /// wakes the writer if the queue was empty.
    fn append(
        &self,
        len: usize,
        append: impl FnOnce(&mut VecDeque<Segment>),
    ) -> Result<(), Undeliverable> {
        let waker = {
            let mut state = self.lock();
            if !state.reader_alive {
                return Err(Undeliverable::Closed);
            }
            if self.exceeded.load(Ordering::Relaxed) || self.stalled.load(Ordering::Relaxed) {
                return Err(Undeliverable::Closed);
            }
            let owed = state.queued + state.taken;
            if owed > 0 && owed + len > self.limits.bytes {
                drop(state);
                self.drop_client(&self.exceeded);
                return Err(Undeliverable::QueueFull);
            }
            let was_empty = state.segments.is_empty();
            append(&mut state.segments);
            state.queued += len;
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
}

/// The appending side of one client's send queue.
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

/// Own bytes up to this length are copied onto the end of the previous own segment; a longer
/// buffer (a `welcome` listing everyone) is queued as it is, without a copy.
const COPY_OWNED_BYTES: usize = 512;

/// A short own line is copied onto the previous own segment only while that segment is at most
/// this long or has room for it, so that a pong queued behind a megabyte `welcome` never
/// reallocates and copies the `welcome`.
const EXTEND_OWNED_BYTES: usize = 4096;

/// Queues own bytes: onto the previous own segment when both are short (one segment, one write),
/// else as a segment of their own. `line` is copied only in the first case, or when it is
/// borrowed.
fn append_owned(segments: &mut VecDeque<Segment>, line: std::borrow::Cow<'_, [u8]>) {
    if let Some(Segment::Owned(last)) = segments.back_mut() {
        let room = last.capacity() - last.len() >= line.len();
        if line.len() <= COPY_OWNED_BYTES && (room || last.len() <= EXTEND_OWNED_BYTES) {
            last.extend_from_slice(&line);
            return;
        }
    }
    segments.push_back(Segment::Owned(line.into_owned()));
}

impl Outbox {
    /// Appends a message without waiting.
    pub fn push(&mut self, message: &ServerMessage) -> Result<(), Undeliverable> {
        self.push_line(&encode_line(message))
    }

    /// Appends an encoded line without waiting. Passing the cap on bytes owed closes the
    /// connection. A line longer than the cap still goes to a client owed nothing, so that a small
    /// cap cannot make a message undeliverable to everyone.
    pub fn push_line(&mut self, line: &str) -> Result<(), Undeliverable> {
        self.shared.append(line.len(), |segments| {
            append_owned(segments, line.as_bytes().into())
        })
    }

    /// Like [`Self::push_line`], for a line built for this client alone: a long one is queued
    /// without being copied.
    pub fn push_owned(&mut self, line: String) -> Result<(), Undeliverable> {
        let line = line.into_bytes();
        self.shared
            .append(line.len(), |segments| append_owned(segments, line.into()))
    }

    /// Appends `ranges` of a chunk shared with other clients (in order, without copying the
    /// bytes), under one lock and with at most one wake-up. The cap applies to their total: a
    /// client owed something that they would push over the cap is dropped, and a client owed
    /// nothing takes them whatever their length (as a single long line; the broker bounds a
    /// chunk). Empty ranges are skipped; a range that continues the last segment extends it.
    pub fn push_shared(
        &mut self,
        chunk: &Arc<[u8]>,
        ranges: &[Range<usize>],
    ) -> Result<(), Undeliverable> {
        let len: usize = ranges.iter().map(|r| r.len()).sum();
        if len == 0 {
            return Ok(());
        }
        debug_assert!(chunk.len() <= u32::MAX as usize);
        self.shared.append(len, |segments| {
            for range in ranges.iter().filter(|r| !r.is_empty()) {
                let (start, end) = (range.start as u32, range.end as u32);
                match segments.back_mut() {
                    Some(Segment::Shared {
                        chunk: last,
                        end: last_end,
                        ..
                    }) if *last_end == start && Arc::ptr_eq(last, chunk) => *last_end = end,
                    _ => segments.push_back(Segment::Shared {
                        chunk: chunk.clone(),
                        start,
                        end,
                    }),
                }
            }
        })
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

/// The draining side of a client's send queue: the writer takes everything owed at once.
pub struct OutboxReader {
    shared: Arc<Shared>,
    /// The writer's half of a double buffer: swapped with the shared queue on each take, so a
    /// busy connection reuses two allocations.
    spare: Batch,
}

impl OutboxReader {
    /// Every segment appended since the last take; `None` once every [`Outbox`] is dropped and
    /// everything was taken. The bytes count as owed until [`Self::written`] says the socket
    /// accepted them; give the batch back with [`Self::recycle`].
    pub async fn next(&mut self) -> Option<Batch> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if !state.segments.is_empty() {
                let mut batch = std::mem::take(&mut self.spare);
                std::mem::swap(&mut batch, &mut state.segments);
                state.taken += std::mem::take(&mut state.queued);
                return Poll::Ready(Some(batch));
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

    /// Gives a written batch back for the next take (its shared chunks are released now); a
    /// long one is freed instead (see [`RETAINED_SEGMENTS`]).
    pub fn recycle(&mut self, mut batch: Batch) {
        batch.clear();
        let mut state = self.shared.lock();
        if state.segments.is_empty() {
            // Nothing more is owed: an idle connection keeps no queue at all (~0.3 KB each
            // of thousands); the next batch costs an allocation, beside its system call.
            state.segments = VecDeque::new();
            self.spare = VecDeque::new();
        } else if batch.capacity() <= RETAINED_SEGMENTS {
            self.spare = batch;
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
        state.segments = VecDeque::new();
        state.queued = 0;
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

    /// One range, as a slice of ranges.
    fn one(range: Range<usize>) -> [Range<usize>; 1] {
        [range]
    }

    /// A batch's bytes, as the socket would get them.
    fn bytes(batch: &Batch) -> Vec<u8> {
        batch
            .iter()
            .flat_map(|s| s.bytes().iter().copied())
            .collect()
    }

    /// Takes everything owed, as if the socket accepted it at once.
    fn take_all(reader: &mut OutboxReader) -> Vec<u8> {
        let batch = block_on(reader.next()).unwrap();
        let out = bytes(&batch);
        reader.written(out.len());
        reader.recycle(batch);
        out
    }

    #[test]
    fn a_short_line_behind_a_long_one_is_queued_apart_without_copying_it() {
        let (_closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(limits(1 << 20), closer);
        let mut welcome = format!("{}\n", "w".repeat(100_000));
        welcome.shrink_to_fit(); // As the broker sizes it: no room left.
        let at = welcome.as_ptr();
        outbox.push_owned(welcome).unwrap();
        outbox.push_line("pong\n").unwrap();
        outbox.push_line("error\n").unwrap();
        let batch = block_on(reader.next()).unwrap();
        assert_eq!(batch.len(), 2, "the welcome, then the short lines together");
        assert_eq!(batch[0].bytes().as_ptr(), at, "the welcome was not moved");
        assert!(bytes(&batch).ends_with(b"w\npong\nerror\n"));
    }

    #[test]
    fn lines_come_out_together_in_order() {
        let (_closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(limits(1 << 20), closer);
        outbox.push_line("a\n").unwrap();
        outbox.push_line("b\n").unwrap();
        let batch = block_on(reader.next()).unwrap();
        assert_eq!(bytes(&batch), b"a\nb\n");
        assert_eq!(batch.len(), 1, "own lines share one segment");
        assert!(reader.next().now_or_never().is_none(), "nothing more owed");
        drop(outbox);
        reader.recycle(batch);
        assert!(block_on(reader.next()).is_none());
    }

    #[test]
    fn shared_ranges_keep_their_order_among_own_lines_and_contiguous_ones_merge() {
        let (_closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(limits(1 << 20), closer);
        let chunk: Arc<[u8]> = Arc::from(&b"one\ntwo\nthree\n"[..]);
        outbox.push_line("welcome\n").unwrap();
        // The receiver's own line ("two") is left out of what it gets.
        outbox.push_shared(&chunk, &[0..4, 8..8, 8..14]).unwrap();
        outbox.push_line("peers\n").unwrap();
        let other: Arc<[u8]> = Arc::from(&b"four\nfive\n"[..]);
        outbox.push_shared(&other, &one(0..5)).unwrap();
        outbox.push_shared(&other, &one(5..10)).unwrap();
        let batch = block_on(reader.next()).unwrap();
        assert_eq!(bytes(&batch), b"welcome\none\nthree\npeers\nfour\nfive\n");
        // welcome; one; three; peers; four+five (extended, one reference).
        assert_eq!(batch.len(), 5);
        assert_eq!(
            Arc::strong_count(&other),
            2,
            "held once by the queue, not copied"
        );
        reader.written(bytes(&batch).len());
        reader.recycle(batch);
        assert_eq!(Arc::strong_count(&other), 1, "released once written");
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
    fn shared_bytes_count_against_the_cap() {
        let (closed, closer) = closing_flag();
        let (mut outbox, _reader) = channel(limits(10), closer);
        let chunk: Arc<[u8]> = Arc::from(&b"aaaa\nbbbb\ncccc\n"[..]);
        outbox.push_shared(&chunk, &one(0..5)).unwrap();
        outbox.push_shared(&chunk, &one(5..10)).unwrap();
        assert_eq!(
            outbox.push_shared(&chunk, &one(10..15)),
            Err(Undeliverable::QueueFull)
        );
        assert!(closed.load(Ordering::SeqCst));
    }

    #[test]
    fn bytes_the_socket_accepted_are_no_longer_owed() {
        let (closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(limits(6), closer);
        let chunk: Arc<[u8]> = Arc::from(&b"yyy\n"[..]);
        for _ in 0..10 {
            outbox.push_line("xxx\n").unwrap();
            take_all(&mut reader);
            outbox.push_shared(&chunk, &one(0..4)).unwrap();
            take_all(&mut reader);
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
        assert_eq!(bytes(&block_on(reader.next()).unwrap()), b"too long\n");
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
    fn a_long_queue_is_not_kept_once_written() {
        let (_closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(QueueLimits::default(), closer);
        let chunks: Vec<Arc<[u8]>> = (0..100).map(|_| Arc::from(&b"x\n"[..])).collect();
        for chunk in &chunks {
            outbox.push_shared(chunk, &one(0..2)).unwrap();
        }
        take_all(&mut reader);
        assert_eq!(reader.spare.capacity(), 0);
        outbox.push_line("small\n").unwrap();
        take_all(&mut reader);
        assert_eq!(reader.spare.capacity(), 0, "idle: no spare queue");
        assert_eq!(
            reader.shared.lock().segments.capacity(),
            0,
            "idle: no queue"
        );
    }

    #[test]
    fn a_busy_queue_reuses_its_two_buffers() {
        let (_closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(QueueLimits::default(), closer);
        outbox.push_line("first\n").unwrap();
        let batch = block_on(reader.next()).unwrap();
        reader.written(6);
        // More came while the first was being written: the written batch is kept for the next.
        outbox.push_line("second\n").unwrap();
        reader.recycle(batch);
        assert!(reader.spare.capacity() > 0);
        assert!(reader.spare.capacity() <= RETAINED_SEGMENTS);
    }
}
