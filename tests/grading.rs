//! The lab's grading checklist, run against the real binaries: a server on port 0 with a fresh
//! users file, and three scripted clients (`--json`), exactly as a teaching assistant would.

mod common;

use std::collections::HashSet;
use std::net::UdpSocket;

use common::*;
use scrypt::password_hash::{phc::PasswordHash, PasswordVerifier};
use scrypt::Scrypt;
use serde_json::{json, Value};

const PASSWORDS: [(&str, &str); 3] = [
    ("client1", "first-secret-1"),
    ("client2", "second-secret-2"),
    ("client3", "third-secret-3"),
];

fn start_server() -> (tempfile::TempDir, Server) {
    start_server_with(&[])
}

fn start_server_with(flags: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), flags);
    (dir, server)
}

/// Registers client1, client2 and client3 one after the other, checking at each step that
/// everyone's list shows everyone online.
fn register_three(server: &Server) -> [ChatClient; 3] {
    register_three_with(server, &[])
}

/// [`register_three`] with client flags (`--plaintext`).
fn register_three_with(server: &Server, flags: &[&str]) -> [ChatClient; 3] {
    let [(n1, p1), (n2, p2), (n3, p3)] = PASSWORDS;
    let mut c1 = ChatClient::register_with_flags(server.addr, n1, p1, flags);
    assert_eq!(peer_names(c1.history.last().unwrap()), [n1]);

    let mut c2 = ChatClient::register_with_flags(server.addr, n2, p2, flags);
    assert_eq!(peer_names(c2.history.last().unwrap()), [n1, n2]);
    let joined = c1.expect_event("joined");
    assert_eq!(joined["peer"]["username"], n2);
    c1.expect_peers(&[n1, n2]);

    let c3 = ChatClient::register_with_flags(server.addr, n3, p3, flags);
    assert_eq!(peer_names(c3.history.last().unwrap()), [n1, n2, n3]);
    for client in [&mut c1, &mut c2] {
        let joined = client.expect_event("joined");
        assert_eq!(joined["peer"]["username"], n3);
        client.expect_peers(&[n1, n2, n3]);
    }
    [c1, c2, c3]
}

fn is_message(event: &Value) -> bool {
    event["event"] == "message" || event["event"] == "direct"
}

/// Waits for what `client` shows for a datagram it was sent: a direct message or a warning about
/// the drop (whichever comes first, so that a datagram wrongly shown fails at once, not by the
/// deadline).
fn datagram_outcome(client: &mut ChatClient) -> Value {
    client.expect("a direct message or a warning", |e| {
        e["event"] == "direct" || e["event"] == "warning"
    })
}

/// The sender's report on its direct message (`direct_delivered` or `direct_failed`), whether
/// it came already or is still to come.
fn delivery_report(client: &mut ChatClient) -> Value {
    let is_report = |e: &Value| e["event"] == "direct_delivered" || e["event"] == "direct_failed";
    if let Some(report) = client.history.iter().find(|e| is_report(e)) {
        return report.clone();
    }
    client.expect("a delivery report", is_report)
}

#[test]
fn t1_registration_and_authentication_of_three_clients() {
    let (_dir, server) = start_server();
    let [c1, c2, mut c3] = register_three(&server);

    // Each peer entry carries the address the server saw and the announced UDP port.
    let welcome = c3.history.iter().find(|e| e["event"] == "welcome").unwrap();
    assert_eq!(welcome["username"], "client3");
    for (client, entry) in [&c1, &c2, &c3]
        .iter()
        .zip(welcome["peers"].as_array().unwrap())
    {
        assert_eq!(entry["username"], client.name.as_str());
        assert_eq!(entry["ip"], "127.0.0.1");
        assert_eq!(entry["p2p_port"], client.p2p_addr().port());
    }

    // The list on demand (:l) says the same.
    c3.send(":l");
    c3.expect_peers(&["client1", "client2", "client3"]);
    for name in ["client1", "client2", "client3"] {
        server.wait_for_log(&format!("registered \"{name}\""));
    }
}

#[test]
fn t2_room_message_reaches_the_others_and_not_the_sender() {
    let (_dir, server) = start_server();
    let [mut c1, mut c2, mut c3] = register_three(&server);

    c1.send("hello room, from client1");
    for receiver in [&mut c2, &mut c3] {
        let message = receiver.expect_event("message");
        assert_eq!(
            message,
            json!({"event": "message", "from": "client1", "text": "hello room, from client1"})
        );
    }
    // The server handles one connection's requests in order: had it echoed the message to
    // client1, the echo would come before the answer to this :l.
    c1.send(":l");
    let before_list = c1.until("peer list", |e| e["event"] == "peers");
    assert!(
        !before_list.iter().any(is_message),
        "client1 got its own message back: {before_list:#?}"
    );
    // The /msg-free aliases work too, and text that merely starts with ':' is room text.
    c2.send(":) still here");
    let message = c3.expect_event("message");
    assert_eq!(message["text"], ":) still here");
    assert_eq!(message["from"], "client2");
}

