//! The known-servers file: the fingerprint of every server this user has trusted, one line per
//! server, `HOST:PORT SHA256:…` — SSH's `known_hosts`, for p2pchat servers.
//!
//! A server is known by the `--server` text as typed (lowercased: host names are not case
//! sensitive) plus its port, and by the address it answered at, as OpenSSH's `CheckHostIP`
//! records a host's IP: a line is `HOST:PORT,ADDRESS SHA256:…` (`ADDRESS` left out when the
//! name typed is that address), so `localhost:12000` met after `127.0.0.1:12000` is found at
//! its address ([`KnownServers::at_address`]). Blank lines and lines starting with `#` are
//! ignored; any other line that is not `HOST:PORT[,ADDRESS] SHA256:…` is an error naming the
//! file and the line, rather than a server silently forgotten.
//!
//! The file decides whom the client sends its password to, so it is used only when no one else
//! could have written it ([`Exposure`]): a symbolic link at its path, a file that belongs to
//! another user (not root) or that the group or others may write, or a folder the group or
//! others may write to (without the sticky bit) or that belongs to another user, is refused with
//! what to do. The file is read from one handle opened with `O_NOFOLLOW` whose type, owner and
//! mode are checked, so what is checked is what is read. Lines are appended when a server is
//! trusted, and removed only by
//! [`forget`] (`p2pchat-client --forget`, OpenSSH's `ssh-keygen -R`), which writes the rest to a
//! new file and renames it over the old one, so the file is never seen half written. Where the
//! file lives by default is [`default_path`]. This module never decides whether to trust a
//! server.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::tls::Fingerprint;

/// The file's place in the user's configuration folder.
pub const RELATIVE_PATH: &str = "p2pchat/known_servers";

/// `$XDG_CONFIG_HOME/p2pchat/known_servers`, else `~/.config/p2pchat/known_servers`; `None`
/// when neither variable is set (then `--known-servers` must name the file).
pub fn default_path() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(config) = non_empty("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(config).join(RELATIVE_PATH));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".config").join(RELATIVE_PATH))
}

/// How a server is keyed: as typed, lowercased.
pub fn key(server: &str) -> String {
    server.trim().to_ascii_lowercase()
}

/// How an address is written in the file: an IPv4 address mapped into IPv6
/// (`[::ffff:127.0.0.1]:12000`) as the IPv4 address it is, so every way of typing one server's
/// address is one address.
pub fn address_key(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()).to_string(),
            None => addr.to_string(),
        },
        SocketAddr::V4(_) => addr.to_string(),
    }
}

/// Why the file could not be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KnownServersError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot record the server in {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot remove the server from {}: {source}", .path.display())]
    Rewrite { path: PathBuf, source: io::Error },
    #[error("{}, line {line}: expected HOST:PORT[,ADDRESS] SHA256:…, found {text:?}", .path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
    /// Someone else could have written the file: it is not used.
    #[error("{exposure}; the known-servers file is not used")]
    Exposed { exposure: Exposure },
}

/// One way someone else could have written the known-servers file (and so chosen whom the
/// client trusts): [`private_file`](super::private_file)'s checks, shared with the client's
/// other files of trust. Every one is refused: unlike a server's users file, this file is the
/// user's own, made 0600 by the client in a 0700 folder, so none of these happens without
/// someone's doing.
pub use super::private_file::Exposure;
use super::private_file::{self, PrivateFileError, Readers};

/// What in the file's place, or its folder's, someone else could have written; `None` if the
/// file is safe to use (or does not exist yet, in a folder that is safe or does not exist).
///
/// # Errors
/// The file or its folder cannot be examined.
pub fn exposure(path: &Path) -> io::Result<Option<Exposure>> {
    private_file::exposure(path, Readers::Anyone)
}

/// The file's text, read from the handle that was checked ([`private_file::read_checked`]); an
/// empty text when there is no file.
fn read_checked(path: &Path) -> Result<String, KnownServersError> {
    match private_file::read_checked(path, Readers::Anyone) {
        Ok(text) => Ok(text.unwrap_or_default()),
        Err(PrivateFileError::Exposed(exposure)) => Err(KnownServersError::Exposed { exposure }),
        Err(PrivateFileError::Io(source)) => Err(KnownServersError::Read {
            path: path.into(),
            source,
        }),
    }
}

