//! TLS between client and server, black-box: the real binaries, on loopback. The default mode
//! end to end; the fingerprint the server prints is the one the client pins; a changed server
//! is refused before anything is sent; `--trust`; the two protocols meeting each other; the key
//! file's mode; and what an eavesdropper captures on `lo` in each mode.
//!
//! These tests choose every flag themselves ([`Server::start_exact`], [`ChatClient::start_exact`]):
//! the key beside the users file, clients with a known-servers file of their own.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use predicates::prelude::*;
use tempfile::TempDir;

/// The exit status of a client that does not trust the server (README, `--help`).
const NOT_TRUSTED: i32 = 6;

/// The exit status of a client that failed on its own host, here its known-servers file.
const LOCAL: i32 = 1;

/// The exit status of a client that cannot talk to the server, here because the two speak
/// different protocols.
const UNREACHABLE: i32 = 3;

/// A server in the default mode (TLS, key and certificate beside the users file) in `dir`.
fn default_server(dir: &Path) -> Server {
    Server::start_exact(
        "127.0.0.1:0",
        &dir.join("users.json"),
        &["--scrypt-log-n", TEST_LOG_N],
        None,
    )
}

/// A client with `config` as its configuration folder and exactly `flags` (no `--trust`).
fn client(server: &str, config: &Path, flags: &[&str], answers: &[&str]) -> ChatClient {
    ChatClient::start_exact(
        server,
        answers.get(1).unwrap_or(&"?"),
        flags,
        answers,
        config,
    )
}

fn known_servers(config: &Path) -> PathBuf {
    config.join("p2pchat").join("known_servers")
}

#[test]
fn default_mode_registers_chats_and_pins_the_printed_fingerprint() {
    let dir = TempDir::new().unwrap();
    let server = default_server(dir.path());
    let printed = server.fingerprint.expect("a fingerprint line");
    let key = dir.path().join("tls-key.pem");
    assert_eq!(
        permission_bits(&key),
        0o600,
        "the key beside the users file is private"
    );
    assert!(dir.path().join("tls-cert.pem").exists());
    server.wait_for_log(&format!("fingerprint {printed}"));

    let config = TempDir::new().unwrap();
    let addr = server.addr.to_string();
    let mut alice = client(
        &addr,
        config.path(),
        &["--accept-new"],
        &["register", "alice", "alice-pass-1"],
    );
    alice.expect_event("welcome");
    let mut bob = client(
        &addr,
        config.path(),
        &[],
        &["register", "bob", "bob-pass-1"],
    );
    bob.expect_event("welcome");
    alice.send("hello over TLS");
    assert_eq!(bob.expect_event("message")["text"], "hello over TLS");

    // Alice met the server first and recorded the fingerprint it printed; bob found it known.
    let recorded = std::fs::read_to_string(known_servers(config.path())).unwrap();
    assert_eq!(recorded, format!("{addr} {printed}\n"));
    let alice = alice.finish();
    assert!(alice.status.success(), "{alice:?}");
    assert!(
        alice.stderr.contains(&format!(
            "first contact with {addr} (--accept-new): trusting its fingerprint {printed}"
        )),
        "{}",
        alice.stderr
    );
    let bob = bob.finish();
    assert!(!bob.stderr.contains("first contact"), "{}", bob.stderr);

    // The next start loads the same identity.
    drop(server);
    let again = default_server(dir.path());
    assert_eq!(again.fingerprint, Some(printed));
}

