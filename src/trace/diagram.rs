//! A sequence diagram of every packet between the hosts of one capture, or of several captures
//! of the same minutes merged into one timeline (the server's interface and a client's: each
//! packet once, however many captures saw it — [`super::merge`]). TCP handshakes, data segments
//! labelled with the p2pchat messages (or, in the default mode, the TLS records) they carry, FINs
//! and RSTs, UDP direct messages (clear, or sealed by their header), DNS queries and answers, ARP;
//! each arrow with its time since the first packet. Rendered as Mermaid (`sequenceDiagram`, for
//! docs), as plain text with one column per host (for the terminal), or as SVG ([`super::svg`],
//! for the report's PDF).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use super::dns::DnsMessage;
use super::merge::{self, Seen};
use super::messages::{label_udp, Payload, SealedDatagram, StreamLabeler};
use super::packet::{Content, Frame};
use super::tls::TlsRecord;

/// Width of one host's column in the text form.
const TEXT_COLUMN: usize = 18;

/// A host in the diagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Participant {
    pub ip: IpAddr,
    /// The name given with `--name`, if any.
    pub name: Option<String>,
}

impl Participant {
    fn title(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self.ip.to_string(),
        }
    }
}

/// One arrow: one packet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The arrow's number in the diagram: the packet's frame number when there is one capture,
    /// its place in the merged timeline when there are several.
    pub number: usize,
    /// The packet's frame number in the first capture that saw it (`seen[0]`).
    pub packet: usize,
    /// Every capture that saw this packet (index into the diagram's captures) and its frame
    /// number there, earliest first.
    pub seen: Vec<Seen>,
    /// Seconds since the first packet of the capture(s).
    pub time: f64,
    /// Index into `participants`.
    pub from: usize,
    pub to: usize,
    /// `TCP`, `UDP`, `ARP`, or the IP protocol number.
    pub protocol: String,
    /// What the arrow says: flags, numbers, the p2pchat messages.
    pub label: String,
    /// The p2pchat message types the packet carries (may be empty).
    pub messages: Vec<String>,
    /// The TLS records this segment finishes (may be empty).
    pub tls: Vec<TlsRecord>,
    /// The header of the sealed datagram this packet is, if it is one.
    pub sealed: Option<SealedDatagram>,
    /// The DNS query or response this packet is, if it is one.
    pub dns: Option<DnsMessage>,
}

/// The diagram, before rendering.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagram {
    pub participants: Vec<Participant>,
    pub steps: Vec<Step>,
    /// Packets left out: not from one host to another (IP multicast or broadcast, from the
    /// unspecified address: IGMP reports, mDNS, DHCP), neither IP nor ARP, or undecodable.
    pub omitted: usize,
}

impl Diagram {
    /// Builds the diagram of one capture's `frames`; `names` gives hosts readable names. Arrows
    /// are numbered by frame number.
    pub fn build(frames: &[Frame], names: &HashMap<IpAddr, String>) -> Diagram {
        Diagram::merge(&[frames], names)
    }

