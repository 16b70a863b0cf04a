//! Peer identities (issue 21 §1): each account's identity key signs its session key, clients pin
//! their peers' identities on first contact, and a server that announces a key of its own for a
//! peer gets nothing sealed to it and nothing it seals accepted — by either side — once the peer
//! is pinned; a changed identity is refused and warned until `/trust`; `/verify` shows the same
//! safety number on both sides, which changes with either key. Real clients, a real server, and
//! a server that lies ([`common::lying::LyingServer`]).

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::lying::LyingServer;
use common::*;
use p2pchat::identity::IdentityKey;
use p2pchat::sealed::{Header, Kind, PublicKey, SessionKey};
use serde_json::{json, Value};

/// A session the lying server announces as `name`'s: its key, its UDP socket.
struct Impostor {
    name: String,
    key: SessionKey,
    udp: UdpSocket,
}

impl Impostor {
    fn new(name: &str) -> Impostor {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        Impostor {
            name: name.into(),
            key: SessionKey::generate(),
            udp,
        }
    }

    /// The peer entry for it, with `identity` and `binding` as given.
    fn entry(&self, identity: Value, binding: Value) -> Value {
        json!({
            "username": self.name,
            "ip": "127.0.0.1",
            "p2p_port": self.udp.local_addr().unwrap().port(),
            "public_key": self.key.public_key(),
            "identity_key": identity,
            "identity_binding": binding,
        })
    }

    /// Seals a direct message to `client` as its peer, and sends it from the announced address.
    fn send_sealed(&self, client: &ChatClient, text: &str) {
        let keys = self
            .key
            .pair(&self.name, &client.name, &client.session_key())
            .unwrap();
        let plaintext = json!({"type": "direct", "from": self.name, "id": 1, "text": text});
        let datagram = keys.seal(Kind::Message, 1, plaintext.to_string().as_bytes());
        self.udp.send_to(&datagram, client.p2p_addr()).unwrap();
    }

    /// The next datagram it receives within `wait`, opened under its keys with `client`.
    fn receive(&self, client: &ChatClient, wait: Duration) -> Option<Value> {
        self.udp.set_read_timeout(Some(wait)).unwrap();
        let mut buf = vec![0; 65_536];
        let (n, _) = self.udp.recv_from(&mut buf).ok()?;
        let keys = self
            .key
            .pair(&self.name, &client.name, &client.session_key())
            .unwrap();
        let header = Header::parse(&buf[..n]).expect("a sealed header");
        let plaintext = keys
            .open(&header, &buf[..n])
            .expect("it opens under its keys");
        Some(serde_json::from_slice(&plaintext).unwrap())
    }
}

/// How long "nothing arrives" is watched for: nothing is sent at all, so any wait would do.
const NOTHING_WITHIN: Duration = Duration::from_millis(300);

