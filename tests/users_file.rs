//! Attacks on the users file and its neighbourhood, through the real `p2pchat-server`: a local
//! user who plants the temporary file's name (a symbolic link, a 0666 file), a folder anyone can
//! write to, a users file someone else owns, an administrator's hand edit while the server runs,
//! and names that look like an existing one (`aIice` beside `alice`).
//!
//! The planted files belong to uid 65534 (nobody), as an attacker's would; only root can give a
//! file away, so as another user those parts are skipped with a note on stderr.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::{fixture, read_users, server_bin, RawConnection, Server, DEADLINE};
use predicates::prelude::*;
use serde_json::Value;

/// The uid the "local attacker" plants files as.
const ATTACKER_UID: u32 = 65534;

const PASSWORD: &str = "users-file-password";

/// The password of `alice` and `Bob` in fixtures/users-ln10.json.
const ALICE_PASSWORD: &str = "alice-password";

/// Whether this test runs as root (and can therefore plant files owned by another user).
fn is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn our_uid() -> u32 {
    // SAFETY: as above.
    unsafe { libc::geteuid() }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Gives `path` (not what it points to) to the attacker.
fn give_away(path: &Path) {
    std::os::unix::fs::lchown(path, Some(ATTACKER_UID), Some(ATTACKER_UID)).unwrap();
}

/// The answer (`welcome` or `error`) to one registration or login on its own connection.
fn authenticate(server: &Server, register: bool, name: &str, password: &str) -> Value {
    RawConnection::connect(server.addr).authenticate(register, name, password)
}

fn register(server: &Server, name: &str) -> Value {
    authenticate(server, true, name, PASSWORD)
}

/// Registers `name` on a connection of its own and waits until the server has seen that
/// connection close (`NAME left`), so that a later login as `name` is not `already_online`.
fn register_and_leave(server: &Server, name: &str) {
    assert_welcome(&register(server, name));
    server.wait_for_log(&format!(" {name} left"));
}

fn assert_welcome(answer: &Value) {
    assert_eq!(answer["type"], "welcome", "{answer}");
}

/// Asserts `answer` is the error `code` and returns its message.
fn assert_refused(answer: &Value, code: &str) -> String {
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], code, "{answer}");
    answer["message"].as_str().unwrap().to_string()
}

/// The usernames in a users file.
fn names_on_disk(users: &Path) -> Vec<String> {
    read_users(users)["users"]
        .as_array()
        .expect("a users array")
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect()
}

/// The server binary run to completion (a start-up refusal is expected).
fn server_command(users: &Path) -> Command {
    let mut command = Command::new(server_bin());
    command
        .timeout(DEADLINE)
        .args(["--bind", "127.0.0.1:0", "--scrypt-log-n", "10", "--users"])
        .arg(users);
    command
}

/// Something planted by the attacker and what must still be true of it after the attack.
struct Planted {
    path: PathBuf,
    /// For a symbolic link: its target, with the target's contents; for a file: its contents.
    link_to: Option<PathBuf>,
    contents: Vec<u8>,
}

impl Planted {
    /// A symbolic link at `path` to a new file in `victims` that the attacker wants overwritten.
    fn link(path: PathBuf, victims: &Path) -> Planted {
        let target = victims.join(format!(
            "victim-of-{}",
            path.file_name().unwrap().to_string_lossy()
        ));
        let contents = format!("precious contents of {}\n", target.display()).into_bytes();
        fs::write(&target, &contents).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        give_away(&path);
        Planted {
            path,
            link_to: Some(target),
            contents,
        }
    }

    /// A regular file at `path`, mode 0666, owned by the attacker, waiting to be filled.
    fn file(path: PathBuf) -> Planted {
        let contents = b"the attacker's file\n".to_vec();
        fs::write(&path, &contents).unwrap();
        chmod(&path, 0o666);
        give_away(&path);
        Planted {
            path,
            link_to: None,
            contents,
        }
    }

    /// Asserts that the planted thing, and what a link points to, are as planted.
    fn assert_untouched(&self) {
        if let Some(target) = &self.link_to {
            assert_eq!(
                fs::read(target).unwrap(),
                self.contents,
                "{} was written through the link {}",
                target.display(),
                self.path.display()
            );
        }
        let meta = fs::symlink_metadata(&self.path)
            .unwrap_or_else(|e| panic!("{} is gone: {e}", self.path.display()));
        assert_eq!(meta.uid(), ATTACKER_UID, "{}", self.path.display());
        match &self.link_to {
            Some(_) => assert!(meta.file_type().is_symlink(), "{}", self.path.display()),
            None => {
                assert!(meta.file_type().is_file(), "{}", self.path.display());
                assert_eq!(meta.mode() & 0o7777, 0o666, "{}", self.path.display());
                assert_eq!(
                    fs::read(&self.path).unwrap(),
                    self.contents,
                    "{} was written",
                    self.path.display()
                );
            }
        }
    }
}

