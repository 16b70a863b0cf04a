//! The person's own lines tell the truth, black-box: the real binaries, a person on a real
//! pseudo-terminal (tests/common/pty.rs), the others scripted (`--json`).
//!
//! - A line typed while the server is away (the client reconnecting) is shown marked
//!   `[queued]`, never as said; once logged in again the lines go, in order, and the client says
//!   `-!- 2 queued lines sent`.
//! - A direct message to someone offline or unknown, or to oneself, is refused before it is
//!   shown as said (no `[direct to …]` line, no false "forged" warning); one to someone online
//!   is shown as said.
//! - `--json` reports each own line as `own_line` (with `queued`), `own_direct` and
//!   `queued_sent`; a refused one only as an error.

mod common;

use common::pty::{line_starts, TerminalClient};
use common::*;

#[test]
fn lines_typed_while_the_server_is_away_are_shown_queued_then_sent_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let mut server = Server::start_with_keys("127.0.0.1:0", &users, dir.path());
    let addr = server.addr;
    let mut alice = TerminalClient::start(addr, &["--no-color"]);
    alice.register("alice", "alice-password");

    server.kill();
    alice.wait_for("reconnecting in");
    let from = alice.seen;
    // One line at a time, each once the one before shows (type-ahead is another test's).
    alice.type_keys("first away\r");
    alice.wait_for_line("[queued] <alice> first away");
    alice.type_keys("second away\r");
    alice.wait_for_line("[queued] <alice> second away");
    let shown = line_starts(&alice.output_from(from));
    for text in ["first away", "second away"] {
        assert!(
            shown.contains(&format!("[queued] <alice> {text}")),
            "{text:?} is not shown as queued: {shown:#?}"
        );
        assert!(
            !shown.contains(&format!("<alice> {text}")),
            "{text:?} is shown as said while the server is away: {shown:#?}"
        );
    }

    // Alice waits (stopped) while the server comes back and bob is in the room, so that bob is
    // there when her lines go, whatever the order the two would otherwise come in.
    let frozen = alice.freeze();
    let _server = Server::start_with_keys(&addr.to_string(), &users, dir.path());
    let mut bob = ChatClient::register(addr, "bob", "bob-password");
    drop(frozen);
    alice.wait_for("-!- logged in as alice");
    alice.wait_for("-!- 2 queued lines sent");
    let texts: Vec<_> = (0..2)
        .map(|_| bob.expect_event("message")["text"].clone())
        .collect();
    assert_eq!(texts, ["first away", "second away"]);

    // Connected again: a line is shown as said, unmarked.
    let from = alice.seen;
    alice.type_keys("back again\r");
    assert_eq!(bob.expect_event("message")["text"], "back again");
    alice.wait_for_line("<alice> back again");
    let shown = line_starts(&alice.output_from(from));
    assert!(
        shown.contains(&"<alice> back again".to_string()),
        "{shown:#?}"
    );
}

#[test]
fn a_script_is_told_which_lines_wait_for_the_server_and_when_they_went() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let mut server = Server::start_with_keys("127.0.0.1:0", &users, dir.path());
    let addr = server.addr;
    let mut alice =
        ChatClient::register_with_flags(addr, "alice", "alice-password", &["--reconnect"]);
    alice.send("while here");
    let own = alice.expect_event("own_line");
    assert_eq!(own["text"], "while here");
    assert_eq!(own["queued"], false);

    server.kill();
    alice.expect_event("reconnecting");
    alice.send("/me waits");
    let own = alice.expect_event("own_line");
    assert_eq!(own["from"], "alice");
    assert_eq!(own["kind"], "action");
    assert_eq!(own["queued"], true);

    let _server = Server::start_with_keys(&addr.to_string(), &users, dir.path());
    alice.expect_event("welcome");
    assert_eq!(alice.expect_event("queued_sent")["lines"], 1);
}

#[test]
fn a_direct_message_that_cannot_go_is_refused_before_it_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let mut alice = TerminalClient::start(server.addr, &["--no-color"]);
    alice.register("alice", "alice-password");
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    alice.wait_for("--> bob joined");

    // One line at a time (type-ahead is another test's). Each refusal is waited for and the
    // screen looked at then: an echo, had there been one, comes before it.
    let shown_as_said = |alice: &TerminalClient, from: usize| {
        let shown = line_starts(&alice.output_from(from));
        assert!(
            !shown.iter().any(|line| line.starts_with("[direct to")),
            "a direct message that did not go is shown as said: {shown:#?}"
        );
        let everything = shown.join("\n");
        assert!(!everything.contains("direct message sent"), "{everything}");
    };
    let from = alice.seen;
    alice.type_keys("@nobody: are you there?\r");
    alice.wait_for("no such user online: nobody; nothing was sent");
    shown_as_said(&alice, from);
    // To oneself, in any case: refused here, rather than sent and dropped as forged.
    for line in ["/msg alice note to self", "/msg ALICE louder"] {
        let from = alice.seen;
        alice.type_keys(&format!("{line}\r"));
        alice.wait_for("that is you: a direct message goes to someone else; nothing was sent");
        shown_as_said(&alice, from);
    }

    // One that goes is shown as said, and arrives.
    alice.type_keys("@bob: lunch?\r");
    alice.wait_for_line("[direct to bob] <alice> lunch?");
    assert_eq!(bob.expect_event("direct")["text"], "lunch?");
    alice.type_keys("/stats\r");
    alice.wait_for("direct messages");
    assert!(
        !alice.everything().contains("forged"),
        "{}",
        alice.everything()
    );
}

#[test]
fn a_script_sees_a_refused_direct_message_only_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let _bob = ChatClient::register(server.addr, "bob", "bob-password");
    alice.expect_joined("bob");
    alice.send("@carol: hi");
    alice.send("@bob: hi bob");
    let seen = alice.until("the direct message to bob", |e| e["event"] == "own_direct");
    let refused: Vec<_> = seen.iter().filter(|e| e["event"] == "error").collect();
    assert_eq!(refused.len(), 1, "{seen:#?}");
    assert_eq!(
        refused[0]["message"],
        "no such user online: carol; nothing was sent"
    );
    let own = seen.last().unwrap();
    assert_eq!(own["to"], "bob");
    assert_eq!(own["text"], "hi bob");
    assert_eq!(own["from"], "alice");
    assert_eq!(
        seen.iter().filter(|e| e["event"] == "own_direct").count(),
        1,
        "{seen:#?}"
    );
    assert_eq!(alice.expect_event("direct_sent")["to"], "bob");
}
