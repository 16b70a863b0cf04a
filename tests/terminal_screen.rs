//! What a person's screen shows and leaves out, black-box, on a real pseudo-terminal
//! (tests/common/pty.rs): one line per join or leave (the roster at login and on `/peers`
//! only), a direct message without "sent" and "delivered" lines of its own, `/stats` counters
//! named for what they count, lines wrapped at word boundaries under their text at 40 columns,
//! highlights that survive `NO_COLOR`, and Tab at the start of a line. bob is a `--json` client,
//! so what alice's keys sent is read from what bob received, and the JSON events programs read
//! are checked to be all still there.

mod common;

use common::pty::*;
use common::*;
use unicode_width::UnicodeWidthStr;

const TAB: &str = "\t";
/// Bold reverse video: how the client highlights a line naming you or a direct message.
const HIGHLIGHT: &str = "\u{1b}[1;7m";

/// A server with bob online (a `--json` client), and alice on a terminal, registered.
struct Room {
    _dir: tempfile::TempDir,
    /// alice's HOME, XDG_CONFIG_HOME and XDG_STATE_HOME.
    _home: tempfile::TempDir,
    server: Server,
    bob: ChatClient,
    alice: TerminalClient,
}

fn room(env: &[(&str, &str)]) -> Room {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let bob = ChatClient::register(server.addr, "bob", "bob-password");
    let home = tempfile::tempdir().unwrap();
    let mut alice = TerminalClient::start_at_home(server.addr, &[], env, home.path());
    alice.register("alice", "alice-password");
    alice.wait_for("-!- online (2): alice, bob");
    // The prompt: the line editor has the terminal from here on.
    alice.wait_for("> ");
    Room {
        _dir: dir,
        _home: home,
        server,
        bob,
        alice,
    }
}

/// `text` without its escape sequences (CSI, with their parameters) and bells.
fn without_escapes(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\u{7}' => {}
            c => plain.push(c),
        }
    }
    plain
}

#[test]
fn a_join_or_a_leave_is_one_line_and_the_roster_shows_at_login_and_on_peers_only() {
    let mut room = room(&[]);
    let from = room.alice.seen;
    let carol = ChatClient::register(room.server.addr, "carol", "carol-password");
    room.alice.wait_for("--> carol joined");
    // Programs still get the whole list after a join.
    room.bob.expect_joined("carol");
    room.bob.expect_peers(&["alice", "bob", "carol"]);
    carol.finish();
    room.alice.wait_for("<-- carol left");
    room.bob.expect_peers(&["alice", "bob"]);
    // Then the roster, asked for: everything before it is the join's and the leave's.
    room.alice.type_keys("/peers\r");
    let asked = room.alice.wait_for("-!- online (2): alice, bob");
    let shown = room.alice.output_from(from);
    let before_peers = &shown[..asked - from];
    let starts = line_starts(before_peers);
    let rosters: Vec<&String> = starts.iter().filter(|s| s.contains("online (")).collect();
    assert_eq!(
        rosters.len(),
        1,
        "a roster besides the one asked for: {starts:#?}"
    );
    let about_carol: Vec<&String> = starts.iter().filter(|s| s.contains("carol")).collect();
    assert_eq!(
        about_carol,
        ["--> carol joined", "<-- carol left"],
        "{starts:#?}"
    );
}

#[test]
fn a_direct_message_is_its_own_line_and_a_short_delivery_line() {
    let mut room = room(&[]);
    let from = room.alice.seen;
    room.alice.type_keys("@bob: lunch at noon?\r");
    room.bob.expect("alice's direct message", |e| {
        e["event"] == "direct" && e["from"] == "alice" && e["text"] == "lunch at noon?"
    });
    room.alice.wait_for("-!- direct message to bob delivered");
    let starts = line_starts(&room.alice.output_from(from));
    let reports: Vec<&String> = starts
        .iter()
        .filter(|s| s.starts_with("-!-") || s.starts_with("* direct"))
        .collect();
    assert_eq!(
        reports,
        ["-!- direct message to bob delivered"],
        "more than one line about one direct message: {starts:#?}"
    );
    assert!(
        starts
            .iter()
            .any(|s| s == "[direct to bob] <alice> lunch at noon?"),
        "{starts:#?}"
    );
}