/// Asserts that `users` is a regular file, mode 0600, of the server's user (ours), holding
/// exactly `names`.
fn assert_private_users_file(users: &Path, names: &[&str]) {
    // First: it waits for the server to fold its journal in.
    assert_eq!(names_on_disk(users), names);
    let meta = fs::symlink_metadata(users).unwrap();
    assert!(
        meta.file_type().is_file(),
        "{} is not a regular file: {:?}",
        users.display(),
        meta.file_type()
    );
    assert_eq!(meta.mode() & 0o7777, 0o600, "mode of {}", users.display());
    assert_eq!(meta.uid(), our_uid(), "owner of {}", users.display());
}

/// The names the temporary file has had: `.users.json.tmp.<pid>` (so for the server's pid and
/// its neighbours), plus a few guesses at other schemes.
fn temporary_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = (pid.saturating_sub(3)..=pid + 3)
        .map(|p| format!(".users.json.tmp.{p}"))
        .collect();
    names.extend(
        [
            ".users.json.tmp",
            ".users.json.tmp.0",
            "users.json.tmp",
            "users.json.new",
        ]
        .map(String::from),
    );
    names
}

/// A local attacker plants, under every name the temporary file has had and a few guesses,
/// symbolic links to files they want overwritten (first round) or 0666 files of theirs (second
/// round), in a world-writable sticky folder like /tmp, after the server started (its pid is
/// known then) and before anyone registers. A registration must write neither through the links
/// nor into the files; the users file stays a private regular file of the server's user; a
/// restart's clean-up leaves the planted things (and their targets) alone.
#[test]
fn planted_temporary_files_are_neither_followed_nor_filled() {
    if !is_root() {
        eprintln!("skipped: only root can plant files as another user");
        return;
    }
    for (round, links_at_pid) in [true, false].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        chmod(&shared, 0o1777);
        let victims = dir.path().join("victims");
        fs::create_dir(&victims).unwrap();
        let users = shared.join("users.json");
        let mut server = Server::start(&users, &[]);

        let planted: Vec<Planted> = temporary_names(server.pid())
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let path = shared.join(name);
                // The pid's own name gets this round's kind; the others alternate.
                let is_pid = path.ends_with(format!(".users.json.tmp.{}", server.pid()));
                let link = if is_pid { links_at_pid } else { i % 2 == 0 };
                match link {
                    true => Planted::link(path, &victims),
                    false => Planted::file(path),
                }
            })
            .collect();

        assert_welcome(&register(&server, "alice"));
        assert_welcome(&register(&server, "bob"));
        for p in &planted {
            p.assert_untouched();
        }
        assert_private_users_file(&users, &["alice", "bob"]);
        server.wait_for_log("anyone can create files beside the users file");

        // A restart's clean-up of leftovers removes nothing planted.
        assert!(server.terminate().success());
        let server = Server::start(&users, &[]);
        assert_welcome(&authenticate(&server, false, "alice", PASSWORD));
        for p in &planted {
            p.assert_untouched();
        }
        assert_private_users_file(&users, &["alice", "bob"]);
        server.wait_for_log("is named like a temporary users file but is not a regular file");
        eprintln!("round {round}: {} planted names untouched", planted.len());
    }
}

/// A folder anyone may write to (no sticky bit) lets anyone replace the users file; a users
/// file or folder of another user lets that user. The server refuses to start on either, saying
/// why, unless told to go ahead; then it warns.
#[test]
fn a_users_file_someone_else_could_replace_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let users = open.join("users.json");
    server_command(&users)
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(
            predicate::str::contains(format!("users file {}", users.display()))
                .and(predicate::str::contains(
                    "anyone on this machine can replace",
                ))
                .and(predicate::str::contains("--allow-unsafe-users-file")),
        );
    assert!(!users.exists(), "the refused server created the file");
    let server = Server::start(&users, &["--allow-unsafe-users-file"]);
    server.wait_for_log("anyone on this machine can replace the users file");
    assert_welcome(&register(&server, "alice"));
    drop(server);

    if !is_root() {
        eprintln!("skipped the owner checks: only root can give a file away");
        return;
    }
    let private = dir.path().join("private");
    fs::create_dir(&private).unwrap();
    let users = private.join("users.json");
    fs::copy(fixture("users-ln10.json"), &users).unwrap();
    chmod(&users, 0o600);
    give_away(&users);
    let before = fs::read(&users).unwrap();
    server_command(&users).assert().code(1).stderr(
        predicate::str::contains(format!("belongs to uid {ATTACKER_UID}"))
            .and(predicate::str::contains("refusing to start")),
    );
    assert_eq!(fs::read(&users).unwrap(), before);
}

