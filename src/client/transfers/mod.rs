//! Files straight to a peer, as the chat sees them: the table of offers and transfers, both ways
//! ([`Transfers`]), and everything that moves an entry along — the person's commands
//! ([`TransferCommand`]), the peer's file messages ([`FileNews`], sealed direct messages of their
//! own kind), the runs' progress and ends, connections to the transfer port, and time (offers
//! lapse, interrupted transfers resume).
//!
//! The life of a transfer, from the sender's side (`out`) and the receiver's (`in`):
//! - `/send bob PATH`: the sender records the file (path, size, modification time) under a fresh
//!   [`TransferId`], stores the record ([`store`]), and offers it to bob (name and size). bob's
//!   client shows the offer and writes nothing.
//! - An offer waits for `/accept` or `/decline` at most `--offer-timeout` (10 minutes), then lapses
//!   at both ends, each by its own clock.
//! - `/accept alice`: bob's client checks `--max-file-size` and the free space of the download
//!   folder, answers `file_accept`, stores its record, and connects to alice's transfer port (the
//!   port number of her UDP direct-message port: [`listener`]) with the transfer's id and where its
//!   partial file ends. alice serves the connection only if its opening names an outgoing transfer
//!   to the peer whose current session key it names, from that peer's announced address; the
//!   engine's handshake then proves both hold the pair's keys before a byte of the file is read
//!   (a connection from bob counts as his acceptance, should it overtake his `file_accept`).
//! - While it runs, both report progress (at most once per interval) and, at the end, the
//!   SHA-256 both sides checked.
//! - A run that stops (the connection lost, a client killed, a stall) leaves the transfer
//!   `interrupted`: the receiver connects again, from where its partial file ends, when the sender
//!   comes online again (a `joined`, or the sender's `file_resume`), on `/resume`, or by itself
//!   after a wait that doubles from [`FIRST_RETRY`] to [`MAX_RETRY`]. Both records survive a
//!   restart of either client (and a restart of the server changes nothing: the data connection
//!   never touches it).
//! - `/cancel` at either end stops it for good at both: the peer is told (`file_cancel`), the
//!   receiver's partial file is removed, the records forgotten. A peer asked about a transfer it
//!   does not know answers `file_cancel`, so a forgotten transfer ends at both ends.
//!
//! A transfer is bound to its peer's name: file messages about it are believed only from that
//! peer (sealed under its current session's keys), and its data connection is keyed from the
//! pair's current keys. Memory is bounded: at most [`MAX_OUTGOING`] outgoing and [`MAX_INCOMING`]
//! incoming entries, of which at most [`MAX_UNANSWERED_OFFERS`] unanswered offers.

pub(crate) mod input;
mod listener;
mod run;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use futures::channel::mpsc;
use futures::future::AbortHandle;

use super::command::TransferCommand;
use super::config::FileSettings;
use super::direct::Courier;
use super::event::ClientEvent;
use super::file_mail::FileNews;
use super::file_size::{Bytes, FileSizeLimit};
use super::peer_list::PeerList;
use super::transfer_event::{CancelledBy, Direction, Stage, TransferEvent, TransferRow};
use crate::protocol::file::{short_id, FileMessage, FileSignal, TransferId};
use crate::protocol::ServerMessage;
use crate::runtime::{TcpListener, TcpStream};
use crate::transfer::{
    folder, partial, AbortReason, Opening, Partial, Progress, Request, Source, TransferError,
};
use input::{Outcome, TransferInput};
use run::Reporting;
use store::{Record, Store};

pub(crate) use listener::{bind_pair, Bound, FilesOff};

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

/// Inputs from the transfers' tasks waiting for the chat loop; a run's end waits for room,
/// progress is skipped when it is full.
const TRANSFER_INPUTS: usize = 32;

