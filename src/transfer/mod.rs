//! Files straight to a peer: the engine that moves one file over one byte stream, and the
//! receiver's disk side. It keeps no client state and has no UI: the client (offers, answers,
//! the table of transfers, the listener, commands and events) calls it.
//!
//! - [`channel`]: the data connection's handshake (the receiver's clear [`channel::Opening`],
//!   fresh nonces from both sides, key confirmation both ways) and its sealed records.
//! - [`send`]: the sender's side (it listens): [`send::serve`] one file from the offset the
//!   receiver names.
//! - [`receive`]: the receiver's side (it connects, it pulls): [`receive::fetch`] into a
//!   [`Partial`], checked by size and SHA-256, renamed only then.
//! - [`partial`]: the partial file in the download folder, the free-space check, the final rename
//!   that never replaces a file.
//! - [`folder`]: which folder downloads go to (`--download-dir`, XDG, `~/Downloads`).
//! - [`name`]: a name a peer offered made safe to create.
//!
//! How the client drives it:
//! - **Offering** (sender): [`TransferId::generate`] and [`Source::of`] the path (only a regular
//!   file); keep both with the offer (the id names the transfer in every message; the source's
//!   size and modification time are what it serves, and it refuses a changed file).
//! - **Accepting** (receiver): [`folder::download_folder`] (`--download-dir`, XDG, `~/Downloads`),
//!   [`folder::create_folder`], [`partial::check_free_space`] for the size less
//!   [`Partial::len`] of any partial file, then [`Partial::open_or_create`] (the folder, the id
//!   and the offered name are all it needs to find the partial file again after a restart: store
//!   them with the transfer).
//! - **Serving** (sender, on its TCP listener at the `p2p_port`): [`read_opening`] on each accepted
//!   connection, look up [`Opening::transfer_id`] among this client's offers to the peer whose
//!   current session key id is [`Opening::receiver_key`] (and check [`Opening::sender_key`] is this
//!   session's), close the connection otherwise; then [`serve`] with
//!   `pair_keys.transfer_key(&id)`. Bound how many connections may be in their handshake at once.
//! - **Fetching** (receiver): connect to the sender's IP and `p2p_port`, set `TCP_NODELAY` (as the
//!   sender should on accepted connections: records go out as they are made), then [`fetch`] with
//!   a [`Request`] (the offered size) and `pair_keys.transfer_key(&id)`. On an error,
//!   [`TransferError::keeps_partial`] says whether to offer `/resume` (open the partial again) or
//!   to forget the transfer; a cancel drops the future and, on the receiver's side, removes the
//!   partial ([`Partial::remove`]).
//!
//! The keys come from the pair's ([`crate::sealed::PairKeys::transfer_key`]): a transfer is
//! readable and writable only by the two sessions that agreed on it, and a new session (after a
//! restart) derives the key again from its new pairwise keys, so resuming needs nothing stored
//! but the [`TransferId`]. The wire format is in docs/protocol.md, "File transfer: the data
//! connection". This module never logs a key, a nonce or file contents.

pub mod channel;
pub mod folder;
pub mod name;
pub mod partial;
pub mod receive;
pub mod send;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use channel::{read_opening, AbortReason, Opening, OpeningError};
pub use partial::Partial;
pub use receive::{fetch, Request, Saved};
pub use send::{serve, Served, Source};

/// Bytes of a [`TransferId`].
pub const TRANSFER_ID_BYTES: usize = 16;

/// Bytes of a SHA-256 digest, the whole file's checksum.
pub const SHA256_BYTES: usize = 32;

/// How long the handshake may take by default, from the first byte awaited to the last key
/// confirmation: a LAN peer answers in milliseconds; a stranger holding the port gets no longer.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a transfer may go without a record by default before it ends as stalled (the
/// partial file kept). The sender sends a keep-alive while it hashes a long prefix, so a slow
/// disk does not count as a stall.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Names one transfer, chosen at random by the sender when it offers the file: 16 bytes, shown and
/// stored as 32 lower-case hex digits. It names the transfer in the offer and its answer, in the
/// data connection's opening, in the partial file's name, and it is bound into the transfer's key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub [u8; TRANSFER_ID_BYTES]);

