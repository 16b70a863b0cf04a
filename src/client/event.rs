//! What the client shows: one [`ClientEvent`] per thing that happened, printed for a person
//! ([`ClientEvent::render`]) or as one JSON object per line (`--json`, for programs).

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::Serialize;

use super::direct_inbox::DirectStats;
use crate::protocol::{ErrorCode, PeerInfo};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClientEvent {
    /// Connected to the server; direct messages are received at `p2p_addr`.
    Connected {
        server: SocketAddr,
        p2p_addr: SocketAddr,
    },
    /// Logged in; `peers` is everyone online, this user included.
    Welcome {
        username: String,
        peers: Vec<PeerInfo>,
    },
    /// The list of online users changed, or was asked for.
    Peers {
        peers: Vec<PeerInfo>,
    },
    Joined {
        peer: PeerInfo,
    },
    Left {
        username: String,
    },
    /// A room message from someone else.
    Message {
        from: String,
        text: String,
    },
    /// A direct message, received over UDP from `source`, the sender's announced address.
    Direct {
        from: String,
        id: u64,
        text: String,
        source: SocketAddr,
    },
    /// A direct message left this client for `to`'s announced address.
    DirectSent {
        to: String,
        id: u64,
        destination: SocketAddr,
    },
    Help {
        text: String,
    },
    /// The direct-message counters, in answer to `/stats`: datagrams received, delivered, and
    /// dropped by reason (`oversized`, `malformed`, `unknown_source`, `rate_limited`, `replayed`).
    DirectStats(DirectStats),
    /// Something was dropped or ignored (a datagram from an unknown address, …).
    Warning {
        message: String,
    },
    /// Something failed. `code` is the server's when the server refused something.
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
        message: String,
    },
    /// The server is stopping.
    Shutdown {
        reason: String,
    },
}

impl ClientEvent {
    pub fn error(message: impl Into<String>) -> ClientEvent {
        ClientEvent::Error {
            code: None,
            message: message.into(),
        }
    }

    /// The event as a line for a person. Text from other users has its control characters
    /// escaped, so nobody can move the cursor or recolour the terminal of the reader.
    pub fn render(&self) -> String {
        match self {
            ClientEvent::Connected { server, p2p_addr } => {
                format!("* connected to {server}; direct messages arrive at {p2p_addr}")
            }
            ClientEvent::Welcome { username, peers } => {
                format!("* logged in as {}\n{}", clean(username), online(peers))
            }
            ClientEvent::Peers { peers } => online(peers),
            ClientEvent::Joined { peer } => format!("* {} joined", clean(&peer.username)),
            ClientEvent::Left { username } => format!("* {} left", clean(username)),
            ClientEvent::Message { from, text } => format!("<{}> {}", clean(from), clean(text)),
            ClientEvent::Direct { from, text, .. } => {
                format!("[direct] <{}> {}", clean(from), clean(text))
            }
            ClientEvent::DirectSent { to, .. } => format!("* direct message sent to {}", clean(to)),
            ClientEvent::Help { text } => text.clone(),
            ClientEvent::DirectStats(stats) => format!(
                "* direct messages: {} received, {} delivered, {} dropped ({}); {} sender(s) rate-tracked",
                stats.received,
                stats.delivered,
                stats.dropped.total(),
                stats.dropped,
                stats.sources_tracked
            ),
            ClientEvent::Warning { message } => format!("! warning: {}", clean(message)),
            ClientEvent::Error { message, .. } => format!("! error: {}", clean(message)),
            ClientEvent::Shutdown { reason } => format!("* server: {}", clean(reason)),
        }
    }
}

fn online(peers: &[PeerInfo]) -> String {
    let names: Vec<String> = peers.iter().map(|p| clean(&p.username)).collect();
    format!("* online ({}): {}", names.len(), names.join(", "))
}

/// Escapes control characters (ESC, BEL, CR, …) as `\u{..}`; keeps newlines and tabs.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let event = ClientEvent::Message {
            from: "eve".into(),
            text: "\u{1b}[2Jgotcha\r".into(),
        };
        assert_eq!(event.render(), "<eve> \\u{1b}[2Jgotcha\\u{d}");
    }

    #[test]
    fn stats_are_one_flat_json_object() {
        let event = ClientEvent::DirectStats(DirectStats {
            received: 3,
            delivered: 1,
            dropped: crate::client::direct_inbox::DropCounts {
                malformed: 2,
                ..Default::default()
            },
            sources_tracked: 1,
        });
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"direct_stats","received":3,"delivered":1,"dropped":{"oversized":0,"malformed":2,"unknown_source":0,"rate_limited":0,"replayed":0},"sources_tracked":1}"#
        );
        assert_eq!(
            event.render(),
            "* direct messages: 3 received, 1 delivered, 2 dropped (2 malformed); 1 sender(s) rate-tracked"
        );
    }

    #[test]
    fn json_form_is_tagged_by_event() {
        let event = ClientEvent::Left {
            username: "bob".into(),
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"left","username":"bob"}"#
        );
    }
}