#[test]
fn a_client_pinned_to_server_a_refuses_server_b_on_the_same_port_and_sends_nothing() {
    let dir_a = TempDir::new().unwrap();
    let dir_b = TempDir::new().unwrap();
    let config = TempDir::new().unwrap();
    let mut a = default_server(dir_a.path());
    let addr = a.addr.to_string();
    let answers = ["register", "alice", "alice-pass-1"];
    client(&addr, config.path(), &["--accept-new"], &answers).expect_event("welcome");
    a.terminate();

    // Another server (another key) on the same address and port.
    let b = Server::start_exact(
        &addr,
        &dir_b.path().join("users.json"),
        &["--scrypt-log-n", TEST_LOG_N],
        None,
    );
    assert_ne!(b.fingerprint, a.fingerprint);
    let file = known_servers(config.path());
    let pinned = std::fs::read_to_string(&file).unwrap();
    // --accept-new trusts only what is new: a changed key is refused all the same.
    let refused = client(&addr, config.path(), &["--accept-new"], &answers).wait();
    assert_eq!(refused.status.code(), Some(NOT_TRUSTED), "{refused:?}");
    for needed in [
        "SERVER IDENTIFICATION HAS CHANGED",
        // The fix: the command that forgets it, and the line it removes.
        &format!("p2pchat-client --forget {addr}\n"),
        &format!("removes line 1 of {}", file.display()),
        &b.fingerprint.unwrap().to_string(),
    ] {
        assert!(
            refused.stderr.contains(needed),
            "{needed:?} in {}",
            refused.stderr
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), pinned, "unchanged");
    // B saw a handshake that the client broke off, and nothing after it: no login, no name.
    b.wait_for_log("TLS handshake failed");
    b.wait_for_log("closed");
    let log = b.log();
    for said in ["alice", "registered", "logged in", "refused", "bad message"] {
        assert!(!log.contains(said), "{said:?} in {log}");
    }
}

#[test]
fn trust_requires_that_fingerprint_and_records_nothing() {
    let dir = TempDir::new().unwrap();
    let server = default_server(dir.path());
    let config = TempDir::new().unwrap();
    let addr = server.addr.to_string();
    let answers = ["register", "alice", "alice-pass-1"];
    // Someone else's fingerprint: the SHA-256 of nothing.
    let wrong = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
    let refused = client(&addr, config.path(), &["--trust", wrong], &answers).wait();
    assert_eq!(refused.status.code(), Some(NOT_TRUSTED), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("not the fingerprint --trust requires"),
        "{}",
        refused.stderr
    );
    server.wait_for_log("TLS handshake failed");
    assert!(!server.log().contains("alice"), "{}", server.log());

    let right = server.fingerprint.unwrap().to_string();
    client(&addr, config.path(), &["--trust", &right], &answers).expect_event("welcome");
    assert!(
        !known_servers(config.path()).exists(),
        "--trust records nothing"
    );
}

#[test]
fn without_a_terminal_an_unknown_server_is_refused_and_sent_nothing_unless_trusted_or_accept_new() {
    let dir = TempDir::new().unwrap();
    let server = default_server(dir.path());
    let printed = server.fingerprint.unwrap().to_string();
    let config = TempDir::new().unwrap();
    let addr = server.addr.to_string();
    let answers = ["register", "alice", "alice-pass-1"];
    // A script (stdin a pipe, closed after the answers), no --trust, no --accept-new: refused
    // as OpenSSH's batch mode (trusting it would register alice and end at end of input, 0).
    let refused = client(&addr, config.path(), &[], &answers).finish();
    assert_eq!(refused.status.code(), Some(NOT_TRUSTED), "{refused:?}");
    for needed in [
        "not a known server".to_string(),
        "nothing was sent".to_string(),
        format!("--trust {printed}"),
        "--accept-new".to_string(),
    ] {
        assert!(
            refused.stderr.contains(&needed),
            "{needed:?} in {}",
            refused.stderr
        );
    }
    assert!(!known_servers(config.path()).exists(), "nothing recorded");
    // The server saw a connection end, and no name, no password.
    server.wait_for_log("closed");
    for said in ["alice", "registered", "logged in"] {
        assert!(!server.log().contains(said), "{said:?} in {}", server.log());
    }
    // Either way to proceed works; --accept-new records the server, which is then known.
    client(&addr, config.path(), &["--trust", &printed], &answers).expect_event("welcome");
    assert!(
        !known_servers(config.path()).exists(),
        "--trust records nothing"
    );
    let login = ["login", "alice", "alice-pass-1"];
    let accepted = client(&addr, config.path(), &["--accept-new"], &login).finish();
    assert!(accepted.status.success(), "{accepted:?}");
    assert!(
        accepted.stderr.contains("first contact"),
        "{}",
        accepted.stderr
    );
    let known = client(&addr, config.path(), &[], &login).finish();
    assert!(known.status.success(), "{known:?}");
    assert!(!known.stderr.contains("first contact"), "{}", known.stderr);
}