/// A server met for the first time under this name whose key the file already pins at the
/// address it answered at, under other names (OpenSSH: "This host key is known by the following
/// other names/addresses"). Not a reason to trust it: whoever made the name lead there (a DNS
/// answer, a hosts file) chose the server, so it is a first contact like any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownAs {
    /// The address, as the file writes it.
    pub address: String,
    /// The names the key is pinned under at that address, in the file's order.
    pub names: Vec<String>,
    /// The first of those lines.
    pub line: usize,
}

impl std::fmt::Display for KnownAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this key is already known for {} under the name {} (line {})",
            self.address,
            self.names.join(", "),
            self.line
        )
    }
}

/// One trusted server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub server: String,
    /// The address it answered at when recorded ([`address_key`]), when not `server` itself;
    /// `None` in lines written before addresses were recorded.
    pub address: Option<String>,
    pub fingerprint: Fingerprint,
    /// Its line in the file, from 1.
    pub line: usize,
}

/// The file, as read.
#[derive(Debug)]
pub struct KnownServers {
    path: PathBuf,
    entries: Vec<Entry>,
    lines: usize,
}

impl KnownServers {
    /// Reads the file; a file that does not exist yet knows no server.
    ///
    /// # Errors
    /// Someone else could have written the file ([`Exposure`]), it cannot be read, or it has a
    /// line that is not an entry.
    pub fn load(path: &Path) -> Result<Self, KnownServersError> {
        Self::parse(path, &read_checked(path)?)
    }

