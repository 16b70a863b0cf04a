//! Where each account's identity key lives: one file per account (server as typed, lowercased,
//! and username, lowercased) in `$XDG_DATA_HOME/p2pchat/identities/`, else
//! `~/.local/share/p2pchat/identities/`, named `NAME@SERVER`, holding
//! `p2pchat-identity-v1 SEED` (the Ed25519 seed in base64). Made on the account's first login
//! (mode 0600, in a folder made 0700) and read on every later one.
//!
//! It is a secret: whoever reads it can be this user to every peer. So besides the checks of the
//! client's other files ([`private_file`](super::private_file)) it is refused when the group or
//! others may read it, as OpenSSH refuses a private key others can read. Never logged, never
//! printed; the key itself is [`crate::identity`]'s.

use std::path::{Path, PathBuf};

use base64ct::{Base64, Encoding};

use super::known_servers;
use super::private_file::{self, Exposure, PrivateFileError, Readers};
use crate::identity::{IdentityKey, IDENTITY_KEY_BYTES};

/// The folder's place in the user's data folder.
pub const RELATIVE_FOLDER: &str = "p2pchat/identities";

/// The first word of the file: what it is, and its format's version.
const MAGIC: &str = "p2pchat-identity-v1";

/// `$XDG_DATA_HOME/p2pchat/identities`, else `~/.local/share/p2pchat/identities`; `None` when
/// neither variable is set.
pub fn default_folder() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(data) = non_empty("XDG_DATA_HOME") {
        return Some(PathBuf::from(data).join(RELATIVE_FOLDER));
    }
    non_empty("HOME").map(|home| {
        PathBuf::from(home)
            .join(".local")
            .join("share")
            .join(RELATIVE_FOLDER)
    })
}

/// The file of `username`'s account at `server` (as typed) in `folder`. A `/` (which no name or
/// `HOST:PORT` holds) is written `%2F`, so the name is always one file in the folder.
pub fn path(folder: &Path, server: &str, username: &str) -> PathBuf {
    let name = format!(
        "{}@{}",
        username.to_ascii_lowercase(),
        known_servers::key(server)
    )
    .replace('%', "%25")
    .replace('/', "%2F");
    folder.join(name)
}

/// Why the identity could not be had. Each names the file; none quotes its contents.
#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
    #[error("cannot read the identity key {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the identity key {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make an identity key: the system's random source failed: {0}")]
    Random(getrandom::Error),
    #[error("{} is not a p2pchat identity key (expected `{MAGIC} SEED`); move it away to make a new identity (peers will be told it changed)", .path.display())]
    Malformed { path: PathBuf },
    #[error("{exposure}; the identity key is not used")]
    Exposed { exposure: Exposure },
}

/// The account's identity and whether it was just made.
#[derive(Debug)]
pub struct Loaded {
    pub key: IdentityKey,
    pub created: bool,
    pub path: PathBuf,
}

