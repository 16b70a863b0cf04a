//! Sealed direct messages over a lossy network, black-box: the server and two clients in network
//! namespaces made by the test (a bridge in the server's namespace, a veth pair to each client),
//! and `nft` in bob's namespace dropping 20 % of the UDP datagrams that arrive there, at random
//! (`numgen random mod 5 == 0 drop`; this kernel has no netem). alice sends bob 100 direct
//! messages: bob shows each exactly once, and alice reports all 100 delivered.
//!
//! Needs root, `ip` and `nft` (ci/install.sh installs nftables; CI runs as root); without them
//! the test says "skipped" on stderr and passes. The namespaces have names unique to the run and
//! are removed on every exit path (a guard's `Drop`), panics included. Bounded: 100 messages,
//! sent in windows of [`WINDOW`], each window awaited with the harness's deadline.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Instant;

use common::{client_bin, server_bin, DEADLINE, TEST_LOG_N};
use serde_json::Value;

/// Direct messages sent in all.
const MESSAGES: usize = 100;

/// Messages sent before waiting for their delivery reports: within the in-flight bound, and
/// enough to have several awaiting retransmission at once.
const WINDOW: usize = 10;

/// The bridge's subnet, inside the test's own namespaces (so it clashes with nothing).
const SERVER_IP: &str = "10.213.0.1";

