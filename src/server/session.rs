//! One connection, from `hello` to close: authentication within its deadline, flood control on
//! every line, pings when it goes quiet, and the chat commands handed to the broker.

use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::channel::{mpsc, oneshot};
use futures::future::FutureExt;
use futures::io::{AsyncWriteExt, BufWriter};
use futures::{select, SinkExt};

use super::{close_gracefully, for_log, Context, FloodLimit, PendingSlot};
use crate::broker::{self, Event, JoinRefused, Outbox, OutboxReader, SessionId};
use crate::connection::{LineReader, ReadError};
use crate::protocol::{
    decode_client, ClientMessage, Credentials, ErrorCode, PeerInfo, ServerMessage, MAX_LINE_BYTES,
    PROTOCOL_VERSION,
};
use crate::rate_limit::TokenBucket;
use crate::runtime::{self, TcpStream};
use crate::user_store::AuthError;

/// The state of one connection.
enum State {
    /// Connected, not logged in; holds the connection's place in the per-address count until
    /// its credentials are checked.
    Pending(Option<PendingSlot>),
    LoggedIn {
        id: SessionId,
        username: String,
    },
}

/// What the connection is waiting for when its next line is late.
enum Deadline {
    /// The login.
    Login,
    /// Any line; a `ping` goes out when it is late.
    Activity,
    /// The answer to a `ping`.
    Pong,
}

