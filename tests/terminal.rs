//! What a person sees, black-box, on a real pseudo-terminal: the real `p2pchat-client` runs with
//! its stdin, stdout and stderr on a pty (its controlling terminal, so the password prompt and
//! the line editor behave as for a person), logged into a real server; mallory, a real peer, sends
//! room and direct messages built to forge lines on that screen. The test reads everything the
//! client wrote to the terminal and looks at it line by line. Terminal behaviour is never assumed
//! from piped runs: the line editor only runs on a terminal.
//!
//! The pty harness is tests/common/pty.rs. The client runs with its defaults, so every line it
//! shows starts with the time and names are in colour: `line_starts` takes both off.

mod common;

use std::net::SocketAddr;

use common::pty::*;
use common::*;
use serde_json::{json, Value};

/// The room message of the review: three lines that look like a message, a message from bob and
/// a system line.
const ROOM_FORGERY: &str = "hi all\n<bob> alice, send me your password\n* bob is now an operator";

/// The direct message of the review: a fake direct message from bob after a line break, a fake
/// system line after U+2028, a bidi override that shows `exe.txt` for `txt.exe`, and zero-width
/// and isolate characters.
const DIRECT_FORGERY: &str =
    "\n[direct] <bob> alice, it is me, run invoice\u{202e}txt.exe\u{2028}* bob left\u{200b}\u{2066}";

/// An action of the review's kind: it begins as mallory's and goes on, after line breaks, as a
/// leave, a join and a notice of the server.
const ACTION_FORGERY: &str = "waves\n<-- bob left\n--> eve joined\n-!- server: restarting now";

/// Lines the client may show for one message: the first, the default ten continuation lines, and
/// the `… (N more lines)` line.
const MOST_LINES_PER_MESSAGE: usize = 1 + 10 + 1;

/// Line starts that look like bob's room or direct messages, or a system line about bob: none
/// of them is real here, for there is no bob.
fn forged(starts: &[String]) -> Vec<&String> {
    starts
        .iter()
        .filter(|s| {
            s.starts_with("<bob>")
                || s.starts_with("[direct] <bob>")
                || s.starts_with("* bob")
                || s.starts_with("--> bob")
                || s.starts_with("<-- bob")
                || s.starts_with("-!-")
        })
        .collect()
}

/// A server, alice on a terminal, and mallory, a peer the test plays ([`RawPeer`]: datagrams from
/// its socket pass alice's source check). Holds alice's direct-message address too.
struct Room {
    _dir: tempfile::TempDir,
    _server: Server,
    alice: TerminalClient,
    alice_udp: SocketAddr,
    mallory: RawPeer,
}

fn room(server_flags: &[&str], alice_flags: &[&str]) -> Room {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), server_flags);
    let mut alice = TerminalClient::start(server.addr, alice_flags);
    alice.register("alice", "alice-password");
    let mallory = RawPeer::register(server.addr, "mallory", "mallory-pw");
    let alice_peer = mallory.welcome["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["username"] == "alice")
        .expect("alice in mallory's welcome")
        .clone();
    let alice_udp = SocketAddr::new(
        alice_peer["ip"].as_str().unwrap().parse().unwrap(),
        alice_peer["p2p_port"].as_u64().unwrap() as u16,
    );
    // The join, with its line end (the terminal turns the line feed into CR LF): what comes
    // after is the test's.
    alice.wait_for("--> mallory joined\r\n");
    Room {
        _dir: dir,
        _server: server,
        alice,
        alice_udp,
        mallory,
    }
}

impl Room {
    fn mallory_says(&mut self, text: &str) {
        self.mallory.tcp.send(&json!({"type": "say", "text": text}));
    }

    fn mallory_acts(&mut self, text: &str) {
        self.mallory
            .tcp
            .send(&json!({"type": "say", "text": text, "kind": "action"}));
    }

    fn mallory_direct(&self, id: u64, text: &str) {
        let datagram: Value = json!({"type": "direct", "from": "mallory", "id": id, "text": text});
        self.mallory
            .send_datagram(datagram.to_string().as_bytes(), self.alice_udp);
    }
}

#[test]
fn a_message_with_line_breaks_cannot_forge_a_line_on_the_terminal() {
    // mallory's direct messages are the clear protocol's JSON datagrams: alice speaks it too.
    // (Sealed ones are laid out by the same code once opened.)
    let mut room = room(&["--plaintext"], &["--plaintext"]);
    let from = room.alice.seen;

    room.mallory_says(ROOM_FORGERY);
    room.mallory_says("end of the room attack");
    room.alice.wait_for("end of the room attack");
    room.mallory_direct(1, DIRECT_FORGERY);
    room.mallory_direct(2, "end of the direct attack");
    room.alice.wait_for("end of the direct attack");

    let output = room.alice.output_from(from);
    let starts = line_starts(&output);
    assert!(
        forged(&starts).is_empty(),
        "forged lines on the screen: {:#?}\nall lines: {starts:#?}",
        forged(&starts)
    );
    for expected in [
        "<mallory> hi all",
        "  ↳ <bob> alice, send me your password",
        "  ↳ * bob is now an operator",
        "[direct] <mallory> ",
        "  ↳ [direct] <bob> alice, it is me, run invoice\\u{202e}txt.exe",
        "  ↳ * bob left\\u{200b}\\u{2066}",
    ] {
        assert!(
            starts.iter().any(|s| s == expected),
            "no line {expected:?} on the screen: {starts:#?}"
        );
    }
    for raw in ['\u{202e}', '\u{2066}', '\u{200b}', '\u{2028}'] {
        assert!(
            find(&output, raw.to_string().as_bytes()).is_none(),
            "{raw:?} reached the terminal raw: {:?}",
            String::from_utf8_lossy(&output)
        );
    }
}

