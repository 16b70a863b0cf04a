//! Benchmarks (not tests: they measure, and assert only what a broken build would miss by far).
//! Run with `just bench` (release build, default scrypt cost ln=17). Ignored by `cargo test`.
//!
//! - `login_flood`: 50 logins at once at the default cost while two clients chat: the room's
//!   message latency before and during the flood, each login's time, and the server's peak RSS
//!   against the budget cores × 128 MiB + 64 MiB.
//! - `login_timing`: unknown user vs wrong password, the same work (the dummy hash).
//! - `seal_and_open`: sealing and opening one direct message (ChaCha20-Poly1305), short and at
//!   the largest size, and deriving one peer's pairwise keys (X25519 + HKDF-SHA256).

mod common;

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
                assert_eq!(answer["type"], "welcome", "{answer}");
                (start.elapsed(), conn)
            })
        })
        .collect();
    // Probe while the logins are being hashed.
    let mut during = probe_latency(&mut alice, &mut bob, 1000, |_| {
        logins.iter().all(|l| l.is_finished())
    });
    let mut login_times = Vec::new();
    let mut connections = Vec::new();
    for login in logins {
        let (took, conn) = login.join().unwrap();
        login_times.push(took);
        connections.push(conn);
    }
    let flood = flood_start.elapsed();
    summary("room latency, during 50 logins", &mut during);
    summary("login (connect to welcome)", &mut login_times);
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
