//! The receiver's side of a data connection: it connects to the sender and pulls the file into a
//! [`Partial`], from where the partial file ends. The prefix already there is hashed first; each
//! record is opened before a byte of it is written (one that does not open ends the connection,
//! nothing of it kept); the file is renamed to its final name only when the sender's size and
//! SHA-256 agree with what arrived, and synced before.
//!
//! Network and disk overlap: the connection's task opens records and hands their plaintext over
//! a channel of [`WINDOW`] buffers to a blocking thread that writes and hashes. Whatever ends the
//! connection, that thread syncs what it wrote: the partial file is a good prefix to resume from,
//! unless what arrived is known bad (a wrong hash or size: [`TransferError::keeps_partial`]),
//! and then it is removed.

use std::path::PathBuf;

use futures::channel::mpsc;
use futures::{AsyncRead, AsyncWrite, SinkExt, StreamExt};
use sha2::{Digest, Sha256};

use super::channel::{self, AbortReason, RecordOpener, RecordSealer, RecordType};
use super::partial::check_free_space;
use super::send::KEEPALIVE_EVERY_BYTES;
use super::{Limits, Partial, Progress, TransferError, TransferId, TransferKey, SHA256_BYTES};
use crate::runtime;
use crate::sealed::KeyId;

/// Received chunks waiting for the disk: a bounded window, so a slow disk slows the connection
/// (TCP's flow control) instead of growing memory.
pub const WINDOW: usize = 4;

/// What the receiver asks for: the transfer as offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub transfer_id: TransferId,
    /// This session's key id.
    pub receiver_key: KeyId,
    /// The sender's session key id, as the peer list gives it now.
    pub sender_key: KeyId,
    /// The size the offer announced: the sender must send exactly this many bytes.
    pub size: u64,
}

/// A file received whole and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Where it is now (its safe name, or a numbered form of it).
    pub path: PathBuf,
    /// Bytes received on this connection (the rest was in the partial file already).
    pub received: u64,
    pub size: u64,
    /// The whole file's SHA-256, equal to the sender's.
    pub sha256: [u8; SHA256_BYTES],
}

/// The disk thread's result: the partial file back, with the hash of all it holds.
type Written = (Partial, Sha256, Option<TransferError>);

/// Fetches the file of `request` over `io` (a connection to the sender's transfer port) into
/// `partial`, resuming where it ends, with the transfer's `key`. `progress` is called after every
/// record. To cancel, drop the future: what was written stays in the partial file, unsynced
/// (the final hash check catches a torn end).
///
/// # Errors
/// [`TransferError::WrongKey`] for a sender without the key (nothing written);
/// [`TransferError::Forged`], [`TransferError::Malformed`]; [`TransferError::TooLong`],
/// [`TransferError::SizeMismatch`], [`TransferError::HashMismatch`] (partial removed);
/// [`TransferError::Stalled`], [`TransferError::Connection`], [`TransferError::DiskFull`],
/// [`TransferError::NoSpace`] (partial kept); [`TransferError::Aborted`] when the sender gave up.
pub async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    request: &Request,
    key: &TransferKey,
    partial: Partial,
    limits: &Limits,
    mut progress: impl FnMut(Progress),
) -> Result<Saved, TransferError> {
    let offset = partial.len();
    if offset > request.size {
        let error = TransferError::OffsetBeyondEnd {
            offset,
            size: request.size,
        };
        return Err(discard(partial, error).await);
    }
    let (partial, hasher) = {
        let size = request.size;
        let (partial, result) = runtime::spawn_blocking(move || {
            let result = partial.hash_prefix().and_then(|hasher| {
                check_free_space(partial.folder(), size - partial.len()).map(|()| hasher)
            });
            (partial, result)
        })
        .await;
        match result {
            Ok(hasher) => (partial, hasher),
            Err(error) => return Err(error),
        }
    };
    let mut records = channel::connect(
        &mut io,
        request.transfer_id,
        request.receiver_key,
        request.sender_key,
        offset,
        key,
        limits,
    )
    .await?;

    let (chunks, received) = mpsc::channel::<Vec<u8>>(WINDOW);
    let writer = runtime::spawn_blocking(move || write_chunks(partial, hasher, received));
    let reader = read_records(
        &mut io,
        &mut records.opener,
        chunks,
        offset,
        request.size,
        limits,
        &mut progress,
    );
    let ((partial, hasher, disk_error), outcome) = futures::join!(writer, reader);
    // A disk error is the first cause: the reader only saw its channel closed.
    let outcome = match disk_error {
        Some(error) => Err(error),
        None => outcome,
    };
    let result = match outcome {
        Ok(announced) => finish(partial, hasher, announced, offset).await,
        Err(error) => Err((error, Some(partial))),
    };
    match result {
        Ok(saved) => {
            // The sender learns the file arrived whole; if it does not hear it, the file is saved
            // all the same.
            let _ = records
                .sealer
                .send(&mut io, RecordType::Done, &saved.sha256, limits.stall)
                .await;
            Ok(saved)
        }
        Err((error, partial)) => {
            tell(&mut io, &mut records.sealer, &error, limits).await;
            match partial {
                Some(partial) if !error.keeps_partial() => Err(discard(partial, error).await),
                _ => Err(error),
            }
        }
    }
}

