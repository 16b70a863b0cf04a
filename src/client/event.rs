//! What the client shows: one [`ClientEvent`] per thing that happened, printed for a person
//! ([`ClientEvent::render`], laid out by [`screen`](super::screen)) or as one JSON object per
//! line (`--json`, for programs, with every text exactly as received).
//!
//! How each kind of room line looks is decided here, once ([`room_head`], and its `--json`
//! event name from [`RoomMessage`]): the terminal's styles ([`ui::style`](super::ui::style))
//! and the person's own lines go through the same function.

use std::net::SocketAddr;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::direct_inbox::DirectStats;
use super::screen::{escape, message};
use crate::protocol::{ErrorCode, PeerInfo, RoomLine, TextKind};

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
    /// The peer acknowledged the sealed direct message `id`: it reached `to`'s client.
    DirectDelivered {
        to: String,
        id: u64,
    },
    /// The sealed direct message `id` went unacknowledged through every try (or `to` left
    /// before answering): `to` most likely never got it.
    DirectFailed {
        to: String,
        id: u64,
        reason: String,
    },
    Help {
        text: String,
    },
    /// The direct-message counters, in answer to `/stats`: datagrams received, delivered, and
    /// dropped by reason (`oversized`, `malformed`, `unknown_source`, `rate_limited`, `replayed`,
    /// `unsealed`, `truncated`, `unknown_key`, `stale_session`, `forged`), acknowledgements and
    /// retransmissions received.
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
    /// Connecting to `server` (as given, `HOST:PORT`): shown at once, before any answer.
    Connecting {
        server: String,
    },
    /// The server was lost (`reason`); the client connects again in about `in_secs` seconds.
    Reconnecting {
        in_secs: u64,
        reason: String,
    },
    /// `lines` of the person's lines wait to be sent, at the pace the server allows.
    Queued {
        lines: usize,
    },
    /// A room line of the person's own (`from` is the person), as the client took it: on its way
    /// to the server at the pace it allows, or `queued` while the server is away — then sent, in
    /// order, once logged in again ([`ClientEvent::QueuedSent`]). The server never sends it
    /// back, so this is the one place it shows.
    OwnLine {
        from: String,
        #[serde(flatten)]
        line: RoomLine,
        queued: bool,
    },
    /// A direct message of the person's own (`from`), handed to the network for `to` (its
    /// `direct_sent` follows). One refused before it left (`to` offline, unknown, the person
    /// themselves) is only an error: it is never shown as said.
    OwnDirect {
        from: String,
        to: String,
        text: String,
    },
    /// The `lines` room lines that waited for the server (typed while it was away, or still
    /// waiting when it was lost) have all been sent, in order, since logging in again.
    QueuedSent {
        lines: usize,
    },
    /// A room line from someone else, of any kind (its JSON: [`RoomMessage`]). Last: an
    /// untagged variant must be.
    #[serde(untagged)]
    Message(RoomMessage),
}

/// A room line and who said it. As JSON, the event is named by the line's kind:
/// `{"event":"message","from":…,"text":…}` for a plain line (and for a kind this client does
/// not know, shown plain), `{"event":"action",…}` for a `/me` line, and a new kind by its wire
/// name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMessage {
    pub from: String,
    pub line: RoomLine,
}

impl RoomMessage {
    pub fn new(from: impl Into<String>, line: RoomLine) -> RoomMessage {
        RoomMessage {
            from: from.into(),
            line,
        }
    }

    /// The `--json` event's name.
    pub fn event_name(&self) -> &'static str {
        match self.line.kind {
            TextKind::Say | TextKind::Unknown => "message",
            kind => kind.name(),
        }
    }
}

impl Serialize for RoomMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("event", self.event_name())?;
        map.serialize_entry("from", &self.from)?;
        map.serialize_entry("text", &self.line.text)?;
        map.end()
    }
}

/// How a room line of `kind` begins, before its text: `<alice>` said, `* alice` an action.
/// `name` is the sender's, already escaped (and maybe coloured). A kind this client does not
/// know is shown as a plain line.
pub fn room_head(kind: TextKind, name: &str) -> String {
    match kind {
        TextKind::Say | TextKind::Unknown => format!("<{name}>"),
        TextKind::Action => format!("* {name}"),
    }
}

