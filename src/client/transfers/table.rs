//! The table's types: an entry (one offer or transfer) and where it stands, the table itself,
//! what the chat lends it to act ([`Net`]), its bounds, and why a command did nothing
//! ([`Refused`]). What moves an entry along is in the sibling modules: `commands` (the person's),
//! `messages` (the peer's), `runs` (the data connections), the parent (time and presence).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use futures::channel::mpsc;
use futures::future::AbortHandle;

use super::input::TransferInput;
use super::listener::FilesOff;
use super::store::{self, Record, Store};
use crate::client::config::FileSettings;
use crate::client::direct::Courier;
use crate::client::file_size::{Bytes, FileSizeLimit};
use crate::client::peer_list::PeerList;
use crate::client::transfer_event::{Direction, Stage};
use crate::protocol::file::TransferId;
use crate::transfer::{AbortReason, Source, TransferError};

/// Outgoing entries (offers and transfers) at once; one more `/send` is refused.
pub const MAX_OUTGOING: usize = 64;

/// Incoming entries at once.
pub const MAX_INCOMING: usize = 64;

/// Unanswered offers received at once: a peer cannot fill the table with offers nobody asked
/// for; more are declined, with a warning.
pub const MAX_UNANSWERED_OFFERS: usize = 16;

/// An interrupted incoming transfer tries again by itself after this wait, doubling...
pub const FIRST_RETRY: Duration = Duration::from_secs(2);

/// ...up to this one.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// How long an unfinished transfer is remembered across restarts, from its offer: a week.
pub(super) const RECORD_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Inputs from the transfers' tasks waiting for the chat loop; a run's end waits for room,
/// progress is skipped when it is full.
pub(super) const TRANSFER_INPUTS: usize = 32;

/// Where an entry stands.
pub(super) enum State {
    Offered,
    /// Accepted, not running now (and not yet interrupted).
    Accepted,
    Running {
        run: u64,
        abort: AbortHandle,
        /// When this run started, and from how many bytes: the rate.
        meter: Meter,
        /// Where it resumes from.
        offset: u64,
        /// Whether `file_started` was said: only once the first record passed the handshake,
        /// so a connection that cannot prove itself starts nothing.
        announced: bool,
        /// Whether the entry was an unanswered offer before this run (a sender served a
        /// connection that overtook the `file_accept`).
        was_offered: bool,
    },
    Interrupted,
}

/// The rate of a run: bytes and time at the last report.
#[derive(Debug, Clone, Copy)]
pub(super) struct Meter {
    pub(super) at: Instant,
    pub(super) bytes: u64,
}

/// One offer or transfer.
pub(super) struct Entry {
    pub(super) direction: Direction,
    /// The peer as the server spells the name.
    pub(super) peer: String,
    pub(super) name: String,
    pub(super) size: u64,
    /// Outgoing: the file as offered.
    pub(super) source: Option<Source>,
    /// Incoming, once accepted: the download folder.
    pub(super) folder: Option<PathBuf>,
    pub(super) offered_at: SystemTime,
    pub(super) state: State,
    /// Bytes done, as far as this side knows.
    pub(super) bytes: u64,
    /// Incoming: when to try again by itself, and the wait after that.
    pub(super) retry_at: Option<Instant>,
    pub(super) retry_wait: Duration,
}

impl Entry {
    pub(super) fn record(&self, id: TransferId) -> Record {
        Record {
            transfer: id,
            direction: self.direction,
            peer: self.peer.clone(),
            name: self.name.clone(),
            size: self.size,
            path: self.source.as_ref().map(|s| s.path.clone()),
            modified_ns: self.source.as_ref().map(|s| store::to_nanos(s.modified)),
            folder: self.folder.clone(),
            offered_at: store::unix_seconds(self.offered_at),
            accepted: !matches!(self.state, State::Offered),
        }
    }

    pub(super) fn is_peer(&self, name: &str) -> bool {
        self.peer.eq_ignore_ascii_case(name)
    }

    pub(super) fn stage(&self) -> Stage {
        match self.state {
            State::Offered => Stage::Offered,
            State::Accepted => Stage::Accepted,
            State::Running { .. } => Stage::Running,
            State::Interrupted => Stage::Interrupted,
        }
    }

    pub(super) fn stop(&mut self) {
        if let State::Running { abort, .. } = &self.state {
            abort.abort();
        }
    }
}

/// What the chat loop lends the table to act: the courier (to send file messages, and the
/// pair's keys), who is online, and this session's name.
pub(crate) struct Net<'a> {
    pub(crate) courier: &'a mut Courier,
    pub(crate) peers: &'a PeerList,
    pub(crate) me: &'a str,
}

/// The table of offers and transfers, both ways.
pub(crate) struct Transfers {
    pub(super) settings: FileSettings,
    pub(super) entries: BTreeMap<TransferId, Entry>,
    pub(super) store: Option<Store>,
    pub(super) inputs: mpsc::Sender<TransferInput>,
    /// Why files are off, if they are.
    pub(super) off: Option<FilesOff>,
    pub(super) next_run: u64,
}