    /// Builds one diagram of several captures of the same minutes, taken on one machine (so on
    /// one clock): every packet once, in time order, numbered from 1. A packet two captures saw
    /// (the same segment leaving client1 and reaching the server) is one arrow whose `seen` names
    /// both. With one capture this is [`Diagram::build`], numbered by frame.
    pub fn merge(captures: &[&[Frame]], names: &HashMap<IpAddr, String>) -> Diagram {
        let mut diagram = Diagram {
            participants: Vec::new(),
            steps: Vec::new(),
            omitted: 0,
        };
        let start = captures
            .iter()
            .filter_map(|frames| frames.first().map(|f| f.timestamp))
            .min()
            .unwrap_or_default();
        // Each capture's arrows, labelled with that capture's own view of each TCP stream.
        let mut arrows = Vec::new();
        let mut left_out = Vec::new();
        for (capture, frames) in captures.iter().enumerate() {
            let mut labeler = StreamLabeler::new();
            for frame in frames.iter() {
                match describe(frame, &mut labeler) {
                    Some(described) => arrows.push((capture, frame, described)),
                    None => left_out.push((capture, frame)),
                }
            }
        }
        // Stable: packets with the same timestamp keep their capture order.
        arrows.sort_by_key(|(capture, frame, _)| (frame.timestamp, *capture));
        left_out.sort_by_key(|(capture, frame)| (frame.timestamp, *capture));
        let mut omitted = merge::Matcher::new();
        for (capture, frame) in left_out {
            if omitted.same_as(frame, capture).is_none() {
                omitted.add(frame, capture, diagram.omitted);
                diagram.omitted += 1;
            }
        }
        let mut matcher = merge::Matcher::new();
        for (capture, frame, (from, to, protocol, label, payload)) in arrows {
            let seen = Seen {
                capture,
                packet: frame.number,
            };
            if let Some(step) = matcher.same_as(frame, capture) {
                diagram.steps[step].seen.push(seen);
                continue;
            }
            matcher.add(frame, capture, diagram.steps.len());
            let from = diagram.participant(from, names);
            let to = diagram.participant(to, names);
            let (messages, tls, sealed, dns) = match payload {
                Payload::Messages(types) | Payload::File(types) => (types, Vec::new(), None, None),
                Payload::Tls(records) => (Vec::new(), records, None, None),
                Payload::Sealed(header) => (Vec::new(), Vec::new(), Some(header), None),
                Payload::Dns(message) => (Vec::new(), Vec::new(), None, Some(message)),
                _ => (Vec::new(), Vec::new(), None, None),
            };
            let number = if captures.len() == 1 {
                frame.number
            } else {
                diagram.steps.len() + 1
            };
            diagram.steps.push(Step {
                number,
                packet: frame.number,
                seen: vec![seen],
                time: frame.timestamp.saturating_sub(start).as_secs_f64(),
                from,
                to,
                protocol,
                label,
                messages,
                tls,
                sealed,
                dns,
            });
        }
        diagram
    }

    pub(super) fn participant_title(&self, i: usize) -> String {
        self.participants[i].title()
    }

    fn participant(&mut self, ip: IpAddr, names: &HashMap<IpAddr, String>) -> usize {
        if let Some(i) = self.participants.iter().position(|p| p.ip == ip) {
            return i;
        }
        self.participants.push(Participant {
            ip,
            name: names.get(&ip).cloned(),
        });
        self.participants.len() - 1
    }

    /// The diagram as Mermaid source (`sequenceDiagram`), one arrow per packet.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("sequenceDiagram\n");
        for (i, p) in self.participants.iter().enumerate() {
            let title = match &p.name {
                Some(name) => format!("{name} ({})", p.ip),
                None => p.ip.to_string(),
            };
            out.push_str(&format!(
                "    participant h{i} as {}\n",
                mermaid_text(&title)
            ));
        }
        for step in &self.steps {
            // Replies and data go with a solid arrow; everything is one packet, so one style.
            out.push_str(&format!(
                "    h{}->>h{}: {}. +{:.3} s {}\n",
                step.from,
                step.to,
                step.number,
                step.time,
                mermaid_text(&format!("{} {}", step.protocol, step.label))
            ));
        }
        if self.omitted > 0 {
            out.push_str(&format!(
                "    Note over h0: {} packet(s) not between two hosts not shown\n",
                self.omitted
            ));
        }
        out
    }

    /// The diagram as text: a column per host, an arrow per packet, its label on the right.
    pub fn to_text(&self) -> String {
        let width = self.participants.len().max(1) * TEXT_COLUMN;
        let mut out = String::new();
        let header = |text: &dyn Fn(&Participant) -> String| {
            let mut line = " ".repeat(12);
            for p in &self.participants {
                line.push_str(&centered(&text(p), TEXT_COLUMN));
            }
            line.trim_end().to_string() + "\n"
        };
        out.push_str(&header(&|p| p.title()));
        if self.participants.iter().any(|p| p.name.is_some()) {
            out.push_str(&header(&|p| p.ip.to_string()));
        }
        out.push_str(&format!("{:>5} {:>6}\n", "#", "time"));
        for step in &self.steps {
            let mut lane: Vec<char> = " ".repeat(width).chars().collect();
            for i in 0..self.participants.len() {
                lane[column_of(i)] = '|';
            }
            let (a, b) = (column_of(step.from), column_of(step.to));
            if a == b {
                lane[a] = 'o';
            } else {
                let (lo, hi) = (a.min(b), a.max(b));
                for c in lane.iter_mut().take(hi).skip(lo + 1) {
                    *c = '-';
                }
                if a < b {
                    lane[hi - 1] = '>';
                } else {
                    lane[lo + 1] = '<';
                }
            }
            let lane: String = lane.into_iter().collect();
            out.push_str(&format!(
                "{:>5} {:>6.3}{}  {} {}\n",
                step.number, step.time, lane, step.protocol, step.label
            ));
        }
        if self.omitted > 0 {
            out.push_str(&format!(
                "({} packet(s) not between two hosts not shown: multicast, broadcast, non-IP)\n",
                self.omitted
            ));
        }
        out
    }
}

