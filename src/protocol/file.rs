//! A file transfer's offer and its answers, as the two clients say them to each other: typed
//! messages sealed as direct-message datagrams of their own kind ([`crate::sealed::Kind::File`]),
//! so they are acknowledged, retransmitted, replay-checked and dropped when forged exactly as a
//! direct message is. The file itself never travels here: the receiver pulls it over a TCP
//! connection of its own (the data connection, `crate::transfer`).
//!
//! Every message names its sender (`from`), a message `id` from the same sequence as the
//! sender's direct messages (so one acknowledgement and one replay memory serve both), and the
//! transfer it is about ([`TransferId`], chosen by the sender at the offer). docs/protocol.md,
//! "File transfer", has the sequence.

use serde::{Deserialize, Serialize};

use super::{decode_typed, DecodeError};
/// Names one transfer: 16 random bytes chosen by the sender, 32 hex digits in JSON (the engine's).
pub use crate::transfer::TransferId;

/// The longest file name an offer may carry, in bytes. Longer than any file system's name (255
/// bytes on Linux): the receiver shortens the name it saves anyway; this only bounds what a peer
/// can make a receiver show.
pub const MAX_OFFERED_NAME_BYTES: usize = 1024;

/// The `type`s of file messages, as [`decode`] knows them.
pub const FILE_MESSAGE_TYPES: [&str; 5] = [
    "file_offer",
    "file_accept",
    "file_decline",
    "file_cancel",
    "file_resume",
];

/// One file message between two clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMessage {
    /// The sender's username; the receiver checks it against the key the datagram was sealed
    /// under.
    pub from: String,
    /// From the sender's direct-message sequence: what the acknowledgement names, and what the
    /// receiver's replay memory checks.
    pub id: u64,
    pub transfer: TransferId,
    #[serde(flatten)]
    pub signal: FileSignal,
}

/// What a file message says about its transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileSignal {
    /// Sender → receiver: a file is offered: its name (the last part of its path, as the sender
    /// has it; the receiver makes it safe) and its size in bytes. The sender keeps the path, the
    /// size and the modification time, and serves only that file, unchanged.
    FileOffer { name: String, size: u64 },
    /// Receiver → sender: the offer is accepted; the receiver connects for the data.
    FileAccept,
    /// Receiver → sender: the offer is declined; the sender forgets it.
    FileDecline,
    /// Either way: the transfer is stopped for good, before or after it started; both forget
    /// it (the receiver removes its partial file).
    FileCancel,
    /// Sender → receiver: the sender can serve this transfer again (it came back online, or was
    /// restarted): a receiver holding its partial file connects and resumes.
    FileResume,
}

impl FileSignal {
    /// The `type` on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            FileSignal::FileOffer { .. } => "file_offer",
            FileSignal::FileAccept => "file_accept",
            FileSignal::FileDecline => "file_decline",
            FileSignal::FileCancel => "file_cancel",
            FileSignal::FileResume => "file_resume",
        }
    }
}

/// The short form of a transfer's id that people see and type: its first [`SHORT_ID`] hex
/// digits.
pub fn short_id(id: &TransferId) -> String {
    id.to_string()[..SHORT_ID].to_string()
}

/// Hex digits of a transfer id's short form.
pub const SHORT_ID: usize = 8;

/// Encodes a file message as the plaintext of a sealed datagram.
pub fn encode(message: &FileMessage) -> Vec<u8> {
    serde_json::to_vec(message).expect("file messages always serialize")
}

/// Decodes the plaintext of a sealed file datagram.
///
/// # Errors
/// As for every typed message ([`DecodeError`]); an offer whose name is longer than
/// [`MAX_OFFERED_NAME_BYTES`] is malformed.
pub fn decode(bytes: &[u8]) -> Result<FileMessage, DecodeError> {
    let message: FileMessage = decode_typed(bytes, &FILE_MESSAGE_TYPES)?;
    if let FileSignal::FileOffer { name, .. } = &message.signal {
        if name.len() > MAX_OFFERED_NAME_BYTES {
            return Err(DecodeError::Malformed(format!(
                "an offered file name is at most {MAX_OFFERED_NAME_BYTES} bytes"
            )));
        }
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TransferId {
        TransferId::from_hex("00112233445566778899aabbccddeeff").unwrap()
    }

    #[test]
    fn every_signal_round_trips_with_its_type_on_the_wire() {
        let signals = [
            FileSignal::FileOffer {
                name: "report.pdf".into(),
                size: 2_411_724,
            },
            FileSignal::FileAccept,
            FileSignal::FileDecline,
            FileSignal::FileCancel,
            FileSignal::FileResume,
        ];
        for signal in signals {
            let message = FileMessage {
                from: "alice".into(),
                id: 7,
                transfer: id(),
                signal: signal.clone(),
            };
            let bytes = encode(&message);
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(json["type"], signal.name());
            assert_eq!(json["transfer"], "00112233445566778899aabbccddeeff");
            assert_eq!(decode(&bytes), Ok(message));
        }
    }

    #[test]
    fn the_offer_reads_as_documented() {
        let text = br#"{"type":"file_offer","from":"alice","id":3,"transfer":"00112233445566778899aabbccddeeff","name":"a.txt","size":5}"#;
        assert_eq!(
            decode(text).unwrap().signal,
            FileSignal::FileOffer {
                name: "a.txt".into(),
                size: 5
            }
        );
    }

    #[test]
    fn bad_messages_are_refused_with_their_cause() {
        let bad_id = br#"{"type":"file_accept","from":"a","id":1,"transfer":"xyz"}"#;
        assert!(matches!(decode(bad_id), Err(DecodeError::Malformed(_))));
        let direct = br#"{"type":"direct","from":"a","id":1,"text":"x"}"#;
        assert!(matches!(decode(direct), Err(DecodeError::UnknownType(_))));
        let long = format!(
            r#"{{"type":"file_offer","from":"a","id":1,"transfer":"{}","name":"{}","size":1}}"#,
            id(),
            "n".repeat(MAX_OFFERED_NAME_BYTES + 1)
        );
        assert!(matches!(
            decode(long.as_bytes()),
            Err(DecodeError::Malformed(_))
        ));
        let negative = br#"{"type":"file_offer","from":"a","id":1,"transfer":"00112233445566778899aabbccddeeff","name":"x","size":-1}"#;
        assert!(matches!(decode(negative), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn ids_are_random_and_their_short_form_is_a_prefix() {
        let (a, b) = (TransferId::generate(), TransferId::generate());
        assert_ne!(a, b);
        assert!(a.to_string().starts_with(&short_id(&a)));
        assert_eq!(TransferId::from_hex(&a.to_string().to_uppercase()), Some(a));
    }
}
