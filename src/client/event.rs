//! What the client shows: one [`ClientEvent`] per thing that happened, printed for a person
//! ([`ClientEvent::render`], laid out by [`screen`](super::screen)) or as one JSON object per
//! line (`--json`, for programs, with every text exactly as received).
//!
//! How each kind of room line looks is decided here, once ([`room_head`], and its `--json`
//! event name from [`RoomMessage`]): the terminal's styles ([`ui::style`](super::ui::style))
//! and the person's own lines go through the same function.

use std::net::SocketAddr;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::direct_inbox::DirectStats;
use super::screen::{escape, message};
use super::transfer_event::TransferEvent;
use crate::identity::IdentityPublic;
use crate::protocol::{DelayReason, ErrorCode, PeerInfo, RoomLine, TextKind};

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
    /// Who is online, as asked for (`/peers`) or as the server sent it whole; `verified` names
    /// those whose safety number this user confirmed (`/verify NAME confirm`) for the identity
    /// they prove now (left out when none).
    Peers {
        peers: Vec<PeerInfo>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        verified: Vec<String>,
    },
    /// Who is online after a `joined` or `left` (the event just before says who). The same JSON
    /// as [`ClientEvent::Peers`], for programs that keep the list; a person is not shown it
    /// ([`ClientEvent::is_quiet`]): the join or leave line said it, and a whole roster on every
    /// join is noise a class scrolls past.
    #[serde(rename = "peers")]
    PeersChanged {
        peers: Vec<PeerInfo>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        verified: Vec<String>,
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
    /// A direct message left this client for `to`'s announced address. Not shown to a person
    /// ([`ClientEvent::is_quiet`]): the echo of the line says it was sent, and the delivery
    /// report (or a failure) follows.
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
    /// The direct-message counters, in answer to `/stats`: messages sent, acknowledged and not
    /// delivered; datagrams received, messages shown (`shown`, also under its old name
    /// `delivered`), and datagrams dropped by reason (`oversized`, `malformed`, `unknown_source`,
    /// `rate_limited`, `replayed`, `unsealed`, `truncated`, `unknown_key`, `stale_session`,
    /// `forged`), acknowledgements and retransmissions received.
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
    /// A server announced on the LAN (DNS-SD over mDNS): each one `--discover` lists, or the one
    /// a client started without `--server` connects to (`chosen`). All of it is what someone on
    /// the LAN said: `fingerprint` is compared at first contact, never trusted for itself.
    ServerFound {
        name: String,
        /// `ADDRESS:PORT`, the address connected to.
        server: String,
        /// Every address it announced.
        addresses: Vec<String>,
        port: u16,
        tls: bool,
        fingerprint: Option<String>,
        chosen: bool,
    },
    /// No server answered on the LAN: the client connects to `fallback` instead.
    NoServerFound {
        fallback: String,
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
    /// The server's login throttle holds this login, registration or name check back for
    /// `wait` (`"seconds"` in JSON) because of `reason`; its answer follows.
    Delayed {
        #[serde(rename = "seconds", serialize_with = "as_seconds")]
        wait: Duration,
        reason: DelayReason,
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
    /// First contact: `peer`'s identity key pinned in the known-peers file. Not shown to a
    /// person ([`ClientEvent::is_quiet`]): a class's first login would be a screen of them, and
    /// `/verify` tells what matters.
    IdentityPinned {
        peer: String,
        identity: IdentityPublic,
    },
    /// `peer` proves another identity than the one pinned: nothing sealed goes to it and nothing
    /// sealed from it is opened until `/trust peer` (or `/verify peer confirm`).
    IdentityChanged {
        peer: String,
        pinned: IdentityPublic,
        announced: IdentityPublic,
    },
    /// `peer`'s identity cannot be checked (`reason`: a binding that does not verify, half of
    /// one, or none where one is pinned): nothing sealed goes to it or is opened from it.
    IdentityUnverified {
        peer: String,
        reason: String,
    },
    /// `/trust peer`: its new identity is pinned, and sealing to it resumes.
    IdentityTrusted {
        peer: String,
        identity: IdentityPublic,
    },
    /// `/verify peer`: the safety number of this user's identity and `peer`'s, 12 groups of 5
    /// digits, the same on both screens; `verified` once confirmed; `trusted` false when it is
    /// for a changed identity not yet trusted.
    SafetyNumber {
        peer: String,
        number: String,
        verified: bool,
        trusted: bool,
    },
    /// `/verify peer confirm`: `peer` is recorded as verified (marked in `/peers`) until its
    /// identity changes.
    IdentityVerified {
        peer: String,
    },
    /// A step of a file transfer (its JSON: [`TransferEvent`], `file_offer`, `file_done`, …).
    /// Untagged: the inner event names itself.
    #[serde(untagged)]
    Transfer(TransferEvent),
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

/// The mark that begins a notice of the client's own (connected, logged in, who is online, the
/// server's words, queued lines, `/stats`, a delivery). Like the marks below, no line another
/// person controls can begin with it: those begin `<name>`, `* name` (an action),
/// `[direct`, or a continuation mark ([`CONTINUATION`](super::screen::CONTINUATION)), and a
/// name holds no space or `!` (irssi's `-!-`).
pub const NOTICE: &str = "-!-";
/// The mark of a join (weechat's): `--> bob joined`.
pub const JOIN: &str = "-->";
/// The mark of a leave (weechat's): `<-- bob left`. A room line `<--> …` (from a user named
/// `--`) differs from it in the character after `<--`: a name holds no space.
pub const LEAVE: &str = "<--";

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

    /// Whether a person is not shown this event (`--json` still prints it): the roster after a
    /// join or a leave, and a direct message having left (its echo said so). Noise otherwise.
    pub fn is_quiet(&self) -> bool {
        matches!(
            self,
            ClientEvent::PeersChanged { .. }
                | ClientEvent::DirectSent { .. }
                | ClientEvent::IdentityPinned { .. }
        )
    }

    /// The event as lines for a person. Nothing another user or the server controls can pass
    /// for a line of the client's own: names and one-line texts are escaped whole
    /// ([`escape`]), a message's line breaks start marked continuation lines, at most
    /// `max_continuations` of them ([`message`]), and the client's own notices begin with a mark
    /// ([`NOTICE`], [`JOIN`], [`LEAVE`], `!`) that no room line, action or direct message can.
    pub fn render(&self, max_continuations: usize) -> String {
        match self {
            ClientEvent::Connected { server, p2p_addr } => {
                format!("{NOTICE} connected to {server}; direct messages arrive at {p2p_addr}")
            }
            ClientEvent::Welcome { username, peers } => {
                format!(
                    "{NOTICE} logged in as {}\n{}",
                    escape(username),
                    online(peers)
                )
            }
            ClientEvent::Peers { peers, verified }
            | ClientEvent::PeersChanged { peers, verified } => online_marked(peers, verified),
            ClientEvent::Joined { peer } => format!("{JOIN} {} joined", escape(&peer.username)),
            ClientEvent::Left { username } => format!("{LEAVE} {} left", escape(username)),
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
                format!("{NOTICE} direct message sent to {}", escape(to))
            }
            ClientEvent::DirectDelivered { to, .. } => {
                format!("{NOTICE} direct message to {} delivered", escape(to))
            }
            ClientEvent::DirectFailed { to, reason, .. } => format!(
                "! direct message to {} not delivered: {}",
                escape(to),
                escape(reason)
            ),
            // The client's own text (the command list), several lines on purpose.
            ClientEvent::Help { text } => text.clone(),
            ClientEvent::DirectStats(stats) => format!(
                "{NOTICE} direct messages sent: {} ({} acknowledged by their recipient, {} not \
                 delivered)\n{NOTICE} datagrams received: {} ({} message(s) shown, {} \
                 acknowledgement(s), {} retransmission(s) of messages already shown, {} dropped: \
                 {}); {} sender(s) rate-tracked",
                stats.outgoing.sent,
                stats.outgoing.acknowledged,
                stats.outgoing.not_delivered,
                stats.received,
                stats.shown,
                stats.acks,
                stats.duplicates,
                stats.dropped.total(),
                stats.dropped,
                stats.sources_tracked
            ),
            ClientEvent::Warning { message } => format!("! warning: {}", escape(message)),
            ClientEvent::Error { message, .. } => format!("! error: {}", escape(message)),
            ClientEvent::Shutdown { reason } => format!("{NOTICE} server: {}", escape(reason)),
            ClientEvent::Connecting { server } => {
                format!("{NOTICE} connecting to {}…", escape(server))
            }
            ClientEvent::ServerFound {
                name,
                server,
                tls,
                fingerprint,
                chosen,
                ..
            } => {
                let how = match (tls, fingerprint) {
                    (true, Some(fingerprint)) => {
                        format!("TLS, announced fingerprint {fingerprint}")
                    }
                    (true, None) => "TLS, no fingerprint announced".to_string(),
                    (false, _) => "plaintext".to_string(),
                };
                let found = format!("{} at {server} ({how})", escape(name));
                match chosen {
                    true => format!("{NOTICE} found {found} on the LAN"),
                    false => found,
                }
            }
            ClientEvent::NoServerFound { fallback } => format!(
                "{NOTICE} no server announced itself on the LAN; trying {}",
                escape(fallback)
            ),
            ClientEvent::Reconnecting { in_secs, reason } => {
                format!("! {}; reconnecting in {in_secs} s…", escape(reason))
            }
            ClientEvent::Queued { lines } => format!(
                "{NOTICE} sending {lines} queued line{}…",
                if *lines == 1 { "" } else { "s" }
            ),
            ClientEvent::Delayed { wait, reason } => {
                let whose = match reason {
                    DelayReason::Account => "logins to this account",
                    DelayReason::Address => "logins from this address",
                    DelayReason::Unknown => "this login",
                };
                format!(
                    "{NOTICE} the server delays {whose}: {} s (after recent failed attempts)",
                    tenths(*wait)
                )
            }
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
            ClientEvent::Transfer(event) => event.render(),
            ClientEvent::QueuedSent { lines } => format!(
                "{NOTICE} {lines} queued line{} sent",
                if *lines == 1 { "" } else { "s" }
            ),
            ClientEvent::IdentityPinned { peer, identity } => format!(
                "{NOTICE} first contact with {}: identity key {} pinned (/verify {} to compare \
                 safety numbers)",
                escape(peer),
                identity.short(),
                escape(peer)
            ),
            ClientEvent::IdentityChanged { peer, .. } => {
                let peer = escape(peer);
                format!(
                    "! {peer}'s identity key changed: a new device, or someone in the middle; \
                     compare safety numbers with /verify {peer}. Nothing sealed goes to {peer} \
                     or is taken from {peer} until /trust {peer}"
                )
            }
            ClientEvent::IdentityUnverified { peer, reason } => {
                let peer = escape(peer);
                format!(
                    "! {peer}'s identity cannot be checked: {}; nothing sealed goes to {peer} or \
                     is taken from {peer}",
                    escape(reason)
                )
            }
            ClientEvent::IdentityTrusted { peer, identity } => {
                let peer = escape(peer);
                format!(
                    "{NOTICE} {peer}'s identity key {} is trusted and pinned; /verify {peer} to \
                     compare safety numbers",
                    identity.short()
                )
            }
            ClientEvent::SafetyNumber {
                peer,
                number,
                verified,
                trusted,
            } => {
                let peer = escape(peer);
                let state = match (verified, trusted) {
                    (true, _) => format!("verified; it changes if {peer}'s identity key does"),
                    (false, true) => format!(
                        "compare it with {peer}'s screen (or read it aloud); if they match: \
                         /verify {peer} confirm"
                    ),
                    (false, false) => format!(
                        "for {peer}'s NEW identity key, not trusted yet; if it matches {peer}'s \
                         screen: /verify {peer} confirm"
                    ),
                };
                format!(
                    "{NOTICE} safety number with {peer}: {}\n{NOTICE} {state}",
                    escape(number)
                )
            }
            ClientEvent::IdentityVerified { peer } => format!(
                "{NOTICE} {} is verified (marked in /peers until their identity key changes)",
                escape(peer)
            ),
        }
    }
}

/// A wait in seconds as a person reads it: `4`, `0.5`, `2.3`.
fn tenths(wait: Duration) -> String {
    let tenths = (wait.as_secs_f64() * 10.0).round() / 10.0;
    format!("{tenths}")
}

/// A wait as JSON: seconds, as the server sent them.
fn as_seconds<S: Serializer>(wait: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(wait.as_secs_f64())
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
    online_marked(peers, &[])
}

/// The mark after the name of a peer whose safety number was confirmed.
pub const VERIFIED_MARK: &str = "(verified)";

/// Who is online, those in `verified` marked [`VERIFIED_MARK`].
fn online_marked(peers: &[PeerInfo], verified: &[String]) -> String {
    let names: Vec<String> = peers
        .iter()
        .map(
            |p| match verified.iter().any(|v| v.eq_ignore_ascii_case(&p.username)) {
                true => format!("{} {VERIFIED_MARK}", escape(&p.username)),
                false => escape(&p.username),
            },
        )
        .collect();
    format!("{NOTICE} online ({}): {}", names.len(), names.join(", "))
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
            identity_key: None,
            identity_binding: None,
        };
        let shown = [
            ClientEvent::Joined { peer: peer.clone() }.render(10),
            ClientEvent::Left {
                username: name.into(),
            }
            .render(10),
            ClientEvent::Peers {
                peers: vec![peer],
                verified: Vec::new(),
            }
            .render(10),
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
            shown: 1,
            outgoing: crate::client::direct_inbox::SentCounts {
                sent: 2,
                acknowledged: 1,
                not_delivered: 0,
            },
        });
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"direct_stats","received":3,"delivered":1,"dropped":{"oversized":0,"malformed":2,"unknown_source":0,"rate_limited":0,"replayed":0,"unsealed":0,"truncated":0,"unknown_key":0,"stale_session":0,"forged":0,"untrusted":0},"sources_tracked":1,"acks":0,"duplicates":0,"shown":1,"sent":2,"acknowledged":1,"not_delivered":0}"#
        );
        // What was sent and what was received, each counter named for what it counts: the
        // message bob acknowledged is not "0 delivered".
        assert_eq!(
            event.render(10),
            "-!- direct messages sent: 2 (1 acknowledged by their recipient, 0 not delivered)\n\
             -!- datagrams received: 3 (1 message(s) shown, 0 acknowledgement(s), 0 \
             retransmission(s) of messages already shown, 2 dropped: 2 malformed); 1 sender(s) \
             rate-tracked"
        );
    }

    #[test]
    fn delivery_reports_read_for_a_person_and_as_json() {
        let delivered = ClientEvent::DirectDelivered {
            to: "bob".into(),
            id: 3,
        };
        assert_eq!(delivered.render(10), "-!- direct message to bob delivered");
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

    fn peer(name: &str) -> PeerInfo {
        PeerInfo {
            username: name.into(),
            ip: "127.0.0.1".parse().unwrap(),
            p2p_port: 9,
            public_key: None,
            identity_key: None,
            identity_binding: None,
        }
    }

    /// Every line the client says of its own accord, with names and texts chosen to look like
    /// lines of others.
    fn notices() -> Vec<ClientEvent> {
        let bob = peer("bob");
        vec![
            ClientEvent::Connected {
                server: "127.0.0.1:1".parse().unwrap(),
                p2p_addr: "127.0.0.1:2".parse().unwrap(),
            },
            ClientEvent::Welcome {
                username: "alice".into(),
                peers: vec![peer("alice"), bob.clone()],
            },
            ClientEvent::Peers {
                peers: vec![bob.clone()],
                verified: Vec::new(),
            },
            ClientEvent::Joined { peer: bob.clone() },
            ClientEvent::Left {
                username: "bob".into(),
            },
            ClientEvent::DirectDelivered {
                to: "bob".into(),
                id: 1,
            },
            ClientEvent::DirectFailed {
                to: "bob".into(),
                id: 1,
                reason: "no answer".into(),
            },
            ClientEvent::DirectStats(DirectStats::default()),
            ClientEvent::Warning {
                message: "x".into(),
            },
            ClientEvent::error("x"),
            ClientEvent::Shutdown {
                reason: "bye".into(),
            },
            ClientEvent::Connecting {
                server: "h:1".into(),
            },
            ClientEvent::Reconnecting {
                in_secs: 1,
                reason: "gone".into(),
            },
            ClientEvent::Queued { lines: 3 },
        ]
    }

    #[test]
    fn no_room_line_action_or_direct_message_reads_as_a_notice() {
        let notices: Vec<String> = notices()
            .iter()
            .flat_map(|n| n.render(10).lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        // What others control: their name (any a name may be) and their text (any at all).
        let mut others = Vec::new();
        for name in ["bob", "--", "-", "server", "online", "direct"] {
            for text in [
                "left",
                "joined",
                "is now online",
                "logged in as bob",
                "server: shutting down",
                "sending 3 queued lines…",
                "direct message to bob delivered",
            ] {
                for kind in [TextKind::Say, TextKind::Action, TextKind::Unknown] {
                    let said = RoomMessage::new(name, RoomLine::new(kind, text));
                    others.push(ClientEvent::Message(said).render(10));
                }
                others.push(
                    ClientEvent::Direct {
                        from: name.into(),
                        id: 1,
                        text: text.into(),
                        source: "127.0.0.1:9".parse().unwrap(),
                    }
                    .render(10),
                );
            }
        }
        for line in others.iter().flat_map(|o| o.lines()) {
            for notice in &notices {
                let mark = notice.split(' ').next().unwrap();
                assert!(
                    !line.starts_with(&format!("{mark} ")),
                    "{line:?} begins as the notice {notice:?} does"
                );
            }
        }
        // The leave notice and an action saying "left" differ at their very start.
        let left = ClientEvent::Left {
            username: "bob".into(),
        };
        let action = ClientEvent::Message(RoomMessage::new(
            "bob",
            RoomLine::new(TextKind::Action, "left"),
        ));
        assert_eq!(left.render(10), "<-- bob left");
        assert_eq!(action.render(10), "* bob left");
        let joined = ClientEvent::Joined { peer: peer("bob") };
        assert_eq!(joined.render(10), "--> bob joined");
    }

    #[test]
    fn a_person_is_not_shown_the_roster_after_a_join_nor_a_send_but_programs_are() {
        let changed = ClientEvent::PeersChanged {
            peers: vec![peer("bob")],
            verified: Vec::new(),
        };
        let sent = ClientEvent::DirectSent {
            to: "bob".into(),
            id: 1,
            destination: "127.0.0.1:9".parse().unwrap(),
        };
        assert!(changed.is_quiet() && sent.is_quiet());
        assert!(notices().iter().all(|n| !n.is_quiet()));
        // The JSON scripts read is the same as before: a `peers` event after every join.
        let json = serde_json::to_value(&changed).unwrap();
        assert_eq!(json["event"], "peers");
        assert_eq!(json["peers"][0]["username"], "bob");
        assert_eq!(serde_json::to_value(&sent).unwrap()["event"], "direct_sent");
    }

    #[test]
    fn a_delay_reads_in_seconds_for_a_person_and_as_json() {
        let delayed = ClientEvent::Delayed {
            wait: Duration::from_secs(4),
            reason: DelayReason::Address,
        };
        assert_eq!(
            delayed.render(10),
            "-!- the server delays logins from this address: 4 s (after recent failed attempts)"
        );
        assert_eq!(
            serde_json::to_string(&delayed).unwrap(),
            r#"{"event":"delayed","seconds":4.0,"reason":"address"}"#
        );
        let short = ClientEvent::Delayed {
            wait: Duration::from_millis(500),
            reason: DelayReason::Account,
        };
        assert_eq!(
            short.render(10),
            "-!- the server delays logins to this account: 0.5 s (after recent failed attempts)"
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
        assert_eq!(sent.render(10), "-!- 3 queued lines sent");
        assert_eq!(
            ClientEvent::QueuedSent { lines: 1 }.render(10),
            "-!- 1 queued line sent"
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

    #[test]
    fn a_changed_identity_is_warned_plainly_and_the_pinned_first_contact_is_quiet() {
        let key = |b| IdentityPublic::from_bytes([b; 32]);
        let changed = ClientEvent::IdentityChanged {
            peer: "bob".into(),
            pinned: key(1),
            announced: key(2),
        };
        let text = changed.render(10);
        assert!(
            text.starts_with(
                "! bob's identity key changed: a new device, or someone in the middle; compare \
                 safety numbers with /verify bob"
            ),
            "{text}"
        );
        assert!(text.contains("until /trust bob"), "{text}");
        let json = serde_json::to_value(&changed).unwrap();
        assert_eq!(json["event"], "identity_changed");
        assert_eq!(json["pinned"], key(1).to_base64());
        let pinned = ClientEvent::IdentityPinned {
            peer: "bob".into(),
            identity: key(1),
        };
        assert!(pinned.is_quiet());
        assert!(!changed.is_quiet());
        // A verified peer is marked in the list, for a person and a program.
        let peers = ClientEvent::Peers {
            peers: vec![peer("alice"), peer("bob")],
            verified: vec!["bob".into()],
        };
        assert_eq!(peers.render(10), "-!- online (2): alice, bob (verified)");
        assert_eq!(
            serde_json::to_value(&peers).unwrap()["verified"],
            serde_json::json!(["bob"])
        );
        let number = ClientEvent::SafetyNumber {
            peer: "bob".into(),
            number: "12345 67890".into(),
            verified: false,
            trusted: true,
        };
        assert!(number.render(10).contains("/verify bob confirm"));
    }
}
