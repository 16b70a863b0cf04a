//! A small pseudo-terminal harness: the real `p2pchat-client` with its stdin, stdout and stderr
//! on a pty (its controlling terminal, so the password prompt and the line editor behave as for
//! a person), keys typed on the master side, and everything the client wrote collected for the
//! test to wait on, with a deadline. Shared by tests/terminal.rs and tests/terminal_ui.rs.
//!
//! The pty comes from `libc::openpty` (libc is already a dependency; no crate added).

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{client_bin, data_home_of, trust_flags, wait_with_deadline, DEADLINE};

/// The prompt for a new password at registration: it says the rule.
pub const NEW_PASSWORD_PROMPT: &str = "password (at least 8 characters): ";

/// Everything the client wrote to the terminal so far, and a signal when more came.
#[derive(Default)]
pub struct Screen {
    bytes: Mutex<Vec<u8>>,
    grew: Condvar,
}

/// A `p2pchat-client` on a pseudo-terminal. Dropping it kills it.
pub struct TerminalClient {
    child: Child,
    /// The pty's master side, for typing.
    keyboard: File,
    screen: Arc<Screen>,
    /// How far [`TerminalClient::wait_for`] has read: each wait looks past the last match.
    pub seen: usize,
    /// Its XDG_CONFIG_HOME, XDG_DATA_HOME, XDG_STATE_HOME and HOME when the harness made them,
    /// removed with it.
    _home: Option<tempfile::TempDir>,
}

impl TerminalClient {
    /// Starts `p2pchat-client --server SERVER FLAGS…` on a new pty of 200×50, as the session
    /// leader with the pty as its controlling terminal, with a temporary home folder of its own.
    pub fn start(server: SocketAddr, flags: &[&str]) -> TerminalClient {
        // A temporary home, so no test reads or writes the real known-servers or history file.
        let home = tempfile::TempDir::new().expect("a home folder");
        let mut client = TerminalClient::start_at_home(server, flags, &[], home.path());
        client._home = Some(home);
        client
    }

    /// Like [`TerminalClient::start`], with `home` as its HOME, XDG_CONFIG_HOME and
    /// XDG_STATE_HOME (kept by the caller, so that a second client can find the first one's
    /// files) and the variables `env` set.
    pub fn start_at_home(
        server: SocketAddr,
        flags: &[&str],
        env: &[(&str, &str)],
        home: &Path,
    ) -> TerminalClient {
        let mut command = Command::new(client_bin());
        command
            .arg("--server")
            .arg(server.to_string())
            // A test that asks for `--plaintext` itself gets it once (clap refuses a repeat); one
            // that names a `--known-servers` file decides about trust itself (the question at
            // first contact is asked only without `--trust`).
            .args(
                match flags.contains(&"--plaintext") || flags.contains(&"--known-servers") {
                    true => Vec::new(),
                    false => trust_flags(&server.to_string()),
                },
            )
            .args(flags)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env(
                "XDG_DATA_HOME",
                data_home_of(&server.to_string(), &home.join("data")),
            )
            .env("XDG_STATE_HOME", home.join("state"))
            .env_remove("XDG_DOWNLOAD_DIR")
            .env("HOME", home)
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .envs(env.iter().copied());
        TerminalClient::spawn(command)
    }