#[test]
fn t3_direct_message_goes_peer_to_peer_to_its_recipient_only() {
    // Sealed (the default): the forged clear datagram is dropped as unsealed, the garbage as too
    // short for a sealed header, and each message is acknowledged.
    direct_message_goes_peer_to_peer_to_its_recipient_only(&[]);
}

#[test]
fn t3_in_plaintext_mode_a_direct_message_goes_peer_to_peer_to_its_recipient_only() {
    // The lab's clear protocol: the forged datagram is dropped by the source check, the garbage
    // as malformed.
    direct_message_goes_peer_to_peer_to_its_recipient_only(&["--plaintext"]);
}

fn direct_message_goes_peer_to_peer_to_its_recipient_only(flags: &[&str]) {
    let sealed = flags.is_empty();
    // The clients' mode is the server's: TLS and sealed, or `--plaintext` for both.
    let (_dir, server) = start_server_with(flags);
    let [mut c1, mut c2, c3] = register_three_with(&server, flags);
    let secret = "direct text that the server must never see";

    // With the server stopped (SIGSTOP), nothing can pass through it; the message still arrives.
    {
        let _frozen = server.freeze();
        c1.send(&format!("@client2: {secret}"));
        let sent = c1.expect_event("direct_sent");
        assert_eq!(sent["to"], "client2");
        assert_eq!(sent["destination"], c2.p2p_addr().to_string());
        let received = c2.expect_event("direct");
        assert_eq!(received["from"], "client1");
        assert_eq!(received["text"], secret);
        assert_eq!(received["source"], c1.p2p_addr().to_string());
        // The other spelling of the command.
        c2.send("/msg client1 and back");
        let reply = c1.expect_event("direct");
        assert_eq!(
            (&reply["from"], &reply["text"]),
            (&json!("client2"), &json!("and back"))
        );
        if sealed {
            // Both were acknowledged, peer to peer too.
            assert_eq!(
                delivery_report(&mut c1),
                json!({"event": "direct_delivered", "to": "client2", "id": 1})
            );
            assert_eq!(
                delivery_report(&mut c2),
                json!({"event": "direct_delivered", "to": "client1", "id": 1})
            );
        }
    }

    // A datagram that claims to be from client1 but comes from elsewhere is dropped with a warning:
    // what client2 shows for it is that warning, not the message.
    let spoofer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let forged = json!({"type": "direct", "from": "client1", "id": 99, "text": "forged"});
    spoofer
        .send_to(forged.to_string().as_bytes(), c2.p2p_addr())
        .unwrap();
    let warning = datagram_outcome(&mut c2);
    assert_eq!(
        warning["event"], "warning",
        "the forged datagram was shown: {warning}"
    );
    let (forged_kind, garbage_kind) = if sealed {
        ("(unsealed)", "truncated")
    } else {
        ("client1", "malformed")
    };
    assert!(
        warning["message"].as_str().unwrap().contains(forged_kind),
        "{warning}"
    );
    // So is garbage.
    spoofer.send_to(b"\x00garbage", c2.p2p_addr()).unwrap();
    let warning = datagram_outcome(&mut c2);
    assert_eq!(warning["event"], "warning", "garbage was shown: {warning}");
    // The counters agree: of the datagrams, only client1's own message was delivered (and, when
    // sealed, client1's acknowledgement of the reply received).
    let stats = c2.stats();
    let acks = u64::from(sealed);
    assert_eq!(stats["received"], 3 + acks, "{stats}");
    assert_eq!(stats["delivered"], 1, "{stats}");
    assert_eq!(stats["acks"], acks, "{stats}");
    let forged_counter = if sealed { "unsealed" } else { "unknown_source" };
    assert_eq!(stats["dropped"][forged_counter], 1, "{stats}");
    assert_eq!(stats["dropped"][garbage_kind], 1, "{stats}");

    // To someone who is not online: an error, and nothing is sent.
    c1.send("@nobody: are you there?");
    let error = c1.expect_event("error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no such user online"),
        "{error}"
    );

    // client3 never saw any of it, and the server never logged the text.
    let c3_events = c3.finish();
    assert_eq!(c3_events.status.code(), Some(0));
    assert!(
        !c3_events.events.iter().any(is_message),
        "{:#?}",
        c3_events.events
    );
    let c2_events = c2.finish();
    let directs: Vec<_> = c2_events
        .events
        .iter()
        .filter(|e| e["event"] == "direct")
        .collect();
    assert_eq!(
        directs.len(),
        1,
        "exactly one direct message for client2: {directs:#?}"
    );
    assert!(!c2_events.events.iter().any(|e| e["text"] == "forged"));
    assert!(!server.log().contains(secret));
    assert!(!server.log().contains("and back"));
}