/// Where host `i`'s lifeline is drawn in the text form.
fn column_of(i: usize) -> usize {
    i * TEXT_COLUMN + TEXT_COLUMN / 2
}

fn centered(text: &str, width: usize) -> String {
    let len = text.chars().count();
    if len >= width {
        return format!("{} ", text.chars().take(width - 1).collect::<String>());
    }
    let left = (width - len) / 2;
    format!(
        "{}{}{}",
        " ".repeat(left),
        text,
        " ".repeat(width - len - left)
    )
}

/// Mermaid treats `;` and `#` as syntax in message text; keep them out.
fn mermaid_text(text: &str) -> String {
    text.replace(';', ",").replace('#', "no.")
}

type Described = (IpAddr, IpAddr, String, String, Payload);

/// Whether an IP packet goes from one host to another: not to a multicast or the limited
/// broadcast address, not from the unspecified address.
fn host_to_host(src: IpAddr, dst: IpAddr) -> bool {
    let broadcast = matches!(dst, IpAddr::V4(v4) if v4.is_broadcast());
    !src.is_unspecified() && !dst.is_multicast() && !broadcast
}

/// The arrow for one packet: from, to, protocol, label, p2pchat messages; `None` for a packet
/// that is not between two hosts.
fn describe(frame: &Frame, labeler: &mut StreamLabeler) -> Option<Described> {
    let ends = match &frame.content {
        Content::Tcp(segment) => Some((segment.src.ip(), segment.dst.ip())),
        Content::Udp(datagram) => Some((datagram.src.ip(), datagram.dst.ip())),
        Content::OtherIp { src, dst, .. } => Some((*src, *dst)),
        _ => None,
    };
    if ends.is_some_and(|(src, dst)| !host_to_host(src, dst)) {
        return None;
    }
    match &frame.content {
        Content::Tcp(segment) => {
            let payload = labeler.label(segment);
            let mut label = format!(
                "{}→{} [{}] seq={}",
                segment.src.port(),
                segment.dst.port(),
                segment.flags,
                segment.seq
            );
            if segment.flags.ack {
                label.push_str(&format!(" ack={}", segment.ack));
            }
            if segment.payload_len > 0 {
                label.push_str(&format!(" len={}", segment.payload_len));
            }
            if let Some(what) = payload.label() {
                label.push(' ');
                label.push_str(&what);
            }
            Some((
                segment.src.ip(),
                segment.dst.ip(),
                "TCP".into(),
                label,
                payload,
            ))
        }
        Content::Udp(datagram) => {
            let payload = label_udp(datagram);
            let mut label = format!(
                "{}→{} len={}",
                datagram.src.port(),
                datagram.dst.port(),
                datagram.payload_len
            );
            if let Some(what) = payload.label() {
                label.push(' ');
                label.push_str(&what);
            }
            Some((
                datagram.src.ip(),
                datagram.dst.ip(),
                "UDP".into(),
                label,
                payload,
            ))
        }
        Content::Arp(arp) => {
            let sender = IpAddr::V4(arp.sender_ip?);
            let target = IpAddr::V4(arp.target_ip?);
            let label = if arp.is_request() {
                format!("who-has {target}? tell {sender} (broadcast)")
            } else {
                format!("{sender} is-at {}", arp.sender_mac)
            };
            Some((sender, target, "ARP".into(), label, Payload::Empty))
        }
        Content::OtherIp {
            src,
            dst,
            protocol,
            fragment,
        } => Some((
            *src,
            *dst,
            format!("IP proto {protocol}"),
            if *fragment {
                "fragment".into()
            } else {
                String::new()
            },
            Payload::Empty,
        )),
        Content::OtherLink { .. } | Content::Undecodable { .. } => None,
    }
}

