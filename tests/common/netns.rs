//! Network namespaces a test makes and removes: one bridge in the first namespace (the
//! server's host) and a veth pair from it to each other namespace (the clients' hosts), on a
//! /24 of the test's own, so nothing it sends leaves them. Shared by tests/loss.rs,
//! tests/discovery.rs and tests/bench.rs (direct messages between namespaces).
//!
//! Needs root and `ip` (iproute2); [`missing_tools`] says why a test cannot run, and the test
//! then reports itself skipped ([`report_skipped`]) and passes. The namespaces have names
//! unique to the run and are removed on every exit path ([`Namespaces`]'s `Drop`), panics
//! included; processes started in them ([`InNamespace`]) are killed when dropped.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::DEADLINE;

/// Prints straight to the terminal (cargo's capture does not hide it) why `test` did nothing.
pub fn report_skipped(test: &str, why: &str) {
    let line = format!("{test}: skipped: {why}\n");
    match std::fs::OpenOptions::new().write(true).open("/dev/stderr") {
        Ok(mut stderr) => {
            let _ = stderr.write_all(line.as_bytes());
        }
        Err(_) => eprint!("{line}"),
    }
}

/// Why a namespace test cannot run here (not root, or one of `tools` missing), if it cannot.
pub fn missing_tools(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces)".into());
    }
    for tool in tools {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "`{tool}` is not installed (ci/install.sh installs it)"
            ));
        }
    }
    None
}

/// Runs `program` with `args`; its stderr is the error when it fails.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip ARGS…` inside namespace `ns`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// The test's namespaces; dropping it deletes them (and so their interfaces and rules).
pub struct Namespaces {
    names: Vec<String>,
    /// The first three octets of the bridge's /24 (`10.213.0`).
    subnet: String,
}

