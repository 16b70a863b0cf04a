//! Who else could read or replace the users file: a symbolic link to it, its mode, its owner, and
//! the owner and mode of its folder and of every folder above it. Whoever can write to the folder
//! can rename a file of their own over `users.json`; exclusive random temporary names stop
//! planting, only the folders' permissions stop that. Looks only: the store decides what to
//! refuse; docs/security.md (8e) says what is refused and what only warned about, and why.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::file::{effective_uid, folder_of};

/// The sticky bit: in a folder with it, only a file's owner (or the folder's, or root) may
/// rename or remove the file.
const STICKY: u32 = 0o1000;
const GROUP_WRITE: u32 = 0o020;
const OTHERS_WRITE: u32 = 0o002;

/// One way someone else could replace the users file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// Others may write to `folder` and it has no sticky bit. Refused.
    OthersCanWrite { folder: PathBuf, mode: u32 },
    /// `folder` belongs to another user (not root). Refused.
    FolderOwner { folder: PathBuf, owner: u32 },
    /// The users file belongs to another user (not root). Refused.
    FileOwner { file: PathBuf, owner: u32 },
    /// The group `group` may write to `folder` (no sticky bit). Warned about: with a group per
    /// user and umask 002, every new folder is so.
    GroupCanWrite {
        folder: PathBuf,
        mode: u32,
        group: u32,
    },
    /// Everyone may create files in the users file's own folder, which has the sticky bit (like
    /// `/tmp`). Warned about.
    SharedSticky { folder: PathBuf, mode: u32 },
}

impl Exposure {
    /// Whether the store refuses to open the file for it (unless told to go ahead).
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            Exposure::OthersCanWrite { .. }
                | Exposure::FolderOwner { .. }
                | Exposure::FileOwner { .. }
        )
    }
}

impl fmt::Display for Exposure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = effective_uid();
        match self {
            Exposure::OthersCanWrite { folder, mode } => write!(
                f,
                "folder {} has mode {mode:04o}: anyone on this machine can replace the users \
                 file in it (run `chmod o-w {}`)",
                folder.display(),
                folder.display()
            ),
            Exposure::FolderOwner { folder, owner } => write!(
                f,
                "folder {} belongs to uid {owner}, not to this server's user (uid {us}) or \
                 root: its owner can replace the users file",
                folder.display()
            ),
            Exposure::FileOwner { file, owner } => write!(
                f,
                "{} belongs to uid {owner}, not to this server's user (uid {us}) or root: its \
                 owner can change the accounts (run `chown {us} {}` if that is right)",
                file.display(),
                file.display()
            ),
            Exposure::GroupCanWrite {
                folder,
                mode,
                group,
            } => write!(
                f,
                "folder {} has mode {mode:04o}: members of group {group} can replace the users \
                 file in it (fine if that group is this user alone; otherwise run `chmod g-w {}`)",
                folder.display(),
                folder.display()
            ),
            Exposure::SharedSticky { folder, mode } => write!(
                f,
                "folder {} has mode {mode:04o}: anyone can create files beside the users file \
                 (the sticky bit stops them replacing it); a private folder is safer",
                folder.display()
            ),
        }
    }
}

