//! What a line from the server means to the person: the peer list kept up to date, and the
//! events to show. It never writes to the server (the chat loop answers pings and sends).

use super::error::Disconnect;
use super::event::{ClientEvent, RoomMessage};
use super::peer_list::PeerList;
use crate::protocol::{DecodeError, PeerInfo, ServerMessage};
use crate::rules::validate_username;

/// Checks that every name the server sends keeps the rules a server enforces at registration
/// (src/rules.rs): names go into the client's files (the known-peers file, the transfer records'
/// file name) and onto the screen, so a name a hostile server made up (a newline, a `/`, a
/// space) is a broken message, never written anywhere.
pub(super) fn check_names(message: &ServerMessage) -> Result<(), DecodeError> {
    match message {
        ServerMessage::Welcome { username, peers } => keep_the_rules(
            std::iter::once(username.as_str()).chain(peers.iter().map(|p| p.username.as_str())),
        ),
        ServerMessage::Peers { peers } => keep_the_rules(peers.iter().map(|p| &p.username)),
        ServerMessage::Joined { peer } => keep_the_rules([&peer.username]),
        ServerMessage::Left { username } => keep_the_rules([username]),
        ServerMessage::Message { from, .. } => keep_the_rules([from]),
        _ => Ok(()),
    }
}

/// Checks the `welcome` that answers a login as `asked`: every name keeps the rules, and the
/// account is the one asked for (the server may only change its case), since the name goes into
/// file names and pins and the server must not choose it.
pub(super) fn check_welcome(
    asked: &str,
    welcomed: &str,
    peers: &[PeerInfo],
) -> Result<(), DecodeError> {
    keep_the_rules(std::iter::once(welcomed).chain(peers.iter().map(|p| p.username.as_str())))?;
    if welcomed.eq_ignore_ascii_case(asked) {
        Ok(())
    } else {
        Err(DecodeError::Malformed(format!(
            "welcomed as {welcomed:?} after asking for {asked:?}"
        )))
    }
}

fn keep_the_rules<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Result<(), DecodeError> {
    match names
        .into_iter()
        .find_map(|name| validate_username(name.as_ref()).err())
    {
        Some(why) => Err(DecodeError::Malformed(format!(
            "a username that breaks the rules ({why})"
        ))),
        None => Ok(()),
    }
}

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

#[cfg(test)]
mod checks {
    use super::*;

    #[test]
    fn a_welcome_is_for_the_account_asked_for_and_every_name_keeps_the_rules() {
        assert!(check_welcome("alice", "Alice", &[]).is_ok());
        assert!(check_welcome("alice", "bob", &[]).is_err());
        assert!(check_welcome("../x", "../x", &[]).is_err());
        let joined = |name: &str| ServerMessage::Joined {
            peer: PeerInfo {
                username: name.into(),
                ip: std::net::Ipv4Addr::LOCALHOST.into(),
                p2p_port: 5000,
                public_key: None,
                identity_key: None,
                identity_binding: None,
            },
        };
        assert!(check_names(&joined("bob")).is_ok());
        for bad in ["x\ny", "a b", "x/../../y", ""] {
            assert!(check_names(&joined(bad)).is_err(), "{bad:?}");
        }
    }
}
