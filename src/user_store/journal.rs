//! The users journal: the file beside the users file (`users.json.journal`) where each
//! registration is appended, one self-checking record per line, and made durable (fdatasync)
//! before it is answered. The store ([`super::UserStore`]) folds it into the users file (a
//! compaction) at start, when it holds [`MAX_RECORDS`], once registrations pause, and at a
//! graceful shutdown; at rest there is no journal.
//!
//! A record is one line of compact JSON with a check:
//! `{"username":"alice","password_hash":"$scrypt$…","check":"0123456789abcdef"}`, where `check`
//! is the first [`CHECK_BYTES`] bytes of the SHA-256 of the record without its check, in hex. A
//! crash can cut the last record short or leave zeros after it (a file system that had grown the
//! file but not yet written the data); such a tail was never acknowledged and is ignored with a
//! warning. A bad record followed by whole ones cannot come from a crash: it is damage, and the
//! store refuses to start ([`InvalidJournal`]).
//!
//! Created exclusively (`O_CREAT|O_EXCL`, never through a link), mode 0600, checked to be a
//! private regular file of ours; read without following a link, and refused if it belongs to
//! someone else.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::file::{
    check_created, check_entry, effective_uid, folder_of, Accounts, BadEntry, Durability,
    StoredUser, PRIVATE_MODE,
};
use crate::rules::name_key;

/// Records that make the registration appending the last one fold the journal into the users
/// file at once: bounds the journal (~150 bytes a record), its copy in memory, and the work of a
/// start after a crash. If that compaction fails, the next registration tries again.
pub const MAX_RECORDS: usize = 1000;

/// How much of the SHA-256 a record carries: enough to tell a torn or zero-filled record from a
/// whole one (no defence against someone who can write the file: they can compute it).
const CHECK_BYTES: usize = 8;

/// The journal's path for the users file at `users` (symbolic links already resolved).
pub fn path_for(users: &Path) -> PathBuf {
    let mut name = users.as_os_str().to_os_string();
    name.push(".journal");
    PathBuf::from(name)
}

/// A record as it is on a line; without its check, what the check is computed over.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record<'a> {
    username: std::borrow::Cow<'a, str>,
    password_hash: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<String>,
}

/// The check of a record (see the module's header).
fn check_of(username: &str, password_hash: &str) -> String {
    let unchecked = Record {
        username: username.into(),
        password_hash: password_hash.into(),
        check: None,
    };
    let body = serde_json::to_vec(&unchecked).expect("two strings serialise");
    Sha256::digest(&body)[..CHECK_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The line that records `user`, newline included.
pub fn render_record(user: &StoredUser) -> Vec<u8> {
    let record = Record {
        username: user.username.as_str().into(),
        password_hash: user.password_hash.as_str().into(),
        check: Some(check_of(&user.username, &user.password_hash)),
    };
    let mut line = serde_json::to_vec(&record).expect("three strings serialise");
    line.push(b'\n');
    line
}

/// Why one line is not a whole record.
#[derive(Debug, thiserror::Error)]
pub enum BadRecord {
    #[error("not a record ({0})")]
    NotARecord(serde_json::Error),
    #[error("its check does not match its contents")]
    Check,
    #[error("it has no newline at its end")]
    Unterminated,
}

/// Why a journal is refused: it cannot have been left so by a crash.
#[derive(Debug, thiserror::Error)]
pub enum InvalidJournal {
    /// A bad record with whole records after it.
    #[error(
        "line {line}: {why}, and whole records follow it: damage, not a write cut short by a \
         crash"
    )]
    Damaged { line: usize, why: BadRecord },
    #[error("line {line}: {why}")]
    Entry { line: usize, why: BadEntry },
    #[error("line {line}: user {username:?} is recorded more than once")]
    Duplicate { line: usize, username: String },
}

/// The last record, cut short by a crash: never acknowledged, ignored.
#[derive(Debug)]
pub struct TornTail {
    /// The line it starts on, from 1.
    pub line: usize,
    /// How many bytes are ignored.
    pub bytes: usize,
    pub why: BadRecord,
}

/// What a journal holds.
#[derive(Debug, Default)]
pub struct Replay {
    /// The whole records, in the order they were appended.
    pub records: Vec<StoredUser>,
    pub torn: Option<TornTail>,
}

/// One line (without its newline) as a record.
fn decode(line: &[u8]) -> Result<StoredUser, BadRecord> {
    let record: Record = serde_json::from_slice(line).map_err(BadRecord::NotARecord)?;
    if record.check != Some(check_of(&record.username, &record.password_hash)) {
        return Err(BadRecord::Check);
    }
    Ok(StoredUser {
        username: record.username.into_owned(),
        password_hash: record.password_hash.into_owned(),
    })
}

