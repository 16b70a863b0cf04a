//! Why a login, a registration or opening the store failed: the server maps [`AuthError`] to a
//! protocol error code, the binary prints [`StoreError`]. The texts never contain a password.

use std::io;
use std::path::PathBuf;

use super::cost::HashingError;
use super::file::InvalidUsersFile;
use super::folder::{Exposure, UnresolvableLink};
use super::journal::{InvalidJournal, UnreadableJournal};
use super::lock::LockError;
use crate::rules::{PasswordError, UsernameError};

/// Why a login or registration failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password: deliberately one answer for both.
    #[error("unknown user or wrong password")]
    BadCredentials,
    #[error("that username is already registered")]
    NameTaken,
    /// The name looks like `existing`'s ([`crate::rules::skeleton`]); sent as `name_taken`.
    #[error("that username is too similar to an existing one ({existing:?}); choose another")]
    NameTooSimilar { existing: String },
    #[error("invalid username: {0}")]
    InvalidUsername(UsernameError),
    #[error("invalid password: {0}")]
    InvalidPassword(PasswordError),
    #[error("could not save the account: {0}")]
    Storage(#[from] StorageError),
}

/// Why an account could not be saved. Its text goes to the server's log, never to the client.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The file at `.0` (the users file or the journal) could not be written.
    #[error("{path}: {1}", path = .0.display())]
    Write(PathBuf, io::Error),
    #[error(transparent)]
    Hashing(#[from] HashingError),
    /// An edit by hand not yet read: never written over.
    #[error(
        "{path}: {1}; nothing is written over it until the server reads it again: once the file \
         is as it should be, send SIGHUP (kill -HUP {pid})",
        path = .0.display(),
        pid = std::process::id()
    )]
    ChangedFile(PathBuf, ChangedFileError),
}

/// How the users file differs from the version the server last read or wrote.
#[derive(Debug, thiserror::Error)]
pub enum ChangedFileError {
    #[error("changed since the server last read or wrote it")]
    Changed,
    #[error("cannot be looked at ({0})")]
    Unreadable(io::Error),
}

/// Why a SIGHUP did not load the users file: the accounts last read stay.
#[derive(Debug, thiserror::Error)]
#[error("users file {}: {why}; not loaded (the accounts last read stay)", path.display())]
pub struct ReloadError {
    pub path: PathBuf,
    pub why: ReloadFailure,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadFailure {
    #[error("cannot be read: {0}")]
    Unreadable(io::Error),
    #[error("is not valid: {0}")]
    Invalid(InvalidUsersFile),
}

/// The same variant and text (an [`io::Error`] has no equality of its own).
impl PartialEq for StorageError {
    fn eq(&self, other: &StorageError) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for StorageError {}

/// Why the users file could not be opened: each names the file (or its journal) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("users file {path}: {1}", path = .0.display())]
    Io(PathBuf, io::Error),
    #[error("users file {path}: {1}", path = .0.display())]
    UnresolvableLink(PathBuf, UnresolvableLink),
    #[error("users file {path} is not valid: {1}", path = .0.display())]
    Invalid(PathBuf, InvalidUsersFile),
    #[error("users journal {path}: {1}; refusing to start", path = .0.display())]
    UnreadableJournal(PathBuf, UnreadableJournal),
    #[error(
        "users journal {path} is not valid: {1}; refusing to start (it and the users file are left \
         as they are)",
        path = .0.display()
    )]
    InvalidJournal(PathBuf, InvalidJournal),
    #[error("users file {path}: {1}", path = .0.display())]
    Locked(PathBuf, LockError),
    #[error("users file {path}: could not fold the users journal into it: {1}", path = .0.display())]
    Compaction(PathBuf, StorageError),
    /// Someone other than the server's user (and root) could replace the file; only the refused
    /// exposures.
    #[error(
        "users file {path}: {exposures}; refusing to start (fix it, or start with \
         --allow-unsafe-users-file to go ahead with a warning)",
        path = .0.display(),
        exposures = .1.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Exposed(PathBuf, Vec<Exposure>),
}

/// What [`super::UserStore::open_with`] does when someone else could replace the users file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsafeFile {
    /// Refuse to open it (the default, like OpenSSH's `StrictModes`).
    Refuse,
    /// Open it, with a warning (`--allow-unsafe-users-file`).
    Allow,
}
