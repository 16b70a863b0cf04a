//! Keys as they reach the client's terminal, black-box on a real pseudo-terminal
//! (tests/common/pty.rs): lines arriving many in one read (type-ahead, `tmux send-keys`, a
//! paste without bracketed paste) are all sent, in order, as are lines typed a key at a time; a
//! password typed ahead while the server checks the previous one never shows and is discarded;
//! the trust question takes the server's fingerprint pasted. bob is a `--json` client, so what
//! alice's keys really sent is read from what bob received.

mod common;

use common::pty::*;
use common::*;

/// A server with bob online (a `--json` client).
struct Room {
    _dir: tempfile::TempDir,
    server: Server,
    bob: ChatClient,
}

fn room(server_flags: &[&str]) -> Room {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), server_flags);
    let bob = ChatClient::register(server.addr, "bob", "bob-password");
    Room {
        _dir: dir,
        server,
        bob,
    }
}

impl Room {
    /// alice on a terminal, registered, the line editor waiting for her keys.
    fn alice(&self) -> TerminalClient {
        let mut alice = TerminalClient::start(self.server.addr, &[]);
        alice.register("alice", "alice-password");
        alice.wait_for("-!- online (2): alice, bob");
        // The prompt: the line editor has the terminal from here on.
        alice.wait_for("> ");
        alice
    }

