//! The users file on disk: its JSON layout and checks, the atomic replacement that makes a change
//! durable, the stamp that tells a change made by hand from our own, the clean-up of temporary
//! files a crash left behind, and the warnings about symbolic links and loose permissions.
//!
//! Knows nothing of passwords beyond the stored PHC strings' shape, and nothing of locking: the
//! caller ([`super::UserStore`]) writes one change at a time, holding its writer's lock only, so
//! that logins never wait for a write. Every write replaces the file whole ([`write()`],
//! [`replace`]: a temporary file, fsync, rename, fsync of the folder), so a crash leaves either
//! the old file or the new one; its cost grows with the number of accounts, which is why a
//! registration is appended to the journal ([`super::journal`]) and the file is rewritten only
//! when the journal is folded in. A write goes through a [`Durability`] so that tests can see both fsyncs
//! and their order; the store uses [`Fsync`].
//!
//! The temporary file of a write is created exclusively (`O_CREAT|O_EXCL`, which never follows a
//! symbolic link) under a random name, mode 0600, and checked to be a regular file of ours before
//! anything is written to it: nobody who can create files in the folder can make a write follow
//! their link or fill their file. The clean-up removes only regular files of ours.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cost::{stored_cost, StoredHashError};
use crate::rules::{name_key, validate_username, UsernameError};

/// Version of the users file's layout.
const FILE_VERSION: u32 = 1;

/// One account as stored in the users file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    /// The name as registered (its case is kept; uniqueness ignores case).
    pub username: String,
    /// A PHC string: `$scrypt$ln=17,r=8,p=1$<salt>$<hash>`.
    pub password_hash: String,
}

/// The accounts, keyed by [`name_key`].
pub type Accounts = BTreeMap<String, StoredUser>;

/// The users file's JSON: `{"version": 1, "users": [...]}`, users in name order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersJson {
    version: u32,
    users: Vec<StoredUser>,
}

/// Why the users file's contents are refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidUsersFile {
    /// Not JSON of the expected shape.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("version {0} is not supported (expected {FILE_VERSION})")]
    Version(u32),
    /// `number` counts from 1.
    #[error("user #{number} ({username:?}): {why}")]
    Username {
        number: usize,
        username: String,
        why: UsernameError,
    },
    #[error("user {username:?}: password_hash {why}")]
    Hash {
        username: String,
        why: StoredHashError,
    },
    #[error("user {0:?} appears more than once")]
    Duplicate(String),
}

/// A failed write of the users file.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct WriteFailure {
    /// The new file's stamp if it had already replaced the old one (only the folder's fsync
    /// failed); `None` if the old file is still there.
    pub replaced: Option<FileStamp>,
    pub error: io::Error,
}

/// Random characters in a temporary file's name (`.users.json.tmp.` and these): 62^12 names, so
/// that nobody can plant the next one in advance.
const TEMPORARY_RANDOM_CHARS: usize = 12;

/// The mode of the users file and of its temporary file: it holds password hashes.
const PRIVATE_MODE: u32 = 0o600;

/// What identifies one version of the users file: the file (device and inode), its size and its
/// modification time to the nanosecond. A hand edit changes one of them: an editor that saves
/// in place changes the time and usually the size, one that saves a new file and renames it
/// changes the inode. (Not the change time: our own rename changes it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified_secs: i64,
    modified_nanos: i64,
}

impl FileStamp {
    pub fn of(meta: &Metadata) -> FileStamp {
        FileStamp {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified_secs: meta.mtime(),
            modified_nanos: meta.mtime_nsec(),
        }
    }
}

/// The users file's stamp now (following a symbolic link, as reading does).
pub fn stamp(path: &Path) -> io::Result<FileStamp> {
    fs::metadata(path).map(|meta| FileStamp::of(&meta))
}

/// The users file is not a regular file (a FIFO, a device, a folder): never opened, or never
/// read once opened.
#[derive(Debug, thiserror::Error)]
#[error("is not a regular file")]
pub struct NotRegularFile;

