//! Benchmarks of the file-transfer engine (not tests: they measure; they assert only that the file
//! arrived whole). Run with `just bench` (release build); ignored by `cargo test`.
//!
//! - `loopback_1gib_sealed_against_plain_tcp`: a 1 GiB file from disk to disk over loopback, first
//!   as a plain copy over one TCP connection (a few lines of std: `io::copy`, which the kernel
//!   does with sendfile/splice, and a read/write loop as socat does; fsync; no encryption, no
//!   hash), then through the engine (sealed records, SHA-256 on both sides, fsync
//!   and rename), in the same run. The engine's sender and receiver run in child processes of
//!   their own (this binary again), so the receiver's peak RSS is its own: read from
//!   `/proc/self/status` (`VmHWM`) as it ends.
//! - `lossy_netns_20mib_arrives_whole`: the same engine between two network namespaces joined by
//!   a veth pair, the receiver's namespace dropping one packet in five at random (nftables
//!   `numgen random mod 5 == 0 drop`); a 20 MiB file must arrive with the right SHA-256. Needs
//!   root, `ip` and `nft`; the namespaces are removed when it ends, failed or not.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p2pchat::runtime;
use p2pchat::sealed::KeyId;
use p2pchat::transfer::{self, Limits, Partial, Request, Source, TransferId, TransferKey};
use sha2::{Digest, Sha256};

/// The environment variable that makes [`bench_child`] a sender or a receiver.
const ROLE: &str = "P2PCHAT_BENCH_ROLE";

const MIB: u64 = 1024 * 1024;

/// The transfer's key, id and key ids, the same in both children (passed in the environment:
/// a benchmark's throwaway key).
const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SENDER_KEY: KeyId = KeyId([1; 8]);
const RECEIVER_KEY: KeyId = KeyId([2; 8]);

fn key() -> TransferKey {
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&KEY_HEX[2 * i..2 * i + 2], 16).unwrap();
    }
    TransferKey::from_bytes(bytes)
}

/// A folder on the disk the build is on (not a tmpfs): the benchmark measures real writes.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A file of `size` bytes that do not repeat within a chunk, written fast; its SHA-256.
fn make_file(path: &Path, size: u64) -> [u8; 32] {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut chunk: Vec<u8> = (0..MIB as usize)
        .map(|i| (i * 31 + i / 257) as u8)
        .collect();
    let mut left = size;
    let mut round = 0u8;
    while left > 0 {
        chunk[0] = round;
        round = round.wrapping_add(1);
        let n = left.min(MIB) as usize;
        file.write_all(&chunk[..n]).unwrap();
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    file.into_inner().unwrap().sync_all().unwrap();
    hasher.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This process's peak resident set size, in KiB (`VmHWM` of /proc/self/status).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CPU seconds this process used so far, user and system (`/proc/self/stat`, in clock ticks of
/// 1/100 s, the kernel's `USER_HZ` on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command's name (which is in parentheses and may hold spaces).
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// How the plain copy moves bytes.
#[derive(Clone, Copy)]
enum Plain {
    /// `std::io::copy`, which the kernel turns into `sendfile` and `splice`: no byte through user
    /// space.
    Kernel,
    /// A read/write loop through a 64 KiB buffer on each side, as `socat` or `nc` copy.
    Buffered,
}

/// Copies everything from `from` to `to` through a 64 KiB buffer.
fn buffered_copy(from: &mut impl Read, to: &mut impl Write) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buffer).unwrap();
        if n == 0 {
            return;
        }
        to.write_all(&buffer[..n]).unwrap();
    }
}

/// The plain copy: `source` read and written to one TCP connection, the other end writing it to
/// `target` and syncing it; the seconds from connect to the sync's end.
fn plain_copy(source: &Path, target: &Path, how: Plain) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.to_path_buf();
    let receiver = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut file = std::fs::File::create(&target).unwrap();
        match how {
            Plain::Kernel => {
                std::io::copy(&mut stream, &mut file).unwrap();
            }
            Plain::Buffered => buffered_copy(&mut stream, &mut file),
        }
        file.sync_all().unwrap();
    });
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut file = std::fs::File::open(source).unwrap();
    match how {
        Plain::Kernel => {
            std::io::copy(&mut file, &mut stream).unwrap();
        }
        Plain::Buffered => buffered_copy(&mut file, &mut stream),
    }
    drop(stream);
    receiver.join().unwrap();
    start.elapsed().as_secs_f64()
}

