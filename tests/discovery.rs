//! Finding the server on the LAN (DNS-SD over mDNS), black-box, in network namespaces the test
//! makes (tests/common/netns.rs): a bridge with multicast flooded (`mcast_snooping 0`) and a
//! `224.0.0.0/4` route in every namespace; servers in one namespace (or another host's), each
//! under a host name of its own (`unshare --uts`); clients in the others. Nothing leaves the
//! namespaces, which are removed on every exit path.
//!
//! A client without `--server` finds and joins the one server announced (`--accept-new` without
//! `--server` is refused, exit 2); `--discover` lists it;
//! a second server makes a client without a terminal exit 2 naming both; a spoofed
//! announcement (a test-owned responder announcing the real server's address with another
//! fingerprint) is shown at the first-use prompt not to match, and nothing is pinned without the
//! person's yes; a server with `--no-announce` is not found, and the client says it falls back.
//!
//! Needs root, `ip` and `unshare`; without them each test says "skipped" on stderr and passes.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::netns::{self, bridge_lab, in_namespace, InNamespace, Multicast, Namespaces};
use common::pty::TerminalClient;
use common::{client_bin, server_bin, DEADLINE, TEST_LOG_N};
use p2pchat::discovery::{Announcement, HostAddress, Offer};
use p2pchat::tls::Fingerprint;
use serde_json::Value;
use tempfile::TempDir;

/// The test bridge's /24, inside the test's own namespaces.
const SUBNET: &str = "10.215.0";

/// The port every server here listens on (each in a namespace, or a host, of its own).
const PORT: &str = "12000";

/// The lab for `test`, or `None` (reported as skipped) when this machine cannot make one.
fn lab_or_skip(test: &str, tag: &str, hosts: usize) -> Option<Namespaces> {
    if let Some(why) = netns::missing_tools(&["ip", "unshare"]) {
        netns::report_skipped(test, &why);
        return None;
    }
    Some(
        bridge_lab(tag, SUBNET, hosts, Multicast::Flooded)
            .unwrap_or_else(|e| panic!("building the namespaces: {e}")),
    )
}

/// A p2pchat server in a namespace, under a host name of its own.
struct LabServer {
    process: InNamespace,
    fingerprint: String,
    _dir: TempDir,
}

impl LabServer {
    /// Starts a server on `0.0.0.0:PORT` in namespace `ns`, as host `host` (its own UTS
    /// namespace), with `extra` flags; waits for its fingerprint line.
    fn start(ns: &str, host: &str, extra: &[&str]) -> LabServer {
        let dir = TempDir::new().unwrap();
        let users = dir.path().join("users.json");
        let server = server_bin();
        let mut args = vec![
            "--uts",
            "--",
            "sh",
            "-c",
            "hostname \"$1\" && shift && exec \"$@\"",
            "sh",
            host,
            server.to_str().unwrap(),
            "--bind",
        ];
        let bind = format!("0.0.0.0:{PORT}");
        args.push(&bind);
        args.extend([
            "--users",
            users.to_str().unwrap(),
            "--scrypt-log-n",
            TEST_LOG_N,
        ]);
        args.extend_from_slice(extra);
        let process = InNamespace::spawn(ns, Path::new("unshare"), &args);
        let listening = process.next_line("the server's listening line");
        assert!(listening.starts_with("listening on "), "{listening}");
        let fingerprint = process
            .next_line("the server's fingerprint line")
            .strip_prefix("fingerprint ")
            .expect("a fingerprint line")
            .to_string();
        LabServer {
            process,
            fingerprint,
            _dir: dir,
        }
    }
}

/// A client's home: its known-servers file goes there, never the real one.
fn home() -> TempDir {
    TempDir::new().unwrap()
}

fn at_home(home: &Path) -> impl FnOnce(&mut Command) + '_ {
    move |command: &mut Command| {
        command
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_STATE_HOME", home.join("state"));
    }
}

