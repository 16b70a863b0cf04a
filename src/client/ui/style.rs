//! How events look on a person's screen: the local time (`HH:MM`) at the start of every line,
//! each name in a stable colour, the person's own lines (events of the core's, once it took
//! them) drawn as everyone's (`<alice> text`, `* alice waves`, the name in bold), direct messages and room lines of any kind naming the
//! person highlighted, with a bell. It also keeps the names of who is online
//! ([`Names`]), which completion offers.
//!
//! On a terminal, a line longer than the terminal is wide is broken at word boundaries with a
//! hanging indent under the message's text ([`screen::wrap`](super::super::screen::wrap)).
//!
//! It never weakens [`screen`](super::super::screen)'s escaping: every text another person
//! controls is escaped and laid out there first, and the only escape sequences on the screen
//! are the SGR codes added here, around already-escaped text. Colour (names, errors, warnings) is
//! off unless stdout is a terminal and neither `NO_COLOR` (set and not empty, no-color.org) nor
//! `--no-color` asks otherwise; bold, faint and reverse video are not colour, and stay on a
//! terminal, so a highlighted line still stands out. `--json` never comes here.

use std::sync::{Arc, Mutex, PoisonError};

use super::super::event::{
    own_direct_head, own_line_head, room_head, ClientEvent, RoomMessage, QUEUED_MARK,
};
use super::super::screen::{escape, message, wrap, CONTINUATION, MORE_LINES};
use super::super::transfer_event::{Direction, TransferEvent};
use crate::protocol::PeerInfo;

/// Ring the terminal's bell.
const BELL: &str = "\u{7}";
/// Back to the terminal's default colour and weight.
const RESET: &str = "\u{1b}[0m";
/// Faint, for the time: present but out of the way.
const DIM: &str = "\u{1b}[2m";
/// Bold, for the person's own name.
const BOLD: &str = "\u{1b}[1m";
/// Bold reverse video: a direct message or a line naming the person stands out of the room.
const HIGHLIGHT: &str = "\u{1b}[1;7m";
/// Red, for errors.
const RED: &str = "\u{1b}[31m";
/// Yellow, for warnings.
const YELLOW: &str = "\u{1b}[33m";

/// Foreground colours that read on both dark and light backgrounds (no black, white, or the dark
/// blue that vanishes on black), normal and bright, as SGR parameters. No red or yellow, bright
/// or not: those are the colours of errors and warnings, and a name must never look like one.
const NAME_PALETTE: &[u8] = &[32, 35, 36, 92, 94, 95, 96];

/// How lines are shown: decided once at start from the flags, `NO_COLOR` and whether stdout is
/// a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Colour codes around names, errors and warnings.
    pub colour: bool,
    /// Bold, faint and reverse video: the person's own name, the time, highlights. Not colour:
    /// `NO_COLOR` and `--no-color` leave them on (no-color.org asks only that colour go).
    pub emphasis: bool,
    /// Lines broken at word boundaries to the terminal's width, with a hanging indent.
    pub wrap: bool,
    /// `HH:MM ` (local time) at the start of every line.
    pub timestamps: bool,
    /// A bell on a direct message or a line naming the person.
    pub bell: bool,
    /// Lines shown under a message's first line (`--max-continuation-lines`).
    pub max_continuations: usize,
}

impl Style {
    /// Plain text, as piped output has always been: no time, no colour, no bell.
    pub fn plain(max_continuations: usize) -> Style {
        Style {
            colour: false,
            emphasis: false,
            wrap: false,
            timestamps: false,
            bell: false,
            max_continuations,
        }
    }
}