#[test]
fn a_new_name_at_a_pinned_address_is_a_first_contact_and_a_new_key_there_is_refused() {
    let dir = TempDir::new().unwrap();
    let mut a = default_server(dir.path());
    let port = a.addr.port();
    let addr = a.addr.to_string();
    let fingerprint = a.fingerprint.unwrap();
    let config = TempDir::new().unwrap();
    let file = known_servers(config.path());
    let answers = ["register", "alice", "alice-pass-1"];
    client(&addr, config.path(), &["--accept-new"], &answers).expect_event("welcome");
    let first = std::fs::read_to_string(&file).unwrap();
    // Another name for the same address (as a DNS answer made to lead there): a first contact
    // like any other. Without a terminal or --accept-new it is refused, nothing sent, the
    // other name said.
    let local = format!("localhost:{port}");
    let login = ["login", "alice", "alice-pass-1"];
    let batch = client(&local, config.path(), &[], &login).finish();
    assert_eq!(batch.status.code(), Some(NOT_TRUSTED), "{batch:?}");
    for needed in [
        format!("{local} is not a known server and there is no terminal to ask on"),
        format!("this key is already known for {addr} under the name {addr} (line 1)"),
        "--accept-new".to_string(),
        fingerprint.to_string(),
    ] {
        assert!(
            batch.stderr.contains(&needed),
            "{needed:?} in {}",
            batch.stderr
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first, "unchanged");
    // With --accept-new: trusted with a notice naming the other name, recorded with the address.
    let other_name = client(&local, config.path(), &["--accept-new"], &login).finish();
    assert!(other_name.status.success(), "{other_name:?}");
    assert!(
        other_name.stderr.contains(&format!(
            "first contact with {local} (--accept-new): trusting its fingerprint {fingerprint} \
             (this key is already known for {addr} under the name {addr} (line 1)), now recorded \
             at line 2 of"
        )),
        "{}",
        other_name.stderr
    );
    let pinned = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        pinned,
        format!("{addr} {fingerprint}\n{local},{addr} {fingerprint}\n")
    );
    // Now known by its name: no notice, nothing recorded.
    let known = client(&local, config.path(), &[], &login).finish();
    assert!(known.status.success(), "{known:?}");
    assert!(!known.stderr.contains("first contact"), "{}", known.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), pinned);
    a.terminate();

    // Another server (another key) at that address, reached under a third name (the address
    // mapped into IPv6): --accept-new does not make it new.
    let b = Server::start_exact(
        &addr,
        &TempDir::new().unwrap().path().join("users.json"),
        &["--scrypt-log-n", TEST_LOG_N],
        None,
    );
    let mapped = format!("[::ffff:127.0.0.1]:{port}");
    let refused = client(&mapped, config.path(), &["--accept-new"], &answers).finish();
    assert_eq!(refused.status.code(), Some(NOT_TRUSTED), "{refused:?}");
    for needed in [
        "SERVER IDENTIFICATION HAS CHANGED".to_string(),
        format!("answered at {addr}, which line 1 of {}", file.display()),
        format!("p2pchat-client --forget {addr}\n"),
        b.fingerprint.unwrap().to_string(),
    ] {
        assert!(
            refused.stderr.contains(&needed),
            "{needed:?} in {}",
            refused.stderr
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), pinned, "unchanged");
    b.wait_for_log("TLS handshake failed");
    assert!(!b.log().contains("alice"), "{}", b.log());
}

