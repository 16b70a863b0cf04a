//! The server's defences, one test each (issue 3's numbered list), against the real binary.
//! Each limit is set through its flag to a value that makes the outcome independent of timing:
//! e.g. a flood refill rate of one line per 100 s, so "the burst passes, the rest is dropped" holds
//! however slow the machine.

mod common;

use common::*;
use serde_json::{json, Value};
use tempfile::TempDir;

fn users(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("users.json")
}

fn is_error(value: &Value, code: &str) -> bool {
    value["type"] == "error" && value["code"] == code
}

fn message_texts(events: &[Value], from: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "message" && e["from"] == from)
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect()
}

/// Defence 1: A connection that does not log in within the deadline is told why and closed.
#[test]
fn a_connection_that_does_not_log_in_in_time_is_told_and_closed() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(&users(&dir), &["--auth-timeout", "0.3"]);
    let mut silent = RawConnection::connect(server.addr);
    let rest = silent.read_until_closed();
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(is_error(&rest[0], "auth_timeout"), "{rest:?}");
    assert_eq!(rest[0]["fatal"], true);
    server.wait_for_log("disconnected before login: no login within 0.3 s");
}

/// Defence 1: Fifty silent connections (from fifty addresses) and a person sitting at the password
/// prompt do not stop anyone else from registering and chatting.
#[test]
fn fifty_silent_connections_and_a_stuck_prompt_delay_nobody() {
    let dir = TempDir::new().unwrap();
    // A day to log in: the stuck client's registration must not depend on how fast the rest is.
    let server = Server::start(&users(&dir), &["--auth-timeout", "86400"]);
    let silent: Vec<RawConnection> = (2..52)
        .map(|i| RawConnection::connect_from(&format!("127.0.0.{i}"), server.addr))
        .collect();
    let mut stuck = ChatClient::start(server.addr, "stuck", &["register", "stuck"]);
    stuck.expect_event("connected");
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    alice.expect_peers(&["alice", "bob"]);
    bob.send("hello while fifty connections say nothing");
    alice.expect("bob's message", |e| {
        e["event"] == "message" && e["text"] == "hello while fifty connections say nothing"
    });
    assert_eq!(silent.len(), 50);
    // The stuck client finishes its registration whenever its person gets back to it.
    stuck.send("stuck-password");
    stuck.expect_event("welcome");
}

/// Defence 2: Connections not logged in yet are capped per address; others are served.
#[test]
fn connections_not_logged_in_are_capped_per_address() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(&users(&dir), &["--max-pending-per-ip", "3"]);
    let mut first = RawConnection::connect(server.addr);
    let _second = RawConnection::connect(server.addr);
    let _third = RawConnection::connect(server.addr);
    let mut fourth = RawConnection::connect_silent(server.addr);
    let refused = fourth.read_until_closed();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(is_error(&refused[0], "too_many_connections"), "{refused:?}");
    server.wait_for_log("3 connections from 127.0.0.1 not logged in yet (1 refused so far)");
    // The real client says why, and exits as for a full server.
    let refused = ChatClient::start(server.addr, "alice", &[]).wait();
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    assert!(refused.stderr.contains("not logged in yet"), "{refused:?}");
    // Another address is not affected.
    let _other = RawConnection::connect_from("127.0.0.2", server.addr);
    // Logging in frees the place.
    let welcome = first.authenticate(true, "alice", "alice-password");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let _fifth = RawConnection::connect(server.addr);
}

/// Defence 3: A line longer than the cap is never buffered whole: a megabyte without a newline gets
/// `line_too_long` and the connection is closed, and the server's peak memory barely moves.
#[test]
fn a_megabyte_without_a_newline_is_cut_off_and_costs_no_memory() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(&users(&dir), &[]);
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let before = server.peak_rss_kib();
    let mut attacker = RawConnection::connect(server.addr);
    // The server stops reading after 64 KiB, so this write may fail part-way: that is the point.
    let _ = attacker.write(&vec![b'x'; 1024 * 1024]);
    let answer = attacker.read_until_closed();
    assert!(
        answer.iter().any(|v| is_error(v, "line_too_long")),
        "{answer:?}"
    );
    let growth = server.peak_rss_kib().saturating_sub(before);
    eprintln!("peak RSS grew by {growth} KiB while cutting off a 1 MiB line");
    assert!(growth < 1024, "peak RSS grew by {growth} KiB");
    // Everyone else is still served.
    alice.send("/peers");
    alice.expect_peers(&["alice"]);
}

