//! Accounts: the [`UserStore`], which registers and verifies users, and its errors.
//!
//! Sized for a LAN: about a hundred accounts, a thousand as a design goal, all in memory. Nothing
//! here is built for more: a compaction rewrites the whole users file, a SIGHUP re-reads it.
//!
//! On disk, the users file (JSON) and, beside it, the [`journal`]: a registration appends one
//! record and fdatasyncs it before it is answered `ok`. A compaction writes every account to the
//! users file ([`file::replace`]) and removes the journal: at start, when the journal holds
//! [`journal::MAX_RECORDS`], once registrations pause ([`compactor`]), at a graceful shutdown and
//! with each re-hash at login; at rest the users file is alone. No plain password is kept.
//!
//! One server per users file ([`lock`]): nothing else writes these files but a person with an
//! editor. Hand edits are read on SIGHUP ([`UserStore::reload`]) or at the next start; until then
//! every write first compares the file's [`FileStamp`] with the one the store last read or wrote
//! (one `stat`) and refuses if it changed, so nothing made by hand is written over.
//!
//! Two locks, so that a login never waits for the disk: the accounts (held for a lookup, a copy
//! or an insertion, never across a file operation) and the writer (held through each append,
//! reload and rewrite, so that they happen one at a time, in order). Only the writer's holder
//! changes the accounts. The methods block (scrypt, fsync): async callers run them with
//! [`crate::runtime::spawn_blocking`]. docs/security.md tells the whole story.

pub mod compactor;
pub mod cost;
pub mod error;
pub mod file;
pub mod folder;
pub mod journal;
mod load;
pub mod lock;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use cost::{
    scrypt_params, HashCost, DEFAULT_LOG_N, DEFAULT_P, DEFAULT_R, MAX_HASH_MEMORY_BYTES, MAX_LOG_N,
    MAX_P, MAX_R, MIN_LOG_N, MIN_P, MIN_R,
};
pub use error::{
    AuthError, ChangedFileError, ReloadError, ReloadFailure, StorageError, StoreError, UnsafeFile,
};
pub use file::{FileStamp, StoredUser};

use crate::rules::{name_key, skeleton, validate_password, validate_username, MAX_PASSWORD_BYTES};
use cost::{check_password, hash_password, usable_cost};
use file::{Accounts, Durability, WriteFailure};
use journal::Journal;

/// The accounts, in memory and on disk.
pub struct UserStore {
    /// The users file; if the path given to [`UserStore::open`] was a symbolic link, its target.
    path: std::path::PathBuf,
    /// Held while the store lives: no other server opens the file meanwhile.
    _lock: lock::UsersLock,
    /// How the compaction thread is woken.
    wakeup: compactor::Wakeup,
    params: scrypt::Params,
    /// The cost of `params`.
    cost: HashCost,
    index: RwLock<Index>,
    /// Held while the files are read or changed; only ever locked on blocking threads.
    writer: Mutex<Writer>,
    /// Verified when there is no hash to verify, so that every failed login costs the same
    /// ([`cost::dummy_hash`]).
    dummy_hash: String,
    /// How the journal and the users file reach the disk: [`file::Fsync`]; tests make it fail.
    durability: Box<dyn Durability + Send + Sync>,
}

/// What the writer knows of the files.
struct Writer {
    /// The users file's stamp as of the store's last read or write of it: a file with another
    /// stamp was changed by hand, and is not written over before [`UserStore::reload`].
    stamp: FileStamp,
    journal: Journal,
}

/// The accounts, keyed by [`name_key`], with the first account (in key order) of each
/// [`skeleton`]: a registration's checks cost the same whatever the number of accounts.
#[derive(Default)]
struct Index {
    accounts: Accounts,
    skeletons: HashMap<String, String>,
}

impl Index {
    fn new(accounts: Accounts) -> Index {
        let mut index = Index::default();
        for (key, user) in accounts {
            index.insert(key, user);
        }
        index
    }

    fn insert(&mut self, key: String, user: StoredUser) {
        let name = &user.username;
        self.skeletons
            .entry(skeleton(name))
            .or_insert_with(|| name.clone());
        self.accounts.insert(key, user);
    }

