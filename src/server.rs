//! The chat server: accepts connections, authenticates them, and hands logged-in users to the
//! [`broker`](crate::broker).
//!
//! Each connection has a reader task (this module's `serve`) and a writer task that drains the
//! connection's bounded outbox into the socket; neither ever waits on another connection. Slow
//! work (scrypt, fsync) runs on the blocking pool, so a login in progress never stalls the chat.
//! [`run`] takes a bound listener and a shutdown future, so tests and the binary start it alike.

use std::future::Future;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_lock::Semaphore;
use futures::channel::{mpsc, oneshot};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::io::{AsyncWriteExt, BufWriter};
use futures::{select, SinkExt, StreamExt};

use crate::broker::{self, Event, JoinRefused, Outbox, SessionId, OUTBOX_CAPACITY};
use crate::connection::{LineReader, ReadError};
use crate::protocol::{
    decode_client, encode_line, ClientMessage, Credentials, ErrorCode, PeerInfo, ServerMessage,
    MAX_LINE_BYTES, PROTOCOL_VERSION,
};
use crate::runtime::{self, TcpListener, TcpStream};
use crate::user_store::{AuthError, UserStore};

/// Default for `--max-clients`: connections served at once, logged in or not.
pub const DEFAULT_MAX_CLIENTS: usize = 64;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a closing connection may still flush what it owes the client, and then read (and
/// discard) what the client still sends, so that closing does not reset the connection and
/// destroy the last message (an error, or `shutdown`) before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// How long a shutdown waits for connections to finish before the server exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings for [`run`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections served at once; one more gets `server_full` and is closed.
    pub max_clients: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_clients: DEFAULT_MAX_CLIENTS,
        }
    }
}

type ShutdownSignal = Shared<BoxFuture<'static, ()>>;

