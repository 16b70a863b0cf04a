//! The users file on disk: its JSON layout and checks, the atomic replacement that makes a change
//! durable, the clean-up of temporary files a crash left behind, and the warnings about symbolic
//! links and loose permissions.
//!
//! Knows nothing of passwords beyond the stored PHC strings' shape, and nothing of locking: the
//! caller ([`super::UserStore`]) writes one change at a time. A write goes through a
//! [`Durability`] so that tests can see both fsyncs and their order; the store uses [`Fsync`].

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cost::{stored_cost, StoredHashError};
use super::rules::{name_key, validate_username, UsernameError};

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
    /// Whether the new file had already replaced the old one (only the folder's fsync failed).
    pub replaced: bool,
    pub error: io::Error,
}

/// How a write of the users file reaches the disk: the two fsyncs of [`write()`]. A seam for tests,
/// which check that both happen, in their place; the store always uses [`Fsync`].
pub trait Durability {
    /// Makes the contents of `file` (the temporary file at `path`) durable. Called after the
    /// contents are written and before the rename: a crash after the rename must find them.
    fn sync_file(&self, file: &File, path: &Path) -> io::Result<()>;
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

/// Replaces the users file atomically: a temporary file in the same folder (mode 0600), its
/// fsync, the rename over the old file, the folder's fsync so that the rename itself is durable.
/// A failure before the rename removes the temporary file and leaves the old file as it was.
pub fn write(
    path: &Path,
    users: &Accounts,
    durability: &dyn Durability,
) -> Result<(), WriteFailure> {
    let failed = |error| WriteFailure {
        replaced: false,
        error,
    };
    let file = UsersJson {
        version: FILE_VERSION,
        users: users.values().cloned().collect(),
    };
    let mut json = serde_json::to_vec_pretty(&file)
        .map_err(io::Error::other)
        .map_err(failed)?;
    json.push(b'\n');
    let folder = folder_of(path);
    let name = path.file_name().ok_or_else(|| {
        failed(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    let tmp = folder.join(temporary_name(name, std::process::id()));
    let written = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(&json)?;
        durability.sync_file(&out, &tmp)?;
        fs::rename(&tmp, path)
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(failed(error));
    }
    durability
        .sync_folder(&folder)
        .map_err(|error| WriteFailure {
            replaced: true,
            error,
        })
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

/// The name of the temporary file a write of `path` by this process uses: `.NAME.tmp.PID`.
fn temporary_name(name: &OsStr, pid: u32) -> String {
    format!("{}{pid}", temporary_prefix(name))
}

fn temporary_prefix(name: &OsStr) -> String {
    format!(".{}.tmp.", name.to_string_lossy())
}

/// Removes the temporary files of earlier processes beside the users file: a write interrupted
/// by a crash (SIGKILL, power loss) leaves one, and a later process never reuses its name.
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
    let own = temporary_name(name, std::process::id());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let is_leftover = file_name
            .strip_prefix(&prefix)
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            && file_name != own;
        if !is_leftover {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => log::info!(
                "removed {}, left by a write of the users file that did not finish",
                entry.path().display()
            ),
            Err(e) => log::warn!(
                "could not remove {}, left by a write of the users file that did not finish: {e}",
                entry.path().display()
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

    fn temporary_path(path: &Path) -> PathBuf {
        folder_of(path).join(temporary_name(
            path.file_name().unwrap(),
            std::process::id(),
        ))
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
        assert_eq!(
            recorder.seen.into_inner(),
            [
                Synced::File {
                    path: temporary_path(&path),
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
        assert!(!failure.replaced);
        assert_eq!(failure.to_string(), "the disk is gone");
        assert_eq!(fs::read(&path).unwrap(), old);
        assert!(!temporary_path(&path).exists());
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
        assert!(failure.replaced, "the rename had happened");
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
                "user #1 (\"al ice\"): a username may hold only letters, digits, '_', '-' and '.', not ' '",
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
