//! The file-transfer engine (`p2pchat::transfer`) through its library API: a sender and a
//! receiver in one process over loopback TCP, with real pairwise keys, and a proxy between them
//! that flips a bit, cuts the connection or holds it, as the network or an attacker would. Every
//! wait has a deadline ([`DEADLINE`]) that only a broken build reaches; no test depends on how
//! fast anything is (the stall test's limit is the behaviour under test, not a wait for it).

use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use p2pchat::runtime::{self, TcpListener, TcpStream};
use p2pchat::sealed::{KeyId, SessionKey};
use p2pchat::transfer::channel::{OPENING_BYTES, REPLY_BYTES};
use p2pchat::transfer::{
    self, AbortReason, Limits, Partial, Request, Saved, Served, Source, TransferError, TransferId,
    TransferKey,
};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// Longest any one test may take: only a broken build gets near it.
const DEADLINE: Duration = Duration::from_secs(120);

/// The offered name in every test.
const NAME: &str = "report.pdf";

/// Both sides' keys for one transfer, derived from real session keys as the client does.
#[derive(Clone)]
struct Keys {
    id: TransferId,
    sender: TransferKey,
    receiver: TransferKey,
    sender_id: KeyId,
    receiver_id: KeyId,
}

fn keys() -> Keys {
    let (alice, bob) = (SessionKey::generate(), SessionKey::generate());
    let a = alice.pair("alice", "bob", &bob.public_key()).unwrap();
    let b = bob.pair("bob", "alice", &alice.public_key()).unwrap();
    let id = TransferId::generate();
    Keys {
        id,
        sender: a.transfer_key(&id),
        receiver: b.transfer_key(&id),
        sender_id: alice.public_key().key_id(),
        receiver_id: bob.public_key().key_id(),
    }
}

/// Keys of a third session (mallory) for the same transfer id: what a stranger holds.
fn strangers_key(keys: &Keys) -> TransferKey {
    let (mallory, bob) = (SessionKey::generate(), SessionKey::generate());
    mallory
        .pair("alice", "bob", &bob.public_key())
        .unwrap()
        .transfer_key(&keys.id)
}

