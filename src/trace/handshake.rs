//! TCP connections as the capture shows them: each three-way handshake with its absolute sequence
//! and acknowledgement numbers, and how the connection ended.
//!
//! A connection is found by its SYN (SYN set, ACK clear); segments of connections whose SYN is not
//! in the capture are ignored. A SYN on an address pair whose previous connection is over starts a
//! new connection (port reuse); the same SYN again is counted as a retransmission.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

use super::packet::{Content, Frame, TcpSegment};

/// One TCP connection opened in the capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Handshake {
    /// The side that sent the SYN.
    pub client: SocketAddr,
    /// The side that answered it.
    pub server: SocketAddr,
    /// Packet number of the (first) SYN.
    pub syn_packet: usize,
    /// The client's initial sequence number, absolute (as on the wire).
    pub syn_seq: u32,
    /// SYNs with the same sequence number sent again before the answer.
    pub syn_retransmissions: usize,
    /// Packet number of the SYN-ACK, if captured.
    pub syn_ack_packet: Option<usize>,
    /// The server's initial sequence number.
    pub syn_ack_seq: Option<u32>,
    /// The SYN-ACK's acknowledgement field.
    pub syn_ack_ack: Option<u32>,
    /// Whether the SYN-ACK acknowledges exactly the SYN: ack = SYN seq + 1 (mod 2^32), the SYN
    /// counting as one byte of sequence space.
    pub ack_is_syn_seq_plus_one: Option<bool>,
    /// Packet number of the client's ACK that completes the handshake, if captured.
    pub ack_packet: Option<usize>,
    /// How the connection ended.
    pub fate: Fate,
}

/// Which end of a connection did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Client,
    Server,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
        })
    }
}

/// How a connection ended, as far as the capture shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Fate {
    /// Both sides sent FIN: an orderly close. `by` sent the first FIN.
    Closed { by: Side, packet: usize },
    /// Only one side sent FIN before the capture ended.
    HalfClosed { by: Side, packet: usize },
    /// A RST ended it (perhaps after FINs).
    Reset { by: Side, packet: usize },
    /// Still open when the capture ended.
    Open,
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fate::Closed { by, packet } => {
                write!(f, "closed (FIN from {by} first, packet {packet})")
            }
            Fate::HalfClosed { by, packet } => {
                write!(f, "half-closed (FIN from {by} only, packet {packet})")
            }
            Fate::Reset { by, packet } => write!(f, "reset (RST from {by}, packet {packet})"),
            Fate::Open => f.write_str("open at the end of the capture"),
        }
    }
}

/// A connection being followed.
struct Tracked {
    index: usize,
    first_fin: Option<(Side, usize)>,
    fin_client: bool,
    fin_server: bool,
    over: bool,
}

/// Every connection whose SYN is in `frames`, in the order of their SYNs.
pub fn handshakes(frames: &[Frame]) -> Vec<Handshake> {
    let mut found: Vec<Handshake> = Vec::new();
    // Keyed by (client, server).
    let mut live: HashMap<(SocketAddr, SocketAddr), Tracked> = HashMap::new();
    for frame in frames {
        let Content::Tcp(segment) = &frame.content else {
            continue;
        };
        if segment.flags.syn && !segment.flags.ack {
            on_syn(&mut found, &mut live, frame.number, segment);
            continue;
        }
        let (key, side) = if live.contains_key(&(segment.src, segment.dst)) {
            ((segment.src, segment.dst), Side::Client)
        } else if live.contains_key(&(segment.dst, segment.src)) {
            ((segment.dst, segment.src), Side::Server)
        } else {
            continue;
        };
        let Some(tracked) = live.get_mut(&key) else {
            continue;
        };
        let handshake = &mut found[tracked.index];
        if tracked.over {
            continue;
        }
        if segment.flags.syn && segment.flags.ack && side == Side::Server {
            if handshake.syn_ack_packet.is_none() {
                handshake.syn_ack_packet = Some(frame.number);
                handshake.syn_ack_seq = Some(segment.seq);
                handshake.syn_ack_ack = Some(segment.ack);
                handshake.ack_is_syn_seq_plus_one =
                    Some(segment.ack == handshake.syn_seq.wrapping_add(1));
            }
            continue;
        }
        if side == Side::Client
            && handshake.ack_packet.is_none()
            && segment.flags.ack
            && handshake
                .syn_ack_seq
                .is_some_and(|isn| segment.ack == isn.wrapping_add(1))
        {
            handshake.ack_packet = Some(frame.number);
        }
        if segment.flags.rst {
            handshake.fate = Fate::Reset {
                by: side,
                packet: frame.number,
            };
            tracked.over = true;
            continue;
        }
        if segment.flags.fin {
            tracked.first_fin.get_or_insert((side, frame.number));
            match side {
                Side::Client => tracked.fin_client = true,
                Side::Server => tracked.fin_server = true,
            }
            let (by, packet) = tracked.first_fin.unwrap_or((side, frame.number));
            handshake.fate = if tracked.fin_client && tracked.fin_server {
                Fate::Closed { by, packet }
            } else {
                Fate::HalfClosed { by, packet }
            };
        }
    }
    found
}

