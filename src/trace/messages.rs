//! Recognising p2pchat messages in captured payloads: which protocol message a TCP segment or a
//! UDP datagram carries.
//!
//! In the default mode the TCP stream is TLS and a direct message is sealed: a direction whose
//! first bytes are a TLS record header is read record by record ([`super::tls`]) and its segments
//! are labelled with the records they finish; a datagram with a sealed header
//! ([`crate::sealed::Header`]) is labelled with that header (kind, sender's key id, counter),
//! which is all an eavesdropper can read of it. A file transfer's data connection (its first
//! bytes the opening's magic, and the direction that answers it) is read by
//! [`super::file_transfer`]: opening, handshake, records by their clear headers.
//!
//! TCP is a byte stream, so a segment may hold several lines, or part of one: each direction of
//! each connection is reassembled in sequence-number order and a segment is labelled with the
//! messages whose last byte (the newline) it carries. The names come from the `"type"` field,
//! checked with the library's own decoders ([`crate::protocol::decode_client`],
//! [`crate::protocol::decode_server`], [`crate::protocol::decode_datagram`]), so a message type added
//! to the protocol is recognised here without a change. Never quotes a message's other fields: a
//! `login` carries a password.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use serde::Serialize;

use super::dns::{DnsMessage, DNS_PORT, MDNS_PORT};
use super::file_transfer::{self, FileStreamReader, Side};
use super::packet::{TcpSegment, UdpDatagram};
use super::tls::{self, RecordReader, TlsRecord};
use crate::protocol::{self, DecodeError};
use crate::sealed;

/// How much of an unfinished line is kept per direction before the stream is judged not to be
/// p2pchat: the longest line either side accepts.
const MAX_PENDING_BYTES: usize = protocol::MAX_SERVER_LINE_BYTES;

/// What a payload carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "types", rename_all = "snake_case")]
pub enum Payload {
    /// No payload (a bare SYN, ACK, FIN or RST).
    Empty,
    /// p2pchat messages ending in this segment (or the datagram's one message), by `type`; a type
    /// the protocol does not know is suffixed with `?`, one whose fields do not fit with `!`.
    Messages(Vec<String>),
    /// Part of a p2pchat line that a later segment finishes.
    Partial,
    /// Bytes already seen on this stream, sent again.
    Retransmission,
    /// Not newline-delimited JSON with a `"type"`, nor TLS, nor a sealed datagram: some other
    /// protocol.
    Other,
    /// TLS records ending in this segment (the default mode's stream to the server).
    Tls(Vec<TlsRecord>),
    /// Part of a TLS record that a later segment finishes.
    TlsPartial,
    /// A file transfer's data connection: the opening, the handshake, records by type
    /// ([`super::file_transfer`]) finished in this segment.
    File(Vec<String>),
    /// Part of a file transfer's handshake or record that a later segment finishes.
    FilePartial,
    /// A sealed direct message or acknowledgement: only its header is readable.
    Sealed(SealedDatagram),
    /// A DNS query or response (a datagram to or from port 53), e.g. the lab's lookup of chat.lab.
    Dns(DnsMessage),
}

/// The clear header of a sealed datagram (docs/protocol.md, "Sealed"): what it says, not whether
/// it is authentic, which only the two peers can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealedDatagram {
    pub version: u8,
    /// `message`, `acknowledgement` or `file` (a file transfer's offer or answer).
    pub kind: &'static str,
    /// The sender's session key id, in hex (the first 8 bytes of SHA-256 of its public key).
    pub key_id: String,
    pub counter: u64,
    /// Bytes after the header: the ciphertext and its 16-byte tag.
    pub sealed_bytes: usize,
}

impl SealedDatagram {
    /// Reads the header of a sealed datagram; `None` when the bytes are not one.
    pub fn parse(payload: &[u8]) -> Option<SealedDatagram> {
        let header = sealed::Header::parse(payload).ok()?;
        Some(SealedDatagram {
            version: payload[0],
            kind: match header.kind {
                sealed::Kind::Message => "message",
                sealed::Kind::Ack => "acknowledgement",
                sealed::Kind::File => "file",
            },
            key_id: header.key_id.to_string(),
            counter: header.counter,
            sealed_bytes: payload.len() - sealed::HEADER_BYTES,
        })
    }

    /// `sealed direct message from key id 5d2af3732237ccce counter 1`.
    pub fn label(&self) -> String {
        let what = match self.kind {
            "message" => "direct message",
            "file" => "file offer or answer",
            other => other,
        };
        format!(
            "sealed {what} from key id {} counter {}",
            self.key_id, self.counter
        )
    }
}

