//! The chat server: accepts connections, admits them within the connection limits, and serves
//! each one ([`session`]) until it ends.
//!
//! Each connection has a reader task (the session) and a writer task that drains the
//! connection's bounded send queue into the socket; neither ever waits on another connection.
//! Slow work (scrypt, fsync) runs on the blocking pool, so a login in progress never stalls the
//! chat. [`run`] takes a bound listener and a shutdown future, so tests and the binary start it
//! alike. Every limit is in [`config`].

mod config;
mod session;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Shutdown};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_lock::Semaphore;
use futures::channel::{mpsc, oneshot};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::io::AsyncWriteExt;
use futures::{select, SinkExt, StreamExt};

pub use config::*;

use crate::broker::{self, Event};
use crate::connection::LineReader;
use crate::login_throttle::LoginThrottle;
use crate::protocol::{encode_line, ErrorCode, ServerMessage, MAX_LINE_BYTES};
use crate::runtime::{self, TcpListener, TcpStream};
use crate::user_store::UserStore;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a closing connection may still flush what it owes the client, and then read (and
/// discard) what the client still sends, so that closing does not reset the connection and
/// destroy the last message (an error, or `shutdown`) before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Refused connections being told why at once; beyond this a refused connection is closed
/// without a word, so that a connection flood cannot pin file descriptors in lingering closes.
const MAX_REFUSING: usize = 64;

/// How long a shutdown waits for connections to finish before the server exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

type ShutdownSignal = Shared<BoxFuture<'static, ()>>;

/// What every connection task shares.
struct Context {
    config: ServerConfig,
    store: Arc<UserStore>,
    /// One permit per scrypt computation allowed at once (one per core): each takes 128 MiB at the
    /// default cost, so a burst of logins must queue rather than exhaust memory.
    hashing: Semaphore,
    throttle: LoginThrottle,
    broker: mpsc::Sender<Event>,
    next_session: AtomicU64,
    /// Fires once the broker has been told to stop, so that the departures of connections that
    /// are closing for the shutdown are never announced.
    stop: ShutdownSignal,
}

/// Serves `listener` until `shutdown` completes, then tells every client, waits for the
/// connections to close (at most a few seconds) and returns.
pub async fn run(
    listener: TcpListener,
    store: Arc<UserStore>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = Box::pin(shutdown.fuse());
    let (stop_connections, stop) = oneshot::channel::<()>();
    let (broker_tx, broker_rx) = mpsc::channel(broker::EVENT_QUEUE_CAPACITY);
    runtime::spawn(broker::run(broker_rx));
    // Every connection task holds a clone of `done`; when all are dropped, all have finished.
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shared = Arc::new(Context {
        throttle: LoginThrottle::new(config.login_throttle.clone()),
        config,
        store,
        hashing: Semaphore::new(cores),
        broker: broker_tx,
        next_session: AtomicU64::new(1),
        stop: stop.map(|_| ()).boxed().shared(),
    });
    let mut admission = Admission::default();

    loop {
        let accepted = select! {
            accepted = listener.accept().fuse() => accepted,
            _ = shutdown => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                log::error!("accept failed: {e}; retrying");
                runtime::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (slot, pending) = match admission.admit(remote.ip().to_canonical(), &shared.config) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                log::warn!("{remote} refused: {}", refusal.log);
                admission.refuse(stream, refusal.message);
                continue;
            }
        };
        let shared = shared.clone();
        let done = done.clone();
        runtime::spawn(async move {
            log::info!("{remote} connected ({} connections)", slot.count());
            session::serve(stream, remote, &shared, pending).await;
            drop(slot);
            log::info!("{remote} closed");
            drop(done);
        });
    }

    log::info!("shutting down");
    let mut broker_tx = shared.broker.clone();
    let _ = broker_tx.send(Event::Shutdown).await;
    let _ = stop_connections.send(());
    drop((broker_tx, shared, done));
    if runtime::timeout(SHUTDOWN_GRACE, all_done.next())
        .await
        .is_none()
    {
        log::warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
    }
}