impl Namespaces {
    /// The `i`-th namespace's name: 0 the server's host, 1… the others.
    pub fn ns(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The `i`-th host's address: `SUBNET.1` for the bridge in namespace 0, `SUBNET.(i+1)`
    /// for the others.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// How the bridge carries multicast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multicast {
    /// As the kernel sets a bridge up.
    Default,
    /// Flooded to every port (`mcast_snooping 0`: no IGMP querier here, so snooping would
    /// drop groups nobody reported), and a `224.0.0.0/4` route in every namespace: mDNS.
    Flooded,
}

/// `1 + hosts` namespaces named `p2p{tag}…` (`tag` unique to the test and the run): a bridge
/// `br0` in the first with `SUBNET.1/24`, and in each other an `eth0` with `SUBNET.(i+1)/24`
/// whose other end is a port of the bridge. Loopback is up everywhere.
pub fn bridge_lab(
    tag: &str,
    subnet: &str,
    hosts: usize,
    multicast: Multicast,
) -> Result<Namespaces, String> {
    let run_id = std::process::id() % 100_000;
    let mut names = vec![format!("p2p{tag}{run_id}s")];
    names.extend((1..=hosts).map(|i| format!("p2p{tag}{run_id}h{i}")));
    let lab = Namespaces {
        names: Vec::new(),
        subnet: subnet.to_string(),
    };
    // The guard holds each namespace as soon as it exists: any failure below removes them all.
    let mut lab = lab;
    for name in names {
        run("ip", &["netns", "add", &name])?;
        lab.names.push(name);
    }
    let server = lab.ns(0).to_string();
    let mut bridge = vec!["link", "add", "br0", "type", "bridge"];
    if multicast == Multicast::Flooded {
        bridge.extend(["mcast_snooping", "0"]);
    }
    ip_in(&server, &bridge)?;
    ip_in(
        &server,
        &["addr", "add", &format!("{}/24", lab.ip(0)), "dev", "br0"],
    )?;
    ip_in(&server, &["link", "set", "br0", "up"])?;
    ip_in(&server, &["link", "set", "lo", "up"])?;
    for i in 1..=hosts {
        let host = lab.ns(i).to_string();
        ip_in(
            &server,
            &[
                "link", "add", "port", "type", "veth", "peer", "name", "eth0", "netns", &host,
            ],
        )?;
        let port = format!("port{i}");
        ip_in(&server, &["link", "set", "port", "name", &port])?;
        ip_in(&server, &["link", "set", &port, "master", "br0", "up"])?;
        ip_in(
            &host,
            &["addr", "add", &format!("{}/24", lab.ip(i)), "dev", "eth0"],
        )?;
        ip_in(&host, &["link", "set", "eth0", "up"])?;
        ip_in(&host, &["link", "set", "lo", "up"])?;
        if multicast == Multicast::Flooded {
            ip_in(&host, &["route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
    }
    if multicast == Multicast::Flooded {
        ip_in(&server, &["route", "add", "224.0.0.0/4", "dev", "br0"])?;
    }
    Ok(lab)
}

/// Runs `work` on a thread inside namespace `ns` and returns what it returns: every socket it
/// opens, and every thread it starts, is in the namespace (a namespace switch is per thread;
/// the test's own thread stays where it is).
pub fn in_namespace<R: Send>(ns: &str, work: impl FnOnce() -> R + Send) -> R {
    let path = format!("/var/run/netns/{ns}");
    let namespace = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns only reads the descriptor, which `namespace` keeps open, and
                // moves this thread alone into the namespace.
                let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "setns: {}", io::Error::last_os_error());
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A child process in a namespace, its stdout lines and stderr collected; killed when dropped.
pub struct InNamespace {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Reads stderr to its end, then returns it.
    stderr: Option<JoinHandle<String>>,
    /// Its own HOME and XDG folders (a client keeps its identity and pins there), removed with it.
    _home: tempfile::TempDir,
}

impl InNamespace {
    /// Runs `program ARGS…` in `ns` (through `ip netns exec`, which execs it), with a temporary
    /// HOME and XDG folders of its own, so nothing is written into the real ones.
    pub fn spawn(ns: &str, program: &Path, args: &[&str]) -> InNamespace {
        InNamespace::spawn_with(ns, program, args, |_| {})
    }

    /// As [`InNamespace::spawn`], with `setup` adjusting the command first (its environment).
    pub fn spawn_with(
        ns: &str,
        program: &Path,
        args: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> InNamespace {
        let home = tempfile::TempDir::new().expect("a home folder");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_STATE_HOME", home.path().join("state"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        setup(&mut command);
        let mut child = command.spawn().expect("start a process in a namespace");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stream = child.stderr.take().unwrap();
        let stderr = Some(thread::spawn(move || {
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            text
        }));
        let stdin = child.stdin.take();
        InNamespace {
            child,
            stdin,
            lines,
            stderr,
            _home: home,
        }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes its stdin (the end of a script's input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next line of stdout, within the deadline.
    pub fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
    }

    /// The next JSON event satisfying `matches`; every event before it goes to `seen`.
    pub fn expect(&self, what: &str, seen: &mut Vec<Value>, matches: impl Fn(&Value) -> bool) {
        loop {
            let event: Value = serde_json::from_str(&self.next_line(what)).unwrap();
            let done = matches(&event);
            seen.push(event);
            if done {
                return;
            }
        }
    }

    /// Every line of stdout until it closes (the process ended), within the deadline.
    pub fn all_lines(&self) -> Vec<String> {
        let until = Instant::now() + DEADLINE;
        let mut lines = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("stdout still open after {DEADLINE:?}: {lines:?}")
                }
            }
        }
    }

    /// Its exit status, waiting at most the deadline (then killing it and failing).
    pub fn wait(&mut self) -> ExitStatus {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for a child") {
                return status;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                panic!("still running after {DEADLINE:?}");
            }
            // A child's exit has no event to wait on here: look again shortly.
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything it wrote to stderr, once it has exited (waited for as [`InNamespace::wait`]).
    pub fn stderr_once_ended(&mut self) -> String {
        self.wait();
        self.stderr
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Kills it now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its pid (of `ip netns exec`, which exec'd the program: the same process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for InNamespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
