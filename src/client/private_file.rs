//! The client's own files that decide whom it trusts or hold its secrets (the known-servers
//! file, the known-peers file, the identity keys): the checks that no one else could have
//! written them (or, for a secret, read them), and the three ways they are written — appended
//! to, created once, replaced whole — each through a handle opened with `O_NOFOLLOW` whose type,
//! owner and mode are checked, so what is checked is what is read or written. One place for
//! these checks, used by every such file. It knows nothing of what the files hold.
//!
//! Refused ([`Exposure`]): a symbolic link (or anything but a regular file) at the path, a file
//! or folder that belongs to another user (not root), a file the group or others may write, a
//! folder the group or others may write to without the sticky bit, and — for a secret — a file
//! the group or others may read. The client makes every one of them itself (folders 0700, files
//! 0600), so none of these happens without someone's doing.

use std::fmt;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The bits that let the group or everyone write.
const GROUP_WRITE: u32 = 0o020;
const OTHERS_WRITE: u32 = 0o002;
/// The bits that let the group or everyone read, write or run: a secret's must all be clear.
const GROUP_OR_OTHERS: u32 = 0o077;
/// In a folder with it, only a file's owner (or the folder's, or root) may rename or remove it.
const STICKY: u32 = 0o1000;

/// Every such file's mode: only its owner reads or writes it.
pub const FILE_MODE: u32 = 0o600;
/// Every folder the client makes for them.
pub const FOLDER_MODE: u32 = 0o700;

/// Who may read the file besides its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Anyone may read it (what it holds is public: fingerprints, public keys); only writing is
    /// checked.
    Anyone,
    /// A secret: the group and others may not even read it (as OpenSSH's private keys).
    OwnerOnly,
}

/// One way someone else could have written the file (and so chosen whom the client trusts), or
/// read a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// A symbolic link (or anything but a regular file) at the file's path: following it would
    /// read, and write to, a file someone else chose.
    NotAFile { path: PathBuf, link: bool },
    /// The file or its folder belongs to another user, not root.
    Owner { path: PathBuf, owner: u32 },
    /// The group or others may write to the file.
    Writable { path: PathBuf, mode: u32 },
    /// The group or others may write to the folder, which has no sticky bit: they may replace
    /// the file.
    FolderWritable { folder: PathBuf, mode: u32 },
    /// A secret the group or others may read (or write).
    Readable { path: PathBuf, mode: u32 },
}

impl fmt::Display for Exposure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exposure::NotAFile { path, link: true } => write!(
                f,
                "{} is a symbolic link: remove it (the client makes the file itself)",
                path.display()
            ),
            Exposure::NotAFile { path, link: false } => {
                write!(f, "{} is not a regular file", path.display())
            }
            Exposure::Owner { path, owner } => write!(
                f,
                "{} belongs to uid {owner}, not to this user (uid {}) or root: its owner can \
                 choose whom this client trusts",
                path.display(),
                effective_uid()
            ),
            Exposure::Writable { path, mode } => write!(
                f,
                "{} has mode {mode:04o}: others can choose whom this client trusts (run `chmod \
                 go-w {}`)",
                path.display(),
                path.display()
            ),
            Exposure::FolderWritable { folder, mode } => write!(
                f,
                "folder {} has mode {mode:04o}: others can replace the files in it (run `chmod \
                 go-w {}`)",
                folder.display(),
                folder.display()
            ),
            Exposure::Readable { path, mode } => write!(
                f,
                "{} has mode {mode:04o}: others can read this secret; it is not used (run \
                 `chmod 600 {}` if no one else has read it, else remove it to make a new one)",
                path.display(),
                path.display()
            ),
        }
    }
}

/// Why a file could not be used: its exposure, or the system's error.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{0}")]
    Exposed(Exposure),
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn ours(uid: u32) -> bool {
    uid == effective_uid() || uid == 0
}

/// The file's folder (`.` for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(folder) => folder,
        None => Path::new("."),
    }
}

