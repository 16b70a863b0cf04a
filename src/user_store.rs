//! Accounts: the rules for usernames and passwords, scrypt password hashes, and the users file.
//!
//! The store keeps every account in memory and in one JSON file, which it replaces atomically
//! (write a temporary file in the same folder, fsync it, rename it over the old one, fsync the
//! folder) before a registration is reported as successful. It never keeps or writes a plain
//! password.
//!
//! Its methods block (scrypt takes a few hundred milliseconds at the default cost; fsync waits for
//! the disk): async callers run them with [`crate::runtime::spawn_blocking`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

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
    path: PathBuf,
    params: scrypt::Params,
    /// Keyed by [`name_key`]. Held while the file is rewritten so that writes happen one at a
    /// time and in the order of the changes; only ever locked on blocking threads.
    users: Mutex<BTreeMap<String, StoredUser>>,
    /// A hash to verify against when the user is unknown, so that an unknown name costs as much
    /// time as a wrong password.
    dummy_hash: OnceLock<String>,
}

impl UserStore {
    /// Opens the users file at `path`, creating it (mode 0600) if it is missing. A file that
    /// exists but cannot be read, is not valid JSON of the expected shape, holds an invalid name
    /// or hash, or holds the same name twice is refused and left untouched.
    pub fn open(path: &Path, params: scrypt::Params) -> Result<UserStore, StoreError> {
        let io_error = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let users = match fs::read(path) {
            Ok(bytes) => parse_users_file(&bytes).map_err(|reason| StoreError::Invalid {
                path: path.to_path_buf(),
                reason,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let empty = BTreeMap::new();
                write_users_file(path, &empty).map_err(|failure| io_error(failure.error))?;
                empty
            }
            Err(e) => return Err(io_error(e)),
        };
        Ok(UserStore {
            path: path.to_path_buf(),
            params,
            users: Mutex::new(users),
            dummy_hash: OnceLock::new(),
        })
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

    /// Checks a login; returns the username as registered (`ALICE` logs in as `alice`). Unknown
    /// users and wrong passwords give the same error after the same work. Blocks: verifies scrypt.
    pub fn verify(&self, username: &str, password: &str) -> Result<String, AuthError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::BadCredentials);
        }
        let user = self.lock().get(&name_key(username)).cloned();
        let Some(user) = user else {
            let dummy = self.dummy_hash();
            let _ = check_password(password, dummy);
            return Err(AuthError::BadCredentials);
        };
        if check_password(password, &user.password_hash) {
            Ok(user.username)
        } else {
            Err(AuthError::BadCredentials)
        }
    }

    fn hash(&self, password: &str) -> Result<String, AuthError> {
        let salt = SaltString::generate(&mut OsRng);
        Scrypt
            .hash_password_customized(password.as_bytes(), None, None, self.params, &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| AuthError::Storage(format!("hashing failed: {e}")))
    }

    fn dummy_hash(&self) -> &str {
        self.dummy_hash
            .get_or_init(|| self.hash("not-a-password-of-anyone").unwrap_or_default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StoredUser>> {
        // A panic while holding the lock leaves the map as it was before or after one whole
        // change, so the data is still usable.
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Verifies `password` against a PHC string; the cost parameters come from the string.
fn check_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Scrypt.verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
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
        check_phc(&user.password_hash)
            .map_err(|why| format!("user {:?}: password_hash {why}", user.username))?;
        let key = name_key(&user.username);
        if users.contains_key(&key) {
            return Err(format!("user {:?} appears more than once", user.username));
        }
        users.insert(key, user);
    }
    Ok(users)
}

/// Checks that a stored hash is an scrypt PHC string with parameters scrypt accepts.
fn check_phc(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc).map_err(|e| format!("is not a PHC string: {e}"))?;
    if hash.algorithm.as_str() != "scrypt" {
        return Err(format!("uses {:?}, not scrypt", hash.algorithm.as_str()));
    }
    scrypt::Params::try_from(&hash).map_err(|e| format!("has bad scrypt parameters: {e}"))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("lacks a salt or a hash".into());
    }
    Ok(())
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
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
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
    use std::os::unix::fs::PermissionsExt;

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
}
