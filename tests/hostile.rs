//! Hostile clients: while three honest clients chat, others send garbage, floods, a huge line,
//! half lines, half-closed connections, and a client process is killed outright. The honest
//! clients lose no message, in order, and the server keeps serving newcomers. Default limits.

mod common;

use common::*;
use serde_json::{json, Value};
use tempfile::TempDir;

const HONEST: [&str; 3] = ["alice", "bob", "carol"];
const ROUNDS: usize = 6;

fn texts_from(events: &[Value], from: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "message" && e["from"] == from)
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect()
}

/// One attack per round; each attacker connects from its own loopback address, as the
/// per-address limit would otherwise (rightly) refuse a crowd from one address.
fn attack(round: usize, server: &Server, kept: &mut Vec<RawConnection>) {
    let from = format!("127.0.0.{}", 20 + round);
    match round {
        0 => {
            // Garbage: invalid UTF-8, not JSON, JSON of the wrong shape, unknown types.
            let mut conn = RawConnection::connect_from(&from, server.addr);
            conn.write(b"\xff\xfe\xfd\nnot json\n[1,2,3]\n{\"type\":\"dance\"}\n{\"type\":7}\n")
                .unwrap();
            let errors: Vec<Value> = (0..5).filter_map(|_| conn.read_json()).collect();
            assert!(
                errors
                    .iter()
                    .all(|e| e["type"] == "error" && e["fatal"] == false),
                "{errors:?}"
            );
            kept.push(conn);
        }
        1 => {
            // A megabyte with no newline.
            let mut conn = RawConnection::connect_from(&from, server.addr);
            let _ = conn.write(&vec![b'{'; 1024 * 1024]);
            let answer = conn.read_until_closed();
            assert!(
                answer.iter().any(|e| e["code"] == "line_too_long"),
                "{answer:?}"
            );
        }
        2 => {
            // Half a line, then silence; and a connection that half-closes without a word.
            let mut half_line = RawConnection::connect_from(&from, server.addr);
            half_line.write(b"{\"type\":\"say\",\"te").unwrap();
            kept.push(half_line);
            let half_closed = RawConnection::connect_from(&from, server.addr);
            half_closed.shutdown_write();
            kept.push(half_closed);
        }
        3 => {
            // A logged-in flooder: 200 lines in one write.
            let mut conn = RawConnection::connect_from(&from, server.addr);
            let welcome = conn.authenticate(true, "flooder", "flooder-password");
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            let flood: String = (0..200)
                .map(|i| format!("{}\n", json!({"type": "say", "text": format!("spam {i}")})))
                .collect();
            let _ = conn.write(flood.as_bytes());
            let answer = conn.read_until_closed();
            assert!(answer.iter().any(|e| e["code"] == "flood"), "{answer:?}");
        }
        4 => {
            // A client process killed mid-session (SIGKILL: no quit, no FIN from the app).
            let victim = ChatClient::register(server.addr, "victim", "victim-password");
            victim.kill();
        }
        5 => {
            // A logged-in client sending nonsense between real messages.
            let mut conn = RawConnection::connect_from(&from, server.addr);
            let welcome = conn.authenticate(true, "troll", "troll-password");
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            conn.write(b"{\"type\":\"say\"}\n{\"type\":\"login\"}\n\n{\"type\":\"say\",\"text\":\"troll says hi\"}\n")
                .unwrap();
            kept.push(conn);
        }
        _ => unreachable!(),
    }
}

#[test]
fn honest_clients_lose_nothing_while_others_attack() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let mut honest: Vec<ChatClient> = HONEST
        .iter()
        .map(|name| ChatClient::register(server.addr, name, &format!("{name}-password")))
        .collect();
    honest[0].expect_peers(&HONEST);
    let mut kept = Vec::new();
    for round in 0..ROUNDS {
        attack(round, &server, &mut kept);
        for client in honest.iter_mut() {
            let text = format!("{} {round}", client.name);
            client.send(&text);
        }
    }
    for client in honest.iter_mut() {
        let text = format!("{} done", client.name);
        client.send(&text);
    }
    for client in honest.iter_mut() {
        let me = client.name.clone();
        for other in HONEST.iter().filter(|n| **n != me) {
            let done = format!("{other} done");
            let is_done = |e: &Value| e["event"] == "message" && e["text"] == done;
            if !client.history.iter().any(is_done) {
                client.expect(&done, is_done);
            }
        }
        for other in HONEST.iter().filter(|n| **n != me) {
            let mut expected: Vec<String> = (0..ROUNDS).map(|r| format!("{other} {r}")).collect();
            expected.push(format!("{other} done"));
            assert_eq!(
                texts_from(&client.history, other),
                expected,
                "{me} from {other}"
            );
        }
        let victim_left = |e: &Value| e["event"] == "left" && e["username"] == "victim";
        if !client.history.iter().any(victim_left) {
            client.expect("the killed client leaving", victim_left);
        }
    }
    // The server still serves newcomers, and the honest clients see them.
    let _dave = ChatClient::register(server.addr, "dave", "dave-password");
    honest[0].expect("dave joining", |e| {
        e["event"] == "joined" && e["peer"]["username"] == "dave"
    });
    drop(kept);
}