/// This test binary again, as one side of a transfer, optionally inside a network namespace.
fn child(netns: Option<&str>, vars: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    command
        .args([
            "bench_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .stdout(Stdio::piped());
    for (name, value) in vars {
        command.env(name, value);
    }
    command.spawn().unwrap()
}

/// Kills a child still running when dropped (a benchmark that failed halfway).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What follows `prefix` on the first line of a child's output that has it (libtest's
/// `test bench_child ... ` comes first on the same line).
fn line_with(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the child ended before saying {prefix}"
        );
        if let Some(at) = line.find(prefix) {
            return line[at + prefix.len()..].trim_end().to_string();
        }
    }
}

/// One sealed transfer between two child processes: the receiver's report
/// (`seconds sha256 peak_rss_kib`).
fn sealed_transfer(
    source: &Path,
    size: u64,
    folder: &Path,
    bind: &str,
    namespaces: Option<(&str, &str)>,
    stall: Duration,
) -> (f64, String, u64) {
    let id = TransferId::generate();
    let common = vec![
        ("P2PCHAT_BENCH_ID", id.to_string()),
        ("P2PCHAT_BENCH_SIZE", size.to_string()),
        ("P2PCHAT_BENCH_STALL", stall.as_secs().to_string()),
    ];
    let mut vars = common.clone();
    vars.push((ROLE, "send".into()));
    vars.push(("P2PCHAT_BENCH_BIND", bind.into()));
    vars.push(("P2PCHAT_BENCH_SOURCE", source.display().to_string()));
    let mut sender = Running(child(namespaces.map(|n| n.0), &vars));
    let addr = line_with(&mut sender.0, "LISTENING ");
    let mut vars = common;
    vars.push((ROLE, "receive".into()));
    vars.push(("P2PCHAT_BENCH_ADDR", addr));
    vars.push(("P2PCHAT_BENCH_FOLDER", folder.display().to_string()));
    let mut receiver = Running(child(namespaces.map(|n| n.1), &vars));
    let report = line_with(&mut receiver.0, "RECEIVED ");
    assert!(receiver.0.wait().unwrap().success());
    assert!(sender.0.wait().unwrap().success());
    let mut parts = report.split(' ');
    let seconds = parts.next().unwrap().parse().unwrap();
    let sha = parts.next().unwrap().to_string();
    let rss = parts.next().unwrap().parse().unwrap();
    (seconds, sha, rss)
}

/// One side of a benchmark's transfer, in a process of its own; run by the benchmarks above.
#[test]
#[ignore = "one side of a benchmark's transfer, started by the benchmarks"]
fn bench_child() {
    let Ok(role) = std::env::var(ROLE) else {
        eprintln!("skipped: only meaningful when started by a benchmark");
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let id = TransferId::from_hex(&var("P2PCHAT_BENCH_ID")).unwrap();
    let size: u64 = var("P2PCHAT_BENCH_SIZE").parse().unwrap();
    let limits = Limits {
        stall: Duration::from_secs(var("P2PCHAT_BENCH_STALL").parse().unwrap()),
        ..Limits::default()
    };
    runtime::block_on(async {
        if role == "send" {
            let listener = runtime::TcpListener::bind(var("P2PCHAT_BENCH_BIND"))
                .await
                .unwrap();
            println!("LISTENING {}", listener.local_addr().unwrap());
            std::io::stdout().flush().unwrap();
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let opening = transfer::read_opening(&mut stream, limits.handshake)
                .await
                .unwrap();
            assert_eq!(opening.transfer_id, id);
            let source = Source::of(PathBuf::from(var("P2PCHAT_BENCH_SOURCE"))).unwrap();
            assert_eq!(source.size, size);
            transfer::serve(stream, &opening, &key(), &source, &limits, |_| {})
                .await
                .unwrap();
            eprintln!("sender: {:.2} CPU seconds", cpu_seconds());
        } else {
            let folder = PathBuf::from(var("P2PCHAT_BENCH_FOLDER"));
            let start = Instant::now();
            let stream = runtime::TcpStream::connect(var("P2PCHAT_BENCH_ADDR"))
                .await
                .unwrap();
            stream.set_nodelay(true).unwrap();
            let partial = Partial::create(&folder, &id, "bench.bin").unwrap();
            let request = Request {
                transfer_id: id,
                receiver_key: RECEIVER_KEY,
                sender_key: SENDER_KEY,
                size,
            };
            let saved = transfer::fetch(stream, &request, &key(), partial, &limits, |_| {})
                .await
                .unwrap();
            let seconds = start.elapsed().as_secs_f64();
            eprintln!("receiver: {:.2} CPU seconds", cpu_seconds());
            println!(
                "RECEIVED {seconds:.3} {} {}",
                hex(&saved.sha256),
                peak_rss_kib()
            );
        }
    });
}

/// Rounds of the loopback benchmark: each two plain copies then a sealed transfer, so that both meet
/// the same moments of a shared machine's load; the median of each is reported, and every round.
const ROUNDS: usize = 3;

#[test]
#[ignore = "a benchmark: `just bench`"]
fn loopback_1gib_sealed_against_plain_tcp() {
    let size = 1024 * MIB;
    let dir = scratch();
    let source = dir.path().join("source.bin");
    let sha = make_file(&source, size);
    crypto_floor();
    // Received onto the disk (what a user gets: both sides wait for the disk), and onto a tmpfs
    // when there is one (the network and the CPU alone: what sealing costs).
    loopback_rounds("onto the disk", &source, size, &sha, dir.path());
    if Path::new("/dev/shm").is_dir() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        loopback_rounds("onto a tmpfs", &source, size, &sha, shm.path());
    }
}

