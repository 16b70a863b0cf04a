//! A file transfer's data connection as an eavesdropper reads it (docs/protocol.md, "File
//! transfer"): the receiver's clear opening (magic `p2pchat-file`, the transfer id, the two key
//! ids, the offset it resumes from), the handshake's nonce and the two key confirmations by their
//! sizes, then sealed records by their clear 5-byte headers (type, length): the file's data, its
//! end (size and SHA-256, sealed), the receiver's `done`, an abort, a keep-alive. What the records
//! hold is not readable; how many bytes went, and when, is.
//!
//! [`FileStreamReader`] reads one direction of the connection as its segments come, without
//! keeping a record's body: a few header bytes at most.

use crate::transfer::channel::{
    CONFIRM_BYTES, MAGIC, OPENING_BYTES, RECORD_HEADER_BYTES, REPLY_BYTES,
};
use crate::transfer::TRANSFER_ID_BYTES;

/// Which end of the data connection a direction comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The receiver: it connected, and speaks first.
    Receiver,
    /// The sender: it listens on its transfer port.
    Sender,
}

/// What comes next in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The receiver's opening, or the sender's reply.
    Hello,
    /// A key confirmation.
    Proof,
    /// A record's header.
    Header,
    /// `usize` more bytes of a record's body.
    Body(usize),
}

/// Reads one direction of a data connection.
#[derive(Debug, Clone)]
pub struct FileStreamReader {
    side: Side,
    phase: Phase,
    /// The bytes of the item being read, while it is a header (the opening at most).
    held: Vec<u8>,
}

/// The bytes are not a data connection's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a p2pchat file transfer's data connection")]
pub struct NotAFileTransfer;

/// Whether a direction's first bytes are a receiver's opening.
pub fn looks_like_opening(start: &[u8]) -> bool {
    let n = start.len().min(MAGIC.len());
    n > 0 && start[..n] == MAGIC[..n]
}

impl FileStreamReader {
    pub fn new(side: Side) -> Self {
        FileStreamReader {
            side,
            phase: Phase::Hello,
            held: Vec::new(),
        }
    }

    /// Reads the next bytes of the direction; returns the labels of the items they finish (a
    /// record counts from its header: its type is known there, and its body is not readable).
    ///
    /// # Errors
    /// [`NotAFileTransfer`] when an opening lacks the magic or a record's type is unknown.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<String>, NotAFileTransfer> {
        let mut finished = Vec::new();
        while !bytes.is_empty() {
            if let Phase::Body(left) = self.phase {
                let take = left.min(bytes.len());
                bytes = &bytes[take..];
                self.phase = match left - take {
                    0 => Phase::Header,
                    more => Phase::Body(more),
                };
                continue;
            }
            let want = match (self.phase, self.side) {
                (Phase::Hello, Side::Receiver) => OPENING_BYTES,
                (Phase::Hello, Side::Sender) => REPLY_BYTES,
                (Phase::Proof, _) => CONFIRM_BYTES,
                _ => RECORD_HEADER_BYTES,
            };
            let take = (want - self.held.len()).min(bytes.len());
            self.held.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.held.len() < want {
                break;
            }
            let item = std::mem::take(&mut self.held);
            let (label, next) = self.item(&item)?;
            finished.push(label);
            self.phase = next;
        }
        Ok(finished)
    }

    /// A whole item of the phase: its label and what comes after it.
    fn item(&self, item: &[u8]) -> Result<(String, Phase), NotAFileTransfer> {
        Ok(match (self.phase, self.side) {
            (Phase::Hello, Side::Receiver) => {
                if !item.starts_with(MAGIC) {
                    return Err(NotAFileTransfer);
                }
                let id_at = MAGIC.len() + 1;
                let id: String = item[id_at..id_at + 4]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let offset_at = id_at + TRANSFER_ID_BYTES + 16;
                let mut offset = [0u8; 8];
                offset.copy_from_slice(&item[offset_at..offset_at + 8]);
                (
                    format!(
                        "file opening (transfer {id}…, from byte {})",
                        u64::from_be_bytes(offset)
                    ),
                    Phase::Proof,
                )
            }
            (Phase::Hello, Side::Sender) => ("file handshake: sender's nonce".into(), Phase::Proof),
            (Phase::Proof, Side::Receiver) => {
                ("file handshake: receiver's proof".into(), Phase::Header)
            }
            (Phase::Proof, Side::Sender) => {
                ("file handshake: sender's proof".into(), Phase::Header)
            }
            _ => {
                let what = match item[0] {
                    1 => "file data",
                    2 => "file end (size and SHA-256, sealed)",
                    3 => "file abort",
                    4 => "file done (the receiver's SHA-256, sealed)",
                    5 => "file keep-alive",
                    _ => return Err(NotAFileTransfer),
                };
                let mut length = [0u8; 4];
                length.copy_from_slice(&item[1..RECORD_HEADER_BYTES]);
                let length = u32::from_be_bytes(length) as usize;
                let next = if length == 0 {
                    Phase::Header
                } else {
                    Phase::Body(length)
                };
                (what.to_string(), next)
            }
        })
    }
}