/// A file of `len` bytes that differ from one position to the next, in `dir`.
fn make_file(dir: &Path, len: usize) -> (Source, Vec<u8>) {
    let content: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let path = dir.join("source.bin");
    std::fs::write(&path, &content).unwrap();
    (Source::of(path).unwrap(), content)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn run<T>(test: impl std::future::Future<Output = T>) -> T {
    runtime::block_on(runtime::timeout(DEADLINE, test)).expect("the test's deadline passed")
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The sender's side as the client will run it: accept one connection, read its opening, look
/// the transfer up (here: check it is this one), serve.
async fn serve_one(
    listener: TcpListener,
    keys: Keys,
    source: Source,
    limits: Limits,
) -> Result<Served, TransferError> {
    let (mut stream, _) = listener.accept().await.unwrap();
    // As the client does: records are written as they come, not held for the next one.
    stream.set_nodelay(true).unwrap();
    let opening = transfer::read_opening(&mut stream, limits.handshake).await?;
    assert_eq!(opening.transfer_id, keys.id);
    assert_eq!(opening.sender_key, keys.sender_id);
    assert_eq!(opening.receiver_key, keys.receiver_id);
    transfer::serve(stream, &opening, &keys.sender, &source, &limits, |_| {}).await
}

/// The receiver's side: connect, fetch into the folder's partial file (resumed if there).
async fn fetch_into(
    addr: SocketAddr,
    keys: &Keys,
    key: &TransferKey,
    folder: &Path,
    size: u64,
    limits: Limits,
) -> Result<Saved, TransferError> {
    let partial = Partial::open_or_create(folder, &keys.id, NAME).unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let request = Request {
        transfer_id: keys.id,
        receiver_key: keys.receiver_id,
        sender_key: keys.sender_id,
        size,
    };
    transfer::fetch(stream, &request, key, partial, &limits, |_| {}).await
}

/// One transfer straight from sender to receiver: both results.
async fn transfer_direct(
    keys: &Keys,
    source: &Source,
    folder: &Path,
    offered: u64,
    limits: Limits,
) -> (Result<Served, TransferError>, Result<Saved, TransferError>) {
    let (listener, addr) = bind().await;
    let sender = runtime::spawn(serve_one(listener, keys.clone(), source.clone(), limits));
    let saved = fetch_into(addr, keys, &keys.receiver, folder, offered, limits).await;
    (sender.await, saved)
}

/// What the proxy does to the sender's bytes on their way to the receiver.
#[derive(Clone, Copy, Debug, Default)]
struct Tamper {
    /// Flip the lowest bit of the byte at this position of the sender's stream.
    flip_at: Option<u64>,
    /// Close both connections once this many of the sender's bytes went through.
    cut_after: Option<u64>,
    /// Stop passing the sender's bytes on after this many, keeping both connections open.
    hold_after: Option<u64>,
}

/// A proxy for one connection: the receiver connects to its address, it connects to `target`.
/// The receiver's bytes pass untouched; the sender's as `tamper` says.
async fn proxy(target: SocketAddr, tamper: Tamper) -> SocketAddr {
    let (front, addr) = bind().await;
    runtime::spawn(async move {
        let (receiver, _) = front.accept().await.unwrap();
        let sender = TcpStream::connect(target).await.unwrap();
        receiver.set_nodelay(true).unwrap();
        sender.set_nodelay(true).unwrap();
        let (mut from_receiver, mut to_sender) = (receiver.clone(), sender.clone());
        let upstream = runtime::spawn(async move {
            let mut buffer = vec![0u8; 16 * 1024];
            while let Ok(n) = from_receiver.read(&mut buffer).await {
                if n == 0 || to_sender.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
            let _ = to_sender.shutdown(Shutdown::Write);
        });
        let (mut from_sender, mut to_receiver) = (sender.clone(), receiver.clone());
        let mut buffer = vec![0u8; 16 * 1024];
        let mut at = 0u64;
        let stop = tamper.cut_after.or(tamper.hold_after);
        loop {
            let room = stop.map_or(buffer.len() as u64, |stop| {
                (stop - at).min(buffer.len() as u64)
            });
            if room == 0 {
                break;
            }
            let n = match from_sender.read(&mut buffer[..room as usize]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(flip) = tamper.flip_at {
                if (at..at + n as u64).contains(&flip) {
                    buffer[(flip - at) as usize] ^= 1;
                }
            }
            if to_receiver.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            at += n as u64;
        }
        if tamper.hold_after.is_some() && tamper.cut_after.is_none() {
            // Held: the receiver gives up (stalled) and closes its side first.
            upstream.await;
        }
        let _ = receiver.shutdown(Shutdown::Both);
        let _ = sender.shutdown(Shutdown::Both);
    });
    addr
}

/// One transfer through a [`proxy`]: both results.
async fn transfer_through(
    keys: &Keys,
    source: &Source,
    folder: &Path,
    tamper: Tamper,
    limits: Limits,
) -> (Result<Served, TransferError>, Result<Saved, TransferError>) {
    let (listener, target) = bind().await;
    let sender = runtime::spawn(serve_one(listener, keys.clone(), source.clone(), limits));
    let addr = proxy(target, tamper).await;
    let saved = fetch_into(addr, keys, &keys.receiver, folder, source.size, limits).await;
    (sender.await, saved)
}

/// The partial file of the test's transfer, if there is one: its bytes.
fn partial_bytes(folder: &Path, keys: &Keys) -> Option<Vec<u8>> {
    let path = folder.join(transfer::partial::partial_file_name(&keys.id, NAME));
    std::fs::read(path).ok()
}

/// Every file in `folder`, by name, sorted.
fn files_in(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Small records, so a small file makes many of them.
fn small_records() -> Limits {
    Limits {
        record_bytes: 100,
        ..Limits::default()
    }
}

fn dirs() -> (TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (source, download) = (dir.path().join("src"), dir.path().join("dl"));
    std::fs::create_dir(&source).unwrap();
    std::fs::create_dir(&download).unwrap();
    (dir, source, download)
}

#[test]
fn a_file_arrives_whole_under_its_name_with_the_senders_sha256() {
    run(async {
        for len in [0, 1, 65_536, 300_001] {
            let (_dir, src, dl) = dirs();
            let (source, content) = make_file(&src, len);
            let keys = keys();
            let (served, saved) =
                transfer_direct(&keys, &source, &dl, len as u64, Limits::default()).await;
            let (served, saved) = (served.unwrap(), saved.unwrap());
            assert_eq!(saved.path, dl.join(NAME));
            assert_eq!(std::fs::read(&saved.path).unwrap(), content);
            assert_eq!(saved.sha256, sha256(&content));
            assert_eq!(served.sha256, saved.sha256);
            assert_eq!((saved.size, saved.received), (len as u64, len as u64));
            assert_eq!(served.sent, len as u64);
            // Nothing else left behind: no partial file.
            assert_eq!(files_in(&dl), vec![NAME.to_string()]);
        }
    });
}

#[test]
fn a_received_file_never_replaces_an_existing_one() {
    run(async {
        let (_dir, src, dl) = dirs();
        let (source, content) = make_file(&src, 5_000);
        std::fs::write(dl.join(NAME), b"mine").unwrap();
        std::fs::write(dl.join("report (1).pdf"), b"mine too").unwrap();
        let keys = keys();
        let (_, saved) = transfer_direct(&keys, &source, &dl, 5_000, Limits::default()).await;
        let saved = saved.unwrap();
        assert_eq!(saved.path, dl.join("report (2).pdf"));
        assert_eq!(std::fs::read(&saved.path).unwrap(), content);
        assert_eq!(std::fs::read(dl.join(NAME)).unwrap(), b"mine");
        assert_eq!(
            std::fs::read(dl.join("report (1).pdf")).unwrap(),
            b"mine too"
        );
    });
}

/// Where the sender's first record starts in its stream: after its reply and its key proof.
const FIRST_RECORD: u64 = (REPLY_BYTES + 32) as u64;

#[test]
fn a_bit_flipped_in_transit_is_refused_and_nothing_of_its_record_is_kept() {
    run(async {
        let (_dir, src, dl) = dirs();
        let (source, content) = make_file(&src, 1_000);
        let keys = keys();
        // Inside the third record's ciphertext (records of 100 bytes: 5 + 100 + 16 on the wire).
        let flip = FIRST_RECORD + 2 * 121 + 5 + 40;
        let tamper = Tamper {
            flip_at: Some(flip),
            ..Tamper::default()
        };
        let (_, saved) = transfer_through(&keys, &source, &dl, tamper, small_records()).await;
        assert!(matches!(saved, Err(TransferError::Forged)), "{saved:?}");
        // The two records before it are kept as good, and nothing of the changed one.
        assert_eq!(partial_bytes(&dl, &keys).unwrap(), content[..200]);
        assert!(!dl.join(NAME).exists());
        // And the transfer resumes from there to the right file.
        let (_, saved) = transfer_direct(&keys, &source, &dl, 1_000, small_records()).await;
        let saved = saved.unwrap();
        assert_eq!((saved.received, saved.sha256), (800, sha256(&content)));
    });
}

#[test]
fn a_sender_that_sends_more_than_offered_is_refused_and_nothing_kept() {
    run(async {
        let (_dir, src, dl) = dirs();
        let (source, _) = make_file(&src, 1_000);
        let keys = keys();
        let (served, saved) = transfer_direct(&keys, &source, &dl, 950, small_records()).await;
        assert!(
            matches!(saved, Err(TransferError::TooLong { offered: 950 })),
            "{saved:?}"
        );
        assert!(served.is_err());
        assert_eq!(partial_bytes(&dl, &keys), None);
        assert_eq!(files_in(&dl), Vec::<String>::new());
    });
}

#[test]
fn a_sender_that_sends_fewer_bytes_than_offered_is_refused_and_nothing_kept() {
    run(async {
        let (_dir, src, dl) = dirs();
        let (source, _) = make_file(&src, 1_000);
        let keys = keys();
        let (served, saved) = transfer_direct(&keys, &source, &dl, 1_050, small_records()).await;
        assert!(
            matches!(
                saved,
                Err(TransferError::SizeMismatch {
                    offered: 1_050,
                    sent: 1_000
                })
            ),
            "{saved:?}"
        );
        assert!(
            matches!(
                served,
                Err(TransferError::Aborted(AbortReason::SizeMismatch))
            ),
            "{served:?}"
        );
        assert_eq!(files_in(&dl), Vec::<String>::new());
    });
}

#[test]
fn a_stranger_connecting_to_the_sender_gets_no_byte_of_the_file() {
    run(async {
        let (_dir, src, dl) = dirs();
        let (source, content) = make_file(&src, 10_000);
        let keys = keys();
        let (listener, addr) = bind().await;
        let sender = runtime::spawn(serve_one(
            listener,
            keys.clone(),
            source.clone(),
            Limits::default(),
        ));
        // The stranger knows the ids (they are in the clear) but not the pair's key.
        let stranger = strangers_key(&keys);
        let saved = fetch_into(addr, &keys, &stranger, &dl, 10_000, Limits::default()).await;
        // The sender closes on the stranger's proof, before its own: the stranger only sees the
        // connection end.
        assert!(
            matches!(saved, Err(TransferError::Connection(_))),
            "{saved:?}"
        );
        assert!(
            matches!(sender.await, Err(TransferError::WrongKey)),
            "the sender must refuse before it opens the file"
        );
        assert_eq!(partial_bytes(&dl, &keys).unwrap(), b"");

        // Raw: all a stranger ever reads is the sender's reply (a nonce), then the close.
        let (listener, addr) = bind().await;
        let sender = runtime::spawn(serve_one(listener, keys.clone(), source, Limits::default()));
        let mut raw = TcpStream::connect(addr).await.unwrap();
        let mut opening = Vec::new();
        opening.extend_from_slice(p2pchat::transfer::channel::MAGIC);
        opening.push(p2pchat::transfer::channel::VERSION);
        opening.extend_from_slice(&keys.id.0);
        opening.extend_from_slice(&keys.receiver_id.0);
        opening.extend_from_slice(&keys.sender_id.0);
        opening.extend_from_slice(&0u64.to_be_bytes());
        opening.extend_from_slice(&[7u8; 32]);
        assert_eq!(opening.len(), OPENING_BYTES);
        raw.write_all(&opening).await.unwrap();
        raw.write_all(&[0u8; 32]).await.unwrap();
        let mut got = Vec::new();
        raw.read_to_end(&mut got).await.unwrap_or_default();
        assert_eq!(got.len(), REPLY_BYTES, "only the reply");
        assert!(!got.windows(8).any(|w| content.windows(8).any(|c| c == w)));
        assert!(matches!(sender.await, Err(TransferError::WrongKey)));
    });
}

#[test]
fn a_stranger_posing_as_the_sender_gets_nothing_written() {
    run(async {
        let (_dir, _src, dl) = dirs();
        let keys = keys();
        // The impostor answers like a sender but cannot make the sender's proof: it sends 32
        // bytes of its own, then what would be a data record.
        let (listener, addr) = bind().await;
        let impostor = runtime::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut opening = [0u8; OPENING_BYTES];
            stream.read_exact(&mut opening).await.unwrap();
            let mut reply = vec![p2pchat::transfer::channel::VERSION];
            reply.extend_from_slice(&[9u8; 32]);
            stream.write_all(&reply).await.unwrap();
            let mut proof = [0u8; 32];
            stream.read_exact(&mut proof).await.unwrap();
            stream.write_all(&[5u8; 32]).await.unwrap();
            let mut record = vec![1u8, 0, 0, 0, 116];
            record.extend_from_slice(&[0u8; 116]);
            let _ = stream.write_all(&record).await;
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        });
        let saved = fetch_into(addr, &keys, &keys.receiver, &dl, 10_000, Limits::default()).await;
        assert!(matches!(saved, Err(TransferError::WrongKey)), "{saved:?}");
        impostor.await;
        assert_eq!(partial_bytes(&dl, &keys).unwrap(), b"");
    });
}

#[test]
fn an_opening_that_is_not_a_transfer_is_refused_before_any_key() {
    run(async {
        let (listener, addr) = bind().await;
        let reader = runtime::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            transfer::read_opening(&mut stream, Duration::from_secs(30)).await
        });
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(&[b'G'; OPENING_BYTES]).await.unwrap();
        assert!(matches!(
            reader.await,
            Err(TransferError::Opening(transfer::OpeningError::NotATransfer))
        ));
        // A connection that says nothing is given up after the handshake limit.
        let (listener, addr) = bind().await;
        let reader = runtime::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            transfer::read_opening(&mut stream, Duration::from_millis(200)).await
        });
        let _silent = TcpStream::connect(addr).await.unwrap();
        assert!(matches!(
            reader.await,
            Err(TransferError::HandshakeTimeout(_))
        ));
    });
}

