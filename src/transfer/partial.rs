//! The receiver's partial file, in the download folder itself (so the final rename never crosses
//! file systems): hidden, named after the safe name and the transfer id
//! (`.report.pdf.<id>.p2pchat-part`) so that the client finds it again after a restart with only
//! what it stored (the folder, the id, the offered name). Created exclusively (mode 0600, never
//! through a link planted at its name), written at explicit offsets, synced before it is renamed,
//! and renamed without ever replacing a file: `report.pdf`, else `report (1).pdf`, … — a file
//! created meanwhile under the chosen name stays as it is (renameat2 `RENAME_NOREPLACE`, or a
//! hard link and unlink where the file system lacks it).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::name::{numbered, safe_name};
use super::{DiskStep, TransferError, TransferId};

/// What ends a partial file's name.
pub const PARTIAL_SUFFIX: &str = ".p2pchat-part";

/// How many numbered names (`name (1)` … `name (N)`) the final rename tries before giving up.
pub const MAX_NUMBERED_NAMES: u32 = 999;

/// Bytes read at a time when hashing a partial file's prefix.
const HASH_CHUNK_BYTES: usize = 256 * 1024;

/// One transfer's partial file, open for writing.
#[derive(Debug)]
pub struct Partial {
    folder: PathBuf,
    name: String,
    file_name: String,
    file: File,
    len: u64,
}

/// The partial file's name for a transfer of the file safely named `name`.
pub fn partial_file_name(id: &TransferId, name: &str) -> String {
    format!(".{name}.{id}{PARTIAL_SUFFIX}")
}

