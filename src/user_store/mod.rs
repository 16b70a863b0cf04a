//! Accounts: the [`UserStore`], which registers and verifies users, and its errors.
//!
//! The store keeps every account in memory and on disk in two files: the users file (JSON, the
//! snapshot) and, beside it, the users journal ([`journal`]). A registration appends one record
//! to the journal and makes it durable (fdatasync) before it is reported as successful, at a
//! cost that does not grow with the number of accounts. A compaction folds the journal into the
//! users file: the whole file replaced atomically (write a temporary file in the same folder,
//! fsync it, rename it over the old one, fsync the folder: [`file::replace`]), then the journal
//! removed (and the folder fsync'd). It happens at start (a crash left records), when the journal
//! holds [`journal::MAX_RECORDS`], once registrations pause ([`compactor`], started by the
//! server), and at a graceful shutdown; at rest the users file is the only file. A re-hash
//! replaces the users file whole, which folds the journal in too. It never keeps or writes a
//! plain password.
//!
//! Two locks, so that a login never waits for the disk: the accounts (a read-write lock, held
//! for a lookup, a copy or an insertion, never across a file operation) and the writer (a mutex
//! held through each append and each rewrite, so that they happen one at a time and in order). A
//! registration appends holding only the writer's lock, then inserts the account; a compaction
//! renders the users file under the writer's lock and a read lock of the accounts (only holders
//! of the writer's lock ever change them, so logins, which read, go on). A login checks the file
//! for a change by hand only when no write is in progress (the write checks it itself).
//!
//! Its methods block (scrypt takes a few hundred milliseconds at the default cost; fsync waits for
//! the disk): async callers run them with [`crate::runtime::spawn_blocking`].
//!
//! Changes by hand: the store remembers the users file's [`FileStamp`] as of its own last read or
//! write. Before each write and each login it compares: a file changed since (an administrator's
//! editor, a restore) is read again, with a warning naming it, so that nothing made by hand is
//! overwritten, and the journal's records not yet folded in are added to it, with a warning
//! naming them (so an account registered in the last moments before a hand edit is kept even if
//! the edit dropped it, and the administrator learns which); a changed file that no longer parses is never written over (registrations are
//! refused with a storage failure until it is fixed; logins go on with the accounts last read).
//! Nothing stops an edit saved between our check and our rename (there is no lock an editor
//! would honour); that window is one write long.
//!
//! Look-alike names: a name is refused when its [`skeleton`] is an existing account's (`aIice`
//! beside `alice`); see [`crate::rules::LOOK_ALIKE`]. An index by skeleton makes that check O(1). A file
//! that already holds two look-alikes loads, with a warning; both log in as before.
//!
//! Who else could replace the file: [`UserStore::open_with`] looks at the file's owner and its
//! folders' owners and modes ([`folder`]) and refuses or warns.
//!
//! Costs: every hash carries its own scrypt cost. A stored hash whose cost is outside the allowed
//! range ([`HashCost::check_range`]) is never verified, since checking it could take gigabytes; a
//! stored hash weaker than the store's current cost is re-hashed at the current cost when its
//! owner next logs in, so old accounts converge to the current cost.
//!
//! The parts, each usable alone:
//! - [`crate::rules`] (shared with the client): the username and password rules, and the key that
//!   makes names unique;
//! - [`cost`]: scrypt costs, their allowed range and defaults, hashing, checking, the dummy hash;
//! - [`file`](mod@file): the users file's layout, its atomic durable write, its stamp, clean-up
//!   and warnings;
//! - [`journal`]: the registrations not yet folded into the users file, one checked record a line;
//! - [`compactor`]: the thread that folds the journal in once registrations pause;
//! - [`folder`]: whether anyone but the server's user could replace the users file;
//! - `index`: the accounts in memory, by name and by skeleton;
//! - [`error`]: why a login, a registration or opening the store failed.

pub mod compactor;
pub mod cost;
pub mod error;
pub mod file;
pub mod folder;
mod index;
pub mod journal;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};
use std::time::{Duration, Instant};

pub use crate::rules::{
    skeleton, validate_password, validate_username, PasswordError, UsernameError, LOOK_ALIKE,
    MAX_PASSWORD_BYTES, MAX_USERNAME_CHARS, MIN_PASSWORD_CHARS,
};
pub use compactor::Compactor;
pub use cost::{
    scrypt_params, CostOutOfRange, HashCost, HashingError, InvalidCost, StoredHashError,
    UnusableHash, DEFAULT_LOG_N, DEFAULT_P, DEFAULT_R, MAX_HASH_MEMORY_BYTES, MAX_LOG_N, MAX_P,
    MAX_R, MIN_LOG_N, MIN_P, MIN_R,
};
pub use error::{AuthError, ChangedFileError, StorageError, StoreError, UnsafeFile};
pub use file::{FileStamp, InvalidUsersFile, StoredUser, UnresolvableLink};
pub use folder::Exposure;

use crate::rules::name_key;
use cost::{check_password, dummy_hash, hash_password, usable_cost};
use file::{Accounts, Durability, Fsync};
use index::{check_free, warn_about_look_alikes, Index};
use journal::AppendError;

/// What the writer knows of the users file as of its own last read or write, and of the journal.
struct Writer {
    /// The file's stamp then; `None` after a failed write left it unknown (read it again).
    stamp: Option<FileStamp>,
    /// The last complaint about a changed file that could not be read back, so that logins
    /// do not log it again and again.
    complained: Option<String>,
    journal: JournalState,
}

/// The journal since the last compaction.
#[derive(Default)]
struct JournalState {
    /// Open once the first record since the last compaction is appended.
    appender: Option<journal::Appender>,
    /// The records in it, in memory too: a users file read again gets them added
    /// (at most [`journal::MAX_RECORDS`]).
    records: Vec<StoredUser>,
    /// An append (or a removal) failed: the journal may end in part of a record, or hold records
    /// already in the users file. Nothing is appended to it before a compaction removes it.
    broken: bool,
    /// When a compaction of the full journal last failed: the next is not tried before
    /// [`journal::FULL_RETRY_INTERVAL`] has passed.
    full_compaction_failed: Option<Instant>,
}

impl JournalState {
    /// Whether a compaction has anything to do.
    fn is_empty(&self) -> bool {
        self.appender.is_none() && self.records.is_empty() && !self.broken
    }
}

/// A failed [`UserStore::write_snapshot`].
struct SnapshotFailure {
    /// Whether the users file was replaced all the same (a later step failed).
    replaced: bool,
    error: StorageError,
}

/// Reads and checks the journal at `journal_path` that a crash, or a compaction that failed, left
/// behind, if there is one; warns about a torn last record.
fn read_journal(journal_path: &Path) -> Result<Option<journal::Replay>, StoreError> {
    let bytes = match journal::read(journal_path) {
        Ok(None) => return Ok(None),
        Ok(Some(bytes)) => bytes,
        Err(error) => {
            return Err(StoreError::UnreadableJournal {
                path: journal_path.to_path_buf(),
                error,
            })
        }
    };
    let replay = journal::parse(&bytes).map_err(|reason| StoreError::InvalidJournal {
        path: journal_path.to_path_buf(),
        reason,
    })?;
    if let Some(torn) = &replay.torn {
        log::warn!(
            "users journal {}: its last record (line {}, {} bytes) is incomplete ({}): a \
             registration cut short by a crash, never acknowledged; ignored",
            journal_path.display(),
            torn.line,
            torn.bytes,
            torn.why
        );
    }
    Ok(Some(replay))
}

