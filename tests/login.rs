//! Logging in, black-box (issue 18, items 6 and 7): the real binaries, people on real
//! pseudo-terminals where the behaviour is a terminal's.
//!
//! - A login the server's throttle holds back is told so (`delayed`, before the wait), and the
//!   client shows it at the prompt with the seconds; so is a name check before a registration. A
//!   client that does not ask (`tell_delays`, as every older client) is never sent it.
//! - A login that proves the password takes the name over from a session left online (a laptop
//!   that slept): the old connection is told `replaced` and closed, the others see it leave and
//!   the new one join with its own endpoint, direct messages reach the new client, and an old
//!   client that was replaced says why and exits 7 without connecting again.

mod common;

use std::path::Path;

use common::pty::{TerminalClient, NEW_PASSWORD_PROMPT};
use common::*;
use serde_json::{json, Value};
use tempfile::TempDir;

/// A server where alice and bob have accounts, that delays the next login from an address
/// (or on an account) by `delay` seconds after a single failure.
fn server_delaying_after_one_failure(delay: &str) -> (TempDir, Server) {
    let dir = TempDir::new().unwrap();
    let users = dir.path().join("users.json");
    let flags = [
        "--login-free-failures",
        "1",
        "--login-delay",
        delay,
        "--login-delay-max",
        delay,
    ];
    let server = Server::start(&users, &flags);
    for name in ["alice", "bob"] {
        ChatClient::register(server.addr, name, &format!("{name}-password")).finish();
    }
    (dir, server)
}

/// A failed login from this host (127.0.0.1) on an account nobody uses: the address's next
/// login waits, whichever account it is for.
fn fail_once_from_this_address(server: &Server) {
    let mut guesser = RawConnection::connect(server.addr);
    let answer = guesser.authenticate(false, "nobody", "wrong-password");
    assert_eq!(answer["code"], "bad_credentials", "{answer}");
}

/// The seconds in "…: N s" at `offset` of the terminal's output.
fn seconds_at(terminal: &TerminalClient, offset: usize) -> f64 {
    let rest = String::from_utf8_lossy(&terminal.output_from(offset)).into_owned();
    let number = rest.split(" s").next().unwrap_or_default();
    number
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no seconds after the notice: {rest:?}"))
}

#[test]
fn a_delayed_login_is_told_at_the_prompt_with_its_seconds() {
    let (_dir, server) = server_delaying_after_one_failure("2");
    fail_once_from_this_address(&server);

    let mut alice = TerminalClient::start(server.addr, &[]);
    alice.answer("login or register? ", "login");
    alice.answer("username: ", "alice");
    alice.answer("password: ", "alice-password");
    let notice = alice.wait_for("the server delays logins from this address: ");
    let seconds = seconds_at(&alice, notice);
    assert!(seconds > 0.0 && seconds <= 2.0, "{seconds} s");
    // The answer follows the wait, after the notice.
    alice.wait_for("-!- logged in as alice");
    server.wait_for_log("login as \"alice\" delayed after 1 recent failures");
}

#[test]
fn a_delayed_name_check_is_told_before_the_password_is_asked() {
    let (_dir, server) = server_delaying_after_one_failure("2");
    fail_once_from_this_address(&server);

    let mut carol = TerminalClient::start(server.addr, &[]);
    carol.answer("login or register? ", "register");
    carol.answer("username: ", "carol");
    let notice = carol.wait_for("the server delays logins from this address: ");
    let seconds = seconds_at(&carol, notice);
    assert!(seconds > 0.0 && seconds <= 2.0, "{seconds} s");
    carol.answer(NEW_PASSWORD_PROMPT, "carol-password");
    carol.answer("password again: ", "carol-password");
    carol.wait_for("-!- logged in as carol");
}

#[test]
fn a_delay_is_an_event_for_programs_and_never_sent_to_a_client_that_did_not_ask() {
    let (_dir, server) = server_delaying_after_one_failure("1");
    // As every older client logs in: no `tell_delays`, so nothing but the answer comes.
    fail_once_from_this_address(&server);
    let mut old = RawConnection::connect(server.addr);
    let answer = old.authenticate(false, "alice", "alice-password");
    assert_eq!(answer["type"], "welcome", "{answer}");
    server.wait_for_log("login as \"alice\" delayed after 1 recent failures");
    drop(old);
    server.wait_for_log("alice left");

    // A client that asks is told before the wait: the event, then its welcome.
    fail_once_from_this_address(&server);
    let mut asks = RawConnection::connect(server.addr);
    let login = json!({
        "type": "login", "username": "bob", "password": "bob-password",
        "p2p_port": asks.made_up_p2p_port(), "tell_delays": true,
    });
    asks.send(&login);
    let delayed = asks.read_json().expect("an answer");
    assert_eq!(delayed["type"], "delayed", "{delayed}");
    assert_eq!(delayed["reason"], "address", "{delayed}");
    let seconds = delayed["seconds"].as_f64().expect("seconds");
    assert!(seconds > 0.0 && seconds <= 1.0, "{delayed}");
    assert_eq!(asks.read_json().expect("a welcome")["type"], "welcome");

    // The client's --json: a `delayed` event before its welcome.
    fail_once_from_this_address(&server);
    let mut alice = ChatClient::start(server.addr, "alice", &["login", "alice", "alice-password"]);
    let seen = alice.until("the welcome", |e| e["event"] == "welcome");
    let delayed: Vec<&Value> = seen.iter().filter(|e| e["event"] == "delayed").collect();
    assert_eq!(delayed.len(), 1, "{seen:#?}");
    assert_eq!(delayed[0]["reason"], "address");
    assert!(delayed[0]["seconds"]
        .as_f64()
        .is_some_and(|s| s > 0.0 && s <= 1.0));
}