    /// Runs `command` (the client, or a wrapper that execs it, such as `ip netns exec`) on a
    /// new pty of 200×50, as the session leader with the pty as its controlling terminal.
    pub fn spawn(mut command: Command) -> TerminalClient {
        let (master, slave) = open_pty();
        let stdio = || Stdio::from(slave.try_clone().expect("dup the pty's slave side"));
        command.stdin(stdio()).stdout(stdio()).stderr(stdio());
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
            _home: None,
        }
    }

    /// Types `keys`.
    pub fn type_keys(&mut self, keys: &str) {
        self.keyboard
            .write_all(keys.as_bytes())
            .expect("type on the pty");
    }

    /// Waits for `prompt`, then types `line` and Enter.
    pub fn answer(&mut self, prompt: &str, line: &str) {
        self.wait_for(prompt);
        self.type_keys(&format!("{line}\n"));
    }

    /// Waits for `prompt`, then types `secret` and Enter; returns the offset where the prompt
    /// ends, from which on the secret must never show.
    pub fn answer_secret(&mut self, prompt: &str, secret: &str) -> usize {
        let from = self.wait_for(prompt);
        self.type_keys(&format!("{secret}\n"));
        from
    }

    /// Waits until the terminal shows `needle` past the previous match; returns the offset just
    /// past it.
    pub fn wait_for(&mut self, needle: &str) -> usize {
        self.wait_for_within(needle, DEADLINE)
    }

    /// Waits at most `deadline` until the terminal shows `needle` past the previous match;
    /// returns the offset just past it.
    pub fn wait_for_within(&mut self, needle: &str, deadline: Duration) -> usize {
        let until = Instant::now() + deadline;
        let mut bytes = self.screen.bytes.lock().unwrap();
        loop {
            if let Some(at) = find(&bytes[self.seen..], needle.as_bytes()) {
                self.seen += at + needle.len();
                return self.seen;
            }
            let left = until.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the terminal never showed {needle:?} within {deadline:?}; it shows:\n{}",
                String::from_utf8_lossy(&bytes[self.seen..])
            );
            bytes = self.screen.grew.wait_timeout(bytes, left).unwrap().0;
        }
    }

    /// Waits until the terminal shows a line that reads `line` ([`line_starts`]: the time, the
    /// prompt, colour and other escapes left out) past the previous match.
    pub fn wait_for_line(&mut self, line: &str) {
        let until = Instant::now() + DEADLINE;
        let mut bytes = self.screen.bytes.lock().unwrap();
        loop {
            if line_starts(&bytes[self.seen..]).iter().any(|s| s == line) {
                self.seen = bytes.len();
                return;
            }
            let left = until.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the terminal never showed the line {line:?} within {DEADLINE:?}; it shows:\n{}",
                String::from_utf8_lossy(&bytes[self.seen..])
            );
            bytes = self.screen.grew.wait_timeout(bytes, left).unwrap().0;
        }
    }

    /// What was written to the terminal from byte `from` on.
    pub fn output_from(&self, from: usize) -> Vec<u8> {
        self.screen.bytes.lock().unwrap()[from..].to_vec()
    }

    /// Registers `name` through the prompts, as a person would, and waits for the welcome.
    pub fn register(&mut self, name: &str, password: &str) {
        self.answer("login or register? ", "register");
        self.answer("username: ", name);
        self.answer(NEW_PASSWORD_PROMPT, password);
        // A new password is typed twice on a terminal.
        self.answer("password again: ", password);
        self.wait_for(&format!("-!- logged in as {name}"));
    }
}

impl TerminalClient {
    /// Logs `name` in through the prompts and waits for the welcome.
    pub fn login(&mut self, name: &str, password: &str) {
        self.answer("login or register? ", "login");
        self.answer("username: ", name);
        self.answer("password: ", password);
        self.wait_for(&format!("-!- logged in as {name}"));
    }

    /// Makes the terminal `columns` wide and `rows` high, as a person resizing its window (the
    /// client gets SIGWINCH).
    pub fn resize(&self, columns: u16, rows: u16) {
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&self.keyboard, size).expect("resize the pty");
    }

    /// Waits for the client to exit (killing it past the deadline) and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_with_deadline(&mut self.child, "the client on a pty")
    }

    /// Stops the client (SIGSTOP) until the guard is dropped (SIGCONT): its timers and reconnect
    /// tries wait meanwhile, so a test can order what others do before it goes on.
    pub fn freeze(&self) -> super::Frozen {
        super::signal(self.child.id(), libc::SIGSTOP);
        super::Frozen(self.child.id())
    }

    /// Whether the client is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("ask the client's status")
            .is_none()
    }

    /// The terminal's settings now (the pty's master side answers for its slave side), as the
    /// client left them once it has exited.
    pub fn settings(&self) -> rustix::termios::Termios {
        rustix::termios::tcgetattr(&self.keyboard).expect("read the pty's settings")
    }

    /// Everything written to the terminal so far, as text.
    pub fn everything(&self) -> String {
        String::from_utf8_lossy(&self.screen.bytes.lock().unwrap()).into_owned()
    }
}

impl Drop for TerminalClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new pty (master, slave) with a 200×50 window.
pub fn open_pty() -> (OwnedFd, OwnedFd) {
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

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The pieces of text the terminal shows, each starting at the left edge of the screen as far as
/// we can tell: the output split at every line feed, carriage return and cursor move to a
/// column (the line editor moves to column 1 rather than writing `\r`); other escape sequences
/// (clearing, cursor up, colour) and bells are removed, and a leading prompt `> ` and a leading
/// time `HH:MM ` are taken off. Splitting this
/// finely can only show more line starts than a person sees, never fewer.
pub fn line_starts(output: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        // The bell rings; it shows nothing.
        if c == '\u{7}' {
            continue;
        }
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
        .map(without_time)
        .filter(|piece| !piece.is_empty())
        .map(str::to_string)
        .collect()
}

/// `piece` without a leading `HH:MM ` (the time the client starts its lines with on a terminal).
pub fn without_time(piece: &str) -> &str {
    match piece.as_bytes() {
        [h1, h2, b':', m1, m2, b' ', ..] if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) => {
            &piece[6..]
        }
        _ => piece,
    }
}
