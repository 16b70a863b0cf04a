//! The users journal, `users.json.journal` beside the users file: each registration appends one
//! self-checking record, one line of compact JSON,
//! `{"username":"alice","password_hash":"$scrypt$…","check":"0123456789abcdef"}`, where `check`
//! is the first `CHECK_BYTES` bytes of the SHA-256 of the record without its check, in hex.
//!
//! A crash can cut the last record short or leave zeros in it (a file system that had grown the
//! file but not yet written the data): such a tail was never acknowledged and is ignored
//! ([`TornTail`]). A crash can tear only the record being appended, one write of one line: every
//! record before it was synced before it was acknowledged. So anything more is damage, not a
//! crash. A bad record followed by whole ones: the store refuses to start ([`InvalidJournal`]),
//! as it cannot tell which of the records around the damage to trust. Two or more bad lines
//! after the last whole record ([`DamagedTail`]): every whole record is before them, so the store
//! folds those in and starts, and the journal is kept aside (`users.json.journal.damaged`, never
//! over an earlier one) rather than removed, for an administrator to look at. Created
//! exclusively, mode 0600, checked to be ours; read without following a link, and refused if it
//! belongs to someone else.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::file::{
    check_entry, effective_uid, folder_of, make_private, read_regular, Accounts, BadEntry,
    Durability, StoredUser, PRIVATE_MODE,
};
use crate::rules::name_key;

/// Records that make the registration appending the last one fold the journal into the users
/// file at once: bounds the journal (~150 bytes a record), its copy in memory, and the work of a
/// start after a crash. If that compaction fails, the next registration tries again.
pub const MAX_RECORDS: usize = 1000;

/// How much of the SHA-256 a record carries: enough to tell a torn or zero-filled record from a
/// whole one (no defence against someone who can write the file: they can compute it).
const CHECK_BYTES: usize = 8;

/// Journals kept aside at most (`.damaged`, `.damaged.1`, …): each is a start after damage, which
/// an administrator is told of; past this many the next one stops the server rather than
/// overwrite one or fill the folder.
const MAX_KEPT_ASIDE: usize = 100;

/// The journal's path for the users file at `users` (symbolic links already resolved).
pub fn path_for(users: &Path) -> PathBuf {
    let mut name = users.as_os_str().to_os_string();
    name.push(".journal");
    PathBuf::from(name)
}

/// A record as it is on a line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    username: String,
    password_hash: String,
    check: String,
}

