//! One connection, from `hello` to close: the login within its deadline ([`super::login`]),
//! flood control on every line, pings when it goes quiet, and the chat commands handed to the
//! broker.
//!
//! The session is the connection's reader: it reads every line and ends the connection for a
//! typed [`Disconnect`]. It never writes to the socket itself (everything goes through the
//! connection's send queue, which its writer task drains) and never waits on another connection.

use std::net::SocketAddr;
use std::time::Instant;

use futures::channel::{mpsc, oneshot};
use futures::future::FutureExt;
use futures::{select, SinkExt};

use super::admission::PendingSlot;
use super::context::{shutdown_notice, Context};
use super::login::{self, Login};
use crate::broker::{Event, SessionId};
use crate::connection::{self, AuthAction, Disconnect, LineReader, ReadError, Stream};
use crate::flood::{FloodControl, Verdict};
use crate::outbox::{self, NotReading, Outbox};
use crate::protocol::{
    decode_client, ClientMessage, ErrorCode, ServerMessage, MAX_LINE_BYTES, PROTOCOL_VERSION,
};
use crate::runtime;
use crate::sealed::KeyChallenge;

/// The state of one connection.
enum State {
    /// Connected, not logged in; holds the connection's place in the per-address count until
    /// its credentials are checked, and the challenge its `hello` announced, against which a
    /// login proves it holds the session key it announces.
    Pending(Option<PendingSlot>, KeyChallenge),
    LoggedIn {
        id: SessionId,
        username: String,
        /// Fires when a login from another connection takes the name over.
        replaced: oneshot::Receiver<()>,
    },
}

impl State {
    /// Resolves when a login from elsewhere took this session's name over; never before login
    /// (nor once the broker forgot the session without replacing it).
    async fn replaced(&mut self) {
        match self {
            State::LoggedIn { replaced, .. } => {
                if replaced.await.is_err() {
                    futures::future::pending::<()>().await;
                }
            }
            State::Pending(..) => futures::future::pending().await,
        }
    }
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

/// Serves one connection, accepted at `connected` (its login deadline counts from then), until it
/// ends, for whatever reason.
pub(super) async fn serve(
    stream: Stream,
    remote: SocketAddr,
    shared: &Context,
    pending: PendingSlot,
    connected: Instant,
) {
    let config = &shared.config;
    let (stream, reader, writer) = stream.into_parts();
    let (mut outbox, queue) = outbox::channel(config.send_queue, connection::closer(&stream));
    let writer = runtime::spawn(connection::write_queued(writer, stream.clone(), queue));
    let mut reader = LineReader::new(reader, MAX_LINE_BYTES);
    let mut broker = shared.broker.clone();
    // Made for this connection alone: a proof of possession made for it is worth nothing on
    // another (one X25519 key generation, ~50 µs, beside the TLS handshake's cost).
    let challenge = KeyChallenge::generate();
    let key_challenge = Some(challenge.public_key());
    let mut state = State::Pending(Some(pending), challenge);
    let mut flood = FloodControl::new(config.flood, Instant::now());
    let mut last_heard = connected;
    let mut ping_sent: Option<Instant> = None;
    let _ = outbox.push(&ServerMessage::Hello {
        version: PROTOCOL_VERSION,
        auth: vec!["login".into(), "register".into()],
        flood_burst: Some(config.flood.burst),
        flood_rate: Some(config.flood.per_second),
        key_challenge,
    });

    let end = loop {
        let (deadline, waiting_for) = match (&state, ping_sent) {
            (State::Pending(..), _) => (connected + config.auth_timeout, Deadline::Login),
            (State::LoggedIn { .. }, None) => {
                (last_heard + config.ping_interval, Deadline::Activity)
            }
            (State::LoggedIn { .. }, Some(sent)) => (sent + config.ping_timeout, Deadline::Pong),
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = select! {
            line = runtime::timeout(wait, reader.next_line()).fuse() => line,
            _ = shared.stop.clone().fuse() => {
                let _ = outbox.push(&shutdown_notice());
                break Disconnect::ServerShuttingDown;
            }
            _ = state.replaced().fuse() => {
                // Queued behind whatever the client was owed; the writer sends it all before
                // the close (the broker dropped its share of the queue with the session).
                let name = match &state {
                    State::LoggedIn { username, .. } => username.as_str(),
                    State::Pending(..) => "",
                };
                let _ = outbox.push(&ServerMessage::error(
                    ErrorCode::Replaced,
                    format!("{name} logged in from another connection"),
                ));
                break Disconnect::Replaced;
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
                break Disconnect::AuthTimeout(config.auth_timeout);
            }
            (None, Deadline::Activity) => {
                if outbox.push(&ServerMessage::Ping).is_err() {
                    break Disconnect::SendQueueExceeded;
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
                break Disconnect::PingTimeout(config.ping_timeout);
            }
        };
        let now = Instant::now();
        last_heard = now;
        ping_sent = None;
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => break Disconnect::ClosedByClient,
            Err(e @ ReadError::TooLong { .. }) => {
                let _ = outbox.push(&ServerMessage::error(
                    ErrorCode::LineTooLong,
                    format!("{e}; closing the connection"),
                ));
                break Disconnect::Read(e);
            }
            Err(e) => break Disconnect::Read(e),
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
                        flood.limit().burst, flood.limit().per_second, flood.limit().strikes.saturating_sub(1)
                    ),
                );
                if outbox.push(&warning).is_err() {
                    break Disconnect::SendQueueExceeded;
                }
                continue;
            }
            Verdict::Disconnect => {
                let _ = outbox.push(&ServerMessage::error(
                    ErrorCode::Flood,
                    "kept on sending too fast after the warnings; closing the connection",
                ));
                break Disconnect::Flood;
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
                // Boxed: a message's handling lives for one line, and inline it (with the message
                // and the event it becomes) would size this future, which an idle connection keeps
                // for hours. One allocation per line received is small beside what the line
                // already costs (its bytes, its decoded strings, its event).
                let handled = Box::pin(handle(
                    message,
                    &mut state,
                    remote,
                    connected + config.auth_timeout,
                    shared,
                    &mut outbox,
                    &mut broker,
                ));
                match handled.await {
                    Ok(refusal) => refusal,
                    Err(reason) => break reason,
                }
            }
        };
        // A client that does not read its errors fills its queue and is cut off.
        if let Some(error) = refusal {
            if outbox.push(&error).is_err() {
                break Disconnect::SendQueueExceeded;
            }
        }
    };

    // A client dropped for not reading ends with a closed socket; say why.
    let end = match outbox.dropped() {
        Some(NotReading::Exceeded) => Disconnect::SendQueueExceeded,
        Some(NotReading::Stalled) => Disconnect::SendStalled(config.send_queue.stall_timeout),
        None => end,
    };
    match &state {
        State::LoggedIn { id, username, .. } => {
            log::info!("{remote} ({username}) disconnected: {end}");
            let _ = broker.send(Event::Leave { id: *id }).await;
        }
        State::Pending(..) => log::info!("{remote} disconnected before login: {end}"),
    }
    drop(outbox);
    // Boxed, as the login is (see `handle`): it runs once, at the end.
    Box::pin(connection::close_lingering(&stream, &mut reader, writer)).await;
}

