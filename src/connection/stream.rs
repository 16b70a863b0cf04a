//! The byte stream under the lines: plain TCP, or TLS over TCP — the seam that lets everything
//! above it (the line reader, the writer task, the graceful close) work the same on both.
//!
//! A [`Stream`] is taken apart into a reading half, a writing half (each its own task may own),
//! and the TCP socket itself, which is kept for what TLS cannot do: closing both ways at once to
//! wake a blocked reader and writer, and the addresses. It never frames, parses or decides
//! anything.

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::runtime::TcpStream;

/// The reading half of a connection.
pub type StreamReader = Box<dyn AsyncRead + Send + Unpin>;

/// The writing half of a connection. Closing it ends what this side sends: with TLS, a
/// `close_notify` alert, then the TCP FIN.
pub type StreamWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A connection's bytes, plain or encrypted.
pub struct Stream {
    tcp: TcpStream,
    reader: StreamReader,
    writer: StreamWriter,
    encrypted: bool,
}

impl Stream {
    /// Bytes as they travel: the plaintext protocol.
    pub fn plain(tcp: TcpStream) -> Stream {
        Stream {
            reader: Box::new(tcp.clone()),
            writer: Box::new(tcp.clone()),
            tcp,
            encrypted: false,
        }
    }

    /// `tls` is a TLS session over `tcp` whose handshake is complete. Its halves share the
    /// session behind a lock held only while one of them is polled, so a reader waiting for
    /// bytes never blocks the writer.
    pub fn tls<S>(tcp: TcpStream, tls: S) -> Stream
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (reader, writer) = tls.split();
        Stream {
            tcp,
            reader: Box::new(reader),
            writer: Box::new(writer),
            encrypted: true,
        }
    }

    /// A TLS session whose halves are separate already (the server's own record layer,
    /// [`crate::tls::accept`]), over `tcp`.
    pub fn tls_halves<R, W>(tcp: TcpStream, reader: R, writer: W) -> Stream
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        Stream {
            tcp,
            reader: Box::new(reader),
            writer: Box::new(writer),
            encrypted: true,
        }
    }

    /// Whether the bytes are encrypted (TLS).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// The TCP socket, and the two halves.
    pub fn into_parts(self) -> (TcpStream, StreamReader, StreamWriter) {
        (self.tcp, self.reader, self.writer)
    }
}
