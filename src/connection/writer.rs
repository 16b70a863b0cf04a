//! The writing half of a connection: the writer task that drains a client's send queue into the
//! socket, and the direct write of one message (the client's, and a refusal's, which have no
//! queue).
//!
//! It never decides what is sent or to whom (the broker and the session do) and never reads.

use std::io;
use std::net::Shutdown;

use futures::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use serde::Serialize;

use super::StreamWriter;
use crate::outbox::OutboxReader;
use crate::protocol::encode_line;
use crate::runtime::TcpStream;

/// Writes queued lines to `out` until the queue ends or the socket fails. Lines that are
/// already waiting go out in one write. When the queue ends, `out` is closed (with TLS, a
/// `close_notify` first, so that the client can tell the end from a cut). When the socket fails,
/// `tcp` is closed both ways, so that the connection's reader wakes up too.
pub async fn write_queued(out: StreamWriter, tcp: TcpStream, mut queue: OutboxReader) {
    let mut out = BufWriter::new(out);
    while let Some(line) = queue.next().await {
        let mut result = out.write_all(line.as_bytes()).await;
        while let (Ok(()), Some(line)) = (&result, queue.try_next()) {
            result = out.write_all(line.as_bytes()).await;
        }
        if result.is_err() || out.flush().await.is_err() {
            // The client is gone: wake the reader too.
            let _ = tcp.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = out.close().await;
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
