//! Admission: the connection limits as the accept loop applies them — how many connections are
//! served at once (`--max-clients`), how many from one address, logged in or not
//! (`--max-per-ip`), and how many of those have not logged in yet (`--max-pending-per-ip`) — and
//! the refusal of a connection beyond them.
//!
//! An address is an [`AddressKey`] (an IPv4 address; an IPv6 address on the server's own
//! networks, or another one's /64), as the server's [`AddressGrouping`] computes it. A
//! connection is counted by the slots it holds, which give their place back when dropped, so the
//! table of addresses only ever holds addresses with a connection open: it is bounded by
//! `--max-clients`. This module never reads from a connection it admits and never decides how one
//! is served.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// The connection limits, as the accept loop applies them.
#[derive(Default)]
pub(super) struct Admission {
    /// What one address is.
    addresses: AddressGrouping,
    active: Arc<AtomicUsize>,
    per_address: AddressTable,
    /// Refusals being written out right now.
    refusing: Arc<AtomicUsize>,
    refused_full: u64,
    refused_per_address: u64,
    refused_pending: u64,
}

/// Why a connection is not admitted: what to tell the client, and what to log.
pub(super) struct Refusal {
    pub(super) message: ServerMessage,
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

    /// Admits a connection from `ip` within the limits, or says why not.
    pub(super) fn admit(
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
        let key = self.addresses.key(ip);
        let mut table = lock(&self.per_address);
        let counts = table.entry(key).or_default();
        let refusal = if counts.open >= config.max_per_ip {
            self.refused_per_address += 1;
            Some(Refusal {
                message: ServerMessage::error(
                    ErrorCode::TooManyConnections,
                    format!(
                        "too many connections from your address: at most {} per address, logged in or not (--max-per-ip); close one and try again",
                        config.max_per_ip
                    ),
                ),
                log: format!(
                    "{} connections from {key} already (--max-per-ip; {} refused so far)",
                    config.max_per_ip, self.refused_per_address
                ),
            })
        } else if counts.pending >= config.max_pending_per_ip {
            self.refused_pending += 1;
            Some(Refusal {
                message: ServerMessage::error(
                    ErrorCode::TooManyConnections,
                    format!(
                        "too many connections from your address are not logged in yet (at most {}); log in on one of them first",
                        config.max_pending_per_ip
                    ),
                ),
                log: format!(
                    "{} connections from {key} not logged in yet ({} refused so far)",
                    config.max_pending_per_ip, self.refused_pending
                ),
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            if counts.open == 0 {
                table.remove(&key);
            }
            return Err(refusal);
        }
        counts.open += 1;
        counts.pending += 1;
        drop(table);
        self.active.fetch_add(1, Ordering::SeqCst);
        Ok((
            ConnectionSlot {
                active: self.active.clone(),
                key,
                table: self.per_address.clone(),
            },
            PendingSlot {
                key,
                table: self.per_address.clone(),
            },
        ))
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
        self.active.fetch_sub(1, Ordering::SeqCst);
        release(&self.table, self.key, |counts| &mut counts.open);
    }
}

/// Counts a connection for `--max-pending-per-ip` until it logs in (or ends): drop it then.
pub(super) struct PendingSlot {
    key: AddressKey,
    table: AddressTable,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
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

fn lock(table: &AddressTable) -> std::sync::MutexGuard<'_, HashMap<AddressKey, Counts>> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}
