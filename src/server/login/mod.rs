//! Letting a connection in: a login or registration checked against the user store (on the
//! blocking pool, in the order the hasher's queue gives: logins first), paced by the login
//! throttle, and handed to the broker, which refuses a name that is online already.
//!
//! Every refusal here ends the connection: the client is sent the (fatal) error and the caller
//! gets the [`Disconnect`] to log. This module never reads from the connection; the session does.
//!
//! A throttle's wait is told to a client that asks (`tell_delays`: a `delayed` line before the
//! wait), a login the throttle has no time for within `--login-delay-max` is refused at once
//! (`throttled`, with the seconds to wait; nothing is checked), and a login (never a registration) takes its name over from a session online under
//! it: the password's holder is never locked out by a session of theirs left behind.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::channel::oneshot;
use futures::future::FutureExt;
use futures::{select, SinkExt};

use super::admission::PendingSlot;
use super::context::{shutdown_notice, Context};
use super::hasher::{Busy, Entry, HashPermit};
use crate::broker::{Event, JoinRefused, SessionId};
use crate::connection::{AuthAction, Disconnect};
use crate::outbox::Outbox;
use crate::protocol::{Credentials, DelayReason, ErrorCode, PeerInfo, ServerMessage};
use crate::rules::validate_username;
use crate::runtime;
use crate::sealed::KeyChallenge;
use crate::user_store::AuthError;
use waits::{hold_back, wait_for_login_slot, wait_for_registration_slot, Delay};

mod waits;

/// A login or registration request, with the connection's place in its address's pending
/// count (freed once the credentials are checked).
pub(super) struct Login {
    pub(super) credentials: Credentials,
    /// What the connection's `hello` announced: a session key must be proved against it.
    pub(super) challenge: KeyChallenge,
    pub(super) action: AuthAction,
    pub(super) pending: Option<PendingSlot>,
    /// The connection's authentication deadline: the check must start by then (later by the
    /// login throttle's delay, if any), or the client is told `busy`.
    pub(super) deadline: Instant,
}

/// A session the broker took in.
pub(super) struct Joined {
    pub(super) id: SessionId,
    /// The name as registered.
    pub(super) username: String,
    /// Fires when a login from another connection takes the name over.
    pub(super) replaced: oneshot::Receiver<()>,
}

