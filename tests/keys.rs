//! A session key is its owner's alone (issue 19 §1): the server refuses a key announced without
//! a proof that the sender holds its secret (`key_proof_invalid`), and a key another session
//! announces, online or recently ended (`key_in_use`); so no account can take another user's
//! sealed direct messages, nor end her key at the clients by leaving. Mallory speaks the protocol
//! over raw connections; alice and bob are real clients, or a test-owned sealed peer where the
//! test must hold a key's secret.

mod common;

use std::net::UdpSocket;

use common::*;
use p2pchat::identity::IdentityKey;
use p2pchat::sealed::{Header, Kind, PublicKey, SessionKey};
use serde_json::{json, Value};

fn start_server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    (dir, server)
}

/// The key challenge of a connection's `hello`.
fn challenge(conn: &RawConnection) -> PublicKey {
    conn.hello()["key_challenge"]
        .as_str()
        .and_then(PublicKey::from_base64)
        .expect("the hello's key challenge")
}

/// How an attempt proves the key it announces.
enum Proof<'a> {
    None,
    /// Made with this secret, for the connection's challenge and the name sent.
    By(&'a SessionKey),
    /// 32 random-looking bytes.
    Bogus,
}

/// Connects, sends `login` (or `register`) as `name` announcing `key` with `proof` and
/// `p2p_port`, and returns the connection and the server's first answer.
fn attempt(
    server: &Server,
    register: bool,
    name: &str,
    key: &PublicKey,
    proof: Proof,
    p2p_port: u16,
) -> (RawConnection, Value) {
    let mut conn = RawConnection::connect(server.addr);
    let proof = match proof {
        Proof::None => Value::Null,
        Proof::By(secret) => json!(secret.prove(&challenge(&conn), name).unwrap()),
        Proof::Bogus => json!(p2pchat::sealed::KeyProof::from_bytes([0x5a; 32])),
    };
    let mut request = json!({
        "type": if register { "register" } else { "login" },
        "username": name,
        "password": format!("{name}-password"),
        "p2p_port": p2p_port,
        "public_key": key.to_base64(),
    });
    if !proof.is_null() {
        request["key_proof"] = proof;
    }
    // As a current client does: an identity of the account's vouches for the key.
    let identity = test_identity(name);
    request["identity_key"] = json!(identity.public());
    request["identity_binding"] = json!(identity.bind(name, key));
    conn.send(&request);
    let answer = conn.read_json().expect("an answer to the login");
    (conn, answer)
}

/// The identity of the test-owned account `name`: the same at every login.
fn test_identity(name: &str) -> IdentityKey {
    let mut seed = [0x17; 32];
    for (byte, from) in seed.iter_mut().zip(name.bytes()) {
        *byte = from;
    }
    IdentityKey::from_seed(&seed)
}

/// Asserts that `answer` is the fatal error `code`, and that the server closed the connection.
fn assert_refused(mut conn: RawConnection, answer: &Value, code: &str) {
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], code, "{answer}");
    assert_eq!(answer["fatal"], true, "{answer}");
    assert_eq!(conn.read_until_closed(), Vec::<Value>::new());
}

/// A test-owned peer that seals with a key whose secret the test holds.
struct SealedPeer {
    name: String,
    key: SessionKey,
    udp: UdpSocket,
    tcp: RawConnection,
    counter: u64,
}

impl SealedPeer {
    fn start(server: &Server, name: &str, register: bool, key: SessionKey) -> SealedPeer {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let (tcp, welcome) = attempt(
            server,
            register,
            name,
            &key.public_key(),
            Proof::By(&key),
            port,
        );
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        SealedPeer {
            name: name.into(),
            key,
            udp,
            tcp,
            counter: 1,
        }
    }

    fn send_message(&mut self, client: &ChatClient, id: u64, text: &str) {
        let keys = self
            .key
            .pair(&self.name, &client.name, &client.session_key())
            .unwrap();
        let plaintext = json!({"type": "direct", "from": self.name, "id": id, "text": text});
        let datagram = keys.seal(
            Kind::Message,
            self.counter,
            plaintext.to_string().as_bytes(),
        );
        self.counter += 1;
        self.udp.send_to(&datagram, client.p2p_addr()).unwrap();
    }