/// What in the file's place, or its folder's, someone else could have written (or read, for a
/// secret); `None` if the file is safe to use (or does not exist yet, in a folder that is safe
/// or does not exist).
///
/// # Errors
/// The file or its folder cannot be examined.
pub fn exposure(path: &Path, readers: Readers) -> io::Result<Option<Exposure>> {
    if let Some(exposure) = folder_exposure(path)? {
        return Ok(Some(exposure));
    }
    Ok(match fs::symlink_metadata(path) {
        Ok(meta) => file_exposure(path, &meta, meta.file_type().is_symlink(), readers),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    })
}

/// What about the file's folder lets someone else replace the file: another owner (not root),
/// or write access for the group or others without the sticky bit (as the users file's check,
/// `user_store::folder`). `None` too when the folder does not exist.
fn folder_exposure(path: &Path) -> io::Result<Option<Exposure>> {
    let folder = folder_of(path);
    let meta = match fs::metadata(folder) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mode = meta.mode() & 0o7777;
    Ok(if !ours(meta.uid()) {
        Some(Exposure::Owner {
            path: folder.into(),
            owner: meta.uid(),
        })
    } else if mode & (GROUP_WRITE | OTHERS_WRITE) != 0 && mode & STICKY == 0 {
        Some(Exposure::FolderWritable {
            folder: folder.into(),
            mode,
        })
    } else {
        None
    })
}

/// What about the file itself, as `meta` describes it (`link`: it is a symbolic link), lets
/// someone else have written it (or read it, for a secret).
fn file_exposure(
    path: &Path,
    meta: &fs::Metadata,
    link: bool,
    readers: Readers,
) -> Option<Exposure> {
    let mode = meta.mode() & 0o7777;
    if link || !meta.file_type().is_file() {
        Some(Exposure::NotAFile {
            path: path.into(),
            link,
        })
    } else if !ours(meta.uid()) {
        Some(Exposure::Owner {
            path: path.into(),
            owner: meta.uid(),
        })
    } else if readers == Readers::OwnerOnly && mode & GROUP_OR_OTHERS != 0 {
        Some(Exposure::Readable {
            path: path.into(),
            mode,
        })
    } else if mode & (GROUP_WRITE | OTHERS_WRITE) != 0 {
        Some(Exposure::Writable {
            path: path.into(),
            mode,
        })
    } else {
        None
    }
}

/// Opens `path` with `options` (plus `O_NOFOLLOW`, `O_NONBLOCK`, `O_CLOEXEC`) and checks the
/// handle opened; `None` when there is no file and `options` does not create one.
fn open_checked(
    path: &Path,
    options: &mut OpenOptions,
    readers: Readers,
) -> Result<Option<fs::File>, PrivateFileError> {
    let file = match options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(PrivateFileError::Exposed(Exposure::NotAFile {
                path: path.into(),
                link: true,
            }))
        }
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if let Some(exposure) = file_exposure(path, &meta, false, readers) {
        return Err(PrivateFileError::Exposed(exposure));
    }
    Ok(Some(file))
}

/// The file's text, read from one handle opened without following a link at its path (and
/// without blocking on a FIFO), after checking the folder and then that handle's type, owner
/// and mode — so what is read is what was checked. `None` when there is no file.
///
/// # Errors
/// The file or its folder is exposed, or cannot be read.
pub fn read_checked(path: &Path, readers: Readers) -> Result<Option<String>, PrivateFileError> {
    if let Some(exposure) = folder_exposure(path)? {
        return Err(PrivateFileError::Exposed(exposure));
    }
    let Some(mut file) = open_checked(path, OpenOptions::new().read(true), readers)? else {
        return Ok(None);
    };
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(Some(text))
}

/// Makes the file's folder (and those above it), mode 0700, if missing.
fn make_folder(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(FOLDER_MODE)
        .create(folder_of(path))
}

