//! UDP in the capture: every datagram's header fields, and the answers to the lab's questions about
//! UDP's header, read from the header layout (RFC 768) and from a captured datagram. A sealed
//! direct message (the default mode) is described by its clear header.

use std::net::SocketAddr;

use serde::Serialize;

use super::dns::DnsMessage;
use super::messages::{label_udp, Payload, SealedDatagram};
use super::packet::{Content, Frame};

/// Size of the UDP header: four 16-bit fields.
pub const UDP_HEADER_BYTES: usize = 8;
/// Size of an IPv4 header without options.
pub const IPV4_MIN_HEADER_BYTES: usize = 20;
/// The largest value of a 16-bit length field: IPv4's total length and UDP's length.
pub const MAX_16_BIT: usize = u16::MAX as usize;
/// The largest payload of one UDP datagram over IPv4: the IPv4 total length counts the IP header,
/// the UDP header and the payload.
pub const MAX_IPV4_PAYLOAD: usize = MAX_16_BIT - IPV4_MIN_HEADER_BYTES - UDP_HEADER_BYTES;
/// The largest payload UDP's own length field can describe (header + payload ≤ 65,535); reachable
/// over IPv6, whose payload-length field does not count its 40-byte header.
pub const MAX_UDP_LENGTH_PAYLOAD: usize = MAX_16_BIT - UDP_HEADER_BYTES;

/// One field of the UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HeaderField {
    pub name: &'static str,
    /// Byte offset in the header.
    pub offset: usize,
    pub bytes: usize,
}

/// The UDP header, field by field (RFC 768).
pub const UDP_HEADER_FIELDS: [HeaderField; 4] = [
    HeaderField {
        name: "source port",
        offset: 0,
        bytes: 2,
    },
    HeaderField {
        name: "destination port",
        offset: 2,
        bytes: 2,
    },
    HeaderField {
        name: "length",
        offset: 4,
        bytes: 2,
    },
    HeaderField {
        name: "checksum",
        offset: 6,
        bytes: 2,
    },
];

/// Where the largest captured payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PayloadSeen {
    pub packet: usize,
    pub bytes: usize,
}

/// One captured UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatagramRecord {
    pub packet: usize,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The length field: 8 + payload.
    pub length: u16,
    pub checksum: u16,
    pub checksum_valid: Option<bool>,
    pub payload_len: usize,
    /// The IP header's protocol field (17).
    pub ip_protocol: u8,
    /// The 8 header bytes in hex, as on the wire.
    pub header_hex: String,
    /// The p2pchat message it carries, if any: `direct` (clear), `sealed message` or `sealed
    /// acknowledgement`.
    pub p2pchat: Option<String>,
    /// A sealed datagram's clear header.
    pub sealed: Option<SealedDatagram>,
    /// A DNS query or response (to or from port 53).
    pub dns: Option<DnsMessage>,
}

impl DatagramRecord {
    /// Whether it is a direct message, clear or sealed (not an acknowledgement).
    pub fn is_direct_message(&self) -> bool {
        self.p2pchat.as_deref() == Some("direct")
            || self.sealed.as_ref().is_some_and(|s| s.kind == "message")
    }
}

/// The lab's UDP answers, with where each comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UdpAnswers {
    pub header_fields: [HeaderField; 4],
    pub header_bytes: usize,
    /// 65,507: 65,535 (IPv4 total length, 16 bits) − 20 (IPv4 header) − 8 (UDP header).
    pub max_payload_ipv4: usize,
    /// 65,527: 65,535 (UDP length, 16 bits) − 8 (UDP header); only IPv6 can carry it.
    pub max_payload_udp_length_field: usize,
    /// 65,535: ports are 16-bit.
    pub max_port: u16,
    /// The protocol field of the IP header of `protocol_number_packet` (17 for UDP).
    pub protocol_number: Option<u8>,
    pub protocol_number_packet: Option<usize>,
    /// The largest payload among the captured datagrams.
    pub largest_payload_seen: Option<PayloadSeen>,
    /// The first captured p2pchat direct message (clear or sealed), the lab's example datagram.
    pub direct_message: Option<DatagramRecord>,
}

/// Every UDP datagram in `frames`, in capture order.
pub fn datagrams(frames: &[Frame]) -> Vec<DatagramRecord> {
    frames
        .iter()
        .filter_map(|frame| match &frame.content {
            Content::Udp(udp) => Some(record(frame.number, udp)),
            _ => None,
        })
        .collect()
}

