//! Test harness for the black-box suite: runs the real `p2pchat-server` and `p2pchat-client`
//! binaries, talks to them only through their stdin, stdout, stderr, exit status, sockets and
//! files, and waits for events with a deadline — never with a fixed sleep. The deadline only
//! bounds how long a failing test hangs; no test passes or fails on how fast something is.
//!
//! In order: paths and fixtures; child-process plumbing; [`Server`] (a running server);
//! [`ChatClient`] (a running client in `--json` mode); [`RawConnection`] (raw protocol over
//! TCP); users file helpers.
//!
//! TLS: servers run in the default mode, TLS, unless their flags say `--plaintext`, so every
//! suite exercises what users run. The harness keeps each server's key and certificate in a
//! folder of its own (not beside the users file, which some suites count the files of), remembers
//! each server's fingerprint by port, and has the clients speak what the server speaks: a
//! [`ChatClient`] gets `--trust FINGERPRINT` (`--plaintext` for a plaintext server or one the
//! test plays itself) and a temporary
//! `XDG_CONFIG_HOME`/`HOME`, so no test reads or writes the real known-servers file; a
//! [`RawConnection`] does the TLS handshake itself (rustls, pinned to the fingerprint) and then
//! speaks the same raw lines inside it. tests/tls.rs starts servers and clients with exactly
//! the flags it chooses ([`Server::start_exact`], [`ChatClient::start_exact`]).

#![allow(dead_code)] // Each test file uses a different part of the harness.

pub mod lying;
pub mod netns;
pub mod pty;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use p2pchat::sealed::PublicKey;
use p2pchat::tls::Fingerprint;
use serde_json::Value;
use tempfile::TempDir;

// ---- Paths and fixtures ----

/// Longest wait for anything the test expects. Generous: only a broken build ever waits this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// scrypt cost used by the suite's servers (2^10): the algorithm and file format are the same as
/// at the default cost, at a thousandth of the time.
pub const TEST_LOG_N: &str = "10";

/// Interval between two looks at something that has no event to wait on (a child's exit, the
/// server's log, the client's counters): a polling interval, not a wait for an event.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

pub fn server_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("p2pchat-server")
}

pub fn client_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("p2pchat-client")
}

/// A file in the repository's fixtures/ folder.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

// ---- Child processes ----

/// Collects a child's stderr lines in the background; the handle ends at end of stream.
fn collect_lines(stream: impl Read + Send + 'static) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let done = thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    (lines, done)
}

/// Waits for a child to exit, killing it if it has not within the deadline.
fn wait_with_deadline(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{what} did not exit within {DEADLINE:?}");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with the pid of a child this test started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

// ---- Server ----

/// What the server on each port speaks: its fingerprint, or `None` for `--plaintext`. Filled
/// in by every start (a later server on the same port replaces an earlier one), read by the
/// clients, which are given only the address.
fn modes() -> &'static Mutex<HashMap<u16, Option<Fingerprint>>> {
    static MODES: OnceLock<Mutex<HashMap<u16, Option<Fingerprint>>>> = OnceLock::new();
    MODES.get_or_init(Default::default)
}

/// The flags a client needs to reach `server` ("HOST:PORT") as the harness started it:
/// `--trust FINGERPRINT` for a TLS server, `--plaintext` for a `--plaintext` server or a server
/// the test plays itself (which speaks the plaintext protocol).
pub fn trust_flags(server: &str) -> Vec<String> {
    let port = server.rsplit(':').next().and_then(|p| p.parse().ok());
    match port.and_then(mode_of) {
        Some(Some(fingerprint)) => vec!["--trust".to_string(), fingerprint.to_string()],
        Some(None) | None => vec!["--plaintext".to_string()],
    }
}

/// Per port, the data folder of the servers the harness started there: shared by a server and
/// one started again on its address (the same server restarted), removed with the last of them.
fn data_homes() -> &'static Mutex<HashMap<u16, std::sync::Weak<TempDir>>> {
    static DATA_HOMES: OnceLock<Mutex<HashMap<u16, std::sync::Weak<TempDir>>>> = OnceLock::new();
    DATA_HOMES.get_or_init(Default::default)
}