/// Every way someone else could replace `file` (the users file, symbolic links resolved),
/// nearest first. A folder that cannot be looked at is skipped: opening the file reports it.
pub fn exposures(file: &Path) -> Vec<Exposure> {
    let us = effective_uid();
    let foreign = |owner: u32| owner != us && owner != 0;
    let mut found = Vec::new();
    if let Some(owner) = fs::metadata(file)
        .map(|meta| meta.uid())
        .ok()
        .filter(|&o| foreign(o))
    {
        found.push(Exposure::FileOwner {
            file: file.to_path_buf(),
            owner,
        });
    }
    let Ok(folder) = fs::canonicalize(folder_of(file)) else {
        return found;
    };
    for (depth, dir) in folder.ancestors().enumerate() {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        let (mode, folder) = (meta.mode() & 0o7777, dir.to_path_buf());
        let sticky = mode & STICKY != 0;
        if foreign(meta.uid()) {
            found.push(Exposure::FolderOwner {
                folder: folder.clone(),
                owner: meta.uid(),
            });
        }
        if mode & OTHERS_WRITE != 0 && !sticky {
            found.push(Exposure::OthersCanWrite { folder, mode });
        } else if mode & OTHERS_WRITE != 0 && depth == 0 {
            found.push(Exposure::SharedSticky { folder, mode });
        } else if mode & (OTHERS_WRITE | STICKY) == 0 && mode & GROUP_WRITE != 0 {
            found.push(Exposure::GroupCanWrite {
                folder,
                mode,
                group: meta.gid(),
            });
        }
    }
    found
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

/// Warns if group or others can read or write the users file (named `path`, at `target`).
pub fn warn_if_exposed(path: &Path, target: &Path) {
    let mode = fs::metadata(target).map_or(0, |meta| meta.mode() & 0o777);
    let access = match (mode & 0o044 != 0, mode & 0o022 != 0) {
        (false, false) => return,
        (true, true) => "read and write",
        (true, false) => "read",
        (false, true) => "write",
    };
    log::warn!(
        "users file {} has mode {mode:04o}: group or others can {access} it and it holds \
         password hashes; run `chmod 600 {}` (the server makes it 0600 at its next change)",
        path.display(),
        target.display()
    );
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// What `exposures` finds under `dir` (the temporary folder's own ancestors, like /tmp,
    /// are left out: they are the test machine's).
    fn under(dir: &Path, file: &Path) -> Vec<Exposure> {
        let dir = fs::canonicalize(dir).unwrap();
        exposures(file)
            .into_iter()
            .filter(|e| match e {
                Exposure::OthersCanWrite { folder, .. }
                | Exposure::FolderOwner { folder, .. }
                | Exposure::GroupCanWrite { folder, .. }
                | Exposure::SharedSticky { folder, .. } => folder.starts_with(&dir),
                Exposure::FileOwner { .. } => true,
            })
            .collect()
    }

    #[test]
    fn a_private_folder_has_no_exposure() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700);
        assert_eq!(under(dir.path(), &dir.path().join("users.json")), []);
    }

    #[test]
    fn each_mode_of_the_folder_and_its_parent_is_judged() {
        let dir = tempfile::tempdir().unwrap();
        let top = fs::canonicalize(dir.path()).unwrap();
        let inner = top.join("data");
        fs::create_dir(&inner).unwrap();
        let file = inner.join("users.json");
        for (top_mode, inner_mode, expected, refused) in [
            (0o755, 0o777, vec![(inner.clone(), 0o777, "others")], true),
            (0o777, 0o700, vec![(top.clone(), 0o777, "others")], true),
            (0o755, 0o775, vec![(inner.clone(), 0o775, "group")], false),
            (
                0o755,
                0o1777,
                vec![(inner.clone(), 0o1777, "sticky")],
                false,
            ),
            // A sticky parent (like /tmp) does not matter: nobody can rename our folder away.
            (0o1777, 0o700, vec![], false),
        ] {
            chmod(&top, top_mode);
            chmod(&inner, inner_mode);
            let found = under(&top, &file);
            let kinds: Vec<_> = found
                .iter()
                .map(|e| match e {
                    Exposure::OthersCanWrite { folder, mode } => (folder.clone(), *mode, "others"),
                    Exposure::GroupCanWrite { folder, mode, .. } => {
                        (folder.clone(), *mode, "group")
                    }
                    Exposure::SharedSticky { folder, mode } => (folder.clone(), *mode, "sticky"),
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            assert_eq!(kinds, expected, "{top_mode:o} {inner_mode:o}");
            assert_eq!(
                found.iter().any(Exposure::is_refused),
                refused,
                "{top_mode:o} {inner_mode:o}"
            );
        }
        chmod(&top, 0o700);
    }

    #[test]
    fn a_users_file_or_folder_of_another_user_is_refused() {
        if effective_uid() != 0 {
            eprintln!("skipped: only root can give a file away");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users.json");
        fs::write(&file, b"{}").unwrap();
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
        let found = under(dir.path(), &file);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(Exposure::is_refused));
        assert!(found[0].to_string().contains("belongs to uid 65534"));
    }
}
