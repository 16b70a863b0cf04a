//! The person's file commands: `/send`, `/accept`, `/decline`, `/transfers`, `/cancel`,
//! `/resume`, each checked before anything leaves or is written.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::client::command::TransferCommand;
use crate::client::event::ClientEvent;
use crate::client::transfer_event::{CancelledBy, Direction, TransferEvent, TransferRow};

use super::table::{
    matches_id, reborrow, remove_partial, seconds_until, select, Entry, Net, Refused, State,
    Transfers, FIRST_RETRY, MAX_OUTGOING,
};
use crate::protocol::file::{short_id, FileSignal, TransferId};
use crate::transfer::{folder, partial, Source};

impl Transfers {
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

    pub(super) async fn send(
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
        let size = source.size;
        // Recorded (on disk) before it is offered: a crash between the two leaves a record
        // without an offer (it lapses), never an offer this client cannot serve after a restart.
        let peer = net
            .peers
            .get(to)
            .map_or_else(|| to.to_string(), |p| p.username.clone());
        self.entries.insert(
            id,
            Entry {
                direction: Direction::Out,
                peer,
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
        if let Err(e) = net
            .courier
            .send_file(net.peers, net.me, to, id, signal)
            .await
        {
            self.entries.remove(&id);
            self.save(emit);
            return Err(Refused::NotSent(e.to_string()));
        }
        emit(self.offer_event(id, size, false));
        Ok(())
    }

    /// The one unanswered incoming offer from `from` (`id`: which, when several).
    pub(super) fn offer_from(&self, from: &str, id: Option<&str>) -> Result<TransferId, Refused> {
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

    pub(super) async fn accept(
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
        // Recorded before it is answered, as an offer is before it is made.
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.state = State::Accepted;
            entry.folder = Some(folder);
            entry.retry_at = Some(Instant::now());
        }
        self.save(emit);
        let answered = net
            .courier
            .send_file(net.peers, net.me, &peer, id, FileSignal::FileAccept)
            .await;
        if let Err(e) = answered {
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.state = State::Offered;
                entry.folder = None;
                entry.retry_at = None;
            }
            self.save(emit);
            return Err(Refused::NotSent(e.to_string()));
        }
        emit(self.said(id, |s| TransferEvent::FileAccepted {
            transfer: s.transfer,
            direction: s.direction,
            peer: s.peer,
            name: s.name,
        }));
        self.fetch(id, net, emit);
        Ok(())
    }

    pub(super) async fn decline(
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
    pub(super) fn select(&self, which: Option<&str>) -> Vec<TransferId> {
        select(
            self.entries.iter().map(|(id, e)| (*id, e.peer.as_str())),
            which,
        )
    }

    pub(super) async fn cancel(
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
    pub(super) fn forget(
        &mut self,
        id: TransferId,
        by: CancelledBy,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        let Some(mut entry) = self.entries.remove(&id) else {
            return;
        };
        entry.stop();
        if let (Direction::In, Some(folder)) = (entry.direction, &entry.folder) {
            if let Err(e) = remove_partial(folder, &id, &entry.name) {
                emit(ClientEvent::Warning {
                    message: format!("the partial file of {} was not removed: {e}", entry.name),
                });
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

    pub(super) async fn resume(
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
            self.resume_now(id, direction, &peer, reborrow(&mut net), emit)
                .await;
        }
        Ok(())
    }

    pub(super) fn list(&self) -> ClientEvent {
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
}
