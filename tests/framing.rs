//! Framing is exact, black-box: a raw TCP client logged into the real server sends the same lines
//! whole, coalesced with the next one in a single write, split in two writes (also inside a
//! multi-byte UTF-8 character), and one byte per write (TCP_NODELAY, a write and flush per byte).
//! Each way, the server parses exactly the same messages: a `say` reaches a real client with the
//! same text, a `list` is answered. Invalid UTF-8 gets the non-fatal `invalid_utf8` error of
//! docs/protocol.md and the connection goes on.
//!
//! Each test sends only a handful of lines on its connection, under any per-connection flood
//! limit's default burst; a server flag that every test here needs goes in [`SERVER_FLAGS`].

mod common;

use common::*;
use serde_json::{json, Value};

/// Flags for every server started here (e.g. a flood limit loose enough for these tests).
const SERVER_FLAGS: &[&str] = &[];

/// Text with one-, two-, three- and four-byte UTF-8 characters.
const WORLD: &str = "héllo wörld — 🌍";

/// How one line is handed to the socket.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    /// One write.
    Whole,
    /// Two writes, cut `at` bytes in.
    Split { at: usize },
    /// One write (and flush) per byte.
    Bytewise,
}

impl Delivery {
    fn send(self, raw: &mut RawConnection, bytes: &[u8]) {
        let result = match self {
            Delivery::Whole => raw.write_pieces([bytes]),
            Delivery::Split { at } => raw.write_pieces([&bytes[..at], &bytes[at..]]),
            Delivery::Bytewise => raw.write_pieces(bytes.chunks(1)),
        };
        result.unwrap_or_else(|e| panic!("sending {self:?} failed: {e}"));
    }
}

/// A server, a real client `alice` who receives, and a raw client `raw` logged in, with
/// TCP_NODELAY, who sends.
fn alice_and_raw() -> (tempfile::TempDir, Server, ChatClient, RawConnection) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), SERVER_FLAGS);
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let (raw, _) = RawConnection::register(server.addr, "raw", "raw-password", 9);
    raw.set_nodelay();
    alice.expect(r#""raw" joined"#, |e| {
        e["event"] == "joined" && e["peer"]["username"] == "raw"
    });
    (dir, server, alice, raw)
}

fn say(text: &str) -> Vec<u8> {
    format!("{}\n", json!({"type": "say", "text": text})).into_bytes()
}

const LIST: &[u8] = b"{\"type\":\"list\"}\n";

/// Where a character of more than one byte starts in `line`, plus one: a cut inside it.
fn inside_a_wide_character(line: &[u8]) -> usize {
    let text = std::str::from_utf8(line).unwrap();
    let (start, c) = text
        .char_indices()
        .find(|(_, c)| c.len_utf8() == 4)
        .expect("a four-byte character");
    assert_eq!(c.len_utf8(), 4);
    start + 2
}

fn expect_said(alice: &mut ChatClient, text: &str) {
    let message = alice.expect_event("message");
    assert_eq!(
        (&message["from"], &message["text"]),
        (&json!("raw"), &json!(text)),
        "{message}"
    );
}

fn expect_peer_list(raw: &mut RawConnection) {
    let answer: Value = raw.read_json().expect("an answer to list");
    assert_eq!(answer["type"], "peers", "{answer}");
    assert_eq!(peer_names(&answer), ["alice", "raw"], "{answer}");
}

#[test]
fn a_say_arrives_identically_whole_split_and_byte_by_byte() {
    let (_dir, _server, mut alice, mut raw) = alice_and_raw();
    let probe = say(WORLD);
    let ways = [
        Delivery::Whole,
        Delivery::Split { at: 1 },
        Delivery::Split {
            at: inside_a_wide_character(&probe),
        },
        Delivery::Split {
            at: probe.len() - 1, // the newline alone in the second write
        },
        Delivery::Bytewise,
    ];
    for (i, way) in ways.into_iter().enumerate() {
        let text = format!("{i}: {WORLD}");
        way.send(&mut raw, &say(&text));
        expect_said(&mut alice, &text);
    }
    // Nothing else was relayed, and nothing came back to the sender but what it asked for.
    alice.send("/stats"); // a marker: every event before it has been printed
    let seen = alice.until("the marker", |e| e["event"] == "direct_stats");
    assert!(
        !seen.iter().any(|e| e["event"] == "message"),
        "an extra message: {seen:#?}"
    );
    raw.write_pieces([LIST]).unwrap();
    expect_peer_list(&mut raw);
}

