//! Accounts: the rules for usernames and passwords, scrypt password hashes, and the users file.
//!
//! The store keeps every account in memory and in one JSON file, which it replaces atomically
//! (write a temporary file in the same folder, fsync it, rename it over the old one, fsync the
//! folder) before a registration is reported as successful. It never keeps or writes a plain
//! password.
//!
//! Its methods block (scrypt takes a few hundred milliseconds at the default cost; fsync waits for
//! the disk): async callers run them with [`crate::runtime::spawn_blocking`].
//!
//! Costs: every hash carries its own scrypt cost. A stored hash whose cost is outside the allowed
//! range ([`HashCost::check_range`]) is never verified, since checking it could take gigabytes; a
//! stored hash weaker than the store's current cost is re-hashed at the current cost when its
//! owner next logs in, so old accounts converge to the current cost.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use scrypt::password_hash::rand_core::OsRng;
use scrypt::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use scrypt::Scrypt;
use serde::{Deserialize, Serialize};

/// Longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 20;
/// Shortest password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password, in bytes: bounds the work a login request can ask of the hasher.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Default scrypt cost: OWASP's recommendation (N = 2^17, r = 8, p = 1; 128 MiB per hash).
pub const DEFAULT_LOG_N: u8 = 17;
pub const DEFAULT_R: u32 = 8;
pub const DEFAULT_P: u32 = 1;

// The allowed scrypt costs, for new hashes (the server's `--scrypt-*` flags) and stored ones. The
// upper bounds keep one verification within the memory and time a login may ask for: a stored
// hash beyond them is never verified (see [`UserStore::verify`]), so no entry in a users file can
// make a login allocate more than [`MAX_HASH_MEMORY_BYTES`] (the server runs one hash per core at
// once). The lower bounds are scrypt's own; weak stored hashes are re-hashed at login rather than
// refused.

/// Smallest log2 N.
pub const MIN_LOG_N: u8 = 1;
/// Largest log2 N: 2^20, 1 GiB per hash at r = 8.
pub const MAX_LOG_N: u8 = 20;
/// Smallest block size r.
pub const MIN_R: u32 = 1;
/// Largest block size r (OWASP's settings all use 8).
pub const MAX_R: u32 = 32;
/// Smallest parallelism p.
pub const MIN_P: u32 = 1;
/// Largest parallelism p: time grows linearly with p (OWASP's settings go up to 10).
pub const MAX_P: u32 = 16;
/// Most memory one hash may take, 128 · r · 2^ln bytes: 1 GiB (the default cost takes 128 MiB).
pub const MAX_HASH_MEMORY_BYTES: u64 = 1 << 30;

/// An scrypt cost: log2 N, r and p (the output length is always 32 bytes for new hashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
}

impl HashCost {
    pub fn of_params(params: &scrypt::Params) -> HashCost {
        HashCost {
            log_n: params.log_n(),
            r: params.r(),
            p: params.p(),
        }
    }

    /// Bytes of memory one hash at this cost takes: 128 · r · 2^ln (saturating).
    pub fn memory_bytes(&self) -> u128 {
        let block = 128 * u128::from(self.r); // at most 2^39
        if self.log_n >= 88 {
            u128::MAX
        } else {
            block << self.log_n
        }
    }

    /// Checks the cost against [`MIN_LOG_N`]..=[`MAX_LOG_N`], [`MIN_R`]..=[`MAX_R`],
    /// [`MIN_P`]..=[`MAX_P`] and [`MAX_HASH_MEMORY_BYTES`]. The error says which bound is broken.
    pub fn check_range(&self) -> Result<(), String> {
        if !(MIN_LOG_N..=MAX_LOG_N).contains(&self.log_n) {
            return Err(format!(
                "ln={} is outside {MIN_LOG_N}..={MAX_LOG_N}",
                self.log_n
            ));
        }
        if !(MIN_R..=MAX_R).contains(&self.r) {
            return Err(format!("r={} is outside {MIN_R}..={MAX_R}", self.r));
        }
        if !(MIN_P..=MAX_P).contains(&self.p) {
            return Err(format!("p={} is outside {MIN_P}..={MAX_P}", self.p));
        }
        if self.memory_bytes() > u128::from(MAX_HASH_MEMORY_BYTES) {
            return Err(format!(
                "ln={} with r={} needs {} MiB per hash (128 * r * 2^ln bytes), more than the {} MiB allowed",
                self.log_n,
                self.r,
                self.memory_bytes() >> 20,
                MAX_HASH_MEMORY_BYTES >> 20
            ));
        }
        Ok(())
    }