impl Payload {
    /// A short label for a diagram: `welcome+joined`, `(part of a message)`, …
    pub fn label(&self) -> Option<String> {
        match self {
            Payload::Empty => None,
            Payload::Messages(types) => Some(types.join("+")),
            Payload::Partial => Some("(part of a message)".into()),
            Payload::Retransmission => Some("(retransmission)".into()),
            Payload::Other => Some("(not p2pchat)".into()),
            Payload::Tls(records) => Some(format!(
                "TLS {}",
                records
                    .iter()
                    .map(TlsRecord::label)
                    .collect::<Vec<_>>()
                    .join(" + TLS ")
            )),
            Payload::TlsPartial => Some("(part of a TLS record)".into()),
            Payload::File(items) => Some(file_transfer::summary(items)),
            Payload::FilePartial => Some("(part of a file record)".into()),
            Payload::Sealed(header) => Some(header.label()),
            Payload::Dns(message) => Some(message.to_string()),
        }
    }
}

/// Which decoder a line is checked with: who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    Client,
    Server,
    /// The capture did not show who opened the connection.
    Unknown,
}

/// One direction of one TCP connection.
#[derive(Debug, Default)]
struct Direction {
    /// The sequence number of the next byte expected, once known.
    next_seq: Option<u32>,
    pending: Vec<u8>,
    /// Set once the bytes are seen not to be p2pchat lines; later segments are `Other` too.
    foreign: bool,
    /// Whether any payload byte of this direction has been read: the first ones decide between
    /// p2pchat lines and TLS.
    started: bool,
    /// Set when the direction starts with a TLS record header.
    tls: Option<RecordReader>,
    /// Set when the direction is a file transfer's data connection.
    file: Option<FileStreamReader>,
}

/// Labels TCP segments in capture order; keeps each stream's unfinished line between calls.
#[derive(Debug, Default)]
pub struct StreamLabeler {
    /// Endpoints that received a SYN: the servers.
    listeners: HashSet<SocketAddr>,
    directions: HashMap<(SocketAddr, SocketAddr), Direction>,
    /// Directions (from, to) that answer a file transfer's opening: a sender's.
    file_senders: HashSet<(SocketAddr, SocketAddr)>,
}

impl StreamLabeler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Labels one segment; call for every TCP segment of the capture, in order.
    pub fn label(&mut self, segment: &TcpSegment) -> Payload {
        if segment.flags.syn && !segment.flags.ack {
            self.listeners.insert(segment.dst);
        }
        let sender = if self.listeners.contains(&segment.dst) {
            Sender::Client
        } else if self.listeners.contains(&segment.src) {
            Sender::Server
        } else {
            Sender::Unknown
        };
        let answers_an_opening = self.file_senders.contains(&(segment.src, segment.dst));
        let mut opened = false;
        let direction = self
            .directions
            .entry((segment.src, segment.dst))
            .or_default();
        if segment.flags.syn {
            // A new connection on this address pair starts a new stream.
            *direction = Direction {
                next_seq: Some(segment.seq.wrapping_add(1)),
                ..Direction::default()
            };
            return Payload::Empty;
        }
        let len = segment.payload.len();
        if len == 0 {
            return Payload::Empty;
        }
        let expected = *direction.next_seq.get_or_insert(segment.seq);
        // Signed distance in sequence space (RFC 1982 arithmetic over 2^32).
        let offset = segment.seq.wrapping_sub(expected) as i32;
        let end = offset.saturating_add(len as i32);
        if end <= 0 {
            return Payload::Retransmission;
        }
        let fresh = if offset < 0 {
            &segment.payload[offset.unsigned_abs() as usize..]
        } else {
            if offset > 0 {
                // Bytes the capture missed: the unfinished line cannot be completed, and a TLS
                // stream's next record header cannot be found.
                direction.pending.clear();
                if direction.tls.take().is_some() || direction.file.take().is_some() {
                    direction.foreign = true;
                }
            }
            &segment.payload[..]
        };
        direction.next_seq = Some(segment.seq.wrapping_add(len as u32));
        if direction.foreign {
            return Payload::Other;
        }
        if !direction.started {
            direction.started = true;
            // The stream's first byte (or, in a capture that began mid-connection, the first
            // byte seen) is a record header's or a line's.
            if offset <= 0 && tls::looks_like_tls(fresh) {
                direction.tls = Some(RecordReader::new());
            } else if offset <= 0 && file_transfer::looks_like_opening(fresh) {
                direction.file = Some(FileStreamReader::new(Side::Receiver));
                opened = true;
            } else if offset <= 0 && answers_an_opening {
                direction.file = Some(FileStreamReader::new(Side::Sender));
            }
        }
        if opened {
            self.file_senders.insert((segment.dst, segment.src));
        }
        let direction = self
            .directions
            .get_mut(&(segment.src, segment.dst))
            .expect("made above");
        if let Some(reader) = &mut direction.file {
            return match reader.push(fresh) {
                Ok(items) if items.is_empty() => Payload::FilePartial,
                Ok(items) => Payload::File(items),
                Err(_) => {
                    direction.foreign = true;
                    direction.file = None;
                    Payload::Other
                }
            };
        }
        if let Some(reader) = &mut direction.tls {
            return match reader.push(fresh) {
                Ok(records) if records.is_empty() => Payload::TlsPartial,
                Ok(records) => Payload::Tls(records),
                Err(_) => {
                    direction.foreign = true;
                    direction.tls = None;
                    Payload::Other
                }
            };
        }
        direction.pending.extend_from_slice(fresh);
        let mut types = Vec::new();
        while let Some(newline) = direction.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = direction.pending.drain(..=newline).collect();
            let line = strip_line_end(&line);
            if line.is_empty() {
                continue;
            }
            match line_type(line, sender) {
                Some(name) => types.push(name),
                None => {
                    direction.foreign = true;
                    direction.pending.clear();
                    return Payload::Other;
                }
            }
        }
        if direction.pending.len() > MAX_PENDING_BYTES {
            direction.foreign = true;
            direction.pending.clear();
            return Payload::Other;
        }
        if types.is_empty() {
            Payload::Partial
        } else {
            Payload::Messages(types)
        }
    }
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The name of a line's message, checked with the decoder of the side that sent it; `None` when
/// the line is not a typed JSON object at all.
fn line_type(line: &[u8], sender: Sender) -> Option<String> {
    let kind = json_type(line)?;
    let verdict = match sender {
        Sender::Client => protocol::decode_client(line).map(|_| ()),
        Sender::Server => protocol::decode_server(line).map(|_| ()),
        Sender::Unknown => protocol::decode_client(line)
            .map(|_| ())
            .or_else(|_| protocol::decode_server(line).map(|_| ())),
    };
    Some(name_with_verdict(kind, verdict))
}