/// The check of `user`'s record: computed over the record without its check.
fn check_of(user: &StoredUser) -> String {
    let body = serde_json::to_vec(user).expect("two strings serialise");
    Sha256::digest(&body)[..CHECK_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The line that records `user`, newline included.
pub fn render_record(user: &StoredUser) -> Vec<u8> {
    let (username, password_hash) = (user.username.clone(), user.password_hash.clone());
    let record = Record {
        username,
        password_hash,
        check: check_of(user),
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

/// Two or more bad lines after the last whole record: more than a crash can leave (it tears one
/// record, one line). Damage: the whole records before it load, the journal is kept aside.
#[derive(Debug)]
pub struct DamagedTail {
    /// The first bad line, from 1.
    pub line: usize,
    /// How many lines are bad: at least 2.
    pub lines: usize,
    /// How many bytes are bad.
    pub bytes: usize,
    /// Why the first bad line is not a record.
    pub why: BadRecord,
}

/// What follows a journal's last whole record, when anything does.
#[derive(Debug)]
pub enum Tail {
    Torn(TornTail),
    Damaged(DamagedTail),
}

/// What a journal holds.
#[derive(Debug, Default)]
pub struct Replay {
    /// The whole records, in the order they were appended.
    pub records: Vec<StoredUser>,
    pub tail: Option<Tail>,
}

impl Replay {
    /// Whether the journal holds more than whole records and a torn last one: it is kept aside,
    /// never removed.
    pub fn is_damaged(&self) -> bool {
        matches!(self.tail, Some(Tail::Damaged(_)))
    }
}

/// The bad lines since the last whole record, while a journal is read.
struct BadRun {
    /// The first one's number, from 1.
    line: usize,
    /// Where it starts, in bytes.
    from: usize,
    lines: usize,
    why: BadRecord,
}

/// One line (without its newline) as a record.
fn decode(line: &[u8]) -> Result<StoredUser, BadRecord> {
    let record: Record = serde_json::from_slice(line).map_err(BadRecord::NotARecord)?;
    let user = StoredUser {
        username: record.username,
        password_hash: record.password_hash,
    };
    match record.check == check_of(&user) {
        true => Ok(user),
        false => Err(BadRecord::Check),
    }
}

/// Parses and checks a journal's contents (see the module's header).
pub fn parse(bytes: &[u8]) -> Result<Replay, InvalidJournal> {
    let mut replay = Replay::default();
    let mut keys = std::collections::HashSet::new();
    let mut bad: Option<BadRun> = None;
    let mut start = 0;
    for (index, rest) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let decoded = match rest.strip_suffix(b"\n") {
            Some(record) => decode(record),
            None => Err(BadRecord::Unterminated),
        };
        match (decoded, &mut bad) {
            (Ok(user), None) => {
                check_entry(&user).map_err(|why| InvalidJournal::Entry { line, why })?;
                if !keys.insert(name_key(&user.username)) {
                    let username = user.username;
                    return Err(InvalidJournal::Duplicate { line, username });
                }
                replay.records.push(user);
            }
            (Ok(_), Some(_)) => {
                let run = bad.take().expect("a bad line before");
                let (line, why) = (run.line, run.why);
                return Err(InvalidJournal::Damaged { line, why });
            }
            (Err(why), None) => {
                bad = Some(BadRun {
                    line,
                    from: start,
                    lines: 1,
                    why,
                });
            }
            (Err(_), Some(run)) => run.lines += 1,
        }
        start += rest.len();
    }
    replay.tail = bad.map(|run| {
        let bytes = bytes.len() - run.from;
        match run.lines {
            1 => Tail::Torn(TornTail {
                line: run.line,
                bytes,
                why: run.why,
            }),
            lines => Tail::Damaged(DamagedTail {
                line: run.line,
                lines,
                bytes,
                why: run.why,
            }),
        }
    });
    Ok(replay)
}

/// Adds the journal's `records` to `accounts`, skipping any name already there (the users file
/// holds it already: a crash came between a compaction's rename and the journal's removal, or
/// it was written by hand since). Returns the names added, in the journal's order.
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
    /// Among them, not a regular file or a symbolic link ([`super::file::NotRegularFile`]).
    #[error(transparent)]
    Io(io::Error),
    #[error("belongs to uid {owner}, not to this server's user (uid {us}) or root")]
    Owner { owner: u32, us: u32 },
}

/// Reads the journal at `path`, if there is one (never through a link: see `read_regular`); a
/// journal that is not ours (or root's) is refused.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, UnreadableJournal> {
    let (bytes, meta) = match read_regular(path, false) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(UnreadableJournal::Io(e)),
    };
    let (owner, us) = (meta.uid(), effective_uid());
    if owner != us && owner != 0 {
        return Err(UnreadableJournal::Owner { owner, us });
    }
    Ok(Some(bytes))
}

/// The journal since the last compaction, as the store's writer keeps it.
pub(super) struct Journal {
    pub(super) path: PathBuf,
    /// Open once the first record since the last compaction is appended.
    file: Option<File>,
    /// The file's length after the last whole record.
    len: u64,
    /// The records appended, in memory too: a reload keeps them.
    pub(super) records: Vec<StoredUser>,
    /// An append or a removal failed, or a journal was found at start: it may end in part of a
    /// record or hold records already in the users file. Nothing is appended to it before a
    /// compaction removes it.
    pub(super) broken: bool,
    /// The journal found at start holds damage: the compaction that folds it in keeps it aside
    /// instead of removing it.
    keep_aside: bool,
}

impl Journal {
    pub(super) fn new(path: PathBuf, broken: bool) -> Journal {
        Journal {
            path,
            file: None,
            len: 0,
            records: Vec::new(),
            broken,
            keep_aside: false,
        }
    }

    /// The journal a crash (or damage) left, found at start: broken until a compaction folds it
    /// in, which keeps it aside rather than removes it when `replay` says it is damaged.
    pub(super) fn found(path: PathBuf, replay: &Replay) -> Journal {
        Journal {
            keep_aside: replay.is_damaged(),
            ..Journal::new(path, true)
        }
    }

    /// Whether a compaction has anything to do.
    pub(super) fn is_empty(&self) -> bool {
        self.file.is_none() && !self.broken
    }

    /// Appends `user`'s record and makes it durable (fdatasync), creating the journal first if
    /// there is none. A failure breaks the journal: the record may be in it ([`Journal::cut`]).
    pub(super) fn append(
        &mut self,
        user: &StoredUser,
        durability: &dyn Durability,
    ) -> io::Result<()> {
        let line = render_record(user);
        let result = (|| {
            let file = match &mut self.file {
                Some(file) => file,
                none => none.insert(create(&self.path, durability)?),
            };
            file.write_all(&line)?;
            durability.sync_data(file, &self.path)
        })();
        match result {
            Ok(()) => {
                self.len += line.len() as u64;
                self.records.push(user.clone());
            }
            Err(_) => self.broken = true,
        }
        result
    }

