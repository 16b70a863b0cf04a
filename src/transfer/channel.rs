//! The data connection of a transfer: its handshake and its sealed records. No file, no disk.
//!
//! The receiver connects and speaks first, in the clear, a fixed-size [`Opening`]: which transfer,
//! which two session keys, the offset it resumes from, and a fresh nonce. The sender reads it with
//! [`read_opening`] *before* it knows any key, looks the transfer up, and answers with its own
//! fresh nonce. Both derive the connection's keys from the transfer's key and the SHA-256 of
//! everything said so far (the transcript); the receiver proves it holds them first, then the
//! sender. A peer that cannot prove it is closed on: a stranger gets a random nonce and nothing
//! else, and neither side touches the file before the other has proved itself.
//!
//! Records after the handshake: a 5-byte clear header (type, length of what follows) and the
//! ChaCha20-Poly1305 ciphertext with its tag, under a per-direction key and a counter nonce that
//! starts at 0 on every connection (the keys are fresh per connection, so a counter never repeats
//! under a key). The header is the associated data: a record's type or length cannot be changed,
//! and a record dropped, repeated or reordered does not open (its counter is another).
//! A plaintext is at most [`MAX_RECORD_PLAINTEXT`] bytes, so one record costs bounded memory.

use std::fmt;
use std::time::Duration;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{getrandom_bytes, Limits, TransferError, TransferId, TransferKey, TRANSFER_ID_BYTES};
use crate::runtime;
use crate::sealed::{KeyId, KEY_ID_BYTES};

/// The first bytes of an opening: say what this connection is, so that a stray client of
/// another protocol is refused at once.
pub const MAGIC: &[u8; 12] = b"p2pchat-file";

/// The data connection's version, in the opening and in the sender's reply.
pub const VERSION: u8 = 1;

/// Bytes of each side's handshake nonce.
pub const NONCE_BYTES: usize = 32;

/// Bytes of an [`Opening`] on the wire: magic, version, transfer id, the receiver's and the
/// sender's key ids, the offset, the receiver's nonce. Fixed, so a handshake reads a bounded
/// number of bytes.
pub const OPENING_BYTES: usize =
    MAGIC.len() + 1 + TRANSFER_ID_BYTES + 2 * KEY_ID_BYTES + 8 + NONCE_BYTES;

/// Bytes of the sender's reply: version and nonce.
pub const REPLY_BYTES: usize = 1 + NONCE_BYTES;

/// Bytes of a key confirmation (HMAC-SHA256).
pub const CONFIRM_BYTES: usize = 32;

/// The most a record carries: 64 KiB, a disk-friendly chunk that keeps per-record overhead
/// (21 bytes) under 0.04 %.
pub const MAX_RECORD_PLAINTEXT: usize = 64 * 1024;

/// Bytes of a record's clear header: type (1) and the length of the ciphertext with its tag (4,
/// big-endian).
pub const RECORD_HEADER_BYTES: usize = 5;

/// Bytes of the Poly1305 tag after each record's ciphertext.
pub const RECORD_TAG_BYTES: usize = 16;

/// HKDF's info for a connection's keys: names the protocol and its version.
const CONNECTION_INFO: &[u8] = b"p2pchat file transfer connection v1";

/// What the receiver connecting to a sender's transfer port says first, in the clear. Nothing in
/// it is to be believed before the handshake's key confirmation (which covers it byte for byte).
#[derive(Clone, PartialEq, Eq)]
pub struct Opening {
    /// Which transfer the receiver wants.
    pub transfer_id: TransferId,
    /// The receiver's session key id (whom to derive the pair's keys with).
    pub receiver_key: KeyId,
    /// The sender's session key id as the receiver knows it: a sender that logged in again since
    /// has another, and refuses.
    pub sender_key: KeyId,
    /// Where the receiver's partial file ends: the sender starts from there.
    pub offset: u64,
    nonce: [u8; NONCE_BYTES],
}