/// Adds the journal's records to `users` (read from the users file at `path`), naming in a
/// warning the accounts it adds: after a crash they are registrations not yet folded in, but an
/// account removed from the users file by hand while its record was still in the journal comes
/// back too, and the administrator must be told.
fn add_journal(path: &Path, journal_path: &Path, replay: &journal::Replay, users: &mut Accounts) {
    let added = journal::apply(&replay.records, users);
    if added.is_empty() {
        log::info!(
            "users journal {}: {} record(s), all in users file {} already; removing it",
            journal_path.display(),
            replay.records.len(),
            path.display()
        );
    } else {
        log::warn!(
            "users journal {}: {} record(s); it adds {} account(s) that users file {} does not \
             hold: {added:?} (registrations not yet folded in when the server stopped, or \
             accounts removed from the users file by hand since: to remove one, edit the file \
             again now that the journal is folded into it)",
            journal_path.display(),
            replay.records.len(),
            added.len(),
            path.display()
        );
    }
}

/// The accounts, in memory and on disk.
pub struct UserStore {
    /// The users file; if the path given to [`UserStore::open`] was a symbolic link, its target.
    path: PathBuf,
    /// The journal beside it ([`journal::path_for`]).
    journal_path: PathBuf,
    /// What the compaction thread waits for ([`compactor`]).
    activity: compactor::Activity,
    params: scrypt::Params,
    /// The cost of `params`.
    cost: HashCost,
    /// The accounts; held for a lookup or an insertion, never across a file operation.
    index: RwLock<Index>,
    /// Held while the file is read again or changed so that changes happen one at a time and
    /// in order; only ever locked on blocking threads.
    writer: Mutex<Writer>,
    /// A hash at the current cost that no password matches, verified when the user is unknown
    /// or the stored hash is out of range; see [`dummy_hash`].
    dummy_hash: String,
    /// How the journal and the users file reach the disk: [`Fsync`]; tests make it fail.
    durability: Box<dyn Durability + Send + Sync>,
    /// [`journal::FULL_RETRY_INTERVAL`]; tests make it longer than they run.
    full_retry_interval: Duration,
}

impl UserStore {
    /// Opens the users file at `path`, creating it (mode 0600) if it is missing. A file that
    /// exists but cannot be read, is not valid JSON of the expected shape, holds an invalid name
    /// or hash, or holds the same name twice is refused and left untouched.
    ///
    /// Logs a warning, and still opens the file, when:
    /// - `path` is a symbolic link: the store reads and rewrites the link's target, resolved once
    ///   here (so a link changed later cannot redirect the server's writes), and the link stays;
    /// - the file can be read or written by group or others (it holds password hashes); every
    ///   rewrite makes it 0600 again;
    /// - an account's stored hash has a cost outside the allowed range: that account cannot log
    ///   in (see [`UserStore::verify`]), everyone else can.
    ///
    /// Removes the temporary files that writes interrupted by a crash left beside the file (they
    /// hold password hashes too), reads the file, then reads the journal a crash left beside it, if
    /// any ([`journal`]), before a missing users file is created: its whole records are added (a
    /// warning names the accounts they add), a torn last record is ignored with a warning, and the
    /// journal is folded into the file at once. A damaged journal (a bad record before whole ones),
    /// or one that is a link, not a regular file or someone else's, is refused and left untouched,
    /// and a missing users file is then not created.
    ///
    /// - two accounts have look-alike names ([`skeleton`]): both log in, no third is let in.
    ///
    /// Warnings rather than refusals: none of these makes the file wrong, and refusing to start
    /// would lock every user out over one entry or one `chmod`; the administrator reads the log.
    ///
    /// Refuses the file when someone other than the server's user and root could replace it
    /// ([`folder::exposures`]): that is not a slip in the file but a way into every account.
    pub fn open(path: &Path, params: scrypt::Params) -> Result<UserStore, StoreError> {
        UserStore::open_with(path, params, UnsafeFile::Refuse)
    }