fn record(packet: usize, udp: &super::packet::UdpDatagram) -> DatagramRecord {
    let (p2pchat, sealed, dns) = match label_udp(udp) {
        Payload::Messages(types) => (Some(types.join("+")), None, None),
        Payload::Sealed(header) => (Some(format!("sealed {}", header.kind)), Some(header), None),
        Payload::Dns(message) => (None, None, Some(message)),
        _ => (None, None, None),
    };
    DatagramRecord {
        packet,
        src: udp.src,
        dst: udp.dst,
        length: udp.length,
        checksum: udp.checksum,
        checksum_valid: udp.checksum_valid,
        payload_len: udp.payload_len,
        ip_protocol: udp.ip_protocol,
        header_hex: hex(&udp.header),
        p2pchat,
        sealed,
        dns,
    }
}

/// The lab's answers, from the header layout and from `datagrams`.
pub fn answers(datagrams: &[DatagramRecord]) -> UdpAnswers {
    let direct_message = datagrams.iter().find(|d| d.is_direct_message()).cloned();
    // Read the protocol number from the example datagram when there is one.
    let witness = direct_message.as_ref().or(datagrams.first());
    UdpAnswers {
        header_fields: UDP_HEADER_FIELDS,
        header_bytes: UDP_HEADER_BYTES,
        max_payload_ipv4: MAX_IPV4_PAYLOAD,
        max_payload_udp_length_field: MAX_UDP_LENGTH_PAYLOAD,
        max_port: u16::MAX,
        protocol_number: witness.map(|d| d.ip_protocol),
        protocol_number_packet: witness.map(|d| d.packet),
        largest_payload_seen: datagrams
            .iter()
            .max_by_key(|d| (d.payload_len, std::cmp::Reverse(d.packet)))
            .map(|d| PayloadSeen {
                packet: d.packet,
                bytes: d.payload_len,
            }),
        direct_message,
    }
}

fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(" ")
}

fn checksum_note(valid: Option<bool>) -> &'static str {
    match valid {
        Some(true) => "correct",
        Some(false) => {
            "does not match: captured on the sending host before the network device filled it in \
             (checksum offload); the receiver sees the final sum"
        }
        None => "none, or not checkable",
    }
}

