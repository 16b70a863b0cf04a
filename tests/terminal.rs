//! What a person sees, black-box, on a real pseudo-terminal: the real `p2pchat-client` runs with
//! its stdin, stdout and stderr on a pty (its controlling terminal, so the password prompt and
//! the line editor behave as for a person), logged into a real server; mallory, a real peer, sends
//! room and direct messages built to forge lines on that screen. The test reads everything the
//! client wrote to the terminal and looks at it line by line. Terminal behaviour is never assumed
//! from piped runs: the line editor only runs on a terminal.
//!
//! The pty comes from `libc::openpty` (libc is already a dev-dependency; no crate added).

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Instant;

use common::*;
use serde_json::{json, Value};

/// The room message of the review: three lines that look like a message, a message from bob and
/// a system line.
const ROOM_FORGERY: &str = "hi all\n<bob> alice, send me your password\n* bob is now an operator";

/// The direct message of the review: a fake direct message from bob after a line break, a fake
/// system line after U+2028, a bidi override that shows `exe.txt` for `txt.exe`, and zero-width
/// and isolate characters.
const DIRECT_FORGERY: &str =
    "\n[direct] <bob> alice, it is me, run invoice\u{202e}txt.exe\u{2028}* bob left\u{200b}\u{2066}";

/// Lines the client may show for one message: the first, the default ten continuation lines, and
/// the `… (N more lines)` line.
const MOST_LINES_PER_MESSAGE: usize = 1 + 10 + 1;

/// Everything the client wrote to the terminal so far, and a signal when more came.
#[derive(Default)]
struct Screen {
    bytes: Mutex<Vec<u8>>,
    grew: Condvar,
}

/// A `p2pchat-client` on a pseudo-terminal. Dropping it kills it.
struct TerminalClient {
    child: Child,
    /// The pty's master side, for typing.
    keyboard: File,
    screen: Arc<Screen>,
    /// How far [`TerminalClient::wait_for`] has read: each wait looks past the last match.
    seen: usize,
    /// Its XDG_CONFIG_HOME and HOME, removed with it.
    _config: tempfile::TempDir,
}

impl TerminalClient {
    /// Starts `p2pchat-client --server SERVER FLAGS…` on a new pty of 200×50, as the session
    /// leader with the pty as its controlling terminal.
    fn start(server: SocketAddr, flags: &[&str]) -> TerminalClient {
        let (master, slave) = open_pty();
        let stdio = || Stdio::from(slave.try_clone().expect("dup the pty's slave side"));
        let mut command = Command::new(client_bin());
        // A temporary config folder, so no test reads or writes the real known-servers file.
        let config = tempfile::TempDir::new().expect("a config folder");
        command
            .arg("--server")
            .arg(server.to_string())
            .args(trust_flags(&server.to_string()))
            .args(flags)
            .env("XDG_CONFIG_HOME", config.path())
            .env("HOME", config.path())
            .env("TERM", "xterm-256color")
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio());
        // SAFETY: setsid and ioctl are async-signal-safe; they run in the child before exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // stdin is the slave side by now: make it the controlling terminal, which
                // the password prompt opens as /dev/tty.
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start p2pchat-client on a pty");
        // Only the child holds the slave side now, so reads end (EIO) when it exits.
        drop(slave);
        let keyboard = File::from(master.try_clone().expect("dup the pty's master side"));
        let screen = Arc::new(Screen::default());
        let sink = screen.clone();
        thread::spawn(move || {
            let mut master = File::from(master);
            let mut buffer = [0u8; 65_536];
            // Ends with EIO once the child has exited and closed the slave side.
            while let Ok(n @ 1..) = master.read(&mut buffer) {
                sink.bytes.lock().unwrap().extend_from_slice(&buffer[..n]);
                sink.grew.notify_all();
            }
        });
        TerminalClient {
            child,
            keyboard,
            screen,
            seen: 0,
            _config: config,
        }
    }

    /// Types `keys`.
    fn type_keys(&mut self, keys: &str) {
        self.keyboard
            .write_all(keys.as_bytes())
            .expect("type on the pty");
    }

    /// Waits until the terminal shows `needle` past the previous match; returns the offset just
    /// past it.
    fn wait_for(&mut self, needle: &str) -> usize {
        let deadline = Instant::now() + DEADLINE;
        let mut bytes = self.screen.bytes.lock().unwrap();
        loop {
            if let Some(at) = find(&bytes[self.seen..], needle.as_bytes()) {
                self.seen += at + needle.len();
                return self.seen;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the terminal never showed {needle:?}; it shows:\n{}",
                String::from_utf8_lossy(&bytes[self.seen..])
            );
            bytes = self.screen.grew.wait_timeout(bytes, left).unwrap().0;
        }
    }

    /// What was written to the terminal from byte `from` on.
    fn output_from(&self, from: usize) -> Vec<u8> {
        self.screen.bytes.lock().unwrap()[from..].to_vec()
    }

    /// Registers `name` through the prompts, as a person would, and waits for the welcome.
    fn register(&mut self, name: &str, password: &str) {
        self.wait_for("login or register? ");
        self.type_keys("register\n");
        self.wait_for("username: ");
        self.type_keys(&format!("{name}\n"));
        self.wait_for("password: ");
        self.type_keys(&format!("{password}\n"));
        // A new password is typed twice.
        self.wait_for("password again: ");
        self.type_keys(&format!("{password}\n"));
        self.wait_for(&format!("* logged in as {name}"));
    }
}