#[test]
fn a_server_announcing_its_own_key_for_a_pinned_peer_gets_nothing_sealed_or_accepted_by_either_side(
) {
    let mut server = LyingServer::start(2);
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    server.wait_for_all();
    // First contact, honestly introduced: each pins the other.
    alice.expect("bob pinned", |e| {
        e["event"] == "identity_pinned" && e["peer"] == "bob"
    });
    bob.expect("alice pinned", |e| {
        e["event"] == "identity_pinned" && e["peer"] == "alice"
    });
    alice.send("@bob: hello");
    assert_eq!(bob.expect_event("direct")["text"], "hello");
    alice.expect_event("direct_delivered");

    // To alice, the server says bob came back with its own session key, vouched for by an
    // identity of its own (a valid binding: all it cannot do is sign with bob's identity).
    let fake_bob = Impostor::new("bob");
    let its_identity = IdentityKey::from_seed(&[0x66; 32]);
    let fake_entry = fake_bob.entry(
        json!(its_identity.public()),
        json!(its_identity.bind("bob", &fake_bob.key.public_key())),
    );
    server.tell("alice", &json!({"type": "left", "username": "bob"}));
    server.tell("alice", &json!({"type": "joined", "peer": fake_entry}));
    let changed = alice.expect("the change warned", |e| e["event"] == "identity_changed");
    assert_eq!(changed["peer"], "bob");
    assert_eq!(changed["pinned"], server.entry("bob")["identity_key"]);
    // Nothing alice seals goes to the new key, and what it seals is not accepted.
    alice.send("@bob: the secret");
    let refused = alice.expect("the direct message refused", |e| {
        e["event"] == "error" || e["event"] == "direct_sent"
    });
    assert_eq!(refused["event"], "error", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("not trusted"),
        "{refused}"
    );
    assert_eq!(fake_bob.receive(&alice, NOTHING_WITHIN), None);
    fake_bob.send_sealed(&alice, "it is me, bob");
    let stats = alice.wait_for_stats("the forgery dropped", |s| s["dropped"]["untrusted"] == 1);
    assert_eq!(
        stats["shown"], 0,
        "the impostor's message was not shown: {stats}"
    );

    // To bob, the server announces its own key for alice under alice's identity, with a
    // binding it cannot make: alice's binding of her real session key.
    let fake_alice = Impostor::new("alice");
    let alice_entry = server.entry("alice");
    let forged_entry = fake_alice.entry(
        alice_entry["identity_key"].clone(),
        alice_entry["identity_binding"].clone(),
    );
    server.tell("bob", &json!({"type": "left", "username": "alice"}));
    server.tell("bob", &json!({"type": "joined", "peer": forged_entry}));
    let unverified = bob.expect("the forgery warned", |e| {
        e["event"] == "identity_unverified"
    });
    assert_eq!(unverified["peer"], "alice");
    fake_alice.send_sealed(&bob, "it is me, alice");
    bob.wait_for_stats("the forgery dropped", |s| s["dropped"]["untrusted"] == 1);
    bob.send("@alice: for alice only");
    assert_eq!(bob.expect_event("error")["event"], "error");
    assert_eq!(fake_alice.receive(&bob, NOTHING_WITHIN), None);
    // No /trust makes a binding that does not verify good.
    bob.send("/trust alice");
    let error = bob.expect_event("error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("cannot be trusted"),
        "{error}"
    );

    // Only the person can let a changed identity through: /trust pins it.
    alice.send("/trust bob");
    let trusted = alice.expect_event("identity_trusted");
    assert_eq!(trusted["identity"], json!(its_identity.public()));
    alice.send("@bob: after trusting");
    assert_eq!(
        fake_bob
            .receive(&alice, DEADLINE)
            .expect("sealed to the trusted key")["text"],
        "after trusting"
    );
    let history: Vec<&Value> = alice.history.iter().chain(bob.history.iter()).collect();
    assert!(
        !history
            .iter()
            .any(|e| e["event"] == "direct" && e["text"].as_str().unwrap().starts_with("it is me")),
        "no forgery was shown"
    );
}

/// The safety number `client` shows for `peer` (`/verify peer`).
fn safety_number(client: &mut ChatClient, peer: &str) -> Value {
    client.send(&format!("/verify {peer}"));
    client.expect("the safety number", |e| e["event"] == "safety_number")
}

#[test]
fn verify_confirm_marks_verified_only_the_identity_verify_showed_not_one_announced_since() {
    let mut server = LyingServer::start(2);
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let _bob = ChatClient::register(server.addr, "bob", "bob-password");
    server.wait_for_all();
    alice.expect("bob pinned", |e| {
        e["event"] == "identity_pinned" && e["peer"] == "bob"
    });
    // alice is shown bob's real number (it matches what bob reads out)...
    let real = safety_number(&mut alice, "bob");
    // ...then the server announces an identity of its own for bob, before she confirms.
    let fake_bob = Impostor::new("bob");
    let its_identity = IdentityKey::from_seed(&[0x77; 32]);
    let fake_entry = fake_bob.entry(
        json!(its_identity.public()),
        json!(its_identity.bind("bob", &fake_bob.key.public_key())),
    );
    server.tell("alice", &json!({"type": "left", "username": "bob"}));
    server.tell("alice", &json!({"type": "joined", "peer": fake_entry}));
    alice.expect("the change warned", |e| {
        e["event"] == "identity_changed" && e["peer"] == "bob"
    });
    alice.send("/verify bob confirm");
    let answer = alice.expect("the confirm answered", |e| {
        e["event"] == "error" || e["event"] == "identity_verified"
    });
    assert_eq!(answer["event"], "error", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("run /verify bob again"),
        "{answer}"
    );
    // Not pinned: still withheld, nothing sealed to the server's key.
    alice.send("@bob: the secret");
    assert_eq!(alice.expect_event("error")["event"], "error");
    assert_eq!(fake_bob.receive(&alice, NOTHING_WITHIN), None);
    // Shown the new number (another one, neither trusted nor verified), a confirm pins what
    // was compared.
    let shown = safety_number(&mut alice, "bob");
    assert_ne!(shown["number"], real["number"]);
    assert_eq!(
        (&shown["verified"], &shown["trusted"]),
        (&json!(false), &json!(false))
    );
    alice.send("/verify bob confirm");
    alice.expect_event("identity_verified");
    assert_eq!(safety_number(&mut alice, "bob")["verified"], true);
}