/// Reads the users file and the stamp of exactly the version read (one open file: a
/// replacement between the two cannot mix them up). Never blocks on what is planted there:
/// anything but a regular file is refused ([`NotRegularFile`], as an [`io::ErrorKind::InvalidInput`])
/// before it is opened (a FIFO's open would wait for a writer, a device's may do anything), and
/// the open itself is non-blocking in case the file is swapped between the look and the open.
pub fn read(path: &Path) -> io::Result<(Vec<u8>, FileStamp)> {
    let not_regular = || io::Error::new(io::ErrorKind::InvalidInput, NotRegularFile);
    if !fs::metadata(path)?.file_type().is_file() {
        return Err(not_regular());
    }
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(not_regular());
    }
    let stamp = FileStamp::of(&meta);
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok((bytes, stamp))
}

/// Why a freshly created temporary file is not used: it is not the private regular file of
/// ours that an exclusive creation makes. Never expected; checked because the write runs as
/// whoever runs the server, perhaps root.
#[derive(Debug, thiserror::Error)]
pub enum ForeignTemporaryFile {
    #[error("the temporary file {} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error("the temporary file {} belongs to uid {owner}, not to this server (uid {us})", path.display())]
    Owner { path: PathBuf, owner: u32, us: u32 },
    #[error("the temporary file {} has mode {mode:04o}, not {PRIVATE_MODE:04o}", path.display())]
    Mode { path: PathBuf, mode: u32 },
    #[error("the temporary file {} has {links} names, not one", path.display())]
    Links { path: PathBuf, links: u64 },
}

/// The effective user id this process runs as: the owner of every file it creates.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Checks that the temporary file at `path` is a private regular file of ours with one name.
fn check_temporary_file(file: &File, path: &Path) -> Result<(), ForeignTemporaryFile> {
    let meta = file
        .metadata()
        .map_err(|_| ForeignTemporaryFile::NotRegular {
            path: path.to_path_buf(),
        })?;
    let path = path.to_path_buf();
    let us = effective_uid();
    let mode = meta.mode() & 0o7777;
    if !meta.file_type().is_file() {
        Err(ForeignTemporaryFile::NotRegular { path })
    } else if meta.uid() != us {
        Err(ForeignTemporaryFile::Owner {
            path,
            owner: meta.uid(),
            us,
        })
    } else if mode != PRIVATE_MODE {
        Err(ForeignTemporaryFile::Mode { path, mode })
    } else if meta.nlink() != 1 {
        Err(ForeignTemporaryFile::Links {
            path,
            links: meta.nlink(),
        })
    } else {
        Ok(())
    }
}

/// How a write of the users file reaches the disk: the two fsyncs of [`write()`], and the
/// journal's ([`super::journal`]). A seam for tests, which check that each happens, in its place;
/// the store always uses [`Fsync`].
pub trait Durability {
    /// Makes the contents of `file` (the temporary file at `path`) durable. Called after the
    /// contents are written and before the rename: a crash after the rename must find them.
    fn sync_file(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Makes what was appended to `file` (the journal at `path`, [`super::journal`]) durable,
    /// with its new length; not its times (fdatasync). Called after each append and before it is
    /// acknowledged.
    fn sync_data(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }
    /// Makes the rename in `folder` durable. Called after the rename.
    fn sync_folder(&self, folder: &Path) -> io::Result<()>;
}

/// The real [`Durability`]: fsync of the file, then of the folder.
pub struct Fsync;

impl Durability for Fsync {
    fn sync_file(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_all()
    }

