//! What a line from the server means to the person: the peer list kept up to date, and the
//! events to show. It never writes to the server (the chat loop answers pings and sends).

use super::error::Disconnect;
use super::event::{ClientEvent, RoomMessage};
use super::peer_list::PeerList;
use crate::protocol::ServerMessage;

/// Applies one server message to the peer list and reports it; `Err` when it ends the
/// connection.
pub(super) fn on_server_message(
    message: ServerMessage,
    peers: &mut PeerList,
    emit: &mut dyn FnMut(ClientEvent),
) -> Result<(), Disconnect> {
    match message {
        ServerMessage::Joined { peer } => {
            peers.insert(peer.clone());
            emit(ClientEvent::Joined { peer });
            // For programs that keep the list (`--json`); a person saw the join.
            emit(ClientEvent::PeersChanged {
                peers: peers.to_vec(),
                verified: peers.verified(),
            });
        }
        ServerMessage::Left { username } => {
            peers.remove(&username);
            emit(ClientEvent::Left { username });
            emit(ClientEvent::PeersChanged {
                peers: peers.to_vec(),
                verified: peers.verified(),
            });
        }
        ServerMessage::Peers { peers: list } | ServerMessage::Welcome { peers: list, .. } => {
            peers.replace(list);
            emit(ClientEvent::Peers {
                peers: peers.to_vec(),
                verified: peers.verified(),
            });
        }
        // Every kind alike: how one looks is the event's business.
        ServerMessage::Message { from, line } => {
            emit(ClientEvent::Message(RoomMessage { from, line }))
        }
        ServerMessage::Error {
            code,
            message,
            fatal,
        } => {
            if fatal {
                return Err(Disconnect::Fatal { code, message });
            }
            emit(ClientEvent::Error {
                code: Some(code),
                message,
            });
        }
        ServerMessage::Shutdown { reason } => {
            emit(ClientEvent::Shutdown {
                reason: reason.clone(),
            });
            return Err(Disconnect::Shutdown { reason });
        }
        ServerMessage::Hello { .. }
        | ServerMessage::Ping
        | ServerMessage::Pong
        | ServerMessage::NameOk { .. }
        // Only before login (the link reports it).
        | ServerMessage::Delayed { .. } => {}
    }
    Ok(())
}