    /// Waits until bob has `text` from alice; returns alice's room lines up to it, in order.
    fn bob_hears_until(&mut self, text: &str) -> Vec<String> {
        self.bob
            .until(&format!("alice says {text:?}"), |e| {
                e["event"] == "message" && e["from"] == "alice" && e["text"] == text
            })
            .iter()
            .filter(|e| e["event"] == "message" && e["from"] == "alice")
            .map(|e| e["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

#[test]
fn thirty_lines_arriving_in_one_read_are_all_sent_in_order() {
    let mut room = room(&[]);
    let mut alice = room.alice();
    let burst: Vec<String> = (0..30).map(|n| format!("burst-{n:02}")).collect();
    // One write: the client reads them together (no bracketed paste around them).
    alice.type_keys(
        &burst
            .iter()
            .map(|line| format!("{line}\r"))
            .collect::<String>(),
    );
    let mut heard = room.bob_hears_until("burst-00");
    // Once the first arrived the burst has been read; a line typed now is a read of its own,
    // and the last thing alice sends: every line of the burst must come before it.
    alice.type_keys("after the burst\r");
    heard.extend(room.bob_hears_until("after the burst"));
    let mut expected = burst.clone();
    expected.push("after the burst".into());
    assert_eq!(heard, expected);
}

#[test]
fn lines_typed_one_key_at_a_time_are_all_sent() {
    let mut room = room(&[]);
    let mut alice = room.alice();
    for line in ["one key", "at a time", "each"] {
        for key in line.chars() {
            alice.type_keys(&key.to_string());
            // Its echo: the editor has read this key before the next is typed.
            alice.wait_for(&key.to_string());
        }
        alice.type_keys("\r");
        assert_eq!(room.bob_hears_until(line), [line]);
    }
}

#[test]
fn a_password_typed_ahead_while_the_server_checks_never_shows_and_the_next_prompt_takes_it() {
    // Every failure delays the next attempt on the account by 2 s: the check of alice's wrong
    // password takes that long, time in which she types the right one ahead.
    let flags = [
        "--login-free-failures",
        "0",
        "--login-delay",
        "2",
        "--login-delay-max",
        "2",
    ];
    let room = room(&flags);
    let mut setup = RawConnection::connect(room.server.addr);
    assert_eq!(
        setup.authenticate(true, "alice", "alice-password")["type"],
        "welcome"
    );
    drop(setup);
    let mut guess = RawConnection::connect(room.server.addr);
    assert_eq!(
        guess.authenticate(false, "alice", "a-guess")["code"],
        "bad_credentials"
    );

    let mut alice = TerminalClient::start(room.server.addr, &[]);
    alice.answer("login or register? ", "login");
    alice.answer("username: ", "alice");
    let from = alice.answer_secret("password: ", "not-her-password");
    // The terminal moved to the next line: the first password is read and being checked.
    alice.wait_for("\n");
    alice.type_keys("alice-password\n");
    alice.wait_for("unknown user or wrong password; please try again");
    // What was typed ahead is gone: the login waits for the password typed at this prompt.
    alice.answer("password: ", "alice-password");
    alice.wait_for("-!- logged in as alice");

    let shown = String::from_utf8_lossy(&alice.output_from(from)).into_owned();
    for secret in ["alice-password", "not-her-password"] {
        assert!(!shown.contains(secret), "{secret:?} shown: {shown:?}");
    }
    assert!(
        shown.contains("checking…"),
        "no sign of the check: {shown:?}"
    );
}

#[test]
fn the_trust_question_takes_the_servers_fingerprint_pasted_and_refuses_another() {
    let room = room(&[]);
    let config = tempfile::tempdir().unwrap();
    let known = config.path().join("known_servers");
    let known_flag = known.to_str().unwrap();
    let mut alice = TerminalClient::start(room.server.addr, &["--known-servers", known_flag]);
    let fingerprint = room.server.fingerprint.expect("a TLS server").to_string();
    let other = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    alice.answer("(yes/no/[fingerprint])? ", other);
    alice.wait_for(&format!(
        "{other} is not this server's fingerprint: it is {fingerprint}"
    ));
    alice.answer("Please type 'yes', 'no' or the fingerprint: ", &fingerprint);
    alice.register("alice", "alice-password");
    let recorded = std::fs::read_to_string(&known).expect("the known-servers file");
    assert!(recorded.contains(&fingerprint), "{recorded:?}");
}

#[test]
fn with_accept_new_a_terminal_is_not_asked_and_the_server_is_recorded_with_a_notice() {
    let room = room(&[]);
    let config = tempfile::tempdir().unwrap();
    let known = config.path().join("known_servers");
    let known_flag = known.to_str().unwrap();
    let mut alice = TerminalClient::start(
        room.server.addr,
        &["--known-servers", known_flag, "--accept-new"],
    );
    let fingerprint = room.server.fingerprint.expect("a TLS server").to_string();
    // The first question, whichever it is: the trust question would end "(yes/no/[fingerprint])? ".
    let end = alice.wait_for("? ");
    let shown = String::from_utf8_lossy(&alice.output_from(0)[..end]).into_owned();
    assert!(shown.ends_with("login or register? "), "{shown:?}");
    assert!(
        shown.contains(&format!(
            "first contact with {} (--accept-new): trusting its fingerprint {fingerprint}",
            room.server.addr
        )),
        "{shown:?}"
    );
    alice.type_keys("register\r");
    alice.answer("username: ", "alice");
    alice.answer(NEW_PASSWORD_PROMPT, "alice-password");
    alice.answer("password again: ", "alice-password");
    alice.wait_for("-!- logged in as alice");
    let recorded = std::fs::read_to_string(&known).expect("the known-servers file");
    assert_eq!(recorded, format!("{} {fingerprint}\n", room.server.addr));
}

#[test]
fn ctrl_c_at_the_password_prompt_ends_the_client_with_echo_on_again() {
    use std::os::unix::process::ExitStatusExt;

    let room = room(&[]);
    let mut alice = TerminalClient::start(room.server.addr, &[]);
    alice.answer("login or register? ", "login");
    alice.answer("username: ", "alice");
    alice.wait_for("password: ");
    // Echo is off at the prompt; Ctrl-C is still the terminal's SIGINT.
    assert!(!alice
        .settings()
        .local_modes
        .contains(rustix::termios::LocalModes::ECHO));
    alice.type_keys("\x03");
    let status = alice.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    assert!(
        alice
            .settings()
            .local_modes
            .contains(rustix::termios::LocalModes::ECHO),
        "the shell is left without echo"
    );
}
