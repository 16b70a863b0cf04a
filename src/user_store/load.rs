//! Reading the users file and its journal into the store: at start ([`UserStore::open`]) and on
//! SIGHUP ([`UserStore::reload`]), with the warnings an administrator needs about what was read.

use std::io;
use std::path::Path;
use std::sync::{Mutex, RwLock};

use super::cost::{dummy_hash, stored_cost, usable_cost};
use super::file::{self, Accounts, Fsync};
use super::index::{warn_about_look_alikes, Index};
use super::{
    compactor, folder, journal, Exposure, HashCost, Journal, ReloadError, ReloadFailure,
    StoreError, UnsafeFile, UserStore, UsersLock, Writer,
};

impl UserStore {
    /// Opens the users file at `path` (created, mode 0600, if missing) and takes its lock
    /// ([`super::lock`]). Refused, and left untouched: a file that cannot be read or parsed (bad
    /// JSON, an invalid name or hash, a name twice); a damaged journal, or one that is a link, not
    /// a regular file or someone else's (and then a missing users file is not created); a file
    /// someone other than the server's user and root could replace ([`folder::exposures`]).
    ///
    /// Opened with a warning, since none makes the file wrong and refusing would lock everyone
    /// out: a symbolic link (its target, resolved once here, is read and written; the link
    /// stays); a file group or others may read or write; an account whose hash is out of range
    /// (it cannot log in); look-alike names (both log in, no third is let in).
    ///
    /// Removes the temporary files a crash left beside the file, then folds in the journal a
    /// crash left, if any: its whole records are added (a warning names them), a torn last one
    /// is ignored with a warning.
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
        // Before anything is read or written: no other server touches these files from here on.
        let lock = UsersLock::acquire(&target).map_err(|error| StoreError::Locked {
            path: path.to_path_buf(),
            error,
        })?;
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
                let stamp = file::write(&target, &empty, &Fsync)
                    .map_err(|failure| io_error(failure.error))?;
                (empty, stamp)
            }
        };
        if let Some(replay) = &replay {
            let added = journal::apply(&replay.records, &mut users);
            warn_about_journal(path, &journal_path, replay.records.len(), &added);
        }
        file::warn_if_exposed(path, &target);
        let cost = HashCost::of_params(&params);
        warn_about_accounts(path, &users, &cost);
        let store = UserStore {
            path: target,
            journal_path,
            _lock: lock,
            wakeup: compactor::Wakeup::default(),
            params,
            cost,
            index: RwLock::new(Index::new(users)),
            writer: Mutex::new(Writer {
                stamp,
                // A journal found here is folded in below: the compaction must not skip it.
                journal: Journal {
                    broken: replay.is_some(),
                    ..Journal::default()
                },
            }),
            dummy_hash: dummy_hash(&cost),
            durability: Box::new(Fsync),
        };
        store.compact().map_err(|error| StoreError::Compaction {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(store)
    }

    /// Reads the users file again (the server calls it on SIGHUP) and takes its accounts as they
    /// are now, logging what changed. The journal's records not yet folded in (registrations
    /// answered `ok`) are kept: those the file lacks are added, named in a warning, and folded in
    /// at once. A file that cannot be read or parsed is not loaded: the accounts last read stay,
    /// and writes stay refused until a reload works.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let mut writer = self.writer();
        let failed = |why| ReloadError {
            path: self.path.clone(),
            why,
        };
        let (bytes, stamp) =
            file::read(&self.path).map_err(|e| failed(ReloadFailure::Unreadable(e)))?;
        let mut accounts = file::parse(&bytes).map_err(|e| failed(ReloadFailure::Invalid(e)))?;
        let kept = journal::apply(&writer.journal.records, &mut accounts);
        {
            let before = &self.read().accounts;
            let names = |keys: &mut dyn Iterator<Item = &String>| -> Vec<String> {
                keys.map(|key| accounts.get(key).or(before.get(key)))
                    .filter_map(|user| user.map(|u| u.username.clone()))
                    .collect()
            };
            let added = names(&mut accounts.keys().filter(|k| !before.contains_key(*k)));
            let removed = names(&mut before.keys().filter(|k| !accounts.contains_key(*k)));
            let changed = names(
                &mut accounts
                    .keys()
                    .filter(|k| before.get(*k).is_some_and(|old| old != &accounts[*k])),
            );
            log::info!(
                "users file {}: read again, {} accounts; added {added:?}, removed {removed:?}, \
                 changed {changed:?}",
                self.path.display(),
                accounts.len()
            );
        }
        if !kept.is_empty() {
            log::warn!(
                "users file {}: {} account(s) it does not hold are kept from the users journal \
                 (registered since the journal was last folded in): {kept:?}; to remove one, \
                 edit the file again and send SIGHUP",
                self.path.display(),
                kept.len()
            );
        }
        warn_about_accounts(&self.path, &accounts, &self.cost);
        *self.write() = Index::new(accounts);
        writer.stamp = stamp;
        // The file now agrees with memory but for the journal's records: fold them in.
        if let Err(failure) = self.compact_locked(&mut writer) {
            log::error!(
                "could not fold the users journal into the users file after reading it again: {}",
                failure.error
            );
        }
        Ok(())
    }

    /// The accounts whose stored hash has a cost outside the allowed range, with the reason.
    pub fn out_of_range_accounts(&self) -> Vec<(String, super::UnusableHash)> {
        out_of_range(&self.read().accounts)
    }
}

fn out_of_range(accounts: &Accounts) -> Vec<(String, super::UnusableHash)> {
    let unusable = |user: &super::StoredUser| usable_cost(&user.password_hash).err();
    accounts
        .values()
        .filter_map(|user| unusable(user).map(|why| (user.username.clone(), why)))
        .collect()
}

/// Warns about what is worth an administrator's look in `accounts`, read from the users file at
/// `path`: look-alike names, hashes out of range, hashes weaker than `cost`.
fn warn_about_accounts(path: &Path, accounts: &Accounts, cost: &HashCost) {
    warn_about_look_alikes(path, accounts);
    for (username, why) in out_of_range(accounts) {
        log::warn!(
            "users file {}: account {username:?} has a password hash outside the allowed cost \
             ({why}); its logins are refused until the entry is removed and the account \
             registered again",
            path.display()
        );
    }
    let weaker = accounts
        .values()
        .filter(|user| stored_cost(&user.password_hash).is_ok_and(|c| c.is_weaker_than(cost)))
        .count();
    if weaker > 0 {
        log::info!(
            "users file {}: {weaker} account(s) have password hashes below the current cost \
             {cost}; each is re-hashed at its next login",
            path.display()
        );
    }
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

/// Names the accounts that a journal found at start adds to the users file at `path`: after a
/// crash they are registrations not yet folded in, but an account removed from the users file by
/// hand while its record was still in the journal comes back too, and the administrator must
/// be told.
fn warn_about_journal(path: &Path, journal_path: &Path, records: usize, added: &[&str]) {
    if added.is_empty() {
        log::info!(
            "users journal {}: {records} record(s), all in users file {} already; removing it",
            journal_path.display(),
            path.display()
        );
    } else {
        log::warn!(
            "users journal {}: {records} record(s); it adds {} account(s) that users file {} does \
             not hold: {added:?} (registrations not yet folded in when the server stopped, or \
             accounts removed from the users file by hand since: to remove one, edit the file \
             again now that the journal is folded into it)",
            journal_path.display(),
            added.len(),
            path.display()
        );
    }
}