    /// Whether a hash at this cost is cheaper to attack than one at `target`: it needs less
    /// memory (128 · r · 2^ln) or less work (2^ln · r · p). Such a hash is re-hashed at `target`
    /// at its owner's next login. Comparing the two products, not each parameter, keeps a
    /// re-hash from trading memory for parallelism (ln=18,p=1 is not weaker than ln=17,p=2).
    pub fn is_weaker_than(&self, target: &HashCost) -> bool {
        let work = |c: &HashCost| c.memory_bytes().saturating_mul(u128::from(c.p));
        self.memory_bytes() < target.memory_bytes() || work(self) < work(target)
    }
}

impl fmt::Display for HashCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ln={},r={},p={}", self.log_n, self.r, self.p)
    }
}

/// The scrypt parameters for new hashes at cost `log_n`, `r`, `p`, if that cost is within the
/// allowed range and valid for scrypt (e.g. scrypt needs ln < 16 · r).
pub fn scrypt_params(log_n: u8, r: u32, p: u32) -> Result<scrypt::Params, String> {
    let cost = HashCost { log_n, r, p };
    cost.check_range()?;
    scrypt::Params::new(log_n, r, p, HASH_LEN)
        .map_err(|_| format!("{cost} is not a valid scrypt cost (scrypt needs ln < 16 * r)"))
}

/// Length of a new hash's output, in bytes.
const HASH_LEN: usize = 32;

/// Version of the users file's layout.
const FILE_VERSION: u32 = 1;

/// Checks a username: 1 to 20 characters, each a letter, digit, `_`, `-` or `.`.
pub fn validate_username(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS {
        return Err(format!(
            "a username has 1 to {MAX_USERNAME_CHARS} characters, this one has {chars}"
        ));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        Some(bad) => Err(format!(
            "a username may hold only letters, digits, '_', '-' and '.', not {bad:?}"
        )),
        None => Ok(()),
    }
}

/// Checks a new password's length (the password itself never appears in the error).
pub fn validate_password(password: &str) -> Result<(), String> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("a password has at most {MAX_PASSWORD_BYTES} bytes"));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    Ok(())
}