impl Drop for TerminalClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new pty (master, slave) with a 200×50 window.
fn open_pty() -> (OwnedFd, OwnedFd) {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize {
        ws_row: 50,
        ws_col: 200,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the two ints; no name buffer, default termios.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // The master side must not leak into the child, or reads would never end.
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
    }
    (master, slave)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The pieces of text the terminal shows, each starting at the left edge of the screen as far as
/// we can tell: the output split at every line feed, carriage return and cursor move to a
/// column (the line editor moves to column 1 rather than writing `\r`); other escape sequences
/// (clearing, cursor up) are removed, and a leading prompt `> ` is taken off. Splitting this
/// finely can only show more line starts than a person sees, never fewer.
fn line_starts(output: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            plain.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters and intermediates, then one final byte in @..~.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        if c == 'G' {
                            plain.push('\r');
                        }
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    plain
        .split(['\n', '\r'])
        .map(|piece| piece.strip_prefix("> ").unwrap_or(piece))
        .filter(|piece| !piece.is_empty())
        .map(str::to_string)
        .collect()
}

/// Line starts that look like bob's room or direct messages, or a system line about bob: none
/// of them is real here, for there is no bob.
fn forged(starts: &[String]) -> Vec<&String> {
    starts
        .iter()
        .filter(|s| {
            s.starts_with("<bob>") || s.starts_with("[direct] <bob>") || s.starts_with("* bob")
        })
        .collect()
}

/// A server, alice on a terminal, and mallory: logged in with a raw connection that announces
/// the port of a test-owned UDP socket, so that datagrams from that socket pass alice's source
/// check. Returns alice's direct-message address too.
struct Room {
    _dir: tempfile::TempDir,
    _server: Server,
    alice: TerminalClient,
    alice_udp: SocketAddr,
    mallory_tcp: RawConnection,
    mallory_udp: UdpSocket,
}

fn room(server_flags: &[&str], alice_flags: &[&str]) -> Room {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), server_flags);
    let mut alice = TerminalClient::start(server.addr, alice_flags);
    alice.register("alice", "alice-password");
    let mallory_udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
    let (mallory_tcp, welcome) = RawConnection::register(
        server.addr,
        "mallory",
        "mallory-pw",
        mallory_udp.local_addr().unwrap().port(),
    );
    let alice_peer = welcome["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["username"] == "alice")
        .expect("alice in mallory's welcome")
        .clone();
    let alice_udp = SocketAddr::new(
        alice_peer["ip"].as_str().unwrap().parse().unwrap(),
        alice_peer["p2p_port"].as_u64().unwrap() as u16,
    );
    alice.wait_for("* mallory joined");
    // The peer list that follows every join, with its line feed: what comes after is the test's.
    alice.wait_for("* online (2): alice, mallory\n");
    Room {
        _dir: dir,
        _server: server,
        alice,
        alice_udp,
        mallory_tcp,
        mallory_udp,
    }
}

impl Room {
    fn mallory_says(&mut self, text: &str) {
        self.mallory_tcp.send(&json!({"type": "say", "text": text}));
    }

    fn mallory_direct(&self, id: u64, text: &str) {
        let datagram: Value = json!({"type": "direct", "from": "mallory", "id": id, "text": text});
        self.mallory_udp
            .send_to(datagram.to_string().as_bytes(), self.alice_udp)
            .expect("send a datagram to alice");
    }
}