#[test]
fn a_known_servers_file_that_is_a_link_or_writable_by_others_is_refused() {
    let dir = TempDir::new().unwrap();
    let server = default_server(dir.path());
    let addr = server.addr.to_string();
    let config = TempDir::new().unwrap();
    let file = known_servers(config.path());
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let target = config.path().join("elsewhere");
    std::fs::write(&target, "# someone's file\n").unwrap();
    std::os::unix::fs::symlink(&target, &file).unwrap();
    let answers = ["register", "alice", "alice-pass-1"];
    let refused = client(&addr, config.path(), &["--accept-new"], &answers).finish();
    assert_eq!(refused.status.code(), Some(LOCAL), "{refused:?}");
    assert!(
        refused.stderr.contains("is a symbolic link"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "# someone's file\n",
        "nothing appended through the link"
    );
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, "").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = client(&addr, config.path(), &["--accept-new"], &answers).finish();
    assert_eq!(refused.status.code(), Some(LOCAL), "{refused:?}");
    assert!(
        refused.stderr.contains("mode 0666") && refused.stderr.contains("chmod go-w"),
        "{}",
        refused.stderr
    );
    assert!(!server.log().contains("alice"), "{}", server.log());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    client(&addr, config.path(), &["--accept-new"], &answers).expect_event("welcome");
}

#[test]
fn a_tls_client_is_told_the_server_speaks_plaintext() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &["--plaintext"]);
    let config = TempDir::new().unwrap();
    let answers = ["register", "alice", "alice-pass-1"];
    let refused = client(&server.addr.to_string(), config.path(), &[], &answers).wait();
    assert_eq!(refused.status.code(), Some(UNREACHABLE), "{refused:?}");
    assert!(
        refused.stderr.contains("speaks plaintext p2pchat")
            && refused.stderr.contains("--plaintext"),
        "{}",
        refused.stderr
    );
    assert!(!known_servers(config.path()).exists());
    assert!(!server.log().contains("alice"), "{}", server.log());
}

#[test]
fn a_plaintext_client_is_told_the_server_requires_tls() {
    let dir = TempDir::new().unwrap();
    let server = default_server(dir.path());
    let config = TempDir::new().unwrap();
    let answers = ["register", "alice", "alice-pass-1"];
    let refused = client(
        &server.addr.to_string(),
        config.path(),
        &["--plaintext"],
        &answers,
    )
    .wait();
    assert_eq!(refused.status.code(), Some(UNREACHABLE), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("requires TLS; connect without --plaintext"),
        "{}",
        refused.stderr
    );
    server.wait_for_log("disconnected before login: no TLS handshake (told tls_required)");
    // What the plaintext protocol sees: one error line, then the end.
    let mut raw = RawConnection::connect_silent(server.addr);
    let said = raw.read_until_closed();
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0]["code"], "tls_required", "{said:?}");
    assert_eq!(said[0]["fatal"], true, "{said:?}");
}

#[test]
fn a_tls_key_readable_by_others_is_refused_at_start() {
    let dir = TempDir::new().unwrap();
    drop(default_server(dir.path()));
    let key = dir.path().join("tls-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_cmd::Command::new(server_bin())
        .args(["--bind", "127.0.0.1:0", "--users"])
        .arg(dir.path().join("users.json"))
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(
            predicate::str::contains(key.display().to_string())
                .and(predicate::str::contains(
                    "can be read by others (mode 0644)",
                ))
                .and(predicate::str::contains("chmod 600")),
        );
}

/// Says on the test binary's own stderr that `test` was skipped and why (the harness would hide
/// an `eprintln!` from a passing test).
fn report_skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
}

