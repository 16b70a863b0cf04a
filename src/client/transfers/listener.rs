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
//! and bytes by the engine's [`read_opening`], within [`OPENING_TIMEOUT`]) and hands it to the chat
//! loop, which alone decides whether the opening names a transfer it serves to that peer. At
//! most [`MAX_OPENINGS`] connections are held from `accept` until the chat loop has handled them,
//! at most [`MAX_OPENINGS_PER_IP`] from one address; more are closed at once. A stranger gets
//! nothing from this module but a closed connection.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};

use super::input::{Held, OpeningSlot, TransferInput};
use crate::runtime::{self, TcpListener, UdpSocket};
use crate::transfer::read_opening;

/// With `--p2p-port 0`, how many free UDP ports to try before giving up on the TCP port.
pub const BIND_TRIES: usize = 8;

/// Connections held at once between `accept` and the chat loop's handling (their opening being
/// read, or read and waiting in the queue to the chat loop); more are closed at once. This bounds
/// the file descriptors a flood of connections can hold, whatever the chat loop's pace.
pub const MAX_OPENINGS: usize = 16;

/// Of those, how many one source IP may hold: a LAN host alone cannot take every place and shut
/// out the genuine receivers (a peer fetching several files at once opens one connection each,
/// read in a moment; one closed early is tried again by itself).
pub const MAX_OPENINGS_PER_IP: usize = 4;

/// How long a connection has to send its opening. A LAN peer sends it in one segment at once;
/// the time covers a lost segment or two, and bounds how long an idle one holds a place.
pub const OPENING_TIMEOUT: Duration = Duration::from_secs(3);

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
        let held = Arc::new(Mutex::new(Held::default()));
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
            // Keyed on the canonical IP: an IPv4 peer on a dual-stack socket is one address.
            let ip = remote.ip().to_canonical();
            let Some(slot) = OpeningSlot::take(&held, ip, MAX_OPENINGS, MAX_OPENINGS_PER_IP) else {
                continue; // Dropped: closed.
            };
            // A clone of the sender gets one place in the channel beyond its bound; the slot,
            // held until the chat loop has handled the connection, is what bounds the queue.
            let mut inputs = inputs.clone();
            runtime::spawn(async move {
                let opening = read_opening(&mut stream, OPENING_TIMEOUT).await;
                if let Ok(opening) = opening {
                    let _ = inputs
                        .send(TransferInput::Connection {
                            stream,
                            remote,
                            opening,
                            slot,
                        })
                        .await;
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdTcpStream;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    /// A well-formed opening (docs/protocol.md, "File transfer: the data connection"): magic,
    /// version, transfer id, both key ids, offset, nonce; what it names does not matter here.
    fn opening() -> Vec<u8> {
        let mut bytes = b"p2pchat-file".to_vec();
        bytes.push(1);
        bytes.resize(bytes.len() + 16 + 8 + 8 + 8 + 32, 0x5a);
        bytes[13 + 32..13 + 40].fill(0); // Offset 0.
        bytes
    }

    /// A listener on loopback accepting into a channel of one place, never read by itself.
    fn listening() -> (SocketAddr, mpsc::Receiver<TransferInput>) {
        let listener = runtime::block_on(TcpListener::bind("127.0.0.1:0")).expect("a listener");
        let addr = listener.local_addr().expect("its address");
        let (inputs, fed) = mpsc::channel(1);
        spawn_accepting(Arc::new(listener), inputs);
        (addr, fed)
    }

    /// A connection from loopback address `from` that sends an opening, then nothing.
    fn opening_from(from: &str, to: SocketAddr) -> StdTcpStream {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a TCP socket");
        let local: SocketAddr = format!("{from}:0").parse().expect("a loopback address");
        socket.bind(&local.into()).expect("bind the source address");
        socket.connect(&to.into()).expect("connect to the listener");
        let mut tcp: StdTcpStream = socket.into();
        tcp.set_read_timeout(Some(DEADLINE))
            .expect("a read timeout");
        tcp.write_all(&opening()).expect("send the opening");
        tcp
    }

    /// Whether the listener closed `tcp` (end of stream or reset) before [`DEADLINE`]: it sends
    /// nothing to a connection before the chat loop serves it.
    fn closed(mut tcp: StdTcpStream) -> bool {
        let mut byte = [0u8; 1];
        match tcp.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    /// The next connection handed to the chat loop, within [`DEADLINE`].
    fn next_connection(fed: &mut mpsc::Receiver<TransferInput>) -> TransferInput {
        let input = runtime::block_on(runtime::timeout(DEADLINE, fed.next()))
            .expect("a connection for the chat loop before the deadline")
            .expect("the listener still running");
        assert!(matches!(input, TransferInput::Connection { .. }));
        input
    }

    #[test]
    fn connections_waiting_for_the_chat_loop_stay_bounded() {
        let (addr, mut fed) = listening();
        // Every place taken, from as many addresses as the per-address bound needs; the chat
        // loop has them all but handled none (it holds them).
        let mut held = Vec::new();
        let mut streams = Vec::new();
        for n in 0..MAX_OPENINGS {
            let from = format!("127.0.1.{}", 1 + n / MAX_OPENINGS_PER_IP);
            streams.push(opening_from(&from, addr));
            held.push(next_connection(&mut fed));
        }
        // One more, from an address holding nothing: closed at once, never queued.
        assert!(
            closed(opening_from("127.0.2.1", addr)),
            "a connection past the bound"
        );
        // One handled: its place is free again, and a new connection reaches the chat loop.
        held.pop();
        let _kept = opening_from("127.0.2.1", addr);
        next_connection(&mut fed);
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_the_places() {
        let (addr, mut fed) = listening();
        let mut held = Vec::new();
        let mut streams = Vec::new();
        for _ in 0..MAX_OPENINGS_PER_IP {
            streams.push(opening_from("127.0.3.1", addr));
            held.push(next_connection(&mut fed));
        }
        assert!(
            closed(opening_from("127.0.3.1", addr)),
            "a connection past the per-address bound"
        );
        // Another address still has its places.
        let _other = opening_from("127.0.3.2", addr);
        next_connection(&mut fed);
    }
}
