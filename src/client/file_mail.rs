//! File messages (a transfer's offer and answers) on the direct-message path: sealed as their own
//! kind ([`Kind::File`]), acknowledged and sent again on the same schedule as a direct message
//! (`in_flight`), and what became of each, as [`FileNews`] for the transfers' table. Only sealed:
//! a file goes only to the peer whose pairwise keys seal its offer, so `--plaintext` has none.
//! The courier (`direct.rs`) sends them and keeps this table; this module never does I/O.

use std::collections::{HashMap, VecDeque};

use crate::protocol::file::{FileMessage, FileSignal, TransferId};
use crate::protocol::PeerInfo;
use crate::sealed::Kind;

use super::in_flight::{Busy, MAX_IN_FLIGHT};
use super::pairs::SealRefused;

/// What became of file messages, for the transfers' table: drained by the chat loop after each
/// datagram and timer, so it holds a handful; the bound only guards against a bug.
const MAX_NEWS: usize = MAX_IN_FLIGHT;

/// What happened to a file message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileNews {
    /// A new one from the online peer `from` (as the server spells the name), authentic.
    Arrived { from: String, message: FileMessage },
    /// The peer `to` acknowledged ours.
    Delivered {
        to: String,
        transfer: TransferId,
        signal: FileSignal,
    },
    /// Every try went unanswered, or the peer's session ended first.
    NotDelivered {
        to: String,
        transfer: TransferId,
        signal: FileSignal,
    },
}

/// Why a file message was not sent; each says so.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileNotSent {
    #[error("that is you: a file goes to someone else; nothing was sent")]
    ToSelf,
    #[error("no such user online: {to}; nothing was sent")]
    NotOnline { to: String },
    /// This client speaks the clear protocol: nothing to seal with.
    #[error("files are sent only sealed, and this client speaks the clear protocol (--plaintext); nothing was sent")]
    Plaintext,
    #[error("{to} speaks the clear protocol (--plaintext): a file goes only to a peer whose keys seal it; nothing was sent")]
    PeerIsClear { to: String },
    #[error("the file's name is too long for one datagram; nothing was sent")]
    TooLong,
    #[error("{0}; nothing was sent: wait for their delivery reports")]
    Busy(#[from] Busy),
    #[error("{0}; nothing was sent")]
    Refused(#[from] SealRefused),
    #[error("could not send to {} at {}: {source}", .peer.username, .peer.p2p_addr())]
    Network {
        peer: PeerInfo,
        source: std::io::Error,
    },
}

/// File messages awaiting an acknowledgement, and the news for the table.
#[derive(Debug, Default)]
pub(super) struct FileMail {
    /// (lower-cased peer name, message id) → the transfer and what it said.
    pending: HashMap<(String, u64), (TransferId, FileSignal)>,
    news: VecDeque<FileNews>,
}

impl FileMail {
    fn push(&mut self, news: FileNews) {
        if self.news.len() >= MAX_NEWS {
            self.news.pop_front();
        }
        self.news.push_back(news);
    }

    /// A file message from `from` passed the inbox.
    pub(super) fn arrived(&mut self, from: String, message: FileMessage) {
        self.push(FileNews::Arrived { from, message });
    }

    /// `to` acknowledged message `id`; whether it was a file message.
    pub(super) fn acked(&mut self, to: &str, id: u64) -> bool {
        let Some((transfer, signal)) = self.pending.remove(&(to.to_ascii_lowercase(), id)) else {
            return false;
        };
        self.push(FileNews::Delivered {
            to: to.to_string(),
            transfer,
            signal,
        });
        true
    }

    /// Message `id` to `to` went unanswered; whether it was a file message.
    pub(super) fn given_up(&mut self, to: &str, id: u64) -> bool {
        let Some((transfer, signal)) = self.pending.remove(&(to.to_ascii_lowercase(), id)) else {
            return false;
        };
        self.push(FileNews::NotDelivered {
            to: to.to_string(),
            transfer,
            signal,
        });
        true
    }

    /// How message `id` to `to` is sealed again.
    pub(super) fn kind_of(&self, to: &str, id: u64) -> Kind {
        if self.pending.contains_key(&(to.to_ascii_lowercase(), id)) {
            Kind::File
        } else {
            Kind::Message
        }
    }

    /// A file message `id` about `transfer` was sent to `to`: awaited as a direct message is.
    pub(super) fn sent(&mut self, to: &str, id: u64, transfer: TransferId, signal: FileSignal) {
        self.pending
            .insert((to.to_ascii_lowercase(), id), (transfer, signal));
    }

    /// What became of file messages since last asked, oldest first.
    pub(super) fn take_news(&mut self) -> Vec<FileNews> {
        self.news.drain(..).collect()
    }
}