/// How many seconds until `deadline` (0 once past).
pub(super) fn seconds_until(deadline: SystemTime, now: SystemTime) -> u64 {
    deadline
        .duration_since(now)
        .map_or(0, |left| left.as_secs_f64().ceil() as u64)
}

/// A shorter borrow of the same loan, for one call among several.
pub(super) fn reborrow<'b>(net: &'b mut Net<'_>) -> Net<'b> {
    Net {
        courier: net.courier,
        peers: net.peers,
        me: net.me,
    }
}

/// What every event about an entry names.
pub(super) struct Said {
    pub(super) transfer: String,
    pub(super) direction: Direction,
    pub(super) peer: String,
    pub(super) name: String,
}

/// What a failed run means for its transfer.
pub(super) enum Ending {
    /// A network hiccup: try again by itself.
    Retry,
    /// Kept to resume, on `/resume` or when the peer comes back (a full disk needs the person).
    Wait,
    /// Over: resuming would fail the same way.
    Over,
}

impl Ending {
    pub(super) fn of(error: &TransferError, direction: Direction) -> Ending {
        match error {
            TransferError::Connection(_)
            | TransferError::HandshakeTimeout(_)
            | TransferError::Stalled(_)
            | TransferError::Forged
            | TransferError::Malformed
            | TransferError::WrongKey => Ending::Retry,
            TransferError::NoSpace { .. }
            | TransferError::DiskFull { .. }
            | TransferError::Disk { .. }
            | TransferError::NoFreeName
            | TransferError::Opening(_) => Ending::Wait,
            TransferError::Aborted(AbortReason::NoSpace | AbortReason::DiskError) => {
                match direction {
                    Direction::In => Ending::Wait,
                    Direction::Out => Ending::Retry,
                }
            }
            TransferError::Aborted(_)
            | TransferError::TooLong { .. }
            | TransferError::SizeMismatch { .. }
            | TransferError::HashMismatch
            | TransferError::OffsetBeyondEnd { .. }
            | TransferError::FileChanged => Ending::Over,
        }
    }
}

/// Whether a sender's run failed before it knew who was connected (the handshake did not
/// finish): nothing of the file was read or sent, and it says nothing about the transfer.
pub(super) fn before_the_file(error: &TransferError) -> bool {
    matches!(
        error,
        TransferError::WrongKey
            | TransferError::HandshakeTimeout(_)
            | TransferError::Connection(_)
            | TransferError::Opening(_)
            | TransferError::Malformed
            | TransferError::Forged
    )
}

