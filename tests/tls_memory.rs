//! What an idle TLS connection costs the server, counted by the allocator (not timed): the
//! server's record layer (`src/tls/records.rs`) keeps no buffer and no expanded key while nothing
//! flows, so the TLS state of an idle connection is rustls's key schedule (kept for key updates)
//! and two 44-byte keys. rustls's own buffered connection kept ~7.4 KB (docs/performance.md,
//! "Over TLS"); this test fails if anything like it comes back.
//!
//! A test binary of its own because it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::net::TcpStream as StdTcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use p2pchat::runtime::{self, TcpListener};
use p2pchat::tls::{self, ServerIdentity};

/// Bytes allocated and not yet freed, by every thread.
static HELD: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Connections measured: enough that one-off allocations (the listener, the first handshake's
/// lazily made tables) do not count per connection.
const CONNECTIONS: usize = 100;

/// What the TLS state of one idle connection may hold: rustls's `KernelConnection` (552 bytes)
/// with its key schedule, the two halves and their keys: 1,287 bytes measured; one key left
/// expanded (ring's AES-GCM state, ~0.5 KiB) would pass the bound.
const MOST_PER_CONNECTION: isize = 1536;

#[test]
fn an_idle_tls_connection_costs_the_server_under_1_5_kib_of_tls_state() {
    let dir = tempfile::TempDir::new().unwrap();
    let (key, cert) = tls::default_paths(&dir.path().join("users.json"));
    let identity = ServerIdentity::load_or_create(&key, &cert).unwrap();
    let server = identity.server_config().unwrap();
    let listener = runtime::block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let address = listener.local_addr().unwrap();
    let config = Arc::new(tls::client_config(
        Some(identity.fingerprint()),
        Arc::new(Mutex::new(None)),
    ));
    // rustls's own clients, blocking, in a thread; each sends a line and stays connected.
    let clients = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for _ in 0..CONNECTIONS {
            let mut tls =
                rustls::ClientConnection::new(config.clone(), tls::server_name()).unwrap();
            let mut tcp = StdTcpStream::connect(address).unwrap();
            while tls.is_handshaking() {
                tls.complete_io(&mut tcp).unwrap();
            }
            tls.writer().write_all(b"hello\n").unwrap();
            while tls.wants_write() {
                tls.write_tls(&mut tcp).unwrap();
            }
            kept.push((tls, tcp));
        }
        kept
    });
    let mut sockets = Vec::new();
    let mut halves = Vec::new();
    runtime::block_on(async {
        for _ in 0..CONNECTIONS {
            let (tcp, _) = listener.accept().await.unwrap();
            sockets.push(tcp.clone());
            let (mut reader, mut writer) = tls::accept(tcp, server.config.clone()).await.unwrap();
            let mut line = [0u8; 6];
            let read = runtime::timeout(Duration::from_secs(20), reader.read_exact(&mut line));
            read.await.expect("the line within the deadline").unwrap();
            assert_eq!(&line, b"hello\n");
            writer.write_all(b"welcome\n").await.unwrap();
            writer.flush().await.unwrap();
            // The next read finds nothing yet: the reader is idle, as a session waiting for a line.
            let waker = futures::task::noop_waker();
            let mut buffer = [0u8; 16];
            let poll =
                Pin::new(&mut reader).poll_read(&mut Context::from_waker(&waker), &mut buffer);
            assert!(matches!(poll, Poll::Pending), "nothing more was sent");
            halves.push((reader, writer));
        }
    });
    let kept = clients.join().unwrap();
    let before = HELD.load(Ordering::Relaxed);
    drop(halves); // The sockets stay open (`sockets`): only the TLS state is freed.
    let per_connection = (before - HELD.load(Ordering::Relaxed)) / CONNECTIONS as isize;
    eprintln!("TLS state per idle connection: {per_connection} bytes");
    assert!(
        per_connection <= MOST_PER_CONNECTION,
        "an idle TLS connection holds {per_connection} bytes of TLS state (at most {MOST_PER_CONNECTION})"
    );
    assert!(per_connection > 0, "the halves hold the keys at least");
    drop((kept, sockets));
}
