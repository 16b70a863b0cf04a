//! Letting a connection in: a login or registration checked against the user store (on the
//! blocking pool, a few at a time), paced by the login throttle, and handed to the broker, which
//! refuses a name that is online already.
//!
//! Every refusal here ends the connection: the client is sent the (fatal) error and the caller
//! gets the [`Disconnect`] to log. This module never reads from the connection; the session does.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::channel::oneshot;
use futures::future::FutureExt;
use futures::{select, SinkExt};

use super::admission::PendingSlot;
use super::context::{shutdown_notice, Context};
use crate::broker::{Event, JoinRefused, SessionId};
use crate::connection::{AuthAction, Disconnect};
use crate::outbox::Outbox;
use crate::protocol::{Credentials, ErrorCode, PeerInfo, ServerMessage};
use crate::runtime;
use crate::user_store::AuthError;

/// A login or registration request, with the connection's place in its address's pending
/// count (freed once the credentials are checked).
pub(super) struct Login {
    pub(super) credentials: Credentials,
    pub(super) action: AuthAction,
    pub(super) pending: Option<PendingSlot>,
}

/// Logs a connection in or registers it, and hands it to the broker: its session id and its
/// name as registered. On failure the client has been sent the (fatal) error, and the reason to
/// log is returned.
pub(super) async fn authenticate(
    remote: SocketAddr,
    shared: &Context,
    outbox: &mut Outbox,
    login: Login,
) -> Result<(SessionId, String), Disconnect> {
    let Login {
        credentials:
            Credentials {
                username,
                password,
                p2p_port,
                public_key,
            },
        action,
        pending,
    } = login;
    let register = action == AuthAction::Registration;
    let ip = remote.ip().to_canonical();
    let refuse = |outbox: &mut Outbox, code: ErrorCode, message: String| {
        log::warn!(
            "{remote}: {action} as {} refused: {code}",
            for_log(&username)
        );
        let _ = outbox.push(&ServerMessage::error(code, message));
        Disconnect::Refused { action, code }
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
        public_key,
    };
    let join = Event::Join {
        id,
        peer,
        outbox: outbox.clone(),
        reply,
    };
    let mut broker = shared.broker.clone();
    if broker.send(join).await.is_err() {
        return Err(Disconnect::ServerShuttingDown);
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
            let _ = outbox.push(&shutdown_notice());
            Err(Disconnect::ServerShuttingDown)
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
) -> Result<(), Disconnect> {
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
            let _ = outbox.push(&shutdown_notice());
            Err(Disconnect::ServerShuttingDown)
        }
    }
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