/// The XDG_DATA_HOME for a client of `server` ("HOST:PORT"): the one shared by the clients of
/// the server the harness started on that port (where identity keys are kept per account), else
/// `own` (a server the test plays itself).
pub fn data_home_of(server: &str, own: &Path) -> PathBuf {
    let port: Option<u16> = server.rsplit(':').next().and_then(|p| p.parse().ok());
    port.and_then(|port| data_homes().lock().unwrap().get(&port)?.upgrade())
        .map(|folder| folder.path().to_path_buf())
        .unwrap_or_else(|| own.to_path_buf())
}

/// What the server on `port` speaks, if a server was started there: `Some(None)` is plaintext.
fn mode_of(port: u16) -> Option<Option<Fingerprint>> {
    modes().lock().unwrap().get(&port).copied()
}

/// A running `p2pchat-server` on 127.0.0.1, port chosen by the system. Dropping it kills it.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub users: PathBuf,
    /// The fingerprint it printed; `None` with `--plaintext`.
    pub fingerprint: Option<Fingerprint>,
    log: Arc<Mutex<Vec<String>>>,
    /// The key and certificate the harness gave it.
    _tls: Option<TempDir>,
    /// The XDG_DATA_HOME of every client the harness starts for this server ([`data_home_of`]):
    /// its accounts' identity keys, as on one machine, so that a client started again under a
    /// name keeps that account's identity (as a person restarting the client does); shared with a
    /// server started again on the same address.
    _accounts: Arc<TempDir>,
}

impl Server {
    /// Starts a server on `users` with the suite's scrypt cost and `extra` flags; waits for its
    /// `listening on` line.
    pub fn start(users: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--scrypt-log-n", TEST_LOG_N];
        args.extend_from_slice(extra);
        Server::start_with(users, &args)
    }

    /// Starts a server on `users` with exactly `args` (plus the bind address and users file);
    /// waits for its `listening on` line.
    pub fn start_with(users: &Path, args: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", users, args)
    }