impl fmt::Debug for Opening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opening")
            .field("transfer_id", &self.transfer_id)
            .field("receiver_key", &self.receiver_key)
            .field("sender_key", &self.sender_key)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Opening {
    fn new(transfer_id: TransferId, receiver_key: KeyId, sender_key: KeyId, offset: u64) -> Self {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom_bytes(&mut nonce);
        Opening {
            transfer_id,
            receiver_key,
            sender_key,
            offset,
            nonce,
        }
    }

    fn encode(&self) -> [u8; OPENING_BYTES] {
        let mut bytes = [0u8; OPENING_BYTES];
        let mut at = 0;
        for part in [
            &MAGIC[..],
            &[VERSION],
            &self.transfer_id.0,
            &self.receiver_key.0,
            &self.sender_key.0,
            &self.offset.to_be_bytes(),
            &self.nonce,
        ] {
            bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        bytes
    }

    /// Reads an opening from its bytes.
    ///
    /// # Errors
    /// [`OpeningError::NotATransfer`] without the magic, [`OpeningError::UnknownVersion`] for
    /// another version.
    pub fn decode(bytes: &[u8; OPENING_BYTES]) -> Result<Opening, OpeningError> {
        let (magic, rest) = bytes.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err(OpeningError::NotATransfer);
        }
        let (version, rest) = rest.split_at(1);
        if version[0] != VERSION {
            return Err(OpeningError::UnknownVersion(version[0]));
        }
        let (id, rest) = rest.split_at(TRANSFER_ID_BYTES);
        let (receiver, rest) = rest.split_at(KEY_ID_BYTES);
        let (sender, rest) = rest.split_at(KEY_ID_BYTES);
        let (offset, nonce) = rest.split_at(8);
        Ok(Opening {
            transfer_id: TransferId(id.try_into().expect("split at the id's length")),
            receiver_key: KeyId(receiver.try_into().expect("split at a key id's length")),
            sender_key: KeyId(sender.try_into().expect("split at a key id's length")),
            offset: u64::from_be_bytes(offset.try_into().expect("split at 8 bytes")),
            nonce: nonce.try_into().expect("the rest is the nonce"),
        })
    }
}

/// Why an opening is refused before any key is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpeningError {
    /// It does not start with [`MAGIC`]: not a p2pchat transfer.
    #[error("it is not a p2pchat file transfer")]
    NotATransfer,
    /// Another version of the data connection.
    #[error("data connection version {0} is not known (this client speaks {VERSION})")]
    UnknownVersion(u8),
}

/// Reads the receiver's opening on a connection the sender accepted, within `within`: exactly
/// [`OPENING_BYTES`] bytes, never more. The caller looks the transfer up by
/// [`Opening::transfer_id`] and the key ids, and either calls [`super::serve`] or closes the
/// connection (a stranger then has had nothing from it).
///
/// # Errors
/// [`TransferError::HandshakeTimeout`], [`TransferError::Connection`] (closed early),
/// [`TransferError::Opening`].
pub async fn read_opening<S: AsyncRead + Unpin>(
    io: &mut S,
    within: Duration,
) -> Result<Opening, TransferError> {
    let mut bytes = [0u8; OPENING_BYTES];
    runtime::timeout(within, io.read_exact(&mut bytes))
        .await
        .ok_or(TransferError::HandshakeTimeout(within))?
        .map_err(TransferError::Connection)?;
    Ok(Opening::decode(&bytes)?)
}

/// Why a side ended a transfer, sent in an abort record so that the other side can say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The sender's file changed since the offer.
    FileChanged,
    /// The receiver's offset is past the end of the file.
    BadOffset,
    /// The receiver found another SHA-256 than the sender's.
    HashMismatch,
    /// The receiver got another size than offered.
    SizeMismatch,
    /// The receiver's disk is full.
    NoSpace,
    /// The side could not read or write its file.
    DiskError,
    /// A reason this version does not know.
    Unknown(u8),
}

