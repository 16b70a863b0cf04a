//! The client as a person uses it, black-box, on a real pseudo-terminal (tests/common/pty.rs):
//! tab completion, the history file across a restart, the readline keys (Ctrl-C, Ctrl-D), the
//! time at the start of lines, colour and `NO_COLOR`, own lines (actions too), the bell and the
//! highlight (on an action naming you too), and the forgiving command parsing. bob is a `--json` client, so what alice's keys really sent is read from
//! what bob received, not guessed from alice's screen.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{SystemTime, UNIX_EPOCH};

use common::pty::*;
use common::*;

/// Up arrow, as an xterm sends it.
const UP: &str = "\x1b[A";
const TAB: &str = "\t";
const CTRL_C: &str = "\x03";
const CTRL_D: &str = "\x04";
const BELL: char = '\u{7}';
/// Bold reverse video: how the client highlights a line naming you or a direct message.
const HIGHLIGHT: &[u8] = b"\x1b[1;7m";

/// A server with bob online (a `--json` client).
struct Room {
    _dir: tempfile::TempDir,
    server: Server,
    bob: ChatClient,
}

fn room() -> Room {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let bob = ChatClient::register(server.addr, "bob", "bob-password");
    Room {
        _dir: dir,
        server,
        bob,
    }
}

impl Room {
    /// alice on a terminal, registered, with her own temporary home.
    fn alice(&self, flags: &[&str]) -> TerminalClient {
        let mut alice = TerminalClient::start(self.server.addr, flags);
        alice.register("alice", "alice-password");
        alice.wait_for("-!- online (2): alice, bob");
        // The prompt: the line editor has the terminal (raw mode) from here on. A key typed
        // before reaches the terminal's own line discipline, where Ctrl-C is SIGINT.
        alice.wait_for("> ");
        alice
    }

    /// alice on a terminal at `home`, registered, her lines without the time and colour (names
    /// stay bold), at the prompt.
    fn plain_alice(&self, home: &std::path::Path) -> TerminalClient {
        let mut alice = TerminalClient::start_at_home(
            self.server.addr,
            &["--no-timestamps"],
            &[("NO_COLOR", "1")],
            home,
        );
        alice.register("alice", "alice-password");
        alice.wait_for("> ");
        alice
    }

    /// Waits until bob has the room message `text` from alice.
    fn bob_hears(&mut self, text: &str) {
        self.bob.expect(&format!("alice says {text:?}"), |e| {
            e["event"] == "message" && e["from"] == "alice" && e["text"] == text
        });
    }
}

/// `text` without its escape sequences (CSI, with their parameters).
fn without_escapes(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Whether `text` has an SGR sequence (ESC [ digits and semicolons, then `m`) that sets a
/// colour: a parameter of 30–39, 40–49, 90–97 or 100–107. Bold, faint and reverse video are
/// not colour (no-color.org).
fn has_colour_code(text: &str) -> bool {
    text.match_indices("\u{1b}[").any(|(at, _)| {
        let rest = &text[at + 2..];
        let params = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_digit() || c == ';')
                .len();
        rest[params..].starts_with('m')
            && rest[..params]
                .split(';')
                .any(|p| matches!(p.parse::<u8>(), Ok(30..=49 | 90..=97 | 100..=107)))
    })
}

/// A POSIX TZ rule for UTC+05:30 (the sign is west-positive): a zone whose minutes differ from
/// UTC's, so a clock that ignored the time zone, or read only whole hours, would show.
const HALF_PAST_FIVE_EAST: &str = "XST-5:30";

/// The time now as `HH:MM` in the zone [`HALF_PAST_FIVE_EAST`] names: UTC+05:30.
fn hh_mm_half_past_five_east() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 5 * 3600
        + 30 * 60;
    format!("{:02}:{:02}", seconds / 3600 % 24, seconds / 60 % 60)
}

