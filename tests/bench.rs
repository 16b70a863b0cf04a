//! Benchmarks (not tests: they measure, and assert only what a broken build would miss by far).
//! Run with `just bench` (release build, default scrypt cost ln=17). Ignored by `cargo test`.
//!
//! - `login_flood`: 50 logins at once at the default cost while two clients chat: the room's
//!   message latency before and during the flood, each login's time (any told `busy` counted
//!   apart), and the server's peak RSS against the budget cores × 128 MiB + 64 MiB.
//! - `login_timing`: unknown user vs wrong password, the same work (the dummy hash).
//! - `tls_handshake`: 200 connections one after another, each from connect to the server's
//!   `hello`, over TLS (the default) and with `--plaintext`: what the handshake adds.
//! - `login_during_registration_flood`: an honest login's time (connect to `welcome`), 20 in a
//!   row, while 56 connections from 7 other addresses register new names in a loop.
//! - `direct_messages`: direct messages between two real clients on loopback, sealed (the
//!   default, over a TLS server) against clear (`--plaintext`): one way (send → the receiver's
//!   event) and, sealed, the round trip (send → the sender's `direct_delivered`, the receiver's
//!   acknowledgement), one message at a time; then a blast of messages at once at one receiver,
//!   with its rate limit at the default and raised out of the way: how many it received per
//!   second, and what it dropped by reason (its `/stats`).
//! - `direct_messages_between_namespaces`: the timed part of `direct_messages` with the server and
//!   each client in a network namespace of its own (a bridge, veth pairs; removed on every exit
//!   path). Needs root and `ip`, else it says why and does nothing.
//! - `seal_and_open`: sealing and opening one direct message (ChaCha20-Poly1305), short and at
//!   the largest size, and deriving one peer's pairwise keys (X25519 + HKDF-SHA256).
//! - `file_between_two_clients`: the real clients end to end on loopback: `/send`, `/accept`, a
//!   256 MiB file to its `file_done` (throughput), and each client's peak RSS (the engine's own
//!   benchmark, tests/transfer_bench.rs, measures the data connection alone).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tempfile::TempDir;

const LOGINS: usize = 50;

/// The server flags for benchmarks: the default cost, and flood limits out of the way of the
/// latency probe (which sends a message as soon as the previous one arrived).
fn start_server(dir: &TempDir) -> Server {
    Server::start_with(
        &dir.path().join("users.json"),
        &["--flood-burst", "100000", "--flood-rate", "100000"],
    )
}

/// Each connection from its own loopback address, as from the lab's many hosts (and clear of
/// the per-address limit on connections not logged in yet).
fn source(i: usize) -> String {
    format!("127.0.{}.{}", 1 + i / 200, 10 + i % 200)
}

