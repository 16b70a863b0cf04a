//! One client's send queue: the bounded queue of encoded lines between whoever has something to
//! tell the client (the broker, the client's own session) and the connection's writer.
//!
//! The queue is bounded in lines and in bytes ([`QueueLimits`]; the defaults are here). Filling it
//! never waits: [`Outbox::push`] either queues the line at once or finds the queue full, and then
//! closes the connection through its [`Closer`] ("send queue exceeded"), so that one client that
//! does not read can neither grow the server's memory nor hold up anyone who writes to it.
//!
//! This module never does I/O and never decides who receives what: the writer that drains the
//! queue into the socket is [`crate::connection::write_queued`], and the fan-out is the broker's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::channel::mpsc;
use futures::StreamExt;

use crate::protocol::{encode_line, ServerMessage};

/// Default for `--send-queue-lines`: how many lines may wait for one client before it counts as
/// not reading.
pub const DEFAULT_SEND_QUEUE_LINES: usize = 256;

/// Default for `--send-queue-bytes`: how many bytes may wait for one client, sixteen of the
/// longest messages. With the line count it bounds the server's memory per client whatever the
/// clients send.
pub const DEFAULT_SEND_QUEUE_BYTES: usize = 1024 * 1024;

/// Closes a connection from outside its own tasks (both directions), waking its reader and writer.
pub type Closer = Box<dyn Fn() + Send + Sync>;

/// The bounds of one client's send queue; a client whose queue would exceed either is
/// disconnected ("send queue exceeded").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub lines: usize,
    pub bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            lines: DEFAULT_SEND_QUEUE_LINES,
            bytes: DEFAULT_SEND_QUEUE_BYTES,
        }
    }
}

/// Makes a client's send queue: the [`Outbox`] that the broker and the connection fill, and the
/// [`OutboxReader`] that the connection's writer drains. `closer` is called when it overflows.
pub fn channel(limits: QueueLimits, closer: Closer) -> (Outbox, OutboxReader) {
    let (lines, receiver) = mpsc::channel(limits.lines.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    let outbox = Outbox {
        lines,
        queued: queued.clone(),
        max_bytes: limits.bytes,
        closer: Arc::new(closer),
    };
    (outbox, OutboxReader { receiver, queued })
}

/// The sending side of one client's queue of encoded lines.
#[derive(Clone)]
pub struct Outbox {
    lines: mpsc::Sender<Arc<str>>,
    /// Bytes queued and not yet taken by the writer.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    closer: Arc<Closer>,
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
    /// Queues a message without waiting.
    pub fn push(&mut self, message: &ServerMessage) -> Result<(), Undeliverable> {
        self.push_line(Arc::from(encode_line(message)))
    }

    /// Queues an encoded line without waiting. A full queue (in lines or in bytes) closes the
    /// connection. A line longer than the byte limit still goes into an empty queue, so that a
    /// small limit cannot make a message undeliverable to everyone.
    pub fn push_line(&mut self, line: Arc<str>) -> Result<(), Undeliverable> {
        let len = line.len();
        let before = self.queued.fetch_add(len, Ordering::SeqCst);
        let result = if before > 0 && before + len > self.max_bytes {
            Err(Undeliverable::QueueFull)
        } else {
            match self.lines.try_send(line) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_full() => Err(Undeliverable::QueueFull),
                Err(_) => Err(Undeliverable::Closed),
            }
        };
        self.queued.fetch_sub(len, Ordering::SeqCst);
        if result == Err(Undeliverable::QueueFull) {
            (self.closer)();
        }
        result
    }
}

/// The receiving side of a client's send queue.
pub struct OutboxReader {
    receiver: mpsc::Receiver<Arc<str>>,
    queued: Arc<AtomicUsize>,
}

impl OutboxReader {
    /// The next line; `None` once every [`Outbox`] is dropped and the queue is empty.
    pub async fn next(&mut self) -> Option<Arc<str>> {
        let line = self.receiver.next().await?;
        self.taken(&line);
        Some(line)
    }

    /// The next line if one is waiting.
    pub fn try_next(&mut self) -> Option<Arc<str>> {
        let line = self.receiver.try_recv().ok()?;
        self.taken(&line);
        Some(line)
    }

    fn taken(&self, line: &str) {
        self.queued.fetch_sub(line.len(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn closing_flag() -> (Arc<AtomicBool>, Closer) {
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        (closed, Box::new(move || flag.store(true, Ordering::SeqCst)))
    }

    #[test]
    fn a_full_queue_refuses_the_line_and_closes_the_connection() {
        let (closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(
            QueueLimits {
                lines: 2,
                bytes: 1 << 20,
            },
            closer,
        );
        // A bounded mpsc channel holds its capacity plus one per sender.
        let mut pushed = 0;
        while outbox.push_line(Arc::from("x\n")).is_ok() {
            pushed += 1;
            assert!(pushed < 100, "the queue never filled");
        }
        assert!(closed.load(Ordering::SeqCst));
        assert_eq!(
            outbox.push_line(Arc::from("x\n")),
            Err(Undeliverable::QueueFull)
        );
        assert_eq!(reader.try_next().as_deref(), Some("x\n"));
    }

    #[test]
    fn a_line_longer_than_the_byte_limit_still_goes_into_an_empty_queue() {
        let (closed, closer) = closing_flag();
        let (mut outbox, mut reader) = channel(QueueLimits { lines: 8, bytes: 4 }, closer);
        assert_eq!(outbox.push_line(Arc::from("too long\n")), Ok(()));
        assert_eq!(
            outbox.push_line(Arc::from("x\n")),
            Err(Undeliverable::QueueFull)
        );
        assert!(closed.load(Ordering::SeqCst));
        assert_eq!(reader.try_next().as_deref(), Some("too long\n"));
    }

    #[test]
    fn a_dropped_reader_makes_lines_undeliverable_without_closing_again() {
        let (closed, closer) = closing_flag();
        let (mut outbox, reader) = channel(QueueLimits::default(), closer);
        drop(reader);
        assert_eq!(
            outbox.push_line(Arc::from("x\n")),
            Err(Undeliverable::Closed)
        );
        assert!(!closed.load(Ordering::SeqCst));
    }
}