/// `p2pchat-client --discover --json` in `ns`: the servers it listed, and its exit status.
fn discover(ns: &str, home: &Path) -> Vec<Value> {
    let mut client =
        InNamespace::spawn_with(ns, &client_bin(), &["--discover", "--json"], at_home(home));
    let lines = client.all_lines();
    assert_eq!(client.wait().code(), Some(0), "--discover exits 0");
    lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Runs `--discover` in `ns` until it lists every name of `names` (an announcement is made
/// within about a second of a server's start: probing, then announcing), within the deadline.
fn discover_until(ns: &str, names: &[&str]) -> Vec<Value> {
    let home = home();
    let until = Instant::now() + DEADLINE;
    loop {
        let found = discover(ns, home.path());
        let listed = |name: &&str| found.iter().any(|f| f["name"] == **name);
        if names.iter().all(listed) {
            return found;
        }
        assert!(
            Instant::now() < until,
            "--discover never listed {names:?} within {DEADLINE:?}; it lists {found:?}"
        );
    }
}

#[test]
fn a_client_without_server_finds_the_announced_server_and_joins_it_and_discover_lists_it() {
    let test = "a_client_without_server_finds_the_announced_server";
    let Some(lab) = lab_or_skip(test, "da", 2) else {
        return;
    };
    let server = LabServer::start(lab.ns(0), "classroom", &[]);
    let address = format!("{}:{PORT}", lab.ip(0));

    // --discover lists it, with what it announced.
    let found = discover_until(lab.ns(2), &["classroom:12000"]);
    assert_eq!(found.len(), 1, "{found:?}");
    let listed = &found[0];
    assert_eq!(listed["event"], "server_found");
    assert_eq!(listed["server"], address.as_str());
    assert_eq!(listed["port"], 12000);
    assert_eq!(listed["tls"], true);
    assert_eq!(listed["fingerprint"], server.fingerprint.as_str());
    assert_eq!(listed["chosen"], false);
    // And in text, one line: name, address, TLS and the announced fingerprint.
    let home = home();
    let mut text = InNamespace::spawn_with(
        lab.ns(2),
        &client_bin(),
        &["--discover"],
        at_home(home.path()),
    );
    let lines = text.all_lines();
    assert_eq!(text.wait().code(), Some(0));
    assert_eq!(
        lines,
        [format!(
            "classroom:12000 at {address} (TLS, announced fingerprint {})",
            server.fingerprint
        )]
    );

    // --accept-new without --server is refused before any browse: a found server may be anyone's
    // announcement, and it would be trusted with the password.
    let mut blind = InNamespace::spawn_with(
        lab.ns(1),
        &client_bin(),
        &["--accept-new"],
        at_home(home.path()),
    );
    blind.close_stdin();
    let said = blind.stderr_once_ended();
    assert_eq!(blind.wait().code(), Some(2), "{said}");
    assert!(said.contains("--accept-new needs --server"), "{said}");

    // A client without --server finds it, says so, connects to it and joins (trusting the
    // fingerprint the script was given, as the operator printed it).
    let mut alice = InNamespace::spawn_with(
        lab.ns(1),
        &client_bin(),
        &["--json", "--trust", server.fingerprint.as_str()],
        at_home(home.path()),
    );
    for answer in ["register", "alice", "secret-pass"] {
        alice.send(answer);
    }
    let chosen: Value = serde_json::from_str(&alice.next_line("the server found")).unwrap();
    assert_eq!(chosen["event"], "server_found", "{chosen}");
    assert_eq!(chosen["chosen"], true);
    assert_eq!(chosen["server"], address.as_str());
    assert_eq!(chosen["fingerprint"], server.fingerprint.as_str());
    let connecting: Value = serde_json::from_str(&alice.next_line("connecting")).unwrap();
    assert_eq!(connecting["event"], "connecting");
    assert_eq!(connecting["server"], address.as_str());
    let connected: Value = serde_json::from_str(&alice.next_line("connected")).unwrap();
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["server"], address.as_str());
    let welcome: Value = serde_json::from_str(&alice.next_line("the welcome")).unwrap();
    assert_eq!(welcome["event"], "welcome", "{welcome}");
    assert_eq!(welcome["username"], "alice");
    alice.close_stdin();
    assert_eq!(alice.wait().code(), Some(0));
    // Pinning under the address it was found at: the_first_use_prompt_says_... (a yes).
    drop(server);
}

#[test]
fn a_second_announced_server_is_listed_and_a_client_without_a_terminal_exits_2_naming_both() {
    let test = "a_second_announced_server_is_listed";
    let Some(lab) = lab_or_skip(test, "db", 3) else {
        return;
    };
    let first = LabServer::start(lab.ns(0), "classroom-a", &[]);
    let second = LabServer::start(lab.ns(3), "classroom-b", &[]);
    let found = discover_until(lab.ns(2), &["classroom-a:12000", "classroom-b:12000"]);
    assert_eq!(found.len(), 2, "{found:?}");
    let second_at = format!("{}:{PORT}", lab.ip(3));
    assert!(found
        .iter()
        .any(|f| f["server"] == second_at.as_str()
            && f["fingerprint"] == second.fingerprint.as_str()));

    let home = home();
    let mut client = InNamespace::spawn_with(
        lab.ns(1),
        &client_bin(),
        &["--trust", first.fingerprint.as_str()],
        at_home(home.path()),
    );
    // Its input ends at once: a client that connected anyway would stop at the prompts.
    client.close_stdin();
    let stderr = client.stderr_once_ended();
    assert_eq!(client.wait().code(), Some(2), "{stderr}");
    for named in [
        format!("classroom-a:12000 at {}:{PORT}", lab.ip(0)),
        format!("classroom-b:12000 at {second_at}"),
    ] {
        assert!(stderr.contains(&named), "{named:?} not in {stderr}");
    }
    assert!(stderr.contains("--server"), "{stderr}");
    // It connected to neither: nothing was pinned.
    assert!(!home.path().join("config/p2pchat/known_servers").exists());
    drop((first, second));
}

/// A client without `--server` on a pty in `ns`, at `home`.
fn terminal_client(ns: &str, home: &Path) -> TerminalClient {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns])
        .arg(client_bin())
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("HOME", home)
        .env("TERM", "xterm-256color");
    TerminalClient::spawn(command)
}