impl AbortReason {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            AbortReason::FileChanged => 1,
            AbortReason::BadOffset => 2,
            AbortReason::HashMismatch => 3,
            AbortReason::SizeMismatch => 4,
            AbortReason::NoSpace => 5,
            AbortReason::DiskError => 6,
            AbortReason::Unknown(byte) => byte,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Self {
        match byte {
            1 => AbortReason::FileChanged,
            2 => AbortReason::BadOffset,
            3 => AbortReason::HashMismatch,
            4 => AbortReason::SizeMismatch,
            5 => AbortReason::NoSpace,
            6 => AbortReason::DiskError,
            other => AbortReason::Unknown(other),
        }
    }

    /// What to tell the peer for an error of this side, if anything.
    pub(crate) fn for_error(error: &TransferError) -> Option<AbortReason> {
        match error {
            TransferError::FileChanged => Some(AbortReason::FileChanged),
            TransferError::OffsetBeyondEnd { .. } => Some(AbortReason::BadOffset),
            TransferError::HashMismatch => Some(AbortReason::HashMismatch),
            TransferError::SizeMismatch { .. } | TransferError::TooLong { .. } => {
                Some(AbortReason::SizeMismatch)
            }
            TransferError::NoSpace { .. } | TransferError::DiskFull { .. } => {
                Some(AbortReason::NoSpace)
            }
            TransferError::Disk { .. } | TransferError::NoFreeName => Some(AbortReason::DiskError),
            _ => None,
        }
    }
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortReason::FileChanged => f.write_str("the file changed since it was offered"),
            AbortReason::BadOffset => f.write_str("the resume offset is past the end of the file"),
            AbortReason::HashMismatch => f.write_str("the SHA-256 did not match"),
            AbortReason::SizeMismatch => f.write_str("the size did not match the offer"),
            AbortReason::NoSpace => f.write_str("the receiver's disk is full"),
            AbortReason::DiskError => f.write_str("a disk error"),
            AbortReason::Unknown(byte) => write!(f, "reason {byte}"),
        }
    }
}

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordType {
    /// Sender → receiver: the next bytes of the file.
    Data = 1,
    /// Sender → receiver: the file's size (8 bytes) and SHA-256 (32).
    End = 2,
    /// Either way: the transfer is over, one [`AbortReason`] byte says why.
    Abort = 3,
    /// Receiver → sender: the file was checked and saved; its SHA-256 (32).
    Done = 4,
    /// Sender → receiver: nothing, but the sender is busy (hashing a resumed prefix).
    KeepAlive = 5,
}

impl RecordType {
    fn from_byte(byte: u8) -> Option<RecordType> {
        match byte {
            1 => Some(RecordType::Data),
            2 => Some(RecordType::End),
            3 => Some(RecordType::Abort),
            4 => Some(RecordType::Done),
            5 => Some(RecordType::KeepAlive),
            _ => None,
        }
    }
}

/// The nonce for a record counter: four zero bytes and the counter little-endian, as in
/// [`crate::sealed`].
fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(bytes)
}

/// Seals the records one side sends on one connection.
pub(crate) struct RecordSealer {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl RecordSealer {
    /// A buffer for a record of up to `plaintext` bytes: the header's room, then the plaintext
    /// goes after it ([`RecordSealer::seal`]).
    pub(crate) fn buffer(plaintext: usize) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(RECORD_HEADER_BYTES + plaintext + RECORD_TAG_BYTES);
        buffer.resize(RECORD_HEADER_BYTES, 0);
        buffer
    }