/// Tells the sender why the receiver gives up, when there is something to tell (best effort).
async fn tell<S: AsyncWrite + Unpin>(
    io: &mut S,
    sealer: &mut RecordSealer,
    error: &TransferError,
    limits: &Limits,
) {
    if let Some(reason) = AbortReason::for_error(error) {
        let _ = sealer
            .send(io, RecordType::Abort, &[reason.to_byte()], limits.stall)
            .await;
    }
}

/// Removes a partial file whose content is known bad; the error to return (the removal's own
/// failure is secondary: the cause is `error`).
async fn discard(partial: Partial, error: TransferError) -> TransferError {
    let removed = runtime::spawn_blocking(move || partial.remove()).await;
    if let Err(failed) = removed {
        log::warn!("after {error}: {failed}");
    }
    error
}

/// The end's check: the size and hash announced against what the partial file holds, then the
/// rename. The partial file comes back with an error when it is still there.
async fn finish(
    partial: Partial,
    hasher: Sha256,
    (size, sha256): (u64, [u8; SHA256_BYTES]),
    offset: u64,
) -> Result<Saved, (TransferError, Option<Partial>)> {
    if partial.len() != size {
        let sent = partial.len();
        return Err((
            TransferError::SizeMismatch {
                offered: size,
                sent,
            },
            Some(partial),
        ));
    }
    let ours: [u8; SHA256_BYTES] = hasher.finalize().into();
    if ours != sha256 {
        return Err((TransferError::HashMismatch, Some(partial)));
    }
    let path = runtime::spawn_blocking(move || partial.finish())
        .await
        .map_err(|error| (error, None))?;
    Ok(Saved {
        path,
        received: size - offset,
        size,
        sha256,
    })
}

/// The connection's task: records read and opened, data handed to the disk thread, until the end
/// record: its size (which must be the offer's) and SHA-256.
async fn read_records<S: AsyncRead + Unpin>(
    io: &mut S,
    opener: &mut RecordOpener,
    mut chunks: mpsc::Sender<Vec<u8>>,
    offset: u64,
    size: u64,
    limits: &Limits,
    progress: &mut impl FnMut(Progress),
) -> Result<(u64, [u8; SHA256_BYTES]), TransferError> {
    let mut done = offset;
    // Keep-alives only stand for the sender hashing the prefix: before the first byte of data, and
    // one per `KEEPALIVE_EVERY_BYTES` of it. More would let a peer hold the transfer open forever
    // without a byte, past the stall limit.
    let mut keepalives_left = offset / KEEPALIVE_EVERY_BYTES + 1;
    loop {
        let (kind, payload) = opener.next(io, limits.stall).await?;
        match kind {
            RecordType::Data => {
                let n = payload.len() as u64;
                // An empty record is progress of nothing: the same hole as endless keep-alives.
                if n == 0 {
                    return Err(TransferError::Malformed);
                }
                keepalives_left = 0;
                if done + n > size {
                    return Err(TransferError::TooLong { offered: size });
                }
                if chunks.send(payload).await.is_err() {
                    // The disk thread stopped: its error is the cause.
                    return Err(TransferError::Malformed);
                }
                done += n;
                progress(Progress { done, total: size });
            }
            RecordType::KeepAlive if payload.is_empty() && keepalives_left > 0 => {
                keepalives_left -= 1;
            }
            RecordType::End if payload.len() == 8 + SHA256_BYTES => {
                let sent = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                if sent != size || done != size {
                    return Err(TransferError::SizeMismatch {
                        offered: size,
                        sent: if sent != size { sent } else { done },
                    });
                }
                let sha256 = payload[8..].try_into().expect("32 bytes");
                return Ok((sent, sha256));
            }
            RecordType::Abort if payload.len() == 1 => {
                return Err(TransferError::Aborted(AbortReason::from_byte(payload[0])));
            }
            _ => return Err(TransferError::Malformed),
        }
    }
}