#[test]
fn a_stalled_sender_ends_the_transfer_as_stalled_and_the_partial_is_kept() {
    run(async {
        let (_dir, src, dl) = dirs();
        let (source, content) = make_file(&src, 1_000);
        let keys = keys();
        let limits = Limits {
            stall: Duration::from_millis(300),
            ..small_records()
        };
        let tamper = Tamper {
            hold_after: Some(FIRST_RECORD + 3 * 121),
            ..Tamper::default()
        };
        let (_, saved) = transfer_through(&keys, &source, &dl, tamper, limits).await;
        assert!(
            matches!(saved, Err(TransferError::Stalled(d)) if d == limits.stall),
            "{saved:?}"
        );
        assert_eq!(partial_bytes(&dl, &keys).unwrap(), content[..300]);
    });
}

#[test]
fn a_sender_cut_at_every_byte_offset_then_resumed_always_gives_the_right_file() {
    run(async {
        // On a tmpfs when there is one: each of the many connections ends with an fsync, which
        // costs a disk's latency, and this test is about the bytes, not the disk.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let (src, dl) = (dir.path().join("src"), dir.path().join("dl"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dl).unwrap();
        let (source, content) = make_file(&src, 500);
        // The sender's whole stream: reply, proof, five records of 100, the end record.
        let stream_len = FIRST_RECORD + 5 * 121 + (5 + 40 + 16);
        for cut in 0..=stream_len {
            let keys = keys();
            let tamper = Tamper {
                cut_after: Some(cut),
                ..Tamper::default()
            };
            let (_, first) = transfer_through(&keys, &source, &dl, tamper, small_records()).await;
            let saved = match first {
                Ok(saved) => saved,
                Err(error) => {
                    assert!(error.keeps_partial(), "cut at {cut}: {error}");
                    let kept = partial_bytes(&dl, &keys).unwrap();
                    assert_eq!(kept, content[..kept.len()], "cut at {cut}");
                    let (_, again) =
                        transfer_direct(&keys, &source, &dl, 500, small_records()).await;
                    again.unwrap_or_else(|e| panic!("resume after a cut at {cut}: {e}"))
                }
            };
            assert_eq!(saved.sha256, sha256(&content), "cut at {cut}");
            assert_eq!(std::fs::read(&saved.path).unwrap(), content, "cut at {cut}");
            std::fs::remove_file(&saved.path).unwrap();
            assert_eq!(files_in(&dl), Vec::<String>::new(), "cut at {cut}");
        }
    });
}