    /// Seals `record` in place: it holds [`RECORD_HEADER_BYTES`] of room, then the plaintext
    /// (at most [`MAX_RECORD_PLAINTEXT`]); afterwards it is the record as it goes on the wire.
    pub(crate) fn seal(&mut self, kind: RecordType, record: &mut Vec<u8>) {
        let plaintext = record.len() - RECORD_HEADER_BYTES;
        debug_assert!(plaintext <= MAX_RECORD_PLAINTEXT);
        let length = (plaintext + RECORD_TAG_BYTES) as u32;
        record[0] = kind as u8;
        record[1..RECORD_HEADER_BYTES].copy_from_slice(&length.to_be_bytes());
        let (header, body) = record.split_at_mut(RECORD_HEADER_BYTES);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce(self.counter), header, body.into())
            .expect("a record is far below ChaCha20-Poly1305's limit");
        // A connection never sends 2^64 records; the counter cannot wrap.
        self.counter += 1;
        record.extend_from_slice(&tag);
    }

    /// Seals and writes one record with `payload`, within `within`.
    pub(crate) async fn send<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        kind: RecordType,
        payload: &[u8],
        within: Duration,
    ) -> Result<(), TransferError> {
        let mut record = Self::buffer(payload.len());
        record.extend_from_slice(payload);
        self.seal(kind, &mut record);
        write_within(io, &record, within).await
    }
}

/// Writes all of `bytes` and flushes, within `within` (a peer that stops reading stalls).
pub(crate) async fn write_within<S: AsyncWrite + Unpin>(
    io: &mut S,
    bytes: &[u8],
    within: Duration,
) -> Result<(), TransferError> {
    runtime::timeout(within, async {
        io.write_all(bytes).await?;
        io.flush().await
    })
    .await
    .ok_or(TransferError::Stalled(within))?
    .map_err(TransferError::Connection)
}

/// Opens the records one side receives on one connection.
pub(crate) struct RecordOpener {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl RecordOpener {
    /// Reads and opens the next record, within `within` for all of it: its type and plaintext.
    ///
    /// # Errors
    /// [`TransferError::Stalled`], [`TransferError::Connection`] (closed, even cleanly: a
    /// transfer ends with a record, not with a close), [`TransferError::Malformed`] for an
    /// unknown type or a length out of bounds, [`TransferError::Forged`] when it does not open.
    pub(crate) async fn next<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
        within: Duration,
    ) -> Result<(RecordType, Vec<u8>), TransferError> {
        runtime::timeout(within, self.read(io))
            .await
            .ok_or(TransferError::Stalled(within))?
    }

    async fn read<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
    ) -> Result<(RecordType, Vec<u8>), TransferError> {
        let mut header = [0u8; RECORD_HEADER_BYTES];
        io.read_exact(&mut header)
            .await
            .map_err(TransferError::Connection)?;
        let kind = RecordType::from_byte(header[0]).ok_or(TransferError::Malformed)?;
        let length = u32::from_be_bytes(header[1..].try_into().expect("4 bytes")) as usize;
        if !(RECORD_TAG_BYTES..=MAX_RECORD_PLAINTEXT + RECORD_TAG_BYTES).contains(&length) {
            return Err(TransferError::Malformed);
        }
        let mut body = vec![0u8; length];
        io.read_exact(&mut body)
            .await
            .map_err(TransferError::Connection)?;
        let plaintext = length - RECORD_TAG_BYTES;
        let tag = Tag::try_from(&body[plaintext..]).expect("16 bytes");
        self.cipher
            .decrypt_inout_detached(
                &nonce(self.counter),
                &header,
                (&mut body[..plaintext]).into(),
                &tag,
            )
            .map_err(|_| TransferError::Forged)?;
        self.counter += 1;
        body.truncate(plaintext);
        Ok((kind, body))
    }
}

/// A sealer and the opener of what it seals, under one key: for the record tests of the modules
/// that read records.
#[cfg(test)]
pub(crate) fn test_pair() -> (RecordSealer, RecordOpener) {
    let cipher = ChaCha20Poly1305::new_from_slice(&[7u8; 32]).expect("a 32-byte key");
    (
        RecordSealer {
            cipher: cipher.clone(),
            counter: 0,
        },
        RecordOpener { cipher, counter: 0 },
    )
}