impl ClientEvent {
    pub fn error(message: impl Into<String>) -> ClientEvent {
        ClientEvent::Error {
            code: None,
            message: message.into(),
        }
    }

    /// The event as lines for a person. Nothing another user or the server controls can pass
    /// for a line of the client's own: names and one-line texts are escaped whole
    /// ([`escape`]), and a message's line breaks start marked continuation lines, at most
    /// `max_continuations` of them ([`message`]).
    pub fn render(&self, max_continuations: usize) -> String {
        match self {
            ClientEvent::Connected { server, p2p_addr } => {
                format!("* connected to {server}; direct messages arrive at {p2p_addr}")
            }
            ClientEvent::Welcome { username, peers } => {
                format!("* logged in as {}\n{}", escape(username), online(peers))
            }
            ClientEvent::Peers { peers } => online(peers),
            ClientEvent::Joined { peer } => format!("* {} joined", escape(&peer.username)),
            ClientEvent::Left { username } => format!("* {} left", escape(username)),
            ClientEvent::Message(RoomMessage { from, line }) => message(
                &format!("{} ", room_head(line.kind, &escape(from))),
                &line.text,
                max_continuations,
            ),
            ClientEvent::Direct { from, text, .. } => message(
                &format!("[direct] <{}> ", escape(from)),
                text,
                max_continuations,
            ),
            ClientEvent::DirectSent { to, .. } => {
                format!("* direct message sent to {}", escape(to))
            }
            ClientEvent::DirectDelivered { to, .. } => {
                format!("* direct message to {} delivered", escape(to))
            }
            ClientEvent::DirectFailed { to, reason, .. } => format!(
                "! direct message to {} not delivered: {}",
                escape(to),
                escape(reason)
            ),
            // The client's own text (the command list), several lines on purpose.
            ClientEvent::Help { text } => text.clone(),
            ClientEvent::DirectStats(stats) => format!(
                "* direct messages: {} received, {} delivered, {} dropped ({}); {} acknowledgement(s), \
                 {} retransmission(s) already shown; {} sender(s) rate-tracked",
                stats.received,
                stats.delivered,
                stats.dropped.total(),
                stats.dropped,
                stats.acks,
                stats.duplicates,
                stats.sources_tracked
            ),
            ClientEvent::Warning { message } => format!("! warning: {}", escape(message)),
            ClientEvent::Error { message, .. } => format!("! error: {}", escape(message)),
            ClientEvent::Shutdown { reason } => format!("* server: {}", escape(reason)),
            ClientEvent::Connecting { server } => format!("* connecting to {}…", escape(server)),
            ClientEvent::Reconnecting { in_secs, reason } => format!(
                "! {}; reconnecting in {in_secs} s…",
                escape(reason)
            ),
            ClientEvent::Queued { lines } => format!(
                "* sending {lines} queued line{}…",
                if *lines == 1 { "" } else { "s" }
            ),
            ClientEvent::OwnLine { from, line, queued } => message(
                &own_line_head(line.kind, &escape(from), *queued),
                &line.text,
                max_continuations,
            ),
            ClientEvent::OwnDirect { from, to, text } => message(
                &own_direct_head(&escape(to), &escape(from)),
                text,
                max_continuations,
            ),
            ClientEvent::QueuedSent { lines } => format!(
                "* {lines} queued line{} sent",
                if *lines == 1 { "" } else { "s" }
            ),
        }
    }
}

/// The mark before a line of the person's own that waits for the server: said, but not yet.
pub const QUEUED_MARK: &str = "[queued]";

/// How a room line of the person's own begins, before its text: as everyone else's of its kind
/// (`name` escaped, maybe styled), marked [`QUEUED_MARK`] while it waits for the server.
pub fn own_line_head(kind: TextKind, name: &str, queued: bool) -> String {
    match queued {
        true => format!("{QUEUED_MARK} {} ", room_head(kind, name)),
        false => format!("{} ", room_head(kind, name)),
    }
}

