//! The load generator (`cargo bench --bench load -- [WORKLOAD...] [--flags]`, or `just load`):
//! p2pchat's server from target/release against many simulated clients driven by one epoll
//! thread, and, when `ngircd` is installed, the same workloads against a private ngircd for a
//! side-by-side measure. A bench target, not a binary: it is built only for `cargo bench` (and
//! smoke-tested by `cargo test`), never installed, and finds the server through Cargo's
//! `CARGO_BIN_EXE_p2pchat-server`, which `cargo bench` builds in release first.
//!
//! Workloads (docs/performance.md has the figures and the commands):
//! - `burst`: a room of `--clients`; `--senders` of them send `--messages` each at once.
//! - `paced`: the same room; `--rate` messages per second in all for `--seconds`.
//! - `idle`: `--idle-clients` log in, `--in-flight` at a time, then stay idle.
//! - `registrations`: `--registrations` registrations one after another, with each of
//!   `--accounts` accounts already on file, while logins run beside them.
//! - `default-burst`: every default flag, a full room (64) where each client sends a whole flood
//!   burst (10 lines) at once: how many readers the server disconnects.
//! - `handshakes`: a storm of `--handshakes` new connections, `--handshakes-in-flight` at a time,
//!   each closed once the server's first line arrived (after the TLS handshake with `--tls`):
//!   connections per second, no login.
//! - `quiet-room`: a room of `--quiet-room-clients` where one line goes out every
//!   `--quiet-room-interval-ms`: the latency of a room that is not busy (`paced` is the busy one).
//!
//! Every workload runs in plaintext (the default), over TLS (`--tls`: p2pchat's default; ngircd's
//! `[SSL]` port), or both one after the other (`--both`, as `just bench` runs it).
//!
//! A room line's latency is the server's: from just before the sender's write to the kernel's
//! receive timestamp of its bytes in the receiver's socket; the time until this one thread read
//! it is printed beside it ("read by the generator"). Paced lines leave on schedule even while a
//! wave is being read ("sends behind schedule").
//!
//! Correct before fast: every expected line is counted per receiver and checked in order per
//! sender; losses, disorder and disconnects are printed with the speed. Every phase stops by
//! itself: when done, after `--quiet` seconds without a byte, or at `--limit` seconds.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke test: tiny sizes,
//! p2pchat only, plaintext and TLS, exit 1 on any loss.

mod dialect;
mod histogram;
mod reactor;
mod target;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tempfile::TempDir;