#[test]
fn both_sides_show_the_same_safety_number_and_a_new_identity_changes_it_and_drops_verified() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    alice.expect_joined("bob");
    let at_alice = safety_number(&mut alice, "bob");
    let at_bob = safety_number(&mut bob, "alice");
    assert_eq!(at_alice["number"], at_bob["number"]);
    let number = at_alice["number"].as_str().unwrap().to_string();
    assert_eq!(number.split(' ').count(), 12, "{number}");
    assert!(number
        .split(' ')
        .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())));
    assert_eq!(at_alice["verified"], false);

    // Confirmed: recorded, and marked in /peers.
    alice.send("/verify bob confirm");
    alice.expect_event("identity_verified");
    alice.send("/peers");
    let peers = alice.expect("the list", |e| {
        e["event"] == "peers" && !e["verified"].is_null()
    });
    assert_eq!(peers["verified"], json!(["bob"]));

    // bob on a new device: a new identity (its file gone), the same account.
    let port = server.addr.port();
    let identity_file = data_home_of(&server.addr.to_string(), dir.path())
        .join("p2pchat/identities")
        .join(format!("bob@127.0.0.1:{port}"));
    assert!(identity_file.exists(), "{}", identity_file.display());
    assert_eq!(bob.finish().status.code(), Some(0));
    std::fs::remove_file(&identity_file).unwrap();
    let mut bob = ChatClient::login(server.addr, "bob", "bob-password");
    alice.expect("the change warned", |e| {
        e["event"] == "identity_changed" && e["peer"] == "bob"
    });
    let changed = safety_number(&mut alice, "bob");
    assert_ne!(changed["number"], json!(number));
    assert_eq!(
        (&changed["verified"], &changed["trusted"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(
        safety_number(&mut bob, "alice")["number"],
        changed["number"]
    );
    // Refused both ways until alice trusts it.
    alice.send("@bob: are you there?");
    assert_eq!(alice.expect_event("error")["event"], "error");
    bob.send("@alice: it is me, new laptop");
    alice.wait_for_stats("bob's message dropped", |s| s["dropped"]["untrusted"] == 1);
    alice.send("/trust bob");
    alice.expect_event("identity_trusted");
    alice.send("/peers");
    let peers = alice.expect("the list", |e| e["event"] == "peers");
    assert!(
        peers["verified"].is_null(),
        "a trusted change is not verified: {peers}"
    );
    alice.send("@bob: welcome back");
    assert_eq!(bob.expect_event("direct")["text"], "welcome back");
}

#[test]
fn first_contact_is_pinned_in_the_known_peers_file_and_kept_for_the_next_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let config = tempfile::tempdir().unwrap();
    let flags = trust_flags(&server.addr.to_string());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    let mut alice = ChatClient::start_exact(
        &server.addr.to_string(),
        "alice",
        &flags,
        &["register", "alice", "alice-password"],
        config.path(),
    );
    alice.expect("bob pinned", |e| {
        e["event"] == "identity_pinned" && e["peer"] == "bob"
    });
    let known = config.path().join("p2pchat/known_peers");
    let text = std::fs::read_to_string(&known).unwrap();
    let bob_identity = alice
        .history
        .iter()
        .find(|e| e["event"] == "identity_pinned")
        .unwrap()["identity"]
        .clone();
    assert_eq!(
        text,
        format!(
            "127.0.0.1:{} bob {}\n",
            server.addr.port(),
            bob_identity.as_str().unwrap()
        )
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&known).unwrap().mode() & 0o777, 0o600);
    assert_eq!(alice.finish().status.code(), Some(0));
    // The next session finds the pin: no first contact, no warning.
    let mut alice = ChatClient::start_exact(
        &server.addr.to_string(),
        "alice",
        &flags,
        &["login", "alice", "alice-password"],
        config.path(),
    );
    alice.expect_event("welcome");
    alice.send("@bob: still you");
    assert_eq!(bob.expect_event("direct")["text"], "still you");
    alice.expect_event("direct_delivered");
    assert!(
        !alice
            .history
            .iter()
            .any(|e| e["event"].as_str().unwrap().starts_with("identity_")),
        "{:?}",
        alice.history
    );
}

#[test]
fn an_identity_file_others_can_read_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let alice = ChatClient::register(server.addr, "alice", "alice-password");
    assert_eq!(alice.finish().status.code(), Some(0));
    let file = data_home_of(&server.addr.to_string(), dir.path())
        .join("p2pchat/identities")
        .join(format!("alice@127.0.0.1:{}", server.addr.port()));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let alice = ChatClient::start(server.addr, "alice", &["login", "alice", "alice-password"]);
    let finished = alice.wait();
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(finished.stderr.contains("chmod 600"), "{}", finished.stderr);
}