/// The disk thread: each chunk appended and hashed; at the end (the channel closed, whatever the
/// reason) what was written is synced, so the partial file is a prefix that survives a crash.
fn write_chunks(
    mut partial: Partial,
    mut hasher: Sha256,
    mut chunks: mpsc::Receiver<Vec<u8>>,
) -> Written {
    let mut error = None;
    while let Some(chunk) = futures::executor::block_on(chunks.next()) {
        if let Err(failed) = partial.append(&chunk) {
            error = Some(failed);
            break;
        }
        hasher.update(&chunk);
    }
    // Stop taking chunks at once: the connection's task learns of the failure at its next send.
    chunks.close();
    if let Err(failed) = partial.sync() {
        error.get_or_insert(failed);
    }
    (partial, hasher, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    /// What `read_records` makes of the records `sealed` in order, for a file of `size` resumed at
    /// `offset`.
    fn read(
        offset: u64,
        size: u64,
        records: &[(RecordType, Vec<u8>)],
    ) -> Result<u64, TransferError> {
        let (mut sealer, mut opener) = channel::test_pair();
        let mut wire = Vec::new();
        for (kind, payload) in records {
            let mut record = RecordSealer::buffer(payload.len());
            record.extend_from_slice(payload);
            sealer.seal(*kind, &mut record);
            wire.extend_from_slice(&record);
        }
        let mut io = Cursor::new(wire);
        let (chunks, received) = mpsc::channel(records.len() + 1);
        let limits = Limits::default();
        let result = runtime::block_on(read_records(
            &mut io,
            &mut opener,
            chunks,
            offset,
            size,
            &limits,
            &mut |_| {},
        ));
        drop(received);
        result.map(|(sent, _)| sent)
    }

    fn end(size: u64) -> (RecordType, Vec<u8>) {
        let mut payload = size.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0u8; SHA256_BYTES]);
        (RecordType::End, payload)
    }

    #[test]
    fn keep_alives_are_taken_only_while_the_sender_hashes_a_prefix() {
        let data = (RecordType::Data, vec![1u8; 10]);
        let keepalive = (RecordType::KeepAlive, Vec::new());
        // Resumed at 128 MiB: up to three keep-alives before the data.
        let offset = 2 * KEEPALIVE_EVERY_BYTES;
        let size = offset + 10;
        let three = vec![
            keepalive.clone(),
            keepalive.clone(),
            keepalive.clone(),
            data.clone(),
            end(size),
        ];
        assert_eq!(read(offset, size, &three).unwrap(), size);
        let four = [vec![keepalive.clone()], three].concat();
        assert!(matches!(
            read(offset, size, &four),
            Err(TransferError::Malformed)
        ));
        // None once data has begun, even on a fresh transfer.
        let after = vec![data.clone(), keepalive.clone(), end(10)];
        assert!(matches!(read(0, 10, &after), Err(TransferError::Malformed)));
    }

    #[test]
    fn an_empty_data_record_is_refused() {
        let empty = vec![(RecordType::Data, Vec::new()), end(0)];
        assert!(matches!(read(0, 0, &empty), Err(TransferError::Malformed)));
        // A receiver's record type from the sender, or an end of the wrong length, too.
        let done = vec![(RecordType::Done, vec![0u8; SHA256_BYTES])];
        assert!(matches!(read(0, 0, &done), Err(TransferError::Malformed)));
        let short_end = vec![(RecordType::End, vec![0u8; 8])];
        assert!(matches!(
            read(0, 0, &short_end),
            Err(TransferError::Malformed)
        ));
        assert_eq!(read(0, 0, &[end(0)]).unwrap(), 0);
    }
}
