//! Admission: the connection limits as the accept loop applies them — how many connections are
//! served at once (`--max-clients`) and how many from one address have not logged in yet
//! (`--max-pending-per-ip`) — and the refusal of a connection beyond them.
//!
//! A connection is counted by the slots it holds, which give their place back when dropped; this
//! module never reads from a connection it admits and never decides how one is served.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::ServerConfig;
use crate::connection::{self, LineReader};
use crate::protocol::{ErrorCode, ServerMessage, MAX_LINE_BYTES};
use crate::runtime::{self, TcpStream};

/// Refused connections being told why at once; beyond this a refused connection is closed
/// without a word, so that a connection flood cannot pin file descriptors in lingering closes.
const MAX_REFUSING: usize = 64;

/// The connection limits, as the accept loop applies them.
#[derive(Default)]
pub(super) struct Admission {
    active: Arc<AtomicUsize>,
    /// Connections not logged in yet, per address.
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Refusals being written out right now.
    refusing: Arc<AtomicUsize>,
    refused_full: u64,
    refused_per_ip: u64,
}

/// Why a connection is not admitted: what to tell the client, and what to log.
pub(super) struct Refusal {
    pub(super) message: ServerMessage,
    pub(super) log: String,
}

impl Admission {
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
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let count = pending.entry(ip).or_insert(0);
        if *count >= config.max_pending_per_ip {
            self.refused_per_ip += 1;
            return Err(Refusal {
                message: ServerMessage::error(
                    ErrorCode::TooManyConnections,
                    format!(
                        "too many connections from your address are not logged in yet (at most {}); log in on one of them first",
                        config.max_pending_per_ip
                    ),
                ),
                log: format!(
                    "{} connections from {ip} not logged in yet ({} refused so far)",
                    config.max_pending_per_ip, self.refused_per_ip
                ),
            });
        }
        *count += 1;
        drop(pending);
        self.active.fetch_add(1, Ordering::SeqCst);
        Ok((
            ConnectionSlot(self.active.clone()),
            PendingSlot {
                ip,
                table: self.pending.clone(),
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

/// Counts a connection for `--max-clients` for as long as it lives.
pub(super) struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    /// Connections served right now, this one included.
    pub(super) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a connection for `--max-pending-per-ip` until it logs in (or ends): drop it then.
pub(super) struct PendingSlot {
    ip: IpAddr,
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = table.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                table.remove(&self.ip);
            }
        }
    }
}