impl Partial {
    /// Creates the partial file for transfer `id` of the file offered as `offered_name`, empty.
    ///
    /// # Errors
    /// [`TransferError::Disk`] with [`DiskStep::CreatePartial`] (already there:
    /// `AlreadyExists`; use [`Partial::open_existing`] to resume it).
    pub fn create(
        folder: &Path,
        id: &TransferId,
        offered_name: &str,
    ) -> Result<Self, TransferError> {
        let name = safe_name(offered_name);
        let file_name = partial_file_name(id, &name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(folder.join(&file_name))
            .map_err(|e| TransferError::disk(DiskStep::CreatePartial, e))?;
        lock(&file).map_err(|e| TransferError::disk(DiskStep::CreatePartial, e))?;
        Ok(Partial {
            folder: folder.to_path_buf(),
            name,
            file_name,
            file,
            len: 0,
        })
    }

    /// Opens transfer `id`'s partial file of the file offered as `offered_name`, to resume it
    /// where it ends. A link at its name, or anything but a regular file, is refused.
    ///
    /// # Errors
    /// [`TransferError::Disk`] with [`DiskStep::OpenPartial`] (`NotFound` when there is none).
    pub fn open_existing(
        folder: &Path,
        id: &TransferId,
        offered_name: &str,
    ) -> Result<Self, TransferError> {
        let name = safe_name(offered_name);
        let file_name = partial_file_name(id, &name);
        let open = |e| TransferError::disk(DiskStep::OpenPartial, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(folder.join(&file_name))
            .map_err(open)?;
        let metadata = file.metadata().map_err(open)?;
        if metadata.is_file() {
            lock(&file).map_err(open)?;
        }
        if !metadata.is_file() {
            return Err(open(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the partial file is not a regular file",
            )));
        }
        Ok(Partial {
            folder: folder.to_path_buf(),
            name,
            file_name,
            file,
            len: metadata.len(),
        })
    }

    /// The partial file to resume if there is one, else a new one.
    ///
    /// # Errors
    /// As [`Partial::open_existing`] and [`Partial::create`].
    pub fn open_or_create(
        folder: &Path,
        id: &TransferId,
        offered_name: &str,
    ) -> Result<Self, TransferError> {
        match Partial::open_existing(folder, id, offered_name) {
            Err(TransferError::Disk { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Partial::create(folder, id, offered_name)
            }
            other => other,
        }
    }

    /// Bytes already in the partial file: where a resume starts.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The safe name the finished file will have (or a numbered form of it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The download folder it is in.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// The partial file's path.
    pub fn path(&self) -> PathBuf {
        self.folder.join(&self.file_name)
    }

    /// The SHA-256 state over the bytes already there, to go on with what arrives.
    pub(crate) fn hash_prefix(&self) -> Result<Sha256, TransferError> {
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; HASH_CHUNK_BYTES];
        let mut at = 0u64;
        while at < self.len {
            let want = buffer.len().min((self.len - at) as usize);
            let n = read_at_most(&self.file, &mut buffer[..want], at)
                .map_err(|e| TransferError::disk(DiskStep::ReadPartial, e))?;
            if n == 0 {
                return Err(TransferError::disk(
                    DiskStep::ReadPartial,
                    io::Error::new(io::ErrorKind::UnexpectedEof, "the partial file shrank"),
                ));
            }
            hasher.update(&buffer[..n]);
            at += n as u64;
        }
        Ok(hasher)
    }

    /// Appends `bytes` at the end of what is there.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<(), TransferError> {
        self.file
            .write_all_at(bytes, self.len)
            .map_err(|e| TransferError::disk(DiskStep::WritePartial, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Flushes what was written to the disk (fdatasync): the prefix a resume trusts.
    pub(crate) fn sync(&self) -> Result<(), TransferError> {
        self.file
            .sync_data()
            .map_err(|e| TransferError::disk(DiskStep::SyncPartial, e))
    }

    /// Removes the partial file (what it holds is known bad, or the transfer was given up).
    ///
    /// # Errors
    /// [`TransferError::Disk`] with [`DiskStep::RemovePartial`]; a file already gone is fine.
    pub fn remove(self) -> Result<(), TransferError> {
        match std::fs::remove_file(self.path()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(TransferError::disk(DiskStep::RemovePartial, e))
            }
            _ => Ok(()),
        }
    }

    /// Syncs the partial file and gives it its final name: the safe name, else the first free
    /// numbered one; never over an existing file. Then syncs the folder, so the rename survives
    /// a crash. The final path.
    pub(crate) fn finish(self) -> Result<PathBuf, TransferError> {
        self.file
            .sync_all()
            .map_err(|e| TransferError::disk(DiskStep::SyncPartial, e))?;
        let from = self.path();
        let mut chosen = None;
        for n in 0..=MAX_NUMBERED_NAMES {
            let name = if n == 0 {
                self.name.clone()
            } else {
                numbered(&self.name, n)
            };
            let to = self.folder.join(&name);
            match rename_no_replace(&from, &to) {
                Ok(()) => {
                    chosen = Some(to);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(TransferError::disk(DiskStep::Rename, e)),
            }
        }
        let to = chosen.ok_or(TransferError::NoFreeName)?;
        File::open(&self.folder)
            .and_then(|folder| folder.sync_all())
            .map_err(|e| TransferError::disk(DiskStep::SyncPartial, e))?;
        Ok(to)
    }
}

/// Takes the partial file for this `Partial` alone (an exclusive `flock`, without waiting): two
/// connections of one transfer (a resume while an old connection lingers) would write the same
/// bytes twice. Released when the file is closed. `WouldBlock` when another holds it.
fn lock(file: &File) -> io::Result<()> {
    use rustix::fs::{flock, FlockOperation};
    flock(file, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        if e == rustix::io::Errno::WOULDBLOCK {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "the partial file is in use by another connection of this transfer",
            )
        } else {
            e.into()
        }
    })
}

/// Reads into `buffer` at `offset` until it is full or the file ends; how many bytes.
pub(crate) fn read_at_most(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then): renameat2 with
/// `RENAME_NOREPLACE`, or, on a file system without it, a hard link (which fails on an existing
/// name too) and the unlink of `from`.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Bytes free for this user in `folder`'s file system (statvfs: available blocks × fragment size).
///
/// # Errors
/// [`TransferError::Disk`] with [`DiskStep::FreeSpace`].
pub fn free_space(folder: &Path) -> Result<u64, TransferError> {
    let stat = rustix::fs::statvfs(folder)
        .map_err(|e| TransferError::disk(DiskStep::FreeSpace, e.into()))?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Checks that `folder` has room for `needed` more bytes: before accepting an offer (with the
/// whole size less what a partial file already holds), and again before each connection.
///
/// # Errors
/// [`TransferError::NoSpace`], or [`TransferError::Disk`] when the space cannot be read.
pub fn check_free_space(folder: &Path, needed: u64) -> Result<(), TransferError> {
    let available = free_space(folder)?;
    if available < needed {
        return Err(TransferError::NoSpace {
            folder: folder.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ID: TransferId = TransferId([0xab; 16]);

    #[test]
    fn a_partial_file_is_hidden_private_and_resumes_where_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut partial = Partial::create(dir.path(), &ID, "../report.pdf").unwrap();
        assert_eq!(partial.name(), "report.pdf");
        let file_name = partial
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(file_name, format!(".report.pdf.{ID}{PARTIAL_SUFFIX}"));
        let mode = std::fs::metadata(partial.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        partial.append(b"hello ").unwrap();
        partial.sync().unwrap();
        drop(partial);
        let mut again = Partial::open_existing(dir.path(), &ID, "../report.pdf").unwrap();
        assert_eq!(again.len(), 6);
        again.append(b"world").unwrap();
        let hasher = again.hash_prefix().unwrap();
        assert_eq!(
            hasher.finalize().as_slice(),
            Sha256::digest(b"hello world").as_slice()
        );
        drop(again);
        // A second create for the same transfer does not truncate it.
        assert!(Partial::create(dir.path(), &ID, "report.pdf").is_err());
        let again = Partial::open_or_create(dir.path(), &ID, "report.pdf").unwrap();
        assert_eq!(again.len(), 11);
        let path = again.path();
        again.remove().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_partial_file_is_written_by_one_connection_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Partial::create(dir.path(), &ID, "report.pdf").unwrap();
        match Partial::open_existing(dir.path(), &ID, "report.pdf") {
            Err(TransferError::Disk {
                step: DiskStep::OpenPartial,
                source,
            }) => assert_eq!(source.kind(), io::ErrorKind::WouldBlock),
            other => panic!("{other:?}"),
        }
        drop(first);
        let again = Partial::open_existing(dir.path(), &ID, "report.pdf").unwrap();
        assert!(Partial::open_or_create(dir.path(), &ID, "report.pdf").is_err());
        drop(again);
        assert!(Partial::open_or_create(dir.path(), &ID, "report.pdf").is_ok());
    }

    #[test]
    fn a_link_planted_at_the_partial_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = dir.path().join(partial_file_name(&ID, "report.pdf"));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(Partial::create(dir.path(), &ID, "report.pdf").is_err());
        assert!(Partial::open_existing(dir.path(), &ID, "report.pdf").is_err());
        assert!(Partial::open_or_create(dir.path(), &ID, "report.pdf").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn the_final_rename_takes_the_first_free_name_and_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for taken in ["report.pdf", "report (1).pdf"] {
            std::fs::write(dir.path().join(taken), taken).unwrap();
        }
        let mut partial = Partial::create(dir.path(), &ID, "report.pdf").unwrap();
        partial.append(b"new").unwrap();
        let path = partial.finish().unwrap();
        assert_eq!(path, dir.path().join("report (2).pdf"));
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        for taken in ["report.pdf", "report (1).pdf"] {
            assert_eq!(
                std::fs::read(dir.path().join(taken)).unwrap(),
                taken.as_bytes()
            );
        }
        // The rename itself refuses an existing name, whoever made it meanwhile.
        let (from, to) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&from, b"a").unwrap();
        std::fs::write(&to, b"b").unwrap();
        let error = rename_no_replace(&from, &to).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&to).unwrap(), b"b");
    }

    #[test]
    fn more_than_the_free_space_is_refused_with_the_figures() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_free_space(dir.path(), 1).is_ok());
        match check_free_space(dir.path(), u64::MAX) {
            Err(TransferError::NoSpace {
                needed, available, ..
            }) => assert!(needed == u64::MAX && available < needed),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            free_space(&dir.path().join("missing")),
            Err(TransferError::Disk {
                step: DiskStep::FreeSpace,
                ..
            })
        ));
    }
}