/// Parses and checks a journal's contents (see the module's header for what is ignored and what
/// is refused).
pub fn parse(bytes: &[u8]) -> Result<Replay, InvalidJournal> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // What follows the last newline: nothing in a journal whose last record is whole.
    let unterminated = lines.pop().is_some_and(|rest| !rest.is_empty());
    let mut decoded: Vec<Result<StoredUser, BadRecord>> = lines.into_iter().map(decode).collect();
    if unterminated {
        decoded.push(Err(BadRecord::Unterminated));
    }
    let mut torn = None;
    if let Some(first_bad) = decoded.iter().position(Result::is_err) {
        let mut rest = decoded.split_off(first_bad).into_iter();
        let why = rest
            .next()
            .and_then(Result::err)
            .expect("the first bad record");
        let line = first_bad + 1;
        if rest.any(|r| r.is_ok()) {
            return Err(InvalidJournal::Damaged { line, why });
        }
        // The bytes from the start of the torn line to the end.
        let start: usize = bytes
            .split(|&b| b == b'\n')
            .take(first_bad)
            .map(|l| l.len() + 1)
            .sum();
        torn = Some(TornTail {
            line,
            bytes: bytes.len() - start,
            why,
        });
    }
    let mut keys = std::collections::HashSet::new();
    let mut records = Vec::with_capacity(decoded.len());
    for (index, user) in decoded.into_iter().flatten().enumerate() {
        let line = index + 1;
        check_entry(&user).map_err(|why| InvalidJournal::Entry { line, why })?;
        if !keys.insert(name_key(&user.username)) {
            return Err(InvalidJournal::Duplicate {
                line,
                username: user.username,
            });
        }
        records.push(user);
    }
    Ok(Replay { records, torn })
}

/// Adds the journal's `records` to `accounts`, skipping any name already there (the users file
/// holds it already: a crash came between a compaction's rename and the journal's removal, or
/// the account was written by hand since). Returns the names added, in the journal's order: the
/// caller tells the administrator (an account removed by hand while still in the journal comes
/// back).
pub fn apply<'a>(records: &'a [StoredUser], accounts: &mut Accounts) -> Vec<&'a str> {
    let mut added = Vec::new();
    for user in records {
        if let std::collections::btree_map::Entry::Vacant(entry) =
            accounts.entry(name_key(&user.username))
        {
            entry.insert(user.clone());
            added.push(user.username.as_str());
        }
    }
    added
}

/// Why a journal found at start is not read.
#[derive(Debug, thiserror::Error)]
pub enum UnreadableJournal {
    #[error(transparent)]
    Io(io::Error),
    #[error("is a symbolic link (never followed: the server only ever creates a regular file)")]
    Link,
    #[error("is not a regular file")]
    NotRegular,
    #[error("belongs to uid {owner}, not to this server's user (uid {us}) or root")]
    Owner { owner: u32, us: u32 },
}