    /// [`UserStore::open`], choosing what to do when someone else could replace the file.
    pub fn open_with(
        path: &Path,
        params: scrypt::Params,
        unsafe_file: UnsafeFile,
    ) -> Result<UserStore, StoreError> {
        let io_error = |error| StoreError::Io {
            path: path.to_path_buf(),
            error,
        };
        let target = file::resolve_symlink(path).map_err(|error| StoreError::UnresolvableLink {
            path: path.to_path_buf(),
            error,
        })?;
        let exposures = folder::exposures(&target);
        let refused: Vec<Exposure> = exposures
            .iter()
            .filter(|e| e.is_refused())
            .cloned()
            .collect();
        if !refused.is_empty() && unsafe_file == UnsafeFile::Refuse {
            return Err(StoreError::Exposed {
                path: path.to_path_buf(),
                exposures: refused,
            });
        }
        for exposure in &exposures {
            log::warn!("users file {}: {exposure}", path.display());
        }
        // Before any write of ours: a leftover is never one of this process's files.
        file::remove_leftover_temporary_files(&target);
        let found = match file::read(&target) {
            Ok((bytes, stamp)) => {
                let users = file::parse(&bytes).map_err(|reason| StoreError::Invalid {
                    path: path.to_path_buf(),
                    reason,
                })?;
                Some((users, stamp))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(e)),
        };
        let journal_path = journal::path_for(&target);
        // Before a missing users file is created: a journal refused leaves the folder as it was.
        let replay = read_journal(&journal_path)?;
        let (mut users, stamp) = match found {
            Some(found) => found,
            None => {
                let empty = Accounts::new();
                let json = file::render(&empty).map_err(io_error)?;
                let stamp = file::replace(&target, &json, &Fsync)
                    .map_err(|failure| io_error(failure.error))?;
                (empty, stamp)
            }
        };
        if let Some(replay) = &replay {
            add_journal(path, &journal_path, replay, &mut users);
        }
        let replayed = replay.is_some();
        file::warn_if_exposed(path, &target);
        warn_about_look_alikes(path, &users);
        let cost = HashCost::of_params(&params);
        let store = UserStore {
            path: target,
            journal_path,
            activity: compactor::Activity::default(),
            params,
            cost,
            index: RwLock::new(Index::new(users)),
            writer: Mutex::new(Writer {
                stamp: Some(stamp),
                complained: None,
                // A journal found here is folded in below: the compaction must not skip it.
                journal: JournalState {
                    broken: replayed,
                    ..JournalState::default()
                },
            }),
            dummy_hash: dummy_hash(&cost),
            durability: Box::new(Fsync),
            full_retry_interval: journal::FULL_RETRY_INTERVAL,
        };
        if replayed {
            store.compact().map_err(|error| StoreError::Compaction {
                path: path.to_path_buf(),
                error,
            })?;
        }
        for (username, why) in store.out_of_range_accounts() {
            log::warn!(
                "users file {}: account {username:?} has a password hash outside the allowed cost \
                 ({why}); its logins are refused until the entry is removed and the account \
                 registered again",
                path.display()
            );
        }
        let weaker = store.weaker_accounts();
        if weaker > 0 {
            log::info!(
                "users file {}: {weaker} account(s) have password hashes below the current cost \
                 {cost}; each is re-hashed at its next login",
                path.display()
            );
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many accounts there are.
    pub fn len(&self) -> usize {
        self.read().accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates an account; returns the username as stored. Returns only once the account is on
    /// disk. Blocks: hashes the password and writes the file.
    pub fn register(&self, username: &str, password: &str) -> Result<String, AuthError> {
        validate_username(username).map_err(AuthError::InvalidUsername)?;
        validate_password(password).map_err(AuthError::InvalidPassword)?;
        let key = name_key(username);
        // Cheap early answer; checked again under the writer's lock, after the slow hash.
        check_free(&self.read(), username)?;
        let password_hash = self.hash(password)?;
        let mut writer = self.writer();
        // A change by hand comes first: its accounts, then this registration.
        self.reread_if_changed(&mut writer)
            .map_err(AuthError::Storage)?;
        check_free(&self.read(), username)?;
        if writer.journal.broken {
            self.compact_locked(&mut writer)
                .map_err(|failure| AuthError::Storage(failure.error))?;
        }
        let user = StoredUser {
            username: username.to_string(),
            password_hash,
        };
        // One record appended and synced, under the writer's lock only: logins go on reading
        // the accounts meanwhile.
        match self.append(&mut writer, &user) {
            Ok(()) => {}
            Err(AppendError::Io(error)) => {
                self.forget_failed_append(&mut writer);
                return Err(AuthError::Storage(StorageError::Write {
                    path: self.journal_path.clone(),
                    error,
                }));
            }
            Err(AppendError::Unlinked) => return self.save_after_unlinked(&mut writer, key, user),
        }
        self.write().insert(key, user.clone());
        writer.journal.records.push(user);
        if writer.journal.records.len() >= journal::MAX_RECORDS {
            self.compact_full_journal(&mut writer);
        }
        drop(writer);
        self.activity.appended();
        Ok(username.to_string())
    }

    /// Appends `user`'s record to the journal, creating it first if there is none; a failure
    /// leaves the journal broken until a compaction removes it.
    fn append(&self, writer: &mut Writer, user: &StoredUser) -> Result<(), AppendError> {
        let journal = &mut writer.journal;
        let durability = &*self.durability;
        let result = (|| {
            if journal.appender.is_none() {
                journal.appender = Some(
                    journal::Appender::create(&self.journal_path, durability)
                        .map_err(AppendError::Io)?,
                );
            }
            let appender = journal.appender.as_mut().expect("just made");
            appender.append(&journal::render_record(user), durability)
        })();
        if result.is_err() {
            journal.broken = true;
        }
        result
    }

    /// After an append that failed (the registration is answered `storage_failure`), makes sure
    /// that no crash brings its record back: the write may have reached the journal and its cut
    /// is not durable. Folds the journal in at once, from memory (which lacks the record), and so
    /// removes it; if that fails, makes the cut durable. The journal stays broken (nothing is
    /// appended to it) until a compaction removes it.
    fn forget_failed_append(&self, writer: &mut Writer) {
        let Err(failure) = self.compact_locked(writer) else {
            return;
        };
        log::error!(
            "could not fold the users journal into the users file after a failed append: {}",
            failure.error
        );
        if let Some(appender) = &writer.journal.appender {
            if let Err(error) = appender.sync_cut(&*self.durability) {
                log::error!(
                    "users journal {}: could not make the removal of a failed append durable \
                     either ({error}): after a crash the account it was for may be there",
                    self.journal_path.display()
                );
            }
        }
    }

    /// `user`'s record reached a journal that something else had removed
    /// ([`AppendError::Unlinked`]): it would not survive a restart, nor would the records
    /// appended since. Saves every account this server knows, `user` included, by a compaction
    /// from memory before answering; if that fails, the registration fails, and `user` is
    /// forgotten unless the users file was replaced with it all the same.
    fn save_after_unlinked(
        &self,
        writer: &mut Writer,
        key: String,
        user: StoredUser,
    ) -> Result<String, AuthError> {
        log::warn!(
            "users journal {} was removed by something other than this server (another server \
             started on users file {}?); folding this server's accounts into the users file now",
            self.journal_path.display(),
            self.path.display()
        );
        let username = user.username.clone();
        // The file has no name: nothing more goes into it.
        writer.journal.appender = None;
        writer.journal.broken = true;
        self.write().insert(key.clone(), user.clone());
        writer.journal.records.push(user);
        match self.compact_locked(writer) {
            Ok(()) => Ok(username),
            Err(failure) => {
                if !failure.replaced {
                    self.write().remove(&key);
                    writer
                        .journal
                        .records
                        .retain(|other| name_key(&other.username) != key);
                }
                Err(AuthError::Storage(failure.error))
            }
        }
    }

    /// Folds the full journal into the users file (the registration that filled it pays), unless
    /// the last try failed less than [`journal::FULL_RETRY_INTERVAL`] ago: while a compaction
    /// keeps failing (a full disk), registrations go on appending without each rewriting the whole
    /// file under the writer's lock. The registration is durable already: a failure is only logged.
    fn compact_full_journal(&self, writer: &mut Writer) {
        let retry_after = writer.journal.full_compaction_failed;
        if retry_after.is_some_and(|at| at.elapsed() < self.full_retry_interval) {
            return;
        }
        if let Err(failure) = self.compact_locked(writer) {
            log::error!(
                "could not fold the full users journal into the users file: {}; trying again in \
                 {:?} at the earliest",
                failure.error,
                self.full_retry_interval
            );
            writer.journal.full_compaction_failed = Some(Instant::now());
        }
    }

    /// Folds the journal into the users file (see the module's header) if it holds anything.
    /// Blocks: waits for the writer's lock, then writes and syncs the whole file.
    pub fn compact(&self) -> Result<(), StorageError> {
        let mut writer = self.writer();
        self.compact_locked(&mut writer)
            .map_err(|failure| failure.error)
    }

    /// [`UserStore::compact`] with the writer's lock held.
    fn compact_locked(&self, writer: &mut Writer) -> Result<(), SnapshotFailure> {
        if writer.journal.is_empty() {
            return Ok(());
        }
        let unreplaced = |error| SnapshotFailure {
            replaced: false,
            error,
        };
        // A change by hand comes first: its accounts, then the journal's.
        self.reread_if_changed(writer).map_err(unreplaced)?;
        // Rendered under a read lock, not from a copy: only holders of the writer's lock (us)
        // change the accounts, and logins only read.
        let json = file::render(&self.read().accounts).map_err(|error| {
            unreplaced(StorageError::Write {
                path: self.path.clone(),
                error,
            })
        })?;
        self.write_snapshot(writer, &json)
    }

    /// Replaces the users file with `json` ([`file::replace`]), which must hold every account in
    /// memory, then removes the journal, whose records are all in it. Afterwards the writer
    /// knows the file if it was replaced, even when the folder's fsync then failed.
    fn write_snapshot(&self, writer: &mut Writer, json: &[u8]) -> Result<(), SnapshotFailure> {
        let result = file::replace(&self.path, json, &*self.durability);
        let replaced = match &result {
            Ok(stamp) => Some(*stamp),
            Err(failure) => failure.replaced,
        };
        if let Some(stamp) = replaced {
            writer.stamp = Some(stamp);
        }
        if let Err(failure) = result {
            return Err(SnapshotFailure {
                replaced: replaced.is_some(),
                error: StorageError::Write {
                    path: self.path.clone(),
                    error: failure.error,
                },
            });
        }
        // A crash between the rename and the removal leaves records that the next start finds in
        // the users file already, and skips. Kept open until it is gone: a failed append's cut
        // may still have to be synced (`forget_failed_append`).
        writer.journal.records.clear();
        writer.journal.broken = true;
        journal::remove(&self.journal_path, &*self.durability).map_err(|error| {
            SnapshotFailure {
                replaced: true,
                error: StorageError::Write {
                    path: self.journal_path.clone(),
                    error,
                },
            }
        })?;
        writer.journal = JournalState::default();
        Ok(())
    }

    /// Whether a registration could take `username` now: valid, not taken, not like an existing
    /// name. Hashes nothing and writes nothing (the answer to `check_name`); a registration
    /// checks again.
    pub fn check_name(&self, username: &str) -> Result<(), AuthError> {
        validate_username(username).map_err(AuthError::InvalidUsername)?;
        check_free(&self.read(), username)
    }

    /// The cost of new hashes.
    pub fn cost(&self) -> HashCost {
        self.cost
    }

    /// The accounts whose stored hash has a cost outside the allowed range, with the reason.
    pub fn out_of_range_accounts(&self) -> Vec<(String, UnusableHash)> {
        self.read()
            .accounts
            .values()
            .filter_map(|user| {
                usable_cost(&user.password_hash)
                    .err()
                    .map(|why| (user.username.clone(), why))
            })
            .collect()
    }

    /// How many accounts have a stored hash weaker than the current cost.
    fn weaker_accounts(&self) -> usize {
        self.read()
            .accounts
            .values()
            .filter(|user| {
                cost::stored_cost(&user.password_hash)
                    .is_ok_and(|cost| cost.is_weaker_than(&self.cost))
            })
            .count()
    }

    /// Checks a login; returns the username as registered (`ALICE` logs in as `alice`). Unknown
    /// users and wrong passwords give the same error after the same work. Blocks: verifies scrypt.
    ///
    /// An account whose stored hash is out of range gets the same error after the same work as
    /// an unknown user (its hash is never verified), and an error in the log.
    ///
    /// A successful login whose stored hash is weaker than the current cost re-hashes the
    /// password at the current cost and rewrites the file (one more hash and write, once per
    /// account); if that fails, the failure is logged and the login still succeeds.
    pub fn verify(&self, username: &str, password: &str) -> Result<String, AuthError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::BadCredentials);
        }
        let key = name_key(username);
        // A write in progress checks for a change by hand itself: a login does not wait for it.
        let writer = match self.writer.try_lock() {
            Ok(writer) => Some(writer),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(mut writer) = writer {
            // A change by hand that cannot be read back leaves the accounts as last read.
            if let Err(error) = self.reread_if_changed(&mut writer) {
                let complaint = error.to_string();
                if writer.complained.as_ref() != Some(&complaint) {
                    log::error!("users file {complaint}");
                    writer.complained = Some(complaint);
                }
            }
        }
        let user = self.read().accounts.get(&key).cloned();
        let Some(user) = user else {
            let _ = check_password(password, &self.dummy_hash);
            return Err(AuthError::BadCredentials);
        };
        let cost = match usable_cost(&user.password_hash) {
            Ok(cost) => cost,
            Err(why) => {
                let _ = check_password(password, &self.dummy_hash);
                log::error!(
                    "login as {:?} refused: its stored password hash is out of range ({why}); \
                     remove the entry from {} so that the account can be registered again",
                    user.username,
                    self.path.display()
                );
                return Err(AuthError::BadCredentials);
            }
        };
        if !check_password(password, &user.password_hash) {
            return Err(AuthError::BadCredentials);
        }
        if cost.is_weaker_than(&self.cost) {
            self.rehash(&key, &user, cost, password);
        }
        Ok(user.username)
    }

    /// Replaces `user`'s stored hash (at `old` cost) with one at the current cost and rewrites
    /// the file. Failures are logged, never returned: the login they follow has succeeded.
    fn rehash(&self, key: &str, user: &StoredUser, old: HashCost, password: &str) {
        let new_hash = match self.hash(password) {
            Ok(hash) => hash,
            Err(e) => {
                log::error!("could not re-hash the password of {:?}: {e}", user.username);
                return;
            }
        };
        let mut writer = self.writer();
        if let Err(error) = self.reread_if_changed(&mut writer) {
            log::error!(
                "could not save the re-hashed password of {:?}: {error}",
                user.username
            );
            return;
        }
        // A change of an entry is a whole rewrite: once per account, when the cost goes up.
        let mut all = self.read().accounts.clone();
        match all.get_mut(key) {
            // Unchanged since the check (a concurrent login may have re-hashed it already).
            Some(stored) if stored.password_hash == user.password_hash => {
                stored.password_hash = new_hash.clone();
            }
            _ => return,
        }
        // The whole file, with the journal's records (they are in memory): a compaction too.
        let result = file::render(&all)
            .map_err(|error| SnapshotFailure {
                replaced: false,
                error: StorageError::Write {
                    path: self.path.clone(),
                    error,
                },
            })
            .and_then(|json| self.write_snapshot(&mut writer, &json));
        // Keep memory equal to the file: once the rename happened, the file has it.
        if result.as_ref().map_or_else(|f| f.replaced, |_| true) {
            if let Some(stored) = self.write().accounts.get_mut(key) {
                stored.password_hash = new_hash;
            }
        }
        match result {
            Ok(()) => {
                log::info!(
                    "re-hashed the password of {:?} from {old} to {} in {}",
                    user.username,
                    self.cost,
                    self.path.display()
                );
            }
            Err(failure) => {
                log::error!(
                    "could not save the re-hashed password of {:?}: {}; the account keeps its \
                     {old} hash for now",
                    user.username,
                    failure.error
                );
            }
        }
    }

    fn hash(&self, password: &str) -> Result<String, AuthError> {
        hash_password(password, self.params)
            .map_err(|e| AuthError::Storage(StorageError::Hashing(e)))
    }

    /// Reads the users file again if it is not the version last read or written (see the
    /// module's header): a warning naming the file, then its accounts replace the ones in
    /// memory. A changed file that cannot be read back is an error and memory stays as it was.
    fn reread_if_changed(&self, writer: &mut Writer) -> Result<(), StorageError> {
        let changed = |why| StorageError::ChangedFile {
            path: self.path.clone(),
            why,
        };
        match file::stamp(&self.path) {
            Ok(stamp) if Some(stamp) == writer.stamp => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(changed(ChangedFileError::Unreadable(e))),
        }
        let (bytes, stamp) =
            file::read(&self.path).map_err(|e| changed(ChangedFileError::Unreadable(e)))?;
        let mut accounts =
            file::parse(&bytes).map_err(|e| changed(ChangedFileError::Invalid(e)))?;
        let kept = journal::apply(&writer.journal.records, &mut accounts);
        if !kept.is_empty() {
            // Usually registrations of the last moments, never in the file; but an account
            // removed by hand while its record was still in the journal is among them.
            log::warn!(
                "users file {}: {} account(s) it does not hold are kept from the users journal \
                 (registered since the journal was last folded in, or removed by hand while \
                 still in it): {kept:?}; to remove one, edit the file again once the journal is \
                 folded in",
                self.path.display(),
                kept.len()
            );
        }
        let index = Index::new(accounts);
        {
            let current = &self.read().accounts;
            let added = index
                .accounts
                .keys()
                .filter(|k| !current.contains_key(*k))
                .count();
            let removed = current
                .keys()
                .filter(|k| !index.accounts.contains_key(*k))
                .count();
            if writer.stamp.is_some() {
                log::warn!(
                    "users file {} was changed by something other than this server since it last \
                     read or wrote it; read it again ({} accounts: {added} new, {removed} gone, \
                     the rest as they are in the file now)",
                    self.path.display(),
                    index.accounts.len()
                );
            } else {
                log::warn!(
                    "users file {}: read again after a write that failed ({} accounts: {added} \
                     new, {removed} gone)",
                    self.path.display(),
                    index.accounts.len()
                );
            }
        }
        warn_about_look_alikes(&self.path, &index.accounts);
        *self.write() = index;
        writer.stamp = Some(stamp);
        writer.complained = None;
        Ok(())
    }

    // A panic while holding a lock leaves the accounts as they were before or after one whole
    // change, so the data is still usable: poisoning is ignored.

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::Ordering;

    use super::*;

    fn cheap() -> scrypt::Params {
        scrypt_params(4, 8, 1).unwrap()
    }

    fn cost(log_n: u8, r: u32, p: u32) -> HashCost {
        HashCost { log_n, r, p }
    }

    #[test]
    fn register_then_verify_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        assert_eq!(store.register("Alice", "correct horse"), Ok("Alice".into()));
        assert_eq!(
            store.register("alice", "other pass"),
            Err(AuthError::NameTaken)
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let reopened = UserStore::open(&path, cheap()).unwrap();
        assert_eq!(
            reopened.verify("ALICE", "correct horse"),
            Ok("Alice".into())
        );
        assert_eq!(
            reopened.verify("alice", "wrong horse"),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            reopened.verify("nobody", "correct horse"),
            Err(AuthError::BadCredentials)
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("correct horse"));
        assert!(text.contains("$scrypt$ln=4,r=8,p=1$"));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn an_invalid_file_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let cases: [&[u8]; 5] = [
            b"{not json",
            b"{\"version\":1,\"users\":[{\"username\":\"a b\",\"password_hash\":\"x\"}]}",
            b"{\"version\":1,\"users\":[{\"username\":\"ab\",\"password_hash\":\"plain\"}]}",
            b"{\"version\":9,\"users\":[]}",
            b"[]",
        ];
        for bytes in cases {
            fs::write(&path, bytes).unwrap();
            let err = match UserStore::open(&path, cheap()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(bytes)),
            };
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert_eq!(fs::read(&path).unwrap(), bytes);
        }
    }