#[test]
fn tab_after_at_completes_an_online_name_to_a_direct_message() {
    let mut room = room();
    let mut alice = room.alice(&[]);
    alice.type_keys(&format!("@b{TAB}"));
    alice.wait_for("@bob: ");
    alice.type_keys("completed\r");
    room.bob.expect("alice's direct message", |e| {
        e["event"] == "direct" && e["from"] == "alice" && e["text"] == "completed"
    });
}

#[test]
fn tab_after_msg_completes_a_name_and_after_a_slash_a_command() {
    let mut room = room();
    let mut alice = room.alice(&[]);
    alice.type_keys(&format!("/msg b{TAB}"));
    alice.wait_for("/msg bob ");
    alice.type_keys("via msg\r");
    room.bob.expect("alice's direct message", |e| {
        e["event"] == "direct" && e["text"] == "via msg"
    });
    alice.type_keys(&format!("/pe{TAB}"));
    alice.wait_for("/peers ");
    alice.type_keys("\r");
    alice.wait_for("-!- online (2): alice, bob");
}

#[test]
fn history_survives_a_restart_and_keeps_no_password() {
    let mut room = room();
    let home = tempfile::tempdir().unwrap();
    let mut first = TerminalClient::start_at_home(room.server.addr, &[], &[], home.path());
    first.register("alice", "alice-password");
    first.type_keys("remember this line\r");
    room.bob_hears("remember this line");
    first.type_keys(" secret with a leading space\r");
    room.bob_hears(" secret with a leading space");
    first.type_keys(":q\r");
    assert_eq!(first.wait_exit().code(), Some(0));

    let file = home.path().join("state/p2pchat/history");
    let kept = std::fs::read_to_string(&file).expect("the history file");
    assert!(kept.contains("remember this line"), "{kept:?}");
    assert!(!kept.contains("alice-password"), "{kept:?}");
    assert!(!kept.contains("secret with a leading space"), "{kept:?}");
    assert_eq!(permission_bits(&file), 0o600, "the history file's mode");
    assert_eq!(
        permission_bits(file.parent().unwrap()),
        0o700,
        "the history folder's mode"
    );

    let mut second = TerminalClient::start_at_home(room.server.addr, &[], &[], home.path());
    second.login("alice", "alice-password");
    // Up twice: past ":q" to the line of the previous session.
    second.type_keys(UP);
    second.wait_for(":q");
    second.type_keys(UP);
    second.wait_for("remember this line");
    second.type_keys(" again\r");
    room.bob_hears("remember this line again");
}

#[test]
fn the_history_file_is_bounded_by_history_lines() {
    let mut room = room();
    let home = tempfile::tempdir().unwrap();
    let mut alice = TerminalClient::start_at_home(
        room.server.addr,
        &["--history-lines", "3"],
        &[],
        home.path(),
    );
    alice.register("alice", "alice-password");
    for n in 1..=6 {
        alice.type_keys(&format!("line {n}\r"));
        room.bob_hears(&format!("line {n}"));
    }
    let kept = std::fs::read_to_string(home.path().join("state/p2pchat/history")).unwrap();
    let lines: Vec<&str> = kept.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(lines, ["line 4", "line 5", "line 6"], "{kept:?}");
}

#[test]
fn ctrl_c_on_a_non_empty_line_clears_it_and_the_client_keeps_running() {
    let mut room = room();
    let mut alice = room.alice(&[]);
    alice.type_keys("half typed");
    alice.wait_for("half typed");
    alice.type_keys(CTRL_C);
    alice.type_keys("after ctrl-c\r");
    room.bob_hears("after ctrl-c");
    assert!(alice.is_running());
}

#[test]
fn ctrl_c_on_an_empty_line_exits_130_and_says_goodbye_to_the_server() {
    let mut room = room();
    let mut alice = room.alice(&[]);
    alice.type_keys(CTRL_C);
    let status = alice.wait_exit();
    assert_eq!(
        status.code(),
        Some(130),
        "{status:?} (signal {:?})",
        status.signal()
    );
    room.bob.expect("alice left", |e| {
        e["event"] == "left" && e["username"] == "alice"
    });
}