/// Appends `line` (which ends with a newline) to the file, creating it (mode 0600) and its
/// folder (0700) if needed, never through a symbolic link, and flushes it to disk. A file whose
/// last line has no newline (edited by hand) gets one first.
///
/// # Errors
/// The file or its folder is exposed, or cannot be made or written.
pub fn append_checked(path: &Path, readers: Readers, line: &str) -> Result<(), PrivateFileError> {
    make_folder(path)?;
    // Checked again: a link or a file of someone else's may have appeared since it was read,
    // and O_NOFOLLOW keeps one planted meanwhile from being followed.
    if let Some(exposure) = exposure(path, readers)? {
        return Err(PrivateFileError::Exposed(exposure));
    }
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true).mode(FILE_MODE);
    let Some(mut file) = open_checked(path, &mut options, readers)? else {
        return Err(io::Error::from(io::ErrorKind::NotFound).into());
    };
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let mut line = line.to_string();
    if text.last().is_some_and(|&b| b != b'\n') {
        line.insert(0, '\n');
    }
    file.write_all(line.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Creates the file with `bytes` (mode 0600, in a folder made 0700 if missing), only if it does
/// not exist (`O_EXCL`): of two clients making it at once, one wins and the other gets
/// [`io::ErrorKind::AlreadyExists`], and reads the winner's.
///
/// # Errors
/// The folder is exposed, the file exists, or it cannot be made or written.
pub fn create_new(path: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    make_folder(path)?;
    if let Some(exposure) = folder_exposure(path)? {
        return Err(PrivateFileError::Exposed(exposure));
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // The mode asked for is masked by the umask: set it whole, whatever that is.
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    sync_folder(path)?;
    Ok(())
}

/// Replaces the file with `text`: written to a new file beside it (mode 0600, flushed to disk)
/// renamed over the old one, so a crash leaves the old file or the new one, never a mix.
///
/// # Errors
/// The folder is exposed, or the new file cannot be written or renamed.
pub fn replace(path: &Path, text: &str) -> Result<(), PrivateFileError> {
    make_folder(path)?;
    if let Some(exposure) = folder_exposure(path)? {
        return Err(PrivateFileError::Exposed(exposure));
    }
    let mut file = tempfile::NamedTempFile::new_in(folder_of(path))?;
    file.as_file()
        .set_permissions(Permissions::from_mode(FILE_MODE))?;
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    sync_folder(path)?;
    Ok(())
}

/// The folder's entry for the file (made or renamed) reaches the disk.
fn sync_folder(path: &Path) -> io::Result<()> {
    fs::File::open(folder_of(path)).and_then(|folder| folder.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    #[test]
    fn a_secret_others_may_read_is_refused_and_a_public_file_is_not() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("secret");
        create_new(&path, b"x").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(create_new(&path, b"y").is_err(), "made once only");
        for mode in [0o640, 0o604, 0o610] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
            match read_checked(&path, Readers::OwnerOnly) {
                Err(PrivateFileError::Exposed(Exposure::Readable { mode: m, .. })) => {
                    assert_eq!(m, mode)
                }
                other => panic!("{mode:o}: {other:?}"),
            }
            assert!(read_checked(&path, Readers::Anyone).is_ok());
        }
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_checked(&path, Readers::OwnerOnly).unwrap().as_deref(),
            Some("x")
        );
    }

    #[test]
    fn appending_and_replacing_never_follow_a_link_and_keep_the_file_private() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("sub").join("list");
        append_checked(&path, Readers::Anyone, "one\n").unwrap();
        append_checked(&path, Readers::Anyone, "two\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        assert_eq!(
            fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        replace(&path, "three\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "three\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let link = dir.path().join("sub").join("link");
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            append_checked(&link, Readers::Anyone, "x\n"),
            Err(PrivateFileError::Exposed(Exposure::NotAFile {
                link: true,
                ..
            }))
        ));
        assert!(matches!(
            read_checked(&link, Readers::OwnerOnly),
            Err(PrivateFileError::Exposed(Exposure::NotAFile {
                link: true,
                ..
            }))
        ));
        assert!(create_new(&link, b"x").is_err());
        assert!(!target.exists(), "nothing written through the link");
        assert_eq!(
            read_checked(&dir.path().join("none"), Readers::Anyone).unwrap(),
            None
        );
    }
}
