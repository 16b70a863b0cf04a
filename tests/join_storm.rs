//! Join storms against the real server (issue 13, section 3): many clients logging in and out at
//! once, while the broker batches the `joined`/`left` lines due to each client. Whatever the
//! batching, every client must end with the full peer list, in the server's order, and see every
//! join and leave exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::thread;

use common::*;
use serde_json::{json, Value};
use tempfile::TempDir;

/// Clients in the storm; every third one leaves again.
const CLIENTS: usize = 30;

/// One client of the storm: its connection, its `welcome`, and what it announced.
struct Member {
    name: String,
    ip: String,
    port: u16,
    conn: RawConnection,
    welcome: Value,
}

/// Names in mixed case, so that a case-sensitive sort would order them differently
/// ("Storm00" < "storm01" < "Storm02" … only without regard to case).
fn name(i: usize) -> String {
    match i % 2 {
        0 => format!("Storm{i:02}"),
        _ => format!("storm{i:02}"),
    }
}

fn names_of(peers: &Value) -> Vec<String> {
    peers
        .as_array()
        .expect("a peer list")
        .iter()
        .map(|p| p["username"].as_str().expect("a username").to_string())
        .collect()
}

fn sorted_like_the_server(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort_by_key(|n| n.to_ascii_lowercase());
    names
}

#[test]
fn a_join_storm_leaves_everyone_with_the_full_sorted_list_and_every_change_once() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let addr = server.addr;

    // Everyone registers at once, each from an address of its own (no per-address limit bites).
    let joining: Vec<_> = (0..CLIENTS)
        .map(|i| {
            thread::spawn(move || {
                let ip = format!("127.13.0.{}", i + 1);
                let mut conn = RawConnection::connect_from(&ip, addr);
                let port = conn.made_up_p2p_port();
                let welcome = conn.authenticate(true, &name(i), "a-password");
                assert_eq!(welcome["type"], "welcome", "{welcome}");
                Member {
                    name: name(i),
                    ip,
                    port,
                    conn,
                    welcome,
                }
            })
        })
        .collect();
    let members: Vec<Member> = joining.into_iter().map(|t| t.join().unwrap()).collect();
    let announced: BTreeMap<String, (String, u16)> = members
        .iter()
        .map(|m| (m.name.clone(), (m.ip.clone(), m.port)))
        .collect();

    // Every third one leaves again, all at once.
    let (mut leavers, mut stayers) = (Vec::new(), Vec::new());
    for (i, member) in members.into_iter().enumerate() {
        match i % 3 {
            0 => leavers.push(member),
            _ => stayers.push(member),
        }
    }
    drop(leavers);
    let online: BTreeSet<String> = stayers.iter().map(|m| m.name.clone()).collect();
    let expected = sorted_like_the_server(online.iter().cloned());

    for member in &mut stayers {
        // The welcome: everyone online then, this client included, sorted without regard to case.
        let welcomed = names_of(&member.welcome["peers"]);
        assert_eq!(
            welcomed,
            sorted_like_the_server(welcomed.clone()),
            "{}",
            member.name
        );
        assert!(welcomed.contains(&member.name));
        let mut view: BTreeSet<String> = welcomed.into_iter().collect();
        // Each later join and each leave exactly once: a `joined` for someone already listed or
        // a `left` for someone not listed would be a repeat (no name joins twice here).
        let mut seen_joined = BTreeSet::new();
        let mut seen_left = BTreeSet::new();
        while view != online {
            let event = member
                .conn
                .read_json()
                .unwrap_or_else(|| panic!("{}: closed before its list was complete", member.name));
            match event["type"].as_str() {
                Some("joined") => {
                    let who = event["peer"]["username"].as_str().unwrap().to_string();
                    assert!(
                        view.insert(who.clone()),
                        "{}: {who} joined twice",
                        member.name
                    );
                    assert!(
                        seen_joined.insert(who),
                        "{}: a repeated joined",
                        member.name
                    );
                }
                Some("left") => {
                    let who = event["username"].as_str().unwrap().to_string();
                    assert!(view.remove(&who), "{}: {who} left unknown", member.name);
                    assert!(seen_left.insert(who), "{}: a repeated left", member.name);
                }
                _ => panic!("{}: unexpected {event}", member.name),
            }
        }
        // Nothing more is owed: the next line is the answer to `list` (the server sends what
        // waits for a client before answering it), and it is the full, sorted list.
        member.conn.send(&json!({"type": "list"}));
        let peers = member.conn.read_json().expect("an answer to list");
        assert_eq!(peers["type"], "peers", "{}: {peers}", member.name);
        assert_eq!(names_of(&peers["peers"]), expected, "{}", member.name);
        for peer in peers["peers"].as_array().unwrap() {
            let (ip, port) = &announced[peer["username"].as_str().unwrap()];
            assert_eq!(peer["ip"], ip.as_str(), "{peer}");
            assert_eq!(peer["p2p_port"], *port, "{peer}");
        }
    }
}
