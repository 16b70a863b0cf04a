//! The chat server: accepts connections, admits them within the connection limits
//! (`admission`), secures them (`transport`: the TLS handshake, or plaintext with
//! `--plaintext`), and serves each one (`session`, logging in through `login`, registering
//! within `registration_quota`) until it ends; gives memory freed after a storm back to the
//! system (`scavenger`); logs connections turned away before login per address, summarising
//! floods (`refusal_log`); on shutdown, tells every client and waits a moment for them.
//!
//! Each connection has a reader task (the session) and a writer task that drains the
//! connection's bounded send queue into the socket ([`crate::connection`]); neither ever waits on
//! another connection. Slow work (scrypt, fsync) runs on the blocking pool, so a login in progress
//! never stalls the chat. [`run`] takes a bound listener and a shutdown future, so tests and the
//! binary start it alike; it never binds, never parses flags and never installs signal handlers.
//! Every setting is a field of [`ServerConfig`] and a flag of [`ServerFlags`] (`config` says
//! where each default lives).

mod admission;
mod config;
mod context;
mod hasher;
mod login;
mod refusal_log;
mod registration_quota;
mod scavenger;
mod session;
mod transport;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::FutureExt;
use futures::{select, SinkExt, StreamExt};

pub use config::*;

use crate::address_key::{AddressGrouping, Ipv6Grouping};
use crate::broker::{self, Event};
use crate::connection;
use crate::login_throttle::LoginThrottle;
use crate::runtime::{self, TcpListener};
use crate::user_store::UserStore;
use admission::Admission;
use context::Context;
use hasher::HashQueue;
use refusal_log::RefusalLog;
use registration_quota::RegistrationQuota;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a shutdown waits for connections to finish before the server exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `listener` until `shutdown` completes, then tells every client, waits for the
/// connections to close (at most a few seconds), folds the users journal into the users file
/// and returns. While it serves, a thread folds the journal in whenever registrations pause
/// ([`crate::user_store::compactor`]).
pub async fn run(
    listener: TcpListener,
    store: Arc<UserStore>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = Box::pin(shutdown.fuse());
    let compactor = match store.start_compactor() {
        Ok(compactor) => Some(compactor),
        Err(e) => {
            // Registrations stay durable in the journal; it is folded in when it is full, at
            // shutdown and at the next start.
            log::error!("cannot start the users journal's compaction thread: {e}");
            None
        }
    };
    let (stop_connections, stop) = oneshot::channel::<()>();
    let (broker_tx, broker_rx) = mpsc::channel(broker::EVENT_QUEUE_CAPACITY);
    runtime::spawn(broker::run(broker_rx));
    // Every connection task holds a clone of `done`; when all are dropped, all have finished.
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let hash_workers = config.hash_workers.unwrap_or_else(|| {
        std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN)
    });
    // One grouping for every per-address limit, so that they all count an address alike.
    let addresses = AddressGrouping::new(config.ipv6_grouping);
    match config.ipv6_grouping {
        // Reads the server's networks now, and logs them.
        Ipv6Grouping::OwnNetworksByAddress => drop(addresses.own_networks()),
        Ipv6Grouping::Prefix(bits) => {
            log::info!(
                "IPv6 clients count by their /{bits} for the per-address limits (--ipv6-prefix)"
            )
        }
    }
    let shared = Arc::new(Context {
        throttle: LoginThrottle::with_addresses(config.login_throttle.clone(), addresses.clone()),
        registrations: RegistrationQuota::new(config.register_per_ip_hour, addresses.clone()),
        config,
        store,
        hashing: HashQueue::new(hash_workers),
        broker: broker_tx,
        next_session: AtomicU64::new(1),
        stop: stop.map(|_| ()).boxed().shared(),
    });
    let mut admission = Admission::new(addresses.clone());
    let refusals = Arc::new(RefusalLog::new(addresses));
    // Each minute, one line per address for what its flood did not log (`refusal_log`).
    let summarising = refusals.clone();
    let stop_summarising = shared.stop.clone();
    runtime::spawn(async move {
        loop {
            select! {
                _ = runtime::sleep(refusal_log::INTERVAL).fuse() => summarising.summarise(),
                _ = stop_summarising.clone().fuse() => break,
            }
        }
    });
    // Storms leave freed buffers resident; give them back while the server runs (`scavenger`).
    let stop_scavenging = shared.stop.clone();
    runtime::spawn(async move {
        select! {
            _ = scavenger::run().fuse() => {}
            _ = stop_scavenging.fuse() => {}
        }
    });

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
        let admitted = match admission.admit(&stream, remote, &shared.config) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let refused = format_args!("refused: {}", refusal.log);
                refusals.log(log::Level::Warn, remote, refused);
                admission.refuse(stream, *refusal.message);
                continue;
            }
        };
        let admission::Admitted {
            slot,
            pending,
            evicted,
        } = admitted;
        if let Some(evicted) = evicted {
            let waited = evicted.waited.as_secs_f64();
            let why = format_args!(
                "closed after {waited:.1} s without logging in, to make room for {remote} (server full)"
            );
            refusals.log(log::Level::Info, evicted.remote, why);
        }
        let shared = shared.clone();
        let refusals = refusals.clone();
        let done = done.clone();
        runtime::spawn(async move {
            // Logged in full once the handshake is done: a flood of failed handshakes is
            // summarised instead (`refusal_log`).
            log::debug!("{remote} connected");
            let connected = Instant::now();
            let deadline = connected + shared.config.auth_timeout;
            let establish = transport::establish(stream, &shared.config, connected, deadline);
            let established = select! {
                established = establish.fuse() => established,
                _ = shared.stop.clone().fuse() => Err(connection::Disconnect::ServerShuttingDown),
            };
            match established {
                Ok(stream) => {
                    log::info!("{remote} connected ({} connections)", slot.count());
                    session::serve(stream, remote, &shared, pending, connected).await;
                    drop(slot);
                    log::info!("{remote} closed");
                }
                Err(end) => {
                    // One line, once the connection no longer counts.
                    drop((pending, slot));
                    let end = format_args!("disconnected before login: {end}; closed");
                    refusals.log(log::Level::Info, remote, end);
                }
            }
            drop(done);
        });
    }

    log::info!("shutting down");
    let mut broker_tx = shared.broker.clone();
    // The lines the broker holds back for its tick go out before each client's `shutdown` notice.
    let (handed_out, flushed) = oneshot::channel();
    if broker_tx
        .send(Event::Shutdown { done: handed_out })
        .await
        .is_ok()
    {
        let _ = runtime::timeout(SHUTDOWN_GRACE, flushed).await;
    }
    let _ = stop_connections.send(());
    drop((broker_tx, shared, done));
    if runtime::timeout(SHUTDOWN_GRACE, all_done.next())
        .await
        .is_none()
    {
        log::warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
    }
    refusals.summarise();
    // A registration still hashing when the grace ended may append after this; the next start
    // folds it in.
    if let Some(compactor) = compactor {
        runtime::spawn_blocking(move || compactor.finish()).await;
    }
}
