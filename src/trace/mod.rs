//! Reading packet captures of p2pchat traffic: what `p2pchat-trace` and the lab's report are made of.
//!
//! - [`capture`]: the pcap/pcapng container (via `pcap-file`), link types, errors naming the offset.
//! - [`packet`]: one packet's headers (via `etherparse`): TCP segments, UDP datagrams, ARP.
//! - [`messages`]: which p2pchat message a segment or datagram carries, by the library's decoders;
//!   in the default mode, which TLS records a segment finishes and a sealed datagram's header.
//! - [`tls`]: TLS records in a TCP stream, read from their clear headers.
//! - [`file_transfer`]: a file transfer's data connection, read from its clear opening, the
//!   handshake's sizes and the records' clear headers.
//! - [`dns`]: DNS queries and answers (the lab's lookup of chat.lab), parsed by hand.
//! - [`handshake`]: every TCP three-way handshake with absolute numbers, and each connection's end.
//! - [`udp`]: every UDP datagram's header, and the lab's questions about UDP answered.
//! - [`diagram`]: a sequence diagram of every packet, as Mermaid or as text, of one capture or
//!   of several merged into one timeline ([`merge`]: which frames are the same packet).
//! - [`svg`]: the diagram as an SVG picture, for the report's PDF.
//!
//! Nothing here opens a socket or captures anything: it reads files that tcpdump wrote.

pub mod capture;
pub mod diagram;
pub mod dns;
pub mod file_transfer;
pub mod handshake;
pub mod merge;
pub mod messages;
pub mod packet;
pub mod svg;
pub mod tls;
pub mod udp;

use std::path::Path;

pub use capture::{Capture, CaptureError, CaptureFormat, LinkType};
pub use packet::Frame;

/// Reads the capture at `path` and dissects every packet.
///
/// # Errors
/// As [`Capture::open`]: unreadable, not a capture, truncated, malformed, unknown link type.
pub fn load(path: impl AsRef<Path>) -> Result<(Capture, Vec<Frame>), CaptureError> {
    let capture = Capture::open(path)?;
    let frames = capture.packets.iter().map(Frame::dissect).collect();
    Ok((capture, frames))
}