#[test]
fn on_a_terminal_a_changed_identity_is_warned_plainly_and_verify_shows_the_number() {
    use common::pty::TerminalClient;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    let mut alice = TerminalClient::start(server.addr, &[]);
    alice.register("alice", "alice-password");
    alice.wait_for("> ");
    alice.type_keys("/verify bob\r");
    alice.wait_for("-!- safety number with bob: ");
    let at_bob = safety_number(&mut bob, "alice");
    alice.wait_for(at_bob["number"].as_str().unwrap());
    // bob on a new device.
    let identity_file = data_home_of(&server.addr.to_string(), dir.path())
        .join("p2pchat/identities")
        .join(format!("bob@127.0.0.1:{}", server.addr.port()));
    assert_eq!(bob.finish().status.code(), Some(0));
    std::fs::remove_file(identity_file).unwrap();
    let _bob = ChatClient::login(server.addr, "bob", "bob-password");
    alice.wait_for(
        "! bob's identity key changed: a new device, or someone in the middle; compare safety \
         numbers with /verify bob",
    );
    alice.type_keys("@bob: hello?\r");
    alice.wait_for("! error: bob's identity is not trusted now");
    alice.type_keys("/trust bob\r");
    alice.wait_for("-!- bob's identity key SHA256:");
}

#[test]
fn the_server_refuses_a_binding_that_does_not_verify_before_checking_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let session = SessionKey::generate();
    let (mine, another) = (
        IdentityKey::from_seed(&[1; 32]),
        IdentityKey::from_seed(&[2; 32]),
    );
    for (identity, binding) in [
        // Another identity's binding of this very key.
        (
            json!(mine.public()),
            json!(another.bind("carol", &session.public_key())),
        ),
        // A binding for another name.
        (
            json!(mine.public()),
            json!(mine.bind("dave", &session.public_key())),
        ),
        // A key without its binding.
        (json!(mine.public()), Value::Null),
    ] {
        let mut conn = RawConnection::connect(server.addr);
        let challenge = conn.hello()["key_challenge"]
            .as_str()
            .and_then(PublicKey::from_base64)
            .unwrap();
        let mut request = json!({
            "type": "register", "username": "carol", "password": "carol-password",
            "p2p_port": 40_001, "public_key": session.public_key(),
            "key_proof": session.prove(&challenge, "carol").unwrap(),
            "identity_key": identity,
        });
        if !binding.is_null() {
            request["identity_binding"] = binding;
        }
        conn.send(&request);
        let answer = conn.read_json().expect("an answer");
        assert_eq!(
            (&answer["code"], &answer["fatal"]),
            (&json!("identity_invalid"), &json!(true)),
            "{answer}"
        );
    }
    // Nothing was registered: the name is still free.
    let carol = ChatClient::register(server.addr, "carol", "carol-password");
    assert_eq!(carol.finish().status.code(), Some(0));
}

#[test]
fn a_name_the_server_makes_up_breaks_the_message_and_never_reaches_the_known_peers_file() {
    let mut server = LyingServer::start(1);
    let config = tempfile::tempdir().unwrap();
    let addr = server.addr.to_string();
    let flags = trust_flags(&addr);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut alice = ChatClient::start_exact(
        &addr,
        "alice",
        &flags,
        &["register", "alice", "alice-password"],
        config.path(),
    );
    server.wait_for_all();
    alice.expect_event("welcome");
    // One line of the known-peers file is `SERVER NAME IDENTITY`: a name holding a newline would
    // add a pin of the server's choosing for bob, marked verified.
    let its_identity = IdentityKey::from_seed(&[0x66; 32]);
    let forged = format!(
        "x {}\n{addr} bob {} verified\n#",
        its_identity.public().to_base64(),
        its_identity.public().to_base64()
    );
    let fake = Impostor::new(&forged);
    let entry = fake.entry(
        json!(its_identity.public()),
        json!(its_identity.bind(&forged, &fake.key.public_key())),
    );
    server.tell("alice", &json!({"type": "joined", "peer": entry}));
    let finished = alice.wait();
    assert_eq!(
        finished.status.code(),
        Some(5),
        "a broken message from the server: {:?}",
        finished.events
    );
    assert!(
        finished.stderr.contains("a username that breaks the rules"),
        "{}",
        finished.stderr
    );
    assert!(
        !finished
            .events
            .iter()
            .any(|e| e["event"] == "identity_pinned" || e["event"] == "joined"),
        "{:?}",
        finished.events
    );
    let known =
        std::fs::read_to_string(config.path().join("p2pchat/known_peers")).unwrap_or_default();
    assert!(!known.contains("bob"), "{known:?}");
}
