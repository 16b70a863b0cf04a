//! Dissecting one captured packet into what the analyses need: its TCP segment, UDP datagram or
//! ARP message, with addresses, ports, sequence numbers, flags and payload.
//!
//! Headers are parsed by `etherparse`. The one header it does not know, the 20-byte Linux cooked
//! v2 header (tcpdump's `-i any` on libpcap ≥ 1.10), is stepped over here by its documented layout
//! (protocol type in the first two bytes) and the rest handed to `etherparse` as an EtherType payload.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use etherparse::{ArpOperation, EtherType, NetSlice, SlicedPacket, TransportSlice, UdpHeader};
use serde::Serialize;

use super::capture::{LinkType, RawPacket};

/// Length of the Linux cooked v2 header (https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html).
const SLL2_HEADER_LEN: usize = 20;

/// The IP protocol number of UDP (RFC 768), as the IANA registry assigns it.
pub const IP_PROTOCOL_UDP: u8 = 17;

/// One packet of a capture, dissected.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    /// 1-based, Wireshark's `frame.number`.
    pub number: usize,
    /// Since the Unix epoch.
    pub timestamp: Duration,
    pub content: Content,
}

/// What a packet carries, as far as the analyses care.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    Tcp(TcpSegment),
    Udp(UdpDatagram),
    Arp(ArpMessage),
    /// An IP packet that is neither TCP nor UDP (ICMP, IGMP, …) or an IP fragment.
    OtherIp {
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        fragment: bool,
    },
    /// A frame without IP or ARP (LLDP, spanning tree, …), by its EtherType.
    OtherLink {
        ether_type: u16,
    },
    /// Headers that do not parse (cut by the snapshot length, corrupt).
    Undecodable {
        reason: String,
    },
}

/// A TCP segment with its absolute sequence and acknowledgement numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpSegment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    /// Meaningful only when `flags.ack`.
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    #[serde(skip)]
    pub payload: Vec<u8>,
    pub payload_len: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

impl fmt::Display for TcpFlags {
    /// The set flags in the order tcpdump and Wireshark print them: `SYN`, `SYN,ACK`, `PSH,ACK`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.fin, "FIN"),
            (self.syn, "SYN"),
            (self.rst, "RST"),
            (self.psh, "PSH"),
            (self.ack, "ACK"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        if set.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&set.join(","))
        }
    }
}

/// A UDP datagram: its header fields as captured, and its IP header's protocol field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UdpDatagram {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The UDP length field: header (8 bytes) plus payload.
    pub length: u16,
    /// The checksum field as captured (0 = none, IPv4 only).
    pub checksum: u16,
    /// Whether the checksum matches the pseudo-header, header and payload; `None` when there is
    /// none, or the payload was cut by the snapshot length. A datagram captured on the sending
    /// host often fails: the kernel leaves the sum to the network card (checksum offload), and the
    /// capture sees the packet before it is filled in.
    pub checksum_valid: Option<bool>,
    /// The protocol field of the IPv4 header (the next-header field for IPv6).
    pub ip_protocol: u8,
    /// The 8 header bytes, as on the wire.
    pub header: [u8; 8],
    #[serde(skip)]
    pub payload: Vec<u8>,
    pub payload_len: usize,
}

/// An ARP request or reply for IPv4 over Ethernet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArpMessage {
    /// 1 = request ("who has"), 2 = reply ("is at").
    pub operation: u16,
    pub sender_ip: Option<Ipv4Addr>,
    pub sender_mac: String,
    pub target_ip: Option<Ipv4Addr>,
}

impl Frame {
    /// Dissects a captured packet. Never fails: what does not parse becomes
    /// [`Content::Undecodable`] with the reason.
    pub fn dissect(raw: &RawPacket) -> Frame {
        Frame {
            number: raw.number,
            timestamp: raw.timestamp,
            content: dissect(raw.link, &raw.data),
        }
    }
}