/// The key under which a name is unique: names differ only if they differ without regard to case.
fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Why a login or registration failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown user or wrong password: deliberately one answer for both.
    BadCredentials,
    NameTaken,
    InvalidUsername(String),
    InvalidPassword(String),
    /// The account could not be saved; the registration did not happen.
    Storage(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::BadCredentials => f.write_str("unknown user or wrong password"),
            AuthError::NameTaken => f.write_str("that username is already registered"),
            AuthError::InvalidUsername(why) => write!(f, "invalid username: {why}"),
            AuthError::InvalidPassword(why) => write!(f, "invalid password: {why}"),
            AuthError::Storage(why) => write!(f, "could not save the account: {why}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Why the users file could not be opened. Both variants name the file.
#[derive(Debug)]
pub enum StoreError {
    Io { path: PathBuf, source: io::Error },
    Invalid { path: PathBuf, reason: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, source } => {
                write!(f, "users file {}: {source}", path.display())
            }
            StoreError::Invalid { path, reason } => {
                write!(f, "users file {} is not valid: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// One account as stored in the users file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    /// The name as registered (its case is kept; uniqueness ignores case).
    pub username: String,
    /// A PHC string: `$scrypt$ln=17,r=8,p=1$<salt>$<hash>`.
    pub password_hash: String,
}

/// The users file: `{"version": 1, "users": [...]}`, users in name order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    version: u32,
    users: Vec<StoredUser>,
}

/// The accounts, in memory and on disk.
pub struct UserStore {
    /// The users file; if the path given to [`UserStore::open`] was a symbolic link, its target.
    path: PathBuf,
    params: scrypt::Params,
    /// The cost of `params`.
    cost: HashCost,
    /// Keyed by [`name_key`]. Held while the file is rewritten so that writes happen one at a
    /// time and in the order of the changes; only ever locked on blocking threads.
    users: Mutex<BTreeMap<String, StoredUser>>,
    /// A hash at the current cost that no password matches, verified when the user is unknown
    /// or the stored hash is out of range; see [`dummy_hash`].
    dummy_hash: String,
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
    /// Once the file is read, removes the temporary files that writes interrupted by a crash left
    /// beside it (they hold password hashes too).
    ///
    /// Warnings rather than refusals: none of these makes the file wrong, and refusing to start
    /// would lock every user out over one entry or one `chmod`; the administrator reads the log.
    pub fn open(path: &Path, params: scrypt::Params) -> Result<UserStore, StoreError> {
        let io_error = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let target = resolve_symlink(path).map_err(io_error)?;
        let users = match fs::read(&target) {
            Ok(bytes) => parse_users_file(&bytes).map_err(|reason| StoreError::Invalid {
                path: path.to_path_buf(),
                reason,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let empty = BTreeMap::new();
                write_users_file(&target, &empty).map_err(|failure| io_error(failure.error))?;
                empty
            }
            Err(e) => return Err(io_error(e)),
        };
        warn_if_exposed(path, &target);
        remove_leftover_temporary_files(&target);
        let cost = HashCost::of_params(&params);
        let store = UserStore {
            path: target,
            params,
            cost,
            users: Mutex::new(users),
            dummy_hash: dummy_hash(&cost),
        };
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
        self.lock().len()
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
        // Cheap early answer; checked again under the lock, after the slow hash.
        if self.lock().contains_key(&key) {
            return Err(AuthError::NameTaken);
        }
        let password_hash = self.hash(password)?;
        let mut users = self.lock();
        if users.contains_key(&key) {
            return Err(AuthError::NameTaken);
        }
        let user = StoredUser {
            username: username.to_string(),
            password_hash,
        };
        users.insert(key.clone(), user);
        if let Err(failure) = write_users_file(&self.path, &users) {
            // Keep memory equal to the file: once the rename happened, the file has the user.
            if !failure.replaced {
                users.remove(&key);
            }
            return Err(AuthError::Storage(format!(
                "{}: {}",
                self.path.display(),
                failure.error
            )));
        }
        Ok(username.to_string())
    }

    /// The cost of new hashes.
    pub fn cost(&self) -> HashCost {
        self.cost
    }

    /// The accounts whose stored hash has a cost outside the allowed range, with the reason.
    pub fn out_of_range_accounts(&self) -> Vec<(String, String)> {
        self.lock()
            .values()
            .filter_map(|user| {
                match stored_cost(&user.password_hash) {
                    Ok(cost) => cost.check_range().err(),
                    Err(why) => Some(why),
                }
                .map(|why| (user.username.clone(), why))
            })
            .collect()
    }

    /// How many accounts have a stored hash weaker than the current cost.
    fn weaker_accounts(&self) -> usize {
        self.lock()
            .values()
            .filter(|user| {
                stored_cost(&user.password_hash).is_ok_and(|cost| cost.is_weaker_than(&self.cost))
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
        let user = self.lock().get(&key).cloned();
        let Some(user) = user else {
            let _ = check_password(password, &self.dummy_hash);
            return Err(AuthError::BadCredentials);
        };
        let cost = match stored_cost(&user.password_hash).and_then(|cost| {
            cost.check_range()?;
            Ok(cost)
        }) {
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
        let mut users = self.lock();
        match users.get_mut(key) {
            // Unchanged since the check (a concurrent login may have re-hashed it already).
            Some(stored) if stored.password_hash == user.password_hash => {
                stored.password_hash = new_hash;
            }
            _ => return,
        }
        match write_users_file(&self.path, &users) {
            Ok(()) => log::info!(
                "re-hashed the password of {:?} from {old} to {} in {}",
                user.username,
                self.cost,
                self.path.display()
            ),
            Err(failure) => {
                // Keep memory equal to the file: once the rename happened, the file has it.
                if !failure.replaced {
                    if let Some(stored) = users.get_mut(key) {
                        stored.password_hash = user.password_hash.clone();
                    }
                }
                log::error!(
                    "could not save the re-hashed password of {:?} to {}: {}; the account keeps \
                     its {old} hash for now",
                    user.username,
                    self.path.display(),
                    failure.error
                );
            }
        }
    }

    fn hash(&self, password: &str) -> Result<String, AuthError> {
        let salt = SaltString::generate(&mut OsRng);
        Scrypt
            .hash_password_customized(password.as_bytes(), None, None, self.params, &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| AuthError::Storage(format!("hashing failed: {e}")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StoredUser>> {
        // A panic while holding the lock leaves the map as it was before or after one whole
        // change, so the data is still usable.
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Verifies `password` against a PHC string; the cost parameters come from the string, so the
/// caller must have checked them ([`stored_cost`], [`HashCost::check_range`]).
fn check_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Scrypt.verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// The hash verified when there is no real one to check (unknown user, stored hash out of
/// range), so that those logins take the time of a wrong password.
///
/// It is at the store's current cost: a random salt and an all-zero output, which no password
/// matches; verifying it costs one scrypt computation at the current cost, like verifying any
/// account hashed at the current cost, and building it costs nothing. Accounts hashed at an older
/// cost answer a wrong password faster or slower than an unknown name until their owners next
/// log in, which re-hashes them at the current cost; so the store converges to one cost, and a
/// file written at one cost (the usual case) leaks nothing.
fn dummy_hash(cost: &HashCost) -> String {
    let salt = SaltString::generate(&mut OsRng);
    // HASH_LEN zero bytes in the PHC's unpadded base64: 4 characters per 3 bytes, rounded up.
    let zeros = "A".repeat((HASH_LEN * 4).div_ceil(3));
    format!("$scrypt${cost}${}${zeros}", salt.as_str())
}

/// Resolves `path` if it is a symbolic link, with a warning; otherwise returns it unchanged.
fn resolve_symlink(path: &Path) -> Result<PathBuf, io::Error> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = fs::canonicalize(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("is a symbolic link whose target cannot be resolved: {e}"),
                )
            })?;
            log::warn!(
                "users file {} is a symbolic link to {}: the server reads and rewrites {} (the link \
                 stays); make sure nobody else can change the link or its folder",
                path.display(),
                target.display(),
                target.display()
            );
            Ok(target)
        }
        _ => Ok(path.to_path_buf()),
    }
}

/// Warns if the users file can be read or written by group or others.
fn warn_if_exposed(path: &Path, target: &Path) {
    let Ok(meta) = fs::metadata(target) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let access = match (mode & 0o044 != 0, mode & 0o022 != 0) {
            (true, true) => "read and write",
            (true, false) => "read",
            _ => "write",
        };
        log::warn!(
            "users file {} has mode {mode:04o}: group or others can {access} it and it holds \
             password hashes; run `chmod 600 {}` (the server makes it 0600 at its next change)",
            path.display(),
            target.display()
        );
    }
}

/// The name of the temporary file a write of `path` by this process uses: `.NAME.tmp.PID`.
fn temporary_name(name: &OsStr, pid: u32) -> String {
    format!("{}{pid}", temporary_prefix(name))
}

fn temporary_prefix(name: &OsStr) -> String {
    format!(".{}.tmp.", name.to_string_lossy())
}

/// Removes the temporary files of earlier processes beside the users file: a write interrupted
/// by a crash (SIGKILL, power loss) leaves one, and a later process never reuses its name.
/// Failures are logged: they stop nothing.
fn remove_leftover_temporary_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = temporary_prefix(name);
    let own = temporary_name(name, std::process::id());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let is_leftover = file_name
            .strip_prefix(&prefix)
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            && file_name != own;
        if !is_leftover {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => log::info!(
                "removed {}, left by a write of the users file that did not finish",
                entry.path().display()
            ),
            Err(e) => log::warn!(
                "could not remove {}, left by a write of the users file that did not finish: {e}",
                entry.path().display()
            ),
        }
    }
}

/// Parses and checks the users file's contents.
fn parse_users_file(bytes: &[u8]) -> Result<BTreeMap<String, StoredUser>, String> {
    let file: UsersFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != FILE_VERSION {
        return Err(format!(
            "version {} is not supported (expected {FILE_VERSION})",
            file.version
        ));
    }
    let mut users = BTreeMap::new();
    for (index, user) in file.users.into_iter().enumerate() {
        validate_username(&user.username)
            .map_err(|why| format!("user #{} ({:?}): {why}", index + 1, user.username))?;
        stored_cost(&user.password_hash)
            .map_err(|why| format!("user {:?}: password_hash {why}", user.username))?;
        let key = name_key(&user.username);
        if users.contains_key(&key) {
            return Err(format!("user {:?} appears more than once", user.username));
        }
        users.insert(key, user);
    }
    Ok(users)
}

/// Checks that a stored hash is an scrypt PHC string with parameters scrypt accepts, and returns
/// its cost. Computes nothing: the cost may still be out of range ([`HashCost::check_range`]).
fn stored_cost(phc: &str) -> Result<HashCost, String> {
    let hash = PasswordHash::new(phc).map_err(|e| format!("is not a PHC string: {e}"))?;
    if hash.algorithm.as_str() != "scrypt" {
        return Err(format!("uses {:?}, not scrypt", hash.algorithm.as_str()));
    }
    let params =
        scrypt::Params::try_from(&hash).map_err(|e| format!("has bad scrypt parameters: {e}"))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("lacks a salt or a hash".into());
    }
    Ok(HashCost::of_params(&params))
}

/// A failed write of the users file.
struct WriteFailure {
    /// Whether the new file had already replaced the old one (only the folder's fsync failed).
    replaced: bool,
    error: io::Error,
}

/// Replaces the users file atomically: a temporary file in the same folder (mode 0600), fsync,
/// rename over the old file, fsync of the folder so that the rename itself is durable.
fn write_users_file(path: &Path, users: &BTreeMap<String, StoredUser>) -> Result<(), WriteFailure> {
    let failed = |error| WriteFailure {
        replaced: false,
        error,
    };
    let file = UsersFile {
        version: FILE_VERSION,
        users: users.values().cloned().collect(),
    };
    let mut json = serde_json::to_vec_pretty(&file)
        .map_err(io::Error::other)
        .map_err(failed)?;
    json.push(b'\n');
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        failed(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    let tmp = dir.join(temporary_name(name, std::process::id()));
    let written = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(&json)?;
        out.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(failed(error));
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|error| WriteFailure {
            replaced: true,
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> scrypt::Params {
        scrypt::Params::new(4, 8, 1, 32).unwrap()
    }

    #[test]
    fn username_rules() {
        for ok in ["a", "alice", "Bob_1", "x.y-z", &"n".repeat(20)] {
            assert_eq!(validate_username(ok), Ok(()), "{ok}");
        }
        for bad in ["", &"n".repeat(21), "al ice", "é", "a/b", "a:b", "\u{0}"] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_rules() {
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password(&"p".repeat(1024)).is_ok());
        let err = validate_password(&"p".repeat(1025)).unwrap_err();
        assert!(!err.contains("ppp"));
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
    fn cost(log_n: u8, r: u32, p: u32) -> HashCost {
        HashCost { log_n, r, p }
    }

    #[test]
    fn the_cost_range_has_inclusive_bounds_and_a_memory_bound() {
        for ok in [
            cost(1, 1, 1),
            cost(17, 8, 1),
            cost(20, 8, 1),
            cost(18, 32, 16),
        ] {
            assert_eq!(ok.check_range(), Ok(()), "{ok}");
        }
        for (bad, complaint) in [
            (cost(0, 8, 1), "ln=0"),
            (cost(21, 8, 1), "ln=21"),
            (cost(255, 32, 16), "ln=255"),
            (cost(17, 0, 1), "r=0"),
            (cost(17, 33, 1), "r=33"),
            (cost(17, 8, 0), "p=0"),
            (cost(17, 8, 17), "p=17"),
            (cost(20, 16, 1), "2048 MiB"),
            (cost(19, 32, 1), "2048 MiB"),
        ] {
            let why = bad.check_range().expect_err(&bad.to_string());
            assert!(why.contains(complaint), "{bad}: {why}");
        }
        assert_eq!(cost(17, 8, 1).memory_bytes(), 128 << 20);
        assert_eq!(cost(200, 8, 1).memory_bytes(), u128::MAX);
    }

    #[test]
    fn new_hash_costs_must_be_in_range_and_valid_for_scrypt() {
        assert!(scrypt_params(17, 8, 1).is_ok());
        assert!(scrypt_params(21, 8, 1).unwrap_err().contains("ln=21"));
        assert!(scrypt_params(16, 1, 1).unwrap_err().contains("16 * r"));
    }

    #[test]
    fn a_cost_is_weaker_if_it_needs_less_memory_or_less_work() {
        let current = cost(11, 8, 2);
        assert!(cost(10, 8, 2).is_weaker_than(&current));
        assert!(cost(11, 4, 2).is_weaker_than(&current), "less memory");
        assert!(cost(11, 8, 1).is_weaker_than(&current), "less work");
        assert!(cost(12, 8, 1).is_weaker_than(&cost(12, 8, 2)));
        assert!(!cost(11, 8, 2).is_weaker_than(&current));
        assert!(!cost(12, 16, 3).is_weaker_than(&current));
        // More memory, the same work: kept rather than traded for parallelism.
        assert!(!cost(12, 8, 1).is_weaker_than(&current));
    }

    #[test]
    fn the_dummy_hash_is_at_the_current_cost_and_matches_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("users.json"), cheap()).unwrap();
        assert_eq!(stored_cost(&store.dummy_hash), Ok(cost(4, 8, 1)));
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
        let mut users = store.lock();
        let huge = users.get_mut("huge").unwrap();
        huge.password_hash = huge.password_hash.replace("$ln=4,", "$ln=40,");
        write_users_file(path, &users).map_err(|f| f.error).unwrap();
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
        assert!(flagged[0].1.contains("ln=40"), "{flagged:?}");
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
        let before = read_hashes(&path);
        let stronger = scrypt::Params::new(5, 8, 1, 32).unwrap();
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
        let store = UserStore::open(&path, scrypt::Params::new(5, 8, 1, 32).unwrap()).unwrap();
        fs::remove_dir_all(dir.path()).unwrap();
        assert_eq!(store.verify("alice", "alice-password"), Ok("alice".into()));
        let hash = store.lock()["alice"].password_hash.clone();
        assert_eq!(stored_cost(&hash), Ok(cost(4, 8, 1)));
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
        assert_eq!(
            left,
            [".other.json.tmp.1", ".users.json.tmp.x", "users.json"]
        );
    }

    fn read_hashes(path: &Path) -> Vec<String> {
        let file: UsersFile = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        file.users.into_iter().map(|u| u.password_hash).collect()
    }
}