/// The `"type"` string of a JSON object, if the bytes are one.
fn json_type(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    match value.get("type")? {
        serde_json::Value::String(kind) => Some(kind.chars().take(32).collect()),
        _ => None,
    }
}

fn name_with_verdict(kind: String, verdict: Result<(), DecodeError>) -> String {
    match verdict {
        Ok(()) => kind,
        Err(DecodeError::UnknownType(_)) => format!("{kind}?"),
        Err(_) => format!("{kind}!"),
    }
}

/// What a UDP datagram carries: a DNS message when it is to or from port 53 and parses as one,
/// otherwise as [`label_datagram`].
pub fn label_udp(datagram: &UdpDatagram) -> Payload {
    if datagram.src.port() == DNS_PORT || datagram.dst.port() == DNS_PORT {
        if let Ok(message) = DnsMessage::parse(&datagram.payload) {
            return Payload::Dns(message);
        }
    }
    // Multicast DNS (RFC 6762): both ends use 5353 (a one-shot querier may use another source).
    if datagram.dst.port() == MDNS_PORT || datagram.src.port() == MDNS_PORT {
        if let Ok(message) = DnsMessage::parse_mdns(&datagram.payload) {
            return Payload::Dns(message);
        }
    }
    label_datagram(&datagram.payload)
}

