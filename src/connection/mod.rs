//! A framed connection, both halves and its end: the bytes under it, plain or TLS ([`Stream`]),
//! reading capped lines ([`LineReader`]), writing lines ([`write_queued`] drains a send queue,
//! [`write_message`] writes one message), closing without losing the last lines
//! ([`close_gracefully`]), and why the server ends one ([`Disconnect`]). The server and the
//! client both use it.
//!
//! It never knows what the lines mean beyond encoding one message: parsing is
//! [`crate::protocol`]'s, the send queue is [`crate::outbox`]'s, and who gets what is the broker's.

mod disconnect;
mod reader;
mod stream;
mod writer;

use std::future::Future;
use std::net::Shutdown;
use std::time::Duration;

use futures::io::AsyncRead;

use crate::outbox::Closer;
use crate::runtime::{self, TcpStream};

pub use disconnect::{AuthAction, Disconnect};
pub use reader::{LineReader, ReadError};
pub use stream::{Stream, StreamReader, StreamWriter};
pub use writer::{write_message, write_queued};

/// How long a server closing a connection may still flush what it owes the client, and then read
/// (and discard) what the client still sends, so that closing does not reset the connection and
/// destroy the last message (an error, or `shutdown`) before the client reads it.
pub const LINGER: Duration = Duration::from_secs(1);

/// At most this much of what the client still sends is read off while lingering.
pub const LINGER_BYTES: usize = 256 * 1024;

/// Closes a connection without losing its last lines: waits (at most `linger`) for `flush` to
/// have written what this side owes, closes the sending side, then lets `drain` read (and throw
/// away) what the peer still sends, for at most `linger` again, so that the peer sees the last
/// lines and a clean end of stream rather than a reset. If flushing takes longer, the connection
/// is closed both ways at once.
pub async fn close_gracefully(
    stream: &TcpStream,
    linger: Duration,
    flush: impl Future<Output = ()>,
    drain: impl Future<Output = ()>,
) {
    if runtime::timeout(linger, flush).await.is_none() {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let _ = runtime::timeout(linger, drain).await;
}

/// The server's close: lets the writer flush what is queued, then discards what the client still
/// sends, each for at most [`LINGER`] (and [`LINGER_BYTES`]).
pub async fn close_lingering(
    stream: &TcpStream,
    reader: &mut LineReader<impl AsyncRead + Unpin>,
    writer: impl Future<Output = ()>,
) {
    let drain = async {
        let _ = reader.discard(LINGER_BYTES).await;
    };
    close_gracefully(stream, LINGER, writer, drain).await;
}

/// A [`Closer`] for a send queue: closes `stream` both ways, which wakes its reader and writer.
pub fn closer(stream: &TcpStream) -> Closer {
    let stream = stream.clone();
    Box::new(move || {
        let _ = stream.shutdown(Shutdown::Both);
    })
}