    fn sync_folder(&self, folder: &Path) -> io::Result<()> {
        File::open(folder)?.sync_all()
    }
}

/// Parses and checks the users file's contents.
pub fn parse(bytes: &[u8]) -> Result<Accounts, InvalidUsersFile> {
    let file: UsersJson = serde_json::from_slice(bytes)?;
    if file.version != FILE_VERSION {
        return Err(InvalidUsersFile::Version(file.version));
    }
    let mut users = BTreeMap::new();
    for (index, user) in file.users.into_iter().enumerate() {
        if let Err(why) = validate_username(&user.username) {
            return Err(InvalidUsersFile::Username {
                number: index + 1,
                username: user.username,
                why,
            });
        }
        if let Err(why) = stored_cost(&user.password_hash) {
            return Err(InvalidUsersFile::Hash {
                username: user.username,
                why,
            });
        }
        let key = name_key(&user.username);
        if users.contains_key(&key) {
            return Err(InvalidUsersFile::Duplicate(user.username));
        }
        users.insert(key, user);
    }
    Ok(users)
}

/// The bytes [`write()`] puts in the users file: pretty JSON, users in name order, a final newline.
pub fn render(users: &Accounts) -> io::Result<Vec<u8>> {
    /// [`UsersJson`] by reference: no copy of 100,000 accounts to write them.
    #[derive(Serialize)]
    struct Rendered<'a> {
        version: u32,
        users: Vec<&'a StoredUser>,
    }
    let file = Rendered {
        version: FILE_VERSION,
        users: users.values().collect(),
    };
    // About what a pretty entry takes, so that the buffer is not copied as it grows.
    const BYTES_PER_USER: usize = 160;
    let mut json = Vec::with_capacity(64 + users.len() * BYTES_PER_USER);
    serde_json::to_writer_pretty(&mut json, &file).map_err(io::Error::other)?;
    json.push(b'\n');
    Ok(json)
}

/// Replaces the users file atomically: a temporary file in the same folder, created exclusively
/// under a random name with mode 0600 and checked to be ours; its fsync; the rename over the old
/// file; the folder's fsync so that the rename itself is durable. Returns the new file's stamp.
/// A failure before the rename removes the temporary file and leaves the old file as it was.
pub fn write(
    path: &Path,
    users: &Accounts,
    durability: &dyn Durability,
) -> Result<FileStamp, WriteFailure> {
    let json = render(users).map_err(|error| WriteFailure {
        replaced: None,
        error,
    })?;
    replace(path, &json, durability)
}

/// [`write()`] with the bytes already rendered ([`render`]).
pub fn replace(
    path: &Path,
    json: &[u8],
    durability: &dyn Durability,
) -> Result<FileStamp, WriteFailure> {
    let failed = |error| WriteFailure {
        replaced: None,
        error,
    };
    let folder = folder_of(path);
    let name = path.file_name().ok_or_else(|| {
        failed(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    // Dropping `tmp` before it is persisted removes it.
    let mut tmp = tempfile::Builder::new()
        .prefix(&temporary_prefix(name))
        .rand_bytes(TEMPORARY_RANDOM_CHARS)
        .permissions(fs::Permissions::from_mode(PRIVATE_MODE))
        .tempfile_in(&folder)
        .map_err(failed)?;
    let stamp = (|| {
        // The mode asked for at creation is narrowed by the umask; make it exactly 0600.
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(PRIVATE_MODE))?;
        check_temporary_file(tmp.as_file(), tmp.path()).map_err(io::Error::other)?;
        tmp.write_all(json)?;
        durability.sync_file(tmp.as_file(), tmp.path())?;
        // Taken before the rename, which keeps the inode, size and modification time.
        tmp.as_file().metadata().map(|meta| FileStamp::of(&meta))
    })()
    .map_err(failed)?;
    tmp.persist(path).map_err(|e| failed(e.error))?;
    durability
        .sync_folder(&folder)
        .map_err(|error| WriteFailure {
            replaced: Some(stamp),
            error,
        })?;
    Ok(stamp)
}

/// The folder holding `path` (`.` for a bare file name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `path` cannot be used as the users file because it is a symbolic link to nowhere.
#[derive(Debug, thiserror::Error)]
#[error("is a symbolic link whose target cannot be resolved: {0}")]
pub struct UnresolvableLink(#[source] pub io::Error);

/// Resolves `path` if it is a symbolic link, with a warning; otherwise returns it unchanged.
pub fn resolve_symlink(path: &Path) -> Result<PathBuf, UnresolvableLink> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = fs::canonicalize(path).map_err(UnresolvableLink)?;
            log::warn!(
                "users file {} is a symbolic link to {}: the server reads and rewrites {} (the link \
                 stays); make sure nobody else can change the link or its folder",
                path.display(),
                target.display(),
                target.display()
            );
            Ok(target)
        }
        _ => Ok(path.to_path_buf()),
    }
}