fn dissect(link: LinkType, data: &[u8]) -> Content {
    let sliced = match link {
        LinkType::Ethernet => SlicedPacket::from_ethernet(data),
        LinkType::LinuxSll => SlicedPacket::from_linux_sll(data),
        LinkType::LinuxSll2 => {
            let (Some(protocol), Some(rest)) = (data.get(..2), data.get(SLL2_HEADER_LEN..)) else {
                return Content::Undecodable {
                    reason: format!(
                        "{} bytes: shorter than a Linux cooked v2 header",
                        data.len()
                    ),
                };
            };
            let ether_type = EtherType(u16::from_be_bytes([protocol[0], protocol[1]]));
            SlicedPacket::from_ether_type(ether_type, rest)
        }
        LinkType::RawIp => SlicedPacket::from_ip(data),
    };
    let sliced = match sliced {
        Ok(sliced) => sliced,
        Err(e) => {
            return Content::Undecodable {
                reason: e.to_string(),
            }
        }
    };
    match &sliced.net {
        Some(NetSlice::Arp(arp)) => Content::Arp(ArpMessage {
            operation: arp.operation().0,
            sender_ip: ipv4_of(arp.sender_protocol_addr()),
            sender_mac: mac_of(arp.sender_hw_addr()),
            target_ip: ipv4_of(arp.target_protocol_addr()),
        }),
        Some(NetSlice::Ipv4(ip)) => {
            let header = ip.header();
            ip_content(
                IpAddr::V4(header.source_addr()),
                IpAddr::V4(header.destination_addr()),
                header.protocol().0,
                ip.is_payload_fragmented(),
                &sliced.transport,
                |h, payload| h.calc_checksum_ipv4(&header.to_header(), payload).ok(),
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let header = ip.header();
            ip_content(
                IpAddr::V6(header.source_addr()),
                IpAddr::V6(header.destination_addr()),
                ip.payload().ip_number.0,
                ip.is_payload_fragmented(),
                &sliced.transport,
                |h, payload| h.calc_checksum_ipv6(&header.to_header(), payload).ok(),
            )
        }
        None => Content::OtherLink {
            ether_type: link_ether_type(&sliced).unwrap_or(0),
        },
    }
}

fn link_ether_type(sliced: &SlicedPacket<'_>) -> Option<u16> {
    use etherparse::LinkSlice;
    match sliced.link.as_ref()? {
        LinkSlice::Ethernet2(eth) => Some(eth.ether_type().0),
        LinkSlice::EtherPayload(p) => Some(p.ether_type.0),
        LinkSlice::LinuxSll(sll) => Some(sll.protocol_type().into()),
        LinkSlice::LinuxSllPayload(p) => Some(p.protocol_type.into()),
    }
}

fn tcp_segment(src: IpAddr, dst: IpAddr, tcp: &etherparse::TcpSlice<'_>) -> TcpSegment {
    TcpSegment {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: TcpFlags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            psh: tcp.psh(),
        },
        window: tcp.window_size(),
        payload: tcp.payload().to_vec(),
        payload_len: tcp.payload().len(),
    }
}

/// Verifies a UDP checksum with the IP-version-specific `compute`.
/// What an IP packet carries: a TCP segment, a UDP datagram (its checksum checked with
/// `udp_checksum`, which knows the IP version's pseudo-header), or something else.
fn ip_content(
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    fragment: bool,
    transport: &Option<TransportSlice<'_>>,
    udp_checksum: impl Fn(&UdpHeader, &[u8]) -> Option<u16>,
) -> Content {
    match transport {
        Some(TransportSlice::Tcp(tcp)) => Content::Tcp(tcp_segment(src, dst, tcp)),
        Some(TransportSlice::Udp(udp)) => {
            let valid = checksum_check(udp, udp_checksum);
            Content::Udp(udp_datagram(src, dst, protocol, udp, valid))
        }
        _ => Content::OtherIp {
            src,
            dst,
            protocol,
            fragment,
        },
    }
}

fn checksum_check(
    udp: &etherparse::UdpSlice<'_>,
    compute: impl Fn(&UdpHeader, &[u8]) -> Option<u16>,
) -> Option<bool> {
    let header = udp.to_header();
    let complete = usize::from(header.length) == udp.slice().len();
    if header.checksum == 0 || !complete {
        return None;
    }
    compute(&header, udp.payload()).map(|sum| sum == header.checksum)
}

fn udp_datagram(
    src: IpAddr,
    dst: IpAddr,
    ip_protocol: u8,
    udp: &etherparse::UdpSlice<'_>,
    checksum_valid: Option<bool>,
) -> UdpDatagram {
    let mut header = [0u8; 8];
    header.copy_from_slice(udp.header_slice());
    UdpDatagram {
        src: SocketAddr::new(src, udp.source_port()),
        dst: SocketAddr::new(dst, udp.destination_port()),
        length: udp.length(),
        checksum: udp.checksum(),
        checksum_valid,
        ip_protocol,
        header,
        payload: udp.payload().to_vec(),
        payload_len: udp.payload().len(),
    }
}

