//! The known-servers file: the fingerprint of every server this user has trusted, one line per
//! server, `HOST:PORT SHA256:…` — SSH's `known_hosts`, for p2pchat servers.
//!
//! A server is known by the `--server` text as typed (lowercased: host names are not case
//! sensitive) plus its port, so `localhost:12000` and `127.0.0.1:12000` are two entries, as they
//! are two names in SSH. Blank lines and lines starting with `#` are ignored; any other line
//! that is not `HOST:PORT SHA256:…` is an error naming the file and the line, rather than a
//! server silently forgotten. Lines are appended when a server is trusted, and removed only by
//! [`forget`] (`p2pchat-client --forget`, OpenSSH's `ssh-keygen -R`), which writes the rest to a
//! new file and renames it over the old one, so the file is never seen half written. Where the
//! file lives by default is [`default_path`]. This module never decides whether to trust a
//! server.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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

/// Why the file could not be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KnownServersError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot record the server in {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot remove the server from {}: {source}", .path.display())]
    Rewrite { path: PathBuf, source: io::Error },
    #[error("{}, line {line}: expected HOST:PORT SHA256:…, found {text:?}", .path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

/// One trusted server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub server: String,
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
    /// The file cannot be read, or has a line that is not an entry.
    pub fn load(path: &Path) -> Result<Self, KnownServersError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(KnownServersError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
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
            entries.push(Entry {
                server: key(server),
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

    /// Appends `server` with `fingerprint` (creating the folder, mode 0700, and the file, mode
    /// 0600, if needed) and returns the new entry.
    ///
    /// # Errors
    /// The folder or the file cannot be created or written.
    pub fn add(
        &mut self,
        server: &str,
        fingerprint: Fingerprint,
    ) -> Result<Entry, KnownServersError> {
        let write_error = |source| KnownServersError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(folder) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(folder)
                .map_err(write_error)?;
        }
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(&self.path)
            .map_err(write_error)?;
        // A file whose last line has no newline (edited by hand) gets one first.
        let text = fs::read(&self.path).map_err(write_error)?;
        let mut line = format!("{} {fingerprint}\n", key(server));
        if text.last().is_some_and(|&b| b != b'\n') {
            line.insert(0, '\n');
        }
        file.write_all(line.as_bytes()).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        self.lines += 1;
        let entry = Entry {
            server: key(server),
            fingerprint,
            line: self.lines,
        };
        self.entries.push(entry.clone());
        Ok(entry)
    }
}

/// The file's mode: only its owner reads or writes the servers they trust.
const FILE_MODE: u32 = 0o600;

/// Removes every line of `server` (as typed, port included) from the file at `path`, keeping
/// every other line as it was, and returns the entries removed (none if the server was not
/// there; the file is then left untouched). The rest goes to a new file beside it (mode 0600,
/// written and flushed to disk) renamed over the old one, so a crash leaves the old file or the
/// new one, never a mix.
///
/// # Errors
/// The file cannot be read, has a line that is not an entry, or cannot be replaced.
pub fn forget(path: &Path, server: &str) -> Result<Vec<Entry>, KnownServersError> {
    let known = KnownServers::load(path)?;
    let key = key(server);
    let removed: Vec<Entry> = known
        .entries
        .into_iter()
        .filter(|entry| entry.server == key)
        .collect();
    if removed.is_empty() {
        return Ok(removed);
    }
    let rewrite_error = |source| KnownServersError::Rewrite {
        path: path.into(),
        source,
    };
    let text = fs::read_to_string(path).map_err(|source| KnownServersError::Read {
        path: path.into(),
        source,
    })?;
    let gone: BTreeSet<usize> = removed.iter().map(|entry| entry.line).collect();
    let kept: String = text
        .split_inclusive('\n')
        .enumerate()
        .filter(|(index, _)| !gone.contains(&(index + 1)))
        .map(|(_, line)| line)
        .collect();
    let folder = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(folder) => folder,
        None => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(folder).map_err(rewrite_error)?;
    file.as_file()
        .set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(rewrite_error)?;
    file.write_all(kept.as_bytes()).map_err(rewrite_error)?;
    file.as_file().sync_all().map_err(rewrite_error)?;
    file.persist(path).map_err(|e| rewrite_error(e.error))?;
    // The rename itself reaches the disk with the folder.
    fs::File::open(folder)
        .and_then(|folder| folder.sync_all())
        .map_err(rewrite_error)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let first = known.add("LocalHost:12000", fingerprint(b"a")).unwrap();
        assert_eq!(first.line, 1);
        let second = known.add("127.0.0.1:12000", fingerprint(b"b")).unwrap();
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
        assert_eq!(known.add("host:2", fingerprint(b"b")).unwrap().line, 4);
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
}