/// A server where alice and bob have accounts.
fn server_with_alice_and_bob(users: &Path) -> Server {
    let server = Server::start(users, &[]);
    for name in ["alice", "bob"] {
        ChatClient::register(server.addr, name, &format!("{name}-password")).finish();
    }
    server
}

#[test]
fn a_login_takes_over_a_session_left_online_and_direct_messages_reach_the_new_client() {
    let dir = TempDir::new().unwrap();
    let server = server_with_alice_and_bob(&dir.path().join("users.json"));
    let mut bob = ChatClient::login(server.addr, "bob", "bob-password");
    // alice's laptop, asleep: logged in, and never answers again.
    let mut asleep = RawConnection::connect(server.addr);
    let welcome = asleep.authenticate(false, "alice", "alice-password");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let old_port = asleep.made_up_p2p_port();
    bob.expect_joined("alice");

    let mut alice = ChatClient::login(server.addr, "alice", "alice-password");
    let new_port = alice.p2p_addr().port();
    assert_ne!(old_port, new_port);

    // The old connection is told why, then closed.
    let told = asleep.read_until_closed();
    let replaced = told
        .iter()
        .find(|m| m["type"] == "error")
        .unwrap_or_else(|| panic!("no error before the close: {told:#?}"));
    assert_eq!(replaced["code"], "replaced", "{replaced}");
    assert_eq!(replaced["fatal"], true, "{replaced}");
    assert_eq!(
        replaced["message"], "alice logged in from another connection",
        "{replaced}"
    );

    // bob sees the old session leave and the new one join, with its own endpoint and key.
    let seen = bob.until("alice's new session", |e| e["event"] == "joined");
    let left = seen
        .iter()
        .position(|e| e["event"] == "left" && e["username"] == "alice");
    assert!(left.is_some(), "{seen:#?}");
    let joined = seen.last().unwrap();
    assert_eq!(joined["peer"]["username"], "alice");
    assert_eq!(joined["peer"]["p2p_port"], new_port, "{joined}");
    bob.send(":l");
    let peers = bob.expect_event("peers");
    assert_eq!(peer_names(&peers), ["alice", "bob"]);

    // A sealed direct message reaches the new client, under the new session's key.
    bob.send("@alice: are you back?");
    let direct = alice.expect_event("direct");
    assert_eq!(direct["from"], "bob");
    assert_eq!(direct["text"], "are you back?");
    bob.expect_event("direct_delivered");
    server.wait_for_log("alice left: replaced by a login from another connection");
}

#[test]
fn a_replaced_client_says_why_and_exits_7_without_connecting_again() {
    let dir = TempDir::new().unwrap();
    let server = server_with_alice_and_bob(&dir.path().join("users.json"));
    // On a terminal, where the client connects again after losing the server.
    let mut laptop = TerminalClient::start(server.addr, &[]);
    laptop.login("alice", "alice-password");

    let mut desktop = ChatClient::login(server.addr, "alice", "alice-password");
    laptop.wait_for("alice logged in from another connection");
    let status = laptop.wait_exit();
    assert_eq!(status.code(), Some(7), "{}", laptop.everything());
    assert!(
        !laptop.everything().contains("reconnecting"),
        "{}",
        laptop.everything()
    );

    // The desktop keeps the name: nobody took it back.
    let mut bob = ChatClient::login(server.addr, "bob", "bob-password");
    bob.send(":l");
    let peers = bob.expect_event("peers");
    assert_eq!(peer_names(&peers), ["alice", "bob"]);
    desktop.send("still here");
    let said = bob.expect_event("message");
    assert_eq!(said["from"], "alice");
    assert!(
        !desktop.history.iter().any(|e| e["event"] == "error"),
        "{:#?}",
        desktop.history
    );
    // Registered, the laptop, the desktop: and no fourth, a reconnect.
    assert_eq!(
        server.log().matches("logged in as \"alice\"").count(),
        3,
        "{}",
        server.log()
    );
}