#[test]
fn lines_coalesced_in_one_write_are_each_parsed() {
    let (_dir, _server, mut alice, mut raw) = alice_and_raw();
    // Two says and a list in one write; then a say whose end shares a write with a list's start.
    let mut bytes = say("first of three");
    bytes.extend(say(&format!("second, {WORLD}")));
    bytes.extend_from_slice(LIST);
    Delivery::Whole.send(&mut raw, &bytes);
    expect_said(&mut alice, "first of three");
    expect_said(&mut alice, &format!("second, {WORLD}"));
    expect_peer_list(&mut raw);

    let mut bytes = say("straddling");
    let cut = bytes.len() - 3;
    bytes.extend_from_slice(LIST);
    Delivery::Split { at: cut }.send(&mut raw, &bytes);
    expect_said(&mut alice, "straddling");
    expect_peer_list(&mut raw);
}

#[test]
fn a_list_is_answered_however_it_is_cut() {
    let (_dir, _server, _alice, mut raw) = alice_and_raw();
    for way in [
        Delivery::Whole,
        Delivery::Split { at: 7 },
        Delivery::Bytewise,
    ] {
        way.send(&mut raw, LIST);
        expect_peer_list(&mut raw);
    }
    // "\r\n" is a terminator too, even with the '\r' and '\n' in different writes.
    Delivery::Split { at: LIST.len() - 1 }.send(&mut raw, b"{\"type\":\"list\"}\r\n");
    expect_peer_list(&mut raw);
}

#[test]
fn invalid_utf8_gets_a_non_fatal_error_and_the_connection_goes_on() {
    let (_dir, _server, mut alice, mut raw) = alice_and_raw();
    let bad_lines: [&[u8]; 2] = [
        // A byte that is never UTF-8, inside a string.
        b"{\"type\":\"say\",\"text\":\"\xff\"}\n",
        // A four-byte character cut short: its first two bytes, then the line ends.
        b"{\"type\":\"say\",\"text\":\"\xf0\x9f\"}\n",
    ];
    for (i, line) in bad_lines.iter().enumerate() {
        Delivery::Split { at: 23 }.send(&mut raw, line);
        let error = raw.read_json().expect("an error");
        assert_eq!(error["type"], "error", "line {i}: {error}");
        assert_eq!(error["code"], "invalid_utf8", "line {i}: {error}");
        assert_eq!(error["fatal"], false, "line {i}: {error}");
    }
    // The stream is still framed: the next line, in pieces, is a normal message.
    let text = format!("after the bad bytes, {WORLD}");
    Delivery::Bytewise.send(&mut raw, &say(&text));
    expect_said(&mut alice, &text);
    raw.write_pieces([LIST]).unwrap();
    expect_peer_list(&mut raw);
}

/// A line of exactly the cap (65,536 bytes, which docs/protocol.md says does not count "\r\n")
/// whose '\r' and '\n' arrive in different writes is accepted. (The fuzzer found it refused with
/// a fatal `line_too_long` when the two bytes landed in different reads.)
#[test]
fn a_line_of_exactly_the_cap_is_accepted_with_its_crlf_in_two_writes() {
    let (_dir, _server, mut alice, mut raw) = alice_and_raw();
    let overhead = say("").len() - 1; // without the newline
    let text = "a".repeat(p2pchat::protocol::MAX_LINE_BYTES - overhead);
    let mut line = say(&text);
    line.pop(); // the '\n'
    assert_eq!(line.len(), p2pchat::protocol::MAX_LINE_BYTES);
    line.extend_from_slice(b"\r\n");
    Delivery::Split { at: line.len() - 1 }.send(&mut raw, &line);
    raw.write_pieces([LIST]).unwrap();
    expect_peer_list(&mut raw);
    expect_said(&mut alice, &text);
}
