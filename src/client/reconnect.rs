//! Reconnecting: whether to ([`Reconnect`]), the waits between tries (1 s doubling to 30 s, with
//! jitter), which failures are worth another try, and one try — connect, the fingerprint this
//! session trusted, `hello`, log in again under a new session key, all through
//! [`link`](super::link). The chat loop ([`session`](super::session)) decides when to try and
//! what to do with the outcome.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::error::{ClientError, Disconnect, NotTrusted};
use super::event::ClientEvent;
use super::link::{self, AuthMode, LoggedIn, Opened};
use super::secure::{Transport, Trust, TrustOutcome};
use crate::identity::IdentityKey;
use crate::protocol::ErrorCode;

/// The first wait before connecting again; it doubles after each failed try.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two tries.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Each wait is spread by up to this share either way.
const RECONNECT_JITTER: f64 = 0.2;

/// Whether the client connects again when it loses the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Exit (status 5) on loss: scripts' default.
    Never,
    /// Connect again with backoff, and log in again: a terminal's default.
    WithBackoff,
}

/// A connection made again and logged in.
pub(super) struct Relinked {
    pub(super) opened: Opened,
    pub(super) logged_in: LoggedIn,
}

/// What reconnecting needs, all of it owned (it runs in a task of its own).
#[derive(Clone)]
pub(super) struct Redial {
    pub(super) server: String,
    /// Why this session trusted the server (and so the fingerprint it requires); `None` for
    /// the plaintext protocol.
    pub(super) pinned: Option<TrustOutcome>,
    pub(super) username: String,
    pub(super) password: String,
    pub(super) p2p_port: u16,
    /// The account's identity, to bind each new session key to it; `None` with `--plaintext`
    /// (no session key either).
    pub(super) sealing: Option<IdentityKey>,
}

/// The waits between reconnect tries.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff {
            next: RECONNECT_FIRST,
        }
    }

    /// The next wait (with jitter); the one after is twice as long, up to the maximum.
    pub(super) fn take(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(RECONNECT_MAX);
        // A random number without a new dependency: std's hasher keys are random per process
        // and change with every `RandomState`.
        let random = RandomState::new().build_hasher().finish();
        let unit = (random % 1_000_000) as f64 / 1_000_000.0;
        base.mul_f64(1.0 - RECONNECT_JITTER + 2.0 * RECONNECT_JITTER * unit)
    }
}

/// A failed reconnect that may work later: the server still down or not yet listening, or not
/// yet done with this user's old connection. Anything else — a refused login, a changed
/// fingerprint — is the end.
pub(super) fn worth_trying_again(error: &ClientError) -> bool {
    match error {
        ClientError::Unreachable { .. } | ClientError::Disconnected(_) => true,
        ClientError::Refused { code, .. } => matches!(
            code,
            ErrorCode::AlreadyOnline
                | ErrorCode::EndpointInUse
                | ErrorCode::Busy
                | ErrorCode::Throttled
        ),
        ClientError::Local(_)
        | ClientError::NotTrusted { .. }
        | ClientError::Ambiguous(_)
        | ClientError::AcceptNewWithoutServer => false,
    }
}

/// Whether losing the server this way is worth connecting again for: not when the account
/// logged in from another connection (`replaced`), which would take the name back, and be
/// replaced in turn.
pub(super) fn worth_reconnecting(why: &Disconnect) -> bool {
    !matches!(
        why,
        Disconnect::Fatal {
            code: ErrorCode::Replaced,
            ..
        }
    )
}

/// One reconnect try: connect, the same fingerprint as before, `hello`, and log in again.
pub(super) async fn redial_once(redial: Redial) -> Result<Relinked, ClientError> {
    let transport = match &redial.pinned {
        Some(trusted) => Transport::Tls(Trust::Required(trusted.fingerprint())),
        None => Transport::Plaintext,
    };
    let mut opened = link::open(&redial.server, transport)
        .await
        .map_err(|error| as_pinned(error, redial.pinned.as_ref()))?;
    let logged_in = opened
        .link
        .log_in(
            AuthMode::Login,
            &redial.username,
            &redial.password,
            redial.p2p_port,
            redial.sealing.as_ref(),
            // A try runs in a task of its own, away from the screen: a wait it meets is only
            // the time the try takes.
            &mut |_: ClientEvent| {},
        )
        .await?;
    Ok(Relinked { opened, logged_in })
}

/// A reconnect met another fingerprint than the session's: said as what the person relied on.
/// A session that trusted the known-servers file gets the same warning as at start (SERVER
/// IDENTIFICATION HAS CHANGED, the file's line, how to forget it), not the words for `--trust`,
/// which was never given; a `--trust` session keeps them.
fn as_pinned(error: ClientError, trusted: Option<&TrustOutcome>) -> ClientError {
    let (
        ClientError::NotTrusted {
            server,
            why:
                NotTrusted::NotRequired {
                    presented,
                    required,
                },
        },
        Some(TrustOutcome::Known { file, line, .. } | TrustOutcome::Recorded { file, line, .. }),
    ) = (&error, trusted)
    else {
        return error;
    };
    ClientError::NotTrusted {
        server: server.clone(),
        why: NotTrusted::Changed {
            presented: *presented,
            pinned: *required,
            file: file.clone(),
            line: *line,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::error::{Local, Unreachable};
    use crate::tls::Fingerprint;

    #[test]
    fn the_backoff_doubles_to_thirty_seconds_with_jitter() {
        let mut backoff = Backoff::new();
        let waits: Vec<f64> = (0..8).map(|_| backoff.take().as_secs_f64()).collect();
        for (wait, base) in waits
            .iter()
            .zip([1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])
        {
            assert!(
                (base * 0.8..=base * 1.2).contains(wait),
                "{wait} s for a base of {base} s"
            );
        }
    }

    #[test]
    fn only_a_passing_refusal_is_tried_again() {
        let refused = |code| ClientError::Refused {
            code,
            message: String::new(),
        };
        assert!(worth_trying_again(&ClientError::unreachable(
            "h:1",
            Unreachable::NoAddress
        )));
        assert!(worth_trying_again(&Disconnect::Closed.into()));
        assert!(worth_trying_again(&refused(ErrorCode::AlreadyOnline)));
        assert!(worth_trying_again(&refused(ErrorCode::Busy)));
        assert!(!worth_trying_again(&refused(ErrorCode::BadCredentials)));
        assert!(!worth_trying_again(&ClientError::not_trusted(
            "h:1",
            NotTrusted::Declined {
                fingerprint: Fingerprint::of_certificate(b"cert")
            }
        )));
        assert!(!worth_trying_again(&Local::InputEnded.into()));
    }

    #[test]
    fn a_session_replaced_by_another_login_is_not_connected_again() {
        let fatal = |code| Disconnect::Fatal {
            code,
            message: String::new(),
        };
        assert!(!worth_reconnecting(&fatal(ErrorCode::Replaced)));
        assert!(worth_reconnecting(&fatal(ErrorCode::PingTimeout)));
        assert!(worth_reconnecting(&Disconnect::Closed));
    }
}
