//! Which packets of several captures are the same packet: one frame seen leaving client1 and, a
//! few microseconds later, arriving at the server's interface is one arrow in a merged diagram.
//!
//! Captures taken on one machine share its clock, so the same packet has nearly the same
//! timestamp in each. Two frames are the same packet when they come from different captures, are
//! at most [`SAME_PACKET_WINDOW`] apart, and agree on what identifies a packet on the wire: for
//! TCP the addresses, ports, sequence and acknowledgement numbers, flags and payload; for UDP the
//! addresses, ports and payload; for ARP the operation and the addresses asked and told. A bridge
//! forwards a frame unchanged, so nothing in these can differ between the two ends. A
//! retransmission is sent again at least TCP's minimum retransmission timeout (200 ms on Linux)
//! later, outside the window, so it stays an arrow of its own.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use serde::Serialize;

use super::packet::{Content, Frame};

/// How far apart in time two captures may see the same packet: far more than a bridge takes to
/// forward it (microseconds), far less than any retransmission timeout (200 ms).
pub const SAME_PACKET_WINDOW: Duration = Duration::from_millis(50);

/// One capture's sighting of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// Index of the capture, in the order they were given.
    pub capture: usize,
    /// The frame number in that capture.
    pub packet: usize,
}

/// What identifies a packet on the wire, hashed; `None` for a frame that cannot be identified
/// (undecodable), which is never merged with another.
pub fn identity(frame: &Frame) -> Option<u64> {
    let mut h = DefaultHasher::new();
    match &frame.content {
        Content::Tcp(t) => {
            ("tcp", t.src, t.dst, t.seq, t.ack).hash(&mut h);
            (
                t.flags.syn,
                t.flags.ack,
                t.flags.fin,
                t.flags.rst,
                t.flags.psh,
            )
                .hash(&mut h);
            t.payload.hash(&mut h);
        }
        Content::Udp(u) => ("udp", u.src, u.dst, &u.payload).hash(&mut h),
        Content::Arp(a) => {
            ("arp", a.operation, a.sender_ip, &a.sender_mac, a.target_ip).hash(&mut h)
        }
        Content::OtherIp {
            src, dst, protocol, ..
        } => ("ip", src, dst, protocol).hash(&mut h),
        Content::OtherLink { ether_type } => ("link", ether_type).hash(&mut h),
        Content::Undecodable { .. } => return None,
    }
    Some(h.finish())
}

/// Finds, for frames fed in time order, the earlier frame of another capture that is the same
/// packet.
#[derive(Debug, Default)]
pub struct Matcher {
    /// By identity: when it was first seen, by which captures, and its index (an arrow's).
    seen: HashMap<u64, Vec<(Duration, Vec<usize>, usize)>>,
}

impl Matcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// The index given to [`Matcher::add`] for the same packet seen by another capture within
    /// the window, if any; records that `capture` saw it too.
    pub fn same_as(&mut self, frame: &Frame, capture: usize) -> Option<usize> {
        let entries = self.seen.get_mut(&identity(frame)?)?;
        let entry = entries.iter_mut().find(|(at, captures, _)| {
            !captures.contains(&capture) && at.abs_diff(frame.timestamp) <= SAME_PACKET_WINDOW
        })?;
        entry.1.push(capture);
        Some(entry.2)
    }

    /// Remembers `frame`, seen by `capture`, as the packet with index `index`.
    pub fn add(&mut self, frame: &Frame, capture: usize, index: usize) {
        if let Some(id) = identity(frame) {
            self.seen
                .entry(id)
                .or_default()
                .push((frame.timestamp, vec![capture], index));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::packet::{TcpFlags, TcpSegment};

    fn segment(at_ms: u64, seq: u32) -> Frame {
        Frame {
            number: 1,
            timestamp: Duration::from_millis(at_ms),
            content: Content::Tcp(TcpSegment {
                src: "10.20.30.11:40000".parse().unwrap(),
                dst: "10.20.30.3:12000".parse().unwrap(),
                seq,
                ack: 1,
                flags: TcpFlags::default(),
                window: 0,
                payload: b"x".to_vec(),
                payload_len: 1,
            }),
        }
    }

    #[test]
    fn the_same_segment_at_two_ends_is_one_packet_and_a_retransmission_is_not() {
        let mut m = Matcher::new();
        m.add(&segment(1000, 7), 0, 0);
        assert_eq!(m.same_as(&segment(1000, 7), 1), Some(0), "the other end");
        assert_eq!(
            m.same_as(&segment(1000, 7), 1),
            None,
            "seen once per capture"
        );
        assert_eq!(m.same_as(&segment(1000, 8), 2), None, "another segment");
        assert_eq!(m.same_as(&segment(1250, 7), 2), None, "a retransmission");
        assert_eq!(m.same_as(&segment(1000, 7), 0), None, "its own capture");
    }
}