    /// The next datagram this peer receives, opened under its keys with `client`.
    fn receive(&self, client: &ChatClient) -> (Kind, Vec<u8>) {
        self.udp.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buf = vec![0; 65_536];
        let (n, _) = self.udp.recv_from(&mut buf).expect("a datagram in time");
        let keys = self
            .key
            .pair(&self.name, &client.name, &client.session_key())
            .unwrap();
        let header = Header::parse(&buf[..n]).expect("a sealed header");
        let plaintext = keys.open(&header, &buf[..n]).expect("it opens");
        (header.kind, plaintext)
    }
}

/// `client` shows a direct message from `from` with `text`.
fn expect_direct(client: &mut ChatClient, from: &str, text: &str) {
    let shown = client.expect("a direct message or a warning", |e| {
        e["event"] == "direct" || e["event"] == "warning"
    });
    assert_eq!(shown["event"], "direct", "{shown}");
    assert_eq!(
        (&shown["from"], &shown["text"]),
        (&json!(from), &json!(text))
    );
}

/// `client` sent its direct message `id` and heard it was delivered.
fn expect_delivered(client: &mut ChatClient, to: &str) {
    let report = client.expect("the delivery report", |e| {
        [
            "direct_delivered",
            "direct_failed",
            "direct_not_sent",
            "error",
        ]
        .contains(&e["event"].as_str().unwrap_or(""))
    });
    assert_eq!(report["event"], "direct_delivered", "{report}");
    assert_eq!(report["to"], to, "{report}");
}

/// Registers `name` without a key (a `--plaintext`-style login) and quits: the account exists.
fn register_account(server: &Server, name: &str) {
    let (mut conn, welcome) =
        RawConnection::register(server.addr, name, &format!("{name}-password"), 1);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    conn.send(&json!({"type": "quit"}));
    conn.read_until_closed();
}

#[test]
fn a_key_announced_by_another_account_is_refused_and_its_owners_sealed_messages_keep_working_both_ways(
) {
    let (_dir, server) = start_server();
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    let mut alice = SealedPeer::start(&server, "alice", true, SessionKey::generate());
    let alice_key = alice.key.public_key();
    let joined = bob.expect_joined("alice");
    assert_eq!(joined["peer"]["public_key"], alice_key.to_base64());
    register_account(&server, "mallory");
    // mallory copies alice's key from the peer list: she cannot prove it...
    let mallory_own = SessionKey::generate();
    for proof in [Proof::None, Proof::Bogus, Proof::By(&mallory_own)] {
        let (conn, answer) = attempt(&server, false, "mallory", &alice_key, proof, 2);
        assert_refused(conn, &answer, "key_proof_invalid");
    }
    // ...and even holding its secret (leaked, or a second account of alice's), another account
    // may not announce a key that is online.
    let (conn, answer) = attempt(
        &server,
        false,
        "mallory",
        &alice_key,
        Proof::By(&alice.key),
        2,
    );
    assert_refused(conn, &answer, "key_in_use");
    // bob never saw mallory, and alice's sealed messages go both ways.
    bob.send("/list");
    let peers = bob.expect_event("peers");
    assert_eq!(peer_names(&peers), ["alice", "bob"]);
    bob.send("@alice: still yours?");
    let (kind, plaintext) = alice.receive(&bob);
    assert_eq!(kind, Kind::Message);
    let message: Value = serde_json::from_slice(&plaintext).unwrap();
    assert_eq!(
        (&message["from"], &message["text"]),
        (&json!("bob"), &json!("still yours?"))
    );
    alice.send_message(&bob, 1, "yes, mine");
    expect_direct(&mut bob, "alice", "yes, mine");
    let stats = bob.stats();
    assert_eq!(stats["dropped"]["unknown_source"], 0, "{stats}");
    assert_eq!(stats["dropped"]["unknown_key"], 0, "{stats}");
    drop(alice.tcp);
}

