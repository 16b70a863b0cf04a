//! The peer's file messages (offers and answers, sealed and already checked by the inbox), and
//! what became of ours: each acts only on a transfer with the peer that sent it.

use std::time::SystemTime;

use crate::client::event::ClientEvent;
use crate::client::file_mail::FileNews;
use crate::client::transfer_event::{CancelledBy, Direction, TransferEvent};

use super::table::{
    reborrow, Entry, Net, State, Transfers, FIRST_RETRY, MAX_INCOMING, MAX_UNANSWERED_OFFERS,
};
use crate::protocol::file::{FileMessage, FileSignal};

impl Transfers {
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

    pub(super) async fn arrived(
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
                emit(self.offer_event(id, size, over_limit));
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
}
