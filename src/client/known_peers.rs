//! The known-peers file: the identity key this user pinned for each peer, per server — SSH's
//! `known_hosts`, for the people one talks to. One line per peer:
//! `SERVER NAME IDENTITY [verified]` — the server as typed (lowercased, as in known_servers),
//! the peer's name (lowercased: names are one account whatever their case), the identity key
//! (base64) and, once the safety numbers were compared (`/verify NAME confirm`), `verified`.
//! Blank lines and lines starting with `#` are ignored; any other line that is not an entry is an
//! error naming the file and the line, rather than a peer silently forgotten.
//!
//! It lives beside the known-servers file, with the same checks
//! ([`private_file`](super::private_file)): who could write it could choose whom this client
//! seals direct messages to. A first contact is appended; `/trust` and `/verify … confirm`
//! rewrite the file whole (a new file renamed over the old). This module never decides whether
//! to trust a peer: [`peer_identities`](super::peer_identities) does.

use std::path::{Path, PathBuf};

use super::known_servers;
use super::private_file::{self, Exposure, PrivateFileError, Readers};
use crate::identity::IdentityPublic;

/// The file's name, beside the known-servers file.
pub const FILE_NAME: &str = "known_peers";

/// The word that marks a peer whose safety number was compared.
const VERIFIED: &str = "verified";

/// Why the file could not be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KnownPeersError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot record a peer's identity in {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}, line {line}: expected SERVER NAME IDENTITY [verified], found {text:?}", .path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
    /// Someone else could have written the file: it is not used.
    #[error("{exposure}; the known-peers file is not used")]
    Exposed { exposure: Exposure },
    /// A server or a name that would not stay one word of one line (a space, a control
    /// character): never written. Names are checked when they arrive; this is the file's own
    /// guard, so that no name can add a line.
    #[error("not pinned: {text:?} cannot be written as one word of the known-peers file")]
    NotOneWord { text: String },
}

/// One pinned peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedPeer {
    pub server: String,
    pub name: String,
    pub identity: IdentityPublic,
    pub verified: bool,
}

impl PinnedPeer {
    fn line(&self) -> String {
        let mark = if self.verified { " verified" } else { "" };
        format!(
            "{} {} {}{mark}\n",
            self.server,
            self.name,
            self.identity.to_base64()
        )
    }
}

/// The file, as read.
#[derive(Debug)]
pub struct KnownPeers {
    /// `None`: kept in memory only, for this process (a library user that named no file).
    path: Option<PathBuf>,
    /// The file's text as read or last written (comments and all), kept to rewrite it.
    text: String,
    entries: Vec<PinnedPeer>,
}

impl KnownPeers {
    /// Reads the file; a file that does not exist yet knows no peer.
    ///
    /// # Errors
    /// Someone else could have written the file, it cannot be read, or it has a line that is
    /// not an entry.
    pub fn load(path: &Path) -> Result<Self, KnownPeersError> {
        let text = match private_file::read_checked(path, Readers::Anyone) {
            Ok(text) => text.unwrap_or_default(),
            Err(e) => return Err(file_error(path, e, true)),
        };
        let entries = parse(path, &text)?;
        Ok(KnownPeers {
            path: Some(path.into()),
            text,
            entries,
        })
    }