/// Acts on one message from the client. `Ok(Some(error))`: answer with that error and go on;
/// `Err(reason)`: the connection ends, for that reason.
async fn handle(
    message: ClientMessage,
    state: &mut State,
    remote: SocketAddr,
    auth_deadline: Instant,
    shared: &Context,
    outbox: &mut Outbox,
    broker: &mut mpsc::Sender<Event>,
) -> Result<Option<ServerMessage>, Disconnect> {
    let action = if matches!(message, ClientMessage::Register(_)) {
        AuthAction::Registration
    } else {
        AuthAction::Login
    };
    let event = match (&mut *state, message) {
        (
            State::Pending(slot, challenge),
            ClientMessage::Login(credentials) | ClientMessage::Register(credentials),
        ) => {
            let login = Login {
                credentials,
                challenge: challenge.clone(),
                action,
                // Its credentials are being checked: no longer closed to make room.
                pending: slot.take().map(super::admission::PendingSlot::checking),
                deadline: auth_deadline,
            };
            // The login's state (~1.1 KiB: the credentials, the waits for the throttle, the
            // hasher and the broker) is boxed: it lives for one login, and inline it would size
            // the session's future, which an idle connection keeps for hours.
            let joined = Box::pin(login::authenticate(remote, shared, outbox, login)).await?;
            *state = State::LoggedIn {
                id: joined.id,
                username: joined.username,
                replaced: joined.replaced,
            };
            return Ok(None);
        }
        (_, ClientMessage::Quit) => return Err(Disconnect::Quit),
        // Any line proves the client alive; `pong` needs nothing more.
        (_, ClientMessage::Pong) => return Ok(None),
        (_, ClientMessage::Ping) => {
            return match outbox.push(&ServerMessage::Pong) {
                Ok(()) => Ok(None),
                Err(_) => Err(Disconnect::SendQueueExceeded),
            }
        }
        (
            State::LoggedIn { .. },
            ClientMessage::Login(_) | ClientMessage::Register(_) | ClientMessage::CheckName { .. },
        ) => {
            return Ok(Some(ServerMessage::error(
                ErrorCode::AlreadyLoggedIn,
                "already logged in",
            )))
        }
        (
            State::Pending(..),
            ClientMessage::CheckName {
                username,
                tell_delays,
            },
        ) => {
            return Box::pin(login::check_name(
                remote,
                shared,
                outbox,
                &username,
                tell_delays,
            ))
            .await
            .map(Some)
        }
        (State::Pending(..), _) => {
            return Ok(Some(ServerMessage::error(
                ErrorCode::NotLoggedIn,
                "log in or register first",
            )))
        }
        // Checked, then relayed whole, whatever its kind.
        (State::LoggedIn { id, .. }, ClientMessage::Say(line)) => match line.check() {
            Ok(()) => Event::Say { id: *id, line },
            Err(refused) => {
                return Ok(Some(ServerMessage::error(
                    refused.code(),
                    refused.to_string(),
                )))
            }
        },
        (State::LoggedIn { id, .. }, ClientMessage::List) => Event::List { id: *id },
    };
    match broker.send(event).await {
        Ok(()) => Ok(None),
        Err(_) => Err(Disconnect::ServerShuttingDown),
    }
}