#[test]
fn t4_username_already_in_use_is_refused_and_others_unaffected() {
    let (_dir, server) = start_server();
    let [mut c1, mut c2, mut c3] = register_three(&server);

    for taken in ["client2", "CLIENT2"] {
        let duplicate = ChatClient::start(
            server.addr,
            "duplicate",
            &["register", taken, "another-pass"],
        )
        .finish();
        assert_eq!(duplicate.status.code(), Some(4), "{duplicate:#?}");
        let error = duplicate.events.last().unwrap();
        assert_eq!(error["event"], "error");
        assert_eq!(error["code"], "name_taken");
        assert!(
            duplicate.stderr.contains("already registered"),
            "{}",
            duplicate.stderr
        );
    }
    // Logging into an account that is online without its password is refused too (with the
    // password, a login takes the name over: issue 18, tests/login.rs).
    let (n2, _) = PASSWORDS[1];
    let twice =
        ChatClient::start(server.addr, "twice", &["login", n2, "not-the-password"]).finish();
    assert_eq!(twice.status.code(), Some(4));
    assert_eq!(twice.events.last().unwrap()["code"], "bad_credentials");

    // The others chat on, and nobody saw anyone join or leave.
    c2.send("still the real client2");
    for receiver in [&mut c1, &mut c3] {
        let seen = receiver.until("client2's message", |e| e["event"] == "message");
        assert_eq!(seen.last().unwrap()["from"], "client2");
        assert!(
            !seen
                .iter()
                .any(|e| e["event"] == "joined" || e["event"] == "left"),
            "{seen:#?}"
        );
    }
    c1.send(":l");
    c1.expect_peers(&["client1", "client2", "client3"]);
}

#[test]
fn t5_client_logs_in_again_after_being_offline() {
    let (_dir, server) = start_server();
    let [mut c1, mut c2, c3] = register_three(&server);
    let (n3, p3) = PASSWORDS[2];

    let quit = {
        let mut c3 = c3;
        c3.send(":q");
        c3.wait()
    };
    assert_eq!(quit.status.code(), Some(0), "{quit:#?}");
    for client in [&mut c1, &mut c2] {
        let left = client.expect_event("left");
        assert_eq!(left["username"], n3);
        client.expect_peers(&["client1", "client2"]);
    }

    // Wrong password and unknown user: the same refusal, word for word.
    let wrong =
        ChatClient::start(server.addr, "wrong", &["login", n3, "not-the-password"]).finish();
    let unknown = ChatClient::start(server.addr, "unknown", &["login", "client9", p3]).finish();
    for failed in [&wrong, &unknown] {
        assert_eq!(failed.status.code(), Some(4), "{failed:#?}");
        assert_eq!(failed.events.last().unwrap()["code"], "bad_credentials");
    }
    assert_eq!(wrong.events.last(), unknown.events.last());
    assert_eq!(wrong.stderr, unknown.stderr);

    // Back online, by name in any case; the list is sent, and the others see it arrive.
    let mut back = ChatClient::login(server.addr, "Client3", p3);
    let welcome = back.history.last().unwrap().clone();
    assert_eq!(
        welcome["username"], n3,
        "logged in under the registered name"
    );
    assert_eq!(peer_names(&welcome), ["client1", "client2", "client3"]);
    for client in [&mut c1, &mut c2] {
        let joined = client.expect_event("joined");
        assert_eq!(joined["peer"]["username"], n3);
        assert_eq!(joined["peer"]["p2p_port"], back.p2p_addr().port());
        client.expect_peers(&["client1", "client2", "client3"]);
    }
    // And direct messages go to its new address.
    c1.send("@client3: welcome back");
    assert_eq!(back.expect_event("direct")["text"], "welcome back");

    // A crash is a departure too.
    back.kill();
    assert_eq!(c2.expect_event("left")["username"], n3);
    c2.expect_peers(&["client1", "client2"]);
}