/// Reads the journal at `path`, if there is one, without following a symbolic link; a journal
/// that is not a regular file of ours (or root's) is refused. Never blocks on what is planted
/// there: anything but a regular file is refused before it is opened (a FIFO's open would wait
/// for a writer), and the open itself is non-blocking in case the file is swapped meanwhile.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, UnreadableJournal> {
    let not_found = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(UnreadableJournal::Link),
        Ok(meta) if !meta.file_type().is_file() => return Err(UnreadableJournal::NotRegular),
        Ok(_) => {}
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(UnreadableJournal::Io(e)),
    }
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(UnreadableJournal::Link),
        Err(e) => return Err(UnreadableJournal::Io(e)),
    };
    let meta = file.metadata().map_err(UnreadableJournal::Io)?;
    let us = effective_uid();
    if !meta.file_type().is_file() {
        return Err(UnreadableJournal::NotRegular);
    }
    if meta.uid() != us && meta.uid() != 0 {
        return Err(UnreadableJournal::Owner {
            owner: meta.uid(),
            us,
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(UnreadableJournal::Io)?;
    Ok(Some(bytes))
}

/// The journal, open for appending.
pub struct Appender {
    file: File,
    path: PathBuf,
    /// Its length after the last whole record.
    len: u64,
}

impl Appender {
    /// Creates the journal at `path`: exclusively (a journal already there is not one this
    /// process knows: the store folds it in at start), checked to be ours, its name made durable.
    pub fn create(path: &Path, durability: &dyn Durability) -> io::Result<Appender> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(PRIVATE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        // The mode asked for at creation is narrowed by the umask; make it exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(PRIVATE_MODE))?;
        check_created(&file, path)?;
        durability.sync_folder(&folder_of(path))?;
        Ok(Appender {
            file,
            path: path.to_path_buf(),
            len: 0,
        })
    }

    /// Appends `line` (one [`render_record`]) and makes it durable (written, fdatasync'd). On a
    /// failure, cuts the journal back to its last whole record if it can (a cut not yet durable:
    /// [`Appender::sync_cut`]); the caller must not append again (see the store's `broken`)
    /// before a compaction removes the journal.
    pub fn append(&mut self, line: &[u8], durability: &dyn Durability) -> io::Result<()> {
        let result = self
            .file
            .write_all(line)
            .and_then(|()| durability.sync_data(&self.file, &self.path));
        match result {
            Ok(()) => self.len += line.len() as u64,
            Err(_) => {
                let _ = self.file.set_len(self.len);
            }
        }
        result
    }

    /// Makes the cut of a failed [`Appender::append`] durable, so that a record never answered
    /// "ok" cannot come back after a crash. For when the journal cannot be removed instead.
    pub fn sync_cut(&self, durability: &dyn Durability) -> io::Result<()> {
        durability.sync_data(&self.file, &self.path)
    }
}

/// Removes the journal at `path` (if there is one) and makes the removal durable.
pub fn remove(path: &Path, durability: &dyn Durability) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => durability.sync_folder(&folder_of(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::user_store::file::Fsync;

    const HASH: &str = "$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

    fn user(name: &str) -> StoredUser {
        StoredUser {
            username: name.into(),
            password_hash: HASH.into(),
        }
    }

    fn journal_of(names: &[&str]) -> Vec<u8> {
        names.iter().flat_map(|n| render_record(&user(n))).collect()
    }

    fn names(replay: &Replay) -> Vec<&str> {
        replay.records.iter().map(|u| u.username.as_str()).collect()
    }

    #[test]
    fn a_record_is_one_line_of_json_with_its_check() {
        let line = render_record(&user("alice"));
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(
            text.ends_with("\"}\n") && text.matches('\n').count() == 1,
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["username"], "alice");
        assert_eq!(value["password_hash"], HASH);
        assert_eq!(value["check"].as_str().unwrap().len(), 2 * CHECK_BYTES);
        assert_eq!(names(&parse(&line).unwrap()), ["alice"]);
    }

    #[test]
    fn whole_records_load_in_order() {
        let replay = parse(&journal_of(&["carol", "alice", "Bob"])).unwrap();
        assert_eq!(names(&replay), ["carol", "alice", "Bob"]);
        assert!(replay.torn.is_none());
        assert_eq!(names(&parse(b"").unwrap()), Vec::<&str>::new());
    }

    /// A crash cuts the last record anywhere, or leaves zeros after the whole ones: the whole
    /// records load, the tail is reported and ignored.
    #[test]
    fn a_torn_or_zero_filled_tail_is_ignored_and_the_whole_records_load() {
        let whole = journal_of(&["alice", "bob"]);
        let last = render_record(&user("carol"));
        for cut in 1..last.len() {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&last[..cut]);
            let replay = parse(&bytes).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(names(&replay), ["alice", "bob"], "cut at {cut}");
            let torn = replay.torn.expect("a torn tail");
            assert_eq!((torn.line, torn.bytes), (3, cut), "cut at {cut}");
        }
        for zeros in [b"\0\0\0\0\0\0\0\0".as_slice(), b"\0\0\0\n\0\0\n", b"\n"] {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&last[..20]);
            bytes.extend_from_slice(zeros);
            let replay = parse(&bytes).unwrap();
            assert_eq!(names(&replay), ["alice", "bob"]);
            assert_eq!(replay.torn.unwrap().line, 3);
            let mut bytes = whole.clone();
            bytes.extend_from_slice(zeros);
            assert_eq!(names(&parse(&bytes).unwrap()), ["alice", "bob"]);
        }
    }

    /// A record with one byte changed fails its check; with whole records after it, that is
    /// damage and the journal is refused, naming the line.
    #[test]
    fn a_bad_record_before_whole_ones_is_refused_with_its_line() {
        let good = journal_of(&["alice", "bob", "carol"]);
        let second = render_record(&user("alice")).len();
        // A letter of bob's hash, then a byte of bob's name, then zeros over bob's record.
        let hash_at = second + render_record(&user("bob")).len() - 50;
        let name_at = second + "{\"username\":\"".len();
        for (at, what) in [
            (hash_at, "check"),
            (name_at, "check"),
            (second, "not a record"),
        ] {
            let mut bytes = good.clone();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            if what == "not a record" {
                bytes[at] = 0;
            }
            let error = parse(&bytes).expect_err(what).to_string();
            assert!(error.starts_with("line 2: "), "{error}");
            assert!(error.contains(what), "{error}");
            assert!(error.contains("whole records follow it"), "{error}");
        }
    }

    #[test]
    fn a_whole_record_with_a_bad_name_or_hash_or_twice_the_same_name_is_refused() {
        let with_hash = |name: &str, hash: &str| {
            render_record(&StoredUser {
                username: name.into(),
                password_hash: hash.into(),
            })
        };
        for (bytes, reason) in [
            (
                with_hash("al ice", HASH),
                "line 1: user \"al ice\": a username",
            ),
            (
                with_hash("alice", "plain"),
                "line 1: user \"alice\": password_hash",
            ),
            (
                [journal_of(&["alice", "bob"]), journal_of(&["ALICE"])].concat(),
                "line 3: user \"ALICE\" is recorded more than once",
            ),
        ] {
            let error = parse(&bytes).expect_err(reason).to_string();
            assert!(error.starts_with(reason), "{error}");
        }
    }

    #[test]
    fn records_already_in_the_users_file_are_skipped() {
        let mut accounts: Accounts = [("alice".to_string(), user("alice"))].into();
        let records = [user("ALICE"), user("bob")];
        assert_eq!(apply(&records, &mut accounts), ["bob"]);
        assert_eq!(accounts["alice"].username, "alice");
        assert_eq!(accounts["bob"].username, "bob");
    }

    /// What the journal did when it asked for a sync.
    #[derive(Debug, PartialEq, Eq)]
    enum Synced {
        /// The journal's contents when its data was synced.
        Data(Vec<u8>),
        Folder(PathBuf),
    }

    struct Recorder(RefCell<Vec<Synced>>, PathBuf);

    impl Durability for Recorder {
        fn sync_file(&self, _file: &File, _path: &Path) -> io::Result<()> {
            unreachable!("the journal syncs its data only")
        }
        fn sync_data(&self, _file: &File, path: &Path) -> io::Result<()> {
            self.0.borrow_mut().push(Synced::Data(fs::read(path)?));
            Ok(())
        }
        fn sync_folder(&self, folder: &Path) -> io::Result<()> {
            assert!(self.1.exists() || folder.exists());
            self.0
                .borrow_mut()
                .push(Synced::Folder(folder.to_path_buf()));
            Ok(())
        }
    }

    /// Creation syncs the folder (the journal's name is durable), each append syncs the data
    /// with the record in it, removal syncs the folder again.
    #[test]
    fn every_append_is_synced_with_its_record_and_creation_and_removal_sync_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("users.json"));
        assert!(path.ends_with("users.json.journal"));
        let recorder = Recorder(RefCell::new(Vec::new()), path.clone());
        let mut appender = Appender::create(&path, &recorder).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        appender
            .append(&render_record(&user("alice")), &recorder)
            .unwrap();
        appender
            .append(&render_record(&user("bob")), &recorder)
            .unwrap();
        remove(&path, &recorder).unwrap();
        assert!(!path.exists());
        let folder = dir.path().to_path_buf();
        assert_eq!(
            recorder.0.into_inner(),
            [
                Synced::Folder(folder.clone()),
                Synced::Data(journal_of(&["alice"])),
                Synced::Data(journal_of(&["alice", "bob"])),
                Synced::Folder(folder),
            ]
        );
    }

    /// `read` run on another thread, with a deadline: a read that blocks fails the test rather
    /// than hanging it (a writer then opens the FIFO to let the blocked open go).
    pub(crate) fn within_deadline<T: Send + 'static>(
        fifo: &Path,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (done, answer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(read());
        });
        match answer.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(answer) => answer,
            Err(_) => {
                let _ = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(fifo);
                panic!("reading {} blocked", fifo.display());
            }
        }
    }

    /// Makes a FIFO at `path`.
    pub(crate) fn mkfifo(path: &Path) {
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .expect("mkfifo");
    }

    /// A FIFO planted at the journal's path is refused at once: its open would wait for a writer
    /// (the server would hang at start).
    #[test]
    fn a_fifo_at_the_journal_path_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("users.json"));
        mkfifo(&path);
        let reading = path.clone();
        let result = within_deadline(&path, move || read(&reading));
        assert!(
            matches!(result, Err(UnreadableJournal::NotRegular)),
            "{result:?}"
        );
    }

    #[test]
    fn a_journal_already_there_or_a_planted_link_is_never_appended_to_or_read_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("users.json"));
        let target = dir.path().join("precious");
        fs::write(&target, b"keep me").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(Appender::create(&path, &Fsync).is_err());
        assert!(matches!(read(&path), Err(UnreadableJournal::Link)));
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"").unwrap();
        assert!(Appender::create(&path, &Fsync).is_err());
        assert_eq!(read(&path).unwrap(), Some(Vec::new()));
        fs::remove_file(&path).unwrap();
        assert_eq!(read(&path).unwrap(), None);
    }
}