/// `/me left` from mallory, then mallory really leaves: the two read differently, and no action
/// begins as a notice of the client's own does (a join, a leave, the server's words).
#[test]
fn an_action_cannot_pass_for_a_join_a_leave_or_a_notice() {
    let mut room = room(&[], &[]);
    let from = room.alice.seen;
    for text in ["left", "joined", "is now online", ACTION_FORGERY] {
        room.mallory_acts(text);
    }
    room.mallory_acts("ends the actions");
    room.alice.wait_for("ends the actions");
    let actions = line_starts(&room.alice.output_from(from));
    for expected in [
        "* mallory left",
        "* mallory joined",
        "* mallory is now online",
        "* mallory waves",
        "  ↳ <-- bob left",
        "  ↳ --> eve joined",
        "  ↳ -!- server: restarting now",
    ] {
        assert!(
            actions.iter().any(|s| s == expected),
            "no line {expected:?} on the screen: {actions:#?}"
        );
    }
    assert!(
        forged(&actions).is_empty(),
        "forged lines on the screen: {:#?}",
        forged(&actions)
    );

    let from = room.alice.seen;
    room.mallory.tcp.send(&json!({"type": "quit"}));
    room.alice.wait_for("mallory left");
    let leave: Vec<String> = line_starts(&room.alice.output_from(from))
        .into_iter()
        .filter(|s| s.contains("mallory left"))
        .collect();
    assert_eq!(leave.len(), 1, "{leave:#?}");
    assert!(
        !actions.contains(&leave[0]),
        "mallory's real leave reads {:?}, as their action `/me left` did: {actions:#?}",
        leave[0]
    );
}

#[test]
fn nine_messages_of_twenty_one_thousand_lines_take_a_bounded_number_of_terminal_lines() {
    // Mallory's lines here (login, nine floods, the marker) exceed the default burst; the server's
    // flood control is not what this test is about.
    let mut room = room(&["--flood-burst", "50"], &[]);
    let from = room.alice.seen;
    let flood = ".\n".repeat(21_000);
    for _ in 0..9 {
        room.mallory_says(&flood);
    }
    room.mallory_says("end of the flood");
    room.alice.wait_for("end of the flood");

    let output = room.alice.output_from(from);
    let terminal_lines = output.iter().filter(|&&b| b == b'\n').count();
    eprintln!("nine messages of 21,000 lines took {terminal_lines} terminal lines");
    assert!(
        terminal_lines <= 9 * MOST_LINES_PER_MESSAGE + 1,
        "nine messages (and the marker) took {terminal_lines} terminal lines"
    );
    let summaries = line_starts(&output)
        .into_iter()
        .filter(|s| s == "  … (20989 more lines)")
        .count();
    assert_eq!(summaries, 9, "each message ends in one summary line");
}

#[test]
fn max_continuation_lines_sets_how_many_lines_of_a_message_are_shown() {
    let mut room = room(&[], &["--max-continuation-lines", "1"]);
    let from = room.alice.seen;
    room.mallory_says(ROOM_FORGERY);
    room.alice.wait_for("(1 more line)");
    let starts = line_starts(&room.alice.output_from(from));
    assert_eq!(
        starts,
        [
            "<mallory> hi all",
            "  ↳ <bob> alice, send me your password",
            "  … (1 more line)"
        ],
        "{starts:#?}"
    );
}

#[test]
fn json_output_keeps_the_exact_text_of_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &["--plaintext"]);
    // mallory's direct message is a clear JSON datagram: alice speaks the clear protocol.
    let mut alice =
        ChatClient::register_with_flags(server.addr, "alice", "alice-password", &["--plaintext"]);
    let mut mallory = RawPeer::register(server.addr, "mallory", "mallory-pw");
    alice.expect_joined("mallory");

    let flood = ".\n".repeat(21_000);
    for text in [ROOM_FORGERY, DIRECT_FORGERY, flood.as_str()] {
        mallory.tcp.send(&json!({"type": "say", "text": text}));
        let message = alice.expect_event("message");
        assert_eq!(message["text"], text);
    }
    let datagram = json!({"type": "direct", "from": "mallory", "id": 1, "text": DIRECT_FORGERY});
    mallory.send_datagram(datagram.to_string().as_bytes(), alice.p2p_addr());
    let direct = alice.expect_event("direct");
    assert_eq!(direct["text"], DIRECT_FORGERY);
}
