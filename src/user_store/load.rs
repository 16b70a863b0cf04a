//! Reading the users file and its journal into the store: at start ([`UserStore::open`]) and on
//! SIGHUP ([`UserStore::reload`]), with the warnings an administrator needs about what was read.

use std::path::Path;
use std::sync::{Mutex, RwLock};

use super::cost::{dummy_hash, stored_cost, usable_cost};
use super::file::{self, Accounts, Fsync};
use super::folder::{self, Exposure};
use super::journal::{self, Journal};
use super::lock::UsersLock;
use super::{
    compactor, HashCost, Index, ReloadError, ReloadFailure, StoreError, StoredUser, UnsafeFile,
    UserStore, Writer,
};
use crate::rules::skeleton;

impl UserStore {
    /// Opens the users file at `path` (created, mode 0600, if missing), takes its lock and folds
    /// in the journal a crash left. What is refused (the files are then left untouched) and what
    /// only warned about, because refusing would lock everyone out: docs/security.md (8).
    pub fn open(path: &Path, params: scrypt::Params) -> Result<UserStore, StoreError> {
        UserStore::open_with(path, params, UnsafeFile::Refuse)
    }

    /// [`UserStore::open`], choosing what to do when someone else could replace the file.
    pub fn open_with(
        path: &Path,
        params: scrypt::Params,
        unsafe_file: UnsafeFile,
    ) -> Result<UserStore, StoreError> {
        let named = || path.to_path_buf();
        let target =
            folder::resolve_symlink(path).map_err(|e| StoreError::UnresolvableLink(named(), e))?;
        let exposures = folder::exposures(&target);
        if unsafe_file == UnsafeFile::Refuse && exposures.iter().any(Exposure::is_refused) {
            let refused = exposures.into_iter().filter(Exposure::is_refused).collect();
            return Err(StoreError::Exposed(named(), refused));
        }
        for exposure in &exposures {
            log::warn!("users file {}: {exposure}", path.display());
        }
        // Before anything is read or written: no other server touches these files from here on.
        let lock = UsersLock::acquire(&target).map_err(|e| StoreError::Locked(named(), e))?;
        // Before any write of ours: a leftover is never one of this process's files.
        file::remove_leftover_temporary_files(&target);
        let found = match file::read(&target) {
            Ok((bytes, stamp)) => Some(file::parse(&bytes).map(|accounts| (accounts, stamp))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::Io(named(), e)),
        };
        let found = found
            .transpose()
            .map_err(|e| StoreError::Invalid(named(), e))?;
        let journal_path = journal::path_for(&target);
        // Before a missing users file is created: a journal refused leaves the folder as it was.
        let replay = read_journal(&journal_path)?;
        let (mut accounts, stamp) = match found {
            Some(found) => found,
            None => {
                let written = file::write(&target, &Accounts::new(), &Fsync);
                let stamp = written.map_err(|f| StoreError::Io(named(), f.error))?;
                (Accounts::new(), stamp)
            }
        };
        if let Some(replay) = &replay {
            add_journal(path, &journal_path, &replay.records, &mut accounts);
        }
        folder::warn_if_exposed(path, &target);
        let cost = HashCost::of_params(&params);
        warn_about_accounts(path, &accounts, &cost);
        let store = UserStore {
            path: target,
            _lock: lock,
            wakeup: compactor::Wakeup::default(),
            params,
            cost,
            index: RwLock::new(Index::new(accounts)),
            // A journal found here is folded in below: broken, so that the compaction cannot
            // skip it; kept aside then, not removed, if it is damaged.
            writer: Mutex::new(Writer {
                stamp,
                journal: match &replay {
                    Some(replay) => Journal::found(journal_path, replay),
                    None => Journal::new(journal_path, false),
                },
            }),
            dummy_hash: dummy_hash(&cost),
            durability: Box::new(Fsync),
        };
        store
            .compact()
            .map_err(|e| StoreError::Compaction(named(), e))?;
        Ok(store)
    }

    /// Reads the users file again (on SIGHUP) and takes its accounts as they are now, logging what
    /// changed. The journal's records not yet folded in (registrations answered `ok`) are kept
    /// and folded in at once. A file that cannot be read or parsed is not loaded: the accounts
    /// last read stay, and writes stay refused until a reload works.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let mut writer = self.writer();
        let failed = |why| ReloadError {
            path: self.path.clone(),
            why,
        };
        let (bytes, stamp) =
            file::read(&self.path).map_err(|e| failed(ReloadFailure::Unreadable(e)))?;
        let mut accounts = file::parse(&bytes).map_err(|e| failed(ReloadFailure::Invalid(e)))?;
        if !writer.journal.records.is_empty() {
            add_journal(
                &self.path,
                &writer.journal.path,
                &writer.journal.records,
                &mut accounts,
            );
        }
        log_changes(&self.path, &self.read().accounts, &accounts);
        warn_about_accounts(&self.path, &accounts, &self.cost);
        *self.write() = Index::new(accounts);
        writer.stamp = stamp;
        // The file now agrees with memory but for the journal's records: fold them in.
        if let Err(error) = self.compact_locked(&mut writer) {
            log::error!(
                "could not fold the users journal into the users file after reading it again: \
                 {error}"
            );
        }
        Ok(())
    }
}