/// One connection's keys, once the handshake is done: what this side seals with and what it
/// opens with.
pub(crate) struct Records {
    pub(crate) sealer: RecordSealer,
    pub(crate) opener: RecordOpener,
}

/// The keys both sides derive from the transfer's key and the transcript.
struct ConnectionKeys {
    receiver_confirm: [u8; 32],
    sender_confirm: [u8; 32],
    to_receiver: ChaCha20Poly1305,
    to_sender: ChaCha20Poly1305,
}

impl ConnectionKeys {
    fn derive(key: &TransferKey, opening: &[u8; OPENING_BYTES], reply: &[u8; REPLY_BYTES]) -> Self {
        let transcript = Sha256::new()
            .chain_update(opening)
            .chain_update(reply)
            .finalize();
        let mut okm = [0u8; 128];
        Hkdf::<Sha256>::new(Some(&transcript), &key.0)
            .expand(CONNECTION_INFO, &mut okm)
            .expect("128 bytes is a valid HKDF-SHA256 output length");
        let part =
            |i: usize| -> [u8; 32] { okm[32 * i..32 * (i + 1)].try_into().expect("32-byte parts") };
        let keys = ConnectionKeys {
            receiver_confirm: part(0),
            sender_confirm: part(1),
            to_receiver: ChaCha20Poly1305::new_from_slice(&part(2)).expect("a 32-byte key"),
            to_sender: ChaCha20Poly1305::new_from_slice(&part(3)).expect("a 32-byte key"),
        };
        okm.fill(0);
        keys
    }

    fn mac(key: &[u8; 32], label: &[u8]) -> Hmac<Sha256> {
        <Hmac<Sha256>>::new_from_slice(key)
            .expect("HMAC takes a key of any length")
            .chain_update(label)
    }

    fn receiver_proof(&self) -> [u8; CONFIRM_BYTES] {
        Self::mac(&self.receiver_confirm, b"receiver")
            .finalize()
            .into_bytes()
            .into()
    }

    fn sender_proof(&self) -> [u8; CONFIRM_BYTES] {
        Self::mac(&self.sender_confirm, b"sender")
            .finalize()
            .into_bytes()
            .into()
    }

    fn check_receiver(&self, proof: &[u8; CONFIRM_BYTES]) -> Result<(), TransferError> {
        Self::mac(&self.receiver_confirm, b"receiver")
            .verify_slice(proof)
            .map_err(|_| TransferError::WrongKey)
    }

    fn check_sender(&self, proof: &[u8; CONFIRM_BYTES]) -> Result<(), TransferError> {
        Self::mac(&self.sender_confirm, b"sender")
            .verify_slice(proof)
            .map_err(|_| TransferError::WrongKey)
    }
}

impl Drop for ConnectionKeys {
    fn drop(&mut self) {
        self.receiver_confirm.fill(0);
        self.sender_confirm.fill(0);
    }
}

/// The sender's half of the handshake, after [`read_opening`]: its nonce out, the receiver's
/// proof in and checked, its own proof out. Within `limits.handshake`.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    opening: &Opening,
    key: &TransferKey,
    limits: &Limits,
) -> Result<Records, TransferError> {
    runtime::timeout(limits.handshake, async {
        let mut reply = [0u8; REPLY_BYTES];
        reply[0] = VERSION;
        getrandom_bytes(&mut reply[1..]);
        io.write_all(&reply)
            .await
            .map_err(TransferError::Connection)?;
        io.flush().await.map_err(TransferError::Connection)?;
        let keys = ConnectionKeys::derive(key, &opening.encode(), &reply);
        let mut proof = [0u8; CONFIRM_BYTES];
        io.read_exact(&mut proof)
            .await
            .map_err(TransferError::Connection)?;
        keys.check_receiver(&proof)?;
        io.write_all(&keys.sender_proof())
            .await
            .map_err(TransferError::Connection)?;
        io.flush().await.map_err(TransferError::Connection)?;
        Ok(Records {
            sealer: RecordSealer {
                cipher: keys.to_receiver.clone(),
                counter: 0,
            },
            opener: RecordOpener {
                cipher: keys.to_sender.clone(),
                counter: 0,
            },
        })
    })
    .await
    .ok_or(TransferError::HandshakeTimeout(limits.handshake))?
}

