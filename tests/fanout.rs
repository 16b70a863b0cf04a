//! Issue 13, section 1: a client that reads is never dropped. At every default flag, a full room
//! where every client sends a whole flood burst at once owes each receiver hundreds of lines at
//! once; the send buffer is bounded by what a client is owed in bytes and by whether its socket
//! makes progress, not by how far the broker got ahead of the writers, so nobody is dropped and
//! every line arrives, in order per sender.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tempfile::TempDir;

/// `--max-clients`' default: a full room.
const ROOM: usize = 64;
/// `--flood-burst`'s default: the lines a client may send at once.
const BURST: usize = 10;
/// `--flood-rate`'s default is 5 lines per second: the login line's token is back after 0.2 s.
const LOGIN_TOKEN_REFILL: Duration = Duration::from_millis(250);

#[test]
fn a_full_room_sending_whole_bursts_at_once_drops_nobody_and_delivers_everything_in_order() {
    let dir = TempDir::new().unwrap();
    // Every default flag but the suite's hashing cost (and TLS, the default, on).
    let server = Server::start(&dir.path().join("users.json"), &[]);
    // One source address each: the per-address limits (8 connections, 20 registrations an
    // hour, the login throttle) are not what this test is about.
    let mut clients: Vec<RawConnection> = (0..ROOM)
        .map(|i| {
            let mut conn = RawConnection::connect_from(&format!("127.0.13.{}", i + 1), server.addr);
            let welcome = conn.authenticate(true, &name(i), "a-long-enough-password");
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            conn
        })
        .collect();
    // Flood control counted each login line; its token comes back with time alone, so a full
    // burst is allowed once the refill time has passed since the last login (a lower bound the
    // server cannot beat: it read that login before the test saw its welcome).
    let last_login = Instant::now();
    while last_login.elapsed() < LOGIN_TOKEN_REFILL {
        std::thread::sleep(LOGIN_TOKEN_REFILL - last_login.elapsed());
    }

    // Every client sends its whole burst, each in one write, before anyone reads a line.
    for (i, conn) in clients.iter_mut().enumerate() {
        let burst: String = (0..BURST)
            .map(|seq| {
                format!(
                    "{}\n",
                    json!({"type": "say", "text": format!("{} {seq}", name(i))})
                )
            })
            .collect();
        conn.write(burst.as_bytes()).expect("send the burst");
    }

    // Each receiver is owed (ROOM - 1) × BURST room lines. Read them round-robin, a burst's worth
    // at a time, so that every socket keeps moving while the others are read.
    let owed = (ROOM - 1) * BURST;
    let mut next_seq = vec![vec![0usize; ROOM]; ROOM];
    let mut received = vec![0usize; ROOM];
    while received.iter().any(|&n| n < owed) {
        for (r, conn) in clients.iter_mut().enumerate() {
            let target = (received[r] + BURST).min(owed);
            while received[r] < target {
                let line = match conn.try_read_json() {
                    Ok(Some(line)) => line,
                    outcome => panic!(
                        "{} got {} of {owed} lines, then {outcome:?}; server log:\n{}",
                        name(r),
                        received[r],
                        server.log()
                    ),
                };
                if line["type"] == "error" {
                    panic!("{} was told {line}", name(r));
                }
                if line["type"] != "message" {
                    continue; // `joined` for the clients that came in later.
                }
                let text = line["text"].as_str().unwrap();
                let (from, seq) = text.split_once(' ').unwrap();
                let sender: usize = from.trim_start_matches('c').parse().unwrap();
                assert_eq!(line["from"], from);
                assert_ne!(sender, r, "a client got its own line back");
                assert_eq!(
                    seq.parse::<usize>().unwrap(),
                    next_seq[r][sender],
                    "{} got {from}'s lines out of order",
                    name(r)
                );
                next_seq[r][sender] += 1;
                received[r] += 1;
            }
        }
    }
    for (r, seqs) in next_seq.iter().enumerate() {
        for (s, &n) in seqs.iter().enumerate() {
            assert_eq!(
                n,
                if s == r { 0 } else { BURST },
                "{} from {}",
                name(r),
                name(s)
            );
        }
    }
    // Nobody was dropped. (Not asked with `list`: an 11th line right after a full burst is one
    // more than flood control allows.)
    let log = server.log();
    assert!(!log.contains("disconnected"), "{log}");
    assert!(!log.contains(" left"), "{log}");
    drop(clients);
}

fn name(i: usize) -> String {
    format!("c{i:02}")
}