/// Registers user0..user{count}, as many at a time as there are cores (the server hashes that
/// many at once; more would only queue past the harness's read deadline).
fn register_all(server: &Server, count: usize) {
    let addr = server.addr;
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let workers: Vec<_> = (0..cores)
        .map(|w| {
            thread::spawn(move || {
                for i in (w..count).step_by(cores) {
                    let mut conn = RawConnection::connect_from(&source(i), addr);
                    let answer =
                        conn.authenticate(true, &format!("user{i}"), &format!("password-{i}"));
                    assert_eq!(answer["type"], "welcome", "{answer}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

fn summary(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = samples.len();
    println!(
        "{label:<34} n={n:<4} p50={:>8.2} ms  p95={:>8.2} ms  max={:>8.2} ms",
        ms(samples[n / 2]),
        ms(samples[(n * 95 / 100).min(n - 1)]),
        ms(samples[n - 1])
    );
}

/// Sends numbered messages from `from` to `to` one after another until `until` says stop;
/// returns each message's time from typing to arrival.
fn probe_latency(
    from: &mut ChatClient,
    to: &mut ChatClient,
    first: usize,
    until: impl Fn(usize) -> bool,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    let mut i = first;
    while !until(samples.len()) {
        let text = format!("probe {i}");
        let start = Instant::now();
        from.send(&text);
        to.expect(&text, |e| e["event"] == "message" && e["text"] == text);
        samples.push(start.elapsed());
        i += 1;
    }
    samples
}

#[test]
#[ignore = "benchmark: run with `just bench`"]
fn login_flood() {
    let dir = TempDir::new().unwrap();
    let server = start_server(&dir);
    let started = Instant::now();
    register_all(&server, LOGINS);
    println!(
        "registered {LOGINS} users at the default cost in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    alice.expect_peers(&["alice", "bob"]);
    // The user{i} connections closed after registering; the peak so far is the registrations'.
    let mut quiet = probe_latency(&mut alice, &mut bob, 0, |n| n >= 200);
    summary("room latency, quiet", &mut quiet);

    let addr = server.addr;
    let flood_start = Instant::now();
    let logins: Vec<_> = (0..LOGINS)
        .map(|i| {
            thread::spawn(move || {
                let mut conn = RawConnection::connect_from(&source(i), addr);
                let start = Instant::now();
                let answer =
                    conn.authenticate(false, &format!("user{i}"), &format!("password-{i}"));
                // On a loaded machine the last ones may not start hashing before their
                // deadline: `busy` (counted), never a long wait.
                if answer["code"] == "busy" {
                    return None;
                }
                assert_eq!(answer["type"], "welcome", "{answer}");
                Some((start.elapsed(), conn))
            })
        })
        .collect();
    // Probe while the logins are being hashed.
    let mut during = probe_latency(&mut alice, &mut bob, 1000, |_| {
        logins.iter().all(|l| l.is_finished())
    });
    let mut login_times = Vec::new();
    let mut connections = Vec::new();
    let mut busy = 0;
    for login in logins {
        match login.join().unwrap() {
            Some((took, conn)) => {
                login_times.push(took);
                connections.push(conn);
            }
            None => busy += 1,
        }
    }
    let flood = flood_start.elapsed();
    summary("room latency, during 50 logins", &mut during);
    summary("login (connect to welcome)", &mut login_times);
    println!("logins told busy: {busy}");
    let cores = thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let peak = server.peak_rss_kib();
    let budget = cores * 128 * 1024 + 64 * 1024;
    println!(
        "{LOGINS} logins in {:.2} s on {cores} cores; server peak RSS {:.1} MiB (budget {:.0} MiB)",
        flood.as_secs_f64(),
        peak as f64 / 1024.0,
        budget as f64 / 1024.0
    );
    assert!(
        peak <= budget,
        "peak RSS {peak} KiB over budget {budget} KiB"
    );
    drop(connections);
}

#[test]
#[ignore = "benchmark: run with `just bench`"]
fn login_timing() {
    const TRIES: usize = 20;
    let dir = TempDir::new().unwrap();
    let server = start_server(&dir);
    register_all(&server, TRIES);
    let attempt = |i: usize, name: String| {
        let mut conn = RawConnection::connect_from(&source(100 + i), server.addr);
        let start = Instant::now();
        let answer = conn.authenticate(false, &name, "wrong-password");
        assert_eq!(answer["code"], "bad_credentials", "{answer}");
        start.elapsed()
    };
    // Alternate, so that both see the same machine; each name and address fails only once, so
    // the login throttle stays out of the way.
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    for i in 0..TRIES {
        unknown.push(attempt(2 * i, format!("nobody{i}")));
        wrong.push(attempt(2 * i + 1, format!("user{i}")));
    }
    let mean = |s: &[Duration]| s.iter().map(|d| d.as_secs_f64()).sum::<f64>() / s.len() as f64;
    println!(
        "failed login, mean: unknown user {:.1} ms, wrong password {:.1} ms",
        mean(&unknown) * 1000.0,
        mean(&wrong) * 1000.0
    );
    summary("failed login, unknown user", &mut unknown);
    summary("failed login, wrong password", &mut wrong);
}

/// Connections timed, one after another, in each mode of `tls_handshake`.
const HANDSHAKES: usize = 200;

#[test]
#[ignore = "benchmark: run with `just bench`"]
fn tls_handshake() {
    for (label, flags) in [
        ("TLS 1.3 (default)", &[][..]),
        ("--plaintext", &["--plaintext"][..]),
    ] {
        let dir = TempDir::new().unwrap();
        let server = Server::start(&dir.path().join("users.json"), flags);
        let mut samples: Vec<Duration> = (0..HANDSHAKES)
            .map(|_| {
                let start = Instant::now();
                let conn = RawConnection::connect(server.addr);
                let took = start.elapsed();
                drop(conn);
                took
            })
            .collect();
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "connect to hello, {label:<18} n={HANDSHAKES} p50={:>6.2} ms  p99={:>6.2} ms  max={:>6.2} ms",
            ms(samples[HANDSHAKES / 2]),
            ms(samples[HANDSHAKES * 99 / 100]),
            ms(samples[HANDSHAKES - 1])
        );
    }
}

/// Direct messages timed one at a time, in each mode of `direct_messages`.
const DM_TIMED: usize = 200;
/// Direct messages sent at once at one receiver, in each mode of `direct_messages`.
const DM_BLAST: usize = 2000;
/// How long the blast's receiver may take to report its counters settled.
const DM_SETTLE: Duration = Duration::from_secs(30);
/// Clear messages are not acknowledged: the blast is over when the receiver's count of
/// datagrams has not moved for this long.
const DM_QUIET: Duration = Duration::from_secs(2);
/// A receiver's flags that take its rate limit out of the way.
const DM_UNLIMITED: &[&str] = &["--dm-burst", "1000000", "--dm-rate", "1000000"];
/// Interval between two looks at the counters during the blast.
const DM_POLL: Duration = Duration::from_millis(50);

#[test]
#[ignore = "benchmark: run with `just bench`"]
fn direct_messages() {
    for (label, server_flags) in [
        ("sealed (default)", &[][..]),
        ("clear (--plaintext)", &["--plaintext"][..]),
    ] {
        let sealed = server_flags.is_empty();
        let dir = TempDir::new().unwrap();
        let server = Server::start(&dir.path().join("users.json"), server_flags);
        let mut alice = ChatClient::register(server.addr, "alice", "password-a");
        // The receiver's rate limit (10 a second after a burst of 20) out of the way of the
        // timed messages: they measure the path, not the limit.
        let mut bob =
            ChatClient::register_with_flags(server.addr, "bob", "password-b", DM_UNLIMITED);
        alice.expect_joined("bob");
        let text_of = |e: &serde_json::Value| e["text"].as_str().unwrap_or("").to_string();
        // One way: send, then the receiver's event (the sender's report drained after).
        let mut one_way = Vec::with_capacity(DM_TIMED);
        for i in 0..DM_TIMED {
            let text = format!("one-way {i}");
            let start = Instant::now();
            alice.send(&format!("/msg bob {text}"));
            bob.expect("the direct message", |e| {
                e["event"] == "direct" && text_of(e) == text
            });
            one_way.push(start.elapsed());
            if sealed {
                alice.expect_event("direct_delivered");
            }
        }
        summary(&format!("direct, {label}: one way"), &mut one_way);
        if sealed {
            // Round trip: send, then the sender's delivery report (the receiver's drained after).
            let mut round_trip = Vec::with_capacity(DM_TIMED);
            for i in 0..DM_TIMED {
                let text = format!("round-trip {i}");
                let start = Instant::now();
                alice.send(&format!("/msg bob {text}"));
                alice.expect_event("direct_delivered");
                round_trip.push(start.elapsed());
                bob.expect("the direct message", |e| {
                    e["event"] == "direct" && text_of(e) == text
                });
            }
            summary(&format!("direct, {label}: round trip"), &mut round_trip);
        }
        drop(bob);
        for (limits, bob_flags) in [
            ("default --dm-burst/--dm-rate", &[][..]),
            ("limits raised", DM_UNLIMITED),
        ] {
            let mut bob = ChatClient::start_with_flags(
                server.addr,
                "bob",
                bob_flags,
                &["login", "bob", "password-b"],
            );
            bob.expect_event("welcome");
            alice.expect_joined("bob");
            let lines: String = (0..DM_BLAST)
                .map(|i| format!("/msg bob blast {i}\n"))
                .collect();
            // Alice's counters are totals since she started: the blast's are the differences.
            let before = alice.stats();
            let start = Instant::now();
            alice.send(lines.trim_end());
            // Over when bob's count of datagrams has not moved for a while and, sealed, alice
            // knows the fate of every message (acknowledged, or not delivered after its tries);
            // a clear datagram dropped by a full socket buffer never shows anywhere.
            let deadline = start + DM_SETTLE;
            let (mut changed, mut last_received) = (start, 0);
            let why = loop {
                let stats = bob.stats();
                let received = stats["received"].as_u64().unwrap_or(0);
                if received != last_received {
                    (last_received, changed) = (received, Instant::now());
                }
                let resolved = !sealed || {
                    let sent = alice.stats();
                    let count = |key: &str| {
                        sent[key].as_u64().unwrap_or(0) - before[key].as_u64().unwrap_or(0)
                    };
                    // Beyond 64 awaiting an answer per peer, a send is refused, not queued.
                    count("acknowledged") + count("not_delivered") >= count("sent")
                };
                if resolved && changed.elapsed() > DM_QUIET {
                    break "settled";
                }
                if Instant::now() >= deadline {
                    break "stopped at the deadline";
                }
                thread::sleep(DM_POLL);
            };
            let stats = bob.stats();
            let took = changed.duration_since(start).as_secs_f64().max(1e-6);
            let delivered = stats["delivered"].as_u64().unwrap_or(0);
            let drops: Vec<String> = stats["dropped"]
                .as_object()
                .map(|d| {
                    d.iter()
                        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                        .map(|(why, n)| format!("{why} {n}"))
                        .collect()
                })
                .unwrap_or_default();
            let sender = if sealed {
                let sent = alice.stats();
                let count =
                    |key: &str| sent[key].as_u64().unwrap_or(0) - before[key].as_u64().unwrap_or(0);
                format!(
                    "; alice: sent {} (the rest refused: 64 await an answer at most), acknowledged {}, not delivered {}",
                    count("sent"),
                    count("acknowledged"),
                    count("not_delivered")
                )
            } else {
                String::new()
            };
            println!(
                "direct, {label}, {DM_BLAST} at once, {limits} ({why}): bob received {} datagrams in {took:.2} s ({:.0}/s), showed {delivered}, dropped: {}{sender}",
                stats["received"],
                stats["received"].as_u64().unwrap_or(0) as f64 / took,
                if drops.is_empty() {
                    "none".to_string()
                } else {
                    drops.join(", ")
                }
            );
            drop(bob);
            alice.expect("bob's leaving", |e| e["event"] == "left");
        }
    }
}

/// The registration flood: 7 addresses (127.0.0.2–8), 8 connections each (the per-address
/// limit on connections not logged in yet), each registering a new name, then again.
const FLOOD_ADDRESSES: usize = 7;
const FLOOD_PER_ADDRESS: usize = 8;
/// Honest logins measured during the flood, one after another.
const HONEST_LOGINS: usize = 20;
/// Bounds on the flood, whatever happens: attempts per connection and wall time.
const FLOOD_MAX_ATTEMPTS: usize = 100_000;
const FLOOD_MAX_TIME: Duration = Duration::from_secs(900);
/// How long an honest login waits for its answer before it counts as given up (the client's own
/// deadline).
const CLIENT_GIVES_UP: Duration = Duration::from_secs(30);
/// A flood connection refused at connect (its address's earlier connection not yet closed on the
/// server's side) tries again after this pause, so that the benchmark measures registrations,
/// not 56 threads spinning on refusals.
const REFUSED_PAUSE: Duration = Duration::from_millis(10);

/// What one flood connection was answered.
#[derive(Default)]
struct FloodCounts {
    welcome: AtomicUsize,
    busy: AtomicUsize,
    other: AtomicUsize,
    /// Refused before `hello` (`too_many_connections`, `server_full`) or not connected.
    refused: AtomicUsize,
    /// Reset, or no answer within the client's deadline.
    unanswered: AtomicUsize,
}

/// How a registration attempt ended, when it got no answer.
enum NoAnswer {
    Refused,
    Unanswered,
}

/// One registration attempt from `local`: connect, read `hello`, register `name`, read the
/// answer.
fn register_once(
    local: &str,
    server: SocketAddr,
    name: &str,
) -> Result<serde_json::Value, NoAnswer> {
    let connect = || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
        let local: SocketAddr = format!("{local}:0").parse().ok()?;
        socket.bind(&local.into()).ok()?;
        socket.connect(&server.into()).ok()?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(CLIENT_GIVES_UP)).ok()?;
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        line.contains("\"hello\"").then_some((stream, reader))
    };
    let (mut stream, mut reader) = connect().ok_or(NoAnswer::Refused)?;
    let request = serde_json::json!({
        "type": "register", "username": name, "password": "flood-password", "p2p_port": 9,
    });
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(|_| NoAnswer::Unanswered)?;
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(n) if n > 0 => serde_json::from_str(&line).map_err(|_| NoAnswer::Unanswered),
        _ => Err(NoAnswer::Unanswered),
    }
}

/// A name no one has registered: the connection's number, a counter, and a few bits of the clock
/// (so that reruns on one users file do not collide).
fn flood_name(connection: usize, attempt: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("f{connection}x{attempt}y{:x}", nanos & 0xffff)
}

#[test]
#[ignore = "benchmark: run with `just bench`"]
fn login_during_registration_flood() {
    let dir = TempDir::new().unwrap();
    // The flood speaks the line protocol on raw sockets, so in plaintext; and without the hourly
    // registration quota, which would otherwise turn it away after 20 accounts per address: this
    // measures the hasher's queue under the flood, not the quota.
    let server = Server::start_with(
        &dir.path().join("users.json"),
        &[
            "--flood-burst",
            "100000",
            "--flood-rate",
            "100000",
            "--plaintext",
            "--register-per-ip-hour",
            "1000000",
        ],
    );
    let addr = server.addr;
    let honest = ChatClient::register(addr, "honest", "honest-password");
    drop(honest.finish());

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(FloodCounts::default());
    let flood_start = Instant::now();
    let flooders: Vec<_> = (0..FLOOD_ADDRESSES * FLOOD_PER_ADDRESS)
        .map(|c| {
            let (stop, counts) = (stop.clone(), counts.clone());
            let local = format!("127.0.0.{}", 2 + c / FLOOD_PER_ADDRESS);
            thread::spawn(move || {
                for attempt in 0..FLOOD_MAX_ATTEMPTS {
                    if stop.load(Ordering::Relaxed) || flood_start.elapsed() > FLOOD_MAX_TIME {
                        break;
                    }
                    let counter = match register_once(&local, addr, &flood_name(c, attempt)) {
                        Ok(answer) if answer["type"] == "welcome" => &counts.welcome,
                        Ok(answer) if answer["code"] == "busy" => &counts.busy,
                        Ok(_) => &counts.other,
                        Err(NoAnswer::Unanswered) => &counts.unanswered,
                        Err(NoAnswer::Refused) => {
                            thread::sleep(REFUSED_PAUSE);
                            &counts.refused
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Let the flood fill the hasher's queue before the first honest login.
    while counts.welcome.load(Ordering::Relaxed) + counts.busy.load(Ordering::Relaxed) < 4 {
        assert!(
            flood_start.elapsed() < FLOOD_MAX_TIME,
            "the flood never got an answer"
        );
        thread::sleep(REFUSED_PAUSE);
    }
    let mut logins = Vec::new();
    let mut given_up = 0;
    for _ in 0..HONEST_LOGINS {
        let mut conn = RawConnection::connect(addr);
        let start = Instant::now();
        match conn.try_authenticate(false, "honest", "honest-password") {
            Some(answer) if answer["type"] == "welcome" => logins.push(start.elapsed()),
            answer => {
                println!("honest login not welcomed: {answer:?}");
                given_up += 1;
                logins.push(start.elapsed());
            }
        }
        conn.send(&serde_json::json!({"type": "quit"}));
        drop(conn.read_until_closed());
    }
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.join().unwrap();
    }
    let flood_time = flood_start.elapsed();

    logins.sort();
    let n = logins.len();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p99 = logins[(n * 99 / 100).min(n - 1)];
    println!(
        "honest login during a registration flood ({} connections from {FLOOD_ADDRESSES} addresses) \
         n={n}  p50={:.0} ms  p99={:.0} ms  max={:.0} ms  not welcomed={given_up}",
        FLOOD_ADDRESSES * FLOOD_PER_ADDRESS,
        ms(logins[n / 2]),
        ms(p99),
        ms(logins[n - 1]),
    );
    let answered = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    println!(
        "flood over {:.1} s: {} registered, {} busy, {} other errors, {} unanswered, {} refused \
         at connect; server peak RSS {:.1} MiB",
        flood_time.as_secs_f64(),
        answered(&counts.welcome),
        answered(&counts.busy),
        answered(&counts.other),
        answered(&counts.unanswered),
        answered(&counts.refused),
        server.peak_rss_kib() as f64 / 1024.0
    );
}

#[test]
#[ignore = "benchmark: run with `just bench`"]
fn seal_and_open() {
    use p2pchat::sealed::{Header, Kind, SessionKey};

    let (alice, bob) = (SessionKey::generate(), SessionKey::generate());
    const PAIRS: u32 = 2_000;
    let start = Instant::now();
    for _ in 0..PAIRS {
        std::hint::black_box(alice.pair("alice", "bob", &bob.public_key()).unwrap());
    }
    let per_pair = start.elapsed() / PAIRS;
    // The proof of possession at login: the server's challenge per connection, the client's
    // proof, the server's check (issue 19).
    let start = Instant::now();
    for _ in 0..PAIRS {
        let challenge = p2pchat::sealed::KeyChallenge::generate();
        let proof = alice.prove(&challenge.public_key(), "alice").unwrap();
        challenge
            .check("alice", &alice.public_key(), Some(&proof))
            .unwrap();
    }
    println!(
        "proof of possession (challenge + proof + check): {:.1} µs per login",
        (start.elapsed() / PAIRS).as_secs_f64() * 1e6
    );
    let a = alice.pair("alice", "bob", &bob.public_key()).unwrap();
    let b = bob.pair("bob", "alice", &alice.public_key()).unwrap();
    println!(
        "pairwise keys (X25519 + HKDF-SHA256): {:.1} µs per peer",
        per_pair.as_secs_f64() * 1e6
    );
    for (label, size, rounds) in [
        ("short (100 B)", 100, 100_000u32),
        ("largest (65,000 B)", 65_000, 2_000),
    ] {
        let text = vec![b'x'; size];
        let start = Instant::now();
        for counter in 1..=u64::from(rounds) {
            let sealed = a.seal(Kind::Message, counter, &text);
            let header = Header::parse(&sealed).unwrap();
            assert_eq!(b.open(&header, &sealed).unwrap().len(), size);
        }
        let per = start.elapsed() / rounds;
        println!(
            "seal + open, {label}: {:.2} µs per message ({:.0} MB/s)",
            per.as_secs_f64() * 1e6,
            size as f64 / per.as_secs_f64() / 1e6
        );
    }
}

/// The bridge's subnet for `direct_messages_between_namespaces`, inside its own namespaces.
const NETNS_SUBNET: &str = "10.214.0";

/// `direct_messages`'s timed part with the server, alice and bob each in a network namespace of
/// its own (`common::netns`: a bridge and veth pairs, real interfaces, not loopback). Needs root
/// and `ip`; says why on stderr and does nothing otherwise.
#[test]
#[ignore = "benchmark: run with `just bench`"]
fn direct_messages_between_namespaces() {
    const TEST: &str = "direct_messages_between_namespaces";
    if let Some(why) = netns::missing_tools(&["ip"]) {
        netns::report_skipped(TEST, &why);
        return;
    }
    let lab = match netns::bridge_lab("dm", NETNS_SUBNET, 2, netns::Multicast::Default) {
        Ok(lab) => lab,
        Err(why) => {
            netns::report_skipped(TEST, &format!("cannot build the namespaces: {why}"));
            return;
        }
    };
    for (label, plaintext) in [("sealed (default)", false), ("clear (--plaintext)", true)] {
        let dir = TempDir::new().unwrap();
        let users = dir.path().join("users.json");
        let bind = format!("{}:0", lab.ip(0));
        let mut server_args = vec!["--bind", &bind, "--users", users.to_str().unwrap()];
        server_args.extend(["--scrypt-log-n", TEST_LOG_N]);
        if plaintext {
            server_args.push("--plaintext");
        }
        let server = netns::InNamespace::spawn(lab.ns(0), &server_bin(), &server_args);
        let listening = server.next_line("the listening line");
        let addr = listening
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{listening:?}"))
            .to_string();
        let trust = if plaintext {
            vec!["--plaintext".to_string()]
        } else {
            let printed = server.next_line("the fingerprint line");
            let fingerprint = printed
                .strip_prefix("fingerprint ")
                .unwrap_or_else(|| panic!("{printed:?}"));
            vec!["--trust".to_string(), fingerprint.to_string()]
        };
        let client = |ns: &str, name: &str| {
            let mut args = vec!["--server", addr.as_str(), "--json"];
            args.extend(trust.iter().map(String::as_str));
            args.extend(DM_UNLIMITED);
            let mut c = netns::InNamespace::spawn(ns, &client_bin(), &args);
            for answer in ["register", name, &format!("{name}-password")] {
                c.send(answer);
            }
            c.expect("welcome", &mut Vec::new(), |e| e["event"] == "welcome");
            c
        };
        let mut alice = client(lab.ns(1), "alice");
        let bob = client(lab.ns(2), "bob");
        alice.expect("bob joining", &mut Vec::new(), |e| {
            e["event"] == "joined" && e["peer"]["username"] == "bob"
        });
        let mut one_way = Vec::with_capacity(DM_TIMED);
        for i in 0..DM_TIMED {
            let text = format!("one-way {i}");
            let start = Instant::now();
            alice.send(&format!("/msg bob {text}"));
            bob.expect("the direct message", &mut Vec::new(), |e| {
                e["event"] == "direct" && e["text"] == text.as_str()
            });
            one_way.push(start.elapsed());
            if !plaintext {
                alice.expect("the delivery report", &mut Vec::new(), |e| {
                    e["event"] == "direct_delivered"
                });
            }
        }
        summary(
            &format!("namespaces, direct, {label}: one way"),
            &mut one_way,
        );
        if !plaintext {
            let mut round_trip = Vec::with_capacity(DM_TIMED);
            for i in 0..DM_TIMED {
                let text = format!("round-trip {i}");
                let start = Instant::now();
                alice.send(&format!("/msg bob {text}"));
                alice.expect("the delivery report", &mut Vec::new(), |e| {
                    e["event"] == "direct_delivered"
                });
                round_trip.push(start.elapsed());
                bob.expect("the direct message", &mut Vec::new(), |e| {
                    e["event"] == "direct" && e["text"] == text.as_str()
                });
            }
            summary(
                &format!("namespaces, direct, {label}: round trip"),
                &mut round_trip,
            );
        }
    }
}

#[test]
#[ignore = "benchmark: run with `just bench`"]
fn identity_binding_and_safety_number() {
    use p2pchat::identity::{IdentityKey, SafetyNumber};
    use p2pchat::sealed::SessionKey;

    // What identities add (issue 21 §1): a signature per login, a verification per peer entry
    // (at the server once, at every client for every entry), and a safety number per /verify.
    let alice = IdentityKey::generate().unwrap();
    let bob = IdentityKey::generate().unwrap();
    let session = SessionKey::generate().public_key();
    const ROUNDS: u32 = 2_000;
    let start = Instant::now();
    for _ in 0..ROUNDS {
        std::hint::black_box(alice.bind("alice", &session));
    }
    let per_bind = start.elapsed() / ROUNDS;
    let binding = alice.bind("alice", &session);
    let start = Instant::now();
    for _ in 0..ROUNDS {
        binding.verify(&alice.public(), "alice", &session).unwrap();
    }
    let per_verify = start.elapsed() / ROUNDS;
    const NUMBERS: u32 = 100;
    let start = Instant::now();
    for _ in 0..NUMBERS {
        std::hint::black_box(SafetyNumber::new(
            "alice",
            &alice.public(),
            "bob",
            &bob.public(),
        ));
    }
    let per_number = start.elapsed() / NUMBERS;
    println!(
        "identity binding: sign {:.1} µs per login, verify {:.1} µs per peer entry; safety number \
         (2 × 5,200 SHA-512): {:.2} ms",
        per_bind.as_secs_f64() * 1e6,
        per_verify.as_secs_f64() * 1e6,
        per_number.as_secs_f64() * 1e3
    );
}

#[test]
#[ignore = "benchmark: run with `just bench`"]
fn file_between_two_clients() {
    const SIZE: u64 = 1 << 30;
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let downloads = dir.path().join("downloads");
    let flags = ["--download-dir", downloads.to_str().unwrap()];
    let mut alice = ChatClient::register_with_flags(server.addr, "alice", "correct horse", &flags);
    let mut bob = ChatClient::register_with_flags(server.addr, "bob", "correct horse", &flags);
    alice.expect_joined("bob");
    // A file of varied bytes (not zeros: nothing along the way may take a shortcut).
    let path = dir.path().join("big.bin");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut block = vec![0u8; 1 << 20];
        for (i, chunk) in (0..SIZE >> 20).enumerate() {
            for (j, byte) in block.iter_mut().enumerate() {
                *byte = (i as u64 * 31 + chunk * 7 + j as u64) as u8;
            }
            file.write_all(&block).unwrap();
        }
    }
    alice.send(&format!("/send bob {}", path.display()));
    bob.expect("the offer", |e| e["event"] == "file_offer");
    let start = Instant::now();
    bob.send("/accept alice");
    // Each progress report (every 3 s) restarts the harness's deadline: a slow machine is
    // measured, not failed.
    let done = loop {
        let event = bob.expect("file_progress or file_done", |e| {
            e["event"] == "file_progress" || e["event"] == "file_done"
        });
        if event["event"] == "file_done" {
            break event;
        }
    };
    let elapsed = start.elapsed();
    assert_eq!(done["size"], SIZE);
    alice.expect("file_done (out)", |e| e["event"] == "file_done");
    let rate = SIZE as f64 / (1 << 20) as f64 / elapsed.as_secs_f64();
    println!(
        "file_between_two_clients: {} MiB in {:.2} s from /accept to file_done: {rate:.0} MiB/s; \
         peak RSS receiver {} KiB, sender {} KiB",
        SIZE >> 20,
        elapsed.as_secs_f64(),
        bob.peak_rss_kib(),
        alice.peak_rss_kib()
    );
}
