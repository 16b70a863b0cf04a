//! The sender's side of a data connection: after [`super::read_opening`], the handshake, then the
//! file from the receiver's offset in sealed records, then its size and SHA-256, then the
//! receiver's word that it saved the file.
//!
//! Disk and network overlap: a blocking thread reads the file, hashes it and hands chunks over a
//! channel of [`WINDOW`] buffers; the connection's task seals and writes them. Memory is bounded
//! by the window whatever the file's size. The file is opened and checked against what was offered
//! (size, modification time) only once the receiver proved it holds the transfer's key, and
//! checked again after its last byte: a file that changed is refused, never half-sent as if whole.

use std::fs::File;
use std::path::PathBuf;
use std::time::SystemTime;

use futures::channel::mpsc;
use futures::{AsyncRead, AsyncWrite, SinkExt, StreamExt};
use sha2::{Digest, Sha256};

use super::channel::{self, AbortReason, Opening, RecordSealer, RecordType, MAX_RECORD_PLAINTEXT};
use super::partial::read_at_most;
use super::{DiskStep, Limits, Progress, TransferError, TransferKey, SHA256_BYTES};
use crate::runtime;

/// Chunks read ahead of the network: enough to keep the disk and the connection both busy, few
/// enough that a transfer holds well under a megabyte.
pub const WINDOW: usize = 4;

/// While hashing a resumed file's prefix, a keep-alive record every this many bytes, so the
/// receiver's stall timer measures progress, not the size of the prefix.
pub const KEEPALIVE_EVERY_BYTES: u64 = 64 * 1024 * 1024;

/// The file offered, as the offer described it: the sender serves it only while it is still
/// that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    /// Its size when offered.
    pub size: u64,
    /// Its modification time when offered.
    pub modified: SystemTime,
}

impl Source {
    /// The source as the file is now: what an offer records.
    ///
    /// # Errors
    /// [`TransferError::Disk`] with [`DiskStep::OpenSource`].
    pub fn of(path: PathBuf) -> Result<Source, TransferError> {
        let metadata =
            std::fs::metadata(&path).map_err(|e| TransferError::disk(DiskStep::OpenSource, e))?;
        if !metadata.is_file() {
            return Err(not_a_file());
        }
        let modified = metadata
            .modified()
            .map_err(|e| TransferError::disk(DiskStep::OpenSource, e))?;
        Ok(Source {
            path,
            size: metadata.len(),
            modified,
        })
    }
}

/// A file served whole: the receiver checked and saved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Bytes of the file sent on this connection (from the receiver's offset).
    pub sent: u64,
    /// The whole file's size.
    pub size: u64,
    /// The whole file's SHA-256, which the receiver confirmed.
    pub sha256: [u8; SHA256_BYTES],
}

/// What the reading thread hands to the connection's task.
enum Chunk {
    /// The next bytes, in a record buffer ([`RecordSealer::buffer`]).
    Data(Vec<u8>),
    /// Still hashing the prefix.
    KeepAlive,
    /// The file was read whole and is unchanged: its SHA-256.
    End([u8; SHA256_BYTES]),
    /// Reading failed, or the file changed.
    Failed(TransferError),
}

/// Serves `source` on a connection whose [`Opening`] the caller read and looked up, with the
/// transfer's `key`: the handshake (the receiver proves itself first), then the file from
/// `opening.offset`, its size and SHA-256, and the receiver's confirmation. `progress` is called
/// after every record. To cancel, drop the future: the receiver sees the connection lost and
/// keeps its partial file.
///
/// # Errors
/// [`TransferError::WrongKey`] for a peer without the key (nothing read from the file);
/// [`TransferError::FileChanged`] (the receiver is told); [`TransferError::OffsetBeyondEnd`];
/// [`TransferError::Aborted`] when the receiver refused the file; connection, stall, record and
/// disk errors.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    opening: &Opening,
    key: &TransferKey,
    source: &Source,
    limits: &Limits,
    progress: impl FnMut(Progress),
) -> Result<Served, TransferError> {
    let records = channel::accept(&mut io, opening, key, limits).await?;
    serve_proven(io, records, opening, source, limits, progress).await
}