#[test]
fn stats_name_what_was_sent_and_acknowledged_apart_from_what_was_received() {
    let mut room = room(&[]);
    room.alice.type_keys("@bob: one\r");
    room.bob.expect("alice's direct message", |e| {
        e["event"] == "direct" && e["text"] == "one"
    });
    room.alice.wait_for("delivered");
    room.alice.type_keys("/stats\r");
    // The last words of the counters' text, then and now.
    let end = room.alice.wait_for("rate-tracked");
    let screen = without_escapes(&String::from_utf8_lossy(&room.alice.output_from(0)[..end]));
    assert!(
        screen.contains(
            "-!- direct messages sent: 1 (1 acknowledged by their recipient, 0 not delivered)"
        ),
        "/stats does not say the message bob acknowledged: {screen:?}"
    );
    assert!(
        screen.contains("-!- datagrams received: 1 (0 message(s) shown, 1 acknowledgement(s)"),
        "{screen:?}"
    );

    // The JSON names the same counters, and keeps the old ones for the scripts that read them.
    room.bob.send("@alice: two");
    room.alice.wait_for("two");
    room.bob.expect_event("direct_delivered");
    let stats = room.bob.stats();
    assert_eq!(stats["sent"], 1, "{stats}");
    assert_eq!(stats["acknowledged"], 1, "{stats}");
    assert_eq!(stats["not_delivered"], 0, "{stats}");
    assert_eq!(stats["shown"], 1, "{stats}");
    assert_eq!(stats["delivered"], 1, "{stats}");
    assert_eq!(stats["acks"], 1, "{stats}");
}

/// The message bob says at 40 columns: words, and wide characters that take two columns each.
const LONG: &str = "the quick brown fox jumps over the lazy dog while 日本語の文字 and 🙂🙂 \
                    keep their places on a narrow screen";

#[test]
fn at_forty_columns_a_line_wraps_at_word_boundaries_under_its_text() {
    let mut room = room(&[]);
    room.alice.resize(40, 20);
    let from = room.alice.seen;
    room.bob.send(LONG);
    room.alice.wait_for("screen");
    let shown = without_escapes(&String::from_utf8_lossy(&room.alice.output_from(from)));
    // The rows the message took: its first (the time, `<bob> `, the text) and those under it.
    let rows: Vec<&str> = shown
        .split("\r\n")
        .map(|row| row.rsplit('\r').next().unwrap_or(row))
        .skip_while(|row| !row.contains("<bob> the"))
        .take_while(|row| !row.is_empty() && !row.starts_with("> "))
        .collect();
    assert!(rows.len() > 1, "the message was not wrapped: {shown:?}");
    let indent = rows[0].find("the").unwrap();
    assert_eq!(
        &rows[0][..indent],
        format!("{} <bob> ", &rows[0][..5]),
        "{rows:#?}"
    );
    for row in &rows {
        assert!(
            row.width() <= 40,
            "{row:?} is wider than 40 columns: {rows:#?}"
        );
    }
    for row in &rows[1..] {
        assert!(
            row.starts_with(&" ".repeat(indent)) && !row[indent..].starts_with(' '),
            "{row:?} does not hang under the text ({indent} columns): {rows:#?}"
        );
    }
    let words: Vec<&str> = rows
        .iter()
        .enumerate()
        .flat_map(|(i, row)| row[if i == 0 { indent } else { 0 }..].split_whitespace())
        .collect();
    assert_eq!(
        words,
        LONG.split_whitespace().collect::<Vec<_>>(),
        "a word was cut: {rows:#?}"
    );
}

#[test]
fn no_color_keeps_highlights_in_reverse_video() {
    let mut room = room(&[("NO_COLOR", "1")]);
    let from = room.alice.seen;
    room.bob.send("alice, look at this");
    room.alice.wait_for("look at this");
    let shown = String::from_utf8_lossy(&room.alice.output_from(from)).into_owned();
    assert!(
        shown.contains(HIGHLIGHT),
        "a line naming alice is not highlighted under NO_COLOR: {shown:?}"
    );
    // And still no colour: no foreground or background colour parameter anywhere.
    let everything = room.alice.everything();
    for (at, _) in everything.match_indices("\u{1b}[") {
        let params: String = everything[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ';')
            .collect();
        if everything[at + 2 + params.len()..].starts_with('m') {
            for p in params.split(';') {
                assert!(
                    !matches!(p.parse::<u8>(), Ok(30..=49 | 90..=107)),
                    "colour {p} despite NO_COLOR: {everything:?}"
                );
            }
        }
    }
}

#[test]
fn tab_at_the_start_of_a_line_completes_a_name_to_address_it() {
    let mut room = room(&[]);
    // The editor completes before it reads the next key: no need to wait for it on the screen.
    room.alice.type_keys(&format!("b{TAB}lunch?\r"));
    let said = room.bob.expect_event("message");
    assert_eq!(said["from"], "alice");
    assert_eq!(said["text"], "bob: lunch?", "{said}");
}
