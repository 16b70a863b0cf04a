//! The transfer port: every client listens on TCP at the same port number as its UDP
//! direct-message port, so a peer that knows where to send a direct message knows where to fetch
//! a file, the server needs no new field and learns nothing, a firewall opens one number, and one
//! tcpdump filter (`port N`) shows a peer's whole traffic. The receiver connects (it pulls).
//!
//! [`bind_pair`] binds both sockets on one number (with `--p2p-port 0`: a free UDP port, then TCP
//! on the same number, trying again a few times when another program holds it). A client that
//! cannot listen says so and chats on: only files are off.
//!
//! [`spawn_accepting`] accepts connections and reads each one's clear opening (bounded in time
//! and bytes by the engine's [`read_opening`]), at most [`MAX_OPENINGS`] at once, before handing
//! it to the chat loop, which alone decides whether the opening names a transfer it serves to
//! that peer. A stranger gets nothing from this module but a closed connection.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};

use super::input::TransferInput;
use crate::runtime::{self, TcpListener, UdpSocket};
use crate::transfer::{read_opening, DEFAULT_HANDSHAKE_TIMEOUT};

/// With `--p2p-port 0`, how many free UDP ports to try before giving up on the TCP port.
pub const BIND_TRIES: usize = 8;

/// Connections whose opening is being read at once; more are closed at once. A LAN peer sends
/// its opening in one segment; this bounds what a flood of idle connections can hold.
pub const MAX_OPENINGS: usize = 16;

/// After a failed `accept` (out of file descriptors, say), the wait before the next, so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why this client has no file transfers.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum FilesOff {
    /// The clear protocol has no keys to seal a file's offer or its data with.
    #[error("files are sent only sealed, and this client speaks the clear protocol (--plaintext)")]
    Plaintext,
    /// The transfer port could not be had; the text says why.
    #[error("{0}")]
    NoPort(String),
}

/// The two sockets on one port number.
pub(crate) struct Bound {
    pub(crate) udp: UdpSocket,
    /// `Err` when files are off: why the TCP port could not be had.
    pub(crate) tcp: Result<TcpListener, io::Error>,
}

/// Binds UDP on `ip:port` and TCP on the same address (see the module's header).
///
/// # Errors
/// Binding UDP failed (as before files existed: the chat cannot run without it).
pub(crate) async fn bind_pair(ip: IpAddr, port: u16) -> io::Result<Bound> {
    let mut tries = 0;
    loop {
        let udp = UdpSocket::bind(SocketAddr::new(ip, port)).await?;
        let udp_port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(ip, udp_port)).await {
            Ok(tcp) => return Ok(Bound { udp, tcp: Ok(tcp) }),
            // A free UDP port whose TCP twin is taken: another free one may not be.
            Err(e)
                if port == 0 && e.kind() == io::ErrorKind::AddrInUse && tries + 1 < BIND_TRIES =>
            {
                tries += 1;
            }
            Err(e) => return Ok(Bound { udp, tcp: Err(e) }),
        }
    }
}

/// Accepts connections on `listener` for as long as the chat reads `inputs`.
pub(crate) fn spawn_accepting(listener: Arc<TcpListener>, inputs: mpsc::Sender<TransferInput>) {
    runtime::spawn(async move {
        let reading = Arc::new(AtomicUsize::new(0));
        let mut incoming = listener.incoming();
        while let Some(stream) = incoming.next().await {
            if inputs.is_closed() {
                break;
            }
            let mut stream = match stream {
                Ok(stream) => stream,
                Err(_) => {
                    runtime::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(remote) = stream.peer_addr() else {
                continue;
            };
            if reading.fetch_add(1, Ordering::SeqCst) >= MAX_OPENINGS {
                reading.fetch_sub(1, Ordering::SeqCst);
                continue; // Dropped: closed.
            }
            let reading = reading.clone();
            let mut inputs = inputs.clone();
            runtime::spawn(async move {
                let opening = read_opening(&mut stream, DEFAULT_HANDSHAKE_TIMEOUT).await;
                reading.fetch_sub(1, Ordering::SeqCst);
                if let Ok(opening) = opening {
                    let _ = inputs
                        .send(TransferInput::Connection {
                            stream,
                            remote,
                            opening,
                        })
                        .await;
                }
            });
        }
    });
}