/// [`serve`] after its handshake ([`channel::accept`]) passed: a caller that must decide
/// something once the receiver proved it holds the key (the client: whether this connection
/// replaces a run under way) does the handshake itself, then calls this.
///
/// # Errors
/// As [`serve`], but for the handshake's.
pub(crate) async fn serve_proven<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    mut records: channel::Records,
    opening: &Opening,
    source: &Source,
    limits: &Limits,
    mut progress: impl FnMut(Progress),
) -> Result<Served, TransferError> {
    let result = stream_file(
        &mut io,
        &mut records.sealer,
        opening.offset,
        source,
        limits,
        &mut progress,
    )
    .await;
    let sha256 = match result {
        Ok(sha256) => sha256,
        Err(error) => {
            if let Some(reason) = AbortReason::for_error(&error) {
                // Best effort: the receiver learns why rather than seeing a closed connection.
                let _ = records
                    .sealer
                    .send(
                        &mut io,
                        RecordType::Abort,
                        &[reason.to_byte()],
                        limits.stall,
                    )
                    .await;
            }
            return Err(error);
        }
    };
    let (kind, payload) = records.opener.next(&mut io, limits.stall).await?;
    match kind {
        RecordType::Done if payload.as_slice() == sha256.as_slice() => Ok(Served {
            sent: source.size - opening.offset,
            size: source.size,
            sha256,
        }),
        RecordType::Abort if payload.len() == 1 => {
            Err(TransferError::Aborted(AbortReason::from_byte(payload[0])))
        }
        _ => Err(TransferError::Malformed),
    }
}

/// Sends the file from `offset` and its end record; the whole file's SHA-256.
async fn stream_file<S: AsyncWrite + Unpin>(
    io: &mut S,
    sealer: &mut RecordSealer,
    offset: u64,
    source: &Source,
    limits: &Limits,
    progress: &mut impl FnMut(Progress),
) -> Result<[u8; SHA256_BYTES], TransferError> {
    let file = {
        let source = source.clone();
        runtime::spawn_blocking(move || open_unchanged(&source)).await?
    };
    if offset > source.size {
        return Err(TransferError::OffsetBeyondEnd {
            offset,
            size: source.size,
        });
    }
    let (chunks, mut received) = mpsc::channel(WINDOW);
    let reader = {
        let source = source.clone();
        let record_bytes = limits.record_bytes.clamp(1, MAX_RECORD_PLAINTEXT);
        runtime::spawn_blocking(move || read_file(file, &source, offset, record_bytes, chunks))
    };
    let total = source.size;
    let writer = async move {
        let mut done = offset;
        while let Some(chunk) = received.next().await {
            match chunk {
                Chunk::Data(mut record) => {
                    let n = (record.len() - channel::RECORD_HEADER_BYTES) as u64;
                    sealer.seal(RecordType::Data, &mut record);
                    channel::write_within(io, &record, limits.stall).await?;
                    done += n;
                    progress(Progress { done, total });
                }
                Chunk::KeepAlive => {
                    sealer
                        .send(io, RecordType::KeepAlive, &[], limits.stall)
                        .await?;
                }
                Chunk::End(sha256) => {
                    let mut payload = Vec::with_capacity(8 + SHA256_BYTES);
                    payload.extend_from_slice(&total.to_be_bytes());
                    payload.extend_from_slice(&sha256);
                    sealer
                        .send(io, RecordType::End, &payload, limits.stall)
                        .await?;
                    return Ok(sha256);
                }
                Chunk::Failed(error) => return Err(error),
            }
        }
        // The reader always ends with `End` or `Failed`; a channel closed without either is a
        // reader that panicked.
        Err(TransferError::disk(
            DiskStep::ReadSource,
            std::io::Error::other("the file's reader stopped"),
        ))
    };
    // Both at once; when the writer ends first (an error), its end of the channel is dropped and
    // the reader stops at its next chunk.
    let ((), result) = futures::join!(reader, writer);
    result
}