fn ipv4_of(bytes: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(bytes).ok().map(Ipv4Addr::from)
}

fn mac_of(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

impl ArpMessage {
    pub fn is_request(&self) -> bool {
        self.operation == ArpOperation::REQUEST.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 20, 30, 11], [10, 20, 30, 12], 64)
            .udp(40001, 40002);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    fn raw(link: LinkType, data: Vec<u8>) -> RawPacket {
        RawPacket {
            number: 1,
            timestamp: Duration::ZERO,
            original_len: data.len() as u32,
            link,
            data,
        }
    }

    #[test]
    fn an_ethernet_udp_datagram_gives_its_header_fields() {
        let frame = Frame::dissect(&raw(LinkType::Ethernet, udp_frame(b"hello")));
        let Content::Udp(udp) = frame.content else {
            panic!("not UDP: {:?}", frame.content)
        };
        assert_eq!(udp.src, "10.20.30.11:40001".parse().unwrap());
        assert_eq!(udp.dst, "10.20.30.12:40002".parse().unwrap());
        assert_eq!(udp.length, 8 + 5);
        assert_eq!(udp.payload, b"hello");
        assert_eq!(udp.ip_protocol, IP_PROTOCOL_UDP);
        assert_eq!(udp.checksum_valid, Some(true));
        assert_eq!(&udp.header[..2], &40001u16.to_be_bytes());
    }

    #[test]
    fn a_corrupted_checksum_is_reported_as_invalid() {
        let mut data = udp_frame(b"hello");
        let last = data.len() - 1;
        data[last] ^= 0xff;
        let Content::Udp(udp) = Frame::dissect(&raw(LinkType::Ethernet, data)).content else {
            panic!("not UDP")
        };
        assert_eq!(udp.checksum_valid, Some(false));
    }

    #[test]
    fn a_linux_cooked_v2_frame_is_read_past_its_header() {
        let ethernet = udp_frame(b"x");
        let mut sll2 = vec![0x08, 0x00, 0, 0]; // protocol IPv4, reserved
        sll2.extend_from_slice(&[0, 0, 0, 2]); // interface index
        sll2.extend_from_slice(&[0, 1, 4, 6]); // ARPHRD_ETHER, outgoing, address length 6
        sll2.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        sll2.extend_from_slice(&ethernet[14..]);
        let frame = Frame::dissect(&raw(LinkType::LinuxSll2, sll2));
        assert!(matches!(frame.content, Content::Udp(ref u) if u.payload == b"x"));
        let short = Frame::dissect(&raw(LinkType::LinuxSll2, vec![8, 0, 1]));
        assert!(matches!(short.content, Content::Undecodable { .. }));
    }

    #[test]
    fn a_linux_cooked_v1_frame_is_read_by_etherparse() {
        let ethernet = udp_frame(b"yz");
        let mut sll = vec![0, 4, 0, 1, 0, 6]; // sent by us, ARPHRD_ETHER, address length 6
        sll.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        sll.extend_from_slice(&[0x08, 0x00]); // protocol IPv4
        sll.extend_from_slice(&ethernet[14..]);
        let frame = Frame::dissect(&raw(LinkType::LinuxSll, sll));
        assert!(matches!(frame.content, Content::Udp(ref u) if u.payload == b"yz"));
    }

    #[test]
    fn tcp_flags_print_like_wireshark() {
        let syn_ack = TcpFlags {
            syn: true,
            ack: true,
            ..TcpFlags::default()
        };
        assert_eq!(syn_ack.to_string(), "SYN,ACK");
        let fin = TcpFlags {
            fin: true,
            psh: true,
            ack: true,
            ..TcpFlags::default()
        };
        assert_eq!(fin.to_string(), "FIN,PSH,ACK");
    }

    #[test]
    fn garbage_after_a_valid_header_is_undecodable_not_a_panic() {
        for len in 0..60 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            for link in [
                LinkType::Ethernet,
                LinkType::LinuxSll,
                LinkType::LinuxSll2,
                LinkType::RawIp,
            ] {
                let _ = Frame::dissect(&raw(link, data.clone()));
            }
        }
    }
}