/// Serves one connection until it ends, for whatever reason.
pub(super) async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    shared: &Context,
    pending: PendingSlot,
) {
    let config = &shared.config;
    let closer_stream = stream.clone();
    let (mut outbox, queue) = broker::outbox(
        config.send_queue,
        Box::new(move || {
            let _ = closer_stream.shutdown(Shutdown::Both);
        }),
    );
    let writer = runtime::spawn(write_lines(stream.clone(), queue));
    let mut reader = LineReader::new(stream.clone(), MAX_LINE_BYTES);
    let mut broker = shared.broker.clone();
    let mut state = State::Pending(Some(pending));
    let mut flood = FloodControl::new(config.flood, Instant::now());
    let connected = Instant::now();
    let mut last_heard = connected;
    let mut ping_sent: Option<Instant> = None;
    let _ = outbox.push(&ServerMessage::Hello {
        version: PROTOCOL_VERSION,
        auth: vec!["login".into(), "register".into()],
    });

    let end = loop {
        let (deadline, waiting_for) = match (&state, ping_sent) {
            (State::Pending(_), _) => (connected + config.auth_timeout, Deadline::Login),
            (State::LoggedIn { .. }, None) => {
                (last_heard + config.ping_interval, Deadline::Activity)
            }
            (State::LoggedIn { .. }, Some(sent)) => (sent + config.ping_timeout, Deadline::Pong),
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = select! {
            line = runtime::timeout(wait, reader.next_line()).fuse() => line,
            _ = shared.stop.clone().fuse() => {
                let _ = outbox.push(&shutting_down());
                break "server shutting down".to_string();
            }
        };
        let line = match (line, waiting_for) {
            (Some(line), _) => line,
            (None, Deadline::Login) => {
                let secs = config.auth_timeout.as_secs_f64();
                let _ = outbox.push(&ServerMessage::error(
                    ErrorCode::AuthTimeout,
                    format!("no login or registration within {secs} s; closing the connection"),
                ));
                break format!("no login within {secs} s");
            }
            (None, Deadline::Activity) => {
                if outbox.push(&ServerMessage::Ping).is_err() {
                    break "send queue exceeded".to_string();
                }
                ping_sent = Some(Instant::now());
                continue;
            }
            (None, Deadline::Pong) => {
                let secs = config.ping_timeout.as_secs_f64();
                let _ = outbox.push(&ServerMessage::error(
                    ErrorCode::PingTimeout,
                    format!("no answer to ping within {secs} s; closing the connection"),
                ));
                break format!("ping timeout ({secs} s)");
            }
        };
        let now = Instant::now();
        last_heard = now;
        ping_sent = None;
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
        match flood.check(now) {
            Verdict::Allow => {}
            Verdict::Drop { dropped } => {
                if dropped == 1 {
                    log::warn!("{remote}: flooding; dropping lines");
                }
                let warning = ServerMessage::error(
                    ErrorCode::RateLimited,
                    format!(
                        "too fast: at most {} lines at once, then {} per second; line dropped (warning {dropped} of {})",
                        flood.limit.burst, flood.limit.per_second, flood.limit.strikes.saturating_sub(1)
                    ),
                );
                if outbox.push(&warning).is_err() {
                    break "send queue exceeded".to_string();
                }
                continue;
            }
            Verdict::Disconnect => {
                let _ = outbox.push(&ServerMessage::error(
                    ErrorCode::Flood,
                    "kept on sending too fast after the warnings; closing the connection",
                ));
                break "flooding".to_string();
            }
        }
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
        State::Pending(_) => log::info!("{remote} disconnected before login: {end}"),
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
    let event = match (&mut *state, message) {
        (
            State::Pending(slot),
            ClientMessage::Login(credentials) | ClientMessage::Register(credentials),
        ) => {
            let login = Login {
                credentials,
                register,
                pending: slot.take(),
            };
            let (id, username) = authenticate(remote, shared, outbox, login).await?;
            *state = State::LoggedIn { id, username };
            return Ok(None);
        }
        (_, ClientMessage::Quit) => return Err("quit".into()),
        // Any line proves the client alive; `pong` needs nothing more.
        (_, ClientMessage::Pong) => return Ok(None),
        (_, ClientMessage::Ping) => {
            return match outbox.push(&ServerMessage::Pong) {
                Ok(()) => Ok(None),
                Err(_) => Err("send queue exceeded".into()),
            }
        }
        (State::Pending(_), _) => {
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

/// A login or registration request, with the connection's place in its address's pending
/// count (freed once the credentials are checked).
struct Login {
    credentials: Credentials,
    register: bool,
    pending: Option<PendingSlot>,
}

/// Logs a connection in or registers it, and hands it to the broker. On failure the client has
/// been sent the (fatal) error and the reason to log is returned.
async fn authenticate(
    remote: SocketAddr,
    shared: &Context,
    outbox: &mut Outbox,
    login: Login,
) -> Result<(SessionId, String), String> {
    let Login {
        credentials:
            Credentials {
                username,
                password,
                p2p_port,
            },
        register,
        pending,
    } = login;
    let action = if register { "registration" } else { "login" };
    let ip = remote.ip().to_canonical();
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
    if !register {
        wait_for_login_slot(remote, ip, &username, shared, outbox).await?;
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
                AuthError::BadCredentials => {
                    let (account, address) = shared.throttle.failed(&username, ip, Instant::now());
                    log::info!(
                        "{remote}: failed login as {}: {account} recent failures on the account, {address} from {ip}",
                        for_log(&username)
                    );
                    ErrorCode::BadCredentials
                }
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
    } else {
        shared.throttle.succeeded(&username, ip);
    }
    // Authenticated: the connection no longer counts against its address's pending limit.
    drop(pending);

    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let (reply, answer) = oneshot::channel();
    let peer = PeerInfo {
        username: username.clone(),
        ip,
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
            Ok((id, username))
        }
        Ok(Err(JoinRefused::AlreadyOnline)) => Err(refuse(
            outbox,
            ErrorCode::AlreadyOnline,
            format!("{username} is already logged in from another connection"),
        )),
        Ok(Err(JoinRefused::ShuttingDown)) | Err(_) => {
            let _ = outbox.push(&shutting_down());
            Err("server shutting down".into())
        }
    }
}

/// Waits until the login throttle lets this attempt be checked (at once, unless the account or
/// the address has failed recently). The client is not told: it just waits for its answer.
async fn wait_for_login_slot(
    remote: SocketAddr,
    ip: IpAddr,
    username: &str,
    shared: &Context,
    outbox: &mut Outbox,
) -> Result<(), String> {
    let now = Instant::now();
    let (slot, failures) = shared.throttle.book(username, ip, now);
    let wait = slot.saturating_duration_since(now);
    if wait.is_zero() {
        return Ok(());
    }
    log::info!(
        "{remote}: login as {} delayed after {failures} recent failures ({:.1} s)",
        for_log(username),
        wait.as_secs_f64()
    );
    select! {
        _ = runtime::sleep(wait).fuse() => Ok(()),
        _ = shared.stop.clone().fuse() => {
            let _ = outbox.push(&shutting_down());
            Err("server shutting down".into())
        }
    }
}

/// What every connection is told when the server stops.
fn shutting_down() -> ServerMessage {
    ServerMessage::Shutdown {
        reason: "the server is shutting down".into(),
    }
}

/// Flood control: a token bucket on every line from the client.
struct FloodControl {
    limit: FloodLimit,
    bucket: TokenBucket,
    /// Lines dropped since the client last paused long enough to refill its burst.
    dropped: u32,
}

enum Verdict {
    Allow,
    /// Drop the line and warn; `dropped` lines so far.
    Drop {
        dropped: u32,
    },
    Disconnect,
}

impl FloodControl {
    fn new(limit: FloodLimit, now: Instant) -> FloodControl {
        FloodControl {
            limit,
            bucket: TokenBucket::new(limit.burst, limit.per_second, now),
            dropped: 0,
        }
    }

    fn check(&mut self, now: Instant) -> Verdict {
        if self.dropped > 0 && self.bucket.is_full(now) {
            self.dropped = 0;
        }
        if self.bucket.try_take(now) {
            return Verdict::Allow;
        }
        self.dropped += 1;
        if self.dropped >= self.limit.strikes {
            Verdict::Disconnect
        } else {
            Verdict::Drop {
                dropped: self.dropped,
            }
        }
    }
}

/// Writes queued lines to the socket until the queue ends or the socket fails. Lines that are
/// already waiting go out in one write.
async fn write_lines(stream: TcpStream, mut queue: OutboxReader) {
    let mut out = BufWriter::new(stream.clone());
    while let Some(line) = queue.next().await {
        let mut result = out.write_all(line.as_bytes()).await;
        while let (Ok(()), Some(line)) = (&result, queue.try_next()) {
            result = out.write_all(line.as_bytes()).await;
        }
        if result.is_err() || out.flush().await.is_err() {
            // The client is gone: wake the reader too.
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn flood_control_warns_then_disconnects_and_forgives_a_pause() {
        let limit = FloodLimit {
            burst: 2,
            per_second: 1.0,
            strikes: 3,
        };
        let t0 = Instant::now();
        let mut flood = FloodControl::new(limit, t0);
        assert!(matches!(flood.check(t0), Verdict::Allow));
        assert!(matches!(flood.check(t0), Verdict::Allow));
        assert!(matches!(flood.check(t0), Verdict::Drop { dropped: 1 }));
        assert!(matches!(flood.check(t0), Verdict::Drop { dropped: 2 }));
        // A pause that refills the whole burst forgives the warnings.
        let t1 = t0 + Duration::from_secs(2);
        assert!(matches!(flood.check(t1), Verdict::Allow));
        assert!(matches!(flood.check(t1), Verdict::Allow));
        assert!(matches!(flood.check(t1), Verdict::Drop { dropped: 1 }));
        assert!(matches!(flood.check(t1), Verdict::Drop { dropped: 2 }));
        assert!(matches!(flood.check(t1), Verdict::Disconnect));
    }
}
