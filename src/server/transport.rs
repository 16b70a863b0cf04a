//! How an admitted connection's bytes are carried: the TLS handshake (TLS 1.3, the server's
//! identity from [`crate::tls`]), or the plaintext protocol with `--plaintext`.
//!
//! A TLS client always speaks first (its ClientHello); a plaintext p2pchat client speaks only
//! after the server's `hello`. So a TLS server that hears nothing within `--tls-hello-timeout`,
//! or hears a first byte that cannot start a TLS handshake, is talking to a plaintext client (or
//! to `nc`): it answers with one plaintext `tls_required` error line, which such a client shows,
//! and closes. The whole handshake must end within `--tls-handshake-timeout` of the accept (and
//! within the login deadline): a connection that sends one byte, or part of a ClientHello, and
//! stalls is closed after a few seconds, not held until the login deadline, so stalled sockets
//! cannot keep the server's slots. This module never reads a line of the protocol and never
//! touches the session.

use std::time::Instant;

use crate::connection::{self, Disconnect, LineReader, ReadError, Stream};
use crate::protocol::{ErrorCode, ServerMessage, MAX_LINE_BYTES};
use crate::runtime::{self, TcpStream};
use crate::tls::{self, HANDSHAKE_RECORD};

use super::ServerConfig;

/// Makes `tcp`, accepted at `connected`, a [`Stream`]: plain with `--plaintext`; otherwise
/// after a TLS handshake that ends within `--tls-handshake-timeout` and by `deadline` (the
/// login's), or not at all (the reason says why, and the client was told when it could
/// understand).
pub(super) async fn establish(
    tcp: TcpStream,
    config: &ServerConfig,
    connected: Instant,
    deadline: Instant,
) -> Result<Stream, Disconnect> {
    let Some(tls) = &config.tls else {
        return Ok(Stream::plain(tcp));
    };
    let (deadline, allowed) = match connected + config.tls_handshake_timeout {
        handshake_deadline if handshake_deadline < deadline => {
            (handshake_deadline, config.tls_handshake_timeout)
        }
        _ => (deadline, config.auth_timeout),
    };
    let grace = config
        .tls_hello_timeout
        .min(deadline.saturating_duration_since(Instant::now()));
    let mut first = [0u8; 1];
    match runtime::timeout(grace, tcp.peek(&mut first)).await {
        Some(Ok(0)) => return Err(Disconnect::ClosedByClient),
        Some(Err(e)) => return Err(Disconnect::Read(ReadError::Io(e))),
        Some(Ok(_)) if first[0] == HANDSHAKE_RECORD => {}
        // Silence, or a first byte that starts no TLS handshake.
        _ => {
            // Boxed like the handshake: a rare path that would otherwise size every task.
            Box::pin(tell_tls_required(tcp)).await;
            return Err(Disconnect::TlsRequired);
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    // The handshake's state (a whole rustls connection, ~3.5 KiB) lives on the heap for the
    // handshake only: inline, it would size every connection's task, for its whole life.
    let handshake = Box::pin(tls::accept(tcp.clone(), tls.config.clone()));
    match runtime::timeout(left, handshake).await {
        Some(Ok((reader, writer))) => Ok(Stream::tls_halves(tcp, reader, writer)),
        Some(Err(e)) => Err(Disconnect::Handshake(e)),
        None => {
            let _ = tcp.shutdown(std::net::Shutdown::Both);
            Err(Disconnect::HandshakeTimeout(allowed))
        }
    }
}

/// Says `tls_required` in plaintext (the one thing a plaintext client can read), then closes
/// without resetting the connection, so that the line arrives.
async fn tell_tls_required(tcp: TcpStream) {
    let message = ServerMessage::error(
        ErrorCode::TlsRequired,
        "this server speaks TLS; connect without --plaintext",
    );
    let mut out = tcp.clone();
    let write = async move {
        let _ = connection::write_message(&mut out, &message).await;
    };
    let mut reader = LineReader::new(tcp.clone(), MAX_LINE_BYTES);
    connection::close_lingering(&tcp, &mut reader, write).await;
}