    /// Starts a server listening on `bind` (a loopback address), with TLS (a key and
    /// certificate of its own in a temporary folder) unless `args` say `--plaintext`; waits for
    /// its `listening on` line, which gives the port.
    pub fn start_on(bind: &str, users: &Path, args: &[&str]) -> Server {
        if args.contains(&"--plaintext") {
            return Server::start_exact(bind, users, args, None);
        }
        let tls = TempDir::new().expect("a folder for the TLS key");
        let key = tls.path().join("tls-key.pem");
        let cert = tls.path().join("tls-cert.pem");
        let mut all = vec![
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        Server::start_exact(bind, users, &all, Some(tls))
    }

    /// A TLS server whose key and certificate live in `keys` (made if missing), so that a server
    /// started again with the same folder presents the same fingerprint (the pin of a
    /// reconnecting client holds), and one started with another folder presents another.
    pub fn start_with_keys(bind: &str, users: &Path, keys: &Path) -> Server {
        std::fs::create_dir_all(keys).unwrap();
        let key = keys.join("tls-key.pem");
        let cert = keys.join("tls-cert.pem");
        Server::start_exact(
            bind,
            users,
            &[
                "--scrypt-log-n",
                TEST_LOG_N,
                "--tls-key",
                key.to_str().unwrap(),
                "--tls-cert",
                cert.to_str().unwrap(),
            ],
            None,
        )
    }

    /// Starts a server listening on `bind` with exactly `args` (plus the bind address and users
    /// file): the key and certificate are where they are by default, unless `args` say
    /// otherwise. Waits for its `listening on` line and, unless `args` say `--plaintext`, its
    /// `fingerprint` line.
    pub fn start_exact(bind: &str, users: &Path, args: &[&str], tls: Option<TempDir>) -> Server {
        let plaintext = args.contains(&"--plaintext");
        let mut child = Command::new(server_bin())
            .arg("--bind")
            .arg(bind)
            .arg("--users")
            .arg(users)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start p2pchat-server");
        let (log, _) = collect_lines(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let wanted = if plaintext { 1 } else { 2 };
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for _ in 0..wanted {
                if let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
            }
            for _ in lines {}
        });
        let mut next_line = |what: &str| match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server printed no {what} line; stderr: {:?}",
                    log.lock().unwrap()
                );
            }
        };
        let first = next_line("first");
        let addr: SocketAddr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .expect("listening address");
        let fingerprint = (!plaintext).then(|| {
            let second = next_line("fingerprint");
            second
                .strip_prefix("fingerprint ")
                .unwrap_or_else(|| panic!("unexpected second line {second:?}"))
                .parse()
                .expect("a fingerprint")
        });
        modes().lock().unwrap().insert(addr.port(), fingerprint);
        let accounts = {
            let mut homes = data_homes().lock().unwrap();
            let folder = homes.get(&addr.port()).and_then(std::sync::Weak::upgrade);
            let folder = folder.unwrap_or_else(|| {
                Arc::new(TempDir::new().expect("a data folder for the server's clients"))
            });
            homes.insert(addr.port(), Arc::downgrade(&folder));
            folder
        };
        Server {
            child,
            addr,
            users: users.to_path_buf(),
            fingerprint,
            log,
            _tls: tls,
            _accounts: accounts,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until the log has a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        self.wait_for_log_count(needle, 1);
    }

    /// Waits until the log contains `needle` at least `count` times.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) {
        let start = Instant::now();
        while self.log().matches(needle).count() < count {
            assert!(
                start.elapsed() < DEADLINE,
                "server never logged {needle:?}; log:\n{}",
                self.log()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The server's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmHWM line")
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), libc::SIGTERM);
        wait_with_deadline(&mut self.child, "server")
    }

    /// Sends SIGHUP: the server reads its users file again.
    pub fn hangup(&self) {
        signal(self.child.id(), libc::SIGHUP);
    }

    /// Sends SIGKILL, as a crash or power cut would, and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process (SIGSTOP) until the guard is dropped (SIGCONT): whatever still works
    /// meanwhile does not go through the server.
    pub fn freeze(&self) -> Frozen {
        signal(self.child.id(), libc::SIGSTOP);
        Frozen(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stopped server (see [`Server::freeze`]); dropping it lets the server run on.
pub struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

// ---- ChatClient ----

/// A running `p2pchat-client --json`, scripted through its stdin. Dropping it kills it.
pub struct ChatClient {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    /// Every event received so far, in order.
    pub history: Vec<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_done: Option<JoinHandle<()>>,
    /// Its XDG_CONFIG_HOME and HOME, when the harness made them.
    _config: Option<TempDir>,
}

impl ChatClient {
    /// The first `kind` event already received (waits for nothing).
    fn received(&self, kind: &str) -> &Value {
        self.history
            .iter()
            .find(|e| e["event"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event received yet"))
    }

    /// The session key this client announced: its own entry in its `welcome`.
    pub fn session_key(&self) -> PublicKey {
        let welcome = self.received("welcome");
        let me = welcome["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["username"] == self.name.as_str())
            .expect("the client in its own welcome");
        PublicKey::from_base64(me["public_key"].as_str().expect("a public key")).expect("32 bytes")
    }

    /// Starts a client and answers its prompts with `answers` (e.g. register, name, password);
    /// waits for nothing.
    pub fn start(server: SocketAddr, name: &str, answers: &[&str]) -> ChatClient {
        ChatClient::start_to(&server.to_string(), name, answers)
    }

    /// Like [`ChatClient::start`], with the server given as the user would type it (`HOST:PORT`).
    pub fn start_to(server: &str, name: &str, answers: &[&str]) -> ChatClient {
        ChatClient::spawn(server, name, &[], answers)
    }

    /// Like [`ChatClient::start`], with extra client flags (`--dm-rate 0.001`, …) before the
    /// prompts are answered.
    pub fn start_with_flags(
        server: SocketAddr,
        name: &str,
        flags: &[&str],
        answers: &[&str],
    ) -> ChatClient {
        ChatClient::spawn(&server.to_string(), name, flags, answers)
    }

    /// Registers `name` and waits for the welcome.
    pub fn register(server: SocketAddr, name: &str, password: &str) -> ChatClient {
        let mut client = ChatClient::start(server, name, &["register", name, password]);
        client.expect_event("welcome");
        client
    }

    /// Registers `name` with extra client flags and waits for the welcome.
    pub fn register_with_flags(
        server: SocketAddr,
        name: &str,
        password: &str,
        flags: &[&str],
    ) -> ChatClient {
        let mut client =
            ChatClient::start_with_flags(server, name, flags, &["register", name, password]);
        client.expect_event("welcome");
        client
    }

    /// Logs in as `name` and waits for the welcome.
    pub fn login(server: SocketAddr, name: &str, password: &str) -> ChatClient {
        let mut client = ChatClient::start(server, name, &["login", name, password]);
        client.expect_event("welcome");
        client
    }

    /// Starts `p2pchat-client --server SERVER --json FLAGS…` and types `answers`, with
    /// `--trust FINGERPRINT` for the TLS server the harness started on that port, `--plaintext`
    /// otherwise (a `--plaintext` server, or a server the test plays itself, which speaks the
    /// plaintext protocol), and a temporary config folder.
    fn spawn(server: &str, name: &str, flags: &[&str], answers: &[&str]) -> ChatClient {
        let config = TempDir::new().expect("a config folder");
        // A test that asks for `--plaintext` itself gets it once (clap refuses a repeated flag).
        let trust = match flags.contains(&"--plaintext") {
            true => Vec::new(),
            false => trust_flags(server),
        };
        let mut all: Vec<&str> = trust.iter().map(String::as_str).collect();
        all.extend_from_slice(flags);
        let mut client = ChatClient::start_exact(server, name, &all, answers, config.path());
        client._config = Some(config);
        client
    }

    /// Starts `p2pchat-client --server SERVER --json FLAGS…` with exactly these flags and
    /// `config` as its XDG_CONFIG_HOME and HOME, and types `answers`; waits for nothing.
    pub fn start_exact(
        server: &str,
        name: &str,
        flags: &[&str],
        answers: &[&str],
        config: &Path,
    ) -> ChatClient {
        let mut child = Command::new(client_bin())
            .arg("--server")
            .arg(server)
            .arg("--json")
            .args(flags)
            .env("XDG_CONFIG_HOME", config)
            .env("XDG_DATA_HOME", data_home_of(server, config))
            .env("HOME", config)
            // Downloads under the test's folder too (HOME), never the real ones.
            .env_remove("XDG_DOWNLOAD_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start p2pchat-client");
        let (stderr, stderr_done) = collect_lines(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("client printed a non-JSON line {line:?}: {e}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let mut client = ChatClient {
            name: name.to_string(),
            child,
            stdin: None,
            events,
            history: Vec::new(),
            stderr,
            stderr_done: Some(stderr_done),
            _config: None,
        };
        client.stdin = client.child.stdin.take();
        for answer in answers {
            client.send(answer);
        }
        client
    }

    /// Types one line; waits for nothing.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        writeln!(stdin, "{line}").expect("write to client stdin");
        stdin.flush().expect("flush client stdin");
    }

    /// Waits for an event satisfying `matches`; returns every event received up to and
    /// including it (the last element is the match).
    pub fn until(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        let mut received = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.history.push(event.clone());
                    received.push(event.clone());
                    if matches(&event) {
                        return received;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no {what} within {DEADLINE:?}; received {received:#?}",
                        self.name
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited before {what}; received {received:#?}; stderr {:?}",
                    self.name,
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Waits for an event satisfying `matches` and returns it.
    pub fn expect(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.until(what, matches).pop().unwrap()
    }

    /// Waits for the next event of kind `kind`.
    pub fn expect_event(&mut self, kind: &str) -> Value {
        self.expect(kind, |e| e["event"] == kind)
    }

    /// Waits until the server announces that `name` joined; returns the `joined` event.
    pub fn expect_joined(&mut self, name: &str) -> Value {
        self.expect(&format!("{name:?} joined"), |e| {
            e["event"] == "joined" && e["peer"]["username"] == name
        })
    }

    /// Waits for a peer list whose names are exactly `names` (in any order).
    pub fn expect_peers(&mut self, names: &[&str]) -> Value {
        let mut wanted: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        wanted.sort();
        self.expect(&format!("peer list {wanted:?}"), |e| {
            e["event"] == "peers" && peer_names(e) == wanted
        })
    }

    /// Asks for the direct-message counters (`/stats`) and waits for the `direct_stats` event,
    /// which it returns.
    pub fn stats(&mut self) -> Value {
        self.send("/stats");
        self.expect_event("direct_stats")
    }

    /// Asks for the counters until `done` holds for them (datagrams already sent may still be
    /// queued in the client's socket), within the deadline; returns the last answer.
    pub fn wait_for_stats(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let stats = self.stats();
            if done(&stats) {
                return stats;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{}: counters never showed {what}; last {stats}",
                self.name
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// This client's UDP address for direct messages, from its `connected` event (already
    /// received: waits for nothing).
    pub fn p2p_addr(&self) -> SocketAddr {
        let connected = self.received("connected");
        connected["p2p_addr"].as_str().unwrap().parse().unwrap()
    }

    /// Closes stdin (the client quits) and waits for the exit; returns the status, every
    /// event and the stderr text.
    pub fn finish(mut self) -> Finished {
        drop(self.stdin.take());
        self.wait()
    }

    /// Waits for the client to exit by itself (stdin left open), then for the end of its
    /// output.
    pub fn wait(mut self) -> Finished {
        let status = wait_with_deadline(&mut self.child, &self.name);
        // The reader thread ends at end of stdout; collect what it still has.
        while let Ok(event) = self.events.recv_timeout(DEADLINE) {
            self.history.push(event);
        }
        if let Some(done) = self.stderr_done.take() {
            let _ = done.join();
        }
        let stderr = self.stderr.lock().unwrap().join("\n");
        Finished {
            status,
            events: std::mem::take(&mut self.history),
            stderr,
        }
    }

    /// The client's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmHWM line")
    }

    /// Stops the client (SIGSTOP) until the returned guard is dropped: a peer that holds still
    /// at a chosen moment, whatever it was about to do.
    pub fn freeze(&self) -> Frozen {
        signal(self.child.id(), libc::SIGSTOP);
        Frozen(self.child.id())
    }

    /// Kills the client process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChatClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a client ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub events: Vec<Value>,
    pub stderr: String,
}

/// The sorted usernames in a `welcome` or `peers` event.
pub fn peer_names(event: &Value) -> Vec<String> {
    let mut names: Vec<String> = event["peers"]
        .as_array()
        .expect("a peers array")
        .iter()
        .map(|p| p["username"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

// ---- RawPeer ----

/// A peer the test plays itself, in the clear protocol (no session key): `name` registered over a
/// raw connection that announces the port of a UDP socket the test owns on 127.0.0.1, so that
/// datagrams the test sends from [`RawPeer::udp`] pass a client's check of their source.
pub struct RawPeer {
    /// The announced UDP socket.
    pub udp: UdpSocket,
    /// The login: the peer is online while it is open.
    pub tcp: RawConnection,
    /// The server's `welcome` to it: who was online when it came.
    pub welcome: Value,
}

impl RawPeer {
    /// Binds a UDP socket on 127.0.0.1 and registers `name` announcing its port.
    pub fn register(server: SocketAddr, name: &str, password: &str) -> RawPeer {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
        let port = udp.local_addr().expect("a local address").port();
        let (tcp, welcome) = RawConnection::register(server, name, password, port);
        RawPeer { udp, tcp, welcome }
    }

    /// Sends `datagram` (a clear direct message, or anything) from the announced socket to `to`.
    pub fn send_datagram(&self, datagram: &[u8], to: SocketAddr) {
        self.udp
            .send_to(datagram, to)
            .expect("send a datagram from the peer's socket");
    }
}

// ---- RawConnection ----

/// A raw connection to the server, for speaking the protocol (or garbage) byte by byte: over
/// TLS when the server the harness started on that port speaks TLS (the bytes go inside the TLS
/// session, as a client would), in the clear otherwise.
///
/// Methods without a prefix panic when the server closes or resets the connection early (the
/// test expected it to answer); their `try_` twins return `None` or an error instead, for tests
/// where the server may be gone (killed with SIGKILL, it resets connections).
/// Every read waits at most [`DEADLINE`].
pub struct RawConnection {
    tcp: TcpStream,
    /// In a cell so that [`RawConnection::shutdown_write`] can send TLS's `close_notify` from
    /// `&self`, as it closed a plain socket before.
    reader: RefCell<BufReader<Wire>>,
    /// The server's `hello`, once read (by the constructors that wait for it).
    hello: Option<Value>,
}

/// The bytes of a [`RawConnection`]: plain, or inside a TLS session.
enum Wire {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(tcp) => tcp.read(buf),
            Wire::Tls(tls) => read_tls(tls, buf),
        }
    }
}

/// Reads what the server sent over TLS without first pushing out what this side still holds
/// (rustls's `StreamOwned::read` does, and a write the server refused — it closed at the line
/// cap — then turns every read into a broken pipe): the server's last words stay readable, as
/// over a plain socket.
fn read_tls(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        match tls.conn.reader().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        if tls.conn.read_tls(&mut tls.sock)? == 0 {
            // The end of the TCP stream: what rustls holds decides (close_notify or not).
            tls.conn.process_new_packets().map_err(io::Error::other)?;
            return tls.conn.reader().read(buf);
        }
        tls.conn.process_new_packets().map_err(io::Error::other)?;
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(tcp) => tcp.write(buf),
            Wire::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(tcp) => tcp.flush(),
            Wire::Tls(tls) => tls.flush(),
        }
    }
}

impl RawConnection {
    /// Connects and waits for the server's `hello`.
    pub fn connect(addr: SocketAddr) -> RawConnection {
        let conn = RawConnection::open(RawConnection::socket(), addr);
        conn.expect_hello()
    }

    /// Connects and waits for the server's `hello`; `None` if the connection (or its TLS
    /// handshake) fails or ends first, or the server greets with anything else (e.g. a refusal
    /// for a limit).
    pub fn try_connect(addr: SocketAddr) -> Option<RawConnection> {
        let mut conn = RawConnection::try_open(RawConnection::socket(), addr).ok()?;
        let hello = conn.try_read_json().ok()??;
        (hello["type"] == "hello").then_some(())?;
        conn.hello = Some(hello);
        Some(conn)
    }

    /// Connects from a chosen loopback address (all of 127.0.0.0/8 is local), as if from
    /// another host, and waits for the `hello`.
    pub fn connect_from(local: &str, addr: SocketAddr) -> RawConnection {
        let socket = RawConnection::socket();
        let local: SocketAddr = format!("{local}:0").parse().expect("a local IP");
        socket.bind(&local.into()).expect("bind the local address");
        RawConnection::open(socket, addr).expect_hello()
    }

    /// Like [`RawConnection::connect_from`]; `None` if the connection fails or ends first, or the
    /// server greets with anything else (e.g. a refusal for a limit).
    pub fn try_connect_from(local: &str, addr: SocketAddr) -> Option<RawConnection> {
        let socket = RawConnection::socket();
        let local: SocketAddr = format!("{local}:0").parse().expect("a local IP");
        socket.bind(&local.into()).expect("bind the local address");
        let mut conn = RawConnection::try_open(socket, addr).ok()?;
        let hello = conn.try_read_json().ok()??;
        (hello["type"] == "hello").then_some(())?;
        conn.hello = Some(hello);
        Some(conn)
    }

    /// Connects with a small receive buffer (so that a client that stops reading fills up
    /// soon), and waits for the `hello`.
    pub fn connect_small_buffer(addr: SocketAddr) -> RawConnection {
        let socket = RawConnection::socket();
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        RawConnection::open(socket, addr).expect_hello()
    }

    /// Connects without reading or sending anything, not even a TLS handshake: what it reads is
    /// what a server says before TLS (a refusal for a limit, `tls_required`).
    pub fn connect_silent(addr: SocketAddr) -> RawConnection {
        RawConnection::try_open_plain(RawConnection::socket(), addr).expect("connect to server")
    }

    /// Connects, registers `name` announcing `p2p_port` and waits for the answer, which must be
    /// `welcome`; returns the connection and the `welcome`.
    pub fn register(
        addr: SocketAddr,
        name: &str,
        password: &str,
        p2p_port: u16,
    ) -> (RawConnection, Value) {
        let mut conn = RawConnection::connect(addr);
        conn.write(auth_request(true, name, password, p2p_port).as_bytes())
            .expect("send register");
        let welcome = conn.read_json().expect("an answer to register");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (conn, welcome)
    }

    fn socket() -> socket2::Socket {
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a TCP socket")
    }

    fn open(socket: socket2::Socket, addr: SocketAddr) -> RawConnection {
        RawConnection::try_open(socket, addr).expect("connect to server")
    }

    /// Connects, with the TLS handshake if the server on that port speaks TLS.
    fn try_open(socket: socket2::Socket, addr: SocketAddr) -> io::Result<RawConnection> {
        let mut conn = RawConnection::try_open_plain(socket, addr)?;
        if let Some(Some(fingerprint)) = mode_of(addr.port()) {
            let presented = Arc::new(Mutex::new(None));
            let config = p2pchat::tls::client_config(Some(fingerprint), presented);
            let mut session =
                rustls::ClientConnection::new(Arc::new(config), p2pchat::tls::server_name())
                    .map_err(io::Error::other)?;
            let mut tcp = conn.tcp.try_clone()?;
            while session.is_handshaking() {
                session.complete_io(&mut tcp)?;
            }
            conn.reader = RefCell::new(BufReader::new(Wire::Tls(Box::new(
                rustls::StreamOwned::new(session, tcp),
            ))));
        }
        Ok(conn)
    }

    fn try_open_plain(socket: socket2::Socket, addr: SocketAddr) -> io::Result<RawConnection> {
        socket.connect(&addr.into())?;
        let tcp: TcpStream = socket.into();
        tcp.set_read_timeout(Some(DEADLINE))?;
        let reader = RefCell::new(BufReader::new(Wire::Plain(tcp.try_clone()?)));
        Ok(RawConnection {
            tcp,
            reader,
            hello: None,
        })
    }

    fn expect_hello(mut self) -> RawConnection {
        let hello = self.read_json().expect("a hello");
        assert_eq!(hello["type"], "hello", "{hello}");
        self.hello = Some(hello);
        self
    }

    /// The server's `hello` on this connection (for its `key_challenge`); panics on a
    /// connection made without waiting for it.
    pub fn hello(&self) -> &Value {
        self.hello
            .as_ref()
            .expect("a connection that read the hello")
    }

    /// The UDP port this connection announces when the test has no socket behind it: its own TCP
    /// port, so that no two open connections from one address announce the same endpoint (the
    /// server refuses that with `endpoint_in_use`).
    pub fn made_up_p2p_port(&self) -> u16 {
        self.tcp.local_addr().expect("a local address").port()
    }

    /// Sends every segment as soon as it is written (no Nagle coalescing).
    pub fn set_nodelay(&self) {
        self.tcp.set_nodelay(true).expect("set TCP_NODELAY");
    }

    /// Writes bytes (inside TLS, one record or more); a failure (the server already closed) is
    /// returned, not a panic.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let wire = self.reader.get_mut().get_mut();
        wire.write_all(bytes)?;
        wire.flush()
    }

    /// Writes each piece with a write call of its own, flushing after each.
    pub fn write_pieces<'a>(
        &mut self,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<()> {
        for piece in pieces {
            self.write(piece)?;
        }
        Ok(())
    }

    /// Closes the sending side (with TLS, `close_notify`, then FIN), keeping the connection open
    /// for reading.
    pub fn shutdown_write(&self) {
        if let Wire::Tls(tls) = self.reader.borrow_mut().get_mut() {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        self.tcp
            .shutdown(std::net::Shutdown::Write)
            .expect("shut down the sending side");
    }

    /// Sends one protocol message (a JSON value) as a line.
    pub fn send(&mut self, message: &Value) {
        let line = format!("{message}\n");
        self.write(line.as_bytes()).expect("send to the server");
    }

    /// Registers (or logs in, when `register` is false) with a made-up UDP port and waits for
    /// the server's answer, which it returns: `welcome` or an error.
    pub fn authenticate(&mut self, register: bool, name: &str, password: &str) -> Value {
        let request = auth_request(register, name, password, self.made_up_p2p_port());
        self.write(request.as_bytes()).expect("send to the server");
        self.read_json().expect("an answer to the login")
    }

    /// Like [`RawConnection::authenticate`]; `None` if the request cannot be sent or the
    /// connection fails or ends before the answer.
    pub fn try_authenticate(
        &mut self,
        register: bool,
        name: &str,
        password: &str,
    ) -> Option<Value> {
        let request = auth_request(register, name, password, self.made_up_p2p_port());
        self.write(request.as_bytes()).ok()?;
        self.try_read_json().ok()?
    }

    /// Reads lines until one satisfies `matches`, and returns it.
    pub fn expect(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.read_json() {
                Some(value) if matches(&value) => return value,
                Some(_) => {}
                None => panic!("the server closed the connection before {what}"),
            }
        }
    }

    /// Waits for the next line from the server, as JSON; `None` at end of stream.
    pub fn read_json(&mut self) -> Option<Value> {
        self.try_read_json()
            .unwrap_or_else(|e| panic!("reading from the server failed: {e}"))
    }

    /// Like [`RawConnection::read_json`], with a failed read (a reset, the deadline) returned
    /// rather than a panic. A line that is not JSON still panics: the server never sends one.
    pub fn try_read_json(&mut self) -> io::Result<Option<Value>> {
        let mut line = String::new();
        Ok(match self.reader.get_mut().read_line(&mut line)? {
            0 => None,
            _ => Some(serde_json::from_str(&line).expect("server sent JSON")),
        })
    }

    /// Reads until the server closes the connection, by end of stream or by a reset (after
    /// closing, the server resets a connection whose client still sends; a reset TLS session
    /// ends without `close_notify`); returns what came.
    pub fn read_until_closed(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            match self.try_read_json() {
                Ok(None) => return out,
                Ok(Some(value)) => out.push(value),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return out
                }
                Err(e) => panic!("reading from the server failed: {e}"),
            }
        }
    }

    /// Reads until end of stream, returning what came; panics on a reset or the deadline.
    pub fn read_to_end(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(value) = self.read_json() {
            out.push(value);
        }
        out
    }
}

/// A `register` (or `login`, when `register` is false) request line.
fn auth_request(register: bool, name: &str, password: &str, p2p_port: u16) -> String {
    let kind = if register { "register" } else { "login" };
    let request = serde_json::json!({
        "type": kind, "username": name, "password": password, "p2p_port": p2p_port,
    });
    format!("{request}\n")
}

// ---- Users file ----

/// The permission bits of the file or folder at `path` (`0o600` for a private file).
pub fn permission_bits(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let metadata =
        std::fs::metadata(path).unwrap_or_else(|e| panic!("the mode of {}: {e}", path.display()));
    metadata.permissions().mode() & 0o777
}

/// Reads and parses a users file once the server has folded its journal into it (the journal,
/// `PATH.journal`, is gone): a running server does so ~0.1 s after registrations pause, a
/// graceful stop at once; after a SIGKILL, only the next start does. Waits with a deadline.
pub fn read_users(path: &Path) -> Value {
    let mut journal = path.as_os_str().to_os_string();
    journal.push(".journal");
    let start = Instant::now();
    while Path::new(&journal).exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "the users journal {journal:?} was never folded into {}",
            path.display()
        );
        thread::sleep(POLL_INTERVAL);
    }
    let text = std::fs::read_to_string(path).expect("read users file");
    serde_json::from_str(&text).expect("users file is JSON")
}
