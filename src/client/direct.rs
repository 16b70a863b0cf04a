//! Direct messages as the person sees them: sending one straight to a peer's announced UDP
//! address, turning what the [`DirectInbox`](super::DirectInbox) made of a received datagram
//! into events, and telling the inbox when a peer's session ends or starts. The checks
//! themselves are the inbox's; the chat loop in `client/mod.rs` calls these.

use crate::protocol::{
    encode_datagram, Datagram, DirectMessage, ServerMessage, MAX_DATAGRAM_BYTES,
};
use crate::runtime::UdpSocket;

use super::direct_inbox::{DirectInbox, DropSummary, Received};
use super::event::ClientEvent;
use super::peer_list::PeerList;

/// What the person sees of a received datagram: the message, a warning about its drop, or
/// nothing (a drop only counted, for the next summary).
pub(super) fn received_event(received: Received) -> Option<ClientEvent> {
    match received {
        Received::Delivered {
            from,
            id,
            text,
            source,
        } => Some(ClientEvent::Direct {
            from,
            id,
            text,
            source,
        }),
        Received::Dropped(dropped) => Some(ClientEvent::Warning {
            message: dropped.to_string(),
        }),
        Received::Counted => None,
    }
}

/// Tells the inbox what a message from the server means for its replay memory: a peer that left
/// or joined starts a new session whose direct-message ids count from 1 again, so what its last
/// session sent must not make its new messages look like replays. A full list (`peers`,
/// `welcome`) ends the session of everyone missing from it.
pub(super) fn track_sessions(inbox: &mut DirectInbox, message: &ServerMessage) {
    match message {
        ServerMessage::Joined { peer } => inbox.forget_peer(&peer.username),
        ServerMessage::Left { username } => inbox.forget_peer(username),
        ServerMessage::Peers { peers } | ServerMessage::Welcome { peers, .. } => {
            inbox.keep_only(peers.iter().map(|peer| peer.username.as_str()))
        }
        _ => {}
    }
}

/// The periodic summary of drops that got no warning of their own, as a warning.
pub(super) fn summary_event(summary: DropSummary) -> ClientEvent {
    ClientEvent::Warning {
        message: summary.to_string(),
    }
}

/// Sends a direct message straight to `to`'s announced UDP address.
pub(super) async fn send_direct(
    udp: &UdpSocket,
    peers: &PeerList,
    me: &str,
    id: u64,
    to: String,
    text: String,
) -> ClientEvent {
    let Some(peer) = peers.get(&to) else {
        return ClientEvent::error(format!("no such user online: {to}; nothing was sent"));
    };
    let destination = peer.p2p_addr();
    let datagram = Datagram::Direct(DirectMessage {
        from: me.to_string(),
        id,
        text,
    });
    let Some(payload) = encode_datagram(&datagram) else {
        return ClientEvent::error(format!(
            "direct message too long: one datagram carries at most {MAX_DATAGRAM_BYTES} bytes; nothing was sent"
        ));
    };
    match udp.send_to(&payload, destination).await {
        Ok(_) => ClientEvent::DirectSent {
            to: peer.username.clone(),
            id,
            destination,
        },
        Err(e) => ClientEvent::error(format!(
            "could not send to {} at {destination}: {e}",
            peer.username
        )),
    }
}