/// Prints straight to the terminal (cargo's capture does not hide it) why the test did nothing.
fn report_skipped(why: &str) {
    let line = format!("sealed_direct_messages_survive_20_percent_loss: skipped: {why}\n");
    match std::fs::OpenOptions::new().write(true).open("/dev/stderr") {
        Ok(mut stderr) => {
            let _ = stderr.write_all(line.as_bytes());
        }
        Err(_) => eprint!("{line}"),
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
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

/// The test's namespaces; dropping it deletes them (and so their interfaces and rules).
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn ns(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// Server, alice and bob namespaces wired to one bridge; bob's drops 20 % of arriving UDP.
fn build_lab() -> Result<Namespaces, String> {
    let tag = format!("{}", std::process::id() % 100_000);
    let lab = Namespaces {
        names: vec![
            format!("p2pl{tag}s"),
            format!("p2pl{tag}a"),
            format!("p2pl{tag}b"),
        ],
    };
    // The guard exists before the first namespace does: any failure below removes them all.
    for name in &lab.names {
        run("ip", &["netns", "add", name])?;
    }
    let server = lab.ns(0);
    let ip_in = |ns: &str, args: &[&str]| {
        let mut all = vec!["netns", "exec", ns, "ip"];
        all.extend_from_slice(args);
        run("ip", &all)
    };
    ip_in(server, &["link", "add", "br0", "type", "bridge"])?;
    ip_in(
        server,
        &["addr", "add", &format!("{SERVER_IP}/24"), "dev", "br0"],
    )?;
    ip_in(server, &["link", "set", "br0", "up"])?;
    ip_in(server, &["link", "set", "lo", "up"])?;
    for (i, host) in [(1, "2"), (2, "3")] {
        let client = lab.ns(i).to_string();
        ip_in(
            server,
            &[
                "link", "add", "port", "type", "veth", "peer", "name", "eth0", "netns", &client,
            ],
        )?;
        let port = format!("port{i}");
        ip_in(server, &["link", "set", "port", "name", &port])?;
        ip_in(server, &["link", "set", &port, "master", "br0", "up"])?;
        ip_in(
            &client,
            &["addr", "add", &format!("10.213.0.{host}/24"), "dev", "eth0"],
        )?;
        ip_in(&client, &["link", "set", "eth0", "up"])?;
        ip_in(&client, &["link", "set", "lo", "up"])?;
    }
    let bob = lab.ns(2);
    run(
        "ip",
        &["netns", "exec", bob, "nft", "add", "table", "inet", "loss"],
    )?;
    run(
        "ip",
        &[
            "netns",
            "exec",
            bob,
            "nft",
            "add",
            "chain",
            "inet",
            "loss",
            "input",
            "{ type filter hook input priority 0 ; }",
        ],
    )?;
    run(
        "ip",
        &[
            "netns", "exec", bob, "nft", "add", "rule", "inet", "loss", "input", "meta", "l4proto",
            "udp", "numgen", "random", "mod", "5", "==", "0", "counter", "drop",
        ],
    )?;
    Ok(lab)
}

/// A child process in a namespace, killed when dropped.
struct InNamespace {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Its HOME and XDG folders (the client keeps its identity and pins there), removed with it.
    _home: tempfile::TempDir,
}

impl InNamespace {
    fn spawn(ns: &str, program: &std::path::Path, args: &[&str]) -> InNamespace {
        let home = tempfile::TempDir::new().expect("a home folder");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .env("XDG_DATA_HOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a process in a namespace");
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
        let stdin = child.stdin.take();
        InNamespace {
            child,
            stdin,
            _home: home,
            lines,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line of stdout, within the deadline.
    fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
    }

    /// The next JSON event satisfying `matches`; every event before it goes to `seen`.
    fn expect(&self, what: &str, seen: &mut Vec<Value>, matches: impl Fn(&Value) -> bool) {
        loop {
            let event: Value = serde_json::from_str(&self.next_line(what)).unwrap();
            let done = matches(&event);
            seen.push(event);
            if done {
                return;
            }
        }
    }
}

impl Drop for InNamespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn missing_tools() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces)".into());
    }
    for tool in ["ip", "nft"] {
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

#[test]
fn sealed_direct_messages_survive_20_percent_loss_each_shown_once_and_all_reported_delivered() {
    if let Some(why) = missing_tools() {
        report_skipped(&why);
        return;
    }
    let lab = match build_lab() {
        Ok(lab) => lab,
        Err(why) => {
            report_skipped(&format!("cannot build the namespaces: {why}"));
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let server = InNamespace::spawn(
        lab.ns(0),
        &server_bin(),
        &[
            "--bind",
            &format!("{SERVER_IP}:0"),
            "--users",
            users.to_str().unwrap(),
            "--scrypt-log-n",
            TEST_LOG_N,
        ],
    );
    let listening = server.next_line("listening line");
    let addr: SocketAddr = listening
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{listening:?}"))
        .parse()
        .unwrap();
    let server_arg = addr.to_string();
    // The fingerprint the server printed, required by the clients: a script meets no server
    // unvouched for, and the known-servers file (the real one here) is neither read nor written.
    let printed = server.next_line("fingerprint line");
    let fingerprint = printed
        .strip_prefix("fingerprint ")
        .unwrap_or_else(|| panic!("{printed:?}"))
        .to_string();
    // bob's rate limit out of the way: this test is about loss, not about a burst of 100.
    let client = |ns: &str, name: &str, extra: &[&str]| {
        let mut args = vec![
            "--server",
            server_arg.as_str(),
            "--json",
            "--trust",
            fingerprint.as_str(),
        ];
        args.extend_from_slice(extra);
        let mut c = InNamespace::spawn(ns, &client_bin(), &args);
        for answer in ["register", name, &format!("{name}-password")] {
            c.send(answer);
        }
        c.expect("welcome", &mut Vec::new(), |e| e["event"] == "welcome");
        c
    };
    let mut alice = client(lab.ns(1), "alice", &[]);
    let bob = client(
        lab.ns(2),
        "bob",
        &["--dm-burst", "1000", "--dm-rate", "1000"],
    );
    alice.expect("bob joining", &mut Vec::new(), |e| {
        e["event"] == "joined" && e["peer"]["username"] == "bob"
    });

    let started = Instant::now();
    let mut alice_events = Vec::new();
    for window in 0..MESSAGES / WINDOW {
        for n in window * WINDOW..(window + 1) * WINDOW {
            alice.send(&format!("@bob: message {n}"));
        }
        let reports = |events: &[Value]| {
            events
                .iter()
                .filter(|e| e["event"] == "direct_delivered" || e["event"] == "direct_failed")
                .count()
        };
        while reports(&alice_events) < (window + 1) * WINDOW {
            alice.expect("a delivery report", &mut alice_events, |e| {
                e["event"] == "direct_delivered" || e["event"] == "direct_failed"
            });
        }
    }
    let failed: Vec<&Value> = alice_events
        .iter()
        .filter(|e| e["event"] == "direct_failed" || e["event"] == "error")
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let delivered = alice_events
        .iter()
        .filter(|e| e["event"] == "direct_delivered")
        .count();
    assert_eq!(delivered, MESSAGES);

    // bob: every message exactly once, and the loss was real (retransmissions reached him, or
    // datagrams were lost: his counters show what arrived).
    let mut bob_events = Vec::new();
    let mut bob = bob;
    bob.send("/stats");
    bob.expect("bob's counters", &mut bob_events, |e| {
        e["event"] == "direct_stats"
    });
    let mut texts: Vec<String> = bob_events
        .iter()
        .filter(|e| e["event"] == "direct")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), MESSAGES, "shown more or less than once");
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), MESSAGES, "a message shown twice");
    let stats = bob_events.last().unwrap();
    alice.send("/stats");
    let mut alice_stats = Vec::new();
    alice.expect("alice's counters", &mut alice_stats, |e| {
        e["event"] == "direct_stats"
    });
    let rules = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.ns(2),
            "nft",
            "list",
            "table",
            "inet",
            "loss",
        ])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    let dropped = rules
        .split("packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("?");
    eprintln!(
        "loss test: {MESSAGES} messages delivered in {:.1} s; nft dropped {dropped} datagrams at \
         bob; bob received {} ({} retransmissions of messages already shown); alice received {} \
         acknowledgements",
        started.elapsed().as_secs_f64(),
        stats["received"],
        stats["duplicates"],
        alice_stats.last().unwrap()["acks"],
    );
    drop((alice, bob, server));
    drop(lab);
}