fn on_syn(
    found: &mut Vec<Handshake>,
    live: &mut HashMap<(SocketAddr, SocketAddr), Tracked>,
    number: usize,
    segment: &TcpSegment,
) {
    let key = (segment.src, segment.dst);
    if let Some(tracked) = live.get(&key) {
        let handshake = &mut found[tracked.index];
        if !tracked.over && handshake.syn_seq == segment.seq && handshake.syn_ack_packet.is_none() {
            handshake.syn_retransmissions += 1;
            return;
        }
    }
    live.insert(
        key,
        Tracked {
            index: found.len(),
            first_fin: None,
            fin_client: false,
            fin_server: false,
            over: false,
        },
    );
    found.push(Handshake {
        client: segment.src,
        server: segment.dst,
        syn_packet: number,
        syn_seq: segment.seq,
        syn_retransmissions: 0,
        syn_ack_packet: None,
        syn_ack_seq: None,
        syn_ack_ack: None,
        ack_is_syn_seq_plus_one: None,
        ack_packet: None,
        fate: Fate::Open,
    });
}

/// The handshakes as a table for the terminal.
pub fn render_text(handshakes: &[Handshake]) -> String {
    let mut out = format!(
        "{} TCP connection(s) opened in the capture (absolute sequence numbers)\n",
        handshakes.len()
    );
    for (i, h) in handshakes.iter().enumerate() {
        out.push_str(&format!(
            "\n[{}] client {} -> server {}\n",
            i + 1,
            h.client,
            h.server
        ));
        out.push_str(&format!(
            "    SYN      packet {:<5} seq={}{}\n",
            h.syn_packet,
            h.syn_seq,
            if h.syn_retransmissions > 0 {
                format!(" ({} retransmission(s))", h.syn_retransmissions)
            } else {
                String::new()
            }
        ));
        match (h.syn_ack_packet, h.syn_ack_seq, h.syn_ack_ack) {
            (Some(packet), Some(seq), Some(ack)) => {
                let check = if h.ack_is_syn_seq_plus_one == Some(true) {
                    format!("= SYN seq + 1 ({} + 1)", h.syn_seq)
                } else {
                    format!("!= SYN seq + 1 (expected {})", h.syn_seq.wrapping_add(1))
                };
                out.push_str(&format!(
                    "    SYN-ACK  packet {packet:<5} seq={seq} ack={ack} {check}\n"
                ));
            }
            _ => out.push_str("    SYN-ACK  not captured (refused, filtered or lost)\n"),
        }
        match h.ack_packet {
            Some(packet) => out.push_str(&format!(
                "    ACK      packet {packet:<5} completes the handshake\n"
            )),
            None => out.push_str("    ACK      not captured\n"),
        }
        out.push_str(&format!("    fate     {}\n", h.fate));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::packet::TcpFlags;
    use std::time::Duration;

    const C: &str = "10.20.30.11:40000";
    const S: &str = "10.20.30.3:12000";

    fn tcp(number: usize, from: &str, to: &str, seq: u32, ack: u32, flags: &str) -> Frame {
        let flags = TcpFlags {
            syn: flags.contains('S'),
            ack: flags.contains('A'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            psh: flags.contains('P'),
        };
        Frame {
            number,
            timestamp: Duration::ZERO,
            content: Content::Tcp(TcpSegment {
                src: from.parse().unwrap(),
                dst: to.parse().unwrap(),
                seq,
                ack,
                flags,
                window: 0,
                payload: Vec::new(),
                payload_len: 0,
            }),
        }
    }

    #[test]
    fn a_full_connection_gives_its_numbers_and_an_orderly_close() {
        let frames = [
            tcp(1, C, S, 1000, 0, "S"),
            tcp(2, S, C, 5000, 1001, "SA"),
            tcp(3, C, S, 1001, 5001, "A"),
            tcp(4, C, S, 1001, 5001, "FA"),
            tcp(5, S, C, 5001, 1002, "FA"),
            tcp(6, C, S, 1002, 5002, "A"),
        ];
        let found = handshakes(&frames);
        assert_eq!(found.len(), 1);
        let h = &found[0];
        assert_eq!(h.client, C.parse().unwrap());
        assert_eq!(
            (h.syn_seq, h.syn_ack_seq, h.syn_ack_ack),
            (1000, Some(5000), Some(1001))
        );
        assert_eq!(h.ack_is_syn_seq_plus_one, Some(true));
        assert_eq!(h.ack_packet, Some(3));
        assert_eq!(
            h.fate,
            Fate::Closed {
                by: Side::Client,
                packet: 4
            }
        );
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let frames = [tcp(1, C, S, u32::MAX, 0, "S"), tcp(2, S, C, 7, 0, "SA")];
        assert_eq!(handshakes(&frames)[0].ack_is_syn_seq_plus_one, Some(true));
        let wrong = [tcp(1, C, S, 10, 0, "S"), tcp(2, S, C, 7, 10, "SA")];
        assert_eq!(handshakes(&wrong)[0].ack_is_syn_seq_plus_one, Some(false));
    }

    #[test]
    fn refused_half_closed_and_open_connections() {
        let frames = [
            tcp(1, C, S, 1, 0, "S"),
            tcp(2, S, C, 0, 2, "RA"),
            tcp(3, "10.20.30.12:1", S, 50, 0, "S"),
            tcp(4, S, "10.20.30.12:1", 80, 51, "SA"),
            tcp(5, S, "10.20.30.12:1", 81, 51, "FA"),
            tcp(6, "10.20.30.13:1", S, 9, 0, "S"),
        ];
        let found = handshakes(&frames);
        assert_eq!(found.len(), 3);
        assert_eq!(
            found[0].fate,
            Fate::Reset {
                by: Side::Server,
                packet: 2
            }
        );
        assert_eq!(found[0].syn_ack_packet, None);
        assert_eq!(
            found[1].fate,
            Fate::HalfClosed {
                by: Side::Server,
                packet: 5
            }
        );
        assert_eq!(found[2].fate, Fate::Open);
        assert!(render_text(&found).contains("SYN-ACK  not captured"));
    }

    #[test]
    fn a_repeated_syn_is_a_retransmission_and_a_reused_port_a_new_connection() {
        let frames = [
            tcp(1, C, S, 1, 0, "S"),
            tcp(2, C, S, 1, 0, "S"),
            tcp(3, S, C, 10, 2, "SA"),
            tcp(4, C, S, 2, 11, "RA"),
            tcp(5, C, S, 900, 0, "S"),
        ];
        let found = handshakes(&frames);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].syn_retransmissions, 1);
        assert_eq!(found[1].syn_seq, 900);
        assert_eq!(found[1].fate, Fate::Open);
    }

    #[test]
    fn segments_of_connections_opened_before_the_capture_are_ignored() {
        let frames = [tcp(1, C, S, 5, 6, "PA"), tcp(2, S, C, 6, 5, "FA")];
        assert!(handshakes(&frames).is_empty());
    }
}
