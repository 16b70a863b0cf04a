//! What file transfers feed the chat loop (through one bounded channel, merged into its inputs
//! by `inputs`): a running transfer's progress and end, and a connection accepted on the transfer
//! port with its opening read. The loop hands each back to the transfers' table.

use std::net::SocketAddr;

use futures::channel::oneshot;
use futures::future::AbortHandle;

use super::listener::OpeningSlot;
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