/// Defence 5: A flooding client is warned, then disconnected; the room goes on.
#[test]
fn a_flooding_client_is_warned_then_disconnected_and_the_room_goes_on() {
    let dir = TempDir::new().unwrap();
    // Burst 5, then one line per 100 s: exactly the burst passes, however slow the machine.
    let server = Server::start(
        &users(&dir),
        &[
            "--flood-burst",
            "5",
            "--flood-rate",
            "0.01",
            "--flood-strikes",
            "3",
        ],
    );
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    let mut flooder = RawConnection::connect(server.addr);
    // The registration is the first of its five lines.
    let welcome = flooder.authenticate(true, "flooder", "flooder-password");
    assert_eq!(welcome["type"], "welcome");
    let burst: String = (1..=7)
        .map(|i| format!("{}\n", json!({"type": "say", "text": format!("flood {i}")})))
        .collect();
    flooder.write(burst.as_bytes()).unwrap();
    let answers: Vec<Value> = flooder
        .read_until_closed()
        .into_iter()
        .filter(|v| v["type"] == "error")
        .collect();
    let codes: Vec<&str> = answers
        .iter()
        .map(|v| v["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["rate_limited", "rate_limited", "flood"],
        "{answers:?}"
    );
    assert_eq!(answers[0]["fatal"], false);
    assert_eq!(answers[2]["fatal"], true);
    let seen = alice.until("the flooder leaving", |e| {
        e["event"] == "left" && e["username"] == "flooder"
    });
    assert_eq!(
        message_texts(&seen, "flooder"),
        ["flood 1", "flood 2", "flood 3", "flood 4"]
    );
    bob.send("the room still works");
    alice.expect("bob's message", |e| e["text"] == "the room still works");
    server.wait_for_log("disconnected: flooding");
}

/// Starts a server with `queue_flags` (and flood control out of the way), logs in alice, a
/// sleeper that never reads (a small receive buffer) and a sender; then the sender says 16 KiB
/// messages, each once alice has the previous one (so alice is never the slow one), until alice
/// sees the sleeper leave. Alice must get every message; returns the server and how many were
/// sent. Bounded by `max_messages`.
fn drop_a_sleeper(dir: &TempDir, queue_flags: &[&str], max_messages: usize) -> (Server, usize) {
    let mut flags = queue_flags.to_vec();
    flags.extend(["--flood-burst", "100000", "--flood-rate", "100000"]);
    let server = Server::start(&users(dir), &flags);
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let mut sleeper = RawConnection::connect_small_buffer(server.addr);
    assert_eq!(
        sleeper.authenticate(true, "sleeper", "sleeper-password")["type"],
        "welcome"
    );
    // From here on the sleeper reads nothing.
    let mut sender = RawConnection::connect(server.addr);
    assert_eq!(
        sender.authenticate(true, "sender", "sender-password")["type"],
        "welcome"
    );
    alice.expect_peers(&["alice", "sleeper", "sender"]);
    let padding = "p".repeat(16 * 1024);
    let mut sent = 0;
    let mut sleeper_dropped = false;
    while !sleeper_dropped {
        assert!(sent < max_messages, "the sleeper was never dropped");
        sender.send(&json!({"type": "say", "text": format!("{sent} {padding}")}));
        let seen = alice.until(&format!("message {sent}"), |e| {
            e["event"] == "message" && e["text"].as_str().unwrap().starts_with(&format!("{sent} "))
        });
        assert_eq!(
            message_texts(&seen, "sender").len(),
            1,
            "alice lost a message"
        );
        sleeper_dropped = seen
            .iter()
            .any(|e| e["event"] == "left" && e["username"] == "sleeper");
        sent += 1;
    }
    eprintln!("the sleeper was dropped after {sent} messages of 16 KiB");
    (server, sent)
}

/// Defence 6: A client that stops reading is disconnected once it is owed more than
/// `--send-queue-bytes`, while the others keep receiving every message, in order.
#[test]
fn a_client_that_stops_reading_is_dropped_and_the_others_receive_everything() {
    let dir = TempDir::new().unwrap();
    // Only the byte cap can drop the sleeper: the stall timeout is out of reach. Its kernel
    // buffers and then 64 KiB owed fill up; 2,000 messages of 16 KiB are far more than those hold.
    let flags = [
        "--send-queue-bytes",
        "65536",
        "--send-stall-timeout",
        "3600",
    ];
    let (server, _) = drop_a_sleeper(&dir, &flags, 2000);
    server.wait_for_log("sleeper disconnected: send queue exceeded");
}

/// Defence 6, the other half: a client whose socket accepts nothing for `--send-stall-timeout`
/// while it is owed bytes is disconnected, even though it is owed far less than the cap.
#[test]
fn a_client_whose_socket_stops_accepting_data_is_dropped_after_the_stall_timeout() {
    let dir = TempDir::new().unwrap();
    // The cap is out of reach (1 GiB): only the stall can drop the sleeper, once its kernel
    // buffers are full and its writer has made no progress for 0.5 s.
    let flags = [
        "--send-queue-bytes",
        "1073741824",
        "--send-stall-timeout",
        "0.5",
    ];
    let (server, _) = drop_a_sleeper(&dir, &flags, 10_000);
    server.wait_for_log("(sleeper) disconnected: send stalled (nothing written for 0.5 s)");
    assert!(
        !server.log().contains("send queue exceeded"),
        "{}",
        server.log()
    );
}

/// Defence 7: a logged-in peer that stops answering is pinged, then dropped and announced as
/// gone.
#[test]
fn a_peer_that_does_not_answer_pings_is_removed_and_announced_as_gone() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(
        &users(&dir),
        &["--ping-interval", "0.2", "--ping-timeout", "0.2"],
    );
    let mut ghost = RawConnection::connect(server.addr);
    assert_eq!(
        ghost.authenticate(true, "ghost", "ghost-password")["type"],
        "welcome"
    );
    // The ghost reads but never answers.
    let rest = ghost.read_until_closed();
    assert_eq!(
        rest.first().map(|v| &v["type"]),
        Some(&json!("ping")),
        "{rest:?}"
    );
    assert!(
        rest.last().is_some_and(|v| is_error(v, "ping_timeout")),
        "{rest:?}"
    );
    server.wait_for_log("(ghost) disconnected: ping timeout (0.2 s)");
    // The broker logs this as it sends `left` to everyone still online.
    server.wait_for_log("ghost left");
}