impl TransferId {
    /// A fresh id from the operating system's random source.
    ///
    /// # Panics
    /// When the system has no random source (the session keys could not be made either).
    pub fn generate() -> Self {
        let mut bytes = [0u8; TRANSFER_ID_BYTES];
        getrandom_bytes(&mut bytes);
        TransferId(bytes)
    }

    /// Parses the 32 hex digits of [`fmt::Display`]; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 2 * TRANSFER_ID_BYTES || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; TRANSFER_ID_BYTES];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(TransferId(bytes))
    }
}

/// Fills `bytes` from the operating system's random source.
///
/// # Panics
/// When the system has no random source: nothing secure can be made then (the session keys,
/// drawn from the same source, could not be made either).
pub(crate) fn getrandom_bytes(bytes: &mut [u8]) {
    getrandom::fill(bytes).expect("the operating system's random source");
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransferId({self})")
    }
}

impl Serialize for TransferId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TransferId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TransferId::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a transfer id is 32 lower-case hex digits"))
    }
}

/// The secret one transfer's data connections are keyed with, the same on both sides: derived
/// from the pair's keys and the [`TransferId`] ([`crate::sealed::PairKeys::transfer_key`]). Each
/// connection derives its own record keys from it and both sides' fresh nonces
/// ([`channel`]). Never printed, never stored.
#[derive(Clone)]
pub struct TransferKey(pub(crate) [u8; 32]);

impl TransferKey {
    /// A key from its 32 bytes: for tests and for [`crate::sealed`] alone; a real key comes from
    /// the pair's keys.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TransferKey(bytes)
    }
}

impl Drop for TransferKey {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

/// Never prints the key.
impl fmt::Debug for TransferKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransferKey(..)")
    }
}

/// The time limits of one data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole handshake, on either side (after [`read_opening`] on the sender's, which has
    /// its own deadline of the same length).
    pub handshake: Duration,
    /// The longest wait for the next record (receiver) or for the peer to take one (sender)
    /// before the transfer ends as [`TransferError::Stalled`].
    pub stall: Duration,
    /// The sender's record size: [`channel::MAX_RECORD_PLAINTEXT`] (more is sent as that); a
    /// receiver takes any size up to it. Smaller only to test many records on a small file.
    pub record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake: DEFAULT_HANDSHAKE_TIMEOUT,
            stall: DEFAULT_STALL_TIMEOUT,
            record_bytes: channel::MAX_RECORD_PLAINTEXT,
        }
    }
}

/// How far a transfer is, as both loops report it (after every record, so the caller decides how
/// often to show it): `done` counts the whole file's bytes, the resumed prefix included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// A disk operation, to name what failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskStep {
    /// Opening the file to send.
    OpenSource,
    /// Reading the file to send.
    ReadSource,
    /// Creating the download folder.
    CreateFolder,
    /// Creating the partial file.
    CreatePartial,
    /// Opening an existing partial file to resume it.
    OpenPartial,
    /// Reading the partial file's prefix to hash it.
    ReadPartial,
    /// Writing to the partial file.
    WritePartial,
    /// Flushing the partial file to disk (fsync).
    SyncPartial,
    /// Asking how much space the folder has (statvfs).
    FreeSpace,
    /// Renaming the checked partial file to its final name.
    Rename,
    /// Removing a partial file that is not worth keeping.
    RemovePartial,
}

impl fmt::Display for DiskStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskStep::OpenSource => "opening the file to send",
            DiskStep::ReadSource => "reading the file to send",
            DiskStep::CreateFolder => "creating the download folder",
            DiskStep::CreatePartial => "creating the partial file",
            DiskStep::OpenPartial => "opening the partial file",
            DiskStep::ReadPartial => "reading the partial file",
            DiskStep::WritePartial => "writing the partial file",
            DiskStep::SyncPartial => "syncing the partial file to disk",
            DiskStep::FreeSpace => "checking the free space",
            DiskStep::Rename => "renaming the finished file",
            DiskStep::RemovePartial => "removing the partial file",
        })
    }
}

