//! One server per users file: an exclusive advisory lock (`flock`) on `users.json.lock` beside it,
//! taken when the store opens and held while it lives, so that nothing but this process writes
//! the users file or its journal (an editor aside) and the store needs no recovery from another
//! server's writes. The file holds the holder's pid, for a second server to name it.
//!
//! Opened like the journal: never through a symbolic link, never a FIFO's blocking open, and
//! refused unless it is a regular file of ours with one name (a planted hard link would have us
//! write our pid into someone else's file). A graceful close removes it; a crash leaves it,
//! unlocked, for the next start to take.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::file::{effective_uid, PRIVATE_MODE};

/// Opens before giving up when the file keeps being removed under us (a holder stopping removes
/// it between our open and our lock: we then hold a file with no name and must open again).
const ATTEMPTS: usize = 3;

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it; `holder` is the pid it wrote, if it had written one yet.
    #[error(
        "in use by another server{} (it holds {}); refusing to start: one server per users file",
        holder.map(|pid| format!(", process {pid}")).unwrap_or_default(),
        path.display()
    )]
    Held { path: PathBuf, holder: Option<u32> },
    #[error(
        "lock {} is not a regular file of this server's user with one name; remove it if no \
         server runs on this users file",
        path.display()
    )]
    Foreign { path: PathBuf },
    #[error("lock {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
}

/// The lock on a users file, held until dropped.
#[derive(Debug)]
pub struct UsersLock {
    file: File,
    path: PathBuf,
}

/// The lock's path for the users file at `users` (symbolic links already resolved).
pub fn path_for(users: &Path) -> PathBuf {
    let mut name = users.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Whether `path` still names the file whose metadata is `held`.
fn names(path: &Path, held: &Metadata) -> bool {
    fs::symlink_metadata(path).is_ok_and(|now| (now.dev(), now.ino()) == (held.dev(), held.ino()))
}

impl UsersLock {
    /// Takes the lock on the users file at `users` without waiting, and writes our pid into it.
    pub fn acquire(users: &Path) -> Result<UsersLock, LockError> {
        let path = path_for(users);
        let io_error = |error| LockError::Io {
            path: path.clone(),
            error,
        };
        for _ in 0..ATTEMPTS {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(PRIVATE_MODE)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&path)
                .map_err(io_error)?;
            let meta = file.metadata().map_err(io_error)?;
            if !meta.is_file() || meta.uid() != effective_uid() || meta.nlink() > 1 {
                return Err(LockError::Foreign { path });
            }
            match file.try_lock() {
                Ok(()) if !names(&path, &meta) => continue,
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let holder = text.trim().parse().ok();
                    return Err(LockError::Held { path, holder });
                }
                Err(fs::TryLockError::Error(error)) => return Err(io_error(error)),
            }
            file.set_len(0)
                .and_then(|()| writeln!(file, "{}", std::process::id()))
                .map_err(io_error)?;
            return Ok(UsersLock { file, path });
        }
        Err(io_error(io::Error::other(
            "removed again and again while being locked",
        )))
    }
}

impl Drop for UsersLock {
    /// Removes the file while still holding the lock (a server starting meanwhile sees it lose
    /// its name and opens again), unless it is no longer ours (removed by hand and made anew).
    fn drop(&mut self) {
        if self
            .file
            .metadata()
            .is_ok_and(|held| names(&self.path, &held))
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_a_dropped_lock_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.json");
        let held = UsersLock::acquire(&users).unwrap();
        let pid = std::process::id();
        assert_eq!(
            fs::read_to_string(path_for(&users)).unwrap(),
            format!("{pid}\n")
        );
        match UsersLock::acquire(&users) {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder, Some(pid)),
            other => panic!("{other:?}"),
        }
        drop(held);
        assert!(!path_for(&users).exists());
        // A lock file a crash left behind (a stale pid, nobody holding it) is taken.
        fs::write(path_for(&users), "1\n").unwrap();
        let again = UsersLock::acquire(&users).unwrap();
        assert_eq!(
            fs::read_to_string(path_for(&users)).unwrap(),
            format!("{pid}\n")
        );
        drop(again);
    }

    #[test]
    fn a_planted_link_or_hard_link_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.json");
        let precious = dir.path().join("precious");
        fs::write(&precious, b"keep me").unwrap();
        std::os::unix::fs::symlink(&precious, path_for(&users)).unwrap();
        assert!(UsersLock::acquire(&users).is_err());
        fs::remove_file(path_for(&users)).unwrap();
        fs::hard_link(&precious, path_for(&users)).unwrap();
        assert!(matches!(
            UsersLock::acquire(&users),
            Err(LockError::Foreign { .. })
        ));
        assert_eq!(fs::read(&precious).unwrap(), b"keep me");
    }
}