/// The datagrams and the answers, for the terminal.
pub fn render_text(datagrams: &[DatagramRecord], answers: &UdpAnswers) -> String {
    let mut out = format!("{} UDP datagram(s)\n", datagrams.len());
    if !datagrams.is_empty() {
        out.push_str(&format!(
            "{:>6}  {:<22} {:<22} {:>6} {:>8} {:>8}  {}\n",
            "packet", "source", "destination", "length", "checksum", "payload", "carries"
        ));
    }
    for d in datagrams {
        out.push_str(&format!(
            "{:>6}  {:<22} {:<22} {:>6} {:>8} {:>8}  {}\n",
            d.packet,
            d.src.to_string(),
            d.dst.to_string(),
            d.length,
            format!("0x{:04x}", d.checksum),
            d.payload_len,
            match (&d.sealed, &d.dns) {
                (Some(header), _) => header.label(),
                (None, Some(dns)) => dns.to_string(),
                (None, None) => d.p2pchat.clone().unwrap_or_else(|| "-".into()),
            }
        ));
    }
    out.push_str("\nThe UDP header (RFC 768):\n");
    for field in &answers.header_fields {
        out.push_str(&format!(
            "  bytes {}-{}  {:<17} {} bytes ({} bits)\n",
            field.offset,
            field.offset + field.bytes - 1,
            field.name,
            field.bytes,
            field.bytes * 8
        ));
    }
    out.push_str(&format!(
        "  {} fields, {} bytes of header\n",
        answers.header_fields.len(),
        answers.header_bytes
    ));
    if let Some(dm) = &answers.direct_message {
        out.push_str(&format!(
            "\nA direct message (packet {}), {} -> {}:\n  header bytes {}\n  source port {}, destination port {}, length {} (= 8 + {} payload), checksum 0x{:04x} ({})\n",
            dm.packet,
            dm.src.ip(),
            dm.dst.ip(),
            dm.header_hex,
            dm.src.port(),
            dm.dst.port(),
            dm.length,
            dm.payload_len,
            dm.checksum,
            checksum_note(dm.checksum_valid)
        ));
        if let Some(header) = &dm.sealed {
            out.push_str(&format!(
                "  sealed: version {}, kind {}, sender's key id {}, counter {}, then {} bytes of ciphertext and tag;
  \
                 the text, the sender's name and the message id are inside the ciphertext\n",
                header.version, header.kind, header.key_id, header.counter, header.sealed_bytes
            ));
        }
    }
    out.push_str(&format!(
        "\nLargest payload over IPv4: {} bytes = 65,535 (IPv4 total length, 16 bits) - {} (IPv4 header) - {} (UDP header).\n\
         UDP's own length field would allow {} = 65,535 - {} (it counts only the UDP header and payload), but over IPv4 the\n\
         IP header's 16-bit total length is the tighter limit; only IPv6, whose payload length does not count its own\n\
         header, can carry {} bytes of UDP payload (more with jumbograms).\n",
        answers.max_payload_ipv4,
        IPV4_MIN_HEADER_BYTES,
        UDP_HEADER_BYTES,
        answers.max_payload_udp_length_field,
        UDP_HEADER_BYTES,
        answers.max_payload_udp_length_field
    ));
    out.push_str(&format!(
        "Largest port: {} (16-bit field).\n",
        answers.max_port
    ));
    match (answers.protocol_number, answers.protocol_number_packet) {
        (Some(number), Some(packet)) => out.push_str(&format!(
            "UDP's protocol number: {number}, read from the protocol field of packet {packet}'s IP header.\n"
        )),
        _ => out.push_str(
            "UDP's protocol number: 17 (IANA); no datagram in this capture to read it from.\n",
        ),
    }
    if let Some(PayloadSeen {
        packet,
        bytes: size,
    }) = answers.largest_payload_seen
    {
        out.push_str(&format!(
            "Largest payload in this capture: {size} bytes (packet {packet}).\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MAX_DATAGRAM_BYTES;
    use crate::trace::packet::UdpDatagram;
    use std::time::Duration;

    #[test]
    fn the_limits_are_the_textbook_ones_and_the_protocols() {
        assert_eq!(MAX_IPV4_PAYLOAD, 65_507);
        assert_eq!(MAX_UDP_LENGTH_PAYLOAD, 65_527);
        assert_eq!(MAX_IPV4_PAYLOAD, MAX_DATAGRAM_BYTES);
        let total: usize = UDP_HEADER_FIELDS.iter().map(|f| f.bytes).sum();
        assert_eq!(total, UDP_HEADER_BYTES);
        for pair in UDP_HEADER_FIELDS.windows(2) {
            assert_eq!(pair[0].offset + pair[0].bytes, pair[1].offset);
        }
    }

    fn udp(number: usize, payload: &[u8], protocol: u8) -> Frame {
        Frame {
            number,
            timestamp: Duration::ZERO,
            content: Content::Udp(UdpDatagram {
                src: "10.20.30.11:40001".parse().unwrap(),
                dst: "10.20.30.12:40002".parse().unwrap(),
                length: 8 + payload.len() as u16,
                checksum: 0xbeef,
                checksum_valid: Some(false),
                ip_protocol: protocol,
                header: [
                    0x9c,
                    0x41,
                    0x9c,
                    0x42,
                    0,
                    8 + payload.len() as u8,
                    0xbe,
                    0xef,
                ],
                payload: payload.to_vec(),
                payload_len: payload.len(),
            }),
        }
    }

    #[test]
    fn the_direct_message_is_the_example_and_gives_the_protocol_number() {
        let dm = br#"{"type":"direct","from":"alice","id":1,"text":"hi"}"#;
        let frames = [
            udp(3, b"not json at all, longer than the dm..........", 17),
            udp(7, dm, 17),
        ];
        let records = datagrams(&frames);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].p2pchat, None);
        assert_eq!(records[1].p2pchat.as_deref(), Some("direct"));
        assert_eq!(records[1].header_hex.split(' ').count(), 8);
        let a = answers(&records);
        assert_eq!(a.direct_message.as_ref().map(|d| d.packet), Some(7));
        assert_eq!(
            (a.protocol_number, a.protocol_number_packet),
            (Some(17), Some(7))
        );
        assert_eq!(
            a.largest_payload_seen,
            Some(PayloadSeen {
                packet: 7,
                bytes: dm.len()
            })
        );
        let text = render_text(&records, &a);
        assert!(text.contains("65507") && text.contains("65527"), "{text}");
    }

    #[test]
    fn no_datagrams_still_answers_from_the_layout() {
        let a = answers(&[]);
        assert_eq!(a.protocol_number, None);
        assert_eq!(a.max_port, 65_535);
        assert!(render_text(&[], &a).contains("no datagram in this capture"));
    }
}