#[test]
fn ctrl_d_quits_only_on_an_empty_line() {
    let mut room = room();
    let mut alice = room.alice(&[]);
    alice.type_keys("ab");
    alice.wait_for("ab");
    alice.type_keys(CTRL_D);
    alice.type_keys("c\r");
    room.bob_hears("abc");
    alice.type_keys(CTRL_D);
    assert_eq!(alice.wait_exit().code(), Some(0));
}

#[test]
fn every_line_starts_with_the_local_time_and_no_timestamps_hides_it() {
    let mut room = room();
    let home = tempfile::tempdir().unwrap();
    let mut alice = TerminalClient::start_at_home(
        room.server.addr,
        &[],
        &[("TZ", HALF_PAST_FIVE_EAST)],
        home.path(),
    );
    alice.register("alice", "alice-password");
    let before = hh_mm_half_past_five_east();
    room.bob.send("what time is it");
    alice.wait_for("what time is it");
    let after = hh_mm_half_past_five_east();
    let screen = without_escapes(&alice.everything());
    let line = screen
        .lines()
        .find(|l| l.contains("<bob> what time is it"))
        .expect("bob's line");
    // What is left on the terminal's line: the text after the last carriage return.
    let line = line.rsplit('\r').next().unwrap().trim_start_matches(BELL);
    assert!(
        line.starts_with(&format!("{before} <bob>")) || line.starts_with(&format!("{after} <bob>")),
        "{line:?} does not start with the time in TZ={HALF_PAST_FIVE_EAST} ({before} or {after})"
    );

    let mut quiet = TerminalClient::start(room.server.addr, &["--no-timestamps"]);
    quiet.register("carol", "carol-password");
    room.bob.send("no time here");
    let from = quiet.seen;
    quiet.wait_for("no time here");
    let starts = line_starts(&quiet.output_from(from));
    let raw = without_escapes(&String::from_utf8_lossy(&quiet.output_from(from)));
    assert!(
        starts.iter().any(|s| s == "<bob> no time here"),
        "{starts:#?}"
    );
    assert!(
        raw.lines().any(|l| l
            .rsplit('\r')
            .next()
            .unwrap()
            .starts_with("<bob> no time here")),
        "{raw:?}"
    );
}

#[test]
fn names_are_coloured_on_a_terminal_and_never_with_no_color() {
    let mut room = room();
    let mut alice = room.alice(&[]);
    let from = alice.seen;
    room.bob.send("colourful");
    alice.wait_for("colourful");
    let shown = String::from_utf8_lossy(&alice.output_from(from)).into_owned();
    assert!(
        has_colour_code(&shown),
        "no colour by default on a terminal: {shown:?}"
    );

    let home = tempfile::tempdir().unwrap();
    let mut plain =
        TerminalClient::start_at_home(room.server.addr, &[], &[("NO_COLOR", "1")], home.path());
    plain.register("carol", "carol-password");
    room.bob.send("hey carol, in black and white");
    plain.wait_for("in black and white");
    let everything = plain.everything();
    assert!(
        !has_colour_code(&everything),
        "colour despite NO_COLOR: {everything:?}"
    );
}

#[test]
fn own_lines_show_as_name_and_text() {
    let mut room = room();
    let home = tempfile::tempdir().unwrap();
    let mut alice = room.plain_alice(home.path());
    let from = alice.seen;
    alice.type_keys("hello room\r");
    room.bob_hears("hello room");
    alice.wait_for_line("<alice> hello room");
    let starts = line_starts(&alice.output_from(from));
    assert!(
        starts.iter().any(|s| s == "<alice> hello room"),
        "{starts:#?}"
    );
}

#[test]
fn your_own_action_shows_as_star_your_name() {
    let mut room = room();
    let home = tempfile::tempdir().unwrap();
    let mut alice = room.plain_alice(home.path());
    let from = alice.seen;
    alice.type_keys("/me waves\r");
    room.bob.expect("alice's action", |e| {
        e["event"] == "action" && e["from"] == "alice" && e["text"] == "waves"
    });
    // A plain line after it: once it is on the screen, the action's echo (shown first) is too.
    alice.type_keys("and says hi\r");
    room.bob_hears("and says hi");
    alice.wait_for_line("<alice> and says hi");
    let starts = line_starts(&alice.output_from(from));
    assert!(
        starts.iter().any(|s| s == "* alice waves"),
        "your own action is not shown as `* alice waves`: {starts:#?}"
    );
}