/// Logs a connection in or registers it, and hands it to the broker. On failure the client has
/// been sent the (fatal) error, and the reason to log is returned.
pub(super) async fn authenticate(
    remote: SocketAddr,
    shared: &Context,
    outbox: &mut Outbox,
    login: Login,
) -> Result<Joined, Disconnect> {
    let Login {
        credentials:
            Credentials {
                username,
                password,
                p2p_port,
                public_key,
                key_proof,
                identity_key,
                identity_binding,
                tell_delays,
            },
        challenge,
        action,
        pending,
        deadline,
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
    // Before anything costs the server a wait or a hash: a session key is only announced by the
    // holder of its secret, so no one can announce a key copied from the peer list.
    if let Some(key) = &public_key {
        if let Err(why) = challenge.check(&username, key, key_proof.as_ref()) {
            return Err(refuse(outbox, ErrorCode::KeyProofInvalid, why.to_string()));
        }
    }
    // The server keeps no identity: it only checks that what it will pass on is well formed, so
    // that a broken client learns it here rather than from every peer refusing it.
    if let Err(why) = crate::identity::check_announced(
        identity_key.as_ref(),
        identity_binding.as_ref(),
        &username,
        public_key.as_ref(),
    ) {
        return Err(refuse(outbox, ErrorCode::IdentityInvalid, why.to_string()));
    }
    // A name that breaks the rules can be no account: refused before it is booked in the
    // throttle, whose table is keyed by name (a 64 KiB "name" would cost that much per entry).
    if !register {
        if let Err(wrong) = validate_username(&username) {
            return Err(refuse(
                outbox,
                ErrorCode::InvalidUsername,
                format!("invalid username: {wrong}"),
            ));
        }
    }
    // The throttle's delay is the server's doing, not the client's: it does not eat into the
    // time the check has to start.
    // A login's booking is settled with its outcome below; dropped unsettled (busy, shutdown),
    // it was never checked and costs nothing.
    let (throttled, booked) = match register {
        true => (
            wait_for_registration_slot(remote, ip, tell_delays, shared, outbox).await?,
            None,
        ),
        false => {
            let (waited, booked) =
                wait_for_login_slot(remote, ip, &username, tell_delays, shared, outbox).await?;
            (waited, Some(booked))
        }
    };
    let hasher = wait_for_hasher(remote, action, &username, deadline + throttled, shared).await;
    if hasher.is_err() && register {
        // Nothing was checked: the registration gives its place in the quota back.
        shared.registrations.give_back(ip, Instant::now());
    }
    let permit = match hasher {
        Ok(permit) => permit,
        Err(Refusal::Busy(why)) => {
            // One line with the reason, as `refuse` would log it.
            log::warn!(
                "{remote}: {action} as {} refused: {} ({why})",
                for_log(&username),
                ErrorCode::Busy
            );
            let _ = outbox.push(&ServerMessage::error(ErrorCode::Busy, BUSY_MESSAGE));
            return Err(Disconnect::Refused {
                action,
                code: ErrorCode::Busy,
            });
        }
        Err(Refusal::ShuttingDown) => {
            let _ = outbox.push(&shutdown_notice());
            return Err(Disconnect::ServerShuttingDown);
        }
    };
    let store = shared.store.clone();
    let name = username.clone();
    let checked = runtime::spawn_blocking(move || {
        if register {
            store.register(&name, &password)
        } else {
            store.verify(&name, &password)
        }
    })
    .await;
    permit.finished();
    if register {
        registration_checked(ip, shared, &checked);
    }
    let username = match checked {
        Ok(username) => username,
        Err(error) => {
            let code = match &error {
                AuthError::BadCredentials => {
                    let (account, address) = booked
                        .map(|booked| booked.failed(Instant::now()))
                        .unwrap_or_default();
                    log::info!(
                        "{remote}: failed login as {}: {account} recent failures on the account, {address} from {ip}",
                        for_log(&username)
                    );
                    ErrorCode::BadCredentials
                }
                AuthError::NameTaken | AuthError::NameTooSimilar { .. } => ErrorCode::NameTaken,
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
    } else if let Some(booked) = booked {
        booked.succeeded(Instant::now());
    }
    // Authenticated: the connection no longer counts against its address's pending limit.
    drop(pending);

    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let (reply, answer) = oneshot::channel();
    let (replaced, told) = oneshot::channel();
    let peer = PeerInfo {
        username: username.clone(),
        ip,
        p2p_port,
        public_key,
        identity_key,
        identity_binding,
    };
    let join = Event::Join {
        id,
        peer,
        outbox: outbox.clone(),
        // The password is proved: a login takes its name over from a session left online
        // (a laptop that slept, a client elsewhere). A registration's name is new.
        takes_over: !register,
        replaced,
        reply,
    };
    let mut broker = shared.broker.clone();
    if broker.send(join).await.is_err() {
        return Err(Disconnect::ServerShuttingDown);
    }
    match answer.await {
        Ok(Ok(())) => {
            log::info!("{remote}: logged in as {username:?}");
            Ok(Joined {
                id,
                username,
                replaced: told,
            })
        }
        Ok(Err(JoinRefused::AlreadyOnline)) => Err(refuse(
            outbox,
            ErrorCode::AlreadyOnline,
            format!("{username} is already logged in from another connection"),
        )),
        Ok(Err(JoinRefused::EndpointInUse)) => Err(refuse(
            outbox,
            ErrorCode::EndpointInUse,
            format!(
                "another online user announced {ip} UDP port {p2p_port} for direct messages; use another --p2p-port (0 lets the system pick a free one)"
            ),
        )),
        Ok(Err(JoinRefused::KeyInUse)) => Err(refuse(
            outbox,
            ErrorCode::KeyInUse,
            "the session key announced is another session's, online or recently ended; log in again (a new session makes a new key)".into(),
        )),
        Ok(Err(JoinRefused::ShuttingDown)) | Err(_) => {
            let _ = outbox.push(&shutdown_notice());
            Err(Disconnect::ServerShuttingDown)
        }
    }
}

/// Answers `check_name` before login: `name_ok`, or a non-fatal `error` (`invalid_username`,
/// `name_taken`) — what a registration of that name would answer first, without a hash. So that
/// it is no cheaper an oracle of who has an account than registering, it waits for the address's
/// slot in the login throttle, and a `name_taken` answer counts there as a refused registration
/// does (flood control already counts it as a line).
pub(super) async fn check_name(
    remote: SocketAddr,
    shared: &Context,
    outbox: &mut Outbox,
    username: &str,
    tell_delays: bool,
) -> Result<ServerMessage, Disconnect> {
    let ip = remote.ip().to_canonical();
    let now = Instant::now();
    let (slot, count) = shared.throttle.book_registration(ip, now);
    let wait = slot.saturating_duration_since(now);
    if !wait.is_zero() {
        log::info!(
            "{remote}: name check delayed after {count} recent failures and registrations from the address ({:.1} s)",
            wait.as_secs_f64()
        );
        let delay = Delay {
            wait,
            reason: DelayReason::Address,
            tell: tell_delays,
        };
        if hold_back(delay, shared, outbox).await.is_err() {
            let _ = outbox.push(&shutdown_notice());
            return Err(Disconnect::ServerShuttingDown);
        }
    }
    Ok(match shared.store.check_name(username) {
        Ok(()) => ServerMessage::NameOk {
            username: username.to_string(),
        },
        Err(error) => {
            if tells_a_name_is_taken(&error) {
                shared.throttle.registered(ip, Instant::now());
            }
            let code = match error {
                AuthError::InvalidUsername(_) => ErrorCode::InvalidUsername,
                _ => ErrorCode::NameTaken,
            };
            // Not fatal: the person may try another name on the same connection.
            ServerMessage::Error {
                code,
                message: error.to_string(),
                fatal: false,
            }
        }
    })
}

/// What a client told `busy` reads.
const BUSY_MESSAGE: &str = "the server is busy; try again in a few seconds";

/// Why a request got no hasher.
enum Refusal {
    Busy(Busy),
    ShuttingDown,
}

/// Waits for the hasher's queue to hand this request a worker, at most until `deadline`: a request
/// that cannot start by then is refused at once, or when the deadline comes.
async fn wait_for_hasher<'a>(
    remote: SocketAddr,
    action: AuthAction,
    username: &str,
    deadline: Instant,
    shared: &'a Context,
) -> Result<HashPermit<'a>, Refusal> {
    let waiting = match shared.hashing.enter(action, deadline, Instant::now()) {
        Entry::Granted(permit) => return Ok(permit),
        Entry::Busy(why) => return Err(Refusal::Busy(why)),
        Entry::Queued(waiting) => waiting,
    };
    log::info!(
        "{remote}: {action} as {} waits for the hasher: {} ahead of it, {} waiting in all, about {:.1} s",
        for_log(username),
        waiting.ahead,
        waiting.waiting + 1,
        waiting.expected.as_secs_f64()
    );
    select! {
        permit = waiting.wait().fuse() => permit.map_err(Refusal::Busy),
        _ = shared.stop.clone().fuse() => Err(Refusal::ShuttingDown),
    }
}

/// Books a checked registration: back into the quota if it made no account, and in the login
/// throttle's address table if it told whether a name is taken. A registration that made an
/// account costs its place in the hourly quota and nothing more, so a class registering from
/// one lab machine or one NAT address is never slowed down.
fn registration_checked(ip: IpAddr, shared: &Context, outcome: &Result<String, AuthError>) {
    let now = Instant::now();
    if outcome.is_err() {
        shared.registrations.give_back(ip, now);
    }
    if let Err(error) = outcome {
        if tells_a_name_is_taken(error) {
            shared.throttle.registered(ip, now);
        }
    }
}

/// Whether a refusal tells that an account exists: what someone listing accounts learns, so it
/// counts in the address's throttle. Typing mistakes (an invalid name, a short password) do not.
fn tells_a_name_is_taken(error: &AuthError) -> bool {
    matches!(
        error,
        AuthError::NameTaken | AuthError::NameTooSimilar { .. }
    )
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