/// The error for a path that is not a regular file (a folder, a FIFO, a device): only files
/// have a size to offer and an end to hash.
fn not_a_file() -> TransferError {
    TransferError::disk(
        DiskStep::OpenSource,
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
    )
}

/// Opens the file and checks it is still the one offered. Opened without waiting
/// (`O_NONBLOCK`, which changes nothing for a regular file), so that a FIFO put at its path since
/// the offer cannot hold the thread until someone writes to it.
fn open_unchanged(source: &Source) -> Result<File, TransferError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&source.path)
        .map_err(|e| TransferError::disk(DiskStep::OpenSource, e))?;
    let metadata = file
        .metadata()
        .map_err(|e| TransferError::disk(DiskStep::OpenSource, e))?;
    if !metadata.is_file() {
        return Err(TransferError::FileChanged);
    }
    check_unchanged(&file, source)?;
    Ok(file)
}

fn check_unchanged(file: &File, source: &Source) -> Result<(), TransferError> {
    let metadata = file
        .metadata()
        .map_err(|e| TransferError::disk(DiskStep::ReadSource, e))?;
    let modified = metadata
        .modified()
        .map_err(|e| TransferError::disk(DiskStep::ReadSource, e))?;
    if metadata.len() != source.size || modified != source.modified {
        return Err(TransferError::FileChanged);
    }
    Ok(())
}

/// The reading thread: the prefix hashed (with keep-alives), then each chunk from `offset` read,
/// hashed and handed over, then the file checked unchanged and its SHA-256 handed over. Stops
/// quietly when the connection's task is gone.
fn read_file(
    file: File,
    source: &Source,
    offset: u64,
    record_bytes: usize,
    mut chunks: mpsc::Sender<Chunk>,
) {
    let mut send = |chunk| futures::executor::block_on(chunks.send(chunk)).is_ok();
    let failed = |step, e| Chunk::Failed(TransferError::disk(step, e));
    let mut hasher = Sha256::new();
    let mut at = 0u64;
    let mut since_keepalive = 0u64;
    let mut buffer = vec![0u8; MAX_RECORD_PLAINTEXT];
    while at < offset {
        let want = buffer.len().min((offset - at) as usize);
        match read_at_most(&file, &mut buffer[..want], at) {
            Ok(0) => {
                send(Chunk::Failed(TransferError::FileChanged));
                return;
            }
            Ok(n) => {
                hasher.update(&buffer[..n]);
                at += n as u64;
                since_keepalive += n as u64;
            }
            Err(e) => {
                send(failed(DiskStep::ReadSource, e));
                return;
            }
        }
        if since_keepalive >= KEEPALIVE_EVERY_BYTES {
            since_keepalive = 0;
            if !send(Chunk::KeepAlive) {
                return;
            }
        }
    }
    while at < source.size {
        let want = record_bytes.min((source.size - at) as usize);
        let mut record = RecordSealer::buffer(want);
        let start = record.len();
        record.resize(start + want, 0);
        match read_at_most(&file, &mut record[start..], at) {
            // Shorter than offered: the file changed under us.
            Ok(n) if n < want => {
                send(Chunk::Failed(TransferError::FileChanged));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                send(failed(DiskStep::ReadSource, e));
                return;
            }
        }
        hasher.update(&record[start..]);
        at += want as u64;
        if !send(Chunk::Data(record)) {
            return;
        }
    }
    // Longer than offered, or touched since: not the file that was offered.
    let mut probe = [0u8; 1];
    let grew = matches!(read_at_most(&file, &mut probe, at), Ok(1));
    match check_unchanged(&file, source) {
        Ok(()) if !grew => send(Chunk::End(hasher.finalize().into())),
        Ok(()) => send(Chunk::Failed(TransferError::FileChanged)),
        Err(error) => send(Chunk::Failed(error)),
    };
}
