//! What survives a restart of the client: the transfers' records, one file per account,
//! `$XDG_DATA_HOME/p2pchat/transfers-NAME.json` (else `~/.local/share/p2pchat/…`), mode 0600 in
//! a 0700 folder. The sender keeps each outgoing offer (the path, size and modification time of
//! the file, the recipient, the id) so that it serves the same file, unchanged, after a restart;
//! the receiver keeps each transfer it accepted (the sender, the id, the offered name and size,
//! the download folder), and finds its partial file again through the engine
//! ([`Partial::open_existing`](crate::transfer::Partial::open_existing)). An offer received but
//! not answered is never written: nothing is kept on the receiver's side before it accepts.
//!
//! The file is replaced whole (a temporary file beside it, synced, renamed over it), so a crash
//! leaves the old records or the new ones, never half. A file that does not read is set aside
//! with a warning, never a reason not to chat. No key and no password is ever in it.

use std::fs::{self, DirBuilder};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::client::transfer_event::Direction;
use crate::protocol::file::TransferId;

/// The version of the file's layout.
const VERSION: u32 = 1;

/// One transfer as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) transfer: TransferId,
    pub(crate) direction: Direction,
    /// The peer's name as the server spelled it.
    pub(crate) peer: String,
    /// The name offered.
    pub(crate) name: String,
    pub(crate) size: u64,
    /// Outgoing: the file's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<PathBuf>,
    /// Outgoing: the file's modification time at the offer, in nanoseconds since 1970.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) modified_ns: Option<u128>,
    /// Incoming: the download folder its partial file is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) folder: Option<PathBuf>,
    /// When it was offered, in seconds since 1970: when an unanswered offer lapses.
    pub(crate) offered_at: u64,
    /// Whether the offer was accepted.
    pub(crate) accepted: bool,
}

#[derive(Serialize, Deserialize)]
struct Layout {
    version: u32,
    transfers: Vec<Record>,
}

/// The records' file of one account.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    path: PathBuf,
}

/// Seconds since 1970 (0 for a clock before it).
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A modification time as stored, and back.
pub(crate) fn to_nanos(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}

pub(crate) fn from_nanos(nanos: u128) -> SystemTime {
    let secs = (nanos / 1_000_000_000) as u64;
    let rest = (nanos % 1_000_000_000) as u32;
    UNIX_EPOCH + Duration::new(secs, rest)
}

impl Store {
    /// The file for `account`, from the environment's `XDG_DATA_HOME` and `HOME`; `None` without
    /// either (nothing then survives a restart).
    pub(crate) fn for_account(account: &str) -> Option<Store> {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Store::in_folder(
            var("XDG_DATA_HOME").as_deref(),
            var("HOME").as_deref(),
            account,
        )
    }

    /// The file for `account` under an XDG data folder, else under the home folder.
    pub(crate) fn in_folder(
        xdg_data_home: Option<&Path>,
        home: Option<&Path>,
        account: &str,
    ) -> Option<Store> {
        let base = match (xdg_data_home, home) {
            (Some(data), _) if data.is_absolute() => data.to_path_buf(),
            (_, Some(home)) => home.join(".local/share"),
            _ => return None,
        };
        let file = format!("transfers-{}.json", account.to_ascii_lowercase());
        Some(Store {
            path: base.join("p2pchat").join(file),
        })
    }

    #[cfg(test)]
    fn path(&self) -> &Path {
        &self.path
    }

    /// The records on disk: none when there is no file yet.
    ///
    /// # Errors
    /// The file exists but could not be read or does not parse: it is renamed aside
    /// (`….bad`) so the next save does not lose it silently, and the error says so.
    pub(crate) fn load(&self) -> Result<Vec<Record>, StoreError> {
        let text = match fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        match serde_json::from_slice::<Layout>(&text) {
            Ok(layout) if layout.version == VERSION => Ok(layout.transfers),
            _ => {
                let aside = self.path.with_extension("json.bad");
                let _ = fs::rename(&self.path, &aside);
                Err(StoreError::Unreadable {
                    path: self.path.clone(),
                    aside,
                })
            }
        }
    }

    /// Replaces the records on disk with `records` (see the module's header).
    ///
    /// # Errors
    /// The folder, the temporary file, the write, the sync or the rename failed.
    pub(crate) fn save(&self, records: &[Record]) -> Result<(), StoreError> {
        let failed = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        let folder = self.path.parent().unwrap_or(Path::new("."));
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(failed)?;
        let layout = Layout {
            version: VERSION,
            transfers: records.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&layout).expect("records always serialize");
        // tempfile creates it 0600, exclusively, under a random name.
        let mut temporary = tempfile::NamedTempFile::new_in(folder).map_err(failed)?;
        temporary.write_all(&bytes).map_err(failed)?;
        temporary.as_file().sync_all().map_err(failed)?;
        temporary.persist(&self.path).map_err(|e| failed(e.error))?;
        Ok(())
    }
}

/// Why the records could not be read or written; the text names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("could not read the file transfers' records {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the file transfers' records {} do not read; set aside as {}", .path.display(), .aside.display())]
    Unreadable { path: PathBuf, aside: PathBuf },
    #[error("could not write the file transfers' records {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn record() -> Record {
        Record {
            transfer: TransferId([7; 16]),
            direction: Direction::Out,
            peer: "bob".into(),
            name: "report.pdf".into(),
            size: 5,
            path: Some("/tmp/report.pdf".into()),
            modified_ns: Some(1_700_000_000_123_456_789),
            folder: None,
            offered_at: 1_700_000_000,
            accepted: true,
        }
    }

    #[test]
    fn records_survive_a_save_and_a_load_in_a_private_file() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::in_folder(None, Some(home.path()), "Alice").unwrap();
        assert!(store
            .path()
            .ends_with(".local/share/p2pchat/transfers-alice.json"));
        assert_eq!(store.load().unwrap(), []);
        store.save(&[record()]).unwrap();
        assert_eq!(store.load().unwrap(), [record()]);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(mode(store.path().parent().unwrap()), 0o700);
        assert_eq!(from_nanos(to_nanos(from_nanos(42))), from_nanos(42));
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_said() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::in_folder(Some(data.path()), None, "bob").unwrap();
        fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        fs::write(store.path(), b"{not json").unwrap();
        let error = store.load().unwrap_err();
        assert!(matches!(error, StoreError::Unreadable { .. }), "{error}");
        assert!(store.path().with_extension("json.bad").exists());
        assert_eq!(store.load().unwrap(), []);
    }
}
