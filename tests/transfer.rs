//! Files straight to a peer, end to end: the real server and the real clients on loopback, each
//! client with a home and a download folder of its own. An offer travels as a sealed direct
//! message, the file over a TCP connection from the receiver to the sender's transfer port (the
//! number of its UDP port); every step is a `--json` event, waited for with a deadline.
//!
//! To hold a transfer at a chosen point without a race, a client is stopped (SIGSTOP) and let go
//! again: a receiver that accepts while its sender is stopped has its partial file made and its
//! connection waiting, whatever the machine's speed.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use common::{data_home_of, trust_flags, ChatClient, Server, DEADLINE};

const PASSWORD: &str = "correct horse battery";

/// A person with a home (records, known servers) and a download folder that outlive the client,
/// so that a client started again finds both.
struct Person {
    name: &'static str,
    home: TempDir,
    downloads: PathBuf,
}

impl Person {
    fn new(name: &'static str) -> Person {
        let home = TempDir::new().expect("a home folder");
        let downloads = home.path().join("downloads");
        Person {
            name,
            home,
            downloads,
        }
    }

    /// Starts this person's client on `server` with `flags`, answering the prompts with
    /// `register` or `login`, and waits for the welcome.
    fn start(&self, server: SocketAddr, how: &str, flags: &[&str]) -> ChatClient {
        let server = server.to_string();
        let mut all = trust_flags(&server);
        all.push("--download-dir".into());
        all.push(self.downloads.display().to_string());
        all.extend(flags.iter().map(|f| f.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut client = ChatClient::start_exact(
            &server,
            self.name,
            &all,
            &[how, self.name, PASSWORD],
            self.home.path(),
        );
        client.expect_event("welcome");
        client
    }

    /// Every name in the download folder, hidden ones (partial files) too.
    fn downloaded(&self) -> Vec<String> {
        listing(&self.downloads)
    }
}

fn listing(folder: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `len` bytes that differ from offset to offset, so a byte out of place changes the hash.
fn content(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file of `bytes` named `name` in a folder of its own.
fn file_to_send(folder: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = folder.path().join(name);
    fs::write(&path, bytes).expect("write the file to send");
    path
}

/// Waits for the transfer event `kind` going `direction` (`in` or `out`).
fn file_event(client: &mut ChatClient, kind: &str, direction: &str) -> Value {
    client.expect(&format!("{kind} ({direction})"), |e| {
        e["event"] == kind && e["direction"] == direction
    })
}

/// A server and two people online, each knowing the other is.
/// alice offers bob the file at `path`; bob's `file_offer` event.
fn offer(a: &mut ChatClient, b: &mut ChatClient, path: &Path) -> Value {
    a.send(&format!("/send bob {}", path.display()));
    file_event(b, "file_offer", "in")
}

/// The name of the partial file in `person`'s download folder, once there is one.
fn partial_file(person: &Person) -> String {
    wait_until("a partial file", || {
        person
            .downloaded()
            .into_iter()
            .find(|n| n.ends_with(".p2pchat-part"))
    })
}

fn two_online(flags: &[&str]) -> (TempDir, Server, Person, ChatClient, Person, ChatClient) {
    let users = TempDir::new().unwrap();
    let server = Server::start(&users.path().join("users.json"), &[]);
    let alice = Person::new("alice");
    let mut a = alice.start(server.addr, "register", flags);
    let bob = Person::new("bob");
    let b = bob.start(server.addr, "register", flags);
    a.expect_joined("bob");
    (users, server, alice, a, bob, b)
}

const SIZE: usize = 300 * 1024;

#[test]
fn an_accepted_offer_arrives_whole_with_its_sha256_and_every_step_is_an_event() {
    let (_users, _server, _alice, mut a, bob, mut b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    let bytes = content(SIZE);
    let path = file_to_send(&files, "report.pdf", &bytes);

    a.send(&format!("/send bob {}", path.display()));
    let offered = file_event(&mut a, "file_offer", "out");
    assert_eq!(offered["peer"], "bob");
    assert_eq!(offered["size"], SIZE as u64);
    assert_eq!(offered["lapses_in"], 600);
    let offer = file_event(&mut b, "file_offer", "in");
    assert_eq!(offer["peer"], "alice");
    assert_eq!(offer["name"], "report.pdf");
    assert_eq!(offer["transfer"], offered["transfer"]);
    assert_eq!(
        bob.downloaded(),
        Vec::<String>::new(),
        "nothing before /accept"
    );

    b.send("/accept alice");
    let steps = b.until("file_done (in)", |e| {
        e["event"] == "file_done" && e["direction"] == "in"
    });
    let kinds: Vec<&str> = steps
        .iter()
        .filter_map(|e| e["event"].as_str())
        .filter(|k| k.starts_with("file_"))
        .collect();
    assert_eq!(kinds.first(), Some(&"file_accepted"), "{kinds:?}");
    assert!(kinds.contains(&"file_started"), "{kinds:?}");
    let done = steps.last().unwrap();
    assert_eq!(done["sha256"], sha256_hex(&bytes));
    assert_eq!(done["size"], SIZE as u64);
    let saved = PathBuf::from(done["path"].as_str().unwrap());
    assert_eq!(saved, bob.downloads.join("report.pdf"));
    assert_eq!(fs::read(&saved).unwrap(), bytes);
    assert_eq!(bob.downloaded(), ["report.pdf"], "no partial file left");

    file_event(&mut a, "file_accepted", "out");
    let started = file_event(&mut a, "file_started", "out");
    assert_eq!(started["offset"], 0);
    let sent = file_event(&mut a, "file_done", "out");
    assert_eq!(sent["sha256"], sha256_hex(&bytes));

    // Done is done: neither lists it any more.
    b.send("/transfers");
    assert_eq!(
        b.expect_event("transfers")["transfers"],
        serde_json::json!([])
    );
}

#[test]
fn the_server_never_sees_a_byte_a_transfer_completes_while_it_is_stopped() {
    let (_users, server, _alice, mut a, bob, mut b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    let bytes = content(SIZE);
    let path = file_to_send(&files, "photo.jpg", &bytes);
    // From here the server cannot read a byte: offer, answer and data go peer to peer.
    let _frozen = server.freeze();
    offer(&mut a, &mut b, &path);
    b.send("/accept alice");
    let done = file_event(&mut b, "file_done", "in");
    assert_eq!(done["sha256"], sha256_hex(&bytes));
    assert_eq!(fs::read(bob.downloads.join("photo.jpg")).unwrap(), bytes);
    file_event(&mut a, "file_done", "out");
}

#[test]
fn a_declined_offer_is_forgotten_at_both_ends_and_nothing_is_written() {
    let (_users, _server, _alice, mut a, bob, mut b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    let path = file_to_send(&files, "notes.txt", b"private notes");
    offer(&mut a, &mut b, &path);
    b.send("/decline alice");
    file_event(&mut b, "file_declined", "in");
    let declined = file_event(&mut a, "file_declined", "out");
    assert_eq!(declined["peer"], "bob");
    assert_eq!(bob.downloaded(), Vec::<String>::new());
    a.send("/transfers");
    assert_eq!(
        a.expect_event("transfers")["transfers"],
        serde_json::json!([])
    );
    b.send("/accept alice");
    let refused = b.expect_event("error");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("no file offer from alice"),
        "{refused}"
    );
}

#[test]
fn an_unanswered_offer_lapses_at_both_ends() {
    let (_users, _server, _alice, mut a, bob, mut b) = two_online(&["--offer-timeout", "1"]);
    let files = TempDir::new().unwrap();
    let path = file_to_send(&files, "slides.pdf", b"slides");
    let offer = offer(&mut a, &mut b, &path);
    assert_eq!(offer["lapses_in"], 1);
    file_event(&mut b, "file_lapsed", "in");
    file_event(&mut a, "file_lapsed", "out");
    b.send("/accept alice");
    assert!(b.expect_event("error")["message"]
        .as_str()
        .unwrap()
        .contains("no file offer"));
    assert_eq!(bob.downloaded(), Vec::<String>::new());
}

#[test]
fn an_offer_over_max_file_size_is_refused_at_accept_with_a_clear_line() {
    let (_users, _server, _alice, mut a, bob, mut b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    // A terabyte that takes no disk: a sparse file.
    let path = files.path().join("disk.img");
    fs::File::create(&path)
        .unwrap()
        .set_len(1 << 40)
        .expect("a sparse file of 1 TiB");
    let offer = offer(&mut a, &mut b, &path);
    assert_eq!(offer["size"], 1u64 << 40);
    assert_eq!(offer["over_limit"], true);
    b.send("/accept alice");
    let refused = b.expect_event("error");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("larger than --max-file-size (4.0 GiB)") && message.contains("1.0 TiB"),
        "{message}"
    );
    assert!(message.contains("nothing was written"), "{message}");
    assert_eq!(bob.downloaded(), Vec::<String>::new());
    // Still offered: the person may decline it.
    b.send("/decline alice");
    file_event(&mut a, "file_declined", "out");
}

#[test]
fn names_a_peer_chose_are_saved_safely_inside_the_download_folder() {
    let (_users, _server, _alice, mut a, bob, mut b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    // A name with a line break cannot be typed on one line: a screen's control sequence and a
    // bidi override can (the engine's own tests take `../../.bashrc`, `/etc/passwd` and `\n`).
    let names = [".bashrc", "evil\u{1b}[2J\u{202e}fdp.exe", "con"];
    for name in names {
        let bytes = name.as_bytes().repeat(100);
        let path = file_to_send(&files, name, &bytes);
        let offer = offer(&mut a, &mut b, &path);
        assert_eq!(offer["name"], name);
        b.send(&format!(
            "/accept alice {}",
            &offer["transfer"].as_str().unwrap()[..8]
        ));
        let done = file_event(&mut b, "file_done", "in");
        let saved = PathBuf::from(done["path"].as_str().unwrap());
        assert_eq!(saved.parent(), Some(bob.downloads.as_path()), "{saved:?}");
        let file_name = saved.file_name().unwrap().to_str().unwrap();
        assert!(!file_name.starts_with('.'), "{file_name:?}");
        assert!(
            !file_name.contains(['\u{1b}', '\u{202e}', '/']),
            "{file_name:?}"
        );
        assert!(!file_name.eq_ignore_ascii_case("con"), "{file_name:?}");
        assert_eq!(fs::read(&saved).unwrap(), bytes);
    }
}

#[test]
fn an_existing_file_is_never_overwritten() {
    let (_users, _server, _alice, mut a, bob, mut b) = two_online(&[]);
    fs::create_dir_all(&bob.downloads).unwrap();
    fs::write(bob.downloads.join("report.pdf"), b"bob's own report").unwrap();
    let files = TempDir::new().unwrap();
    let bytes = content(SIZE);
    let path = file_to_send(&files, "report.pdf", &bytes);
    offer(&mut a, &mut b, &path);
    b.send("/accept alice");
    let done = file_event(&mut b, "file_done", "in");
    assert_eq!(
        PathBuf::from(done["path"].as_str().unwrap()),
        bob.downloads.join("report (1).pdf")
    );
    assert_eq!(
        fs::read(bob.downloads.join("report.pdf")).unwrap(),
        b"bob's own report"
    );
    assert_eq!(
        fs::read(bob.downloads.join("report (1).pdf")).unwrap(),
        bytes
    );
}

#[test]
fn cancel_at_the_receiver_mid_transfer_ends_it_at_both_ends_and_removes_the_partial_file() {
    let (_users, _server, _alice, mut a, bob, mut b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    let path = file_to_send(&files, "big.iso", &content(SIZE));
    offer(&mut a, &mut b, &path);
    // alice holds still: bob's fetch waits on her, its partial file made.
    let frozen = a.freeze();
    b.send("/accept alice");
    file_event(&mut b, "file_accepted", "in");
    wait_until("bob's partial file", || {
        bob.downloaded()
            .iter()
            .any(|n| n.ends_with(".p2pchat-part"))
    });
    b.send("/cancel alice");
    let cancelled = file_event(&mut b, "file_cancelled", "in");
    assert_eq!(cancelled["by"], "you");
    assert_eq!(
        bob.downloaded(),
        Vec::<String>::new(),
        "the partial file is gone"
    );
    drop(frozen);
    let told = file_event(&mut a, "file_cancelled", "out");
    assert_eq!(told["by"], "peer");
    a.send("/transfers");
    assert_eq!(
        a.expect_event("transfers")["transfers"],
        serde_json::json!([])
    );
}

#[test]
fn cancel_at_the_sender_withdraws_the_offer_at_both_ends() {
    let (_users, _server, _alice, mut a, bob, mut b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    let path = file_to_send(&files, "draft.txt", b"draft");
    let offer = offer(&mut a, &mut b, &path);
    a.send(&format!(
        "/cancel {}",
        &offer["transfer"].as_str().unwrap()[..8]
    ));
    assert_eq!(file_event(&mut a, "file_cancelled", "out")["by"], "you");
    assert_eq!(file_event(&mut b, "file_cancelled", "in")["by"], "peer");
    b.send("/accept alice");
    assert!(b.expect_event("error")["message"]
        .as_str()
        .unwrap()
        .contains("no file offer"));
    assert_eq!(bob.downloaded(), Vec::<String>::new());
}

/// alice offers, bob accepts while alice is stopped (his partial file made, his connection
/// waiting), bob is killed; his partial file is given the file's first half, as a transfer cut
/// there leaves it. Returns the file's bytes and the partial file's path.
fn cut_in_the_middle(
    a: &mut ChatClient,
    mut b: ChatClient,
    bob: &Person,
    files: &TempDir,
) -> Vec<u8> {
    let bytes = content(SIZE);
    let path = file_to_send(files, "dataset.csv", &bytes);
    offer(a, &mut b, &path);
    let frozen = a.freeze();
    b.send("/accept alice");
    file_event(&mut b, "file_accepted", "in");
    let partial = partial_file(bob);
    b.kill();
    fs::write(bob.downloads.join(&partial), &bytes[..SIZE / 2]).unwrap();
    drop(frozen);
    bytes
}

#[test]
fn a_receiver_killed_mid_transfer_resumes_where_its_partial_file_ends_after_a_restart() {
    let (_users, server, _alice, mut a, bob, b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    let bytes = cut_in_the_middle(&mut a, b, &bob, &files);
    let mut b = bob.start(server.addr, "login", &[]);
    let started = file_event(&mut b, "file_started", "in");
    assert_eq!(
        started["offset"],
        (SIZE / 2) as u64,
        "resumed, not restarted"
    );
    let done = file_event(&mut b, "file_done", "in");
    assert_eq!(done["sha256"], sha256_hex(&bytes));
    assert_eq!(fs::read(bob.downloads.join("dataset.csv")).unwrap(), bytes);
    assert_eq!(bob.downloaded(), ["dataset.csv"]);
    let sent = file_event(&mut a, "file_done", "out");
    assert_eq!(sent["sha256"], sha256_hex(&bytes));
}

#[test]
fn a_transfer_resumes_after_the_server_and_the_receiver_restart() {
    let users = TempDir::new().unwrap();
    let keys = TempDir::new().unwrap();
    let users_file = users.path().join("users.json");
    let mut server = Server::start_with_keys("127.0.0.1:0", &users_file, keys.path());
    let addr = server.addr;
    let alice = Person::new("alice");
    let mut a = alice.start(addr, "register", &["--reconnect"]);
    let bob = Person::new("bob");
    let b = bob.start(addr, "register", &[]);
    a.expect_joined("bob");
    let files = TempDir::new().unwrap();
    let bytes = cut_in_the_middle(&mut a, b, &bob, &files);

    server.kill();
    let _server = Server::start_with_keys(&addr.to_string(), &users_file, keys.path());
    // alice logs in again by herself; bob is started again.
    a.expect_event("welcome");
    let mut b = bob.start(addr, "login", &[]);
    let started = file_event(&mut b, "file_started", "in");
    assert_eq!(started["offset"], (SIZE / 2) as u64);
    let done = file_event(&mut b, "file_done", "in");
    assert_eq!(done["sha256"], sha256_hex(&bytes));
    assert_eq!(fs::read(bob.downloads.join("dataset.csv")).unwrap(), bytes);
    file_event(&mut a, "file_done", "out");
}

#[test]
fn a_sender_killed_mid_transfer_serves_the_rest_after_a_restart() {
    let (_users, server, alice, mut a, bob, mut b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    let bytes = content(SIZE);
    let path = file_to_send(&files, "archive.tar", &bytes);
    offer(&mut a, &mut b, &path);
    // alice holds still, then dies: bob's fetch never gets a byte from her.
    let frozen = a.freeze();
    b.send("/accept alice");
    file_event(&mut b, "file_accepted", "in");
    let partial = partial_file(&bob);
    a.kill();
    // Dead: there is nothing left to let go on.
    std::mem::forget(frozen);
    b.expect("alice left", |e| {
        e["event"] == "left" && e["username"] == "alice"
    });
    // What a transfer cut at the middle leaves.
    fs::write(bob.downloads.join(&partial), &bytes[..SIZE / 2]).unwrap();
    // alice starts again: her records name the file; bob resumes from his partial file's end.
    let mut a = alice.start(server.addr, "login", &[]);
    let started = file_event(&mut b, "file_started", "in");
    assert_eq!(started["offset"], (SIZE / 2) as u64);
    let done = file_event(&mut b, "file_done", "in");
    assert_eq!(done["sha256"], sha256_hex(&bytes));
    assert_eq!(fs::read(bob.downloads.join("archive.tar")).unwrap(), bytes);
    let sent = file_event(&mut a, "file_done", "out");
    assert_eq!(sent["sha256"], sha256_hex(&bytes));
}

#[test]
fn a_transfer_unfinished_for_a_week_is_forgotten_with_its_partial_file_and_a_recent_one_kept() {
    let users = TempDir::new().unwrap();
    let server = Server::start(&users.path().join("users.json"), &[]);
    let bob = Person::new("bob");
    fs::create_dir_all(&bob.downloads).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (old, recent) = (
        "0123456789abcdef0123456789abcdef",
        "fedcba9876543210fedcba9876543210",
    );
    let record = |id: &str, name: &str, offered_at: u64| {
        serde_json::json!({"transfer": id, "direction": "in", "peer": "alice", "name": name,
            "size": 1000, "folder": bob.downloads, "offered_at": offered_at, "accepted": true})
    };
    let records = serde_json::json!({"version": 1, "transfers": [
        record(old, "old.iso", now - 8 * 24 * 3600),
        record(recent, "new.iso", now - 3600),
    ]});
    // Where bob's client keeps its records: the data folder the harness gives this server's clients.
    let folder = data_home_of(&server.addr.to_string(), bob.home.path()).join("p2pchat");
    fs::create_dir_all(&folder).unwrap();
    fs::write(folder.join("transfers-bob.json"), records.to_string()).unwrap();
    let old_partial = format!(".old.iso.{old}.p2pchat-part");
    let recent_partial = format!(".new.iso.{recent}.p2pchat-part");
    fs::write(bob.downloads.join(&old_partial), [1u8; 500]).unwrap();
    fs::write(bob.downloads.join(&recent_partial), [2u8; 500]).unwrap();

    let mut b = bob.start(server.addr, "register", &[]);
    let warning = b.expect_event("warning");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("forgot the unfinished transfer of old.iso from alice"),
        "{warning}"
    );
    assert_eq!(
        bob.downloaded(),
        [recent_partial],
        "the week-old partial file is gone"
    );
    b.send("/transfers");
    let listed = b.expect_event("transfers");
    let rows = listed["transfers"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["transfer"], recent);
    assert_eq!(rows[0]["stage"], "interrupted");
    let kept = fs::read_to_string(folder.join("transfers-bob.json")).unwrap();
    assert!(!kept.contains(old) && kept.contains(recent), "{kept}");
}

/// The opening a receiver sends first (docs/protocol.md, "File transfer: the data connection"),
/// made by hand: magic, version, transfer id, receiver's and sender's key ids, offset, nonce.
fn opening(transfer: &str, receiver_key: &[u8], sender_key: &[u8]) -> Vec<u8> {
    let mut bytes = b"p2pchat-file".to_vec();
    bytes.push(1);
    bytes.extend((0..16).map(|i| u8::from_str_radix(&transfer[2 * i..2 * i + 2], 16).unwrap()));
    bytes.extend_from_slice(&receiver_key[..8]);
    bytes.extend_from_slice(&sender_key[..8]);
    bytes.extend_from_slice(&0u64.to_be_bytes());
    bytes.extend_from_slice(&[0x5a; 32]);
    bytes
}

/// The key id of a peer entry's public key: the first 8 bytes of its SHA-256.
fn key_id(peer: &Value) -> Vec<u8> {
    use base64ct::{Base64, Encoding};
    let key = Base64::decode_vec(peer["public_key"].as_str().unwrap()).unwrap();
    Sha256::digest(key)[..8].to_vec()
}

/// Everything the listener sends a connection that wrote `first`, until it closes.
fn what_a_stranger_gets(port: SocketAddr, first: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(port).expect("connect to the transfer port");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(first).unwrap();
    // Nothing more will come from this side: the listener need not wait out its deadline.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    // Read until the listener closes (or resets) the connection.
    let _ = stream.read_to_end(&mut got);
    got
}

#[test]
fn a_stranger_on_the_transfer_port_gets_nothing_of_the_file_and_the_offer_stands() {
    let (_users, _server, _alice, mut a, bob, mut b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    let bytes = content(SIZE);
    let path = file_to_send(&files, "secret.pdf", &bytes);
    a.send(&format!("/send bob {}", path.display()));
    let offered = file_event(&mut a, "file_offer", "out");
    file_event(&mut b, "file_offer", "in");
    let port = a.p2p_addr();

    // Garbage: closed, nothing sent.
    assert_eq!(what_a_stranger_gets(port, &[b'x'; 85]), Vec::<u8>::new());
    // The real transfer id and bob's real key id, from bob's address (loopback), without
    // bob's keys: it cannot finish the handshake, and gets no byte of the file.
    let joined = a
        .history
        .iter()
        .find(|e| e["event"] == "joined" && e["peer"]["username"] == "bob")
        .cloned()
        .unwrap();
    let welcome_b = b
        .history
        .iter()
        .find(|e| e["event"] == "welcome")
        .cloned()
        .unwrap();
    let alice_entry = welcome_b["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["username"] == "alice")
        .cloned()
        .unwrap();
    let forged = opening(
        offered["transfer"].as_str().unwrap(),
        &key_id(&joined["peer"]),
        &key_id(&alice_entry),
    );
    let got = what_a_stranger_gets(port, &forged);
    assert!(
        got.len() <= 33,
        "{} bytes: more than the handshake's reply",
        got.len()
    );
    let warning = a.expect("a warning about the connection", |e| {
        e["event"] == "warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("could not prove it is bob's client"))
    });
    assert!(
        a.history.iter().all(|e| e["event"] != "file_started"),
        "{warning}"
    );
    assert_eq!(bob.downloaded(), Vec::<String>::new());

    // The offer stands: bob takes it.
    b.send("/accept alice");
    let done = file_event(&mut b, "file_done", "in");
    assert_eq!(done["sha256"], sha256_hex(&bytes));
}

/// An opening for `transfer` that names bob's and alice's real key ids (from what each client
/// was told), made without bob's keys: what a host on bob's IP could send after sniffing one.
fn forged_opening(a: &ChatClient, b: &ChatClient, transfer: &str) -> Vec<u8> {
    let joined = a
        .history
        .iter()
        .find(|e| e["event"] == "joined" && e["peer"]["username"] == "bob")
        .cloned()
        .expect("alice saw bob join");
    let welcome_b = b
        .history
        .iter()
        .find(|e| e["event"] == "welcome")
        .cloned()
        .expect("bob's welcome");
    let alice_entry = welcome_b["peers"]
        .as_array()
        .expect("the peers in bob's welcome")
        .iter()
        .find(|p| p["username"] == "alice")
        .cloned()
        .expect("alice in bob's welcome");
    opening(transfer, &key_id(&joined["peer"]), &key_id(&alice_entry))
}

/// One established TCP socket of this machine (this network namespace), as /proc/net/tcp and
/// tcp6 list it: its ports and the bytes received but not yet read by its process.
struct SocketRow {
    local_port: u16,
    remote_port: u16,
    unread: usize,
}

/// The established TCP sockets: lets a test see that bytes reached a stopped process's socket.
fn established() -> Vec<SocketRow> {
    let port = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let mut rows = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl, local address, remote address, state (01: established), tx:rx queues.
            let (Some(local), Some(remote), Some(&"01"), Some(queues)) = (
                fields.get(1).and_then(|a| port(a)),
                fields.get(2).and_then(|a| port(a)),
                fields.get(3),
                fields.get(4),
            ) else {
                continue;
            };
            let Some(unread) = queues
                .split(':')
                .nth(1)
                .and_then(|q| usize::from_str_radix(q, 16).ok())
            else {
                continue;
            };
            rows.push(SocketRow {
                local_port: local,
                remote_port: remote,
                unread,
            });
        }
    }
    rows
}

/// The clear opening's size and the sender's reply to it (docs/protocol.md).
const OPENING_BYTES: usize = 85;
const REPLY_BYTES: usize = 33;

#[test]
fn a_connection_that_cannot_prove_itself_leaves_the_running_transfer_alone() {
    let (_users, _server, _alice, mut a, _bob, mut b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    let bytes = content(SIZE);
    let path = file_to_send(&files, "report.pdf", &bytes);
    a.send(&format!("/send bob {}", path.display()));
    let offered = file_event(&mut a, "file_offer", "out");
    file_event(&mut b, "file_offer", "in");
    let port = a.p2p_addr();
    let forged = forged_opening(&a, &b, offered["transfer"].as_str().unwrap());

    // Bob's connection waits at alice's port with its opening sent, alice stopped.
    let alice_frozen = a.freeze();
    b.send("/accept alice");
    file_event(&mut b, "file_accepted", "in");
    wait_until("bob's opening at alice's port", || {
        established()
            .iter()
            .any(|s| s.local_port == port.port() && s.unread >= OPENING_BYTES)
    });
    // Bob stops before he reads alice's answer; alice runs and answers him: his connection is
    // the transfer's, its handshake under way.
    let bob_frozen = b.freeze();
    drop(alice_frozen);
    wait_until("alice's reply at bob's end", || {
        established()
            .iter()
            .any(|s| s.remote_port == port.port() && s.unread >= REPLY_BYTES)
    });

    // A host on bob's IP (loopback) names the same transfer, and cannot prove it is bob.
    let mut stranger = TcpStream::connect(port).expect("connect to alice's transfer port");
    stranger.set_read_timeout(Some(DEADLINE)).unwrap();
    stranger.write_all(&forged).unwrap();
    let mut reply = [0u8; REPLY_BYTES];
    stranger
        .read_exact(&mut reply)
        .expect("alice's reply to the forged opening");
    stranger.write_all(&[0u8; 32]).unwrap(); // A proof it cannot make.
    a.expect("a warning about the connection", |e| {
        e["event"] == "warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("could not prove it is bob's client"))
    });

    // Bob goes on: his run was never ended, the file arrives whole, nothing interrupted.
    drop(bob_frozen);
    let steps = b.until("file_done (in)", |e| {
        e["event"] == "file_done" && e["direction"] == "in"
    });
    assert!(
        steps.iter().all(|e| e["event"] != "file_failed"),
        "{steps:#?}"
    );
    assert_eq!(steps.last().unwrap()["sha256"], sha256_hex(&bytes));
    let sent = a.until("file_done (out)", |e| {
        e["event"] == "file_done" && e["direction"] == "out"
    });
    assert!(
        sent.iter().all(|e| e["event"] != "file_failed"),
        "{sent:#?}"
    );
}

/// A TCP connection to `to` from loopback address `from` that sends nothing.
fn idle_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("a loopback address");
    socket.bind(&local.into()).expect("bind the source address");
    socket
        .connect(&to.into())
        .expect("connect to the transfer port");
    socket.into()
}

#[test]
fn idle_connections_from_another_address_do_not_shut_out_the_receiver() {
    let (_users, _server, _alice, mut a, _bob, mut b) = two_online(&[]);
    let files = TempDir::new().unwrap();
    let bytes = content(SIZE);
    let path = file_to_send(&files, "report.pdf", &bytes);
    a.send(&format!("/send bob {}", path.display()));
    file_event(&mut a, "file_offer", "out");
    file_event(&mut b, "file_offer", "in");
    // More idle connections from one LAN host (127.0.0.2; bob is 127.0.0.1) than the listener
    // holds in all (`MAX_OPENINGS`, 16): it keeps a few of them, never bob's place.
    let _idle: Vec<TcpStream> = (0..17)
        .map(|_| idle_from("127.0.0.2", a.p2p_addr()))
        .collect();
    b.send("/accept alice");
    let steps = b.until("file_done (in)", |e| {
        e["event"] == "file_done" && e["direction"] == "in"
    });
    assert!(
        steps.iter().all(|e| e["event"] != "file_failed"),
        "{steps:#?}"
    );
    assert_eq!(steps.last().unwrap()["sha256"], sha256_hex(&bytes));
}

#[test]
fn a_plaintext_client_has_no_file_transfers_and_says_why_when_asked() {
    let users = TempDir::new().unwrap();
    let server = Server::start(&users.path().join("users.json"), &["--plaintext"]);
    let alice = Person::new("alice");
    let mut a = alice.start(server.addr, "register", &[]);
    let bob = Person::new("bob");
    let _b = bob.start(server.addr, "register", &[]);
    a.expect_joined("bob");
    let files = TempDir::new().unwrap();
    let path = file_to_send(&files, "a.txt", b"a");
    a.send(&format!("/send bob {}", path.display()));
    let refused = a.expect_event("error");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("file transfers are off") && message.contains("--plaintext"),
        "{refused}"
    );
    // The clear mode stays as quiet as it was: no warning before anyone asked.
    assert!(
        a.history.iter().all(|e| e["event"] != "warning"),
        "{:?}",
        a.history
    );
}

/// Polls `found` until it gives something, within the deadline.
fn wait_until<T: IntoOption>(what: &str, mut found: impl FnMut() -> T) -> T::Value {
    let start = Instant::now();
    loop {
        if let Some(value) = found().into_option() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "no {what} within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `bool` and `Option` alike for [`wait_until`].
trait IntoOption: Sized {
    type Value;
    fn into_option(self) -> Option<Self::Value>;
}

impl IntoOption for bool {
    type Value = ();
    fn into_option(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> IntoOption for Option<T> {
    type Value = T;
    fn into_option(self) -> Option<T> {
        self
    }
}