use dialect::Dialect;
use reactor::Reactor;
use target::{ProcSample, Target, BENCH_LOG_N};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("{0} did not start listening; its log:\n{1}")]
    NotListening(&'static str, String),
    #[error("the seed registration failed: {0}")]
    Seed(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

impl LoadError {
    fn io(what: &'static str) -> impl FnOnce(io::Error) -> LoadError {
        move |source| LoadError::Io { what, source }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    Burst,
    Paced,
    Idle,
    Registrations,
    DefaultBurst,
    Handshakes,
    QuietRoom,
}

/// p2pchat's load generator: fan-out, idle clients, registrations; side by side with ngircd.
#[derive(Parser, Debug)]
struct Args {
    /// Workloads to run (all when none is named).
    #[arg(value_enum)]
    workloads: Vec<Workload>,
    /// Clients in the room for `burst` and `paced`.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Clients that send in `burst` and `paced`.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages each sender sends at once in `burst`.
    #[arg(long, default_value_t = 200)]
    messages: u32,
    /// Messages per second, all senders together, in `paced`.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Seconds of sending in `paced`.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Clients that log in for `idle`.
    #[arg(long, default_value_t = 10_000)]
    idle_clients: usize,
    /// Logins (connect to welcome) in flight at once while a room fills.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Logins in flight while the `burst`/`paced` room fills (not measured).
    #[arg(long, default_value_t = 64)]
    fill_in_flight: usize,
    /// Seconds the `idle` clients stay idle before memory is read again.
    #[arg(long, default_value_t = 2)]
    idle_seconds: u64,
    /// Accounts on file for `registrations`, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 100_000])]
    accounts: Vec<usize>,
    /// Registrations per run of `registrations`.
    #[arg(long, default_value_t = 50)]
    registrations: usize,
    /// Seconds any one phase may take; it stops there and reports what it got.
    #[arg(long, default_value_t = 60)]
    limit: u64,
    /// Seconds without a byte after which a phase with lines missing stops waiting for them.
    #[arg(long, default_value_t = 2)]
    quiet: u64,
    /// New connections in the `handshakes` storm.
    #[arg(long, default_value_t = 5000)]
    handshakes: usize,
    /// Connections of the `handshakes` storm in flight at once (connect to first line).
    #[arg(long, default_value_t = 64)]
    handshakes_in_flight: usize,
    /// Clients in the `quiet-room`.
    #[arg(long, default_value_t = 5)]
    quiet_room_clients: usize,
    /// Lines one client sends in the `quiet-room`.
    #[arg(long, default_value_t = 20)]
    quiet_room_lines: u32,
    /// Milliseconds between two lines in the `quiet-room`.
    #[arg(long, default_value_t = 500)]
    quiet_room_interval_ms: u64,
    /// Over TLS: p2pchat's default (its key and certificate made for the run and pinned by the
    /// clients), and ngircd's `[SSL]` port.
    #[arg(long, conflicts_with = "both")]
    tls: bool,
    /// Every workload in plaintext, then every workload over TLS.
    #[arg(long)]
    both: bool,
    /// Run p2pchat alone even when ngircd is installed.
    #[arg(long)]
    no_ngircd: bool,
    /// The p2pchat server binary.
    #[arg(long, default_value = env!("CARGO_BIN_EXE_p2pchat-server"))]
    server: PathBuf,
    /// The ngircd binary (found on PATH by default).
    #[arg(long, default_value = "ngircd")]
    ngircd: PathBuf,
    /// Passed by `cargo bench`: measure. Without it (`cargo test`) the run is a smoke test.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if !args.bench {
        smoke_sizes(&mut args);
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("load: lines were lost or clients dropped (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sizes for the smoke test that `cargo test --all-targets` runs (a debug server): the generator
/// itself is checked, not the server's speed.
fn smoke_sizes(args: &mut Args) {
    histogram::self_check();
    dialect::self_check();
    reactor::self_check();
    args.workloads = vec![
        Workload::Burst,
        Workload::Paced,
        Workload::Idle,
        Workload::Registrations,
        Workload::Handshakes,
        Workload::QuietRoom,
    ];
    args.both = true;
    args.tls = false;
    args.handshakes = 30;
    args.handshakes_in_flight = 4;
    args.quiet_room_clients = 3;
    args.quiet_room_lines = 3;
    args.quiet_room_interval_ms = 20;
    args.clients = 20;
    args.senders = 3;
    args.messages = 20;
    args.rate = 200;
    args.seconds = 1;
    args.idle_clients = 40;
    args.idle_seconds = 0;
    args.accounts = vec![100];
    args.registrations = 5;
    args.no_ngircd = true;
    println!("load: smoke test (cargo bench --bench load measures)");
}

/// Runs the chosen workloads; false when a workload that must be lossless lost lines.
fn run(args: &Args) -> Result<bool, LoadError> {
    let ngircd = if args.no_ngircd {
        println!("ngircd: not run (--no-ngircd)");
        None
    } else if which(&args.ngircd) {
        println!("ngircd: {}", args.ngircd.display());
        Some(args.ngircd.clone())
    } else {
        println!(
            "ngircd: not installed; p2pchat alone (`just bench-deps`: apt-get install ngircd)"
        );
        None
    };
    // An ngircd built without TLS cannot open an [SSL] port: p2pchat alone over TLS then.
    let ngircd_tls = ngircd.clone().filter(|bin| {
        let with_ssl = target::ngircd_has_tls(bin);
        if !with_ssl && (args.tls || args.both) {
            println!(
                "ngircd: built without TLS (no +SSL in ngircd --version); p2pchat alone over TLS"
            );
        }
        with_ssl
    });
    let (load1, _) = load_average();
    println!(
        "server: {}; load average at start {load1:.2} on {} cores",
        args.server.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let hash = target::bench_hash(&args.server)?;
    let modes: &[bool] = if args.both {
        &[false, true]
    } else if args.tls {
        &[true]
    } else {
        &[false]
    };
    let mut clean = true;
    for &tls in modes {
        let ngircd = if tls { &ngircd_tls } else { &ngircd };
        clean &= run_mode(args, &hash, ngircd.as_deref(), tls)?;
    }
    let (load1, _) = load_average();
    println!("load average at end {load1:.2}");
    Ok(clean)
}

/// Every chosen workload in one mode (plaintext, or TLS); false when one lost lines.
fn run_mode(args: &Args, hash: &str, ngircd: Option<&Path>, tls: bool) -> Result<bool, LoadError> {
    let all = args.workloads.is_empty();
    let wants = |w| all || args.workloads.contains(&w);
    let mode = if tls { "TLS" } else { "plaintext" };
    let (load1, _) = load_average();
    println!("\n######## {mode}: load average {load1:.2} ########");
    let hash = hash.to_owned();
    let targets = |clients| targets(args, &hash, ngircd, clients, tls);
    let mut clean = true;

    if wants(Workload::Burst) || wants(Workload::Paced) {
        let mut columns = Vec::new();
        for server in targets(args.clients)? {
            columns.push(room_workloads(args, server, &wants)?);
        }
        for (i, title) in [
            format!(
                "room fill: {} clients, {} logins in flight",
                args.clients, args.fill_in_flight
            ),
            format!(
                "burst: {} clients, {} senders x {} messages at once",
                args.clients, args.senders, args.messages
            ),
            format!(
                "paced: {} clients, {} msg/s from {} senders for {} s",
                args.clients, args.rate, args.senders, args.seconds
            ),
        ]
        .iter()
        .enumerate()
        {
            let column: Vec<_> = columns.iter().filter_map(|c| c[i].clone()).collect();
            if !column.is_empty() {
                clean &= print_table(&format!("{title} ({mode})"), &column);
            }
        }
    }
    if wants(Workload::Idle) {
        let mut column = Vec::new();
        for server in targets(args.idle_clients)? {
            column.push(idle_workload(args, server)?);
        }
        clean &= print_table(
            &format!(
                "idle: {} clients log in, {} in flight, then idle {} s ({mode})",
                args.idle_clients, args.in_flight, args.idle_seconds
            ),
            &column,
        );
    }
    if wants(Workload::Handshakes) {
        let mut column = Vec::new();
        // Limits raised for all of them: a connection the generator closed may not be reaped
        // yet when the next opens.
        for server in targets(args.handshakes)? {
            column.push(handshakes_workload(args, server)?);
        }
        clean &= print_table(
            &format!(
                "handshakes: {} new connections, {} in flight, each closed at the server's first line ({mode})",
                args.handshakes, args.handshakes_in_flight
            ),
            &column,
        );
    }
    if wants(Workload::QuietRoom) {
        let mut column = Vec::new();
        for server in targets(args.quiet_room_clients)? {
            column.push(quiet_room_workload(args, server)?);
        }
        clean &= print_table(
            &format!(
                "quiet room: {} clients, one line every {} ms, {} lines ({mode})",
                args.quiet_room_clients, args.quiet_room_interval_ms, args.quiet_room_lines
            ),
            &column,
        );
    }
    if wants(Workload::Registrations) {
        for &accounts in &args.accounts {
            let measure = registrations_workload(args, &hash, accounts, tls)?;
            clean &= print_table(
                &format!(
                    "registrations: {} one after another, {accounts} accounts on file, logins beside them ({mode})",
                    args.registrations
                ),
                &[measure],
            );
        }
    }
    if wants(Workload::DefaultBurst) {
        let measure = default_burst(args, &hash, tls)?;
        // The disconnects are the finding (issue 13), not the generator's failure.
        print_table(
            &format!("default-burst: every default flag, a full room each sending a whole flood burst ({mode})"),
            &[measure],
        );
    }
    Ok(clean)
}

fn which(bin: &Path) -> bool {
    if bin.components().count() > 1 {
        return bin.exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(bin).is_file()))
}

fn load_average() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    (fields.next().unwrap_or(0.0), fields.next().unwrap_or(0.0))
}

/// The flags that raise p2pchat's limits for a run with `clients` clients (`--plaintext` unless
/// over TLS; TLS's own timeouts stay at their defaults: a handshake in time is part of the load).
fn raised_limits(clients: usize, tls: bool) -> Vec<(&'static str, String)> {
    let many = "1000000".to_string();
    let mut flags = mode_flags(tls);
    flags.extend([
        ("--scrypt-log-n", BENCH_LOG_N.into()),
        ("--max-clients", (clients + 64).to_string()),
        ("--max-pending-per-ip", "1000".into()),
        ("--max-per-ip", "1000".into()),
        ("--flood-burst", many.clone()),
        ("--flood-rate", many.clone()),
        ("--flood-strikes", many.clone()),
        ("--send-queue-lines", many),
        ("--send-queue-bytes", (1u64 << 30).to_string()),
        ("--auth-timeout", "3600".into()),
        ("--ping-interval", "3600".into()),
    ]);
    flags
}

/// `--plaintext`, or nothing for TLS (the server's default).
fn mode_flags(tls: bool) -> Vec<(&'static str, String)> {
    if tls {
        Vec::new()
    } else {
        vec![("--plaintext", String::new())]
    }
}

/// p2pchat with accounts u0..u{clients} on file and its limits raised, then ngircd if asked.
fn targets(
    args: &Args,
    hash: &str,
    ngircd: Option<&Path>,
    clients: usize,
    tls: bool,
) -> Result<Vec<Target>, LoadError> {
    let mut list = vec![p2pchat_with_accounts(
        args,
        hash,
        clients,
        &raised_limits(clients, tls),
        tls,
    )?];
    if let Some(bin) = ngircd {
        list.push(Target::ngircd(bin, tls)?);
    }
    Ok(list)
}

fn p2pchat_with_accounts(
    args: &Args,
    hash: &str,
    accounts: usize,
    flags: &[(&str, String)],
    tls: bool,
) -> Result<Target, LoadError> {
    let dir = TempDir::new().map_err(LoadError::io("make a temporary folder"))?;
    target::write_users(
        &dir.path().join("users.json"),
        (0..accounts).map(|i| format!("u{i}")),
        hash,
    )
    .map_err(LoadError::io("write the users file"))?;
    Target::p2pchat(&args.server, dir, flags, tls)
}

/// One server's figures for one workload: a column of a table.
#[derive(Clone, Debug, Default)]
struct Measure {
    server: &'static str,
    /// Lines the workload expects (deliveries, or logins), and those that arrived.
    expected: u64,
    arrived: u64,
    out_of_order: u64,
    malformed: u64,
    /// Deliveries the kernel gave no receive timestamp for, so their latency is unknown.
    unstamped: u64,
    /// First send (or connect) to the last line that counts.
    wall: Duration,
    server_cpu: f64,
    generator_cpu: f64,
    /// Microseconds.
    p50: u64,
    p99: u64,
    max_latency: u64,
    peak_rss_kib: u64,
    rss_kib: u64,
    rss_per_client_kib: Option<f64>,
    bytes_from_server: u64,
    disconnected: u64,
    send_queue_exceeded: Option<usize>,
    rate_limited: u64,
    errors: String,
    /// Extra rows particular to a workload.
    extra: Vec<(String, String)>,
    stopped: Option<&'static str>,
    /// Whether the clients spoke TLS, and what the first of them negotiated (version, suite):
    /// a TLS run in which no handshake completed measured nothing.
    tls: bool,
    negotiated: Option<String>,
    /// Logins or registrations that did not finish within `--limit`: a figure, not a loss.
    shortfall_ok: bool,
}

impl Measure {
    fn lossless(&self) -> bool {
        (self.arrived == self.expected || self.shortfall_ok)
            && self.out_of_order == 0
            && self.malformed == 0
            && self.unstamped == 0
            && self.disconnected == 0
            && (!self.tls || self.negotiated.is_some())
    }
}

/// What one phase started from.
struct Mark {
    at: Instant,
    server: ProcSample,
    generator_cpu: f64,
    bytes: u64,
    closed: u64,
}

fn mark(reactor: &Reactor, server: &Target) -> Mark {
    Mark {
        at: Instant::now(),
        server: server.sample(),
        generator_cpu: target::own_cpu(),
        bytes: reactor.counters.bytes_in,
        closed: reactor.counters.closed_by_server,
    }
}

/// The common figures of a phase that began at `from`.
fn measure(
    reactor: &Reactor,
    server: &Target,
    from: &Mark,
    latency: &histogram::Histogram,
) -> Measure {
    let now = server.sample();
    Measure {
        server: server.dialect.name(),
        server_cpu: now.cpu - from.server.cpu,
        generator_cpu: target::own_cpu() - from.generator_cpu,
        p50: latency.quantile(0.5),
        p99: latency.quantile(0.99),
        max_latency: latency.quantile(1.0),
        peak_rss_kib: now.peak_rss_kib,
        rss_kib: now.rss_kib,
        bytes_from_server: reactor.counters.bytes_in - from.bytes,
        disconnected: reactor.counters.closed_by_server - from.closed,
        rate_limited: reactor.counters.rate_limited,
        errors: reactor
            .counters
            .errors
            .iter()
            .map(|(code, n)| format!("{code} x{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        send_queue_exceeded: (server.dialect == Dialect::P2pchat)
            .then(|| server.log_count("send queue exceeded")),
        tls: reactor.is_tls(),
        negotiated: reactor.counters.negotiated.clone(),
        ..Measure::default()
    }
}

/// Why a phase stopped when it reached `--limit`.
const AT_LIMIT: &str = "stopped at --limit";
/// Width of a table's value columns.
const COLUMN: usize = 20;

/// How a wait ended.
fn wait(
    reactor: &mut Reactor,
    args: &Args,
    done: impl Fn(&Reactor) -> bool,
) -> io::Result<Option<&'static str>> {
    let deadline = Instant::now() + Duration::from_secs(args.limit);
    let quiet = Duration::from_secs(args.quiet);
    reactor.last_progress = Instant::now();
    loop {
        if done(reactor) {
            return Ok(None);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Some(AT_LIMIT));
        }
        if now.duration_since(reactor.last_progress) >= quiet {
            return Ok(Some("stopped: nothing arrived for --quiet seconds"));
        }
        reactor.poll(deadline.min(reactor.last_progress + quiet))?;
    }
}

/// Fills the room with `clients` logins (u0, u1, ...), `in_flight` at a time, and waits until
/// every `joined` owed has arrived. Measures the login storm.
fn fill_room(
    reactor: &mut Reactor,
    server: &Target,
    args: &Args,
    clients: usize,
    in_flight: usize,
) -> Result<Measure, LoadError> {
    let before = mark(reactor, server);
    let deadline = before.at + Duration::from_secs(args.limit);
    let mut next = 0;
    let mut all_welcomed = None;
    let stopped = loop {
        while next < clients && (reactor.counters.entering as usize) < in_flight {
            reactor
                .connect(format!("u{next}"), false)
                .map_err(LoadError::io("connect a client"))?;
            next += 1;
        }
        let c = &reactor.counters;
        if all_welcomed.is_none() && c.welcomed as usize == clients {
            all_welcomed = Some(before.at.elapsed());
        }
        if all_welcomed.is_some() && c.joined_seen >= c.joined_expected {
            break None;
        }
        if next == clients && c.entering == 0 && (c.welcomed as usize) < clients {
            break Some("stopped: some logins failed");
        }
        if Instant::now() >= deadline {
            break Some(AT_LIMIT);
        }
        reactor
            .poll(deadline.min(Instant::now() + Duration::from_millis(100)))
            .map_err(LoadError::io("wait for the room"))?;
    };
    let latency = std::mem::replace(&mut reactor.entry_latency, histogram::Histogram::new());
    let mut m = measure(reactor, server, &before, &latency);
    m.expected = clients as u64;
    m.arrived = reactor.counters.welcomed;
    m.wall = before.at.elapsed();
    m.stopped = stopped;
    m.shortfall_ok = stopped == Some(AT_LIMIT);
    m.extra.push((
        "all welcomed after (s)".into(),
        all_welcomed.map_or("never".into(), |d| format!("{:.2}", d.as_secs_f64())),
    ));
    m.extra.push((
        "joined lines owed / arrived".into(),
        format!(
            "{} / {}",
            reactor.counters.joined_expected, reactor.counters.joined_seen
        ),
    ));
    m.rss_per_client_kib =
        Some((m.rss_kib.saturating_sub(before.server.rss_kib)) as f64 / clients.max(1) as f64);
    Ok(m)
}

/// The room, then `burst` and `paced` on it: [fill, burst, paced].
fn room_workloads(
    args: &Args,
    server: Target,
    wants: &dyn Fn(Workload) -> bool,
) -> Result<Vec<Option<Measure>>, LoadError> {
    let n = args.clients;
    let mut reactor = Reactor::new(server.dialect, server.addr, server.tls.clone(), n as u64)
        .map_err(LoadError::io("set up epoll"))?;
    let fill = fill_room(&mut reactor, &server, args, n, args.fill_in_flight)?;
    if fill.arrived as usize != n {
        return Ok(vec![Some(fill), None, None]);
    }
    let senders: Vec<usize> = (0..args.senders.min(n))
        .map(|s| s * n / args.senders.min(n))
        .collect();
    let burst = if wants(Workload::Burst) {
        let counts = vec![args.messages; senders.len()];
        Some(fan_out(
            &mut reactor,
            &server,
            args,
            &senders,
            &counts,
            None,
        )?)
    } else {
        None
    };
    let paced = if wants(Workload::Paced) {
        let total = args.rate as u64 * args.seconds;
        let counts: Vec<u32> = (0..senders.len() as u64)
            .map(|s| {
                (total / senders.len() as u64 + u64::from(s < total % senders.len() as u64)) as u32
            })
            .collect();
        Some(fan_out(
            &mut reactor,
            &server,
            args,
            &senders,
            &counts,
            Some(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64)),
        )?)
    } else {
        None
    };
    Ok(vec![Some(fill), burst, paced])
}

/// Sends `counts[s]` messages from each sender `senders[s]` (at once, or one every `interval`,
/// round-robin) and waits for every delivery. Its latency is the server's: from just before the
/// sender's write to the bytes in the receiver's socket ([`Reactor::latency`]); the time until
/// the generator read them is an extra row.
fn fan_out(
    reactor: &mut Reactor,
    server: &Target,
    args: &Args,
    senders: &[usize],
    counts: &[u32],
    interval: Option<Duration>,
) -> Result<Measure, LoadError> {
    reactor.start_measuring(senders.len());
    let in_room: Vec<usize> = (0..reactor.clients.len())
        .filter(|&i| reactor.clients[i].phase == reactor::Phase::InRoom)
        .collect();
    let sent: u64 = counts.iter().map(|&c| c as u64).sum();
    let expected: u64 = in_room
        .iter()
        .map(|i| {
            sent - senders
                .iter()
                .position(|s| s == i)
                .map_or(0, |s| counts[s] as u64)
        })
        .sum();
    let before = mark(reactor, server);
    let io = |what| move |e| LoadError::Io { what, source: e };
    // How late each paced send left against its schedule: the generator sends nothing while it
    // reads a wave, so a slow generator sends in bursts (each line timed from its real send, so
    // the lag is not in the latency; it changes the load the server sees, which this shows).
    let mut send_lag = interval.map(|_| histogram::Histogram::new());
    match interval {
        None => {
            let most = counts.iter().copied().max().unwrap_or(0);
            for seq in 1..=most {
                for (s, &client) in senders.iter().enumerate() {
                    if seq <= counts[s] {
                        reactor.say(client, s, seq);
                    }
                }
            }
        }
        Some(interval) => {
            let mut seq = vec![0u32; senders.len()];
            for j in 0..sent {
                let due = before.at + interval.mul_f64(j as f64);
                while Instant::now() < due {
                    reactor.poll(due).map_err(io("pace the senders"))?;
                }
                if let Some(lag) = send_lag.as_mut() {
                    lag.record(due.elapsed().as_micros() as u64);
                }
                let s = j as usize % senders.len();
                seq[s] += 1;
                reactor.say(senders[s], s, seq[s]);
            }
        }
    }
    // Done when every line arrived, or when nobody is left to receive one.
    let stopped = wait(reactor, args, |r| {
        r.counters.deliveries >= expected || r.counters.dropped_in_room == r.counters.welcomed
    })
    .map_err(io("wait for the deliveries"))?;
    let latency = std::mem::replace(&mut reactor.latency, histogram::Histogram::new());
    let read = std::mem::replace(&mut reactor.read_latency, histogram::Histogram::new());
    let mut m = measure(reactor, server, &before, &latency);
    m.extra.push((
        "latency p50 / p99, read by the generator (ms)".into(),
        read.p50_p99_ms(),
    ));
    if let Some(lag) = send_lag {
        m.extra.push((
            "sends behind schedule p50 / p99 (ms)".into(),
            lag.p50_p99_ms(),
        ));
    }
    m.unstamped = reactor.counters.unstamped;
    m.extra.push((
        "deliveries without a valid receive timestamp".into(),
        m.unstamped.to_string(),
    ));
    m.expected = expected;
    m.arrived = reactor.counters.deliveries;
    m.out_of_order = reactor.counters.out_of_order;
    m.malformed = reactor.counters.malformed;
    m.wall = reactor
        .last_delivery
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(before.at));
    m.stopped = stopped;
    let short: usize = in_room
        .iter()
        .filter(|&&i| {
            let own = senders
                .iter()
                .position(|s| *s == i)
                .map_or(0, |s| counts[s] as u64);
            reactor.clients[i].received < sent - own
        })
        .count();
    m.extra
        .push(("receivers missing lines".into(), short.to_string()));
    Ok(m)
}

fn idle_workload(args: &Args, server: Target) -> Result<Measure, LoadError> {
    let n = args.idle_clients;
    let mut reactor = Reactor::new(server.dialect, server.addr, server.tls.clone(), n as u64)
        .map_err(LoadError::io("set up epoll"))?;
    let start_rss = server.sample().rss_kib;
    let mut m = fill_room(&mut reactor, &server, args, n, args.in_flight)?;
    let cpu_before_idle = server.sample().cpu;
    let idle_until = Instant::now() + Duration::from_secs(args.idle_seconds);
    while Instant::now() < idle_until {
        reactor
            .poll(idle_until)
            .map_err(LoadError::io("stay idle"))?;
    }
    let after = server.sample();
    m.rss_kib = after.rss_kib;
    m.peak_rss_kib = after.peak_rss_kib;
    m.rss_per_client_kib =
        Some(after.rss_kib.saturating_sub(start_rss) as f64 / m.arrived.max(1) as f64);
    m.extra.push((
        format!("server CPU while idle {} s (s)", args.idle_seconds),
        format!("{:.2}", after.cpu - cpu_before_idle),
    ));
    m.disconnected = reactor.counters.closed_by_server;
    Ok(m)
}

/// A storm of new connections, `--handshakes-in-flight` at a time, none logging in: each is
/// closed by the generator once the server's first line arrived (p2pchat's `hello`; IRC's answer
/// to a `PING`), which over TLS is after the whole handshake. Measures connections per second
/// and the server's CPU for each.
fn handshakes_workload(args: &Args, server: Target) -> Result<Measure, LoadError> {
    let n = args.handshakes;
    let mut reactor = Reactor::new(server.dialect, server.addr, server.tls.clone(), 0)
        .map_err(LoadError::io("set up epoll"))?;
    let before = mark(&reactor, &server);
    let deadline = before.at + Duration::from_secs(args.limit);
    let mut latency = histogram::Histogram::new();
    let mut open: Vec<usize> = Vec::with_capacity(args.handshakes_in_flight);
    let (mut started, mut done, mut failed) = (0, 0u64, 0u64);
    let mut last_done = before.at;
    let stopped = loop {
        while started < n && open.len() < args.handshakes_in_flight.max(1) {
            open.push(
                reactor
                    .probe(format!("h{started}"))
                    .map_err(LoadError::io("connect a probe"))?,
            );
            started += 1;
        }
        let mut k = 0;
        while k < open.len() {
            let i = open[k];
            let client = &reactor.clients[i];
            if let Some(greeted) = client.greeted_at {
                latency.record(greeted.duration_since(client.connected_at).as_micros() as u64);
                last_done = greeted;
                done += 1;
                reactor.close(i);
                open.swap_remove(k);
            } else if client.phase == reactor::Phase::Closed {
                failed += 1;
                open.swap_remove(k);
            } else {
                k += 1;
            }
        }
        if started == n && open.is_empty() {
            break None;
        }
        if Instant::now() >= deadline {
            break Some(AT_LIMIT);
        }
        reactor
            .poll(deadline.min(Instant::now() + Duration::from_millis(100)))
            .map_err(LoadError::io("wait for the handshakes"))?;
    };
    let mut m = measure(&reactor, &server, &before, &latency);
    m.expected = n as u64;
    m.arrived = done;
    m.wall = last_done.saturating_duration_since(before.at);
    m.stopped = stopped;
    m.disconnected = failed;
    Ok(m)
}

/// A room of `--quiet-room-clients` where the first sends one line every
/// `--quiet-room-interval-ms`: the latency of a room that is not busy.
fn quiet_room_workload(args: &Args, server: Target) -> Result<Measure, LoadError> {
    let n = args.quiet_room_clients.max(2);
    let mut reactor = Reactor::new(server.dialect, server.addr, server.tls.clone(), n as u64)
        .map_err(LoadError::io("set up epoll"))?;
    let fill = fill_room(&mut reactor, &server, args, n, args.in_flight)?;
    if fill.arrived as usize != n {
        return Ok(fill);
    }
    fan_out(
        &mut reactor,
        &server,
        args,
        &[0],
        &[args.quiet_room_lines],
        Some(Duration::from_millis(args.quiet_room_interval_ms)),
    )
}

fn registrations_workload(
    args: &Args,
    hash: &str,
    accounts: usize,
    tls: bool,
) -> Result<Measure, LoadError> {
    let server = p2pchat_with_accounts(args, hash, accounts, &raised_limits(64, tls), tls)?;
    let mut reactor = Reactor::new(Dialect::P2pchat, server.addr, server.tls.clone(), 0)
        .map_err(LoadError::io("set up epoll"))?;
    let before = mark(&reactor, &server);
    let deadline = before.at + Duration::from_secs(args.limit);
    let mut registrations = histogram::Histogram::new();
    let mut logins = histogram::Histogram::new();
    let mut registrar = None;
    let mut prober: Option<usize> = None;
    let (mut registered, mut logged_in, mut failed) = (0, 0, 0);
    let stopped = loop {
        // One registration at a time; one login at a time beside it, as long as registrations run.
        if registrar.is_none() && registered + failed < args.registrations {
            let name = format!("r{}", registered + failed);
            registrar = Some(
                reactor
                    .connect(name, true)
                    .map_err(LoadError::io("connect"))?,
            );
        }
        if prober.is_none() && registered + failed < args.registrations {
            let name = format!("u{}", logged_in % accounts.max(1));
            prober = Some(
                reactor
                    .connect(name, false)
                    .map_err(LoadError::io("connect"))?,
            );
        }
        for (slot, histogram, count) in [
            (&mut registrar, &mut registrations, &mut registered),
            (&mut prober, &mut logins, &mut logged_in),
        ] {
            let Some(i) = *slot else { continue };
            let client = &reactor.clients[i];
            match client.phase {
                reactor::Phase::InRoom => {
                    let took = client
                        .welcomed_at
                        .zip(client.entered_at)
                        .map(|(w, e)| w - e);
                    histogram.record(took.unwrap_or_default().as_micros() as u64);
                    *count += 1;
                    reactor.close(i);
                    *slot = None;
                }
                reactor::Phase::Closed => {
                    failed += 1;
                    *slot = None;
                }
                _ => {}
            }
        }
        if registered + failed >= args.registrations && prober.is_none() {
            break None;
        }
        if Instant::now() >= deadline {
            break Some(AT_LIMIT);
        }
        reactor
            .poll(deadline.min(Instant::now() + Duration::from_millis(100)))
            .map_err(LoadError::io("wait for registrations"))?;
    };
    let mut m = measure(&reactor, &server, &before, &registrations);
    m.expected = args.registrations as u64;
    m.arrived = registered as u64;
    m.wall = before.at.elapsed();
    m.stopped = stopped;
    m.shortfall_ok = stopped == Some(AT_LIMIT);
    m.disconnected = failed as u64;
    m.extra.push((
        "registration CPU each (ms)".into(),
        format!("{:.2}", m.server_cpu * 1000.0 / registered.max(1) as f64),
    ));
    m.extra.push((
        format!("logins beside them ({})", logins.count()),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms",
            logins.quantile(0.5) as f64 / 1000.0,
            logins.quantile(0.99) as f64 / 1000.0
        ),
    ));
    Ok(m)
}

/// Every default flag but the hashing cost: a full room of `--max-clients` (64) where each
/// client sends a whole `--flood-burst` (10 lines) at once, once their buckets are full again.
fn default_burst(args: &Args, hash: &str, tls: bool) -> Result<Measure, LoadError> {
    const ROOM: usize = 64;
    const BURST: u32 = 10;
    /// The default --flood-rate refills the login's token in 0.2 s; wait a little more.
    const REFILL: Duration = Duration::from_millis(500);
    let mut flags = mode_flags(tls);
    flags.push(("--scrypt-log-n", BENCH_LOG_N.to_string()));
    let server = p2pchat_with_accounts(args, hash, ROOM, &flags, tls)?;
    let mut reactor = Reactor::new(
        Dialect::P2pchat,
        server.addr,
        server.tls.clone(),
        ROOM as u64,
    )
    .map_err(LoadError::io("set up epoll"))?;
    let fill = fill_room(&mut reactor, &server, args, ROOM, args.in_flight)?;
    if fill.arrived as usize != ROOM {
        return Ok(fill);
    }
    let refilled = Instant::now() + REFILL;
    while Instant::now() < refilled {
        reactor
            .poll(refilled)
            .map_err(LoadError::io("wait for the flood buckets"))?;
    }
    let everyone: Vec<usize> = (0..ROOM).collect();
    let mut m = fan_out(&mut reactor, &server, args, &everyone, &[BURST; ROOM], None)?;
    m.extra.push((
        "clients disconnected".into(),
        format!("{} of {ROOM}", reactor.counters.dropped_in_room),
    ));
    Ok(m)
}

// ---- Output ----

fn print_table(title: &str, columns: &[Measure]) -> bool {
    println!("\n== {title} ==");
    let header: Vec<&str> = columns.iter().map(|c| c.server).collect();
    let ratio = columns.len() == 2;
    print!("{:<40}", "");
    for h in &header {
        print!("{h:>COLUMN$}");
    }
    if ratio {
        print!("{:>COLUMN$}", format!("{}/{}", header[0], header[1]));
    }
    println!();
    let row = |label: &str, values: Vec<String>, numbers: Option<(f64, f64)>| {
        print!("{label:<40}");
        for v in &values {
            print!("{v:>COLUMN$}");
        }
        if let Some((a, b)) = numbers.filter(|_| ratio) {
            if b > 0.0 {
                print!("{:>COLUMN$}", format!("{:.2}", a / b));
            }
        }
        println!();
    };
    // A row of one figure per column, with `decimals` after the point, and their ratio.
    let numeric = |label: &str, f: &dyn Fn(&Measure) -> f64, decimals: usize| {
        let values: Vec<f64> = columns.iter().map(f).collect();
        let text = values.iter().map(|v| format!("{v:.decimals$}")).collect();
        row(
            label,
            text,
            values.first().copied().zip(values.get(1).copied()),
        );
    };
    numeric(
        "expected / arrived (lines or logins)",
        &|m| m.arrived as f64,
        0,
    );
    row(
        "  expected",
        columns.iter().map(|m| m.expected.to_string()).collect(),
        None,
    );
    numeric("wall, start to last line (s)", &|m| m.wall.as_secs_f64(), 3);
    numeric(
        "per second",
        &|m| m.arrived as f64 / m.wall.as_secs_f64().max(1e-9),
        0,
    );
    numeric("server CPU (s)", &|m| m.server_cpu, 2);
    numeric(
        "server CPU per line or login (us)",
        &|m| m.server_cpu * 1e6 / (m.arrived.max(1)) as f64,
        3,
    );
    numeric("generator CPU (s)", &|m| m.generator_cpu, 2);
    numeric("latency p50 (ms)", &|m| m.p50 as f64 / 1000.0, 2);
    numeric("latency p99 (ms)", &|m| m.p99 as f64 / 1000.0, 2);
    numeric("latency max (ms)", &|m| m.max_latency as f64 / 1000.0, 2);
    numeric(
        "peak RSS, VmHWM (MiB)",
        &|m| m.peak_rss_kib as f64 / 1024.0,
        1,
    );
    numeric("RSS now (MiB)", &|m| m.rss_kib as f64 / 1024.0, 1);
    if columns.iter().any(|m| m.rss_per_client_kib.is_some()) {
        numeric(
            "RSS per client (KiB)",
            &|m| m.rss_per_client_kib.unwrap_or(0.0),
            1,
        );
    }
    numeric(
        "bytes sent by the server (MiB)",
        &|m| m.bytes_from_server as f64 / 1048576.0,
        1,
    );
    row(
        "out of order / malformed",
        columns
            .iter()
            .map(|m| format!("{} / {}", m.out_of_order, m.malformed))
            .collect(),
        None,
    );
    row(
        "connections closed by the server",
        columns.iter().map(|m| m.disconnected.to_string()).collect(),
        None,
    );
    row(
        "\"send queue exceeded\" in the log",
        columns
            .iter()
            .map(|m| m.send_queue_exceeded.map_or("-".into(), |n| n.to_string()))
            .collect(),
        None,
    );
    row(
        "rate_limited answers",
        columns.iter().map(|m| m.rate_limited.to_string()).collect(),
        None,
    );
    if columns.iter().any(|m| m.tls) {
        row(
            "TLS 1.3 cipher suite",
            columns
                .iter()
                .map(|m| m.negotiated.clone().unwrap_or_else(|| "none".into()))
                .collect(),
            None,
        );
    }
    for (i, (label, _)) in columns[0].extra.iter().enumerate() {
        row(
            label,
            columns
                .iter()
                .map(|m| m.extra.get(i).map_or(String::new(), |e| e.1.clone()))
                .collect(),
            None,
        );
    }
    for m in columns {
        if !m.errors.is_empty() {
            println!("{}: errors received: {}", m.server, m.errors);
        }
        if let Some(why) = m.stopped {
            println!("{}: {why}", m.server);
        }
    }
    let clean = columns.iter().all(Measure::lossless);
    if !clean {
        println!("LOSSES: lines missing, out of order, or clients disconnected (see above)");
    }
    clean
}