#[test]
fn a_message_with_line_breaks_cannot_forge_a_line_on_the_terminal() {
    // mallory's direct messages are the clear protocol's JSON datagrams: alice speaks it too.
    // (Sealed ones are laid out by the same code once opened.)
    let mut room = room(&[], &["--plaintext"]);
    let from = room.alice.seen;

    room.mallory_says(ROOM_FORGERY);
    room.mallory_says("end of the room attack");
    room.alice.wait_for("end of the room attack");
    room.mallory_direct(1, DIRECT_FORGERY);
    room.mallory_direct(2, "end of the direct attack");
    room.alice.wait_for("end of the direct attack");

    let output = room.alice.output_from(from);
    let starts = line_starts(&output);
    assert!(
        forged(&starts).is_empty(),
        "forged lines on the screen: {:#?}\nall lines: {starts:#?}",
        forged(&starts)
    );
    for expected in [
        "<mallory> hi all",
        "  ↳ <bob> alice, send me your password",
        "  ↳ * bob is now an operator",
        "[direct] <mallory> ",
        "  ↳ [direct] <bob> alice, it is me, run invoice\\u{202e}txt.exe",
        "  ↳ * bob left\\u{200b}\\u{2066}",
    ] {
        assert!(
            starts.iter().any(|s| s == expected),
            "no line {expected:?} on the screen: {starts:#?}"
        );
    }
    for raw in ['\u{202e}', '\u{2066}', '\u{200b}', '\u{2028}'] {
        assert!(
            find(&output, raw.to_string().as_bytes()).is_none(),
            "{raw:?} reached the terminal raw: {:?}",
            String::from_utf8_lossy(&output)
        );
    }
}

#[test]
fn nine_messages_of_twenty_one_thousand_lines_take_a_bounded_number_of_terminal_lines() {
    // Mallory's lines here (login, nine floods, the marker) exceed the default burst; the server's
    // flood control is not what this test is about.
    let mut room = room(&["--flood-burst", "50"], &[]);
    let from = room.alice.seen;
    let flood = ".\n".repeat(21_000);
    for _ in 0..9 {
        room.mallory_says(&flood);
    }
    room.mallory_says("end of the flood");
    room.alice.wait_for("end of the flood");

    let output = room.alice.output_from(from);
    let terminal_lines = output.iter().filter(|&&b| b == b'\n').count();
    eprintln!("nine messages of 21,000 lines took {terminal_lines} terminal lines");
    assert!(
        terminal_lines <= 9 * MOST_LINES_PER_MESSAGE + 1,
        "nine messages (and the marker) took {terminal_lines} terminal lines"
    );
    let summaries = line_starts(&output)
        .into_iter()
        .filter(|s| s == "  … (20989 more lines)")
        .count();
    assert_eq!(summaries, 9, "each message ends in one summary line");
}

#[test]
fn max_continuation_lines_sets_how_many_lines_of_a_message_are_shown() {
    let mut room = room(&[], &["--max-continuation-lines", "1"]);
    let from = room.alice.seen;
    room.mallory_says(ROOM_FORGERY);
    room.alice.wait_for("(1 more line)");
    let starts = line_starts(&room.alice.output_from(from));
    assert_eq!(
        starts,
        [
            "<mallory> hi all",
            "  ↳ <bob> alice, send me your password",
            "  … (1 more line)"
        ],
        "{starts:#?}"
    );
}

#[test]
fn json_output_keeps_the_exact_text_of_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    // mallory's direct message is a clear JSON datagram: alice speaks the clear protocol.
    let mut alice =
        ChatClient::register_with_flags(server.addr, "alice", "alice-password", &["--plaintext"]);
    let mallory_udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
    let (mut mallory, _) = RawConnection::register(
        server.addr,
        "mallory",
        "mallory-pw",
        mallory_udp.local_addr().unwrap().port(),
    );
    alice.expect(r#""mallory" joined"#, |e| {
        e["event"] == "joined" && e["peer"]["username"] == "mallory"
    });

    let flood = ".\n".repeat(21_000);
    for text in [ROOM_FORGERY, DIRECT_FORGERY, flood.as_str()] {
        mallory.send(&json!({"type": "say", "text": text}));
        let message = alice.expect_event("message");
        assert_eq!(message["text"], text);
    }
    let datagram = json!({"type": "direct", "from": "mallory", "id": 1, "text": DIRECT_FORGERY});
    mallory_udp
        .send_to(datagram.to_string().as_bytes(), alice.p2p_addr())
        .expect("send a datagram to alice");
    let direct = alice.expect_event("direct");
    assert_eq!(direct["text"], DIRECT_FORGERY);
}