/// Defence 7, the client's side: the real client answers the server's `ping` with `pong`. The
/// test plays the server, so nothing depends on how fast the answer comes.
#[test]
fn the_client_answers_the_servers_ping() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut alice = ChatClient::start(addr, "alice", &["login", "alice", "alice-password"]);
    let (stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut to_client = stream.try_clone().unwrap();
    let mut from_client = std::io::BufReader::new(stream);
    let mut send = |value: Value| {
        use std::io::Write;
        writeln!(to_client, "{value}").unwrap();
    };
    let mut receive = || {
        use std::io::BufRead;
        let mut line = String::new();
        from_client
            .read_line(&mut line)
            .expect("a line from the client");
        serde_json::from_str::<Value>(&line).expect("JSON from the client")
    };
    send(json!({"type": "hello", "version": 1, "auth": ["login", "register"]}));
    let login = receive();
    assert_eq!(login["type"], "login", "{login}");
    let me = json!({"username": "alice", "ip": "127.0.0.1", "p2p_port": login["p2p_port"]});
    send(json!({"type": "welcome", "username": "alice", "peers": [me]}));
    alice.expect_event("welcome");
    send(json!({"type": "ping"}));
    assert_eq!(receive(), json!({"type": "pong"}));
}

/// A server on a copy of users-ln10.json (alice, Bob) whose login throttle delays from the second
/// failure on, by `delay` seconds doubling up to `max`.
fn server_with_throttle(delay: &str, max: &str) -> (TempDir, Server) {
    let dir = TempDir::new().unwrap();
    let path = users(&dir);
    std::fs::copy(fixture("users-ln10.json"), &path).unwrap();
    let flags = [
        "--login-free-failures",
        "1",
        "--login-delay",
        delay,
        "--login-delay-max",
        max,
    ];
    let server = Server::start(&path, &flags);
    (dir, server)
}