    /// The entries of `text`, read from the file at `path`.
    fn parse(path: &Path, text: &str) -> Result<Self, KnownServersError> {
        let mut entries = Vec::new();
        let mut lines = 0;
        for (index, text) in text.lines().enumerate() {
            lines = index + 1;
            let trimmed = text.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let bad = || KnownServersError::BadLine {
                path: path.into(),
                line: index + 1,
                text: text.to_string(),
            };
            let mut fields = trimmed.split_whitespace();
            let (Some(server), Some(fingerprint), None) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(bad());
            };
            let (server, address) = match server.split_once(',') {
                Some((_, address)) if address.is_empty() || address.contains(',') => {
                    return Err(bad())
                }
                Some((server, address)) => (server, Some(key(address))),
                None => (server, None),
            };
            entries.push(Entry {
                server: key(server),
                address,
                fingerprint: fingerprint.parse().map_err(|_| bad())?,
                line: index + 1,
            });
        }
        Ok(KnownServers {
            path: path.into(),
            entries,
            lines,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry for `server` (as typed); the first one if the file has several.
    pub fn find(&self, server: &str) -> Option<&Entry> {
        let key = key(server);
        self.entries.iter().find(|entry| entry.server == key)
    }

    /// Every entry recorded at `address` ([`address_key`]), under whatever name, or named by it.
    pub fn at_address(&self, address: &str) -> impl Iterator<Item = &Entry> {
        let address = key(address);
        self.entries.iter().filter(move |entry| {
            entry.server == address || entry.address.as_deref() == Some(address.as_str())
        })
    }

    /// Appends `server` at `address` (left out when it is `server` itself) with `fingerprint`
    /// (creating the folder, mode 0700, and the file, mode 0600, if needed; never through a
    /// symbolic link) and returns the new entry.
    ///
    /// # Errors
    /// The folder or the file cannot be created or written, or someone else could have written
    /// the file.
    pub fn add(
        &mut self,
        server: &str,
        address: Option<&str>,
        fingerprint: Fingerprint,
    ) -> Result<Entry, KnownServersError> {
        let write_error = |source| KnownServersError::Write {
            path: self.path.clone(),
            source,
        };
        let address = address.map(key).filter(|address| *address != key(server));
        let line = match &address {
            Some(address) => format!("{},{address} {fingerprint}\n", key(server)),
            None => format!("{} {fingerprint}\n", key(server)),
        };
        match private_file::append_checked(&self.path, Readers::Anyone, &line) {
            Ok(()) => {}
            Err(PrivateFileError::Exposed(exposure)) => {
                return Err(KnownServersError::Exposed { exposure })
            }
            Err(PrivateFileError::Io(source)) => return Err(write_error(source)),
        }
        self.lines += 1;
        let entry = Entry {
            server: key(server),
            address,
            fingerprint,
            line: self.lines,
        };
        self.entries.push(entry.clone());
        Ok(entry)
    }
}

/// Removes every line of `server` (as typed, port included; or an address, which removes every
/// line recorded at it too) from the file at `path`, keeping
/// every other line as it was, and returns the entries removed (none if the server was not
/// there; the file is then left untouched). The rest goes to a new file beside it (mode 0600,
/// written and flushed to disk) renamed over the old one, so a crash leaves the old file or the
/// new one, never a mix.
///
/// # Errors
/// The file cannot be read, has a line that is not an entry, or cannot be replaced.
pub fn forget(path: &Path, server: &str) -> Result<Vec<Entry>, KnownServersError> {
    // Read once: the lines kept are the lines parsed.
    let text = read_checked(path)?;
    let known = KnownServers::parse(path, &text)?;
    let key = key(server);
    let removed: Vec<Entry> = known
        .entries
        .into_iter()
        .filter(|entry| entry.server == key || entry.address.as_ref() == Some(&key))
        .collect();
    if removed.is_empty() {
        return Ok(removed);
    }
    let rewrite_error = |source| KnownServersError::Rewrite {
        path: path.into(),
        source,
    };
    let gone: BTreeSet<usize> = removed.iter().map(|entry| entry.line).collect();
    let kept: String = text
        .split_inclusive('\n')
        .enumerate()
        .filter(|(index, _)| !gone.contains(&(index + 1)))
        .map(|(_, line)| line)
        .collect();
    match private_file::replace(path, &kept) {
        Ok(()) => {}
        Err(PrivateFileError::Exposed(exposure)) => {
            return Err(KnownServersError::Exposed { exposure })
        }
        Err(PrivateFileError::Io(source)) => return Err(rewrite_error(source)),
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::private_file::FILE_MODE;
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;
    use tempfile::TempDir;

    fn fingerprint(seed: &[u8]) -> Fingerprint {
        Fingerprint::of_certificate(seed)
    }

    #[test]
    fn entries_are_appended_and_found_by_the_server_as_typed() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("p2pchat").join("known_servers");
        let mut known = KnownServers::load(&path).unwrap();
        assert_eq!(known.find("LocalHost:12000"), None);
        let first = known
            .add("LocalHost:12000", None, fingerprint(b"a"))
            .unwrap();
        assert_eq!(first.line, 1);
        let second = known
            .add(
                "127.0.0.1:12000",
                Some("127.0.0.1:12000"),
                fingerprint(b"b"),
            )
            .unwrap();
        assert_eq!(second.line, 2);
        let known = KnownServers::load(&path).unwrap();
        assert_eq!(known.find("localhost:12000"), Some(&first));
        assert_eq!(known.find("127.0.0.1:12000"), Some(&second));
        assert_eq!(known.find("127.0.0.1:12001"), None);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!(
                "localhost:12000 {}\n127.0.0.1:12000 {}\n",
                fingerprint(b"a"),
                fingerprint(b"b")
            )
        );
    }

    #[test]
    fn comments_are_skipped_and_a_bad_line_is_named() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("known_servers");
        fs::write(
            &path,
            format!("# mine\n\nhost:1 {}\nhost:2 oops", fingerprint(b"a")),
        )
        .unwrap();
        let error = KnownServers::load(&path).unwrap_err();
        assert!(
            matches!(error, KnownServersError::BadLine { line: 4, .. }),
            "{error}"
        );
        fs::write(&path, format!("# mine\n\nhost:1 {}", fingerprint(b"a"))).unwrap();
        let mut known = KnownServers::load(&path).unwrap();
        assert_eq!(known.find("host:1").unwrap().line, 3);
        // The last line had no newline: the new entry still gets a line of its own.
        assert_eq!(
            known.add("host:2", None, fingerprint(b"b")).unwrap().line,
            4
        );
        assert_eq!(
            KnownServers::load(&path)
                .unwrap()
                .find("host:2")
                .unwrap()
                .line,
            4
        );
    }

    #[test]
    fn forgetting_a_server_removes_its_lines_only_and_keeps_the_file_private() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("known_servers");
        let text = format!(
            "# mine\nhost:1 {a}\nother:1 {b}\n\nHOST:1 {b}\nlast:1 {a}",
            a = fingerprint(b"a"),
            b = fingerprint(b"b")
        );
        fs::write(&path, &text).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let removed = forget(&path, "Host:1").unwrap();
        assert_eq!(
            removed.iter().map(|e| e.line).collect::<Vec<_>>(),
            [2, 5],
            "{removed:?}"
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!(
                "# mine\nother:1 {b}\n\nlast:1 {a}",
                a = fingerprint(b"a"),
                b = fingerprint(b"b")
            )
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
        // Nothing left of it: nothing removed, the file untouched, and no file made.
        assert_eq!(forget(&path, "host:1").unwrap(), []);
        assert_eq!(forget(&dir.path().join("none"), "host:1").unwrap(), []);
        assert!(!dir.path().join("none").exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no file left behind"
        );
    }