#[test]
fn an_account_cycling_keys_cannot_end_another_users_key_at_any_client() {
    let (_dir, server) = start_server();
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    alice.expect_joined("bob");
    let alice_key = alice.session_key();
    let bob_key = bob.session_key();
    register_account(&server, "mallory");
    for round in 0..4 {
        // Announcing alice's or bob's key, copied from the peer list: refused every time.
        let copied = [&alice_key, &bob_key][round % 2];
        for proof in [Proof::None, Proof::Bogus] {
            let (conn, answer) = attempt(&server, false, "mallory", copied, proof, 2);
            assert_refused(conn, &answer, "key_proof_invalid");
        }
        // A key of her own comes and goes, as any session's does.
        let own = SessionKey::generate();
        let (mut conn, welcome) = attempt(
            &server,
            false,
            "mallory",
            &own.public_key(),
            Proof::By(&own),
            2,
        );
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        for client in [&mut alice, &mut bob] {
            client.expect_joined("mallory");
        }
        conn.send(&json!({"type": "quit"}));
        conn.read_until_closed();
        for client in [&mut alice, &mut bob] {
            client.expect("mallory left", |e| {
                e["event"] == "left" && e["username"] == "mallory"
            });
        }
    }
    // Neither client took alice's or bob's key for ended: their sealed messages go both ways.
    bob.send("@alice: are you still you?");
    expect_direct(&mut alice, "bob", "are you still you?");
    expect_delivered(&mut bob, "alice");
    alice.send("@bob: I am");
    expect_direct(&mut bob, "alice", "I am");
    expect_delivered(&mut alice, "bob");
}

#[test]
fn a_login_without_a_valid_proof_is_refused_and_one_without_a_key_is_not() {
    let (_dir, server) = start_server();
    register_account(&server, "alice");
    let key = SessionKey::generate();
    // An older client: a key, no proof.
    let (conn, answer) = attempt(&server, false, "alice", &key.public_key(), Proof::None, 2);
    assert_refused(conn, &answer, "key_proof_invalid");
    assert!(
        answer["message"].as_str().unwrap().contains("--plaintext"),
        "{answer}"
    );
    // A proof for another connection's challenge, or for another name.
    let earlier = RawConnection::connect(server.addr);
    let replayed = key.prove(&challenge(&earlier), "alice").unwrap();
    for replay in [true, false] {
        let mut conn = RawConnection::connect(server.addr);
        let proof = match replay {
            true => replayed,
            false => key.prove(&challenge(&conn), "bob").unwrap(),
        };
        conn.send(&json!({
            "type": "login", "username": "alice", "password": "alice-password", "p2p_port": 2,
            "public_key": key.public_key().to_base64(), "key_proof": proof,
        }));
        let answer = conn.read_json().expect("an answer");
        assert_refused(conn, &answer, "key_proof_invalid");
    }
    // A low-order key proves nothing.
    let (conn, answer) = attempt(
        &server,
        false,
        "alice",
        &PublicKey::from_bytes([0; 32]),
        Proof::Bogus,
        2,
    );
    assert_refused(conn, &answer, "key_proof_invalid");
    // The refusals cost no password check: the log never names a failed login.
    assert!(!server.log().contains("failed login"), "{}", server.log());
    // A login without a key (`--plaintext`) is unchanged; with a valid proof, alice is in.
    let (_conn, welcome) = RawConnection::register(server.addr, "carol", "carol-password", 3);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (_conn, welcome) = attempt(
        &server,
        false,
        "alice",
        &key.public_key(),
        Proof::By(&key),
        2,
    );
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    drop(earlier);
}

#[test]
fn alice_taking_over_her_own_session_may_announce_her_key_again_and_no_one_else_may_after() {
    let (_dir, server) = start_server();
    let key = SessionKey::generate();
    let mut first = SealedPeer::start(&server, "alice", true, key);
    let key = &first.key;
    // Her laptop slept; she logs in again from another connection with the same key.
    let (mut second, welcome) = attempt(
        &server,
        false,
        "alice",
        &key.public_key(),
        Proof::By(key),
        2,
    );
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let me = &welcome["peers"][0];
    assert_eq!(me["public_key"], key.public_key().to_base64(), "{welcome}");
    let told = first.tcp.read_until_closed();
    assert!(told.iter().any(|m| m["code"] == "replaced"), "{told:?}");
    // Her session ends; the key is remembered as hers: not mallory's to announce, even with
    // its secret, while alice may come back with it.
    second.send(&json!({"type": "quit"}));
    second.read_until_closed();
    register_account(&server, "mallory");
    let (conn, answer) = attempt(
        &server,
        false,
        "mallory",
        &key.public_key(),
        Proof::By(key),
        3,
    );
    assert_refused(conn, &answer, "key_in_use");
    let (_third, welcome) = attempt(
        &server,
        false,
        "alice",
        &key.public_key(),
        Proof::By(key),
        2,
    );
    assert_eq!(welcome["type"], "welcome", "{welcome}");
}