#[test]
fn an_action_naming_you_is_highlighted_and_rings_like_a_line_naming_you() {
    let mut room = room();
    let mut alice = room.alice(&[]);
    let from = alice.seen;
    room.bob.send("/me waves at everyone");
    alice.wait_for("waves at everyone");
    let quiet = alice.output_from(from);
    assert!(!quiet.contains(&(BELL as u8)), "a bell without a mention");
    assert!(
        find(&quiet, HIGHLIGHT).is_none(),
        "highlighted without a mention"
    );

    let from = alice.seen;
    room.bob.send("/me pokes alice");
    alice.wait_for("pokes alice");
    let shown = alice.output_from(from);
    assert!(
        shown.contains(&(BELL as u8)),
        "no bell on an action naming you: {:?}",
        String::from_utf8_lossy(&shown)
    );
    assert!(
        find(&shown, HIGHLIGHT).is_some(),
        "an action naming you is not highlighted: {:?}",
        String::from_utf8_lossy(&shown)
    );
    // As a line naming you is.
    let from = alice.seen;
    room.bob.send("alice, look");
    alice.wait_for("look");
    let line = alice.output_from(from);
    assert!(line.contains(&(BELL as u8)) && find(&line, HIGHLIGHT).is_some());
}

#[test]
fn a_mention_or_a_direct_message_rings_the_bell_unless_no_bell() {
    let mut room = room();
    let mut alice = room.alice(&[]);
    let from = alice.seen;
    room.bob.send("nothing for anyone");
    alice.wait_for("nothing for anyone");
    assert!(
        !alice.output_from(from).contains(&(BELL as u8)),
        "a bell without a mention"
    );
    let from = alice.seen;
    room.bob.send("alice: look");
    alice.wait_for("look");
    assert!(
        alice.output_from(from).contains(&(BELL as u8)),
        "no bell on a mention"
    );
    let from = alice.seen;
    room.bob.send("@alice: psst");
    alice.wait_for("psst");
    assert!(
        alice.output_from(from).contains(&(BELL as u8)),
        "no bell on a direct message"
    );

    let mut quiet = TerminalClient::start(room.server.addr, &["--no-bell"]);
    quiet.register("carol", "carol-password");
    // bob can only send carol a direct message once he knows her address.
    room.bob.expect(r#""carol" joined"#, |e| {
        e["event"] == "joined" && e["peer"]["username"] == "carol"
    });
    let from = quiet.seen;
    room.bob.send("carol: quietly");
    room.bob.send("@carol: quietly too");
    quiet.wait_for("quietly too");
    assert!(
        !quiet.output_from(from).contains(&(BELL as u8)),
        "a bell despite --no-bell"
    );
}

#[test]
fn commands_are_forgiving_and_clear_clears_the_screen() {
    let room = room();
    let mut alice = room.alice(&[]);
    alice.type_keys("/PEERS now please\r");
    alice.wait_for("-!- online (2): alice, bob");
    alice.type_keys("/msg\r");
    alice.wait_for("usage: @NAME: TEXT or /msg NAME TEXT");
    alice.type_keys("/Clear\r");
    alice.wait_for("\u{1b}[2J");
    alice.type_keys(":Q\r");
    assert_eq!(alice.wait_exit().code(), Some(0));
}

/// The help lists every key this suite presses and the flags it uses.
#[test]
fn help_documents_the_keys_and_flags() {
    let output = std::process::Command::new(client_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "Tab",
        "Ctrl-C",
        "Ctrl-D",
        "130",
        "--no-timestamps",
        "--no-color",
        "--no-bell",
        "--history-lines",
        "NO_COLOR",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle}:\n{help}"
        );
    }
}