    /// Cuts a failed append off (back to the last whole record) and makes the cut durable, so
    /// that a record never answered `ok` cannot come back after a crash. For when the journal
    /// cannot be removed instead.
    pub(super) fn cut(&self, durability: &dyn Durability) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        file.set_len(self.len)?;
        durability.sync_data(file, &self.path)
    }

    /// Removes the journal, whose records are all in the users file now, and makes the removal
    /// durable; a damaged journal found at start is kept aside instead ([`keep_aside`]). Kept
    /// open (and broken) until it is gone: a failed append may still need its cut.
    pub(super) fn remove(&mut self, durability: &dyn Durability) -> io::Result<()> {
        self.records.clear();
        self.broken = true;
        let gone = match self.keep_aside {
            true => keep_aside(&self.path).map(|aside| aside.is_some()),
            false => fs::remove_file(&self.path).map(|()| true),
        };
        match gone {
            Ok(true) => durability.sync_folder(&folder_of(&self.path))?,
            Ok(false) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        *self = Journal::new(std::mem::take(&mut self.path), false);
        Ok(())
    }
}

/// The names a damaged journal at `path` may be kept aside as, in the order they are tried.
fn aside_names(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    (0..MAX_KEPT_ASIDE).map(move |n| {
        let mut name = path.as_os_str().to_os_string();
        name.push(".damaged");
        if n > 0 {
            name.push(format!(".{n}"));
        }
        PathBuf::from(name)
    })
}