#[test]
fn t6_usernames_and_password_hashes_are_stored_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let same_password = "the-same-password";
    {
        let mut server = Server::start(&users, &[]);
        let _clients = register_three(&server);
        // Two more accounts with one password between them.
        ChatClient::register(server.addr, "twin1", same_password).finish();
        ChatClient::register(server.addr, "twin2", same_password).finish();
        // Stopped as an administrator would (Ctrl-C): the users journal is folded in.
        assert!(server.terminate().success());
    }

    let text = std::fs::read_to_string(&users).unwrap();
    let mut passwords: Vec<(&str, &str)> = PASSWORDS.to_vec();
    passwords.extend([("twin1", same_password), ("twin2", same_password)]);
    for (_, password) in &passwords {
        assert!(
            !text.contains(password),
            "a plain password is in the users file"
        );
    }
    let file = read_users(&users);
    assert_eq!(file["version"], 1);
    let entries = file["users"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["client1", "client2", "client3", "twin1", "twin2"]);

    let mut salts = HashSet::new();
    let mut hashes = HashSet::new();
    for ((name, password), entry) in passwords.iter().zip(entries) {
        assert_eq!(entry["username"], *name);
        let phc = entry["password_hash"].as_str().unwrap();
        assert!(phc.starts_with("$scrypt$ln=10,r=8,p=1$"), "{phc}");
        let parsed = PasswordHash::new(phc).expect("a PHC string");
        assert_eq!(parsed.algorithm.as_str(), "scrypt");
        assert!(
            Scrypt::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            "{name}"
        );
        assert!(Scrypt::default()
            .verify_password(b"wrong password", &parsed)
            .is_err());
        assert!(
            salts.insert(parsed.salt.unwrap().to_string()),
            "salt reused"
        );
        assert!(
            hashes.insert(parsed.hash.unwrap().to_string()),
            "hash repeated"
        );
    }

    assert_eq!(permission_bits(&users), 0o600, "users file mode");
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "only the users file is left in its folder");

    // A new server on the same file lets everyone in again.
    let server = Server::start(&users, &[]);
    for (name, password) in &passwords {
        let client = ChatClient::login(server.addr, name, password);
        assert_eq!(client.history.last().unwrap()["username"], *name);
    }
    assert_eq!(
        std::fs::read_to_string(&users).unwrap(),
        text,
        "logins do not rewrite the file"
    );
}

#[test]
fn t7_bad_input_gets_an_error_and_the_server_keeps_serving() {
    let (_dir, server) = start_server();
    let [mut c1, mut c2, _c3] = register_three(&server);

    // Recoverable errors: an answer each, and the connection stays usable.
    let mut raw = RawConnection::connect(server.addr);
    let frames: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixture("bad-frames.json")).unwrap()).unwrap();
    for frame in &frames {
        let bytes = match (frame["text"].as_str(), frame["hex"].as_str()) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(hex)) => decode_hex(hex),
            _ => panic!("fixture entry without text or hex: {frame}"),
        };
        raw.write(&bytes).unwrap();
        let error = raw.read_json().expect("an error answer");
        assert_eq!(error["type"], "error", "{}: {error}", frame["name"]);
        assert_eq!(error["code"], frame["code"], "{}: {error}", frame["name"]);
        assert_eq!(error["fatal"], false, "{}: {error}", frame["name"]);
        assert!(
            !error["message"].as_str().unwrap().contains("12345678"),
            "{error}"
        );
    }
    raw.write(b"{\"type\":\"register\",\"username\":\"raw\",\"password\":\"raw-password\",\"p2p_port\":9}\r\n")
        .unwrap();
    let welcome = raw.read_json().unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    // An oversized line: an error, then the connection is closed — cleanly, so the error is read.
    let mut big = RawConnection::connect(server.addr);
    let mut line = vec![b'x'; 70 * 1024];
    line.push(b'\n');
    let _ = big.write(&line);
    let answers = big.read_to_end();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["code"], "line_too_long");
    assert_eq!(answers[0]["fatal"], true);

    // A connection that vanishes mid-line.
    let mut cut = RawConnection::connect(server.addr);
    cut.write(b"{\"type\":\"say\",\"te").unwrap();
    drop(cut);

    // None of it was relayed, and the room works as before.
    c1.send("after the garbage");
    let seen = c2.until("client1's message", |e| {
        e["event"] == "message" && e["from"] == "client1"
    });
    let relayed: Vec<_> = seen.iter().filter(|e| e["event"] == "message").collect();
    assert_eq!(relayed.len(), 1, "{relayed:#?}");
    assert_eq!(relayed[0]["text"], "after the garbage");
    c2.send("@client1: and direct still works");
    assert_eq!(c1.expect_event("direct")["text"], "and direct still works");
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect()
}