/// The identity kept at `path`, made there first if there is none.
///
/// # Errors
/// The file (or its folder) is exposed, cannot be read or made, or is not an identity file.
pub fn load_or_create(path: &Path) -> Result<Loaded, IdentityFileError> {
    if let Some(key) = load(path)? {
        return Ok(Loaded {
            key,
            created: false,
            path: path.into(),
        });
    }
    let key = IdentityKey::generate().map_err(IdentityFileError::Random)?;
    let text = format!("{MAGIC} {}\n", Base64::encode_string(key.seed()));
    match private_file::create_new(path, text.as_bytes()) {
        Ok(()) => Ok(Loaded {
            key,
            created: true,
            path: path.into(),
        }),
        // Another client of this account made it meanwhile: its identity is the account's.
        Err(PrivateFileError::Io(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            match load(path)? {
                Some(key) => Ok(Loaded {
                    key,
                    created: false,
                    path: path.into(),
                }),
                None => Err(IdentityFileError::Read {
                    path: path.into(),
                    source: e,
                }),
            }
        }
        Err(PrivateFileError::Io(source)) => Err(IdentityFileError::Write {
            path: path.into(),
            source,
        }),
        Err(PrivateFileError::Exposed(exposure)) => Err(IdentityFileError::Exposed { exposure }),
    }
}

/// The identity kept at `path`; `None` when there is no file.
fn load(path: &Path) -> Result<Option<IdentityKey>, IdentityFileError> {
    let text = match private_file::read_checked(path, Readers::OwnerOnly) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        Err(PrivateFileError::Exposed(exposure)) => {
            return Err(IdentityFileError::Exposed { exposure })
        }
        Err(PrivateFileError::Io(source)) => {
            return Err(IdentityFileError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let malformed = || IdentityFileError::Malformed { path: path.into() };
    let mut words = text.split_whitespace();
    let (Some(MAGIC), Some(seed), None) = (words.next(), words.next(), words.next()) else {
        return Err(malformed());
    };
    let mut bytes = Base64::decode_vec(seed).map_err(|_| malformed())?;
    let seed: [u8; IDENTITY_KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| malformed())?;
    bytes.fill(0);
    Ok(Some(IdentityKey::from_seed(&seed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, Permissions};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use tempfile::TempDir;

    #[test]
    fn made_once_private_and_read_back_the_same() {
        let dir = TempDir::new().unwrap();
        let folder = dir.path().join("data").join(RELATIVE_FOLDER);
        let file = path(&folder, "Host:1", "Alice");
        assert_eq!(file.file_name().unwrap(), "alice@host:1");
        let made = load_or_create(&file).unwrap();
        assert!(made.created);
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&folder).unwrap().mode() & 0o777, 0o700);
        let again = load_or_create(&file).unwrap();
        assert!(!again.created);
        assert_eq!(again.key.public(), made.key.public());
        // Another account (or server) has its own.
        let other = load_or_create(&path(&folder, "host:1", "bob")).unwrap();
        assert_ne!(other.key.public(), made.key.public());
    }

    #[test]
    fn a_readable_linked_foreign_or_malformed_file_is_refused() {
        let dir = TempDir::new().unwrap();
        let file = path(dir.path(), "h:1", "alice");
        load_or_create(&file).unwrap();
        fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        let refused = load_or_create(&file).unwrap_err();
        assert!(
            matches!(
                refused,
                IdentityFileError::Exposed {
                    exposure: Exposure::Readable { mode: 0o644, .. }
                }
            ),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("chmod 600"), "{refused}");
        fs::set_permissions(&file, Permissions::from_mode(0o600)).unwrap();
        // Another user's file (only root can give one away: elsewhere this part is skipped).
        if rustix::process::geteuid().is_root() {
            let theirs = path(dir.path(), "h:1", "dave");
            load_or_create(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(12_345), None).unwrap();
            assert!(matches!(
                load_or_create(&theirs),
                Err(IdentityFileError::Exposed {
                    exposure: Exposure::Owner { owner: 12_345, .. }
                })
            ));
        }
        // A link is neither followed to read nor to make a key through it.
        let linked = path(dir.path(), "h:1", "bob");
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, &linked).unwrap();
        assert!(matches!(
            load_or_create(&linked),
            Err(IdentityFileError::Exposed {
                exposure: Exposure::NotAFile { link: true, .. }
            })
        ));
        assert!(!target.exists());
        // A folder others may write to.
        fs::set_permissions(dir.path(), Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            load_or_create(&file),
            Err(IdentityFileError::Exposed {
                exposure: Exposure::FolderWritable { .. }
            })
        ));
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
        let broken = path(dir.path(), "h:1", "carol");
        fs::write(&broken, "p2pchat-identity-v1 AAAA\n").unwrap();
        fs::set_permissions(&broken, Permissions::from_mode(0o600)).unwrap();
        let malformed = load_or_create(&broken).unwrap_err();
        assert!(matches!(malformed, IdentityFileError::Malformed { .. }));
        assert!(!malformed.to_string().contains("AAAA"), "never quotes it");
    }
}