/// Labels as a segment shows them: repeats counted (`file data ×4`).
pub fn summary(labels: &[String]) -> String {
    let mut parts: Vec<(String, usize)> = Vec::new();
    for label in labels {
        match parts.last_mut() {
            Some((last, count)) if last == label => *count += 1,
            _ => parts.push((label.clone(), 1)),
        }
    }
    parts
        .into_iter()
        .map(|(label, count)| match count {
            1 => label,
            n => format!("{label} ×{n}"),
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, body: usize) -> Vec<u8> {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&(body as u32).to_be_bytes());
        bytes.extend(std::iter::repeat_n(0xab, body));
        bytes
    }

    #[test]
    fn both_directions_read_item_by_item_across_segments() {
        let mut opening = MAGIC.to_vec();
        opening.push(1);
        opening.extend_from_slice(&[0x1a, 0x2b, 0x3c, 0x4d]);
        opening.extend_from_slice(&[0; TRANSFER_ID_BYTES - 4 + 16]);
        opening.extend_from_slice(&150u64.to_be_bytes());
        opening.extend_from_slice(&[7; 32]);
        assert_eq!(opening.len(), OPENING_BYTES);
        assert!(looks_like_opening(&opening[..3]));
        let mut receiver = FileStreamReader::new(Side::Receiver);
        assert_eq!(receiver.push(&opening[..40]).unwrap(), Vec::<String>::new());
        assert_eq!(
            receiver.push(&opening[40..]).unwrap(),
            ["file opening (transfer 1a2b3c4d…, from byte 150)"]
        );
        let mut rest = vec![0; CONFIRM_BYTES];
        rest.extend(record(4, 48));
        assert_eq!(
            receiver.push(&rest).unwrap(),
            [
                "file handshake: receiver's proof",
                "file done (the receiver's SHA-256, sealed)"
            ]
        );

        let mut sender = FileStreamReader::new(Side::Sender);
        let mut bytes = vec![1; REPLY_BYTES + CONFIRM_BYTES];
        for _ in 0..3 {
            bytes.extend(record(1, 1000));
        }
        bytes.extend(record(2, 56));
        let (a, b) = bytes.split_at(REPLY_BYTES + CONFIRM_BYTES + 1500);
        let first = sender.push(a).unwrap();
        let second = sender.push(b).unwrap();
        assert_eq!(
            summary(&first),
            "file handshake: sender's nonce + file handshake: sender's proof + file data ×2"
        );
        assert_eq!(
            summary(&second),
            "file data + file end (size and SHA-256, sealed)"
        );
    }

    #[test]
    fn another_protocol_is_refused() {
        let mut receiver = FileStreamReader::new(Side::Receiver);
        assert!(!looks_like_opening(b"GET / HTTP/1.1"));
        assert_eq!(receiver.push(&[b'x'; OPENING_BYTES]), Err(NotAFileTransfer));
        let mut sender = FileStreamReader::new(Side::Sender);
        let mut bytes = vec![0; REPLY_BYTES + CONFIRM_BYTES];
        bytes.extend(record(9, 0));
        assert_eq!(sender.push(&bytes), Err(NotAFileTransfer));
    }
}
