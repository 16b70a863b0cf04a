//! The users file on disk: its JSON layout and checks, its stamp (which tells a hand edit from our
//! own write), its atomic replacement, and the checks every file the store creates or reads goes
//! through (private, regular, ours, never a blocking open).
//!
//! A write replaces the file whole ([`replace`]): a temporary file created exclusively
//! (`O_CREAT|O_EXCL`, never through a link) under a random name, mode 0600, checked to be ours
//! before a byte is written, fsynced, renamed over the file, then the folder fsynced; a crash
//! leaves the old file or the new one. The fsyncs go through a [`Durability`], so that tests see
//! them and their order. docs/security.md (8d) says why each step is there.

use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cost::{stored_cost, StoredHashError};
use crate::rules::{name_key, validate_username, UsernameError};

/// Version of the users file's layout.
const FILE_VERSION: u32 = 1;

/// Random characters in a temporary file's name (`.users.json.tmp.` and these): 62^12 names, so
/// that nobody can plant the next one in advance.
const TEMPORARY_RANDOM_CHARS: usize = 12;

/// The mode of every file the store writes: they hold password hashes.
pub(super) const PRIVATE_MODE: u32 = 0o600;

/// One account as stored in the users file (and in the journal).
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
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersJson<T> {
    version: u32,
    users: Vec<T>,
}

/// Why one stored account is refused, in the users file or in the journal.
#[derive(Debug, thiserror::Error)]
pub enum BadEntry {
    #[error("user {0:?}: {1}")]
    Username(String, UsernameError),
    #[error("user {0:?}: password_hash {1}")]
    Hash(String, StoredHashError),
}

/// Checks one stored account's name and hash.
pub(super) fn check_entry(user: &StoredUser) -> Result<(), BadEntry> {
    let name = || user.username.clone();
    validate_username(&user.username).map_err(|why| BadEntry::Username(name(), why))?;
    stored_cost(&user.password_hash).map_err(|why| BadEntry::Hash(name(), why))?;
    Ok(())
}

/// Why the users file's contents are refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidUsersFile {
    /// Not JSON of the expected shape.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("version {0} is not supported (expected {FILE_VERSION})")]
    Version(u32),
    #[error(transparent)]
    Entry(#[from] BadEntry),
    #[error("user {0:?} appears more than once")]
    Duplicate(String),
}

/// Parses and checks the users file's contents.
pub fn parse(bytes: &[u8]) -> Result<Accounts, InvalidUsersFile> {
    let file: UsersJson<StoredUser> = serde_json::from_slice(bytes)?;
    if file.version != FILE_VERSION {
        return Err(InvalidUsersFile::Version(file.version));
    }
    let mut users = Accounts::new();
    for user in file.users {
        check_entry(&user)?;
        if users.contains_key(&name_key(&user.username)) {
            return Err(InvalidUsersFile::Duplicate(user.username));
        }
        users.insert(name_key(&user.username), user);
    }
    Ok(users)
}

/// The users file's bytes: pretty JSON, users in name order, a final newline.
pub fn render(users: &Accounts) -> Vec<u8> {
    let users = users.values().collect();
    let file = UsersJson {
        version: FILE_VERSION,
        users,
    };
    let mut json = serde_json::to_vec_pretty(&file).expect("strings serialise");
    json.push(b'\n');
    json
}

/// What identifies one version of the users file: device and inode, size, modification time to
/// the nanosecond. An editor that saves in place changes the time (and usually the size), one
/// that renames a new file over it changes the inode. (Not the change time: our rename changes it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    file: (u64, u64),
    size: u64,
    modified: (i64, i64),
}

