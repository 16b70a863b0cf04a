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

mod commands;
pub(crate) mod input;
mod listener;
mod messages;
mod run;
mod runs;
mod store;
mod table;

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use futures::channel::mpsc;

use super::config::FileSettings;
use super::event::ClientEvent;
use super::transfer_event::{Direction, TransferEvent};
use crate::protocol::file::{FileSignal, TransferId};
use crate::protocol::ServerMessage;
use crate::runtime::TcpListener;
use crate::transfer::Source;
use input::TransferInput;
use store::{Record, Store};
use table::{
    reborrow, remove_partial, Entry, Said, State, FIRST_RETRY, RECORD_LIFETIME, TRANSFER_INPUTS,
};

pub(crate) use listener::{bind_pair, Bound, FilesOff};

pub(crate) use table::{Net, Transfers};

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
                Ok(records) => said.extend(transfers.restore(records)),
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
    fn restore(&mut self, records: Vec<Record>) -> Vec<ClientEvent> {
        let now = SystemTime::now();
        let mut said = Vec::new();
        let read = records.len();
        for record in records {
            let offered_at = store::from_nanos(u128::from(record.offered_at) * 1_000_000_000);
            if !record.accepted && offered_at + self.settings.offer_timeout <= now {
                continue;
            }
            if offered_at + RECORD_LIFETIME <= now {
                // A peer that has not come back for it in a week is not coming: the partial
                // file would only take room, and the record be read at every start.
                if let (Direction::In, Some(folder)) = (record.direction, &record.folder) {
                    let _ = remove_partial(folder, &record.transfer, &record.name);
                }
                said.push(ClientEvent::Warning {
                    message: format!(
                        "forgot the unfinished transfer of {} {} {}: offered more than {} days ago{}",
                        record.name,
                        if record.direction == Direction::In { "from" } else { "to" },
                        record.peer,
                        RECORD_LIFETIME.as_secs() / 86_400,
                        if record.direction == Direction::In { "; its partial file is removed" } else { "" }
                    ),
                });
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
        if self.entries.len() < read {
            let mut ignore = |_| {};
            self.save(&mut ignore);
        }
        said
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

    /// The `file_offer` event of offer `id` (made or received), lapsing after the offer timeout.
    fn offer_event(&self, id: TransferId, size: u64, over_limit: bool) -> ClientEvent {
        let lapses_in = self.settings.offer_timeout.as_secs();
        self.said(id, |s| TransferEvent::FileOffer {
            transfer: s.transfer,
            direction: s.direction,
            peer: s.peer,
            name: s.name,
            size,
            lapses_in,
            over_limit,
        })
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
            if direction == Direction::In {
                // The peer is back: the next failure waits the shortest time again.
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.retry_wait = FIRST_RETRY;
                }
            }
            self.resume_now(id, direction, &peer, reborrow(&mut net), emit)
                .await;
        }
    }

    /// Resumes one transfer now: the receiver connects, the sender says `file_resume`.
    pub(super) async fn resume_now(
        &mut self,
        id: TransferId,
        direction: Direction,
        peer: &str,
        net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        match direction {
            Direction::In => self.fetch(id, net, emit),
            Direction::Out => {
                let _ = net
                    .courier
                    .send_file(net.peers, net.me, peer, id, FileSignal::FileResume)
                    .await;
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