#[test]
fn a_file_changed_since_the_offer_is_refused() {
    run(async {
        let (_dir, src, dl) = dirs();
        let (source, _) = make_file(&src, 1_000);
        let keys = keys();
        // Same size, new contents (and so a new modification time).
        let later = std::time::SystemTime::now() + Duration::from_secs(5);
        let file = std::fs::File::options()
            .write(true)
            .open(&source.path)
            .unwrap();
        file.set_modified(later).unwrap();
        let (served, saved) = transfer_direct(&keys, &source, &dl, 1_000, small_records()).await;
        assert!(
            matches!(served, Err(TransferError::FileChanged)),
            "{served:?}"
        );
        assert!(
            matches!(saved, Err(TransferError::Aborted(AbortReason::FileChanged))),
            "{saved:?}"
        );
        // Nothing kept: this transfer can never finish (a new offer is a new transfer).
        assert_eq!(files_in(&dl), Vec::<String>::new());
        // A longer file is refused as well.
        let (source, _) = make_file(&src, 1_000);
        std::fs::write(&source.path, vec![1u8; 1_001]).unwrap();
        let keys = self::keys();
        let (served, _) = transfer_direct(&keys, &source, &dl, 1_000, small_records()).await;
        assert!(
            matches!(served, Err(TransferError::FileChanged)),
            "{served:?}"
        );
        // A FIFO put in its place is refused at once, not waited on.
        std::fs::remove_file(&source.path).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &source.path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let keys = self::keys();
        let (served, _) = transfer_direct(&keys, &source, &dl, 1_000, small_records()).await;
        assert!(
            matches!(served, Err(TransferError::FileChanged)),
            "{served:?}"
        );
        assert!(Source::of(source.path.clone()).is_err());
    });
}