/// Why a transfer (one data connection) ended without the file. [`TransferError::keeps_partial`]
/// says whether the receiver's partial file was kept for a resume or removed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The connection failed or was closed by the peer before the end.
    #[error("the data connection was lost: {0}")]
    Connection(#[source] io::Error),
    /// The handshake did not finish within [`Limits::handshake`].
    #[error("the peer did not finish the handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// The opening is not a p2pchat transfer's.
    #[error("the data connection's opening was refused: {0}")]
    Opening(#[from] OpeningError),
    /// The peer could not prove it holds the transfer's key (a stranger, or another session).
    #[error("the peer could not prove it holds this transfer's key")]
    WrongKey,
    /// No record within [`Limits::stall`].
    #[error("no data for {0:?}: the transfer stalled")]
    Stalled(Duration),
    /// A record did not open under the connection's key: changed on the way or forged. Nothing
    /// of it was written.
    #[error(
        "a record did not authenticate (changed on the way or forged); nothing of it was kept"
    )]
    Forged,
    /// A record's header is not one this version knows (type, length, direction).
    #[error("the peer sent a malformed record")]
    Malformed,
    /// The sender sent more bytes than the size offered.
    #[error("the sender sent more than the {offered} bytes offered")]
    TooLong { offered: u64 },
    /// The sender ended the file at another size than offered.
    #[error("the sender ended the file at {sent} bytes, not the {offered} offered")]
    SizeMismatch { offered: u64, sent: u64 },
    /// The whole file's SHA-256 does not match the sender's: the partial file is removed.
    #[error("the file's SHA-256 does not match the sender's")]
    HashMismatch,
    /// The resume offset is past the end of the file (the receiver's partial is longer than the
    /// file).
    #[error("the resume offset {offset} is past the file's {size} bytes")]
    OffsetBeyondEnd { offset: u64, size: u64 },
    /// The file to send changed (size or modification time) since it was offered.
    #[error("the file changed since it was offered; offer it again")]
    FileChanged,
    /// The peer ended the transfer, saying why.
    #[error("the peer ended the transfer: {0}")]
    Aborted(AbortReason),
    /// Not enough free space for what is left of the file.
    #[error("not enough free space in {folder}: {needed} bytes needed, {available} available")]
    NoSpace {
        folder: PathBuf,
        needed: u64,
        available: u64,
    },
    /// The disk filled up while writing (ENOSPC): the partial file is kept for a resume.
    #[error("the disk is full ({step}); the partial file is kept to resume")]
    DiskFull { step: DiskStep },
    /// Another disk operation failed.
    #[error("{step} failed: {source}")]
    Disk {
        step: DiskStep,
        #[source]
        source: io::Error,
    },
    /// Every free name `name (1)` … `name (N)` is taken in the download folder.
    #[error("no free name for the file in the download folder")]
    NoFreeName,
}

impl TransferError {
    /// A disk error, ENOSPC told apart.
    pub(crate) fn disk(step: DiskStep, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            TransferError::DiskFull { step }
        } else {
            TransferError::Disk { step, source }
        }
    }

    /// On the receiver's side: whether the partial file was kept (synced, a good prefix to resume
    /// from) rather than removed. It is removed only when what was received is known bad (a
    /// wrong hash, a wrong size, more bytes than offered, a partial file longer than the file) or
    /// can never be finished (the sender's file changed since the offer: a new offer is a new
    /// transfer).
    pub fn keeps_partial(&self) -> bool {
        !matches!(
            self,
            TransferError::HashMismatch
                | TransferError::SizeMismatch { .. }
                | TransferError::TooLong { .. }
                | TransferError::OffsetBeyondEnd { .. }
                | TransferError::Aborted(AbortReason::FileChanged | AbortReason::BadOffset)
        )
    }
}