/// Renames the damaged journal at `path` to the first of its [`aside_names`] not taken, never
/// over a file already there (an earlier damaged journal, or anything planted), and logs where
/// it went. `None`: there was no journal to keep.
///
/// # Errors
/// The rename failed (a file system without `RENAME_NOREPLACE` among the causes), or every name
/// is taken: the journal stays where it is, and the store does not start.
fn keep_aside(path: &Path) -> io::Result<Option<PathBuf>> {
    for aside in aside_names(path) {
        let renamed = rustix::fs::renameat_with(
            rustix::fs::CWD,
            path,
            rustix::fs::CWD,
            &aside,
            rustix::fs::RenameFlags::NOREPLACE,
        );
        match renamed {
            Ok(()) => {
                log::error!(
                    "users journal {}: kept aside as {}, not removed, since it held more than a                      record cut short by a crash; its whole records are in the users file now.                      Look at it, then remove it",
                    path.display(),
                    aside.display()
                );
                return Ok(Some(aside));
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(format!(
        "{MAX_KEPT_ASIDE} damaged journals are kept aside beside it already ({}, …); remove          those looked at",
        aside_names(path).next().unwrap_or_default().display()
    )))
}

/// Creates the journal at `path`: exclusively (a journal already there is not one this process
/// knows: the store folds it in at start), checked to be ours, its name made durable.
fn create(path: &Path, durability: &dyn Durability) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    make_private(&file, path)?;
    durability.sync_folder(&folder_of(path))?;
    Ok(file)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use std::os::unix::fs::PermissionsExt;

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
        assert!(replay.tail.is_none());
        assert_eq!(names(&parse(b"").unwrap()), Vec::<&str>::new());
    }

    /// The torn tail `replay` ends with; panics on anything else.
    fn torn(replay: Replay) -> TornTail {
        match replay.tail {
            Some(Tail::Torn(torn)) => torn,
            other => panic!("not a torn tail: {other:?}"),
        }
    }

    /// The damaged tail `replay` ends with; panics on anything else.
    fn damaged(replay: Replay) -> DamagedTail {
        match replay.tail {
            Some(Tail::Damaged(damaged)) => damaged,
            other => panic!("not a damaged tail: {other:?}"),
        }
    }

    /// A crash cuts the last record anywhere, or leaves zeros in it (its newline written or
    /// not): the whole records load, the tail is reported and ignored.
    #[test]
    fn a_torn_or_zero_filled_tail_is_ignored_and_the_whole_records_load() {
        let whole = journal_of(&["alice", "bob"]);
        let last = render_record(&user("carol"));
        for cut in 1..last.len() {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&last[..cut]);
            let replay = parse(&bytes).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(names(&replay), ["alice", "bob"], "cut at {cut}");
            assert!(!replay.is_damaged());
            let torn = torn(replay);
            assert_eq!((torn.line, torn.bytes), (3, cut), "cut at {cut}");
        }
        for zeros in [b"\0\0\0\0\0\0\0\0".as_slice(), b"\0\0\0\0\n", b"\n"] {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&last[..20]);
            bytes.extend_from_slice(zeros);
            let replay = parse(&bytes).unwrap();
            assert_eq!(names(&replay), ["alice", "bob"]);
            assert_eq!(torn(replay).line, 3);
            let mut bytes = whole.clone();
            bytes.extend_from_slice(zeros);
            assert_eq!(names(&parse(&bytes).unwrap()), ["alice", "bob"]);
        }
        // Zeros over the middle of the last record, its newline written.
        let mut bytes = whole.clone();
        let mut zeroed = last.clone();
        zeroed[10..30].fill(0);
        bytes.extend_from_slice(&zeroed);
        assert_eq!(torn(parse(&bytes).unwrap()).bytes, last.len());
    }

    /// A crash tears one record, one line: two bad lines or more after the last whole record are
    /// damage. The whole records before them load; the tail says where the damage starts, how many
    /// lines and bytes it spans, and why the first line is bad.
    #[test]
    fn two_bad_lines_at_the_end_are_damage_not_a_torn_tail() {
        let whole = journal_of(&["alice", "bob"]);
        let carol = render_record(&user("carol"));
        let mut flipped = carol.clone();
        flipped[15] ^= 1;
        let tails: [(&[u8], usize, &str); 4] = [
            (b"\0\0\0\n\0\0\n", 2, "not a record"),
            (b"\n\n", 2, "not a record"),
            (&[flipped.as_slice(), &carol[..20]].concat(), 2, "check"),
            (&[&flipped[..], &flipped, b"\0\0"].concat(), 3, "check"),
        ];
        for (tail, lines, why) in tails {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(tail);
            let replay = parse(&bytes).unwrap_or_else(|e| panic!("{tail:?}: {e}"));
            assert_eq!(names(&replay), ["alice", "bob"], "{tail:?}");
            assert!(replay.is_damaged(), "{tail:?}");
            let damaged = damaged(replay);
            assert_eq!(
                (damaged.line, damaged.lines, damaged.bytes),
                (3, lines, tail.len()),
                "{tail:?}"
            );
            assert!(damaged.why.to_string().contains(why), "{}", damaged.why);
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
        let mut journal = Journal::new(path.clone(), false);
        journal.append(&user("alice"), &recorder).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        journal.append(&user("bob"), &recorder).unwrap();
        journal.remove(&recorder).unwrap();
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

    /// A damaged journal found at start is never removed: the removal that follows its folding in
    /// renames it to `.damaged`, or the first `.damaged.N` not taken, never over an earlier one,
    /// and syncs the folder.
    #[test]
    fn a_damaged_journal_is_kept_aside_never_over_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("users.json"));
        let damaged = [journal_of(&["alice"]), b"\0\n\0\n".to_vec()].concat();
        let replay = parse(&damaged).unwrap();
        let aside = |suffix: &str| dir.path().join(format!("users.json.journal{suffix}"));
        fs::write(aside(".damaged"), b"an earlier one").unwrap();
        for round in 1..=2 {
            fs::write(&path, &damaged).unwrap();
            let recorder = Recorder(RefCell::new(Vec::new()), path.clone());
            let mut journal = Journal::found(path.clone(), &replay);
            journal.remove(&recorder).unwrap();
            assert!(!path.exists());
            assert_eq!(
                fs::read(aside(&format!(".damaged.{round}"))).unwrap(),
                damaged
            );
            assert_eq!(
                recorder.0.into_inner(),
                [Synced::Folder(dir.path().to_path_buf())]
            );
            // Only the journal found at start is kept aside: the next one is removed.
            let recorder = Recorder(RefCell::new(Vec::new()), path.clone());
            journal.append(&user("bob"), &recorder).unwrap();
            journal.remove(&recorder).unwrap();
            assert!(!aside(&format!(".damaged.{}", round + 1)).exists());
        }
        assert_eq!(fs::read(aside(".damaged")).unwrap(), b"an earlier one");
        // A journal with a torn tail only is removed, as ever.
        fs::write(&path, &damaged[..damaged.len() - 2]).unwrap();
        let replay = parse(&fs::read(&path).unwrap()).unwrap();
        assert!(!replay.is_damaged());
        Journal::found(path.clone(), &replay)
            .remove(&Fsync)
            .unwrap();
        assert!(!path.exists());
        assert!(!aside(".damaged.3").exists());
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
        let error = result.expect_err("read a FIFO");
        assert_eq!(error.to_string(), "is not a regular file");
    }

    #[test]
    fn a_journal_already_there_or_a_planted_link_is_never_appended_to_or_read_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("users.json"));
        let target = dir.path().join("precious");
        fs::write(&target, b"keep me").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let mut journal = Journal::new(path.clone(), false);
        assert!(journal.append(&user("alice"), &Fsync).is_err());
        let error = read(&path).expect_err("read through a link").to_string();
        assert!(error.starts_with("is a symbolic link"), "{error}");
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"").unwrap();
        let mut journal = Journal::new(path.clone(), false);
        assert!(journal.append(&user("alice"), &Fsync).is_err());
        assert_eq!(read(&path).unwrap(), Some(Vec::new()));
        fs::remove_file(&path).unwrap();
        assert_eq!(read(&path).unwrap(), None);
    }
}