    #[test]
    fn a_failed_write_registers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        fs::remove_dir_all(dir.path()).unwrap();
        assert!(matches!(
            store.register("carol", "password-1"),
            Err(AuthError::Storage(_))
        ));
        assert!(store.is_empty());
    }
    #[test]
    fn the_dummy_hash_is_at_the_current_cost_and_matches_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("users.json"), cheap()).unwrap();
        assert_eq!(usable_cost(&store.dummy_hash), Ok(cost(4, 8, 1)));
        for password in ["", "not-a-password-of-anyone", "correct horse"] {
            assert!(!check_password(password, &store.dummy_hash));
        }
    }

    /// A file with `alice` (password `alice-password`) at ln=4 and `huge` with a hash whose
    /// cost (ln=40: 1 PiB) must never be computed.
    fn file_with_an_out_of_range_account(path: &Path) {
        let store = UserStore::open(path, cheap()).unwrap();
        store.register("alice", "alice-password").unwrap();
        store.register("huge", "huge-password").unwrap();
        let mut users = store.read().accounts.clone();
        let huge = users.get_mut("huge").unwrap();
        huge.password_hash = huge.password_hash.replace("$ln=4,", "$ln=40,");
        file::write(path, &users, &Fsync).unwrap();
    }

    #[test]
    fn an_out_of_range_stored_hash_is_loaded_but_never_verified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        file_with_an_out_of_range_account(&path);
        let store = UserStore::open(&path, cheap()).unwrap();
        let flagged = store.out_of_range_accounts();
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        assert_eq!(flagged[0].0, "huge");
        assert!(flagged[0].1.to_string().contains("ln=40"), "{flagged:?}");
        // Verifying ln=40 would try to allocate 2^50 bytes and abort the test.
        assert_eq!(
            store.verify("huge", "huge-password"),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(store.verify("alice", "alice-password"), Ok("alice".into()));
    }

    #[test]
    fn a_weaker_hash_is_rehashed_at_login_and_others_are_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let old = UserStore::open(&path, cheap()).unwrap();
        old.register("alice", "alice-password").unwrap();
        old.register("bob", "bob-password").unwrap();
        old.compact().unwrap();
        let before = read_hashes(&path);
        let stronger = scrypt_params(5, 8, 1).unwrap();
        let store = UserStore::open(&path, stronger).unwrap();
        assert_eq!(
            store.verify("alice", "wrong-password"),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            read_hashes(&path),
            before,
            "a failed login re-hashes nothing"
        );
        assert_eq!(store.verify("alice", "alice-password"), Ok("alice".into()));
        let after = read_hashes(&path);
        assert!(after[0].starts_with("$scrypt$ln=5,r=8,p=1$"), "{after:?}");
        assert_eq!(after[1], before[1]);
        assert_eq!(store.verify("alice", "alice-password"), Ok("alice".into()));
        assert_eq!(read_hashes(&path), after, "re-hashed once only");
        let reopened = UserStore::open(&path, stronger).unwrap();
        assert_eq!(
            reopened.verify("ALICE", "alice-password"),
            Ok("alice".into())
        );
        assert_eq!(
            reopened.verify("alice", "bob-password"),
            Err(AuthError::BadCredentials)
        );
    }

    #[test]
    fn a_failed_rehash_write_keeps_the_old_hash_and_the_login_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        UserStore::open(&path, cheap())
            .unwrap()
            .register("alice", "alice-password")
            .unwrap();
        let store = UserStore::open(&path, scrypt_params(5, 8, 1).unwrap()).unwrap();
        fs::remove_dir_all(dir.path()).unwrap();
        assert_eq!(store.verify("alice", "alice-password"), Ok("alice".into()));
        let hash = store.read().accounts["alice"].password_hash.clone();
        assert_eq!(cost::stored_cost(&hash), Ok(cost(4, 8, 1)));
    }

    #[test]
    fn opening_removes_the_temporary_files_of_interrupted_writes_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        UserStore::open(&path, cheap()).unwrap();
        for name in [
            ".users.json.tmp.12345",
            ".users.json.tmp.x",
            ".other.json.tmp.1",
        ] {
            fs::write(dir.path().join(name), b"{}").unwrap();
        }
        UserStore::open(&path, cheap()).unwrap();
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".other.json.tmp.1", "users.json"]);
    }

    /// A name added by hand since the last write is taken: the file is read again before the
    /// registration is decided (the early check, from memory, cannot know it).
    #[test]
    fn a_name_added_by_hand_is_taken_and_a_look_alike_of_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        store.register("alice", "alice-password").unwrap();
        let mut by_hand = store.read().accounts.clone();
        let mut carol = by_hand["alice"].clone();
        carol.username = "Carol".into();
        by_hand.insert(name_key("Carol"), carol);
        file::write(&path, &by_hand, &Fsync).unwrap();
        assert_eq!(
            store.register("carol", "carol-password"),
            Err(AuthError::NameTaken)
        );
        assert_eq!(
            store.register("CAR0L", "carol-password"),
            Err(AuthError::NameTooSimilar {
                existing: "Carol".into()
            })
        );
        assert_eq!(store.verify("carol", "alice-password"), Ok("Carol".into()));
        assert_eq!(store.len(), 2);
    }

    /// A measurement, not a check (docs/security.md quotes it): the look-alike check's cost per
    /// registration with 10,000 accounts (an index lookup; it was a scan of every account). Run with
    /// `cargo test --release --lib look_alike_scan -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn look_alike_scan_of_ten_thousand_accounts() {
        let accounts: Accounts = (0..10_000)
            .map(|i| {
                let username = format!("user{i:05}");
                let user = StoredUser {
                    username: username.clone(),
                    password_hash: String::new(),
                };
                (name_key(&username), user)
            })
            .collect();
        let index = Index::new(accounts);
        const ROUNDS: u32 = 100;
        let start = std::time::Instant::now();
        for _ in 0..ROUNDS {
            assert_eq!(check_free(&index, "newcomer"), Ok(()));
        }
        eprintln!(
            "look-alike check over {} accounts: {:?} per registration",
            index.accounts.len(),
            start.elapsed() / ROUNDS
        );
    }

    /// A login does not wait for a write of the users file: with the writer's lock held (as
    /// through a registration's write and fsync), a login still answers.
    #[test]
    fn a_login_does_not_wait_for_a_write_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(UserStore::open(&dir.path().join("users.json"), cheap()).unwrap());
        store.register("alice", "alice-password").unwrap();
        let writing = store.writer();
        let (done, answer) = std::sync::mpsc::channel();
        let login = {
            let store = store.clone();
            std::thread::spawn(move || done.send(store.verify("alice", "alice-password")).unwrap())
        };
        let verified = answer.recv_timeout(std::time::Duration::from_secs(30));
        drop(writing);
        login.join().unwrap();
        assert_eq!(
            verified,
            Ok(Ok("alice".into())),
            "the login waited for the writer"
        );
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn names_in_file(path: &Path) -> Vec<String> {
        let users = file::parse(&fs::read(path).unwrap()).unwrap();
        users.into_values().map(|u| u.username).collect()
    }

    /// A registration is durable in the journal (the users file is not rewritten); a compaction
    /// folds it in and removes the journal; with nothing to fold in, a compaction writes nothing.
    #[test]
    fn a_registration_goes_to_the_journal_and_a_compaction_folds_it_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        let empty = fs::read(&path).unwrap();
        store.register("alice", "alice-password").unwrap();
        store.register("Bob", "bob-password").unwrap();
        assert_eq!(fs::read(&path).unwrap(), empty);
        assert_eq!(files_in(dir.path()), ["users.json", "users.json.journal"]);
        let replay =
            journal::parse(&fs::read(dir.path().join("users.json.journal")).unwrap()).unwrap();
        assert_eq!(replay.records.len(), 2);
        store.compact().unwrap();
        assert_eq!(files_in(dir.path()), ["users.json"]);
        assert_eq!(names_in_file(&path), ["alice", "Bob"]);
        let stamp = file::stamp(&path).unwrap();
        store.compact().unwrap();
        assert_eq!(file::stamp(&path).unwrap(), stamp, "rewritten for nothing");
        store.register("carol", "carol-password").unwrap();
        assert_eq!(store.verify("carol", "carol-password"), Ok("carol".into()));
        assert_eq!(store.len(), 3);
    }

    /// A store that ends without a compaction (a crash) leaves its records in the journal: the
    /// next open folds them in, and a torn record after them (a crash in the middle of an
    /// append, never acknowledged) is ignored.
    #[test]
    fn opening_folds_in_the_journal_a_crash_left_and_ignores_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let journal = journal::path_for(&path);
        let store = UserStore::open(&path, cheap()).unwrap();
        store.register("alice", "alice-password").unwrap();
        store.register("bob", "bob-password").unwrap();
        drop(store);
        let mut bytes = fs::read(&journal).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&journal::render_record(&StoredUser {
            username: "carol".into(),
            password_hash: "$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        }));
        bytes.truncate(whole + 40);
        bytes.extend_from_slice(&[0; 64]);
        fs::write(&journal, &bytes).unwrap();
        let store = UserStore::open(&path, cheap()).unwrap();
        assert_eq!(files_in(dir.path()), ["users.json"]);
        assert_eq!(names_in_file(&path), ["alice", "bob"]);
        assert_eq!(store.verify("bob", "bob-password"), Ok("bob".into()));
        assert_eq!(store.len(), 2);
    }

    /// A crash between a compaction's rename and the journal's removal leaves records that
    /// are in the users file already: skipped, nothing doubled.
    #[test]
    fn records_already_in_the_users_file_are_not_added_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let journal = journal::path_for(&path);
        let store = UserStore::open(&path, cheap()).unwrap();
        store.register("alice", "alice-password").unwrap();
        let records = fs::read(&journal).unwrap();
        store.compact().unwrap();
        drop(store);
        fs::write(&journal, records).unwrap();
        let store = UserStore::open(&path, cheap()).unwrap();
        assert_eq!(names_in_file(&path), ["alice"]);
        assert_eq!(store.len(), 1);
        assert_eq!(files_in(dir.path()), ["users.json"]);
    }

    /// A damaged record with whole ones after it: the store refuses to open, naming the journal
    /// and the line, and leaves both files as they are.
    #[test]
    fn a_damaged_journal_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let journal = journal::path_for(&path);
        let store = UserStore::open(&path, cheap()).unwrap();
        for name in ["alice", "bob", "carol"] {
            store.register(name, "a-password").unwrap();
        }
        drop(store);
        let mut bytes = fs::read(&journal).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second..second + 10].fill(0);
        fs::write(&journal, &bytes).unwrap();
        let users = fs::read(&path).unwrap();
        let error = match UserStore::open(&path, cheap()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened a damaged journal"),
        };
        assert!(
            error.starts_with(&format!(
                "users journal {} is not valid: line 2: ",
                journal.display()
            )),
            "{error}"
        );
        assert_eq!(fs::read(&journal).unwrap(), bytes);
        assert_eq!(fs::read(&path).unwrap(), users);
    }

    /// A hand edit of the users file while records wait in the journal: read again, with the
    /// journal's records added; the compaction keeps both.
    #[test]
    fn a_hand_edit_is_read_again_with_the_journals_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        store.register("alice", "alice-password").unwrap();
        let mut by_hand = Accounts::new();
        let mut dave = store.read().accounts["alice"].clone();
        dave.username = "dave".into();
        by_hand.insert(name_key("dave"), dave);
        file::write(&path, &by_hand, &Fsync).unwrap();
        assert_eq!(store.verify("dave", "alice-password"), Ok("dave".into()));
        assert_eq!(store.verify("alice", "alice-password"), Ok("alice".into()));
        store.compact().unwrap();
        assert_eq!(names_in_file(&path), ["alice", "dave"]);
    }

    /// The compaction thread folds the journal in once registrations pause, without being
    /// asked; finishing it folds in what is left.
    #[test]
    fn the_compactor_folds_the_journal_in_once_registrations_pause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = std::sync::Arc::new(UserStore::open(&path, cheap()).unwrap());
        let compactor = store.start_compactor().unwrap();
        store.register("alice", "alice-password").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while files_in(dir.path()) != ["users.json"] {
            assert!(std::time::Instant::now() < deadline, "never folded in");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(names_in_file(&path), ["alice"]);
        // Stopped before the pause ends: finishing folds bob in.
        store.register("bob", "bob-password").unwrap();
        compactor.finish();
        assert_eq!(files_in(dir.path()), ["users.json"]);
        assert_eq!(names_in_file(&path), ["alice", "bob"]);
    }

    /// A measurement, not a check (docs/performance.md quotes it): a registration (append and
    /// fdatasync) and a compaction with 100,000 accounts, and a registration that waits behind a
    /// compaction. Run with
    /// `cargo test --release --lib journal_and_compaction_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn journal_and_compaction_cost_at_a_hundred_thousand_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let hash = hash_password("a-password", cheap()).unwrap();
        let accounts: Accounts = (0..100_000)
            .map(|i| {
                let username = format!("u{i}");
                let user = StoredUser {
                    username: username.clone(),
                    password_hash: hash.clone(),
                };
                (name_key(&username), user)
            })
            .collect();
        file::write(&path, &accounts, &Fsync).unwrap();
        let store = std::sync::Arc::new(UserStore::open(&path, cheap()).unwrap());
        let mut appends = Vec::new();
        let mut compactions = Vec::new();
        let mut behind = Vec::new();
        for round in 0..10 {
            let start = std::time::Instant::now();
            store
                .register(&format!("new{round}"), "a-password")
                .unwrap();
            appends.push(start.elapsed());
            let start = std::time::Instant::now();
            store.compact().unwrap();
            compactions.push(start.elapsed());
            // A registration sent while a compaction runs.
            store
                .register(&format!("more{round}"), "a-password")
                .unwrap();
            let compacting = {
                let store = store.clone();
                std::thread::spawn(move || store.compact().unwrap())
            };
            while store.writer.try_lock().is_ok() && !compacting.is_finished() {
                std::thread::yield_now();
            }
            let start = std::time::Instant::now();
            store
                .register(&format!("late{round}"), "a-password")
                .unwrap();
            behind.push(start.elapsed());
            compacting.join().unwrap();
        }
        for (what, mut times) in [
            ("registration (hash at ln=4, append, fdatasync)", appends),
            ("compaction", compactions),
            ("registration behind a compaction", behind),
        ] {
            times.sort();
            eprintln!(
                "{what} at 100,000 accounts: median {:?}, max {:?}",
                times[times.len() / 2],
                times[times.len() - 1]
            );
        }
    }

    /// The warnings and errors logged by every test of this binary (a logger is global): a test
    /// picks its own by the path of its folder.
    static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.level() <= log::Level::Warn
        }
        fn log(&self, record: &log::Record) {
            if self.enabled(record.metadata()) {
                let line = record.args().to_string();
                LOGGED.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        }
        fn flush(&self) {}
    }

    /// Starts capturing warnings (before the test does what it checks the log of).
    fn capture_warnings() {
        static CAPTURE: Capture = Capture;
        if log::set_logger(&CAPTURE).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    }

    /// The warnings logged since [`capture_warnings`] that mention `dir`.
    fn warnings_about(dir: &Path) -> Vec<String> {
        let dir = dir.display().to_string();
        let logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
        logged
            .iter()
            .filter(|l| l.contains(&dir))
            .cloned()
            .collect()
    }

    /// A disk that fails on demand, for the store's [`Durability`]: the journal's data syncs
    /// (`fail_data` of them, then they work again), or every sync of a new users file
    /// (`fail_users_file`). Records the journal's contents at each data sync and counts the
    /// users file's syncs (one per compaction that got as far as writing).
    #[derive(Default)]
    struct FlakyDisk {
        fail_data: std::sync::atomic::AtomicUsize,
        fail_users_file: std::sync::atomic::AtomicBool,
        data_syncs: Mutex<Vec<Vec<u8>>>,
        users_file_syncs: std::sync::atomic::AtomicUsize,
    }

    /// The store's handle on a [`FlakyDisk`] the test keeps too.
    struct Flaky(std::sync::Arc<FlakyDisk>);

    impl Durability for Flaky {
        fn sync_file(&self, file: &fs::File, path: &Path) -> io::Result<()> {
            self.0.users_file_syncs.fetch_add(1, Ordering::SeqCst);
            if self.0.fail_users_file.load(Ordering::SeqCst) {
                return Err(io::Error::other("the disk failed (users file)"));
            }
            Fsync.sync_file(file, path)
        }
        fn sync_data(&self, _file: &fs::File, path: &Path) -> io::Result<()> {
            self.0.data_syncs.lock().unwrap().push(fs::read(path)?);
            let failing = self.0.fail_data.load(Ordering::SeqCst);
            if failing > 0 {
                self.0.fail_data.store(failing - 1, Ordering::SeqCst);
                return Err(io::Error::other("the disk failed (journal)"));
            }
            Ok(())
        }
        fn sync_folder(&self, folder: &Path) -> io::Result<()> {
            Fsync.sync_folder(folder)
        }
    }

    /// A store on `path` whose disk is `disk`.
    fn store_on(path: &Path, disk: &std::sync::Arc<FlakyDisk>) -> UserStore {
        let mut store = UserStore::open(path, cheap()).unwrap();
        store.durability = Box::new(Flaky(disk.clone()));
        store
    }

    /// A second server started on the same users file (then stopped by a port in use) folds the
    /// first one's journal in and removes it. The first notices at its next append (the journal
    /// has no name any more) and saves every account it knows in the users file before it
    /// answers: nothing acknowledged lives only in a file with no name.
    #[test]
    fn a_journal_removed_by_another_server_is_noticed_and_the_registration_saved_before_ok() {
        capture_warnings();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let running = UserStore::open(&path, cheap()).unwrap();
        running.register("alice", "alice-password").unwrap();
        drop(UserStore::open(&path, cheap()).unwrap());
        assert_eq!(files_in(dir.path()), ["users.json"]);
        assert_eq!(running.register("bob", "bob-password"), Ok("bob".into()));
        // No compaction asked for: bob is in the users file already.
        assert_eq!(names_in_file(&path), ["alice", "bob"]);
        running.register("carol", "carol-password").unwrap();
        drop(running);
        let reopened = UserStore::open(&path, cheap()).unwrap();
        assert_eq!(reopened.verify("bob", "bob-password"), Ok("bob".into()));
        assert_eq!(
            reopened.verify("carol", "carol-password"),
            Ok("carol".into())
        );
        let warned = warnings_about(dir.path());
        assert!(
            warned
                .iter()
                .any(|w| w.contains("was removed by something other than this server")),
            "{warned:?}"
        );
    }

    /// The same, when the users file cannot be written either: the registration is refused and
    /// forgotten (the name is free, nothing logs in with it), and the next one goes through once
    /// the disk works.
    #[test]
    fn a_registration_into_a_removed_journal_that_cannot_be_saved_is_refused_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let disk = std::sync::Arc::new(FlakyDisk::default());
        let running = store_on(&path, &disk);
        running.register("alice", "alice-password").unwrap();
        drop(UserStore::open(&path, cheap()).unwrap());
        disk.fail_users_file.store(true, Ordering::SeqCst);
        assert!(matches!(
            running.register("bob", "bob-password"),
            Err(AuthError::Storage(_))
        ));
        assert_eq!(
            running.verify("bob", "bob-password"),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(running.check_name("bob"), Ok(()));
        disk.fail_users_file.store(false, Ordering::SeqCst);
        running.register("bob", "bob-password").unwrap();
        running.compact().unwrap();
        assert_eq!(names_in_file(&path), ["alice", "bob"]);
    }

    /// An append whose write reached the journal but whose fdatasync failed is answered
    /// `storage_failure`; its record must not come back after a crash. The journal is folded in
    /// at once from memory (without it) and removed; the next registration appends anew.
    #[test]
    fn a_failed_append_is_folded_out_at_once_so_that_no_crash_brings_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let disk = std::sync::Arc::new(FlakyDisk::default());
        let store = store_on(&path, &disk);
        store.register("alice", "alice-password").unwrap();
        disk.fail_data.store(1, Ordering::SeqCst);
        assert!(matches!(
            store.register("carol", "carol-password"),
            Err(AuthError::Storage(_))
        ));
        // What a crash now would find: the users file alone, without carol.
        assert_eq!(files_in(dir.path()), ["users.json"]);
        assert_eq!(names_in_file(&path), ["alice"]);
        store.register("dave", "dave-password").unwrap();
        drop(store);
        let reopened = UserStore::open(&path, cheap()).unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(
            reopened.verify("carol", "carol-password"),
            Err(AuthError::BadCredentials)
        );
    }

    /// When that fold fails too, the journal is cut back to its last whole record and the cut is
    /// synced (the last data sync sees the journal without the failed record).
    #[test]
    fn a_failed_append_that_cannot_be_folded_out_has_its_cut_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let disk = std::sync::Arc::new(FlakyDisk::default());
        let store = store_on(&path, &disk);
        store.register("alice", "alice-password").unwrap();
        let alice_only = fs::read(journal::path_for(&path)).unwrap();
        disk.fail_data.store(1, Ordering::SeqCst);
        disk.fail_users_file.store(true, Ordering::SeqCst);
        assert!(store.register("carol", "carol-password").is_err());
        let syncs = disk.data_syncs.lock().unwrap().clone();
        assert_eq!(syncs.last(), Some(&alice_only), "the cut was never synced");
        assert_eq!(fs::read(journal::path_for(&path)).unwrap(), alice_only);
        drop(store);
        let reopened = UserStore::open(&path, cheap()).unwrap();
        assert_eq!(reopened.len(), 1);
    }

    /// While a full journal's compaction keeps failing, registrations go on (durable in the
    /// journal) and the compaction is tried again once per interval, not by each of them.
    #[test]
    fn a_full_journal_whose_compaction_keeps_failing_is_retried_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let disk = std::sync::Arc::new(FlakyDisk::default());
        let mut store = store_on(&path, &disk);
        // Longer than the test: no retry is due while it runs.
        store.full_retry_interval = Duration::from_secs(3600);
        disk.fail_users_file.store(true, Ordering::SeqCst);
        for i in 0..journal::MAX_RECORDS + 5 {
            store.register(&format!("user{i}"), "a-password").unwrap();
        }
        assert_eq!(disk.users_file_syncs.load(Ordering::SeqCst), 1);
        // Once the interval has passed, the next registration tries again.
        store.full_retry_interval = Duration::ZERO;
        disk.fail_users_file.store(false, Ordering::SeqCst);
        store.register("last", "a-password").unwrap();
        assert_eq!(disk.users_file_syncs.load(Ordering::SeqCst), 2);
        assert_eq!(files_in(dir.path()), ["users.json"]);
        assert_eq!(names_in_file(&path).len(), journal::MAX_RECORDS + 6);
    }

    /// An account removed from the users file by hand while its record is still in the journal
    /// comes back; the administrator is told which, at a reread and at start.
    #[test]
    fn accounts_the_journal_adds_back_are_named_at_a_reread_and_at_start() {
        capture_warnings();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        store.register("alice", "alice-password").unwrap();
        store.register("bob", "bob-password").unwrap();
        let journal = fs::read(journal::path_for(&path)).unwrap();
        // A hand edit while alice and bob are still in the journal, holding only bob.
        let mut by_hand = store.read().accounts.clone();
        by_hand.remove("alice");
        file::write(&path, &by_hand, &Fsync).unwrap();
        assert_eq!(store.verify("bob", "bob-password"), Ok("bob".into()));
        let warned = warnings_about(dir.path());
        assert!(
            warned.iter().any(|w| w.contains("are kept from the users journal")
                && w.contains("[\"alice\"]")),
            "{warned:?}"
        );
        drop(store);
        // A crash between a compaction's rename and the journal's removal, then bob removed by
        // hand: the journal brings bob back at start, and says so.
        file::write(&path, &Accounts::new(), &Fsync).unwrap();
        let mut only_alice = Accounts::new();
        let alice = UserStore::open(&path, cheap()).unwrap();
        drop(alice);
        fs::write(journal::path_for(&path), &journal).unwrap();
        let replay = journal::parse(&journal).unwrap();
        only_alice.insert(name_key("alice"), replay.records[0].clone());
        file::write(&path, &only_alice, &Fsync).unwrap();
        let reopened = UserStore::open(&path, cheap()).unwrap();
        assert_eq!(reopened.len(), 2);
        let warned = warnings_about(dir.path());
        assert!(
            warned
                .iter()
                .any(|w| w.contains("it adds 1 account(s)") && w.contains("[\"bob\"]")),
            "{warned:?}"
        );
    }

    /// With no users file, a journal that is refused leaves the folder as it was found (the
    /// refusal says both files are left as they are): no users file is created.
    #[test]
    fn a_journal_refused_when_the_users_file_is_missing_creates_no_users_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let journal = journal::path_for(&path);
        let mut bytes = journal::render_record(&StoredUser {
            username: "alice".into(),
            password_hash: hash_password("a-password", cheap()).unwrap(),
        });
        let damaged = bytes.clone();
        bytes[2] = 0;
        bytes.extend_from_slice(&damaged);
        fs::write(&journal, &bytes).unwrap();
        let error = match UserStore::open(&path, cheap()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened a damaged journal"),
        };
        assert!(error.contains("left as they are"), "{error}");
        assert_eq!(files_in(dir.path()), ["users.json.journal"]);
        assert_eq!(fs::read(&journal).unwrap(), bytes);
    }

    /// The stored hashes, in name order.
    fn read_hashes(path: &Path) -> Vec<String> {
        let users = file::parse(&fs::read(path).unwrap()).unwrap();
        users.into_values().map(|u| u.password_hash).collect()
    }

    /// A users file written by the server with scrypt 0.11 opens and its accounts log in.
    #[test]
    fn a_file_written_by_the_earlier_scrypt_crate_opens_and_its_accounts_log_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/users-ln10.json");
        fs::copy(fixture, &path).unwrap();
        let store = UserStore::open(&path, scrypt_params(10, 8, 1).unwrap()).unwrap();
        assert_eq!(store.verify("alice", "alice-password"), Ok("alice".into()));
        assert_eq!(store.verify("bob", "bob-password"), Ok("Bob".into()));
        assert_eq!(
            store.verify("alice", "bob-password"),
            Err(AuthError::BadCredentials)
        );
    }

    /// The texts the server sends (and, for storage failures, logs) are unchanged.
    #[test]
    fn the_error_texts_are_the_ones_clients_and_logs_show() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        let text = |e: AuthError| e.to_string();
        assert_eq!(
            text(store.register("a b", "password-1").unwrap_err()),
            "invalid username: a username may hold only ASCII letters, digits, '_', '-' and '.', not ' '"
        );
        assert_eq!(
            text(store.register("carol", "short").unwrap_err()),
            "invalid password: a password has at least 8 characters"
        );
        store.register("carol", "password-1").unwrap();
        assert_eq!(
            text(store.register("Carol", "password-1").unwrap_err()),
            "that username is already registered"
        );
        assert_eq!(
            text(store.verify("carol", "password-2").unwrap_err()),
            "unknown user or wrong password"
        );
        fs::remove_dir_all(dir.path()).unwrap();
        let Err(AuthError::Storage(detail)) = store.register("dave", "password-1") else {
            panic!("registered without a folder");
        };
        assert_eq!(
            detail.to_string(),
            format!(
                "{}: changed since the server last read or wrote it, and cannot be read: No such \
                 file or directory (os error 2); nothing is written over it until it is fixed",
                path.display()
            )
        );
    }
}