/// Whether `NO_COLOR`'s value asks for no colour: set and not empty (no-color.org).
pub fn no_color_requested(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

/// The names of who is online, as the server last said, shared with completion. Bounded by the
/// server's own list (one entry per online user).
#[derive(Debug, Clone, Default)]
pub struct Names(Arc<Mutex<NamesInner>>);

#[derive(Debug, Default)]
struct NamesInner {
    me: Option<String>,
    online: Vec<String>,
}

impl Names {
    /// The person's own name, once logged in.
    pub fn me(&self) -> Option<String> {
        self.lock().me.clone()
    }

    /// Everyone online but the person, sorted.
    pub fn others(&self) -> Vec<String> {
        let inner = self.lock();
        inner
            .online
            .iter()
            .filter(|name| Some(*name) != inner.me.as_ref())
            .cloned()
            .collect()
    }

    fn learn(&self, event: &ClientEvent) {
        let mut inner = self.lock();
        let names = |peers: &[PeerInfo]| {
            let mut names: Vec<String> = peers.iter().map(|p| p.username.clone()).collect();
            names.sort();
            names
        };
        match event {
            ClientEvent::Welcome { username, peers } => {
                inner.me = Some(username.clone());
                inner.online = names(peers);
            }
            ClientEvent::Peers { peers, .. } | ClientEvent::PeersChanged { peers, .. } => {
                inner.online = names(peers)
            }
            ClientEvent::Joined { peer } => {
                if let Err(at) = inner.online.binary_search(&peer.username) {
                    inner.online.insert(at, peer.username.clone());
                }
            }
            ClientEvent::Left { username } => inner.online.retain(|n| n != username),
            _ => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NamesInner> {
        // A panic elsewhere leaves a list of names, still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Turns events into lines for the screen in a [`Style`], keeping [`Names`] up to date.
#[derive(Debug, Clone)]
pub struct Renderer {
    style: Style,
    names: Names,
}

impl Renderer {
    pub fn new(style: Style) -> Renderer {
        Renderer {
            style,
            names: Names::default(),
        }
    }

    pub fn style(&self) -> Style {
        self.style
    }

    /// Who is online, for completion.
    pub fn names(&self) -> Names {
        self.names.clone()
    }

    /// The event as lines (joined with `\n`, no final one), at the local time now; `None` for
    /// an event a person is not shown ([`ClientEvent::is_quiet`]).
    pub fn render(&self, event: &ClientEvent) -> Option<String> {
        self.names.learn(event);
        if event.is_quiet() {
            return None;
        }
        Some(self.fit(self.render_at(event, &local_hh_mm())))
    }

    /// `shown` broken to the terminal's width now, when the style wraps.
    fn fit(&self, shown: Shown) -> String {
        match self.style.wrap.then(terminal_columns).flatten() {
            Some(width) => shown.wrapped(width),
            None => shown.lines,
        }
    }

    fn render_at(&self, event: &ClientEvent, time: &str) -> Shown {
        let max = self.style.max_continuations;
        // The head of a message's first line (`<bob> `), which its wrapped lines hang under.
        let mut head = None;
        let (lines, ring) = match event {
            // Every kind of room line alike, the person's own too: the kind says how it begins
            // (`room_head`), and a line naming the person stands out and rings, whatever its kind.
            ClientEvent::Message(RoomMessage { from, line }) => {
                let me = self.names.me();
                let own = me.as_ref() == Some(from);
                let mentioned = !own && me.is_some_and(|me| mentions(&line.text, &me));
                let head_text = if mentioned {
                    self.paint(HIGHLIGHT, &room_head(line.kind, &escape(from)))
                } else if own {
                    room_head(line.kind, &self.paint(BOLD, &self.name(from)))
                } else {
                    room_head(line.kind, &self.name(from))
                }
                .to_string()
                    + " ";
                let lines = message(&head_text, &line.text, max);
                head = Some(head_text);
                (lines, mentioned)
            }
            ClientEvent::Direct { from, text, .. } => {
                let head_text =
                    self.paint(HIGHLIGHT, &format!("[direct] <{}>", escape(from))) + " ";
                let lines = message(&head_text, text, max);
                head = Some(head_text);
                (lines, true)
            }
            // The person's own lines, as the core took them (a refused one never comes here):
            // drawn as everyone's, the name bold, naming oneself ringing nothing; one waiting
            // for the server marked so, faint.
            ClientEvent::OwnLine { from, line, queued } => {
                let name = self.paint(BOLD, &self.name(from));
                let own = own_line_head(line.kind, &name, false);
                let head_text = match queued {
                    true => format!("{} {own}", self.paint(DIM, QUEUED_MARK)),
                    false => own,
                };
                let lines = message(&head_text, &line.text, max);
                head = Some(head_text);
                (lines, false)
            }
            ClientEvent::OwnDirect { from, to, text } => {
                let name = self.paint(BOLD, &self.name(from));
                let head_text = own_direct_head(&self.name(to), &name);
                let lines = message(&head_text, text, max);
                head = Some(head_text);
                (lines, false)
            }
            ClientEvent::Error { .. } | ClientEvent::DirectFailed { .. } => {
                (self.colour_lines(RED, &event.render(max)), false)
            }
            ClientEvent::Warning { .. } => (self.colour_lines(YELLOW, &event.render(max)), false),
            // An offer is addressed to the person, as a direct message is: it rings; a transfer
            // that stopped is an error's colour.
            ClientEvent::Transfer(TransferEvent::FileOffer {
                direction: Direction::In,
                ..
            }) => (event.render(max), true),
            ClientEvent::Transfer(TransferEvent::FileFailed { .. }) => {
                (self.colour_lines(RED, &event.render(max)), false)
            }
            other => (other.render(max), false),
        };
        let mut shown = self.stamp(lines, head.as_deref(), time);
        if ring && self.style.bell {
            shown.lines.insert_str(0, BELL);
        }
        shown
    }

    /// `name` (already safe to show once escaped) in its colour.
    fn name(&self, name: &str) -> String {
        let shown = escape(name);
        if self.style.colour {
            format!("\u{1b}[{}m{shown}{RESET}", name_colour(name))
        } else {
            shown
        }
    }

    /// `text` in bold, faint or reverse video (not colour: see [`Style::emphasis`]).
    fn paint(&self, sgr: &str, text: &str) -> String {
        if self.style.emphasis {
            format!("{sgr}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    /// Each of `lines` in the colour `sgr`.
    fn colour_lines(&self, sgr: &str, lines: &str) -> String {
        if !self.style.colour {
            return lines.to_string();
        }
        lines
            .split('\n')
            .map(|line| format!("{sgr}{line}{RESET}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `time ` before every line when timestamps are on; `head` is what the first line starts
    /// with (after the time) when it is a message's, for the hanging indent.
    fn stamp(&self, lines: String, head: Option<&str>, time: &str) -> Shown {
        let head = head.map(visible_columns);
        if !self.style.timestamps {
            return Shown {
                lines,
                time: 0,
                head,
            };
        }
        let painted = self.paint(DIM, time);
        let lines = lines
            .split('\n')
            .map(|line| format!("{painted} {line}"))
            .collect::<Vec<_>>()
            .join("\n");
        Shown {
            lines,
            time: time.len() + 1,
            head,
        }
    }
}

/// An event's lines for the screen, before they are fitted to the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    /// The lines, joined with `\n`.
    lines: String,
    /// The bytes of the time at the start of every line (`HH:MM `), 0 without timestamps.
    time: usize,
    /// The columns of the first line's message head (`<bob> `, the time not included) when it
    /// is a message's: its wrapped lines hang under the text.
    head: Option<usize>,
}

impl Shown {
    /// The lines broken to `width` columns, each hanging under its text: a message's first line
    /// under what follows its head (`<bob> `), a continuation under what follows its mark
    /// (`  ↳ `), any other line under what follows its first word (`-!- `, `--> `, `! `).
    fn wrapped(&self, width: usize) -> String {
        self.lines
            .split('\n')
            .enumerate()
            .map(|(i, line)| {
                let after_time = match (i, self.head) {
                    (0, Some(head)) => head,
                    _ => {
                        let plain = strip_sgr(line);
                        let plain = plain.trim_start_matches(BELL);
                        hanging_indent(plain.get(self.time..).unwrap_or(""))
                    }
                };
                wrap(line, self.time + after_time, width)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The columns a wrapped piece of `line` (shown, after the time) hangs under: past a
/// continuation mark, else past the first space (a notice's mark), else none.
fn hanging_indent(line: &str) -> usize {
    if let Some(mark) = [CONTINUATION, MORE_LINES]
        .into_iter()
        .find(|mark| line.starts_with(mark))
    {
        return visible_columns(mark);
    }
    line.find(' ').map_or(0, |at| visible_columns(&line[..=at]))
}

/// The columns `text` takes on the screen: its escapes take none.
fn visible_columns(text: &str) -> usize {
    use unicode_width::UnicodeWidthStr;
    strip_sgr(text).width()
}

/// `text` without SGR sequences (ours: [`escape`] took every other escape).
fn strip_sgr(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\u{1b}') {
        plain.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = &rest[rest.find('m').map_or(rest.len(), |m| m + 1)..];
    }
    plain.push_str(rest);
    plain
}

/// The terminal's width in columns, if stdout is a terminal that says.
fn terminal_columns() -> Option<usize> {
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(size) if size.ws_col > 0 => Some(usize::from(size.ws_col)),
        _ => None,
    }
}

/// The palette index of `name`: FNV-1a, so a name has the same colour on every screen and in
/// every session (std's hasher promises neither).
fn name_colour(name: &str) -> u8 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    NAME_PALETTE[hash as usize % NAME_PALETTE.len()]
}

/// Whether `text` names `me` as a word (any case): `alice`, `@alice:`, `Alice?` do;
/// `malice` and `alice_2` do not.
pub fn mentions(text: &str, me: &str) -> bool {
    if me.is_empty() {
        return false;
    }
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.split(|c: char| !is_name_char(c))
        .any(|word| word.eq_ignore_ascii_case(me))
}

/// The local time now as `HH:MM`, in the system's time zone as the C library finds it (the TZ
/// variable, else /etc/localtime; a zone's name is looked up in the zoneinfo folder). A zone that
/// cannot be read counts as UTC, as the C library does.
pub fn local_hh_mm() -> String {
    let now = jiff::ZonedDateTime::now();
    format!("{:02}:{:02}", now.hour(), now.minute())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{RoomLine, TextKind};

    impl Renderer {
        /// The event's lines at `time`, unwrapped.
        fn at(&self, event: &ClientEvent, time: &str) -> String {
            self.render_at(event, time).lines
        }
    }

    fn style(colour: bool, timestamps: bool) -> Style {
        Style {
            colour,
            emphasis: colour,
            wrap: false,
            timestamps,
            bell: true,
            max_continuations: 10,
        }
    }

    fn logged_in(style: Style) -> Renderer {
        let renderer = Renderer::new(style);
        renderer.names.learn(&ClientEvent::Welcome {
            username: "alice".into(),
            peers: vec![],
        });
        renderer
    }

    fn said(from: &str, text: &str) -> ClientEvent {
        ClientEvent::Message(RoomMessage::new(from, RoomLine::say(text)))
    }

    fn action(from: &str, text: &str) -> ClientEvent {
        ClientEvent::Message(RoomMessage::new(
            from,
            RoomLine::new(TextKind::Action, text),
        ))
    }

    #[test]
    fn plain_style_is_todays_text_exactly() {
        let renderer = logged_in(Style::plain(10));
        let event = said("bob", "hi\n<carol> x");
        assert_eq!(renderer.at(&event, "12:34"), event.render(10));
        let event = said("bob", "hi alice");
        assert_eq!(renderer.at(&event, "12:34"), event.render(10));
    }

    #[test]
    fn every_line_starts_with_the_time_and_continuations_stay_marked() {
        let renderer = logged_in(style(false, true));
        assert_eq!(
            renderer.at(&said("bob", "one\ntwo"), "09:05"),
            "09:05 <bob> one\n09:05   ↳ two"
        );
    }

    #[test]
    fn colour_is_added_around_escaped_text_only() {
        let renderer = logged_in(style(true, false));
        let shown = renderer.at(&said("b\u{1b}[2Jb", "x\u{1b}[31m"), "00:00");
        assert!(shown.contains("b\\u{1b}[2Jb"), "{shown:?}");
        assert!(shown.ends_with("x\\u{1b}[31m"), "{shown:?}");
        // The only raw escapes are ours: each starts one of our SGR sequences.
        for (at, _) in shown.match_indices('\u{1b}') {
            assert!(shown[at..].starts_with("\u{1b}["), "{shown:?}");
            let end = shown[at + 2..].find('m').unwrap();
            assert!(shown[at + 2..at + 2 + end]
                .chars()
                .all(|c| c.is_ascii_digit() || c == ';'));
        }
    }

    #[test]
    fn a_name_has_one_colour_and_names_spread_over_the_palette() {
        assert_eq!(name_colour("bob"), name_colour("bob"));
        let colours: std::collections::HashSet<u8> = ["alice", "bob", "carol", "dave", "erin"]
            .iter()
            .map(|n| name_colour(n))
            .collect();
        assert!(colours.len() >= 3, "{colours:?}");
    }

    #[test]
    fn a_file_offered_to_the_person_rings_and_one_they_made_does_not() {
        let renderer = logged_in(style(true, false));
        let offer = |direction| {
            ClientEvent::Transfer(TransferEvent::FileOffer {
                transfer: "1a2b3c4d00000000000000000000000f".into(),
                direction,
                peer: "bob".into(),
                name: "a.pdf".into(),
                size: 3,
                lapses_in: 600,
                over_limit: false,
            })
        };
        let shown = renderer.at(&offer(Direction::In), "00:00");
        assert!(shown.starts_with(BELL), "{shown:?}");
        assert!(shown.contains("bob offers a.pdf (3 B)"), "{shown:?}");
        let shown = renderer.at(&offer(Direction::Out), "00:00");
        assert!(!shown.contains(BELL), "{shown:?}");
    }

    #[test]
    fn a_mention_or_a_direct_message_rings_and_is_highlighted() {
        let renderer = logged_in(style(true, false));
        let shown = renderer.at(&said("bob", "hey Alice, look"), "00:00");
        assert!(
            shown.starts_with(BELL) && shown.contains(HIGHLIGHT),
            "{shown:?}"
        );
        let direct = ClientEvent::Direct {
            from: "bob".into(),
            id: 1,
            text: "psst".into(),
            source: "127.0.0.1:1".parse().unwrap(),
        };
        let shown = renderer.at(&direct, "00:00");
        assert!(
            shown.starts_with(BELL) && shown.contains(HIGHLIGHT),
            "{shown:?}"
        );
        let shown = renderer.at(&said("bob", "malice aforethought"), "00:00");
        assert!(
            !shown.contains(BELL) && !shown.contains(HIGHLIGHT),
            "{shown:?}"
        );
        let quiet = Renderer {
            style: Style {
                bell: false,
                ..style(true, false)
            },
            names: renderer.names(),
        };
        assert!(!quiet.at(&said("bob", "alice!"), "00:00").contains(BELL));
    }

    #[test]
    fn mentions_are_whole_words_in_any_case() {
        assert!(mentions("alice", "alice"));
        assert!(mentions("@Alice: hi", "alice"));
        assert!(mentions("hi ALICE?", "alice"));
        assert!(!mentions("malice", "alice"));
        assert!(!mentions("alice_2 is here", "alice"));
        assert!(!mentions("anything", ""));
    }

    #[test]
    fn own_lines_read_like_everyone_elses() {
        let renderer = logged_in(style(false, false));
        let own = |line: RoomLine, queued| ClientEvent::OwnLine {
            from: "alice".into(),
            line,
            queued,
        };
        let shown = |event: &ClientEvent| renderer.at(event, "00:00");
        assert_eq!(shown(&own(RoomLine::say("hello"), false)), "<alice> hello");
        assert_eq!(
            shown(&own(RoomLine::new(TextKind::Action, "waves"), false)),
            "* alice waves"
        );
        assert_eq!(
            shown(&own(RoomLine::say("later"), true)),
            "[queued] <alice> later"
        );
        let direct = ClientEvent::OwnDirect {
            from: "alice".into(),
            to: "bob".into(),
            text: "psst".into(),
        };
        assert_eq!(shown(&direct), "[direct to bob] <alice> psst");
        // In colour, the person's own name is bold, and naming oneself rings nothing.
        let coloured = logged_in(style(true, false));
        let own = coloured.at(
            &own(RoomLine::new(TextKind::Action, "hugs alice"), false),
            "00:00",
        );
        assert!(own.contains(BOLD), "{own:?}");
        assert!(!own.contains(BELL) && !own.contains(HIGHLIGHT), "{own:?}");
    }

    #[test]
    fn an_action_naming_the_person_rings_and_is_highlighted_like_a_line() {
        let renderer = logged_in(style(true, false));
        let shown = renderer.at(&action("bob", "pokes Alice"), "00:00");
        assert!(
            shown.starts_with(BELL) && shown.contains(&format!("{HIGHLIGHT}* bob{RESET}")),
            "{shown:?}"
        );
        let shown = renderer.at(&action("bob", "waves"), "00:00");
        assert!(
            !shown.contains(BELL) && !shown.contains(HIGHLIGHT),
            "{shown:?}"
        );
        assert_eq!(
            without_colour(&shown),
            "* bob waves",
            "an action reads as one"
        );
    }

    fn without_colour(text: &str) -> String {
        let mut plain = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('\u{1b}') {
            plain.push_str(&rest[..at]);
            rest = &rest[at..];
            rest = &rest[rest.find('m').map_or(rest.len(), |m| m + 1)..];
        }
        plain.push_str(rest);
        plain
    }

    #[test]
    fn names_follow_joins_and_leaves_and_leave_out_the_person() {
        let renderer = logged_in(style(false, false));
        let peer = |name: &str| PeerInfo {
            username: name.into(),
            ip: "127.0.0.1".parse().unwrap(),
            p2p_port: 1,
            public_key: None,
            identity_key: None,
            identity_binding: None,
        };
        renderer.render(&ClientEvent::Peers {
            peers: vec![peer("alice"), peer("carol")],
            verified: Vec::new(),
        });
        renderer.render(&ClientEvent::Joined { peer: peer("bob") });
        assert_eq!(renderer.names().others(), ["bob", "carol"]);
        renderer.render(&ClientEvent::Left {
            username: "carol".into(),
        });
        assert_eq!(renderer.names().others(), ["bob"]);
    }

    #[test]
    fn no_name_has_the_colour_of_errors_or_warnings() {
        let error_colours = [RED, YELLOW].map(|sgr| {
            sgr.trim_start_matches("\u{1b}[")
                .trim_end_matches('m')
                .to_string()
        });
        for colour in NAME_PALETTE {
            for error in &error_colours {
                // Bright red and bright yellow (91, 93) are the same colours to a reader.
                let error: u8 = error.parse().unwrap();
                assert!(
                    *colour != error && *colour != error + 60,
                    "{colour} looks like an error or a warning"
                );
            }
        }
        // carol was red, like the `!` errors.
        assert!(![31, 33, 91, 93].contains(&name_colour("carol")));
    }

    #[test]
    fn without_colour_a_highlight_is_still_reverse_video_and_own_names_bold() {
        let renderer = logged_in(Style {
            colour: false,
            emphasis: true,
            ..style(false, false)
        });
        let shown = renderer.at(&said("bob", "alice, look"), "00:00");
        assert!(shown.contains(HIGHLIGHT), "{shown:?}");
        let error = renderer.at(&ClientEvent::error("x"), "00:00");
        assert!(!error.contains('\u{1b}'), "colour in {error:?}");
        let own = renderer.at(&said("alice", "hi"), "00:00");
        assert!(own.contains(BOLD), "{own:?}");
        assert!(
            !own.contains("\u{1b}[3") && !own.contains("\u{1b}[9"),
            "{own:?}"
        );
    }

    #[test]
    fn a_long_line_wraps_under_its_text() {
        let renderer = logged_in(style(false, true));
        let event = said(
            "bob",
            "the quick brown fox jumps over the lazy dog\nand again",
        );
        assert_eq!(
            renderer.render_at(&event, "09:05").wrapped(30),
            "09:05 <bob> the quick brown\n\
             \x20           fox jumps over the\n\
             \x20           lazy dog\n\
             09:05   ↳ and again"
        );
        let notice = ClientEvent::Warning {
            message: "a warning long enough to wrap".into(),
        };
        assert_eq!(
            renderer.render_at(&notice, "09:05").wrapped(30),
            "09:05 ! warning: a warning\n        long enough to wrap"
        );
        // In colour and highlighted, the indent is the same: escapes take no columns.
        let coloured = logged_in(style(true, true));
        let shown = coloured
            .render_at(&said("bob", "alice the quick brown fox"), "09:05")
            .wrapped(30);
        let plain = without_colour(&shown);
        assert_eq!(
            plain, "\u{7}09:05 <bob> alice the quick\n            brown fox",
            "{shown:?}"
        );
    }

    #[test]
    fn the_local_time_is_two_numbers() {
        let time = local_hh_mm();
        assert_eq!(time.len(), 5, "{time}");
        assert_eq!(&time[2..3], ":");
    }
}