/// A running `tcpdump -i lo` writing the packets of one TCP port to a file.
struct Capture {
    child: std::process::Child,
    file: PathBuf,
}

impl Capture {
    /// Starts the capture and waits until tcpdump says it is listening.
    fn start(port: u16, file: PathBuf) -> Capture {
        let mut child = Command::new("tcpdump")
            // --immediate-mode: each packet is handed over at once (otherwise those of the last
            // buffer block are lost when tcpdump is stopped); -Z root: keep writing into the
            // test's private temporary folder.
            .args([
                "-i",
                "lo",
                "--immediate-mode",
                "-U",
                "-s",
                "0",
                "-Z",
                "root",
                "-w",
            ])
            .arg(&file)
            .arg(format!("tcp port {port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump");
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let start = Instant::now();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(Ok(_)) => {}
                _ => panic!("tcpdump ended before listening"),
            }
            assert!(start.elapsed() < DEADLINE, "tcpdump never listened");
        }
        std::thread::spawn(move || for _ in lines {});
        Capture { child, file }
    }

    /// Stops tcpdump (SIGINT: it writes out what it has) and returns the capture's bytes.
    fn finish(mut self) -> Vec<u8> {
        // SAFETY: kill(2) with the pid of a child this test started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.child.wait();
        std::fs::read(&self.file).expect("the capture file")
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Registers, logs in again and says a line to the room on `server`, all captured on `lo`;
/// returns the capture.
fn captured_session(server: &Server, flags: &[&str], password: &str, text: &str) -> Vec<u8> {
    let dir = TempDir::new().unwrap();
    let capture = Capture::start(server.addr.port(), dir.path().join("lo.pcap"));
    let config = TempDir::new().unwrap();
    let addr = server.addr.to_string();
    let registered = client(
        &addr,
        config.path(),
        flags,
        &["register", "carol", password],
    );
    let mut registered = registered;
    registered.expect_event("welcome");
    assert!(registered.finish().status.success());
    let mut carol = client(&addr, config.path(), flags, &["login", "carol", password]);
    carol.expect_event("welcome");
    let mut dave = client(
        &addr,
        config.path(),
        flags,
        &["register", "dave", "dave-pass-1"],
    );
    dave.expect_event("welcome");
    carol.send(text);
    assert_eq!(dave.expect_event("message")["text"], text);
    assert!(carol.finish().status.success());
    assert!(dave.finish().status.success());
    capture.finish()
}

#[test]
fn an_eavesdropper_on_lo_reads_neither_password_nor_room_text_over_tls() {
    let test = "an_eavesdropper_on_lo_reads_neither_password_nor_room_text_over_tls";
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return report_skipped(test, "capturing on lo needs root");
    }
    if Command::new("tcpdump").arg("--version").output().is_err() {
        return report_skipped(test, "tcpdump is not installed (ci/install.sh installs it)");
    }
    let (password, text) = ("carol-secret-pass", "the room text nobody else reads");

    let dir = TempDir::new().unwrap();
    let server = default_server(dir.path());
    let sealed = captured_session(&server, &["--accept-new"], password, text);
    assert!(
        sealed.len() > 3000,
        "the handshakes were captured: {} bytes",
        sealed.len()
    );
    assert!(
        !contains(&sealed, password),
        "the password crossed in the clear"
    );
    assert!(
        !contains(&sealed, text),
        "the room text crossed in the clear"
    );
    assert!(
        !contains(&sealed, "\"type\""),
        "protocol lines crossed in the clear"
    );

    // The same session in the plaintext protocol: both are there to read.
    let dir = TempDir::new().unwrap();
    let plain = Server::start(&dir.path().join("users.json"), &["--plaintext"]);
    let clear = captured_session(&plain, &["--plaintext"], password, text);
    assert!(
        contains(&clear, password),
        "the capture sees the plaintext password"
    );
    assert!(
        contains(&clear, text),
        "the capture sees the plaintext room text"
    );
}