    #[test]
    fn the_address_is_recorded_beside_the_name_and_found_under_any_spelling() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("known_servers");
        let mut known = KnownServers::load(&path).unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:12000".parse().unwrap();
        assert_eq!(address_key(mapped), "127.0.0.1:12000");
        let v6: SocketAddr = "[::1]:12000".parse().unwrap();
        assert_eq!(address_key(v6), "[::1]:12000");
        let entry = known
            .add(
                "LocalHost:12000",
                Some(&address_key(mapped)),
                fingerprint(b"a"),
            )
            .unwrap();
        assert_eq!(entry.address.as_deref(), Some("127.0.0.1:12000"));
        let known = KnownServers::load(&path).unwrap();
        assert_eq!(known.find("localhost:12000"), Some(&entry));
        assert_eq!(
            known.find("127.0.0.1:12000"),
            None,
            "a name is not an address"
        );
        assert_eq!(
            known.at_address("127.0.0.1:12000").collect::<Vec<_>>(),
            [&entry]
        );
        assert_eq!(known.at_address("127.0.0.1:12001").count(), 0);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("localhost:12000,127.0.0.1:12000 {}\n", fingerprint(b"a"))
        );
        // Forgetting the address forgets what was recorded at it.
        assert_eq!(forget(&path, "127.0.0.1:12000").unwrap(), [entry]);
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        fs::write(&path, format!("h:1, {}\n", fingerprint(b"a"))).unwrap();
        assert!(matches!(
            KnownServers::load(&path),
            Err(KnownServersError::BadLine { line: 1, .. })
        ));
    }

    #[test]
    fn a_file_someone_else_could_have_written_is_refused() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("known_servers");
        let refused = |path: &Path| match KnownServers::load(path) {
            Err(KnownServersError::Exposed { exposure }) => exposure,
            other => panic!("{other:?}"),
        };
        // A link at its path: neither read nor appended to, even when it leads nowhere yet.
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert_eq!(
            refused(&path),
            Exposure::NotAFile {
                path: path.clone(),
                link: true
            }
        );
        let mut known = KnownServers {
            path: path.clone(),
            entries: Vec::new(),
            lines: 0,
        };
        assert!(known.add("h:1", None, fingerprint(b"a")).is_err());
        assert!(!target.exists(), "nothing written through the link");
        fs::remove_file(&path).unwrap();
        fs::write(&path, format!("h:1 {}\n", fingerprint(b"a"))).unwrap();
        for mode in [0o666, 0o620, 0o602] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                refused(&path),
                Exposure::Writable {
                    path: path.clone(),
                    mode
                }
            );
            assert!(refused(&path).to_string().contains("chmod go-w"));
        }
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        assert!(KnownServers::load(&path).is_ok());
        fs::set_permissions(dir.path(), Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            refused(&path),
            Exposure::FolderWritable { mode: 0o777, .. }
        ));
        // A sticky folder (like /tmp): others cannot replace the file.
        fs::set_permissions(dir.path(), Permissions::from_mode(0o1777)).unwrap();
        assert!(KnownServers::load(&path).is_ok());
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn a_folder_its_group_may_write_is_refused_unless_sticky() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("known_servers");
        fs::write(&path, format!("h:1 {}\n", fingerprint(b"a"))).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(dir.path(), Permissions::from_mode(0o770)).unwrap();
        match KnownServers::load(&path) {
            Err(KnownServersError::Exposed { exposure }) => {
                assert_eq!(
                    exposure,
                    Exposure::FolderWritable {
                        folder: dir.path().into(),
                        mode: 0o770
                    }
                );
                assert!(exposure.to_string().contains("chmod go-w"), "{exposure}");
            }
            other => panic!("{other:?}"),
        }
        let mut known = KnownServers {
            path: path.clone(),
            entries: Vec::new(),
            lines: 1,
        };
        assert!(known.add("h:2", None, fingerprint(b"b")).is_err());
        assert!(forget(&path, "h:1").is_err());
        // Sticky, the group cannot replace the file; 0750 gives it no write access.
        for mode in [0o1770, 0o750] {
            fs::set_permissions(dir.path(), Permissions::from_mode(mode)).unwrap();
            assert!(KnownServers::load(&path).is_ok(), "{mode:o}");
        }
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
    }
}