/// Where an entry stands.
enum State {
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
struct Meter {
    at: Instant,
    bytes: u64,
}

/// One offer or transfer.
struct Entry {
    direction: Direction,
    /// The peer as the server spells the name.
    peer: String,
    name: String,
    size: u64,
    /// Outgoing: the file as offered.
    source: Option<Source>,
    /// Incoming, once accepted: the download folder.
    folder: Option<PathBuf>,
    offered_at: SystemTime,
    state: State,
    /// Bytes done, as far as this side knows.
    bytes: u64,
    /// Incoming: when to try again by itself, and the wait after that.
    retry_at: Option<Instant>,
    retry_wait: Duration,
}

impl Entry {
    fn record(&self, id: TransferId) -> Record {
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

    fn is_peer(&self, name: &str) -> bool {
        self.peer.eq_ignore_ascii_case(name)
    }

    fn stage(&self) -> Stage {
        match self.state {
            State::Offered => Stage::Offered,
            State::Accepted => Stage::Accepted,
            State::Running { .. } => Stage::Running,
            State::Interrupted => Stage::Interrupted,
        }
    }

    fn stop(&mut self) {
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
    settings: FileSettings,
    entries: BTreeMap<TransferId, Entry>,
    store: Option<Store>,
    inputs: mpsc::Sender<TransferInput>,
    /// Why files are off, if they are.
    off: Option<FilesOff>,
    next_run: u64,
}

/// How many seconds until `deadline` (0 once past).
fn seconds_until(deadline: SystemTime, now: SystemTime) -> u64 {
    deadline
        .duration_since(now)
        .map_or(0, |left| left.as_secs_f64().ceil() as u64)
}

impl Transfers {
    /// The table of account `me`, its records read back, accepting connections on `listener`
    /// (`Err`: files are off, and why). Returns the inputs for the chat loop, and warnings: a
    /// client that could not listen says so at once; a `--plaintext` one only when a file
    /// command is typed (the lab's clear mode stays as quiet as it was).
    pub(crate) fn start(
        settings: FileSettings,
        me: &str,
        listener: Result<std::sync::Arc<TcpListener>, FilesOff>,
    ) -> (Transfers, mpsc::Receiver<TransferInput>, Vec<ClientEvent>) {
        let (inputs, fed) = mpsc::channel(TRANSFER_INPUTS);
        let off = match listener {
            Ok(listener) => {
                listener::spawn_accepting(listener, inputs.clone());
                None
            }
            Err(why) => Some(why),
        };
        let mut transfers = Transfers {
            settings,
            entries: BTreeMap::new(),
            store: Store::for_account(me),
            inputs,
            off,
            next_run: 0,
        };
        let mut said = Vec::new();
        if let Some(why @ FilesOff::NoPort(_)) = &transfers.off {
            said.push(ClientEvent::Warning {
                message: format!("file transfers are off: {why}; chatting works"),
            });
        }
        if let Some(store) = &transfers.store {
            match store.load() {
                Ok(records) => transfers.restore(records),
                Err(e) => said.push(ClientEvent::Warning {
                    message: e.to_string(),
                }),
            }
        }
        (transfers, fed, said)
    }

    /// Takes the stored records back: each outgoing one with its file, each accepted incoming one
    /// interrupted (it resumes once its sender is online); offers that lapsed meanwhile are
    /// forgotten.
    fn restore(&mut self, records: Vec<Record>) {
        let now = SystemTime::now();
        for record in records {
            let offered_at = store::from_nanos(u128::from(record.offered_at) * 1_000_000_000);
            if !record.accepted && offered_at + self.settings.offer_timeout <= now {
                continue;
            }
            let source = match (record.direction, record.path, record.modified_ns) {
                (Direction::Out, Some(path), Some(modified)) => Some(Source {
                    path,
                    size: record.size,
                    modified: store::from_nanos(modified),
                }),
                (Direction::Out, _, _) => continue,
                (Direction::In, _, _) => None,
            };
            if record.direction == Direction::In && record.folder.is_none() {
                continue;
            }
            let state = if record.accepted {
                State::Interrupted
            } else {
                State::Offered
            };
            self.entries.insert(
                record.transfer,
                Entry {
                    direction: record.direction,
                    peer: record.peer,
                    name: record.name,
                    size: record.size,
                    source,
                    folder: record.folder,
                    offered_at,
                    state,
                    bytes: 0,
                    retry_at: Some(Instant::now()),
                    retry_wait: FIRST_RETRY,
                },
            );
        }
    }

    /// Writes the records; a failure is a warning (the transfer goes on, it would only not
    /// survive a restart).
    fn save(&self, emit: &mut dyn FnMut(ClientEvent)) {
        let Some(store) = &self.store else { return };
        let records: Vec<Record> = self
            .entries
            .iter()
            .filter(|(_, e)| e.direction == Direction::Out || !matches!(e.state, State::Offered))
            .map(|(id, e)| e.record(*id))
            .collect();
        if let Err(e) = store.save(&records) {
            emit(ClientEvent::Warning {
                message: e.to_string(),
            });
        }
    }

    fn count(&self, direction: Direction) -> usize {
        self.entries
            .values()
            .filter(|e| e.direction == direction)
            .count()
    }

    /// An event about entry `id`.
    fn said(&self, id: TransferId, make: impl FnOnce(Said) -> TransferEvent) -> ClientEvent {
        let entry = &self.entries[&id];
        ClientEvent::Transfer(make(Said {
            transfer: id.to_string(),
            direction: entry.direction,
            peer: entry.peer.clone(),
            name: entry.name.clone(),
        }))
    }

    // ---- the person's commands ----

    /// Acts on one of the person's file commands.
    pub(crate) async fn command(
        &mut self,
        command: TransferCommand,
        net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        let done = match command {
            TransferCommand::Send { to, path } => self.send(&to, path, net, emit).await,
            TransferCommand::Accept { from, id } => {
                self.accept(&from, id.as_deref(), net, emit).await
            }
            TransferCommand::Decline { from, id } => {
                self.decline(&from, id.as_deref(), net, emit).await
            }
            TransferCommand::List => {
                emit(self.list());
                Ok(())
            }
            TransferCommand::Cancel { which } => self.cancel(which.as_deref(), net, emit).await,
            TransferCommand::Resume { which } => self.resume(which.as_deref(), net, emit).await,
        };
        if let Err(refused) = done {
            emit(ClientEvent::error(refused.to_string()));
        }
    }

    async fn send(
        &mut self,
        to: &str,
        path: PathBuf,
        net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), Refused> {
        if let Some(why) = &self.off {
            return Err(Refused::Off(why.clone()));
        }
        if self.count(Direction::Out) >= MAX_OUTGOING {
            return Err(Refused::TooMany(MAX_OUTGOING));
        }
        let metadata = std::fs::metadata(&path).map_err(|source| Refused::Unreadable {
            path: path.clone(),
            source,
        })?;
        if !metadata.is_file() {
            return Err(Refused::NotAFile(path));
        }
        let source = Source::of(path.clone()).map_err(|e| Refused::Engine(e.to_string()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Refused::NotAFile(path.clone()))?;
        let id = TransferId::generate();
        let signal = FileSignal::FileOffer {
            name: name.clone(),
            size: source.size,
        };
        let peer = net
            .courier
            .send_file(net.peers, net.me, to, id, signal)
            .await
            .map_err(|e| Refused::NotSent(e.to_string()))?;
        let size = source.size;
        self.entries.insert(
            id,
            Entry {
                direction: Direction::Out,
                peer: peer.username.clone(),
                name,
                size,
                source: Some(source),
                folder: None,
                offered_at: SystemTime::now(),
                state: State::Offered,
                bytes: 0,
                retry_at: None,
                retry_wait: FIRST_RETRY,
            },
        );
        self.save(emit);
        let lapses_in = self.settings.offer_timeout.as_secs();
        emit(self.said(id, |s| TransferEvent::FileOffer {
            transfer: s.transfer,
            direction: s.direction,
            peer: s.peer,
            name: s.name,
            size,
            lapses_in,
            over_limit: false,
        }));
        Ok(())
    }

    /// The one unanswered incoming offer from `from` (`id`: which, when several).
    fn offer_from(&self, from: &str, id: Option<&str>) -> Result<TransferId, Refused> {
        let offers: Vec<TransferId> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.direction == Direction::In && e.is_peer(from) && matches!(e.state, State::Offered)
            })
            .map(|(id, _)| *id)
            .filter(|t| id.is_none_or(|prefix| matches_id(t, prefix)))
            .collect();
        match offers.as_slice() {
            [one] => Ok(*one),
            [] => Err(Refused::NoOffer {
                from: from.to_string(),
                id: id.map(str::to_string),
            }),
            several => Err(Refused::Ambiguous(
                several
                    .iter()
                    .map(|t| format!("{} ({})", short_id(t), self.entries[t].name))
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    async fn accept(
        &mut self,
        from: &str,
        id: Option<&str>,
        net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), Refused> {
        let id = self.offer_from(from, id)?;
        let (peer, name, size) = {
            let e = &self.entries[&id];
            (e.peer.clone(), e.name.clone(), e.size)
        };
        if !self.settings.max_file_size.allows(size) {
            return Err(Refused::TooLarge {
                name,
                size,
                limit: self.settings.max_file_size,
                peer,
            });
        }
        let folder = folder::download_folder(self.settings.download_dir.as_deref(), |var| {
            std::env::var_os(var)
        })
        .ok_or(Refused::NoDownloadFolder)?;
        folder::create_folder(&folder).map_err(|e| Refused::Engine(e.to_string()))?;
        partial::check_free_space(&folder, size).map_err(|e| Refused::Engine(e.to_string()))?;
        net.courier
            .send_file(net.peers, net.me, &peer, id, FileSignal::FileAccept)
            .await
            .map_err(|e| Refused::NotSent(e.to_string()))?;
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.state = State::Accepted;
            entry.folder = Some(folder);
            entry.retry_at = Some(Instant::now());
        }
        self.save(emit);
        emit(self.said(id, |s| TransferEvent::FileAccepted {
            transfer: s.transfer,
            direction: s.direction,
            peer: s.peer,
            name: s.name,
        }));
        self.fetch(id, net, emit);
        Ok(())
    }

    async fn decline(
        &mut self,
        from: &str,
        id: Option<&str>,
        net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), Refused> {
        let id = self.offer_from(from, id)?;
        let peer = self.entries[&id].peer.clone();
        // Declined here whether or not the sender hears it: its offer lapses anyway.
        if let Err(e) = net
            .courier
            .send_file(net.peers, net.me, &peer, id, FileSignal::FileDecline)
            .await
        {
            emit(ClientEvent::Warning {
                message: format!("{peer} was not told: {e}"),
            });
        }
        emit(self.said(id, |s| TransferEvent::FileDeclined {
            transfer: s.transfer,
            direction: s.direction,
            peer: s.peer,
            name: s.name,
        }));
        self.entries.remove(&id);
        Ok(())
    }

    /// The entries `which` names: by id prefix, else by peer; all when `None`.
    fn select(&self, which: Option<&str>) -> Vec<TransferId> {
        let by_id: Vec<TransferId> = match which {
            Some(prefix) => self
                .entries
                .keys()
                .filter(|t| matches_id(t, prefix))
                .copied()
                .collect(),
            None => Vec::new(),
        };
        if !by_id.is_empty() {
            return by_id;
        }
        self.entries
            .iter()
            .filter(|(_, e)| which.is_none_or(|name| e.is_peer(name)))
            .map(|(id, _)| *id)
            .collect()
    }

    async fn cancel(
        &mut self,
        which: Option<&str>,
        net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), Refused> {
        let chosen = self.select(which);
        let id = match chosen.as_slice() {
            [one] => *one,
            [] => {
                return Err(Refused::NothingToCancel(
                    which.map(str::to_string).unwrap_or_default(),
                ))
            }
            several => {
                return Err(Refused::Ambiguous(
                    several
                        .iter()
                        .map(|t| format!("{} ({})", short_id(t), self.entries[t].name))
                        .collect::<Vec<_>>()
                        .join(", "),
                ))
            }
        };
        let peer = self.entries[&id].peer.clone();
        if net.peers.get(&peer).is_some() {
            if let Err(e) = net
                .courier
                .send_file(net.peers, net.me, &peer, id, FileSignal::FileCancel)
                .await
            {
                emit(ClientEvent::Warning {
                    message: format!("{peer} was not told: {e}"),
                });
            }
        }
        self.forget(id, CancelledBy::You, emit);
        Ok(())
    }

    /// Stops entry `id` for good: its run, its partial file, its record.
    fn forget(&mut self, id: TransferId, by: CancelledBy, emit: &mut dyn FnMut(ClientEvent)) {
        let Some(mut entry) = self.entries.remove(&id) else {
            return;
        };
        entry.stop();
        if let (Direction::In, Some(folder)) = (entry.direction, &entry.folder) {
            if let Ok(partial) = Partial::open_existing(folder, &id, &entry.name) {
                if let Err(e) = partial.remove() {
                    emit(ClientEvent::Warning {
                        message: format!("the partial file of {} was not removed: {e}", entry.name),
                    });
                }
            }
        }
        emit(ClientEvent::Transfer(TransferEvent::FileCancelled {
            transfer: id.to_string(),
            direction: entry.direction,
            peer: entry.peer.clone(),
            name: entry.name.clone(),
            by,
        }));
        self.save(emit);
    }

    async fn resume(
        &mut self,
        which: Option<&str>,
        mut net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), Refused> {
        let chosen: Vec<TransferId> = self
            .select(which)
            .into_iter()
            .filter(|id| matches!(self.entries[id].state, State::Accepted | State::Interrupted))
            .collect();
        if chosen.is_empty() {
            return Err(Refused::NothingToResume);
        }
        for id in chosen {
            let (direction, peer) = {
                let e = &self.entries[&id];
                (e.direction, e.peer.clone())
            };
            if net.peers.get(&peer).is_none() {
                emit(ClientEvent::Warning {
                    message: format!(
                        "{peer} is not online: {} resumes when {peer} is back",
                        self.entries[&id].name
                    ),
                });
                continue;
            }
            match direction {
                Direction::In => {
                    self.fetch(id, reborrow(&mut net), emit);
                }
                Direction::Out => {
                    let _ = net
                        .courier
                        .send_file(net.peers, net.me, &peer, id, FileSignal::FileResume)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn list(&self) -> ClientEvent {
        let now = SystemTime::now();
        let transfers = self
            .entries
            .iter()
            .map(|(id, e)| TransferRow {
                transfer: id.to_string(),
                direction: e.direction,
                peer: e.peer.clone(),
                name: e.name.clone(),
                size: e.size,
                bytes: e.bytes,
                stage: e.stage(),
                lapses_in: matches!(e.state, State::Offered)
                    .then(|| seconds_until(e.offered_at + self.settings.offer_timeout, now)),
            })
            .collect();
        ClientEvent::Transfer(TransferEvent::Transfers { transfers })
    }

    // ---- the peer's file messages ----

    /// What became of a file message (one of the peer's, or one of ours).
    pub(crate) async fn news(
        &mut self,
        news: FileNews,
        net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        match news {
            FileNews::Arrived { from, message } => self.arrived(from, message, net, emit).await,
            FileNews::Delivered { .. } => {}
            FileNews::NotDelivered {
                to,
                transfer,
                signal,
            } => {
                let Some(entry) = self.entries.get(&transfer) else {
                    return;
                };
                if matches!(signal, FileSignal::FileOffer { .. })
                    && matches!(entry.state, State::Offered)
                {
                    emit(self.said(transfer, |s| TransferEvent::FileFailed {
                        transfer: s.transfer,
                        direction: s.direction,
                        peer: s.peer,
                        name: s.name,
                        reason: format!("the offer was not delivered: no answer from {to}"),
                        resumable: false,
                    }));
                    self.entries.remove(&transfer);
                    self.save(emit);
                } else {
                    emit(ClientEvent::Warning {
                        message: format!(
                            "{} about {} was not delivered to {to}",
                            signal.name(),
                            entry.name
                        ),
                    });
                }
            }
        }
    }

    async fn arrived(
        &mut self,
        from: String,
        message: FileMessage,
        mut net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        let id = message.transfer;
        // Only the peer a transfer is with may say anything about it.
        let known = self
            .entries
            .get(&id)
            .map(|e| (e.is_peer(&from), e.direction));
        match (message.signal, known) {
            (FileSignal::FileOffer { name, size }, None) => {
                let unanswered = self
                    .entries
                    .values()
                    .filter(|e| e.direction == Direction::In && matches!(e.state, State::Offered))
                    .count();
                if unanswered >= MAX_UNANSWERED_OFFERS || self.count(Direction::In) >= MAX_INCOMING
                {
                    emit(ClientEvent::Warning {
                        message: format!(
                            "declined a file offer from {from}: {MAX_UNANSWERED_OFFERS} offers \
                             already wait for an answer"
                        ),
                    });
                    let _ = net
                        .courier
                        .send_file(net.peers, net.me, &from, id, FileSignal::FileDecline)
                        .await;
                    return;
                }
                let over_limit = !self.settings.max_file_size.allows(size);
                self.entries.insert(
                    id,
                    Entry {
                        direction: Direction::In,
                        peer: from,
                        name,
                        size,
                        source: None,
                        folder: None,
                        offered_at: SystemTime::now(),
                        state: State::Offered,
                        bytes: 0,
                        retry_at: None,
                        retry_wait: FIRST_RETRY,
                    },
                );
                let lapses_in = self.settings.offer_timeout.as_secs();
                emit(self.said(id, |s| TransferEvent::FileOffer {
                    transfer: s.transfer,
                    direction: s.direction,
                    peer: s.peer,
                    name: s.name,
                    size,
                    lapses_in,
                    over_limit,
                }));
            }
            // The same offer again (a new id is a new offer; this one is known): nothing.
            (FileSignal::FileOffer { .. }, Some(_)) => {}
            (FileSignal::FileAccept, Some((true, Direction::Out))) => {
                let entry = self.entries.get_mut(&id).expect("known");
                if matches!(entry.state, State::Offered) {
                    entry.state = State::Accepted;
                    self.save(emit);
                    emit(self.said(id, |s| TransferEvent::FileAccepted {
                        transfer: s.transfer,
                        direction: s.direction,
                        peer: s.peer,
                        name: s.name,
                    }));
                }
            }
            (FileSignal::FileDecline, Some((true, Direction::Out))) => {
                if matches!(self.entries[&id].state, State::Offered) {
                    emit(self.said(id, |s| TransferEvent::FileDeclined {
                        transfer: s.transfer,
                        direction: s.direction,
                        peer: s.peer,
                        name: s.name,
                    }));
                    self.entries.remove(&id);
                    self.save(emit);
                }
            }
            (FileSignal::FileCancel, Some((true, _))) => self.forget(id, CancelledBy::Peer, emit),
            (FileSignal::FileResume, Some((true, Direction::In))) => {
                if matches!(
                    self.entries[&id].state,
                    State::Accepted | State::Interrupted
                ) {
                    self.fetch(id, reborrow(&mut net), emit);
                }
            }
            // The sender can serve a transfer this client no longer knows (cancelled while it
            // was away, or its records lost): end it there too.
            (FileSignal::FileResume, None) => {
                let _ = net
                    .courier
                    .send_file(net.peers, net.me, &from, id, FileSignal::FileCancel)
                    .await;
            }
            // From another peer than the transfer's, or the wrong way round: ignored.
            _ => {}
        }
    }

    // ---- runs ----

    /// Starts (or starts again) fetching incoming transfer `id` from its sender, if it is online.
    fn fetch(&mut self, id: TransferId, net: Net<'_>, emit: &mut dyn FnMut(ClientEvent)) {
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        if matches!(entry.state, State::Running { .. } | State::Offered) {
            return;
        }
        let Some(peer) = net.peers.get(&entry.peer).cloned() else {
            return;
        };
        let (Some(sender_key), Some(receiver_key), Some(keys), Some(folder)) = (
            peer.public_key.map(|k| k.key_id()),
            net.courier.my_key_id(),
            net.courier.pair_keys(&peer),
            entry.folder.clone(),
        ) else {
            return;
        };
        let partial = match Partial::open_or_create(&folder, &id, &entry.name) {
            Ok(partial) => partial,
            Err(e) => {
                self.interrupted(id, e.to_string(), false, emit);
                return;
            }
        };
        let offset = partial.len();
        let request = Request {
            transfer_id: id,
            receiver_key,
            sender_key,
            size: entry.size,
        };
        let key = keys.transfer_key(&id);
        let run = self.next_run();
        let reporting = self.reporting(id, run);
        let abort = run::spawn_fetch(
            reporting,
            peer.p2p_addr(),
            request,
            key,
            partial,
            self.settings.limits,
        );
        self.running(id, run, abort, offset);
    }

    fn next_run(&mut self) -> u64 {
        self.next_run += 1;
        self.next_run
    }

    fn reporting(&self, id: TransferId, run: u64) -> Reporting {
        Reporting {
            id,
            run,
            every: self.settings.progress_every,
            inputs: self.inputs.clone(),
        }
    }

    /// Entry `id` runs (run number `run`, from `offset`); `file_started` waits for bytes.
    fn running(&mut self, id: TransferId, run: u64, abort: AbortHandle, offset: u64) {
        let Some(entry) = self.entries.get_mut(&id) else {
            abort.abort();
            return;
        };
        entry.stop();
        let was_offered = match &entry.state {
            State::Offered => true,
            State::Running { was_offered, .. } => *was_offered,
            State::Accepted | State::Interrupted => false,
        };
        entry.state = State::Running {
            run,
            abort,
            meter: Meter {
                at: Instant::now(),
                bytes: offset,
            },
            offset,
            announced: false,
            was_offered,
        };
    }

    /// Says `file_started` for entry `id`'s run once bytes flow (and `file_accepted`, when a
    /// sender learns of the acceptance by the connection itself).
    fn announce(&mut self, id: TransferId, emit: &mut dyn FnMut(ClientEvent)) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let State::Running {
            offset,
            announced,
            was_offered,
            ..
        } = &mut entry.state
        else {
            return;
        };
        if *announced {
            return;
        }
        *announced = true;
        let (offset, accepted_now) = (*offset, std::mem::take(was_offered));
        entry.bytes = offset;
        let size = entry.size;
        if accepted_now && entry.direction == Direction::Out {
            emit(self.said(id, |s| TransferEvent::FileAccepted {
                transfer: s.transfer,
                direction: s.direction,
                peer: s.peer,
                name: s.name,
            }));
        }
        emit(self.said(id, |s| TransferEvent::FileStarted {
            transfer: s.transfer,
            direction: s.direction,
            peer: s.peer,
            name: s.name,
            offset,
            size,
        }));
    }

    /// A run stopped before the end and can resume: `auto` when it is worth trying again by
    /// itself (a lost connection, not a full disk).
    fn interrupted(
        &mut self,
        id: TransferId,
        reason: String,
        auto: bool,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.stop();
        entry.state = State::Interrupted;
        entry.retry_at = auto.then(|| Instant::now() + entry.retry_wait);
        entry.retry_wait = (entry.retry_wait * 2).min(MAX_RETRY);
        emit(self.said(id, |s| TransferEvent::FileFailed {
            transfer: s.transfer,
            direction: s.direction,
            peer: s.peer,
            name: s.name,
            reason,
            resumable: true,
        }));
    }

    /// A run stopped and the transfer is over.
    fn failed(&mut self, id: TransferId, reason: String, emit: &mut dyn FnMut(ClientEvent)) {
        if !self.entries.contains_key(&id) {
            return;
        }
        emit(self.said(id, |s| TransferEvent::FileFailed {
            transfer: s.transfer,
            direction: s.direction,
            peer: s.peer,
            name: s.name,
            reason,
            resumable: false,
        }));
        if let Some(mut entry) = self.entries.remove(&id) {
            entry.stop();
        }
        self.save(emit);
    }

    /// An input from a transfer's task or the listener.
    pub(crate) async fn input(
        &mut self,
        input: TransferInput,
        net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        match input {
            TransferInput::Progress { id, run, progress } => self.progress(id, run, progress, emit),
            TransferInput::Ended { id, run, outcome } => {
                self.ended(id, run, outcome, net, emit).await
            }
            TransferInput::Connection {
                stream,
                remote,
                opening,
            } => self.connection(stream, remote, opening, net).await,
        }
    }

    fn progress(
        &mut self,
        id: TransferId,
        run: u64,
        progress: Progress,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        if !self.is_run(id, run) {
            return;
        }
        self.announce(id, emit);
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let State::Running { meter, .. } = &mut entry.state else {
            return;
        };
        let now = Instant::now();
        let seconds = now.duration_since(meter.at).as_secs_f64();
        let rate = if seconds > 0.0 {
            (progress.done.saturating_sub(meter.bytes) as f64 / seconds) as u64
        } else {
            0
        };
        *meter = Meter {
            at: now,
            bytes: progress.done,
        };
        entry.bytes = progress.done;
        let left = progress.total.saturating_sub(progress.done);
        let seconds_left = (rate > 0).then(|| left.div_ceil(rate));
        emit(self.said(id, |s| TransferEvent::FileProgress {
            transfer: s.transfer,
            direction: s.direction,
            peer: s.peer,
            name: s.name,
            bytes: progress.done,
            size: progress.total,
            rate,
            seconds_left,
        }));
    }

    async fn ended(
        &mut self,
        id: TransferId,
        run: u64,
        outcome: Outcome,
        net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        if !self.is_run(id, run) {
            return; // A run given up already (cancelled, or replaced by a newer one).
        }
        if let Outcome::Failed(error) = &outcome {
            let entry = &self.entries[&id];
            let announced = matches!(
                entry.state,
                State::Running {
                    announced: true,
                    ..
                }
            );
            if entry.direction == Direction::Out && !announced && before_the_file(error) {
                return self.unproven(id, emit);
            }
        }
        if !matches!(outcome, Outcome::Failed(_)) {
            self.announce(id, emit);
        }
        match outcome {
            Outcome::Saved(saved) => {
                let sha256 = hex(&saved.sha256);
                let path = saved.path.display().to_string();
                emit(self.said(id, |s| TransferEvent::FileDone {
                    transfer: s.transfer,
                    direction: s.direction,
                    peer: s.peer,
                    name: s.name,
                    size: saved.size,
                    sha256,
                    path,
                }));
                self.entries.remove(&id);
                self.save(emit);
            }
            Outcome::Served(served) => {
                let sha256 = hex(&served.sha256);
                let path = self.entries[&id]
                    .source
                    .as_ref()
                    .map_or(String::new(), |s| s.path.display().to_string());
                emit(self.said(id, |s| TransferEvent::FileDone {
                    transfer: s.transfer,
                    direction: s.direction,
                    peer: s.peer,
                    name: s.name,
                    size: served.size,
                    sha256,
                    path,
                }));
                self.entries.remove(&id);
                self.save(emit);
            }
            Outcome::Failed(error) => {
                let direction = self.entries[&id].direction;
                match Ending::of(&error, direction) {
                    Ending::Retry => self.interrupted(id, error.to_string(), true, emit),
                    Ending::Wait => self.interrupted(id, error.to_string(), false, emit),
                    Ending::Over => {
                        let peer = self.entries[&id].peer.clone();
                        // The other end learns it is over too, whether or not the engine
                        // could say so on the connection.
                        let _ = net
                            .courier
                            .send_file(net.peers, net.me, &peer, id, FileSignal::FileCancel)
                            .await;
                        self.failed(id, error.to_string(), emit);
                    }
                }
            }
        }
    }

    /// Whether `run` is entry `id`'s current run.
    fn is_run(&self, id: TransferId, run: u64) -> bool {
        matches!(
            self.entries.get(&id).map(|e| &e.state),
            Some(State::Running { run: r, .. }) if *r == run
        )
    }

    /// A connection for outgoing transfer `id` ended before it proved it holds the pair's keys:
    /// not the peer (a stranger who learnt the id, a session of the peer's that has ended), or
    /// the peer gone before the handshake's end. Nothing was sent; the transfer stands as it
    /// stood (an accepted one interrupted: its receiver connects again).
    fn unproven(&mut self, id: TransferId, emit: &mut dyn FnMut(ClientEvent)) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let was_offered = matches!(
            entry.state,
            State::Running {
                was_offered: true,
                ..
            }
        );
        entry.state = if was_offered {
            State::Offered
        } else {
            State::Interrupted
        };
        emit(ClientEvent::Warning {
            message: format!(
                "a connection for {} could not prove it is {}'s client; closed, nothing sent",
                entry.name, entry.peer
            ),
        });
    }

    /// A connection to the transfer port with its opening read: served when it names an
    /// outgoing transfer to the online peer whose current session key it names, from that
    /// peer's announced address, and to this session's key. Anything else is closed, unserved.
    async fn connection(
        &mut self,
        stream: TcpStream,
        remote: SocketAddr,
        opening: Opening,
        net: Net<'_>,
    ) {
        let Some(peer) = net
            .courier
            .peer_by_key_id(&opening.receiver_key, net.peers)
            .cloned()
        else {
            return;
        };
        if peer.ip != remote.ip() || net.courier.my_key_id() != Some(opening.sender_key) {
            return;
        }
        let id = opening.transfer_id;
        let Some(entry) = self.entries.get(&id) else {
            // A transfer this client does not know (cancelled while that peer was away, or
            // its records lost): it ends there too.
            let _ = net
                .courier
                .send_file(
                    net.peers,
                    net.me,
                    &peer.username,
                    id,
                    FileSignal::FileCancel,
                )
                .await;
            return;
        };
        if entry.direction != Direction::Out || !entry.is_peer(&peer.username) {
            return;
        }
        let (Some(source), Some(keys)) = (entry.source.clone(), net.courier.pair_keys(&peer))
        else {
            return;
        };
        // An unanswered offer served: fetching is accepting (once the handshake proves the
        // peer, `announce` says so), even before its `file_accept` arrives.
        let _ = stream.set_nodelay(true);
        let key = keys.transfer_key(&id);
        let run = self.next_run();
        let offset = opening.offset;
        let reporting = self.reporting(id, run);
        let abort = run::spawn_serve(
            reporting,
            stream,
            opening,
            key,
            source,
            self.settings.limits,
        );
        self.running(id, run, abort, offset);
    }

    // ---- time and presence ----

    /// Housekeeping, every second: offers lapse; interrupted incoming transfers whose wait is
    /// over try again when their sender is online.
    pub(crate) fn tick(&mut self, mut net: Net<'_>, emit: &mut dyn FnMut(ClientEvent)) {
        let now = SystemTime::now();
        let lapsed: Vec<TransferId> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                matches!(e.state, State::Offered)
                    && e.offered_at + self.settings.offer_timeout <= now
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &lapsed {
            emit(self.said(*id, |s| TransferEvent::FileLapsed {
                transfer: s.transfer,
                direction: s.direction,
                peer: s.peer,
                name: s.name,
            }));
            self.entries.remove(id);
        }
        if !lapsed.is_empty() {
            self.save(emit);
        }
        let instant = Instant::now();
        let due: Vec<TransferId> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.direction == Direction::In
                    && matches!(e.state, State::Accepted | State::Interrupted)
                    && e.retry_at.is_some_and(|at| at <= instant)
                    && net.peers.get(&e.peer).is_some()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.fetch(id, reborrow(&mut net), emit);
        }
    }

    /// Peers came online (a `joined`, or everyone in a `welcome` after logging in again): their
    /// interrupted transfers resume — the receiver connects, the sender says `file_resume`.
    pub(crate) async fn online(
        &mut self,
        names: &[String],
        mut net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        let waiting: Vec<(TransferId, Direction, String)> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                matches!(e.state, State::Accepted | State::Interrupted)
                    && names.iter().any(|n| e.is_peer(n))
            })
            .map(|(id, e)| (*id, e.direction, e.peer.clone()))
            .collect();
        for (id, direction, peer) in waiting {
            match direction {
                Direction::In => {
                    if let Some(entry) = self.entries.get_mut(&id) {
                        entry.retry_wait = FIRST_RETRY;
                    }
                    self.fetch(id, reborrow(&mut net), emit);
                }
                Direction::Out => {
                    let _ = net
                        .courier
                        .send_file(net.peers, net.me, &peer, id, FileSignal::FileResume)
                        .await;
                }
            }
        }
    }
}

/// The names a server message says came online.
pub(crate) fn came_online(message: &ServerMessage) -> Vec<String> {
    match message {
        ServerMessage::Joined { peer } => vec![peer.username.clone()],
        ServerMessage::Welcome { peers, .. } => peers.iter().map(|p| p.username.clone()).collect(),
        _ => Vec::new(),
    }
}

/// A shorter borrow of the same loan, for one call among several.
fn reborrow<'b>(net: &'b mut Net<'_>) -> Net<'b> {
    Net {
        courier: net.courier,
        peers: net.peers,
        me: net.me,
    }
}

/// What every event about an entry names.
struct Said {
    transfer: String,
    direction: Direction,
    peer: String,
    name: String,
}

/// What a failed run means for its transfer.
enum Ending {
    /// A network hiccup: try again by itself.
    Retry,
    /// Kept to resume, on `/resume` or when the peer comes back (a full disk needs the person).
    Wait,
    /// Over: resuming would fail the same way.
    Over,
}

impl Ending {
    fn of(error: &TransferError, direction: Direction) -> Ending {
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
fn before_the_file(error: &TransferError) -> bool {
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

/// Whether `prefix` (at least 4 hex digits) starts transfer `id`'s hex form.
fn matches_id(id: &TransferId, prefix: &str) -> bool {
    prefix.len() >= 4 && id.to_string().starts_with(&prefix.to_ascii_lowercase())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a file command did nothing; each says what to do.
#[derive(Debug, thiserror::Error)]
enum Refused {
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