#[test]
fn a_spoofed_announcement_is_shown_not_to_match_and_nothing_is_pinned_without_a_yes() {
    let test = "a_spoofed_announcement_is_shown_not_to_match";
    let Some(lab) = lab_or_skip(test, "dc", 2) else {
        return;
    };
    // The real server does not announce; someone else on the LAN announces it, with their own
    // fingerprint (the one a machine in the middle would present).
    let server = LabServer::start(lab.ns(0), "classroom", &["--no-announce"]);
    let spoofed = Fingerprint::of_certificate(b"the spoofer's certificate");
    let real_ip: IpAddr = lab.ip(0).parse().unwrap();
    let spoof = in_namespace(lab.ns(2), || {
        let offer = Offer {
            name: "classroom:12000".into(),
            listening: std::net::SocketAddr::new(real_ip, 12000),
            fingerprint: Some(spoofed),
        };
        let lie = vec![HostAddress {
            interface: "eth0".into(),
            ip: real_ip,
        }];
        Announcement::start_on(&offer, "classroom", lie).expect("the spoofed announcement")
    });
    let found = discover_until(lab.ns(1), &["classroom:12000"]);
    assert_eq!(found[0]["fingerprint"], spoofed.to_string().as_str());

    let home = home();
    let mut alice = terminal_client(lab.ns(1), home.path());
    alice.wait_for(&format!("found classroom:12000 at {}:{PORT}", lab.ip(0)));
    alice.wait_for(&format!("Its fingerprint is {}", server.fingerprint));
    alice.wait_for(&format!(
        "it does NOT match what was announced on the LAN ({spoofed})"
    ));
    alice.answer("(yes/no/[fingerprint])? ", "no");
    assert_eq!(alice.wait_exit().code(), Some(6));
    let file = home.path().join("config/p2pchat/known_servers");
    let pinned = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(!pinned.contains("SHA256:"), "nothing pinned: {pinned}");
    spoof.withdraw();
    drop(server);
}

#[test]
fn the_first_use_prompt_says_the_certificate_matches_the_announcement_and_a_yes_pins_it() {
    let test = "the_first_use_prompt_says_the_certificate_matches";
    let Some(lab) = lab_or_skip(test, "dd", 1) else {
        return;
    };
    let server = LabServer::start(lab.ns(0), "classroom", &[]);
    discover_until(lab.ns(1), &["classroom:12000"]);
    let home = home();
    let mut alice = terminal_client(lab.ns(1), home.path());
    alice.wait_for(&format!("found classroom:12000 at {}:{PORT}", lab.ip(0)));
    alice.wait_for("It matches the fingerprint announced on the LAN");
    alice.wait_for("anyone on the LAN can announce, so compare it with the server's operator");
    alice.answer("(yes/no/[fingerprint])? ", "yes");
    alice.register("alice", "secret-pass");
    let file = home.path().join("config/p2pchat/known_servers");
    let pinned = std::fs::read_to_string(&file).unwrap();
    assert!(
        pinned.contains(&format!("{}:{PORT}", lab.ip(0))) && pinned.contains(&server.fingerprint),
        "{pinned}"
    );
    alice.type_keys(":q\n");
    assert_eq!(alice.wait_exit().code(), Some(0));
}

#[test]
fn a_server_with_no_announce_is_not_found_and_the_client_says_it_falls_back() {
    let test = "a_server_with_no_announce_is_not_found";
    let Some(lab) = lab_or_skip(test, "de", 1) else {
        return;
    };
    let mut server = LabServer::start(lab.ns(0), "classroom", &["--no-announce"]);
    let home = home();
    // --discover lists nothing, saying so (and by the time it is done listening, an announcing
    // server would long have announced itself: that takes under a second).
    let mut listing = InNamespace::spawn_with(
        lab.ns(1),
        &client_bin(),
        &["--discover"],
        at_home(home.path()),
    );
    assert!(listing.all_lines().is_empty());
    let said = listing.stderr_once_ended();
    assert!(
        said.contains("no p2pchat server announced itself on the LAN"),
        "{said}"
    );
    let mut client =
        InNamespace::spawn_with(lab.ns(1), &client_bin(), &["--json"], at_home(home.path()));
    let fallback: Value = serde_json::from_str(&client.next_line("the fallback")).unwrap();
    assert_eq!(fallback["event"], "no_server_found", "{fallback}");
    assert_eq!(fallback["fallback"], "127.0.0.1:12000");
    let connecting: Value = serde_json::from_str(&client.next_line("connecting")).unwrap();
    assert_eq!(connecting["server"], "127.0.0.1:12000");
    // Nothing listens on 127.0.0.1:12000 in the client's namespace.
    let stderr = client.stderr_once_ended();
    assert_eq!(client.wait().code(), Some(3), "{stderr}");
    server.process.kill();
    let log = server.process.stderr_once_ended();
    assert!(
        log.contains("not announced on the LAN (--no-announce)"),
        "{log}"
    );
}