/// What the engine's CPU work costs on one core of this machine, whatever the network: SHA-256
/// (each side hashes every byte) and ChaCha20-Poly1305 (the sender seals, the receiver opens),
/// over 256 MiB in 64 KiB records.
fn crypto_floor() {
    use chacha20poly1305::aead::AeadInOut;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
    const TOTAL: usize = 256 * 1024 * 1024;
    let mut record = vec![5u8; 64 * 1024];
    let start = Instant::now();
    let mut hasher = Sha256::new();
    for _ in 0..TOTAL / record.len() {
        hasher.update(&record);
    }
    let digest = hasher.finalize();
    let sha = start.elapsed().as_secs_f64();
    let cipher = ChaCha20Poly1305::new_from_slice(&[1u8; 32]).unwrap();
    let start = Instant::now();
    for counter in 0..(TOTAL / record.len()) as u64 {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_le_bytes());
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(nonce), b"hdr", record.as_mut_slice().into())
            .unwrap();
        record[0] ^= tag[0];
    }
    let seal = start.elapsed().as_secs_f64();
    let mib = (TOTAL / MIB as usize) as f64;
    println!(
        "one core: SHA-256 {:.0} MiB/s, ChaCha20-Poly1305 {:.0} MiB/s (so each side spends about {:.2} CPU s per GiB on them) [{}]",
        mib / sha,
        mib / seal,
        1024.0 / (mib / sha) + 1024.0 / (mib / seal),
        hex(&digest[..4])
    );
}