/// The receiver's half of the handshake: the opening out, the sender's nonce in, the proofs
/// exchanged (its own first). Within `limits.handshake`.
pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    transfer_id: TransferId,
    receiver_key: KeyId,
    sender_key: KeyId,
    offset: u64,
    key: &TransferKey,
    limits: &Limits,
) -> Result<Records, TransferError> {
    runtime::timeout(limits.handshake, async {
        let opening = Opening::new(transfer_id, receiver_key, sender_key, offset).encode();
        io.write_all(&opening)
            .await
            .map_err(TransferError::Connection)?;
        io.flush().await.map_err(TransferError::Connection)?;
        let mut reply = [0u8; REPLY_BYTES];
        io.read_exact(&mut reply)
            .await
            .map_err(TransferError::Connection)?;
        if reply[0] != VERSION {
            return Err(OpeningError::UnknownVersion(reply[0]).into());
        }
        let keys = ConnectionKeys::derive(key, &opening, &reply);
        io.write_all(&keys.receiver_proof())
            .await
            .map_err(TransferError::Connection)?;
        io.flush().await.map_err(TransferError::Connection)?;
        let mut proof = [0u8; CONFIRM_BYTES];
        io.read_exact(&mut proof)
            .await
            .map_err(TransferError::Connection)?;
        keys.check_sender(&proof)?;
        Ok(Records {
            sealer: RecordSealer {
                cipher: keys.to_sender.clone(),
                counter: 0,
            },
            opener: RecordOpener {
                cipher: keys.to_receiver.clone(),
                counter: 0,
            },
        })
    })
    .await
    .ok_or(TransferError::HandshakeTimeout(limits.handshake))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    fn pair() -> (RecordSealer, RecordOpener) {
        test_pair()
    }

    fn sealed(sealer: &mut RecordSealer, kind: RecordType, payload: &[u8]) -> Vec<u8> {
        let mut record = RecordSealer::buffer(payload.len());
        record.extend_from_slice(payload);
        sealer.seal(kind, &mut record);
        record
    }

    fn open(
        opener: &mut RecordOpener,
        wire: &[u8],
    ) -> Result<(RecordType, Vec<u8>), TransferError> {
        let mut cursor = Cursor::new(wire.to_vec());
        runtime::block_on(opener.next(&mut cursor, Duration::from_secs(5)))
    }

    #[test]
    fn records_open_in_order_and_the_payload_is_not_on_the_wire() {
        let (mut sealer, mut opener) = pair();
        let first = sealed(&mut sealer, RecordType::Data, b"the secret plan");
        let second = sealed(&mut sealer, RecordType::End, &[1u8; 40]);
        assert_eq!(first.len(), RECORD_HEADER_BYTES + 15 + RECORD_TAG_BYTES);
        assert!(!first.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            open(&mut opener, &first).unwrap(),
            (RecordType::Data, b"the secret plan".to_vec())
        );
        assert_eq!(
            open(&mut opener, &second).unwrap(),
            (RecordType::End, vec![1u8; 40])
        );
    }

    #[test]
    fn a_record_replayed_reordered_or_dropped_does_not_open() {
        let (mut sealer, mut opener) = pair();
        let first = sealed(&mut sealer, RecordType::Data, b"one");
        let second = sealed(&mut sealer, RecordType::Data, b"two");
        // The second first (the first dropped, or the two swapped).
        assert!(matches!(
            open(&mut opener, &second),
            Err(TransferError::Forged)
        ));
        let (_, mut opener) = pair();
        open(&mut opener, &first).unwrap();
        // The first again (replayed).
        assert!(matches!(
            open(&mut opener, &first),
            Err(TransferError::Forged)
        ));
    }

    #[test]
    fn every_changed_bit_of_a_record_is_refused() {
        let (mut sealer, _) = pair();
        let record = sealed(&mut sealer, RecordType::Data, b"hello bob");
        for i in 0..record.len() {
            for bit in 0..8 {
                let mut changed = record.clone();
                changed[i] ^= 1 << bit;
                let (_, mut opener) = pair();
                let result = open(&mut opener, &changed);
                match i {
                    // The type: unknown, or another type, which the tag covers.
                    0 => assert!(
                        matches!(
                            result,
                            Err(TransferError::Malformed | TransferError::Forged)
                        ),
                        "type bit {bit}: {result:?}"
                    ),
                    // The length: out of bounds, or longer than what follows, or shorter.
                    1..RECORD_HEADER_BYTES => assert!(result.is_err(), "length byte {i}"),
                    _ => assert!(
                        matches!(result, Err(TransferError::Forged)),
                        "byte {i} bit {bit}: {result:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn lengths_out_of_bounds_are_refused_before_reading_the_body() {
        let (_, mut opener) = pair();
        let too_long = (MAX_RECORD_PLAINTEXT + RECORD_TAG_BYTES + 1) as u32;
        let mut wire = vec![RecordType::Data as u8];
        wire.extend_from_slice(&too_long.to_be_bytes());
        assert!(matches!(
            open(&mut opener, &wire),
            Err(TransferError::Malformed)
        ));
        let mut wire = vec![RecordType::Data as u8];
        wire.extend_from_slice(&15u32.to_be_bytes());
        wire.extend_from_slice(&[0u8; 15]);
        assert!(matches!(
            open(&mut opener, &wire),
            Err(TransferError::Malformed)
        ));
        // A stream that ends inside a record is a lost connection, not a record.
        assert!(matches!(
            open(&mut opener, &[RecordType::Data as u8, 0, 0]),
            Err(TransferError::Connection(_))
        ));
    }

    #[test]
    fn an_opening_reads_back_and_a_foreign_one_is_refused() {
        let opening = Opening::new(TransferId([3; 16]), KeyId([4; 8]), KeyId([5; 8]), 77);
        let bytes = opening.encode();
        assert_eq!(Opening::decode(&bytes).unwrap(), opening);
        let mut other = bytes;
        other[0] = b'P';
        assert_eq!(Opening::decode(&other), Err(OpeningError::NotATransfer));
        let mut newer = bytes;
        newer[MAGIC.len()] = 2;
        assert_eq!(
            Opening::decode(&newer),
            Err(OpeningError::UnknownVersion(2))
        );
        // Two openings never share a nonce.
        let again = Opening::new(TransferId([3; 16]), KeyId([4; 8]), KeyId([5; 8]), 77);
        assert_ne!(again.encode(), bytes);
    }

    #[test]
    fn each_connection_has_its_own_keys_and_each_direction_its_own() {
        let key = TransferKey::from_bytes([9; 32]);
        let opening = Opening::new(TransferId([1; 16]), KeyId([2; 8]), KeyId([3; 8]), 0).encode();
        let reply = [1u8; REPLY_BYTES];
        let keys = ConnectionKeys::derive(&key, &opening, &reply);
        assert_ne!(keys.receiver_proof(), keys.sender_proof());
        assert!(keys.check_receiver(&keys.receiver_proof()).is_ok());
        assert!(matches!(
            keys.check_receiver(&keys.sender_proof()),
            Err(TransferError::WrongKey)
        ));
        let mut other_reply = reply;
        other_reply[5] ^= 1;
        let other = ConnectionKeys::derive(&key, &opening, &other_reply);
        assert!(other.check_receiver(&keys.receiver_proof()).is_err());
        let other_key = ConnectionKeys::derive(&TransferKey::from_bytes([8; 32]), &opening, &reply);
        assert!(other_key.check_sender(&keys.sender_proof()).is_err());
    }
}