/// Defence 8: Failed logins slow down further attempts on the account and from the address, with a
/// growing delay, but the right password always gets in; unknown users get the same answer.
#[test]
fn failed_logins_are_delayed_more_and_more_but_never_locked_out() {
    let (_dir, server) = server_with_throttle("0.1", "0.2");
    let attempt = |name: &str, password: &str| {
        let mut conn = RawConnection::connect(server.addr);
        conn.authenticate(false, name, password)
    };
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(attempt("alice", "wrong-password"));
    }
    server.wait_for_log("\"alice\": 3 recent failures on the account, 3 from 127.0.0.1");
    for failures in 1..=2 {
        server.wait_for_log(&format!(
            "login as \"alice\" delayed after {failures} recent failures"
        ));
    }
    answers.push(attempt("nobody", "wrong-password"));
    server.wait_for_log("login as \"nobody\" delayed after 3 recent failures");
    for answer in &answers {
        assert_eq!(
            answer, &answers[0],
            "unknown user and wrong password differ"
        );
    }
    assert!(is_error(&answers[0], "bad_credentials"), "{:?}", answers[0]);
    let welcome = attempt("alice", "alice-password");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
}

/// Defence 8: many wrong guesses at once (here 8, from 8 addresses in good standing, each its
/// first) wait for the account's clock, but such an address is never booked further ahead than
/// the longest delay, so the owner (one of them, to the server) still gets in: no lockout.
/// Guesses from addresses past their free failures are refused instead (tests/guessing.rs).
#[test]
fn guesses_at_once_do_not_lock_the_owner_out() {
    // 4 s per attempt: queued one after another, the owner would wait 36 s, past the harness's
    // 30 s read deadline; capped, at most 4 s.
    let (_dir, server) = server_with_throttle("4", "4");
    let mut first = RawConnection::connect_from("127.0.0.2", server.addr);
    assert!(is_error(
        &first.authenticate(false, "alice", "wrong-password"),
        "bad_credentials"
    ));
    let addr = server.addr;
    let guesses: Vec<_> = (3..11)
        .map(|i| {
            std::thread::spawn(move || {
                let mut conn = RawConnection::connect_from(&format!("127.0.0.{i}"), addr);
                conn.authenticate(false, "alice", "wrong-password")
            })
        })
        .collect();
    server.wait_for_log_count("login as \"alice\" delayed", 8);
    let mut owner = RawConnection::connect(server.addr);
    let welcome = owner.authenticate(false, "alice", "alice-password");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    for guess in guesses {
        assert!(is_error(&guess.join().unwrap(), "bad_credentials"));
    }
}

/// A server that hashes one password at a time (`--hash-workers 1`), each slowly: scrypt
/// ln=`log_n`, r=8, p=16 takes 16 times the work of p=1 for the same memory. How slow does not
/// decide these tests; it only keeps the one worker busy while the test queues requests behind it.
fn server_with_slow_hashes(dir: &TempDir, log_n: &str, extra: &[&str]) -> Server {
    let mut flags = vec![
        "--hash-workers",
        "1",
        "--scrypt-log-n",
        log_n,
        "--scrypt-p",
        "16",
    ];
    flags.extend_from_slice(extra);
    Server::start_with(&users(dir), &flags)
}

/// Sends a registration for `name` from `local` without waiting for the answer.
fn send_registration(local: &str, addr: std::net::SocketAddr, name: &str) -> RawConnection {
    let mut conn = RawConnection::connect_from(local, addr);
    conn.send(&json!({
        "type": "register", "username": name, "password": "a-password", "p2p_port": 9,
    }));
    conn
}

/// The index of the first log line at or after `from` that contains `needle`.
fn log_line(log: &[&str], from: usize, needle: &str) -> Option<usize> {
    (from..log.len()).find(|&i| log[i].contains(needle))
}