/// [`ROUNDS`] rounds of a plain copy then a sealed transfer of `source` into `target_dir`.
fn loopback_rounds(label: &str, source: &Path, size: u64, sha: &[u8; 32], target_dir: &Path) {
    let mib = size as f64 / MIB as f64;
    let (mut kernels, mut buffereds, mut sealeds, mut peak_rss_kib) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    for round in 1..=ROUNDS {
        let plain_target = target_dir.join("plain.bin");
        let kernel = plain_copy(source, &plain_target, Plain::Kernel);
        std::fs::remove_file(&plain_target).unwrap();
        let buffered = plain_copy(source, &plain_target, Plain::Buffered);
        std::fs::remove_file(&plain_target).unwrap();
        let folder = target_dir.join(format!("downloads{round}"));
        std::fs::create_dir(&folder).unwrap();
        let (sealed, received_sha, rss_kib) = sealed_transfer(
            source,
            size,
            &folder,
            "127.0.0.1:0",
            None,
            Duration::from_secs(30),
        );
        assert_eq!(received_sha, hex(sha), "the file arrived changed");
        std::fs::remove_dir_all(&folder).unwrap();
        println!(
            "{label}, round {round}: plain copy {kernel:.2} s (sendfile/splice), {buffered:.2} s (read/write); sealed {sealed:.2} s: {:.2}x, {:.2}x",
            kernel / sealed,
            buffered / sealed
        );
        kernels.push(kernel);
        buffereds.push(buffered);
        sealeds.push(sealed);
        peak_rss_kib = peak_rss_kib.max(rss_kib);
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (kernel, buffered, sealed) = (
        median(&mut kernels),
        median(&mut buffereds),
        median(&mut sealeds),
    );
    println!(
        "1 GiB over loopback {label}, median of {ROUNDS}: plain TCP copy {kernel:.2} s ({:.0} MiB/s) with sendfile/splice, {buffered:.2} s ({:.0} MiB/s) with read/write; sealed transfer {sealed:.2} s ({:.0} MiB/s): {:.2}x and {:.2}x the plain copies; receiver's peak RSS {:.1} MiB",
        mib / kernel,
        mib / buffered,
        mib / sealed,
        kernel / sealed,
        buffered / sealed,
        peak_rss_kib as f64 / 1024.0
    );
}

/// Two network namespaces joined by a veth pair, removed when dropped.
struct Namespaces {
    sender: String,
    receiver: String,
}

impl Namespaces {
    fn create() -> Namespaces {
        let id = std::process::id();
        let namespaces = Namespaces {
            sender: format!("p2pft-s-{id}"),
            receiver: format!("p2pft-r-{id}"),
        };
        let (s, r) = (&namespaces.sender, &namespaces.receiver);
        let veth_s = format!("p2pfts{id}");
        let veth_r = format!("p2pftr{id}");
        let script = format!(
            "set -e
            ip netns add {s}
            ip netns add {r}
            ip link add {veth_s} netns {s} type veth peer name {veth_r} netns {r}
            ip -n {s} addr add 10.231.0.1/24 dev {veth_s}
            ip -n {r} addr add 10.231.0.2/24 dev {veth_r}
            ip -n {s} link set lo up
            ip -n {r} link set lo up
            ip -n {s} link set {veth_s} up
            ip -n {r} link set {veth_r} up
            ip netns exec {r} nft add table inet p2pft_loss
            ip netns exec {r} nft add chain inet p2pft_loss input '{{ type filter hook input priority 0; }}'
            ip netns exec {r} nft add rule inet p2pft_loss input counter
            ip netns exec {r} nft add rule inet p2pft_loss input numgen random mod 5 == 0 counter drop"
        );
        let status = Command::new("sh").args(["-c", &script]).status().unwrap();
        assert!(status.success(), "setting up the namespaces failed");
        namespaces
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.sender, &self.receiver] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
#[ignore = "a benchmark: `just bench` (root, ip, nft)"]
fn lossy_netns_20mib_arrives_whole() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to create network namespaces");
        return;
    }
    let size = 20 * MIB;
    let dir = scratch();
    let source = dir.path().join("source.bin");
    let sha = make_file(&source, size);
    let folder = dir.path().join("downloads");
    std::fs::create_dir(&folder).unwrap();
    let namespaces = Namespaces::create();
    let (seconds, received_sha, _) = sealed_transfer(
        &source,
        size,
        &folder,
        "10.231.0.1:0",
        Some((&namespaces.sender, &namespaces.receiver)),
        // A lost segment's retransmission backs off (0.2 s, 0.4 s, …): several in a row are
        // rare, not a stall.
        Duration::from_secs(120),
    );
    assert_eq!(received_sha, hex(&sha), "the file arrived changed");
    // The loss as nftables counted it: every packet into the receiver's namespace, then those
    // dropped.
    let ruleset = Command::new("ip")
        .args([
            "netns",
            "exec",
            &namespaces.receiver,
            "nft",
            "list",
            "table",
            "inet",
            "p2pft_loss",
        ])
        .output()
        .unwrap();
    let counts: Vec<u64> = String::from_utf8_lossy(&ruleset.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    if let [all, dropped] = counts[..] {
        println!(
            "packets into the receiver's namespace: {all}, dropped: {dropped} ({:.1} %)",
            100.0 * dropped as f64 / all.max(1) as f64
        );
    }
    let received = std::fs::read(folder.join("bench.bin")).unwrap();
    assert_eq!(Sha256::digest(&received).as_slice(), sha.as_slice());
    println!(
        "20 MiB between two namespaces, 20 % of packets into the receiver's dropped: {seconds:.1} s ({:.2} MiB/s), SHA-256 {}",
        20.0 / seconds,
        hex(&sha)
    );
    drop(namespaces);
}
