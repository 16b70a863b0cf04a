//! Data connections: the receiver fetching (started, started again), the sender serving a
//! connection the listener accepted (only to its peer, keyed from the pair), each run's progress
//! and end, and what an end means for the transfer (done, interrupted to resume, or over).

use std::net::SocketAddr;
use std::time::Instant;

use futures::channel::oneshot;
use futures::future::AbortHandle;

use super::input::{Outcome, TransferInput};
use super::run::{self, Reporting};
use crate::client::event::ClientEvent;
use crate::client::transfer_event::{Direction, TransferEvent};

use super::table::{
    before_the_file, hex, remove_partial, Ending, Meter, Net, State, Transfers, MAX_RETRY,
};
use crate::protocol::file::{FileSignal, TransferId};
use crate::runtime::TcpStream;
use crate::transfer::{Opening, Partial, Progress, Request, TransferError};

impl Transfers {
    /// Starts (or starts again) fetching incoming transfer `id` from its sender, if it is online.
    pub(super) fn fetch(
        &mut self,
        id: TransferId,
        net: Net<'_>,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
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
                // Held by a run of this transfer still ending (its lock): a moment later it is
                // free, so try again by itself; any other disk trouble waits for /resume.
                let busy = matches!(&e, TransferError::Disk { source, .. }
                    if source.kind() == std::io::ErrorKind::WouldBlock);
                self.interrupted(id, e.to_string(), busy, emit);
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

    pub(super) fn next_run(&mut self) -> u64 {
        self.next_run += 1;
        self.next_run
    }

    pub(super) fn reporting(&self, id: TransferId, run: u64) -> Reporting {
        Reporting {
            id,
            run,
            every: self.settings.progress_every,
            inputs: self.inputs.clone(),
        }
    }

    /// Entry `id` runs (run number `run`, from `offset`); `file_started` waits for bytes.
    pub(super) fn running(&mut self, id: TransferId, run: u64, abort: AbortHandle, offset: u64) {
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
    pub(super) fn announce(&mut self, id: TransferId, emit: &mut dyn FnMut(ClientEvent)) {
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
    pub(super) fn interrupted(
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
        emit(self.file_failed(id, reason, true));
    }

    /// The `file_failed` event for `id`.
    fn file_failed(&self, id: TransferId, reason: String, resumable: bool) -> ClientEvent {
        self.said(id, |s| TransferEvent::FileFailed {
            transfer: s.transfer,
            direction: s.direction,
            peer: s.peer,
            name: s.name,
            reason,
            resumable,
        })
    }

    /// A run stopped and the transfer is over.
    pub(super) fn failed(
        &mut self,
        id: TransferId,
        reason: String,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        if !self.entries.contains_key(&id) {
            return;
        }
        emit(self.file_failed(id, reason, false));
        if let Some(mut entry) = self.entries.remove(&id) {
            entry.stop();
            // Over for good: its record goes, and with it the only way to find the partial
            // file again (neither a resume nor the week's clean-up would), so it goes too,
            // whatever the engine kept (a sender's abort keeps it for reasons it cannot judge).
            if let (Direction::In, Some(folder)) = (entry.direction, &entry.folder) {
                if let Err(e) = remove_partial(folder, &id, &entry.name) {
                    emit(ClientEvent::Warning {
                        message: format!("the partial file of {} was not removed: {e}", entry.name),
                    });
                }
            }
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
            TransferInput::Proven {
                id,
                run,
                abort,
                offset,
                go,
            } => self.proven(id, run, abort, offset, go),
            TransferInput::Unproven { id } => self.say_unproven(id, emit),
            TransferInput::Connection {
                stream,
                remote,
                opening,
                slot,
            } => {
                self.connection(stream, remote, opening, net).await;
                // Handled: the listener may take another connection in its place.
                drop(slot);
            }
        }
    }

    pub(super) fn progress(
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

    pub(super) async fn ended(
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
                let path = saved.path.display().to_string();
                self.done(id, saved.size, &saved.sha256, path, emit);
            }
            Outcome::Served(served) => {
                let path = self.entries[&id]
                    .source
                    .as_ref()
                    .map_or(String::new(), |s| s.path.display().to_string());
                self.done(id, served.size, &served.sha256, path, emit);
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
    pub(super) fn is_run(&self, id: TransferId, run: u64) -> bool {
        matches!(
            self.entries.get(&id).map(|e| &e.state),
            Some(State::Running { run: r, .. }) if *r == run
        )
    }

    /// Transfer `id` ended whole at this end (`size` bytes, `sha256` checked): said, and forgotten.
    fn done(
        &mut self,
        id: TransferId,
        size: u64,
        sha256: &[u8; 32],
        path: String,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        let sha256 = hex(sha256);
        emit(self.said(id, |s| TransferEvent::FileDone {
            transfer: s.transfer,
            direction: s.direction,
            peer: s.peer,
            name: s.name,
            size,
            sha256,
            path,
        }));
        self.entries.remove(&id);
        self.save(emit);
    }

    /// A connection for outgoing transfer `id` ended before it proved it holds the pair's keys:
    /// not the peer (a stranger who learnt the id, a session of the peer's that has ended), or
    /// the peer gone before the handshake's end. Nothing was sent; the transfer stands as it
    /// stood (an accepted one interrupted: its receiver connects again).
    pub(super) fn unproven(&mut self, id: TransferId, emit: &mut dyn FnMut(ClientEvent)) {
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
        self.say_unproven(id, emit);
    }

    /// Says a connection for outgoing transfer `id` was closed unproven (the state is the
    /// caller's business: a candidate's failed handshake leaves it as it was).
    pub(super) fn say_unproven(&self, id: TransferId, emit: &mut dyn FnMut(ClientEvent)) {
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        if entry.direction != Direction::Out {
            return;
        }
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
    pub(super) async fn connection(
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
        let reporting = self.reporting(id, run);
        // A candidate until its handshake passes (`proven`): a run under way goes on meanwhile.
        run::spawn_serve(
            reporting,
            stream,
            opening,
            key,
            source,
            self.settings.limits,
        );
    }

    /// Candidate run `run` of outgoing transfer `id` passed its handshake: it becomes the
    /// transfer's run (from `offset`), ending the one it replaces (the receiver connected again:
    /// the old connection is dead or soon will be), and is told to go on.
    pub(super) fn proven(
        &mut self,
        id: TransferId,
        run: u64,
        abort: AbortHandle,
        offset: u64,
        go: oneshot::Sender<()>,
    ) {
        if !self
            .entries
            .get(&id)
            .is_some_and(|entry| entry.direction == Direction::Out)
        {
            // Cancelled or ended while it proved itself: closed (`go` dropped).
            abort.abort();
            return;
        }
        self.running(id, run, abort, offset);
        let _ = go.send(());
    }
}