/// Defence 9 (issue 9, section 2): a flood of registrations does not starve logins. With one
/// worker busy and registrations waiting, a login that arrives after them is hashed before every
/// one of them that was still waiting.
#[test]
fn a_login_is_hashed_before_the_registrations_queued_ahead_of_it() {
    const REGISTRATIONS: usize = 6;
    let dir = TempDir::new().unwrap();
    let server = server_with_slow_hashes(&dir, "13", &[]);
    let (mut alice, _) = RawConnection::register(server.addr, "alice", "alice-password", 9);
    alice.send(&json!({"type": "quit"}));
    alice.read_until_closed();
    server.wait_for_log("(alice) disconnected");
    let flood: Vec<RawConnection> = (0..REGISTRATIONS)
        .map(|i| send_registration(&format!("127.0.0.{}", 2 + i), server.addr, &format!("r{i}")))
        .collect();
    // One hashes, the others wait.
    server.wait_for_log_count("registration as \"r", REGISTRATIONS - 1);
    let mut login = RawConnection::connect(server.addr);
    login.send(&json!({
        "type": "login", "username": "alice", "password": "alice-password", "p2p_port": 9,
    }));
    server.wait_for_log("login as \"alice\" waits for the hasher: 0 ahead of it");
    let welcome = login.read_json().expect("an answer to the login");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    for mut conn in flood {
        let answer = conn.read_json().expect("an answer to the registration");
        assert_eq!(answer["type"], "welcome", "{answer}");
    }

    // The answers may overtake the log on its way through the pipe.
    server.wait_for_log_count(": registered \"r", REGISTRATIONS);
    server.wait_for_log_count("logged in as \"alice\"", 2);
    let log = server.log();
    let log: Vec<&str> = log.lines().collect();
    let queued = log_line(&log, 0, "login as \"alice\" waits for the hasher").unwrap();
    // "… 0 ahead of it, N waiting in all": the login and the registrations still waiting.
    let waiting: usize = log[queued]
        .split(", ")
        .nth(1)
        .and_then(|w| w.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {:?}", log[queued]));
    let overtaken = waiting - 1;
    assert!(
        overtaken >= 1,
        "the registrations were all hashed before the login arrived: {}",
        log[queued]
    );
    let logged_in = log_line(&log, queued, "logged in as \"alice\"").unwrap();
    let registered_after = log[logged_in..]
        .iter()
        .filter(|l| l.contains(": registered \"r"))
        .count();
    assert_eq!(
        registered_after,
        overtaken,
        "every registration still waiting is hashed after the login; log:\n{}",
        log[queued..].join("\n")
    );
}

/// Defence 9: a registration that cannot be checked before its connection's deadline is answered
/// `busy` at once (while the hash ahead of it still runs), not left to time out; the real client
/// shows the server's text and exits with status 3, as for a full server (try again later).
#[test]
fn a_registration_that_cannot_be_checked_in_time_is_told_busy_at_once() {
    let dir = TempDir::new().unwrap();
    // Each hash takes several times the 0.3 s a connection has to be checked.
    let server = server_with_slow_hashes(&dir, "15", &["--auth-timeout", "0.3"]);
    // Measured by the hasher: its running average of hash times.
    let (_seed, _) = RawConnection::register(server.addr, "seed", "a-password", 9);

    // Two at once: whichever comes first is hashed, the other cannot start in time.
    let mut answers: Vec<(&str, Value, RawConnection)> = [("a", "127.0.0.2"), ("b", "127.0.0.3")]
        .into_iter()
        .map(|(name, local)| (name, send_registration(local, server.addr, name)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(name, mut conn)| (name, conn.read_json().expect("an answer"), conn))
        .collect();
    answers.sort_by_key(|(_, answer, _)| answer["type"] != "welcome");
    let [(hashed, welcome, _), (told, busy, told_conn)] = &mut answers[..] else {
        unreachable!()
    };
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert!(is_error(busy, "busy"), "{busy}");
    assert_eq!(busy["fatal"], true);
    assert_eq!(
        busy["message"],
        "the server is busy; try again in a few seconds"
    );
    assert_eq!(told_conn.read_until_closed(), Vec::<Value>::new());
    server.wait_for_log(&format!("registration as \"{told}\" refused: busy"));
    let log = server.log();
    let refused = log
        .find(&format!(
            "registration as \"{told}\" refused: busy (no worker free for it and 0 queued ahead"
        ))
        .unwrap_or_else(|| panic!("not refused on arrival; log:\n{log}"));
    assert!(
        !log[..refused].contains(&format!("registered \"{hashed}\"")),
        "refused only once the hash ahead of it was done; log:\n{log}"
    );

    // The real client, behind another running hash.
    let _running = send_registration("127.0.0.2", server.addr, "running2");
    let carol = ChatClient::start(server.addr, "carol", &["register", "carol", "a-password"]);
    let finished = carol.wait();
    assert_eq!(finished.status.code(), Some(3), "{finished:?}");
    assert!(
        finished
            .stderr
            .contains("the server is busy; try again in a few seconds"),
        "{finished:?}"
    );
    assert!(
        finished
            .events
            .iter()
            .any(|e| e["event"] == "error" && e["code"] == "busy"),
        "{finished:?}"
    );
    let users = read_users(&server.users);
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(told) && !names.contains(&"carol"),
        "{names:?}"
    );
}