/// The connection limits, as the accept loop applies them.
#[derive(Default)]
struct Admission {
    active: Arc<AtomicUsize>,
    /// Connections not logged in yet, per address.
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Refusals being written out right now.
    refusing: Arc<AtomicUsize>,
    refused_full: u64,
    refused_per_ip: u64,
}

/// Why a connection is not admitted: what to tell the client, and what to log.
struct Refusal {
    message: ServerMessage,
    log: String,
}

impl Admission {
    fn admit(
        &mut self,
        ip: IpAddr,
        config: &ServerConfig,
    ) -> Result<(ConnectionSlot, PendingSlot), Refusal> {
        if self.active.load(Ordering::SeqCst) >= config.max_clients {
            self.refused_full += 1;
            return Err(Refusal {
                message: ServerMessage::error(
                    ErrorCode::ServerFull,
                    format!(
                        "the server is full ({} connections); try again later",
                        config.max_clients
                    ),
                ),
                log: format!(
                    "server full ({} connections; {} refused so far)",
                    config.max_clients, self.refused_full
                ),
            });
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let count = pending.entry(ip).or_insert(0);
        if *count >= config.max_pending_per_ip {
            self.refused_per_ip += 1;
            return Err(Refusal {
                message: ServerMessage::error(
                    ErrorCode::TooManyConnections,
                    format!(
                        "too many connections from your address are not logged in yet (at most {}); log in on one of them first",
                        config.max_pending_per_ip
                    ),
                ),
                log: format!(
                    "{} connections from {ip} not logged in yet ({} refused so far)",
                    config.max_pending_per_ip, self.refused_per_ip
                ),
            });
        }
        *count += 1;
        drop(pending);
        self.active.fetch_add(1, Ordering::SeqCst);
        Ok((
            ConnectionSlot(self.active.clone()),
            PendingSlot {
                ip,
                table: self.pending.clone(),
            },
        ))
    }

    /// Tells a connection beyond a limit why it is refused, then closes it; closes it at once if
    /// too many refusals are being written already.
    fn refuse(&self, stream: TcpStream, message: ServerMessage) {
        if self.refusing.load(Ordering::SeqCst) >= MAX_REFUSING {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        self.refusing.fetch_add(1, Ordering::SeqCst);
        let refusing = self.refusing.clone();
        runtime::spawn(async move {
            let line = encode_line(&message);
            let mut out = stream.clone();
            let write = async move {
                let _ = out.write_all(line.as_bytes()).await;
            };
            let mut reader = LineReader::new(stream.clone(), MAX_LINE_BYTES);
            close_gracefully(&stream, &mut reader, write).await;
            refusing.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Counts a connection for `--max-clients` for as long as it lives.
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a connection for `--max-pending-per-ip` until it logs in (or ends): drop it then.
struct PendingSlot {
    ip: IpAddr,
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = table.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

/// Lets the writer flush what is queued, then closes the sending side and reads off what the
/// client still sends for a moment, so that the client sees the last lines and a clean end of
/// stream rather than a reset.
async fn close_gracefully(
    stream: &TcpStream,
    reader: &mut LineReader<TcpStream>,
    writer: impl Future<Output = ()>,
) {
    if runtime::timeout(LINGER, writer).await.is_none() {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let _ = runtime::timeout(LINGER, reader.discard(LINGER_BYTES)).await;
}

/// A name from the network as it may appear in the log: quoted and escaped (no forged log
/// lines), and cut short (no flooding the log with a 64 KiB "username").
fn for_log(name: &str) -> String {
    const MAX_CHARS: usize = 32;
    if name.chars().count() <= MAX_CHARS {
        format!("{name:?}")
    } else {
        let cut: String = name.chars().take(MAX_CHARS).collect();
        format!("{cut:?}…")
    }
}