    /// Whether `username` may be registered: not taken (ignoring case), not like an existing name.
    fn check_free(&self, username: &str) -> Result<(), AuthError> {
        if self.accounts.contains_key(&name_key(username)) {
            return Err(AuthError::NameTaken);
        }
        match self.skeletons.get(&skeleton(username)) {
            Some(existing) => Err(AuthError::NameTooSimilar {
                existing: existing.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl UserStore {
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

    /// Creates an account; returns the username as stored, once the account is on disk. Blocks:
    /// hashes the password, appends to the journal and syncs it.
    pub fn register(&self, username: &str, password: &str) -> Result<String, AuthError> {
        validate_username(username).map_err(AuthError::InvalidUsername)?;
        validate_password(password).map_err(AuthError::InvalidPassword)?;
        // Cheap early answer; checked again under the writer's lock, after the slow hash.
        self.read().check_free(username)?;
        let password_hash = hash_password(password, self.params).map_err(StorageError::from)?;
        let mut writer = self.writer();
        // A hand edit not yet read may hold this very name: refused until a SIGHUP reads it.
        self.check_unchanged(&writer)?;
        self.read().check_free(username)?;
        if writer.journal.broken {
            self.write_snapshot(&mut writer)?;
        }
        let user = StoredUser {
            username: username.to_string(),
            password_hash,
        };
        // Under the writer's lock only: logins go on reading the accounts meanwhile.
        if let Err(error) = writer.journal.append(&user, &*self.durability) {
            self.forget_failed_append(&mut writer);
            let path = writer.journal.path.clone();
            return Err(StorageError::Write(path, error).into());
        }
        self.write().insert(name_key(username), user);
        if writer.journal.records.len() >= journal::MAX_RECORDS {
            // The registration is durable already: a failure is only logged, and the next
            // registration tries again.
            if let Err(error) = self.write_snapshot(&mut writer) {
                log::error!("could not fold the full users journal into the users file: {error}");
            }
        }
        drop(writer);
        self.wakeup.appended();
        Ok(username.to_string())
    }

    /// After a failed append (answered `storage_failure`), makes sure that no crash brings its
    /// record back: it may have reached the journal. Folds the journal in at once, from memory
    /// (which lacks the record), and so removes it; if that fails, cuts the record off durably.
    fn forget_failed_append(&self, writer: &mut Writer) {
        let Err(error) = self.write_snapshot(writer) else {
            return;
        };
        log::error!(
            "could not fold the users journal into the users file after a failed append: {error}"
        );
        if let Err(error) = writer.journal.cut(&*self.durability) {
            log::error!(
                "users journal {}: could not make the removal of a failed append durable either \
                 ({error}): after a crash the account it was for may be there",
                writer.journal.path.display()
            );
        }
    }

    /// Folds the journal into the users file if it holds anything. Blocks: waits for the
    /// writer's lock, then writes and syncs the whole file.
    pub fn compact(&self) -> Result<(), StorageError> {
        self.compact_locked(&mut self.writer())
    }

    /// [`UserStore::compact`] with the writer's lock held.
    fn compact_locked(&self, writer: &mut Writer) -> Result<(), StorageError> {
        match writer.journal.is_empty() {
            true => Ok(()),
            false => self.write_snapshot(writer),
        }
    }

    /// Replaces the users file with every account in memory, then removes the journal, whose
    /// records are all in it. Not over a hand edit: the journal then stays, durable, until a
    /// reload or the next start. The writer's stamp follows the file even when a step after the
    /// rename fails.
    fn write_snapshot(&self, writer: &mut Writer) -> Result<(), StorageError> {
        self.check_unchanged(writer)?;
        // Rendered under a read lock, not from a copy: only the writer's holder (us) changes
        // the accounts, and logins only read.
        let json = file::render(&self.read().accounts);
        match file::replace(&self.path, &json, &*self.durability) {
            Ok(stamp) => writer.stamp = stamp,
            Err(WriteFailure { replaced, error }) => {
                writer.stamp = replaced.unwrap_or(writer.stamp);
                return Err(StorageError::Write(self.path.clone(), error));
            }
        }
        // A crash before the removal leaves records that the next start finds in the users file
        // already, and skips.
        let removed = writer.journal.remove(&*self.durability);
        let path = writer.journal.path.clone();
        removed.map_err(|error| StorageError::Write(path, error))
    }

    /// Whether the users file is still the version the store last read or wrote.
    fn check_unchanged(&self, writer: &Writer) -> Result<(), StorageError> {
        let why = match file::stamp(&self.path) {
            Ok(stamp) if stamp == writer.stamp => return Ok(()),
            Ok(_) => ChangedFileError::Changed,
            Err(error) => ChangedFileError::Unreadable(error),
        };
        Err(StorageError::ChangedFile(self.path.clone(), why))
    }

    /// Whether a registration could take `username` now (the answer to `check_name`): hashes
    /// nothing, writes nothing; a registration checks again.
    pub fn check_name(&self, username: &str) -> Result<(), AuthError> {
        validate_username(username).map_err(AuthError::InvalidUsername)?;
        self.read().check_free(username)
    }

    /// Checks a login; returns the username as registered (`ALICE` logs in as `alice`). Blocks:
    /// verifies scrypt. Unknown users, wrong passwords and accounts whose stored hash is out of
    /// range (never verified; an error in the log) get the same error after the same work. A
    /// login whose stored hash is weaker than the current cost re-hashes it.
    pub fn verify(&self, username: &str, password: &str) -> Result<String, AuthError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::BadCredentials);
        }
        let key = name_key(username);
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
    /// the file (a compaction too). Failures are logged: the login they follow has succeeded.
    fn rehash(&self, key: &str, user: &StoredUser, old: HashCost, password: &str) {
        let swap = |from: &str, to: &str| match self.write().accounts.get_mut(key) {
            Some(stored) if stored.password_hash == from => {
                stored.password_hash = to.to_string();
                true
            }
            // A concurrent login has re-hashed it already.
            _ => false,
        };
        let hashed = hash_password(password, self.params).map_err(StorageError::from);
        let result = hashed.and_then(|new_hash| {
            let mut writer = self.writer();
            // Meanwhile a login may check either hash: both are of the same password.
            if !swap(&user.password_hash, &new_hash) {
                return Ok(false);
            }
            let before = writer.stamp;
            self.write_snapshot(&mut writer)
                .map(|()| true)
                .inspect_err(|_| {
                    // Memory stays equal to the file: the old hash, unless the file was replaced.
                    if writer.stamp == before {
                        swap(&new_hash, &user.password_hash);
                    }
                })
        });
        match result {
            Ok(false) => {}
            Ok(true) => log::info!(
                "re-hashed the password of {:?} from {old} to {} in {}",
                user.username,
                self.cost,
                self.path.display()
            ),
            Err(error) => log::error!(
                "could not save the re-hashed password of {:?}: {error}; the account keeps its \
                 {old} hash for now",
                user.username
            ),
        }
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
    use std::io;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::Ordering;

    use file::{Accounts, Fsync};

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
        drop(store);
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
        drop(reopened);
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
        capture_warnings();
        let store = UserStore::open(&path, cheap()).unwrap();
        let flagged: Vec<_> = warnings_about(dir.path())
            .into_iter()
            .filter(|w| w.contains("outside the allowed cost"))
            .collect();
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        assert!(
            flagged[0].contains("\"huge\"") && flagged[0].contains("ln=40"),
            "{flagged:?}"
        );
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
        drop(old);
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
        drop(store);
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
        let mut store = UserStore::open(&path, scrypt_params(5, 8, 1).unwrap()).unwrap();
        let disk = std::sync::Arc::new(FlakyDisk::default());
        store.durability = Box::new(Flaky(disk.clone()));
        disk.fail_users_file.store(true, Ordering::SeqCst);
        let before = fs::read(&path).unwrap();
        assert_eq!(store.verify("alice", "alice-password"), Ok("alice".into()));
        assert_eq!(
            disk.users_file_syncs.load(Ordering::SeqCst),
            1,
            "no write tried"
        );
        let hash = store.read().accounts["alice"].password_hash.clone();
        assert_eq!(cost::stored_cost(&hash), Ok(cost(4, 8, 1)));
        assert_eq!(fs::read(&path).unwrap(), before);
        // The disk works again: the next login re-hashes.
        disk.fail_users_file.store(false, Ordering::SeqCst);
        assert_eq!(store.verify("alice", "alice-password"), Ok("alice".into()));
        assert_eq!(
            read_hashes(&path)[0].get(..20),
            Some("$scrypt$ln=5,r=8,p=1")
        );
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

    /// A name added by hand is not seen before a reload (a registration is refused meanwhile,
    /// and the file left as edited); once read, it is taken, and a look-alike of it too.
    #[test]
    fn a_name_added_by_hand_is_taken_once_read_again_and_a_look_alike_of_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        store.register("alice", "alice-password").unwrap();
        let mut by_hand = store.read().accounts.clone();
        let mut carol = by_hand["alice"].clone();
        carol.username = "Carol".into();
        by_hand.insert(name_key("Carol"), carol);
        file::write(&path, &by_hand, &Fsync).unwrap();
        let edited = fs::read(&path).unwrap();
        assert!(matches!(
            store.register("dave", "dave-password"),
            Err(AuthError::Storage(StorageError::ChangedFile(
                _,
                ChangedFileError::Changed
            )))
        ));
        assert_eq!(
            store.verify("carol", "alice-password"),
            Err(AuthError::BadCredentials)
        );
        store.reload().unwrap();
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
        // Read, not written: the file is the one edited by hand (alice was folded in before).
        assert_eq!(fs::read(&path).unwrap(), edited);
        store.register("dave", "dave-password").unwrap();
        assert_eq!(store.len(), 3);
    }

    /// Until a reload, nothing writes over a hand edit: not a registration, not a compaction of
    /// records appended before it, not a re-hash at login; the records stay in the journal.
    #[test]
    fn a_hand_edit_is_never_written_over_before_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        store.register("alice", "alice-password").unwrap();
        store.register("bob", "bob-password").unwrap();
        let edited = b"{\"version\": 1, \"users\": []}\n";
        fs::write(&path, edited).unwrap();
        assert!(matches!(
            store.register("carol", "carol-password"),
            Err(AuthError::Storage(StorageError::ChangedFile(..)))
        ));
        assert!(matches!(
            store.compact(),
            Err(StorageError::ChangedFile(..))
        ));
        drop(store);
        let stronger = UserStore::open(&path, scrypt_params(5, 8, 1).unwrap()).unwrap();
        assert_eq!(
            names_in_file(&path),
            ["alice", "bob"],
            "the journal folded in at start"
        );
        // A hand edit that changes no account: a blank line at the end.
        let mut edited = fs::read(&path).unwrap();
        edited.push(b'\n');
        fs::write(&path, &edited).unwrap();
        // alice's ln=4 hash is weaker than ln=5: the login re-hashes, but cannot save it.
        assert_eq!(
            stronger.verify("alice", "alice-password"),
            Ok("alice".into())
        );
        assert_eq!(fs::read(&path).unwrap(), edited);
        assert_eq!(files_in(dir.path()), ["users.json", "users.json.lock"]);
    }

    /// A reload of a file that no longer parses loads nothing: logins go on with the accounts
    /// last read, writes stay refused, the file stays as written; once fixed, a reload works.
    #[test]
    fn a_reload_of_a_file_that_does_not_parse_keeps_the_accounts_last_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        store.register("alice", "alice-password").unwrap();
        store.compact().unwrap();
        let good = fs::read(&path).unwrap();
        let broken = b"{\"version\": 1, \"users\": [ oops\n";
        fs::write(&path, broken).unwrap();
        let error = store.reload().unwrap_err();
        assert!(matches!(error.why, ReloadFailure::Invalid(_)), "{error}");
        assert!(error
            .to_string()
            .ends_with("not loaded (the accounts last read stay)"));
        assert_eq!(store.verify("alice", "alice-password"), Ok("alice".into()));
        assert!(store.register("bob", "bob-password").is_err());
        assert_eq!(fs::read(&path).unwrap(), broken);
        fs::write(&path, &good).unwrap();
        store.reload().unwrap();
        store.register("bob", "bob-password").unwrap();
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
            assert_eq!(index.check_free("newcomer"), Ok(()));
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
        assert_eq!(
            files_in(dir.path()),
            ["users.json", "users.json.journal", "users.json.lock"]
        );
        let replay =
            journal::parse(&fs::read(dir.path().join("users.json.journal")).unwrap()).unwrap();
        assert_eq!(replay.records.len(), 2);
        store.compact().unwrap();
        assert_eq!(files_in(dir.path()), ["users.json", "users.json.lock"]);
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
        assert_eq!(files_in(dir.path()), ["users.json", "users.json.lock"]);
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
        assert_eq!(files_in(dir.path()), ["users.json", "users.json.lock"]);
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

    /// A reload while records wait in the journal (registrations answered `ok`): they are kept
    /// beside the file's accounts, named in a warning, and folded in at once.
    #[test]
    fn a_reload_keeps_the_journals_records_and_folds_them_in() {
        capture_warnings();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        store.register("alice", "alice-password").unwrap();
        let mut by_hand = Accounts::new();
        let mut dave = store.read().accounts["alice"].clone();
        dave.username = "dave".into();
        by_hand.insert(name_key("dave"), dave);
        file::write(&path, &by_hand, &Fsync).unwrap();
        store.reload().unwrap();
        assert_eq!(store.verify("dave", "alice-password"), Ok("dave".into()));
        assert_eq!(store.verify("alice", "alice-password"), Ok("alice".into()));
        assert_eq!(names_in_file(&path), ["alice", "dave"]);
        assert_eq!(files_in(dir.path()), ["users.json", "users.json.lock"]);
        let warned = warnings_about(dir.path());
        assert!(
            warned
                .iter()
                .any(|w| w.contains("it adds 1 account(s)") && w.contains("[\"alice\"]")),
            "{warned:?}"
        );
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
        while files_in(dir.path()) != ["users.json", "users.json.lock"] {
            assert!(std::time::Instant::now() < deadline, "never folded in");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(names_in_file(&path), ["alice"]);
        // Stopped before the pause ends: finishing folds bob in.
        store.register("bob", "bob-password").unwrap();
        compactor.finish();
        assert_eq!(files_in(dir.path()), ["users.json", "users.json.lock"]);
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

    /// One store per users file: a second open is refused, naming the file and this process,
    /// and touches nothing; once the first is dropped, the file opens again.
    #[test]
    fn a_second_store_on_the_same_users_file_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let running = UserStore::open(&path, cheap()).unwrap();
        running.register("alice", "alice-password").unwrap();
        let journal = fs::read(journal::path_for(&path)).unwrap();
        let error = match UserStore::open(&path, cheap()) {
            Err(error) => error.to_string(),
            Ok(_) => panic!("a second store opened the users file"),
        };
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(
            error.contains(&format!("process {}", std::process::id())),
            "{error}"
        );
        assert_eq!(fs::read(journal::path_for(&path)).unwrap(), journal);
        running.register("bob", "bob-password").unwrap();
        drop(running);
        let reopened = UserStore::open(&path, cheap()).unwrap();
        assert_eq!(reopened.len(), 2);
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
        assert_eq!(files_in(dir.path()), ["users.json", "users.json.lock"]);
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
    /// journal), each trying the compaction again; once the disk works, the next folds all in.
    #[test]
    fn a_full_journal_whose_compaction_fails_keeps_taking_registrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let disk = std::sync::Arc::new(FlakyDisk::default());
        let store = store_on(&path, &disk);
        disk.fail_users_file.store(true, Ordering::SeqCst);
        for i in 0..journal::MAX_RECORDS + 5 {
            store.register(&format!("user{i}"), "a-password").unwrap();
        }
        assert_eq!(disk.users_file_syncs.load(Ordering::SeqCst), 6);
        disk.fail_users_file.store(false, Ordering::SeqCst);
        store.register("last", "a-password").unwrap();
        assert_eq!(files_in(dir.path()), ["users.json", "users.json.lock"]);
        assert_eq!(names_in_file(&path).len(), journal::MAX_RECORDS + 6);
    }

    /// An account removed from the users file by hand while its record is still in the journal
    /// comes back at start; the administrator is told which.
    #[test]
    fn accounts_the_journal_adds_back_at_start_are_named() {
        capture_warnings();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        let store = UserStore::open(&path, cheap()).unwrap();
        store.register("alice", "alice-password").unwrap();
        store.register("bob", "bob-password").unwrap();
        let journal = fs::read(journal::path_for(&path)).unwrap();
        drop(store);
        // A crash between a compaction's rename and the journal's removal, then bob removed by
        // hand: the journal brings bob back at start, and says so.
        let replay = journal::parse(&journal).unwrap();
        let mut only_alice = Accounts::new();
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
        fs::write(&path, b"{}").unwrap();
        let Err(AuthError::Storage(detail)) = store.register("dave", "password-1") else {
            panic!("registered over a hand edit");
        };
        assert_eq!(
            detail.to_string(),
            format!(
                "{}: changed since the server last read or wrote it; nothing is written over it \
                 until the server reads it again: once the file is as it should be, send SIGHUP \
                 (kill -HUP {})",
                path.display(),
                std::process::id()
            )
        );
    }
}
