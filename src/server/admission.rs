//! Admission: the connection limits as the accept loop applies them — how many connections are
//! served at once (`--max-clients`), how many from one address, logged in or not
//! (`--max-per-ip`), and how many of those have not logged in yet (`--max-pending-per-ip`) — and
//! the refusal of a connection beyond them.
//!
//! A full server makes room rather than refuse: it closes the oldest connection that has not
//! logged in and whose credentials are not being checked, so that idle or half-open sockets (a
//! stalled TLS handshake, a silent connection) cannot keep honest logins out while they hold
//! every seat. A logged-in connection is never closed for a newcomer; nor is one whose login or
//! registration is under way (waiting for the throttle or the hasher, or hashing): closing it
//! would throw away the work and could turn a flood of connections into a way to cut honest
//! logins off at their last step, and its wait is bounded already (the throttle's
//! `--login-delay-max`, the hasher's deadline). Only a newcomer within the per-address limits
//! makes room: the limits of its own address are checked first.
//!
//! An address is an [`AddressKey`] (an IPv4 address; an IPv6 address on the server's own
//! networks, or another one's /64), as the server's [`AddressGrouping`] computes it. A
//! connection is counted by the slots it holds, which give their place back when dropped, so the
//! table of addresses only ever holds addresses with a connection open: it is bounded by
//! `--max-clients` (and the few connections closed to make room that have not ended yet; their
//! sockets are shut down, so they end at once). This module never reads from a connection it admits and never decides how one
//! is served.

use std::collections::{BTreeMap, HashMap};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::ServerConfig;
use crate::address_key::{AddressGrouping, AddressKey};
use crate::connection::{self, LineReader};
use crate::protocol::{ErrorCode, ServerMessage, MAX_LINE_BYTES};
use crate::runtime::{self, TcpStream};

/// Refused connections being told why at once; beyond this a refused connection is closed
/// without a word, so that a connection flood cannot pin file descriptors in lingering closes.
const MAX_REFUSING: usize = 64;

/// One address's connections.
#[derive(Debug, Default)]
struct Counts {
    /// Every connection from the address, logged in or not.
    open: usize,
    /// Those not logged in yet.
    pending: usize,
}

/// Addresses with a connection open, and their counts.
type AddressTable = Arc<Mutex<HashMap<AddressKey, Counts>>>;

/// Connections that may be closed to make room (not logged in, no check under way), by order
/// of admission: the first is the oldest.
type Evictable = Arc<Mutex<BTreeMap<u64, Waiting>>>;

/// A connection that may be closed to make room.
struct Waiting {
    /// A handle on its socket, to shut it down: its task then sees the end of the stream
    /// wherever it waits (the TLS handshake, or the login line).
    stream: TcpStream,
    remote: SocketAddr,
    admitted: Instant,
    /// Whether it still holds its seat in `--max-clients`.
    seat: Arc<AtomicBool>,
}

/// A connection closed to make room for a newcomer.
pub(super) struct Evicted {
    pub(super) remote: SocketAddr,
    /// How long it had been connected without logging in.
    pub(super) waited: Duration,
}

/// An admitted connection: its slots, and the connection closed to make room for it, if any.
pub(super) struct Admitted {
    pub(super) slot: ConnectionSlot,
    pub(super) pending: PendingSlot,
    pub(super) evicted: Option<Evicted>,
}

/// The connection limits, as the accept loop applies them.
#[derive(Default)]
pub(super) struct Admission {
    /// What one address is.
    addresses: AddressGrouping,
    active: Arc<AtomicUsize>,
    per_address: AddressTable,
    evictable: Evictable,
    /// The next admitted connection's place in `evictable`'s order.
    next_admitted: u64,
    /// Refusals being written out right now.
    refusing: Arc<AtomicUsize>,
    refused_full: u64,
    refused_per_address: u64,
    refused_pending: u64,
}

/// Why a connection is not admitted: what to tell the client, and what to log.
pub(super) struct Refusal {
    /// Boxed: a server message holds a whole peer entry (keys and identity), and a refusal is
    /// returned on every admission's path.
    pub(super) message: Box<ServerMessage>,
    pub(super) log: String,
}

impl Admission {
    /// Limits that count addresses as `addresses` says (the server's, shared by its limits).
    pub(super) fn new(addresses: AddressGrouping) -> Admission {
        Admission {
            addresses,
            ..Admission::default()
        }
    }

    /// Admits `stream`, from `remote`, within the limits (closing the oldest connection not
    /// logged in when the server is full), or says why not.
    pub(super) fn admit(
        &mut self,
        stream: &TcpStream,
        remote: SocketAddr,
        config: &ServerConfig,
    ) -> Result<Admitted, Refusal> {
        let full = self.active.load(Ordering::SeqCst) >= config.max_clients;
        if full && lock(&self.evictable).is_empty() {
            return Err(self.full(config));
        }
        let key = self.addresses.key(remote.ip().to_canonical());
        if let Some(refusal) = self.address_refusal(key, config) {
            return Err(refusal);
        }
        let evicted = match full {
            true => match self.evict_oldest() {
                Some(evicted) => Some(evicted),
                // It logged in or ended since the look above.
                None => return Err(self.full(config)),
            },
            false => None,
        };
        {
            let mut table = lock(&self.per_address);
            let counts = table.entry(key).or_default();
            counts.open += 1;
            counts.pending += 1;
        }
        self.active.fetch_add(1, Ordering::SeqCst);
        let seat = Arc::new(AtomicBool::new(true));
        let admitted = self.next_admitted;
        self.next_admitted += 1;
        lock(&self.evictable).insert(
            admitted,
            Waiting {
                stream: stream.clone(),
                remote,
                admitted: Instant::now(),
                seat: seat.clone(),
            },
        );
        Ok(Admitted {
            slot: ConnectionSlot {
                active: self.active.clone(),
                seat,
                key,
                table: self.per_address.clone(),
            },
            pending: PendingSlot {
                key,
                table: self.per_address.clone(),
                admitted: Some(admitted),
                evictable: self.evictable.clone(),
            },
            evicted,
        })
    }

