//! What file transfers feed the chat loop (through one bounded channel, merged into its inputs
//! by `inputs`): a running transfer's progress and end, and a connection accepted on the transfer
//! port with its opening read. The loop hands each back to the transfers' table.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::oneshot;
use futures::future::AbortHandle;

use crate::protocol::file::TransferId;
use crate::runtime::TcpStream;
use crate::transfer::{Opening, Progress, Saved, Served, TransferError};

/// One input from the transfers' tasks.
pub(crate) enum TransferInput {
    /// Run number `run` of transfer `id` made progress.
    Progress {
        id: TransferId,
        run: u64,
        progress: Progress,
    },
    /// Run number `run` of transfer `id` ended.
    Ended {
        id: TransferId,
        run: u64,
        outcome: Outcome,
    },
    /// Run number `run` of outgoing transfer `id` passed its handshake (the receiver holds the
    /// key) from `offset`: it becomes the transfer's run, replacing any other, when the chat
    /// loop answers on `go`; dropping `go` closes it.
    Proven {
        id: TransferId,
        run: u64,
        abort: AbortHandle,
        offset: u64,
        go: oneshot::Sender<()>,
    },
    /// A connection for outgoing transfer `id` failed its handshake; the transfer is as it was.
    Unproven { id: TransferId },
    /// A connection to the transfer port from `remote`, whose opening names a transfer; nothing
    /// was sent on it yet.
    Connection {
        stream: TcpStream,
        remote: SocketAddr,
        opening: Opening,
        /// Its place among the connections the listener holds, given back when dropped (once
        /// the chat loop has handled it), so queued connections count against the bounds too.
        slot: OpeningSlot,
    },
}

/// How one run of a transfer ended.
pub(crate) enum Outcome {
    /// The receiver has the whole file, checked.
    Served(Served),
    /// This client has the whole file, checked, saved.
    Saved(Saved),
    /// It stopped.
    Failed(TransferError),
}

/// The places taken among the connections the listener holds (its `MAX_OPENINGS` and
/// `MAX_OPENINGS_PER_IP`), in all and by source IP.
#[derive(Debug, Default)]
pub(crate) struct Held {
    all: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// A connection's place among those the listener holds; dropping it gives it back.
pub(crate) struct OpeningSlot {
    held: Arc<Mutex<Held>>,
    ip: IpAddr,
}

impl OpeningSlot {
    /// A place for a connection from `ip`, if fewer than `all` are taken and fewer than
    /// `per_ip` from `ip`.
    pub(crate) fn take(
        held: &Arc<Mutex<Held>>,
        ip: IpAddr,
        all: usize,
        per_ip: usize,
    ) -> Option<OpeningSlot> {
        let mut taken = held.lock().unwrap_or_else(PoisonError::into_inner);
        let from_ip = taken.by_ip.get(&ip).copied().unwrap_or(0);
        if taken.all >= all || from_ip >= per_ip {
            return None;
        }
        taken.all += 1;
        taken.by_ip.insert(ip, from_ip + 1);
        Some(OpeningSlot {
            held: held.clone(),
            ip,
        })
    }
}

impl Drop for OpeningSlot {
    fn drop(&mut self) {
        let mut taken = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        taken.all = taken.all.saturating_sub(1);
        if let Some(n) = taken.by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                taken.by_ip.remove(&self.ip);
            }
        }
    }
}
