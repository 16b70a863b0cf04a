//! The writing half of a connection: the writer task that drains a client's send queue into the
//! socket, and the direct write of one message (the client's, and a refusal's, which have no
//! buffer).
//!
//! It never decides what is sent or to whom (the broker and the session do) and never reads.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::{pin, Pin};
use std::time::Duration;

use futures::io::{AsyncWrite, AsyncWriteExt};
use futures::FutureExt;
use serde::Serialize;

use super::StreamWriter;
use crate::outbox::{Batch, OutboxReader};
use crate::protocol::encode_line;
use crate::runtime::{self, TcpStream};

/// Why the writer stopped before the buffer ended.
enum WriteFailed {
    /// The socket failed: the client is gone.
    Socket,
    /// The socket accepted nothing for the stall timeout while bytes were owed.
    Stalled,
}

/// At most this many segments go into one vectored write: a queue behind by a burst is written
/// in a few calls without a heap-allocated slice list (Linux accepts up to 1024).
const MAX_SLICES: usize = 64;

/// Writes what the client is owed to `out` until every sender is gone or the socket fails or
/// stalls. Everything owed goes out in one vectored write call (the socket takes what it can; the
/// rest follows at once), straight from the shared chunks, so lines appended while the previous
/// write was in flight cost no wake-up of their own. A socket that accepts no byte for the
/// queue's stall timeout drops the client. When the queue ends, `out` is closed (with TLS, a
/// `close_notify` first, so that the client can tell the end from a cut). When the socket fails,
/// `tcp` is closed both ways, so that the connection's reader wakes up too.
pub async fn write_queued(mut out: StreamWriter, tcp: TcpStream, mut queue: OutboxReader) {
    while let Some(batch) = queue.next().await {
        match write_owed(&mut out, &mut queue, &batch).await {
            Ok(()) => queue.recycle(batch),
            Err(WriteFailed::Stalled) => {
                queue.stalled();
                return;
            }
            Err(WriteFailed::Socket) => {
                // The client is gone: wake the reader too.
                let _ = tcp.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let _ = out.close().await;
}

/// Writes `batch` and flushes, each call allowed the stall timeout to make progress.
async fn write_owed(
    out: &mut StreamWriter,
    queue: &mut OutboxReader,
    batch: &Batch,
) -> Result<(), WriteFailed> {
    let stall = queue.stall_timeout();
    // The first segment not fully written, and how much of it was.
    let (mut first, mut offset) = (0, 0);
    while first < batch.len() {
        // The slices are made at each poll, so that they are not part of the writer's state
        // (1 KiB that every idle connection would keep).
        let write = poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (i, segment) in batch.range(first..).take(MAX_SLICES).enumerate() {
                let bytes = segment.bytes();
                slices[i] = IoSlice::new(if i == 0 { &bytes[offset..] } else { bytes });
                count += 1;
            }
            Pin::new(&mut *out).poll_write_vectored(cx, &slices[..count])
        });
        let mut n = match within(stall, write).await {
            None => return Err(WriteFailed::Stalled),
            Some(Ok(0)) | Some(Err(_)) => return Err(WriteFailed::Socket),
            Some(Ok(n)) => n,
        };
        queue.written(n);
        while n > 0 {
            let left = batch[first].bytes().len() - offset;
            if n < left {
                offset += n;
                break;
            }
            n -= left;
            first += 1;
            offset = 0;
        }
        // Skip empty segments (none are queued, but a zero-length slice would end the loop).
        while first < batch.len() && offset == batch[first].bytes().len() {
            first += 1;
            offset = 0;
        }
    }
    // Plain TCP has nothing to flush; TLS writes out the records it holds.
    match within(stall, out.flush()).await {
        None => Err(WriteFailed::Stalled),
        Some(Err(_)) => Err(WriteFailed::Socket),
        Some(Ok(())) => Ok(()),
    }
}

/// `op`'s output, or `None` if it took longer than `stall`. It is polled once first, and the timer
/// is armed only if it is not ready: most writes are taken by the socket at once, and a timer
/// registered and removed for each of them costs more than the write's own bookkeeping.
async fn within<F: Future>(stall: Duration, op: F) -> Option<F::Output> {
    let mut op = pin!(op);
    if let Some(output) = op.as_mut().now_or_never() {
        return Some(output);
    }
    runtime::timeout(stall, op).await
}

/// Writes one message as one protocol line, waiting until the socket has taken all of it (a TLS
/// session may hold written bytes until flushed: this flushes).
pub async fn write_message<W, M>(out: &mut W, message: &M) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    M: Serialize,
{
    out.write_all(encode_line(message).as_bytes()).await?;
    out.flush().await
}