    /// Pins kept in memory only, for this process: first contacts are pinned and changes caught
    /// for as long as it runs, and forgotten after.
    pub fn in_memory() -> Self {
        KnownPeers {
            path: None,
            text: String::new(),
            entries: Vec::new(),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The pin for `name` at `server` (as typed); the last line if the file has several.
    pub fn find(&self, server: &str, name: &str) -> Option<&PinnedPeer> {
        let (server, name) = (known_servers::key(server), name.to_ascii_lowercase());
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.server == server && entry.name == name)
    }

    /// Pins `identity` for `name` at `server`, not verified: appended when the peer had no pin,
    /// else the file is rewritten without its old lines (a trusted change, which drops
    /// "verified"). `verified` marks it compared (`/verify … confirm`).
    ///
    /// # Errors
    /// The file cannot be written, or someone else could have written it.
    pub fn pin(
        &mut self,
        server: &str,
        name: &str,
        identity: IdentityPublic,
        verified: bool,
    ) -> Result<PinnedPeer, KnownPeersError> {
        if let Some(text) = [server, name].into_iter().find(|word| {
            word.is_empty() || word.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            return Err(KnownPeersError::NotOneWord {
                text: text.to_string(),
            });
        }
        let entry = PinnedPeer {
            server: known_servers::key(server),
            name: name.to_ascii_lowercase(),
            identity,
            verified,
        };
        let had_one = self.find(server, name).is_some();
        if !had_one {
            if let Some(path) = &self.path {
                private_file::append_checked(path, Readers::Anyone, &entry.line())
                    .map_err(|e| file_error(path, e, false))?;
            }
            if !self.text.is_empty() && !self.text.ends_with('\n') {
                self.text.push('\n');
            }
            self.text.push_str(&entry.line());
            self.entries.push(entry.clone());
            return Ok(entry);
        }
        // Every line but this peer's, as it was, and this peer's new one at the end.
        let mut text: String = self
            .text
            .split_inclusive('\n')
            .filter(|line| {
                !matches!(parse_line(line), Some(Ok(old)) if old.server == entry.server && old.name == entry.name)
            })
            .collect();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&entry.line());
        if let Some(path) = &self.path {
            private_file::replace(path, &text).map_err(|e| file_error(path, e, false))?;
        }
        self.entries
            .retain(|old| !(old.server == entry.server && old.name == entry.name));
        self.entries.push(entry.clone());
        self.text = text;
        Ok(entry)
    }
}

fn file_error(path: &Path, error: PrivateFileError, reading: bool) -> KnownPeersError {
    match error {
        PrivateFileError::Exposed(exposure) => KnownPeersError::Exposed { exposure },
        PrivateFileError::Io(source) if reading => KnownPeersError::Read {
            path: path.into(),
            source,
        },
        PrivateFileError::Io(source) => KnownPeersError::Write {
            path: path.into(),
            source,
        },
    }
}

/// One line: `None` for a blank line or a comment, `Some(Err(()))` for one that is no entry.
fn parse_line(text: &str) -> Option<Result<PinnedPeer, ()>> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    let (server, name, identity, verified) = match fields[..] {
        [server, name, identity] => (server, name, identity, false),
        [server, name, identity, VERIFIED] => (server, name, identity, true),
        _ => return Some(Err(())),
    };
    let Some(identity) = IdentityPublic::from_base64(identity) else {
        return Some(Err(()));
    };
    Some(Ok(PinnedPeer {
        server: known_servers::key(server),
        name: name.to_ascii_lowercase(),
        identity,
        verified,
    }))
}

fn parse(path: &Path, text: &str) -> Result<Vec<PinnedPeer>, KnownPeersError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        match parse_line(line) {
            None => {}
            Some(Ok(entry)) => entries.push(entry),
            Some(Err(())) => {
                return Err(KnownPeersError::BadLine {
                    path: path.into(),
                    line: index + 1,
                    text: line.to_string(),
                })
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;
    use tempfile::TempDir;

    fn key(seed: u8) -> IdentityPublic {
        IdentityPublic::from_bytes([seed; 32])
    }

    #[test]
    fn a_name_or_server_that_is_not_one_word_is_never_written() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("p2pchat").join(FILE_NAME);
        let mut known = KnownPeers::load(&path).unwrap();
        for (server, name) in [
            ("h:1", "x\nh:1 bob"),
            ("h:1", "a b"),
            ("h 1", "bob"),
            ("h:1", ""),
        ] {
            assert!(
                matches!(
                    known.pin(server, name, key(1), true),
                    Err(KnownPeersError::NotOneWord { .. })
                ),
                "{server:?} {name:?}"
            );
        }
        assert!(!path.exists(), "nothing written");
    }

    #[test]
    fn pins_are_appended_found_per_server_and_name_and_replaced_whole() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("p2pchat").join(FILE_NAME);
        let mut known = KnownPeers::load(&path).unwrap();
        assert!(known.find("h:1", "bob").is_none());
        known.pin("H:1", "Bob", key(1), false).unwrap();
        known.pin("h:2", "bob", key(2), false).unwrap();
        fs::write(
            &path,
            format!("# mine\n{}", fs::read_to_string(&path).unwrap()),
        )
        .unwrap();
        let mut known = KnownPeers::load(&path).unwrap();
        assert_eq!(known.find("h:1", "BOB").unwrap().identity, key(1));
        assert_eq!(known.find("h:2", "bob").unwrap().identity, key(2));
        // A trusted change (or a verification) rewrites that line only, comments kept.
        known.pin("h:1", "bob", key(3), true).unwrap();
        let again = KnownPeers::load(&path).unwrap();
        let bob = again.find("h:1", "bob").unwrap();
        assert_eq!((bob.identity, bob.verified), (key(3), true));
        assert_eq!(again.find("h:2", "bob").unwrap().identity, key(2));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# mine\n"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn a_bad_line_is_named_and_an_exposed_file_refused() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, "h:1 bob not-base64!\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        match KnownPeers::load(&path) {
            Err(KnownPeersError::BadLine { line: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
        fs::set_permissions(&path, Permissions::from_mode(0o622)).unwrap();
        assert!(matches!(
            KnownPeers::load(&path),
            Err(KnownPeersError::Exposed {
                exposure: Exposure::Writable { .. }
            })
        ));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        assert!(matches!(
            KnownPeers::load(&link),
            Err(KnownPeersError::Exposed {
                exposure: Exposure::NotAFile { link: true, .. }
            })
        ));
    }
}