/// Removes transfer `id`'s partial file (of the file offered as `name`, in `folder`) by its
/// name, without opening it: a run being cancelled may hold it, and its lock, a moment longer
/// (dropping the run is asynchronous); what it still writes goes to the removed file.
pub(super) fn remove_partial(
    folder: &std::path::Path,
    id: &TransferId,
    name: &str,
) -> std::io::Result<()> {
    let file =
        crate::transfer::partial::partial_file_name(id, &crate::transfer::name::safe_name(name));
    match std::fs::remove_file(folder.join(file)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether `prefix` (at least 4 hex digits) starts transfer `id`'s hex form.
pub(super) fn matches_id(id: &TransferId, prefix: &str) -> bool {
    prefix.len() >= 4 && id.to_string().starts_with(&prefix.to_ascii_lowercase())
}

/// The entries `which` names among `(id, peer)`: all of them for `None`; else those with
/// that peer, and only when no peer has that name, those whose id starts with it. The name
/// wins because ids are chosen by the peer who offers: a peer could pick ids that start with
/// another person's name (`cafe…`) so that `/cancel cafe` cancels its transfer instead.
pub(super) fn select<'a>(
    entries: impl Iterator<Item = (TransferId, &'a str)> + Clone,
    which: Option<&str>,
) -> Vec<TransferId> {
    let Some(which) = which else {
        return entries.map(|(id, _)| id).collect();
    };
    let by_peer: Vec<TransferId> = entries
        .clone()
        .filter(|(_, peer)| peer.eq_ignore_ascii_case(which))
        .map(|(id, _)| id)
        .collect();
    if !by_peer.is_empty() {
        return by_peer;
    }
    entries
        .filter(|(id, _)| matches_id(id, which))
        .map(|(id, _)| id)
        .collect()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a file command did nothing; each says what to do.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    #[error("file transfers are off: {0}")]
    Off(FilesOff),
    #[error("{0} files are already offered or on their way; wait for some to finish")]
    TooMany(usize),
    #[error("cannot send {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot send {}: not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{0}")]
    Engine(String),
    #[error("{0}")]
    NotSent(String),
    #[error("no file offer from {from}{}", .id.as_ref().map(|i| format!(" with id {i}")).unwrap_or_default())]
    NoOffer { from: String, id: Option<String> },
    #[error("which one? name it by id: {0}")]
    Ambiguous(String),
    #[error(
        "{name} ({}) is larger than --max-file-size ({limit}); nothing was written. \
         /decline {peer}, or run the client with a larger --max-file-size", Bytes(*.size)
    )]
    TooLarge {
        name: String,
        size: u64,
        limit: FileSizeLimit,
        peer: String,
    },
    #[error("no download folder: give one with --download-dir (no HOME nor XDG_DOWNLOAD_DIR)")]
    NoDownloadFolder,
    #[error("no file offer or transfer {0} to cancel (/transfers lists them)")]
    NothingToCancel(String),
    #[error("no interrupted transfer to resume (/transfers lists them)")]
    NothingToResume,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_retried_a_full_disk_waits_and_a_bad_file_is_over() {
        let lost = TransferError::Connection(std::io::ErrorKind::ConnectionReset.into());
        assert!(matches!(Ending::of(&lost, Direction::In), Ending::Retry));
        let stalled = TransferError::Stalled(std::time::Duration::from_secs(30));
        assert!(matches!(
            Ending::of(&stalled, Direction::Out),
            Ending::Retry
        ));
        let full = TransferError::DiskFull {
            step: crate::transfer::DiskStep::WritePartial,
        };
        assert!(matches!(Ending::of(&full, Direction::In), Ending::Wait));
        for over in [
            TransferError::HashMismatch,
            TransferError::FileChanged,
            TransferError::TooLong { offered: 1 },
        ] {
            assert!(
                matches!(Ending::of(&over, Direction::In), Ending::Over),
                "{over}"
            );
        }
        // The sender: a connection that never proved itself says nothing about the transfer.
        assert!(before_the_file(&TransferError::WrongKey));
        assert!(!before_the_file(&TransferError::FileChanged));
    }

    #[test]
    fn an_id_is_named_by_four_hex_digits_or_more_in_any_case() {
        let id = TransferId::from_hex("1a2b3c4d00000000000000000000000f").unwrap();
        assert!(matches_id(&id, "1a2b"));
        assert!(matches_id(&id, "1A2B3C4D"));
        assert!(!matches_id(&id, "1a2"), "too short to name one");
        assert!(!matches_id(&id, "1a2c"));
    }

    #[test]
    fn an_incoming_transfer_over_for_good_leaves_no_partial_file() {
        // A sender's abort with any reason, known or not, ends the transfer for good.
        for reason in [AbortReason::HashMismatch, AbortReason::Unknown(99)] {
            let error = TransferError::Aborted(reason);
            assert!(error.keeps_partial(), "the engine keeps it: {error}");
            assert!(matches!(Ending::of(&error, Direction::In), Ending::Over));
        }
        let folder = tempfile::TempDir::new().unwrap();
        let id = TransferId::from_hex("0123456789abcdef0123456789abcdef").unwrap();
        // A real partial file, with bytes in it, as a run leaves it.
        // (Held open, and locked, as a run being dropped may still hold it.)
        let partial = crate::transfer::Partial::create(folder.path(), &id, "big.iso").unwrap();
        std::fs::write(partial.path(), b"3.9 GB of it").unwrap();
        let (inputs, _fed) = mpsc::channel(1);
        let (abort, _registration) = AbortHandle::new_pair();
        let mut transfers = Transfers {
            settings: FileSettings::default(),
            entries: BTreeMap::new(),
            store: None,
            inputs,
            off: None,
            next_run: 1,
        };
        transfers.entries.insert(
            id,
            Entry {
                direction: Direction::In,
                peer: "mallory".into(),
                name: "big.iso".into(),
                size: 4 << 30,
                source: None,
                folder: Some(folder.path().to_path_buf()),
                offered_at: SystemTime::now(),
                state: State::Running {
                    run: 1,
                    abort,
                    meter: Meter {
                        at: Instant::now(),
                        bytes: 0,
                    },
                    offset: 0,
                    announced: true,
                    was_offered: false,
                },
                bytes: 6,
                retry_at: None,
                retry_wait: FIRST_RETRY,
            },
        );
        let mut said = Vec::new();
        transfers.failed(id, "the sender aborted".into(), &mut |e| said.push(e));
        assert!(transfers.entries.is_empty());
        assert!(!partial.path().exists(), "the partial file is removed");
        assert_eq!(listing(folder.path()), Vec::<String>::new());
        assert_eq!(said.len(), 1, "{said:?}");
    }

    fn listing(folder: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_peer_named_exactly_wins_over_an_id_that_starts_with_the_name() {
        // The peer `mallory` picked an id that starts like the person `cafe`'s name.
        let mallorys = TransferId::from_hex("cafe0000000000000000000000000001").unwrap();
        let cafes = TransferId::from_hex("12340000000000000000000000000002").unwrap();
        let entries = [(mallorys, "mallory"), (cafes, "cafe")];
        assert_eq!(select(entries.into_iter(), Some("cafe")), vec![cafes]);
        assert_eq!(select(entries.into_iter(), Some("CAFE")), vec![cafes]);
        // No peer of that name: the id prefix names it.
        assert_eq!(select(entries.into_iter(), Some("1234")), vec![cafes]);
        assert_eq!(select(entries.into_iter(), Some("cafe0")), vec![mallorys]);
        assert_eq!(select(entries.into_iter(), Some("mallory")), vec![mallorys]);
        assert_eq!(select(entries.into_iter(), None).len(), 2);
        assert!(select(entries.into_iter(), Some("nobody")).is_empty());
    }
}