/// What a UDP payload carries: `direct` for a clear p2pchat direct message, the header of a
/// sealed one.
pub fn label_datagram(payload: &[u8]) -> Payload {
    if payload.is_empty() {
        return Payload::Empty;
    }
    if let Some(header) = SealedDatagram::parse(payload) {
        return Payload::Sealed(header);
    }
    match json_type(payload) {
        Some(kind) => Payload::Messages(vec![name_with_verdict(
            kind,
            protocol::decode_datagram(payload).map(|_| ()),
        )]),
        None => Payload::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::packet::TcpFlags;

    const CLIENT: &str = "10.20.30.11:40000";
    const SERVER: &str = "10.20.30.3:12000";

    fn segment(from: &str, to: &str, seq: u32, flags: TcpFlags, payload: &[u8]) -> TcpSegment {
        TcpSegment {
            src: from.parse().unwrap(),
            dst: to.parse().unwrap(),
            seq,
            ack: 0,
            flags,
            window: 0,
            payload: payload.to_vec(),
            payload_len: payload.len(),
        }
    }

    fn data() -> TcpFlags {
        TcpFlags {
            ack: true,
            psh: true,
            ..TcpFlags::default()
        }
    }

    fn syn() -> TcpFlags {
        TcpFlags {
            syn: true,
            ..TcpFlags::default()
        }
    }

    fn messages(types: &[&str]) -> Payload {
        Payload::Messages(types.iter().map(|t| t.to_string()).collect())
    }

    #[test]
    fn lines_are_named_by_their_type_and_checked_against_the_sender() {
        let mut labeler = StreamLabeler::new();
        labeler.label(&segment(CLIENT, SERVER, 99, syn(), b""));
        let hello = b"{\"type\":\"hello\",\"version\":1,\"auth\":[\"login\",\"register\"]}\n";
        assert_eq!(
            labeler.label(&segment(SERVER, CLIENT, 500, data(), hello)),
            messages(&["hello"])
        );
        let login =
            b"{\"type\":\"login\",\"username\":\"a\",\"password\":\"pw-pw-pw-pw\",\"p2p_port\":9}\n";
        assert_eq!(
            labeler.label(&segment(CLIENT, SERVER, 100, data(), login)),
            messages(&["login"])
        );
        // A server message sent by the client is not a client message: its type is unknown there.
        let wrong_way = b"{\"type\":\"welcome\",\"username\":\"a\",\"peers\":[]}\n";
        let seq = 100 + login.len() as u32;
        assert_eq!(
            labeler.label(&segment(CLIENT, SERVER, seq, data(), wrong_way)),
            messages(&["welcome?"])
        );
    }

    #[test]
    fn a_line_split_over_segments_is_named_where_it_ends() {
        let mut labeler = StreamLabeler::new();
        labeler.label(&segment(CLIENT, SERVER, 0, syn(), b""));
        let line = b"{\"type\":\"say\",\"text\":\"hi\"}\n{\"type\":\"list\"}\n";
        let (a, b) = line.split_at(10);
        assert_eq!(
            labeler.label(&segment(CLIENT, SERVER, 1, data(), a)),
            Payload::Partial
        );
        assert_eq!(
            labeler.label(&segment(CLIENT, SERVER, 11, data(), b)),
            messages(&["say", "list"])
        );
        // The same bytes again: a retransmission, not two more messages.
        assert_eq!(
            labeler.label(&segment(CLIENT, SERVER, 11, data(), b)),
            Payload::Retransmission
        );
    }

    #[test]
    fn other_protocols_and_bad_fields_are_told_apart() {
        let mut labeler = StreamLabeler::new();
        labeler.label(&segment(CLIENT, SERVER, 0, syn(), b""));
        assert_eq!(
            labeler.label(&segment(CLIENT, SERVER, 1, data(), b"{\"type\":\"say\"}\n")),
            messages(&["say!"])
        );
        assert_eq!(
            labeler.label(&segment(CLIENT, SERVER, 16, data(), b"GET / HTTP/1.1\r\n")),
            Payload::Other
        );
    }

    #[test]
    fn every_type_the_protocol_knows_is_known_here_and_no_other() {
        use crate::protocol::{ClientMessage, ServerMessage};
        let mut labeler = StreamLabeler::new();
        labeler.label(&segment(CLIENT, SERVER, 0, syn(), b""));
        let (mut client_seq, mut server_seq) = (1u32, 1u32);
        let mut send = |from_client: bool, kind: &str| {
            let line = format!("{{\"type\":\"{kind}\"}}\n");
            let (from, to, seq) = if from_client {
                (CLIENT, SERVER, &mut client_seq)
            } else {
                (SERVER, CLIENT, &mut server_seq)
            };
            let payload = labeler.label(&segment(from, to, *seq, data(), line.as_bytes()));
            *seq += line.len() as u32;
            match payload {
                Payload::Messages(types) => types[0].clone(),
                other => panic!("{kind}: {other:?}"),
            }
        };
        for kind in ClientMessage::TYPES {
            assert!(!send(true, kind).ends_with('?'), "{kind} from a client");
        }
        for kind in ServerMessage::TYPES {
            assert!(!send(false, kind).ends_with('?'), "{kind} from the server");
        }
        assert_eq!(send(true, "teleport"), "teleport?");
        assert_eq!(send(false, "teleport"), "teleport?");
    }

    #[test]
    fn datagrams_are_recognised_with_the_library_decoder() {
        let dm = br#"{"type":"direct","from":"alice","id":1,"text":"psst"}"#;
        assert_eq!(label_datagram(dm), messages(&["direct"]));
        assert_eq!(label_datagram(b"\x01\x02"), Payload::Other);
        assert_eq!(
            label_datagram(br#"{"type":"say","text":"x"}"#),
            messages(&["say?"])
        );
    }
}