/// What every connection task shares.
struct Context {
    store: Arc<UserStore>,
    /// One permit per scrypt computation allowed at once (one per core): each takes 128 MiB at the
    /// default cost, so a burst of logins must queue rather than exhaust memory.
    hashing: Semaphore,
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
        store,
        hashing: Semaphore::new(cores),
        broker: broker_tx,
        next_session: AtomicU64::new(1),
        stop: stop.map(|_| ()).boxed().shared(),
    });
    let active = Arc::new(AtomicUsize::new(0));

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
        if active.load(Ordering::SeqCst) >= config.max_clients {
            log::warn!(
                "{remote} refused: server full ({} connections)",
                config.max_clients
            );
            runtime::spawn(refuse(stream, config.max_clients));
            continue;
        }
        let slot = ConnectionSlot::take(&active);
        let shared = shared.clone();
        let done = done.clone();
        runtime::spawn(async move {
            log::info!("{remote} connected ({} connections)", slot.count());
            serve(stream, remote, &shared).await;
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

/// Counts a connection for `--max-clients` for as long as it lives.
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    fn take(active: &Arc<AtomicUsize>) -> ConnectionSlot {
        active.fetch_add(1, Ordering::SeqCst);
        ConnectionSlot(active.clone())
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Tells a connection beyond the limit why it is refused, then closes it.
async fn refuse(stream: TcpStream, max_clients: usize) {
    let message = ServerMessage::error(
        ErrorCode::ServerFull,
        format!("the server is full ({max_clients} connections); try again later"),
    );
    let line = encode_line(&message);
    let mut out = stream.clone();
    let write = async move {
        let _ = out.write_all(line.as_bytes()).await;
    };
    let mut reader = LineReader::new(stream.clone(), MAX_LINE_BYTES);
    close_gracefully(&stream, &mut reader, write).await;
}

/// The state of one connection.
enum State {
    /// Connected, not logged in.
    Pending,
    LoggedIn {
        id: SessionId,
        username: String,
    },
}

/// Serves one connection until it ends, for whatever reason.
async fn serve(stream: TcpStream, remote: SocketAddr, shared: &Context) {
    let (lines_tx, lines_rx) = mpsc::channel(OUTBOX_CAPACITY);
    let closer_stream = stream.clone();
    let mut outbox = Outbox::new(
        lines_tx,
        Box::new(move || {
            let _ = closer_stream.shutdown(Shutdown::Both);
        }),
    );
    let writer = runtime::spawn(write_lines(stream.clone(), lines_rx));
    let mut reader = LineReader::new(stream.clone(), MAX_LINE_BYTES);
    let mut broker = shared.broker.clone();
    let mut state = State::Pending;
    let _ = outbox.push(&ServerMessage::Hello {
        version: PROTOCOL_VERSION,
        auth: vec!["login".into(), "register".into()],
    });

    let end = loop {
        let line = select! {
            line = reader.next_line().fuse() => line,
            _ = shared.stop.clone().fuse() => {
                let _ = outbox.push(&ServerMessage::Shutdown {
                    reason: "the server is shutting down".into(),
                });
                break "server shutting down".to_string();
            }
        };
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => break "closed by the client".to_string(),
            Err(e @ ReadError::TooLong { .. }) => {
                let _ = outbox.push(&ServerMessage::error(
                    ErrorCode::LineTooLong,
                    format!("{e}; closing the connection"),
                ));
                break e.to_string();
            }
            Err(e) => break e.to_string(),
        };
        if line.is_empty() {
            continue; // Tolerated, for people typing into `nc`.
        }
        let refusal = match decode_client(&line) {
            Err(e) => {
                log::info!("{remote}: bad message: {}", e.code());
                Some(ServerMessage::error(e.code(), e.to_string()))
            }
            Ok(message) => {
                match handle(
                    message,
                    &mut state,
                    remote,
                    shared,
                    &mut outbox,
                    &mut broker,
                )
                .await
                {
                    Ok(refusal) => refusal,
                    Err(reason) => break reason,
                }
            }
        };
        // A client that does not read its errors fills its queue and is cut off.
        if let Some(error) = refusal {
            if outbox.push(&error).is_err() {
                break "send queue exceeded".to_string();
            }
        }
    };

    match &state {
        State::LoggedIn { id, username } => {
            log::info!("{remote} ({username}) disconnected: {end}");
            let _ = broker.send(Event::Leave { id: *id }).await;
        }
        State::Pending => log::info!("{remote} disconnected before login: {end}"),
    }
    drop(outbox);
    close_gracefully(&stream, &mut reader, writer).await;
}

/// Acts on one message from the client. `Ok(Some(error))`: answer with that error and go on;
/// `Err(reason)`: the connection ends, for that reason.
async fn handle(
    message: ClientMessage,
    state: &mut State,
    remote: SocketAddr,
    shared: &Context,
    outbox: &mut Outbox,
    broker: &mut mpsc::Sender<Event>,
) -> Result<Option<ServerMessage>, String> {
    let register = matches!(message, ClientMessage::Register(_));
    let event = match (&*state, message) {
        (
            State::Pending,
            ClientMessage::Login(credentials) | ClientMessage::Register(credentials),
        ) => {
            *state = authenticate(remote, shared, outbox, credentials, register).await?;
            return Ok(None);
        }
        (_, ClientMessage::Quit) => return Err("quit".into()),
        (State::Pending, _) => {
            return Ok(Some(ServerMessage::error(
                ErrorCode::NotLoggedIn,
                "log in or register first",
            )))
        }
        (State::LoggedIn { .. }, ClientMessage::Login(_) | ClientMessage::Register(_)) => {
            return Ok(Some(ServerMessage::error(
                ErrorCode::AlreadyLoggedIn,
                "already logged in",
            )))
        }
        (State::LoggedIn { .. }, ClientMessage::Say { text }) if text.trim().is_empty() => {
            return Ok(Some(ServerMessage::error(
                ErrorCode::EmptyMessage,
                "a message needs some text",
            )))
        }
        (State::LoggedIn { id, .. }, ClientMessage::Say { text }) => Event::Say { id: *id, text },
        (State::LoggedIn { id, .. }, ClientMessage::List) => Event::List { id: *id },
    };
    match broker.send(event).await {
        Ok(()) => Ok(None),
        Err(_) => Err("server shutting down".into()),
    }
}

/// Logs a connection in or registers it, and hands it to the broker. On failure the client has
/// been sent the (fatal) error and the reason to log is returned.
async fn authenticate(
    remote: SocketAddr,
    shared: &Context,
    outbox: &mut Outbox,
    credentials: Credentials,
    register: bool,
) -> Result<State, String> {
    let action = if register { "registration" } else { "login" };
    let Credentials {
        username,
        password,
        p2p_port,
    } = credentials;
    let refuse = |outbox: &mut Outbox, code: ErrorCode, message: String| {
        log::warn!(
            "{remote}: {action} as {} refused: {code}",
            for_log(&username)
        );
        let _ = outbox.push(&ServerMessage::error(code, message));
        format!("{action} refused ({code})")
    };
    if p2p_port == 0 {
        return Err(refuse(
            outbox,
            ErrorCode::InvalidPort,
            "p2p_port must be the UDP port (1-65535) for direct messages".into(),
        ));
    }
    let store = shared.store.clone();
    let name = username.clone();
    let permit = shared.hashing.acquire().await;
    let checked = runtime::spawn_blocking(move || {
        if register {
            store.register(&name, &password)
        } else {
            store.verify(&name, &password)
        }
    })
    .await;
    drop(permit);
    let username = match checked {
        Ok(username) => username,
        Err(error) => {
            let code = match &error {
                AuthError::BadCredentials => ErrorCode::BadCredentials,
                AuthError::NameTaken => ErrorCode::NameTaken,
                AuthError::InvalidUsername(_) => ErrorCode::InvalidUsername,
                AuthError::InvalidPassword(_) => ErrorCode::InvalidPassword,
                AuthError::Storage(detail) => {
                    log::error!(
                        "{remote}: could not store account {}: {detail}",
                        for_log(&username)
                    );
                    ErrorCode::StorageFailure
                }
            };
            let message = match &error {
                AuthError::Storage(_) => "the server could not save the account".to_string(),
                other => other.to_string(),
            };
            return Err(refuse(outbox, code, message));
        }
    };
    if register {
        log::info!("{remote}: registered {username:?}");
    }

    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let (reply, answer) = oneshot::channel();
    let peer = PeerInfo {
        username: username.clone(),
        ip: remote.ip().to_canonical(),
        p2p_port,
    };
    let join = Event::Join {
        id,
        peer,
        outbox: outbox.clone(),
        reply,
    };
    let mut broker = shared.broker.clone();
    if broker.send(join).await.is_err() {
        return Err("server shutting down".into());
    }
    match answer.await {
        Ok(Ok(())) => {
            log::info!("{remote}: logged in as {username:?}");
            Ok(State::LoggedIn { id, username })
        }
        Ok(Err(JoinRefused::AlreadyOnline)) => Err(refuse(
            outbox,
            ErrorCode::AlreadyOnline,
            format!("{username} is already logged in from another connection"),
        )),
        Ok(Err(JoinRefused::ShuttingDown)) | Err(_) => {
            let _ = outbox.push(&ServerMessage::Shutdown {
                reason: "the server is shutting down".into(),
            });
            Err("server shutting down".into())
        }
    }
}

/// Writes queued lines to the socket until the queue ends or the socket fails. Lines that are
/// already waiting go out in one write.
async fn write_lines(stream: TcpStream, mut lines: mpsc::Receiver<Arc<str>>) {
    let mut out = BufWriter::new(stream.clone());
    while let Some(line) = lines.next().await {
        let mut result = out.write_all(line.as_bytes()).await;
        while let (Ok(()), Ok(line)) = (&result, lines.try_recv()) {
            result = out.write_all(line.as_bytes()).await;
        }
        if result.is_err() || out.flush().await.is_err() {
            // The client is gone: wake the reader too.
            let _ = stream.shutdown(Shutdown::Both);
            return;
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
