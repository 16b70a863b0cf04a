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

use std::net::SocketAddr;
use std::process::Command;
use std::time::Instant;

use common::netns::{
    bridge_lab, missing_tools, report_skipped, run, InNamespace, Multicast, Namespaces,
};
use common::{client_bin, server_bin, TEST_LOG_N};
use serde_json::Value;

/// Direct messages sent in all.
const MESSAGES: usize = 100;

/// Messages sent before waiting for their delivery reports: within the in-flight bound, and
/// enough to have several awaiting retransmission at once.
const WINDOW: usize = 10;

/// The bridge's address (its subnet, 10.213.0.0/24, is inside the test's own namespaces, so
/// it clashes with nothing).
const SERVER_IP: &str = "10.213.0.1";

/// The test's name when it reports itself skipped.
const TEST: &str = "sealed_direct_messages_survive_20_percent_loss";

/// Server, alice and bob namespaces wired to one bridge; bob's drops 20 % of arriving UDP.
fn build_lab() -> Result<Namespaces, String> {
    let lab = bridge_lab("l", "10.213.0", 2, Multicast::Default)?;
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

#[test]
fn sealed_direct_messages_survive_20_percent_loss_each_shown_once_and_all_reported_delivered() {
    if let Some(why) = missing_tools(&["ip", "nft"]) {
        report_skipped(TEST, &why);
        return;
    }
    let lab = match build_lab() {
        Ok(lab) => lab,
        Err(why) => {
            report_skipped(TEST, &format!("cannot build the namespaces: {why}"));
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