impl FileStamp {
    pub fn of(meta: &Metadata) -> FileStamp {
        FileStamp {
            file: (meta.dev(), meta.ino()),
            size: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

/// The users file's stamp now (following a symbolic link, as reading does).
pub fn stamp(path: &Path) -> io::Result<FileStamp> {
    fs::metadata(path).map(|meta| FileStamp::of(&meta))
}

/// A file of the store that is not read (an [`io::ErrorKind::InvalidInput`] error's cause).
#[derive(Debug, thiserror::Error)]
pub enum NotRegularFile {
    /// A FIFO, a device, a folder.
    #[error("is not a regular file")]
    Special,
    #[error("is a symbolic link (never followed: the server only ever creates a regular file)")]
    Link,
}

/// Reads the regular file at `path` with the metadata of exactly the version read; a symbolic
/// link is followed only if `follow`. Never blocks on what is planted there: anything else is
/// refused ([`NotRegularFile`]) before it is opened (a FIFO's open would wait for a writer), and
/// the open is non-blocking in case the file is swapped between the look and the open.
pub(super) fn read_regular(path: &Path, follow: bool) -> io::Result<(Vec<u8>, Metadata)> {
    let refused = |why| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    let meta = if follow {
        fs::metadata(path)?
    } else {
        fs::symlink_metadata(path)?
    };
    if meta.file_type().is_symlink() {
        return refused(NotRegularFile::Link);
    }
    if !meta.is_file() {
        return refused(NotRegularFile::Special);
    }
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | nofollow)
        .open(path);
    let mut file = match opened {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return refused(NotRegularFile::Link),
        opened => opened?,
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return refused(NotRegularFile::Special);
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok((bytes, meta))
}

/// Reads the users file and the stamp of exactly the version read (see `read_regular`).
pub fn read(path: &Path) -> io::Result<(Vec<u8>, FileStamp)> {
    read_regular(path, true).map(|(bytes, meta)| (bytes, FileStamp::of(&meta)))
}

/// The effective user id this process runs as: the owner of every file it creates.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A file the store just created exclusively is not the private regular file of ours, with one
/// name, that such a creation makes. Never expected; checked because the server may run as root.
#[derive(Debug, thiserror::Error)]
#[error("{} is not the private regular file just created (a {kind}, owner uid {owner}, mode {mode:04o}, {links} names)", path.display())]
pub struct ForeignFile {
    path: PathBuf,
    kind: &'static str,
    owner: u32,
    mode: u32,
    links: u64,
}

/// Makes `file`, just created at `path`, mode 0600 exactly (the umask narrows the mode asked for
/// at creation), then checks that it is a regular file of ours with one name.
pub(super) fn make_private(file: &File, path: &Path) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(PRIVATE_MODE))?;
    let meta = file.metadata()?;
    let mode = meta.mode() & 0o7777;
    let regular = meta.file_type().is_file();
    if regular && meta.uid() == effective_uid() && mode == PRIVATE_MODE && meta.nlink() == 1 {
        return Ok(());
    }
    Err(io::Error::other(ForeignFile {
        path: path.to_path_buf(),
        kind: if regular {
            "regular file"
        } else {
            "special file"
        },
        owner: meta.uid(),
        mode,
        links: meta.nlink(),
    }))
}

/// How writes reach the disk: the users file's two fsyncs ([`replace`]) and the journal's
/// fdatasync. A seam for tests, which check that each happens in its place; the store uses
/// [`Fsync`].
pub trait Durability {
    /// Makes the contents of `file` (the temporary file at `path`) durable, before the rename.
    fn sync_file(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Makes what was appended to `file` (the journal at `path`) durable, with its new length,
    /// before the append is acknowledged.
    fn sync_data(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }
    /// Makes a rename, creation or removal in `folder` durable.
    fn sync_folder(&self, folder: &Path) -> io::Result<()>;
}

/// The real [`Durability`].
pub struct Fsync;

impl Durability for Fsync {
    fn sync_file(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_all()
    }

    fn sync_folder(&self, folder: &Path) -> io::Result<()> {
        File::open(folder)?.sync_all()
    }
}

/// A failed write of the users file.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct WriteFailure {
    /// The new file's stamp if it had replaced the old one already (only the folder's fsync
    /// failed); `None` if the old file is still there.
    pub replaced: Option<FileStamp>,
    pub error: io::Error,
}

/// [`render`], then [`replace`].
pub fn write(
    path: &Path,
    users: &Accounts,
    durability: &dyn Durability,
) -> Result<FileStamp, WriteFailure> {
    replace(path, &render(users), durability)
}

/// Replaces the users file with `json` atomically (see the module's header) and returns the new
/// file's stamp. A failure before the rename removes the temporary file and leaves the old file.
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
    // Dropping `tmp` before it is persisted removes it.
    let mut tmp = tempfile::Builder::new()
        .prefix(&temporary_prefix(path))
        .rand_bytes(TEMPORARY_RANDOM_CHARS)
        .permissions(fs::Permissions::from_mode(PRIVATE_MODE))
        .tempfile_in(&folder)
        .map_err(failed)?;
    let stamp = (|| {
        make_private(tmp.as_file(), tmp.path())?;
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
pub(super) fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The start of a temporary file's name for a write of the users file `…/NAME`: `.NAME.tmp.`.
fn temporary_prefix(path: &Path) -> String {
    format!(
        ".{}.tmp.",
        path.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// Removes the temporary files that a write interrupted by a crash left beside the users file:
/// only regular files of ours, looked at without following links; anything else so named (a
/// link, a file someone else planted) is left alone with a warning. Called before any write of
/// this process. Failures are logged: they stop nothing.
pub fn remove_leftover_temporary_files(path: &Path) {
    let (dir, prefix) = (folder_of(path), temporary_prefix(path));
    let us = effective_uid();
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let named_so = entry
            .file_name()
            .to_string_lossy()
            .strip_prefix(&prefix)
            .is_some_and(|rest| !rest.is_empty());
        // Not followed: a planted link is looked at, never through.
        let (true, Ok(meta)) = (named_so, fs::symlink_metadata(entry.path())) else {
            continue;
        };
        let leftover = entry.path();
        if !meta.file_type().is_file() || meta.uid() != us {
            let kind = if meta.file_type().is_symlink() {
                "symbolic link"
            } else {
                "file"
            };
            log::warn!(
                "left {} alone: it is named like a temporary users file but is not a regular file \
                 of this server's user (uid {us}; owner uid {}, a {kind}); someone who can write to \
                 {} may have planted it",
                leftover.display(),
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
                "could not remove {}, left by a write that did not finish: {e}",
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
    /// the server would hang at start, or at a SIGHUP).
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
                "user \"al ice\": a username may hold only ASCII letters, digits, '_', '-' and '.', not ' '",
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
