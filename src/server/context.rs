//! What every connection task of one server shares: the configuration, the user store, the login
//! throttle, the registration quota, the way to the broker, and the shutdown signal.
//!
//! Built once by [`run`](super::run) and read by the sessions; it holds no per-connection state
//! and does no work of its own.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::future::{BoxFuture, Shared};

use super::hasher::HashQueue;
use super::registration_quota::RegistrationQuota;
use super::ServerConfig;
use crate::broker::Event;
use crate::login_throttle::LoginThrottle;
use crate::protocol::ServerMessage;
use crate::user_store::UserStore;

/// Completes (for every clone) once the server is stopping.
pub(super) type ShutdownSignal = Shared<BoxFuture<'static, ()>>;

/// What every connection task shares.
pub(super) struct Context {
    pub(super) config: ServerConfig,
    pub(super) store: Arc<UserStore>,
    /// Who hashes next: one scrypt computation per worker at once (one per core by default; each
    /// takes 128 MiB at the default cost), logins ahead of registrations.
    pub(super) hashing: HashQueue,
    pub(super) throttle: LoginThrottle,
    /// Accounts per address per hour.
    pub(super) registrations: RegistrationQuota,
    pub(super) broker: mpsc::Sender<Event>,
    pub(super) next_session: AtomicU64,
    /// Fires once the broker has been told to stop, so that the departures of connections that
    /// are closing for the shutdown are never announced.
    pub(super) stop: ShutdownSignal,
}

/// What every connection is told when the server stops.
pub(super) fn shutdown_notice() -> ServerMessage {
    ServerMessage::Shutdown {
        reason: "the server is shutting down".into(),
    }
}