/// The environment variable that tells [`disk_full_inner`] where its tmpfs is.
const TMPFS_VAR: &str = "P2PCHAT_TEST_TMPFS";

#[test]
fn a_full_disk_is_a_typed_error_the_partial_is_kept_and_the_transfer_resumes() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs in a mount namespace of its own");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // A private mount namespace: the tmpfs is gone when the child exits, whatever happens.
    let status = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=1m tmpfs \"${TMPFS_VAR}\" && exec \"$0\" disk_full_inner --exact --ignored --nocapture --test-threads 1"
        ))
        .arg(&exe)
        .env(TMPFS_VAR, dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the test in the mount namespace failed");
}

/// Run by the test above inside its mount namespace, on a tmpfs of 1 MiB.
#[test]
#[ignore = "run by a_full_disk_is_a_typed_error_…, on a tmpfs it mounts"]
fn disk_full_inner() {
    let Some(folder) = std::env::var_os(TMPFS_VAR).map(PathBuf::from) else {
        eprintln!("skipped: only meaningful inside a_full_disk_is_a_typed_error_…");
        return;
    };
    run(async {
        let src = tempfile::tempdir().unwrap();
        // An offer larger than the disk is refused before anything is asked of the sender.
        let (big, _) = make_file(src.path(), 2 * 1024 * 1024);
        let keys = keys();
        let (_listener, addr) = bind().await;
        let refused = fetch_into(
            addr,
            &keys,
            &keys.receiver,
            &folder,
            big.size,
            Limits::default(),
        )
        .await;
        assert!(
            matches!(refused, Err(TransferError::NoSpace { .. })),
            "{refused:?}"
        );

        // One that fits when checked, but the disk fills up during the transfer (another program
        // writes a large file after the first record).
        let (source, content) = make_file(src.path(), 600 * 1024);
        let keys = self::keys();
        let (listener, addr) = bind().await;
        let sender = runtime::spawn(serve_one(
            listener,
            keys.clone(),
            source.clone(),
            Limits::default(),
        ));
        let partial = Partial::open_or_create(&folder, &keys.id, NAME).unwrap();
        let request = Request {
            transfer_id: keys.id,
            receiver_key: keys.receiver_id,
            sender_key: keys.sender_id,
            size: source.size,
        };
        let filler = folder.join("filler");
        let mut filled = false;
        let partial_path = folder.join(transfer::partial::partial_file_name(&keys.id, NAME));
        let stream = TcpStream::connect(addr).await.unwrap();
        let full = transfer::fetch(
            stream,
            &request,
            &keys.receiver,
            partial,
            &Limits::default(),
            |progress| {
                // Once the first record is on disk, another program fills the disk up.
                if !filled && progress.done >= 2 * 65_536 {
                    filled = true;
                    wait_until(|| {
                        std::fs::metadata(&partial_path).is_ok_and(|m| m.len() >= 65_536)
                    });
                    fill(&filler);
                }
            },
        )
        .await;
        assert!(
            matches!(full, Err(TransferError::DiskFull { .. })),
            "{full:?}"
        );
        assert!(full.as_ref().unwrap_err().keeps_partial());
        let _ = sender.await;
        let kept = partial_bytes(&folder, &keys).unwrap();
        assert!(
            !kept.is_empty() && kept.len() < content.len(),
            "{}",
            kept.len()
        );
        assert_eq!(kept, content[..kept.len()]);
        assert!(!folder.join(NAME).exists(), "never a final file");

        // Room made: the transfer resumes to the right file.
        std::fs::remove_file(&filler).unwrap();
        let (_, saved) =
            transfer_direct(&keys, &source, &folder, source.size, Limits::default()).await;
        let saved = saved.unwrap();
        assert_eq!(saved.sha256, sha256(&content));
        assert_eq!(saved.received, (content.len() - kept.len()) as u64);
    });
}