/// Logs what a reload changed: the accounts added, removed and changed, by name.
fn log_changes(path: &Path, before: &Accounts, after: &Accounts) {
    let names = |of: &Accounts, pick: &dyn Fn(&String, &StoredUser) -> bool| -> Vec<String> {
        of.iter()
            .filter(|(key, user)| pick(key, user))
            .map(|(_, user)| user.username.clone())
            .collect()
    };
    let added = names(after, &|key, _| !before.contains_key(key));
    let removed = names(before, &|key, _| !after.contains_key(key));
    let changed = names(after, &|key, user| {
        before.get(key).is_some_and(|old| old != user)
    });
    log::info!(
        "users file {}: read again, {} accounts; added {added:?}, removed {removed:?}, changed \
         {changed:?}",
        path.display(),
        after.len()
    );
}

/// Warns about what is worth an administrator's look in `accounts`, read from the users file at
/// `path`: look-alike names, hashes out of range, hashes weaker than `cost`.
fn warn_about_accounts(path: &Path, accounts: &Accounts, cost: &HashCost) {
    let mut by_skeleton = std::collections::BTreeMap::<String, Vec<&str>>::new();
    for user in accounts.values() {
        by_skeleton
            .entry(skeleton(&user.username))
            .or_default()
            .push(&user.username);
    }
    for names in by_skeleton.values().filter(|names| names.len() > 1) {
        log::warn!(
            "users file {}: accounts {names:?} have look-alike names; each logs in as before, \
             and no new name like them is accepted",
            path.display()
        );
    }
    for user in accounts.values() {
        if let Err(why) = usable_cost(&user.password_hash) {
            log::warn!(
                "users file {}: account {:?} has a password hash outside the allowed cost \
                 ({why}); its logins are refused until the entry is removed and the account \
                 registered again",
                path.display(),
                user.username
            );
        }
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

/// Reads and checks the journal a crash, or a failed compaction, left, if any.
fn read_journal(journal_path: &Path) -> Result<Option<journal::Replay>, StoreError> {
    let path = || journal_path.to_path_buf();
    let read = journal::read(journal_path).map_err(|e| StoreError::UnreadableJournal(path(), e));
    let Some(bytes) = read? else {
        return Ok(None);
    };
    let replay = journal::parse(&bytes).map_err(|e| StoreError::InvalidJournal(path(), e))?;
    match &replay.tail {
        None => {}
        Some(journal::Tail::Torn(torn)) => log::warn!(
            "users journal {}: its last record (line {}, {} bytes) is incomplete ({}): a \
             registration cut short by a crash, never acknowledged; ignored",
            journal_path.display(),
            torn.line,
            torn.bytes,
            torn.why
        ),
        Some(journal::Tail::Damaged(damaged)) => log::error!(
            "users journal {}: lines {} to {} ({} bytes) after its last whole record are not \
             records (line {}: {}): damage, since a crash cuts short only the last record; the \
             {} whole record(s) before them are folded into the users file, and the journal is \
             kept aside",
            journal_path.display(),
            damaged.line,
            damaged.line + damaged.lines - 1,
            damaged.bytes,
            damaged.line,
            damaged.why,
            replay.records.len()
        ),
    }
    Ok(Some(replay))
}

/// Adds the journal's `records` to `accounts`, the users file's at `path`, naming those added:
/// registrations not yet folded in, but also accounts removed from the file by hand while their
/// records were still in the journal, which come back; the administrator must be told.
fn add_journal(path: &Path, journal_path: &Path, records: &[StoredUser], accounts: &mut Accounts) {
    let added = journal::apply(records, accounts);
    if added.is_empty() {
        log::info!(
            "users journal {}: {} record(s), all in users file {} already; removing it",
            journal_path.display(),
            records.len(),
            path.display()
        );
    } else {
        log::warn!(
            "users journal {}: {} record(s); it adds {} account(s) that users file {} does not \
             hold: {added:?} (registrations not yet folded into it, or accounts removed from it \
             by hand since: to remove one, edit the file again now that the journal is folded \
             into it)",
            journal_path.display(),
            records.len(),
            added.len(),
            path.display()
        );
    }
}
