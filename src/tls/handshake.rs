//! The server's side of the TLS handshake: rustls runs it (its unbuffered API, driven over the
//! socket here), then hands over the session's keys and key schedule, and the connection goes on
//! in [`super::records`] — so that nothing of the handshake's buffers outlives it.
//!
//! The handshake's own bounds (its deadline, what a stalled or plaintext client gets) are the
//! caller's ([`crate::server`]'s transport); this module only refuses a handshake that would
//! need more than [`MAX_HANDSHAKE_BYTES`] buffered.

use std::io;
use std::sync::Arc;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::SupportedCipherSuite;

use super::records::{tls_error, RecordReader, RecordWriter, Shared, MAX_CIPHERTEXT};

/// The most bytes of handshake buffered at once (a ClientHello is a few hundred bytes; rustls
/// itself refuses handshake messages over 64 KiB).
const MAX_HANDSHAKE_BYTES: usize = 80 * 1024;

/// Bytes asked of the socket in one read during the handshake.
const READ_BYTES: usize = 4096;

/// Runs the server's side of a TLS 1.3 handshake over `io` with `config` (which must allow the
/// keys to be extracted: [`super::ServerIdentity::server_config`]'s does), and returns the
/// connection's reading and writing halves. A handshake rustls refuses gets its alert before
/// the error is returned.
pub async fn accept<S>(
    io: S,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<(RecordReader<S>, RecordWriter<S>)>
where
    S: AsyncRead + AsyncWrite + Clone + Unpin,
{
    let mut connection = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut socket = io.clone();
    // Bytes read and not yet processed by rustls.
    let mut incoming: Vec<u8> = Vec::new();
    // How much of `incoming` rustls is shown: whole records, one more each time it asks, so that
    // it never processes what follows the client's Finished. Those records (the client's first
    // line, or a `KeyUpdate` it sends at once) are the record layer's: rustls would open them
    // and answer a `KeyUpdate` into a queue that the handover drops.
    let mut shown = 0;
    // Handshake records to send.
    let mut outgoing: Vec<u8> = Vec::new();
    loop {
        let UnbufferedStatus { discard, state } =
            connection.process_tls_records(&mut incoming[..shown]);
        let (mut read_more, mut writable) = (false, false);
        match state {
            Ok(ConnectionState::EncodeTlsData(mut data)) => {
                encode(&mut outgoing, |buffer| data.encode(buffer))?
            }
            Ok(ConnectionState::TransmitTlsData(data)) => {
                socket.write_all(&outgoing).await?;
                outgoing.clear();
                data.done();
            }
            Ok(ConnectionState::BlockedHandshake) => read_more = true,
            Ok(ConnectionState::WriteTraffic(_)) => writable = true,
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the TLS session during the handshake",
                ))
            }
            Ok(other) => {
                return Err(io::Error::other(format!(
                    "unexpected TLS handshake state {other:?}"
                )))
            }
            Err(error) => {
                incoming.drain(..discard);
                shown -= discard;
                send_alert(&mut connection, &mut incoming[..shown], &mut socket).await;
                return Err(tls_error(error));
            }
        }
        incoming.drain(..discard);
        shown -= discard;
        if writable {
            if !connection.is_handshaking() {
                if shown > 0 {
                    // rustls kept part of a record it was shown: the handover would lose it.
                    return Err(io::Error::other(
                        "bytes of the TLS handshake left unprocessed",
                    ));
                }
                break;
            }
            // Once its Finished is out the server may write, but the client's Finished has
            // still to be read.
            read_more = true;
        }
        if read_more {
            match record_length(&incoming[shown..]) {
                Some(Ok(record)) => {
                    shown += record;
                    continue;
                }
                // A length no record may have: rustls refuses it (with its alert) from what
                // arrived, rather than the handshake waiting for 64 KiB that mean nothing.
                Some(Err(())) => {
                    shown = incoming.len();
                    continue;
                }
                None => {}
            }
            if incoming.len() >= MAX_HANDSHAKE_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a TLS handshake over {MAX_HANDSHAKE_BYTES} bytes"),
                ));
            }
            let filled = incoming.len();
            incoming.resize(filled + READ_BYTES, 0);
            let n = socket.read(&mut incoming[filled..]).await?;
            incoming.truncate(filled + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the TLS handshake",
                ));
            }
        }
    }
    let Some(SupportedCipherSuite::Tls13(suite)) = connection.negotiated_cipher_suite() else {
        return Err(io::Error::other("the handshake ended without TLS 1.3"));
    };
    let (secrets, kernel) = connection
        .dangerous_into_kernel_connection()
        .map_err(tls_error)?;
    let shared = Shared::new(kernel, suite);
    let (rx_seq, rx) = secrets.rx;
    let (tx_seq, tx) = secrets.tx;
    // Everything after the Finished (which ends its record, RFC 8446 §5.1) was never shown to
    // rustls: whole or partial records for the record layer.
    let reader = RecordReader::new(
        io.clone(),
        shared.clone(),
        shared.key(rx)?,
        rx_seq,
        incoming,
    );
    let writer = RecordWriter::new(io, shared.clone(), shared.key(tx)?, tx_seq);
    Ok((reader, writer))
}

/// The length of the whole record at the start of `bytes` (header included) if it is all there,
/// or `Err` if its header gives a length no record may have (over 2^14 + 256 bytes).
fn record_length(bytes: &[u8]) -> Option<Result<usize, ()>> {
    let header = bytes.get(..5)?;
    let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if body > MAX_CIPHERTEXT {
        return Some(Err(()));
    }
    (bytes.len() >= 5 + body).then_some(Ok(5 + body))
}

/// Appends what `encode` writes to `outgoing`, growing it as rustls asks.
fn encode(
    outgoing: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> io::Result<()> {
    let start = outgoing.len();
    let mut room = 2048;
    loop {
        outgoing.resize(start + room, 0);
        match encode(&mut outgoing[start..]) {
            Ok(n) => {
                outgoing.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(needed)) => room = needed.required_size,
            Err(e) => {
                outgoing.truncate(start);
                return Err(io::Error::other(format!("encoding a TLS record: {e}")));
            }
        }
    }
}

/// After rustls refused the handshake, sends the alert it queued (best effort: the connection
/// is being closed anyway). rustls is asked once, with what it was shown less what it
/// discarded: a queued alert comes out before it looks at the bytes again. Asked twice, it
/// would refuse the same record again (a second fatal alert is a bug to it), and shown fewer
/// bytes than it has begun to read, it would index past them.
async fn send_alert<S: AsyncWrite + Unpin>(
    connection: &mut UnbufferedServerConnection,
    shown: &mut [u8],
    socket: &mut S,
) {
    let UnbufferedStatus { state, .. } = connection.process_tls_records(shown);
    if let Ok(ConnectionState::EncodeTlsData(mut data)) = state {
        let mut outgoing = Vec::new();
        if encode(&mut outgoing, |buffer| data.encode(buffer)).is_ok() {
            let _ = socket.write_all(&outgoing).await;
        }
    }
}