    /// The refusal of a full server, counted.
    fn full(&mut self, config: &ServerConfig) -> Refusal {
        self.refused_full += 1;
        Refusal {
            message: Box::new(ServerMessage::error(
                ErrorCode::ServerFull,
                format!(
                    "the server is full ({} connections); try again later",
                    config.max_clients
                ),
            )),
            log: format!(
                "server full ({} connections; {} refused so far)",
                config.max_clients, self.refused_full
            ),
        }
    }

    /// Closes the oldest connection that may be closed to make room, and takes its seat back
    /// at once (its task ends as soon as it sees the end of its stream).
    fn evict_oldest(&mut self) -> Option<Evicted> {
        let (_, oldest) = lock(&self.evictable).pop_first()?;
        if oldest.seat.swap(false, Ordering::SeqCst) {
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
        let _ = oldest.stream.shutdown(Shutdown::Both);
        Some(Evicted {
            remote: oldest.remote,
            waited: oldest.admitted.elapsed(),
        })
    }

    /// Why `key` may not open another connection, if it may not.
    fn address_refusal(&mut self, key: AddressKey, config: &ServerConfig) -> Option<Refusal> {
        let table = lock(&self.per_address);
        let counts = table.get(&key)?;
        if counts.open >= config.max_per_ip {
            self.refused_per_address += 1;
            Some(Refusal {
                message: Box::new(ServerMessage::error(
                    ErrorCode::TooManyConnections,
                    format!(
                        "too many connections from your address: at most {} per address, logged in or not (--max-per-ip); close one and try again",
                        config.max_per_ip
                    ),
                )),
                log: format!(
                    "{} connections from {key} already (--max-per-ip; {} refused so far)",
                    config.max_per_ip, self.refused_per_address
                ),
            })
        } else if counts.pending >= config.max_pending_per_ip {
            self.refused_pending += 1;
            Some(Refusal {
                message: Box::new(ServerMessage::error(
                    ErrorCode::TooManyConnections,
                    format!(
                        "too many connections from your address are not logged in yet (at most {}); log in on one of them first",
                        config.max_pending_per_ip
                    ),
                )),
                log: format!(
                    "{} connections from {key} not logged in yet ({} refused so far)",
                    config.max_pending_per_ip, self.refused_pending
                ),
            })
        } else {
            None
        }
    }

    /// Tells a connection beyond a limit why it is refused, then closes it; closes it at once if
    /// too many refusals are being written already.
    pub(super) fn refuse(&self, stream: TcpStream, message: ServerMessage) {
        if self.refusing.load(Ordering::SeqCst) >= MAX_REFUSING {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        self.refusing.fetch_add(1, Ordering::SeqCst);
        let refusing = self.refusing.clone();
        runtime::spawn(async move {
            let mut out = stream.clone();
            let write = async move {
                let _ = connection::write_message(&mut out, &message).await;
            };
            let mut reader = LineReader::new(stream.clone(), MAX_LINE_BYTES);
            connection::close_lingering(&stream, &mut reader, write).await;
            refusing.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Counts a connection for `--max-clients` and `--max-per-ip` for as long as it lives.
pub(super) struct ConnectionSlot {
    active: Arc<AtomicUsize>,
    /// Whether it still holds its seat in `active`: a connection closed to make room gave its
    /// seat to the newcomer already.
    seat: Arc<AtomicBool>,
    key: AddressKey,
    table: AddressTable,
}

impl ConnectionSlot {
    /// Connections served right now, this one included.
    pub(super) fn count(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if self.seat.swap(false, Ordering::SeqCst) {
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
        release(&self.table, self.key, |counts| &mut counts.open);
    }
}

/// Counts a connection for `--max-pending-per-ip` until it logs in (or ends): drop it then.
/// Until its credentials are handed to the check ([`PendingSlot::checking`]), the connection
/// may also be closed to make room on a full server.
pub(super) struct PendingSlot {
    key: AddressKey,
    table: AddressTable,
    /// Its place in `evictable`, while it has one.
    admitted: Option<u64>,
    evictable: Evictable,
}

impl PendingSlot {
    /// The connection's login or registration is being checked: from now on it is not closed
    /// to make room (see the module's header for why).
    pub(super) fn checking(mut self) -> Self {
        self.leave_evictable();
        self
    }

    fn leave_evictable(&mut self) {
        if let Some(admitted) = self.admitted.take() {
            lock(&self.evictable).remove(&admitted);
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.leave_evictable();
        release(&self.table, self.key, |counts| &mut counts.pending);
    }
}

/// Gives back one of `key`'s places (the count `which` picks); forgets the address once it has
/// no connection left.
fn release(table: &AddressTable, key: AddressKey, which: fn(&mut Counts) -> &mut usize) {
    let mut table = lock(table);
    if let Some(counts) = table.get_mut(&key) {
        let count = which(counts);
        *count = count.saturating_sub(1);
        if counts.open == 0 && counts.pending == 0 {
            table.remove(&key);
        }
    }
}

/// Locks a table; a panic elsewhere leaves counts that are still counts.
fn lock<T>(table: &Mutex<T>) -> MutexGuard<'_, T> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}