/// Parses `IP=NAME` (the `--name` flag).
///
/// # Errors
/// A value without `=`, an address that does not parse, or an empty name.
pub fn parse_name(text: &str) -> Result<(IpAddr, String), String> {
    let (ip, name) = text
        .split_once('=')
        .ok_or_else(|| format!("expected IP=NAME, got {text:?}"))?;
    let ip: IpAddr = ip
        .trim()
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address (expected IP=NAME)"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("no name after '=' in {text:?}"));
    }
    Ok((ip, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::packet::{TcpFlags, TcpSegment, UdpDatagram};
    use std::time::Duration;

    fn tcp(n: usize, from: &str, to: &str, seq: u32, flags: TcpFlags, payload: &[u8]) -> Frame {
        Frame {
            number: n,
            timestamp: Duration::from_millis(n as u64),
            content: Content::Tcp(TcpSegment {
                src: from.parse().unwrap(),
                dst: to.parse().unwrap(),
                seq,
                ack: 1,
                flags,
                window: 0,
                payload: payload.to_vec(),
                payload_len: payload.len(),
            }),
        }
    }

    fn frames() -> Vec<Frame> {
        let syn = TcpFlags {
            syn: true,
            ..TcpFlags::default()
        };
        let data = TcpFlags {
            psh: true,
            ack: true,
            ..TcpFlags::default()
        };
        let dm = br#"{"type":"direct","from":"alice","id":1,"text":"psst"}"#;
        vec![
            tcp(1, "10.20.30.11:40000", "10.20.30.3:12000", 7, syn, b""),
            tcp(
                2,
                "10.20.30.3:12000",
                "10.20.30.11:40000",
                70,
                data,
                b"{\"type\":\"hello\",\"version\":1,\"auth\":[\"login\"]}\n",
            ),
            Frame {
                number: 3,
                timestamp: Duration::from_millis(3),
                content: Content::Udp(UdpDatagram {
                    src: "10.20.30.11:5000".parse().unwrap(),
                    dst: "10.20.30.12:5001".parse().unwrap(),
                    length: 8 + dm.len() as u16,
                    checksum: 0,
                    checksum_valid: None,
                    ip_protocol: 17,
                    header: [0; 8],
                    payload: dm.to_vec(),
                    payload_len: dm.len(),
                }),
            },
            Frame {
                number: 4,
                timestamp: Duration::from_millis(4),
                content: Content::OtherLink { ether_type: 0x88cc },
            },
            Frame {
                number: 5,
                timestamp: Duration::from_millis(5),
                content: Content::OtherIp {
                    src: "0.0.0.0".parse().unwrap(),
                    dst: "224.0.0.22".parse().unwrap(),
                    protocol: 2,
                    fragment: false,
                },
            },
        ]
    }

    #[test]
    fn every_packet_is_an_arrow_between_named_hosts_in_capture_order() {
        let names = HashMap::from([("10.20.30.3".parse().unwrap(), "webserver".to_string())]);
        let diagram = Diagram::build(&frames(), &names);
        assert_eq!(diagram.participants.len(), 3);
        assert_eq!(diagram.participants[1].name.as_deref(), Some("webserver"));
        assert_eq!(diagram.steps.len(), 3);
        assert_eq!(
            diagram.omitted, 2,
            "LLDP and an IGMP report are not between two hosts"
        );
        assert_eq!(diagram.steps[1].messages, vec!["hello".to_string()]);
        assert_eq!(diagram.steps[2].messages, vec!["direct".to_string()]);
        let mermaid = diagram.to_mermaid();
        assert!(mermaid.starts_with("sequenceDiagram\n"));
        assert!(mermaid.contains("participant h1 as webserver (10.20.30.3)"));
        assert!(
            mermaid.contains("h0->>h1: 1. +0.000 s TCP 40000→12000 [SYN] seq=7\n"),
            "{mermaid}"
        );
        assert!(mermaid.contains("h1->>h0: 2. +0.001 s TCP") && mermaid.contains("hello"));
        assert!(mermaid.contains("h0->>h2: 3. +0.002 s UDP 5000→5001 len="));
        let text = diagram.to_text();
        assert!(text.contains("webserver"), "{text}");
        let arrows: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("TCP") || l.contains("UDP"))
            .collect();
        assert_eq!(arrows.len(), 3, "{text}");
        assert!(
            arrows[0].contains("->|") || arrows[0].contains('>'),
            "{text}"
        );
        assert!(arrows[1].contains("|<-"), "{text}");
    }

    #[test]
    fn mermaid_text_never_carries_its_own_syntax() {
        assert_eq!(mermaid_text("a;b #1"), "a,b no.1");
    }

    #[test]
    fn names_are_parsed_and_checked() {
        assert_eq!(
            parse_name("10.20.30.3=webserver"),
            Ok(("10.20.30.3".parse().unwrap(), "webserver".to_string()))
        );
        assert!(parse_name("webserver").is_err());
        assert!(parse_name("chat.lab=webserver").is_err());
        assert!(parse_name("10.20.30.3=").is_err());
    }
}