/// Warns if the users file can be read or written by group or others.
pub fn warn_if_exposed(path: &Path, target: &Path) {
    let Ok(meta) = fs::metadata(target) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let access = match (mode & 0o044 != 0, mode & 0o022 != 0) {
            (true, true) => "read and write",
            (true, false) => "read",
            _ => "write",
        };
        log::warn!(
            "users file {} has mode {mode:04o}: group or others can {access} it and it holds \
             password hashes; run `chmod 600 {}` (the server makes it 0600 at its next change)",
            path.display(),
            target.display()
        );
    }
}

/// The start of a temporary file's name for a write of the users file `NAME`: `.NAME.tmp.`
/// (then [`TEMPORARY_RANDOM_CHARS`] random characters; versions before them used the process id).
fn temporary_prefix(name: &OsStr) -> String {
    format!(".{}.tmp.", name.to_string_lossy())
}

/// Removes the temporary files that earlier processes left beside the users file: a write
/// interrupted by a crash (SIGKILL, power loss) leaves one. Only regular files of ours, found
/// without following links: anything else with the prefix (a symbolic link or a file someone
/// else planted) is left alone, with a warning. Call it before any write of this process.
/// Failures are logged: they stop nothing.
pub fn remove_leftover_temporary_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = temporary_prefix(name);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let us = effective_uid();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let is_candidate = file_name
            .to_string_lossy()
            .strip_prefix(&prefix)
            .is_some_and(|rest| !rest.is_empty());
        if !is_candidate {
            continue;
        }
        let leftover = entry.path();
        // Not followed: a planted link is looked at, never through.
        let Ok(meta) = fs::symlink_metadata(&leftover) else {
            continue;
        };
        if !meta.file_type().is_file() || meta.uid() != us {
            log::warn!(
                "left {} alone: it is named like a temporary users file but is not a regular file \
                 of this server's user (uid {us}; it is {}, owner uid {}); someone who can write \
                 to {} may have planted it",
                leftover.display(),
                if meta.file_type().is_symlink() {
                    "a symbolic link"
                } else if meta.file_type().is_file() {
                    "a regular file"
                } else {
                    "not a regular file"
                },
                meta.uid(),
                dir.display()
            );
            continue;
        }
        match fs::remove_file(&leftover) {
            Ok(()) => log::info!(
                "removed {}, left by a write of the users file that did not finish",
                leftover.display()
            ),
            Err(e) => log::warn!(
                "could not remove {}, left by a write of the users file that did not finish: {e}",
                leftover.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// What the users file write had done when it asked for an fsync.
    #[derive(Debug, PartialEq, Eq)]
    enum Synced {
        /// The file to sync and its contents at that moment, and the users file's contents.
        File {
            path: PathBuf,
            contents: Option<Vec<u8>>,
            users_file: Option<Vec<u8>>,
        },
        /// The folder to sync, and the users file's contents at that moment.
        Folder {
            folder: PathBuf,
            users_file: Option<Vec<u8>>,
        },
    }

    /// A [`Durability`] that records each sync (and fails it if told to) instead of syncing.
    struct Recorder {
        users_file: PathBuf,
        fail_file: bool,
        fail_folder: bool,
        seen: RefCell<Vec<Synced>>,
    }

    impl Recorder {
        fn new(users_file: &Path) -> Recorder {
            Recorder {
                users_file: users_file.to_path_buf(),
                fail_file: false,
                fail_folder: false,
                seen: RefCell::new(Vec::new()),
            }
        }
    }

    impl Durability for Recorder {
        fn sync_file(&self, _file: &File, path: &Path) -> io::Result<()> {
            self.seen.borrow_mut().push(Synced::File {
                path: path.to_path_buf(),
                contents: fs::read(path).ok(),
                users_file: fs::read(&self.users_file).ok(),
            });
            match self.fail_file {
                true => Err(io::Error::other("the disk is gone")),
                false => Ok(()),
            }
        }

        fn sync_folder(&self, folder: &Path) -> io::Result<()> {
            self.seen.borrow_mut().push(Synced::Folder {
                folder: folder.to_path_buf(),
                users_file: fs::read(&self.users_file).ok(),
            });
            match self.fail_folder {
                true => Err(io::Error::other("the disk is gone")),
                false => Ok(()),
            }
        }
    }

    fn accounts(names: &[&str]) -> Accounts {
        names
            .iter()
            .map(|name| {
                let user = StoredUser {
                    username: name.to_string(),
                    password_hash: "$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
                        .to_string(),
                };
                (name_key(name), user)
            })
            .collect()
    }

    /// The files in `dir` named like a temporary users file.
    fn temporary_files(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".users.json.tmp.")
            })
            .collect()
    }

    /// Whether `path` is a temporary file of a write of `users_file`: in its folder, named
    /// `.users.json.tmp.` and [`TEMPORARY_RANDOM_CHARS`] random characters.
    fn is_temporary_name(path: &Path, users_file: &Path) -> bool {
        let name = path.file_name().unwrap().to_string_lossy();
        path.parent() == users_file.parent()
            && name
                .strip_prefix(".users.json.tmp.")
                .is_some_and(|random| random.len() == TEMPORARY_RANDOM_CHARS)
    }

    /// Durability, not only atomicity: the new contents are fsynced in the temporary file before
    /// the rename can expose them, and the folder is fsynced after the rename so that the rename
    /// survives a power loss. Dropping either fsync, or renaming before the file's fsync, fails
    /// this test.
    #[test]
    fn a_write_syncs_the_temporary_file_before_the_rename_and_the_folder_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        write(&path, &accounts(&["alice"]), &Fsync).unwrap();
        let old = fs::read(&path).unwrap();
        let recorder = Recorder::new(&path);
        write(&path, &accounts(&["alice", "bob"]), &recorder).unwrap();
        let new = fs::read(&path).unwrap();
        assert_ne!(old, new);
        let seen = recorder.seen.into_inner();
        let temporary = match seen.first() {
            Some(Synced::File { path: tmp, .. }) if is_temporary_name(tmp, &path) => tmp.clone(),
            other => panic!("the first sync is not of a temporary file: {other:?}"),
        };
        assert_eq!(
            seen,
            [
                Synced::File {
                    path: temporary,
                    contents: Some(new.clone()),
                    users_file: Some(old),
                },
                Synced::Folder {
                    folder: dir.path().to_path_buf(),
                    users_file: Some(new),
                },
            ]
        );
    }

    #[test]
    fn a_failed_file_sync_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        write(&path, &accounts(&["alice"]), &Fsync).unwrap();
        let old = fs::read(&path).unwrap();
        let recorder = Recorder {
            fail_file: true,
            ..Recorder::new(&path)
        };
        let failure = write(&path, &accounts(&["alice", "bob"]), &recorder).unwrap_err();
        assert!(failure.replaced.is_none());
        assert_eq!(failure.to_string(), "the disk is gone");
        assert_eq!(fs::read(&path).unwrap(), old);
        assert_eq!(temporary_files(dir.path()), Vec::<PathBuf>::new());
        assert_eq!(
            recorder.seen.borrow().len(),
            1,
            "no folder sync without a rename"
        );
    }

    #[test]
    fn a_failed_folder_sync_is_reported_after_the_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let recorder = Recorder {
            fail_folder: true,
            ..Recorder::new(&path)
        };
        let failure = write(&path, &accounts(&["alice"]), &recorder).unwrap_err();
        assert!(failure.replaced.is_some(), "the rename had happened");
        assert_eq!(
            parse(&fs::read(&path).unwrap()).unwrap(),
            accounts(&["alice"])
        );
    }

    #[test]
    fn a_written_file_parses_back_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let users = accounts(&["Bob", "alice"]);
        write(&path, &users, &Fsync).unwrap();
        assert_eq!(parse(&fs::read(&path).unwrap()).unwrap(), users);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\n  \"version\": 1,\n  \"users\": [\n"),
            "{text}"
        );
        assert!(
            text.find("alice").unwrap() < text.find("Bob").unwrap(),
            "name order"
        );
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn a_write_returns_the_stamp_the_file_has_and_a_change_by_hand_changes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let written = write(&path, &accounts(&["alice"]), &Fsync).unwrap();
        assert_eq!(stamp(&path).unwrap(), written);
        assert_eq!(read(&path).unwrap().1, written);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(b" ");
        fs::write(&path, &bytes).unwrap(); // in place: same inode
        assert_ne!(stamp(&path).unwrap(), written);
    }

    /// The clean-up removes our own leftovers (either naming scheme) and nothing else: not a
    /// symbolic link (nor what it points to), not someone else's file, not a folder.
    #[test]
    fn the_clean_up_removes_only_regular_files_of_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        write(&path, &accounts(&["alice"]), &Fsync).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("precious");
        fs::write(&target, b"keep me").unwrap();
        let ours_old = dir.path().join(".users.json.tmp.4242");
        let ours_new = dir.path().join(".users.json.tmp.Ab3dEf6hIj9K");
        fs::write(&ours_old, b"{}").unwrap();
        fs::write(&ours_new, b"{}").unwrap();
        let link = dir.path().join(".users.json.tmp.4243");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let folder = dir.path().join(".users.json.tmp.4244");
        fs::create_dir(&folder).unwrap();
        let unrelated = dir.path().join(".other.json.tmp.1");
        fs::write(&unrelated, b"{}").unwrap();
        let foreign = dir.path().join(".users.json.tmp.4245");
        fs::write(&foreign, b"{}").unwrap();
        let foreign_owned =
            effective_uid() != 0 || std::os::unix::fs::chown(&foreign, Some(65534), None).is_ok();

        remove_leftover_temporary_files(&path);

        assert!(!ours_old.exists() && !ours_new.exists());
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        assert!(folder.is_dir() && unrelated.exists());
        // Only root can give a file away; as anyone else, the file counts as ours.
        if foreign_owned && effective_uid() == 0 {
            assert!(foreign.exists(), "someone else's file was removed");
        }
        assert!(path.exists());
    }

    /// A FIFO at the users file's path is refused at once (its open would wait for a writer:
    /// the server would hang at start, or a login at a reread).
    #[test]
    fn a_fifo_at_the_users_file_path_is_refused_without_blocking() {
        use crate::user_store::journal::tests::{mkfifo, within_deadline};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        mkfifo(&path);
        let reading = path.clone();
        let result = within_deadline(&path, move || read(&reading).map(|_| ()));
        let error = result.expect_err("read a FIFO");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        assert_eq!(error.to_string(), "is not a regular file");
    }

    #[test]
    fn invalid_contents_are_refused_with_the_reason() {
        let hash = "$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        let user = |name: &str, hash: &str| {
            format!("{{\"username\":\"{name}\",\"password_hash\":\"{hash}\"}}")
        };
        let file = |users: &[String]| format!("{{\"version\":1,\"users\":[{}]}}", users.join(","));
        for (contents, reason) in [
            ("{not json".to_string(), "key must be a string at line 1 column 2"),
            (
                "{\"version\":9,\"users\":[]}".to_string(),
                "version 9 is not supported (expected 1)",
            ),
            (
                file(&[user("al ice", hash)]),
                "user #1 (\"al ice\"): a username may hold only ASCII letters, digits, '_', '-' and '.', not ' '",
            ),
            (
                file(&[user("ab", "plain")]),
                "user \"ab\": password_hash is not a PHC string",
            ),
            (
                file(&[user("ab", hash), user("AB", hash)]),
                "user \"AB\" appears more than once",
            ),
        ] {
            let why = parse(contents.as_bytes()).expect_err(&contents).to_string();
            assert!(why.starts_with(reason), "{contents}: {why}");
        }
    }
}