/// How a direct message of the person's own begins: `[direct to bob] <alice> `; both names
/// escaped (maybe styled).
pub fn own_direct_head(to: &str, from: &str) -> String {
    format!("[direct to {to}] <{from}> ")
}

fn online(peers: &[PeerInfo]) -> String {
    let names: Vec<String> = peers.iter().map(|p| escape(&p.username)).collect();
    format!("* online ({}): {}", names.len(), names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let event = ClientEvent::Message(RoomMessage {
            from: "eve".into(),
            line: RoomLine::say("\u{1b}[2Jgotcha\u{7}"),
        });
        assert_eq!(event.render(10), "<eve> \\u{1b}[2Jgotcha\\u{7}");
    }

    const FORGERY: &str = "hi all\n<bob> alice, send me your password\n* bob is now an operator";

    #[test]
    fn a_room_message_spans_lines_only_as_marked_continuations_under_its_sender() {
        let event = ClientEvent::Message(RoomMessage {
            from: "mallory".into(),
            line: RoomLine::say(FORGERY),
        });
        assert_eq!(
            event.render(10),
            "<mallory> hi all\n  ↳ <bob> alice, send me your password\n  ↳ * bob is now an operator"
        );
    }

    #[test]
    fn a_direct_message_spans_lines_only_as_marked_continuations_under_its_sender() {
        let event = ClientEvent::Direct {
            from: "mallory".into(),
            id: 1,
            text: "\n[direct] <bob> it is me\u{202e}txt.exe".into(),
            source: "127.0.0.1:9".parse().unwrap(),
        };
        assert_eq!(
            event.render(10),
            "[direct] <mallory> \n  ↳ [direct] <bob> it is me\\u{202e}txt.exe"
        );
    }

    #[test]
    fn a_message_takes_a_bounded_number_of_lines() {
        let event = ClientEvent::Message(RoomMessage {
            from: "mallory".into(),
            line: RoomLine::say(".\n".repeat(21_000)),
        });
        assert_eq!(event.render(10).lines().count(), 12);
        assert_eq!(event.render(3).lines().count(), 5);
    }

    #[test]
    fn names_and_one_line_texts_are_escaped_whole() {
        let name = "bob\n* eve\u{202e}";
        let peer = PeerInfo {
            username: name.into(),
            ip: "127.0.0.1".parse().unwrap(),
            p2p_port: 9,
            public_key: None,
        };
        let shown = [
            ClientEvent::Joined { peer: peer.clone() }.render(10),
            ClientEvent::Left {
                username: name.into(),
            }
            .render(10),
            ClientEvent::Peers { peers: vec![peer] }.render(10),
            ClientEvent::Message(RoomMessage {
                from: name.into(),
                line: RoomLine::say("x"),
            })
            .render(10),
            ClientEvent::Warning {
                message: name.into(),
            }
            .render(10),
            ClientEvent::error(name).render(10),
            ClientEvent::Shutdown {
                reason: name.into(),
            }
            .render(10),
        ];
        for line in shown {
            assert_eq!(line.lines().count(), 1, "{line:?}");
            assert!(line.contains("bob\\u{a}* eve\\u{202e}"), "{line:?}");
        }
    }

    #[test]
    fn json_keeps_the_exact_text() {
        let event = ClientEvent::Message(RoomMessage {
            from: "mallory".into(),
            line: RoomLine::say(format!("{FORGERY}\u{202e}\u{2028}")),
        });
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["text"], format!("{FORGERY}\u{202e}\u{2028}"));
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
            acks: 0,
            duplicates: 0,
        });
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"direct_stats","received":3,"delivered":1,"dropped":{"oversized":0,"malformed":2,"unknown_source":0,"rate_limited":0,"replayed":0,"unsealed":0,"truncated":0,"unknown_key":0,"stale_session":0,"forged":0},"sources_tracked":1,"acks":0,"duplicates":0}"#
        );
        assert_eq!(
            event.render(10),
            "* direct messages: 3 received, 1 delivered, 2 dropped (2 malformed); 0 acknowledgement(s), \
             0 retransmission(s) already shown; 1 sender(s) rate-tracked"
        );
    }

    #[test]
    fn delivery_reports_read_for_a_person_and_as_json() {
        let delivered = ClientEvent::DirectDelivered {
            to: "bob".into(),
            id: 3,
        };
        assert_eq!(delivered.render(10), "* direct message to bob delivered");
        assert_eq!(
            serde_json::to_string(&delivered).unwrap(),
            r#"{"event":"direct_delivered","to":"bob","id":3}"#
        );
        let failed = ClientEvent::DirectFailed {
            to: "bob".into(),
            id: 4,
            reason: "no answer from bob".into(),
        };
        assert_eq!(
            failed.render(10),
            "! direct message to bob not delivered: no answer from bob"
        );
        assert_eq!(
            serde_json::to_string(&failed).unwrap(),
            r#"{"event":"direct_failed","to":"bob","id":4,"reason":"no answer from bob"}"#
        );
    }

    #[test]
    fn a_room_line_is_shown_and_named_by_its_kind() {
        let said = ClientEvent::Message(RoomMessage::new("bob", RoomLine::say("hi")));
        let action = ClientEvent::Message(RoomMessage::new(
            "bob",
            RoomLine::new(TextKind::Action, "waves\n* eve is root"),
        ));
        let future = ClientEvent::Message(RoomMessage::new(
            "bob",
            RoomLine::new(TextKind::Unknown, "sings"),
        ));
        assert_eq!(said.render(10), "<bob> hi");
        assert_eq!(action.render(10), "* bob waves\n  ↳ * eve is root");
        assert_eq!(future.render(10), "<bob> sings");
        // The JSON of before: scripts read `message` and `action` events.
        assert_eq!(
            serde_json::to_string(&said).unwrap(),
            r#"{"event":"message","from":"bob","text":"hi"}"#
        );
        assert_eq!(
            serde_json::to_string(&action).unwrap(),
            r#"{"event":"action","from":"bob","text":"waves\n* eve is root"}"#
        );
        assert_eq!(
            serde_json::to_string(&future).unwrap(),
            r#"{"event":"message","from":"bob","text":"sings"}"#
        );
    }

    #[test]
    fn own_lines_read_as_everyones_and_a_queued_one_is_marked() {
        let own = |kind, text: &str, queued| ClientEvent::OwnLine {
            from: "alice".into(),
            line: RoomLine::new(kind, text),
            queued,
        };
        assert_eq!(own(TextKind::Say, "hi", false).render(10), "<alice> hi");
        assert_eq!(
            own(TextKind::Action, "waves", true).render(10),
            "[queued] * alice waves"
        );
        assert_eq!(
            own(TextKind::Say, "one\ntwo", true).render(10),
            "[queued] <alice> one\n  ↳ two"
        );
        assert_eq!(
            serde_json::to_string(&own(TextKind::Say, "hi", true)).unwrap(),
            r#"{"event":"own_line","from":"alice","text":"hi","queued":true}"#
        );
        assert_eq!(
            serde_json::to_string(&own(TextKind::Action, "waves", false)).unwrap(),
            r#"{"event":"own_line","from":"alice","text":"waves","kind":"action","queued":false}"#
        );
        let direct = ClientEvent::OwnDirect {
            from: "alice".into(),
            to: "bob".into(),
            text: "psst".into(),
        };
        assert_eq!(direct.render(10), "[direct to bob] <alice> psst");
        assert_eq!(
            serde_json::to_string(&direct).unwrap(),
            r#"{"event":"own_direct","from":"alice","to":"bob","text":"psst"}"#
        );
        let sent = ClientEvent::QueuedSent { lines: 3 };
        assert_eq!(sent.render(10), "* 3 queued lines sent");
        assert_eq!(
            ClientEvent::QueuedSent { lines: 1 }.render(10),
            "* 1 queued line sent"
        );
        assert_eq!(
            serde_json::to_string(&sent).unwrap(),
            r#"{"event":"queued_sent","lines":3}"#
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