/// Waits until `condition` holds, looking every millisecond, for at most [`DEADLINE`]: for
/// something with no event to wait on (a file growing on another thread).
fn wait_until(condition: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "the condition never held");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes `path` until the file system is full (bounded by the tmpfs's size).
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    for _ in 0..1024 {
        if file
            .write_all(&chunk)
            .and_then(|()| file.sync_all())
            .is_err()
        {
            return;
        }
    }
    panic!("the tmpfs did not fill up");
}

#[test]
fn progress_counts_the_whole_file_the_resumed_prefix_included() {
    run(async {
        let (_dir, src, dl) = dirs();
        let (source, content) = make_file(&src, 1_000);
        let keys = keys();
        // A first connection cut after three records: 300 bytes kept.
        let tamper = Tamper {
            cut_after: Some(FIRST_RECORD + 3 * 121),
            ..Tamper::default()
        };
        let (_, first) = transfer_through(&keys, &source, &dl, tamper, small_records()).await;
        assert!(first.is_err());
        assert_eq!(partial_bytes(&dl, &keys).unwrap(), content[..300]);

        let (listener, addr) = bind().await;
        let limits = small_records();
        let sender = runtime::spawn({
            let (keys, source) = (keys.clone(), source.clone());
            async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                let opening = transfer::read_opening(&mut stream, limits.handshake).await?;
                assert_eq!(opening.offset, 300);
                let mut seen = Vec::new();
                let served =
                    transfer::serve(stream, &opening, &keys.sender, &source, &limits, |p| {
                        seen.push(p)
                    })
                    .await?;
                Ok::<_, TransferError>((served, seen))
            }
        });
        let partial = Partial::open_existing(&dl, &keys.id, NAME).unwrap();
        let request = Request {
            transfer_id: keys.id,
            receiver_key: keys.receiver_id,
            sender_key: keys.sender_id,
            size: 1_000,
        };
        let mut seen = Vec::new();
        let stream = TcpStream::connect(addr).await.unwrap();
        let saved = transfer::fetch(stream, &request, &keys.receiver, partial, &limits, |p| {
            seen.push(p)
        })
        .await
        .unwrap();
        let (served, sender_seen) = sender.await.unwrap();
        assert_eq!((saved.received, served.sent), (700, 700));
        for progress in [&seen, &sender_seen] {
            let done: Vec<u64> = progress.iter().map(|p| p.done).collect();
            assert_eq!(done, (4..=10).map(|i| i * 100).collect::<Vec<u64>>());
            assert!(progress.iter().all(|p| p.total == 1_000));
        }
    });
}