/// An administrator edits the users file while the server runs. Until they send SIGHUP the edit
/// is not read (the account they added does not log in yet) and never written over: a
/// registration is refused with `storage_failure`, the log says to send SIGHUP, the file stays
/// as they wrote it. After SIGHUP the added account logs in, the removed one does not, and
/// registrations go on. A file broken by hand and signalled is not loaded: logins go on with the
/// accounts last read, and registrations wait until a fixed file is signalled.
#[test]
fn a_hand_edit_loads_on_sighup_and_is_never_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    fs::copy(fixture("users-ln10.json"), &users).unwrap();
    chmod(&users, 0o600);
    let server = Server::start(&users, &[]);
    assert_welcome(&authenticate(&server, false, "Bob", "bob-password"));

    // The hand edit: carol (alice's hash under another name) in, Bob out.
    let mut edited = read_users(&users);
    let mut carol = edited["users"][0].clone();
    carol["username"] = "carol".into();
    edited["users"] = Value::Array(vec![edited["users"][0].clone(), carol]);
    let edited = serde_json::to_string_pretty(&edited).unwrap();
    fs::write(&users, &edited).unwrap();

    // Not read yet, and never written over.
    assert_refused(
        &authenticate(&server, false, "carol", ALICE_PASSWORD),
        "bad_credentials",
    );
    assert_refused(&register(&server, "dave"), "storage_failure");
    server.wait_for_log(&format!(
        "{}: changed since the server last read or wrote it; nothing is written over it until \
         the server reads it again: once the file is as it should be, send SIGHUP (kill -HUP {})",
        users.display(),
        server.pid()
    ));
    assert_eq!(fs::read_to_string(&users).unwrap(), edited);

    server.hangup();
    server.wait_for_log(&format!(
        "users file {}: read again, 2 accounts; added [\"carol\"], removed [\"Bob\"], changed []",
        users.display()
    ));
    assert_welcome(&authenticate(&server, false, "carol", ALICE_PASSWORD));
    assert_refused(
        &authenticate(&server, false, "Bob", "bob-password"),
        "bad_credentials",
    );
    register_and_leave(&server, "dave");
    assert_eq!(names_on_disk(&users), ["alice", "carol", "dave"]);

    // Broken by hand and signalled: not loaded, never written over, nothing acknowledged.
    let broken = b"{\"version\": 1, \"users\": [ oops\n";
    fs::write(&users, broken).unwrap();
    server.hangup();
    server.wait_for_log(&format!("users file {}: is not valid: ", users.display()));
    assert_welcome(&authenticate(&server, false, "dave", PASSWORD));
    assert_refused(&register(&server, "erin"), "storage_failure");
    assert_eq!(fs::read(&users).unwrap(), broken);

    // Fixed by hand (without dave) and signalled: the file as written now is what counts.
    fs::write(&users, &edited).unwrap();
    server.hangup();
    server.wait_for_log_count("read again, 2 accounts", 2);
    assert_welcome(&register(&server, "erin"));
    assert_private_users_file(&users, &["alice", "carol", "erin"]);
}

/// A name that looks like an existing one (`I`, `l` and `1`; `O` and `0`; any case) is refused
/// with `name_taken` and a message that names the clash; a different name is accepted. Logins
/// still go by the exact name, case aside.
#[test]
fn look_alike_names_are_refused_and_different_ones_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let server = Server::start(&users, &[]);
    register_and_leave(&server, "alice");
    assert_welcome(&register(&server, "bob"));
    for look_alike in ["aIice", "a1ice", "AL1CE", "ailce", "b0b", "BOB"] {
        let message = assert_refused(&register(&server, look_alike), "name_taken");
        assert!(
            message.contains("too similar to an existing one")
                || message.contains("already registered"),
            "{look_alike}: {message}"
        );
    }
    let message = assert_refused(&register(&server, "aIice"), "name_taken");
    assert!(message.contains("\"alice\""), "{message}");
    assert_welcome(&register(&server, "alicia"));
    assert_welcome(&register(&server, "bobby"));
    assert_eq!(names_on_disk(&users), ["alice", "alicia", "bob", "bobby"]);
    assert_welcome(&authenticate(&server, false, "ALICE", PASSWORD));
    assert_refused(
        &authenticate(&server, false, "aIice", PASSWORD),
        "bad_credentials",
    );
}

/// A users file that already holds two look-alike names (written before the rule) loads with a
/// warning naming them; both log in, and a third like them is refused.
#[test]
fn a_users_file_with_look_alike_names_loads_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let mut file = read_users(&fixture("users-ln10.json"));
    let mut twin = file["users"][0].clone();
    twin["username"] = "aIice".into();
    file["users"].as_array_mut().unwrap().push(twin);
    fs::write(&users, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    chmod(&users, 0o600);
    let server = Server::start(&users, &[]);
    assert_welcome(&authenticate(&server, false, "alice", ALICE_PASSWORD));
    assert_welcome(&authenticate(&server, false, "aIice", ALICE_PASSWORD));
    assert_refused(&register(&server, "a1ice"), "name_taken");
    server.wait_for_log("have look-alike names");
    assert!(server.log().contains("\"aIice\""), "{}", server.log());
}
