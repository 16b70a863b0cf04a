//! The users file under stress and abuse, through the real `p2pchat-server`: SIGKILL in the middle
//! of a stream of registrations, many registrations at once, stored hashes outside the allowed
//! cost, re-hashing at login, and users files that are symlinked, exposed, corrupt or unreadable.
//!
//! Registrations go over raw TCP (one connection each: `hello`, `register`, one answer), which is
//! fast and lets a test see exactly which registrations were answered `welcome`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Instant;

use assert_cmd::Command;
use common::{
    fixture, permission_bits, read_users, server_bin, RawConnection, Server, DEADLINE, TEST_LOG_N,
};
use predicates::prelude::*;

/// Flags every server in this suite gets besides its scrypt cost: room for the many connections
/// these tests open at once from one address, not logged in yet, and for the hundreds of accounts
/// they register from it, unthrottled (the per-address limits are tests/attacks.rs's subject).
const LIMIT_FLAGS: &[&str] = &[
    "--max-clients",
    "300",
    "--max-pending-per-ip",
    "200",
    "--max-per-ip",
    "300",
    "--register-per-ip-hour",
    "1000000",
    "--login-free-failures",
    "1000000",
];

/// The server binary run to completion: a start-up failure is expected, and a server that starts
/// instead (the check under test missing) fails the test at the deadline rather than hanging it.
fn server_command() -> Command {
    let mut command = Command::new(server_bin());
    command.timeout(DEADLINE);
    command
}

/// Starts a server on `users` at scrypt cost 2^`log_n`, with [`LIMIT_FLAGS`].
fn start_server(users: &Path, log_n: &str) -> Server {
    let mut args = vec!["--scrypt-log-n", log_n];
    args.extend_from_slice(LIMIT_FLAGS);
    Server::start_with(users, &args)
}

const PASSWORD: &str = "durable-password";

/// How one login or registration over raw TCP ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Welcome,
    /// An `error` answer, by its code.
    Refused(String),
    /// No answer: the connection failed or ended first (the server is gone).
    Nothing,
}

/// Sends a `register` (or `login`, when `register` is false) on `conn` and reads the answer. The
/// `try_` calls never panic on a reset: a server killed with SIGKILL resets connections.
fn authenticate(
    conn: &mut RawConnection,
    register: bool,
    username: &str,
    password: &str,
) -> Answer {
    match conn.try_authenticate(register, username, password) {
        None => Answer::Nothing,
        Some(answer) if answer["type"] == "welcome" => Answer::Welcome,
        Some(answer) if answer["type"] == "error" => {
            Answer::Refused(answer["code"].as_str().unwrap_or_default().to_string())
        }
        Some(other) => panic!("unexpected answer to {username:?}'s authentication: {other}"),
    }
}

fn register(addr: SocketAddr, username: &str) -> Answer {
    match RawConnection::try_connect(addr) {
        Some(mut conn) => authenticate(&mut conn, true, username, PASSWORD),
        None => Answer::Nothing,
    }
}

fn login(addr: SocketAddr, username: &str, password: &str) -> Answer {
    let mut conn = RawConnection::try_connect(addr).expect("connect to the server");
    authenticate(&mut conn, false, username, password)
}

/// The usernames in a users file (which must parse).
fn names_on_disk(users: &Path) -> Vec<String> {
    read_users(users)["users"]
        .as_array()
        .expect("a users array")
        .iter()
        .map(|u| u["username"].as_str().expect("a username").to_string())
        .collect()
}

/// The stored hash of `username` in a users file.
fn hash_on_disk(users: &Path, username: &str) -> String {
    read_users(users)["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == username)
        .unwrap_or_else(|| panic!("{username} is not in the file"))["password_hash"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Registers `count` names at once, each on its own connection, all sent together.
fn register_all_at_once(addr: SocketAddr, names: Vec<String>) -> Vec<(String, Answer)> {
    // Every connection is open and greeted before any registration is sent.
    let barrier = Arc::new(Barrier::new(names.len()));
    let threads: Vec<_> = names
        .into_iter()
        .map(|name| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let conn = RawConnection::try_connect(addr);
                barrier.wait(); // before any panic: a thread that never arrives would hang the rest
                let mut conn = conn.expect("connect and read hello");
                let answer = authenticate(&mut conn, true, &name, PASSWORD);
                (name, answer)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Rounds of the kill test, registering connections at once, and safety bound per worker.
const KILL_ROUNDS: usize = 5;
const REGISTERING_CONNECTIONS: usize = 6;
const MAX_REGISTRATIONS_PER_WORKER: usize = 200;

/// Atomicity, not durability: after every SIGKILL the server starts again (the users file parses,
/// the journal's records are whole or a torn last one), folds the journal into the users file,
/// which then holds every account that was answered `welcome` (no lost update), and leaves no
/// temporary file and no journal; every one of those accounts logs in. SIGKILL ends the process,
/// not the kernel, whose page cache keeps every write: a write without its fsyncs passes this test
/// too. The fsyncs are checked by the users file layer's unit tests (src/user_store/).
#[test]
fn kill_9_during_registrations_leaves_a_whole_users_file_with_every_welcomed_account() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let mut acknowledged = BTreeSet::new();
    for round in 0..KILL_ROUNDS {
        // Starting at all proves the files the last SIGKILL left behind load.
        let mut server = start_server(&users, TEST_LOG_N);
        let addr = server.addr;
        // A write the SIGKILL interrupted left a temporary file (with hashes in it): removed;
        // the journal it left was folded into the users file; the lock is the running server's.
        assert_eq!(
            files_in(dir.path()),
            ["users.json", "users.json.lock"],
            "round {round}"
        );
        assert_all_on_disk(&users, &acknowledged, round);
        let kill_after = 5 + 4 * round;
        let stop = Arc::new(AtomicBool::new(false));
        let (acks, acked) = mpsc::channel::<String>();
        let workers: Vec<_> = (0..REGISTERING_CONNECTIONS)
            .map(|worker| {
                let stop = stop.clone();
                let acks = acks.clone();
                thread::spawn(move || {
                    let mut welcomed = Vec::new();
                    let mut interrupted = false;
                    for i in 0..MAX_REGISTRATIONS_PER_WORKER {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let name = format!("r{round}w{worker}n{i}");
                        match register(addr, &name) {
                            Answer::Welcome => {
                                welcomed.push(name.clone());
                                let _ = acks.send(name);
                            }
                            Answer::Refused(code) => panic!("{name}: refused with {code}"),
                            Answer::Nothing => {
                                // The server is gone; the registration may or may not be saved.
                                interrupted = true;
                                break;
                            }
                        }
                    }
                    (welcomed, interrupted)
                })
            })
            .collect();
        drop(acks);
        let start = Instant::now();
        for _ in 0..kill_after {
            let left = DEADLINE.saturating_sub(start.elapsed());
            acked
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("round {round}: fewer than {kill_after} welcomes"));
        }
        // Registrations are still streaming in on the other connections.
        server.kill(); // SIGKILL
        stop.store(true, Ordering::SeqCst);
        let mut round_acknowledged = 0;
        let mut in_flight = 0;
        for worker in workers {
            let (welcomed, interrupted) = worker.join().expect("a registering connection panicked");
            round_acknowledged += welcomed.len();
            in_flight += usize::from(interrupted);
            acknowledged.extend(welcomed);
        }
        assert!(round_acknowledged >= kill_after);
        eprintln!(
            "round {round}: killed after {kill_after} welcomes; {round_acknowledged} welcomed \
             this round, {in_flight} in flight; {} welcomed in all; left beside the users file: \
             {:?}",
            acknowledged.len(),
            &files_in(dir.path())[1..]
        );
    }
    let server = start_server(&users, TEST_LOG_N);
    assert_eq!(files_in(dir.path()), ["users.json", "users.json.lock"]);
    assert_all_on_disk(&users, &acknowledged, KILL_ROUNDS);
    // The survivors of every crash log in.
    for name in &acknowledged {
        assert_eq!(
            login(server.addr, name, PASSWORD),
            Answer::Welcome,
            "{name}"
        );
    }
}

/// Asserts that every account in `acknowledged` is in the users file.
fn assert_all_on_disk(users: &Path, acknowledged: &BTreeSet<String>, round: usize) {
    let on_disk: BTreeSet<String> = names_on_disk(users).into_iter().collect();
    let lost: Vec<_> = acknowledged.difference(&on_disk).collect();
    assert!(
        lost.is_empty(),
        "after round {round}: answered welcome but not on disk: {lost:?}"
    );
}

#[test]
fn a_hundred_concurrent_registrations_are_all_welcomed_and_all_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let server = start_server(&users, TEST_LOG_N);
    let names: Vec<String> = (0..100).map(|i| format!("user{i:03}")).collect();
    let answers = register_all_at_once(server.addr, names.clone());
    let refused: Vec<_> = answers
        .iter()
        .filter(|(_, a)| *a != Answer::Welcome)
        .collect();
    assert!(refused.is_empty(), "not welcomed: {refused:?}");
    let mut on_disk = names_on_disk(&users);
    on_disk.sort();
    assert_eq!(on_disk, names);
}

/// Rounds of the same-name race: each is a fresh chance for a missing check to let two through.
const SAME_NAME_ROUNDS: usize = 5;

#[test]
fn concurrent_registrations_of_one_name_make_exactly_one_account() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let server = start_server(&users, TEST_LOG_N);
    let mut winners = Vec::new();
    for round in 0..SAME_NAME_ROUNDS {
        // Names differ only in case: one account all the same.
        let names = (0..20)
            .map(|i| {
                if i % 2 == 0 {
                    format!("carol{round}")
                } else {
                    format!("Carol{round}")
                }
            })
            .collect();
        let answers = register_all_at_once(server.addr, names);
        let welcomed: Vec<_> = answers
            .iter()
            .filter(|(_, a)| *a == Answer::Welcome)
            .collect();
        assert_eq!(welcomed.len(), 1, "round {round}: {answers:?}");
        let taken = answers
            .iter()
            .filter(|(_, a)| *a == Answer::Refused("name_taken".into()))
            .count();
        assert_eq!(taken, 19, "round {round}: {answers:?}");
        winners.push(welcomed[0].0.clone());
        assert_eq!(names_on_disk(&users), winners, "round {round}");
    }
}

#[test]
fn stored_hashes_outside_the_allowed_cost_are_warned_about_and_refused_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::copy(fixture("users-out-of-range.json"), &users).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::read(&users).unwrap();
    let server = start_server(&users, TEST_LOG_N);
    server.wait_for_log("listening on");
    let log = server.log();
    for (name, why) in [("heavy", "ln=21"), ("wide", "p=17")] {
        let warning = log
            .lines()
            .find(|l| l.contains(&format!("account {name:?}")))
            .unwrap_or_else(|| panic!("no warning about {name}; log:\n{log}"));
        assert!(
            warning.contains("WARN") && warning.contains(why),
            "{warning}"
        );
    }
    // Right passwords, refused like any failure; the accounts in range are unaffected.
    assert_eq!(
        login(server.addr, "heavy", "heavy-password"),
        Answer::Refused("bad_credentials".into())
    );
    assert_eq!(
        login(server.addr, "wide", "wide-password"),
        Answer::Refused("bad_credentials".into())
    );
    assert_eq!(
        login(server.addr, "alice", "alice-password"),
        Answer::Welcome
    );
    assert_eq!(login(server.addr, "bob", "bob-password"), Answer::Welcome);
    server.wait_for_log("login as \"heavy\" refused: its stored password hash is out of range");
    server.wait_for_log("login as \"wide\" refused: its stored password hash is out of range");
    let log = server.log();
    assert!(
        !log.contains("heavy-password") && !log.contains("$scrypt$"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&users).unwrap(),
        before,
        "the file was changed"
    );
}

#[test]
fn scrypt_flags_outside_the_allowed_cost_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    for (flags, complaint) in [
        (["--scrypt-log-n", "21"].as_slice(), "--scrypt-log-n"),
        (&["--scrypt-log-n", "0"], "--scrypt-log-n"),
        (&["--scrypt-r", "33"], "--scrypt-r"),
        (&["--scrypt-p", "17"], "--scrypt-p"),
        (&["--scrypt-log-n", "20", "--scrypt-r", "16"], "2048 MiB"),
        (&["--scrypt-log-n", "16", "--scrypt-r", "1"], "16 * r"),
    ] {
        server_command()
            .args(["--bind", "127.0.0.1:0", "--users"])
            .arg(&users)
            .args(flags)
            .assert()
            .code(2)
            .stdout(predicate::str::is_empty())
            .stderr(predicate::str::contains(complaint).and(predicate::str::contains("error:")));
        assert!(
            !users.exists(),
            "{flags:?}: the server went as far as the users file"
        );
    }
    // The bounds themselves are allowed (starting hashes nothing, so this is quick).
    let mut server = Server::start_with(
        &users,
        &[
            "--scrypt-log-n",
            "20",
            "--scrypt-r",
            "8",
            "--scrypt-p",
            "16",
        ],
    );
    server.wait_for_log("scrypt ln=20 r=8 p=16");
    assert!(server.terminate().success());
}

/// `users.json` in `folder` (made if missing), a copy of the fixture `users-ln10.json`: alice
/// (password `alice-password`) and Bob, hashed at ln=10.
fn fixture_users_in(folder: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(folder).unwrap();
    let users = folder.join("users.json");
    std::fs::copy(fixture("users-ln10.json"), &users).unwrap();
    users
}

#[test]
fn a_weaker_stored_hash_is_rehashed_at_login_and_the_others_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let users = fixture_users_in(dir.path());
    let alice_before = hash_on_disk(&users, "alice");
    let bob_before = hash_on_disk(&users, "Bob");
    let server = start_server(&users, "11");
    server.wait_for_log("2 account(s) have password hashes below the current cost ln=11,r=8,p=1");
    assert_eq!(
        login(server.addr, "alice", "not-alices-password"),
        Answer::Refused("bad_credentials".into())
    );
    assert_eq!(hash_on_disk(&users, "alice"), alice_before);
    assert_eq!(
        login(server.addr, "alice", "alice-password"),
        Answer::Welcome
    );
    let alice_after = hash_on_disk(&users, "alice");
    assert!(
        alice_after.starts_with("$scrypt$ln=11,r=8,p=1$"),
        "{alice_after}"
    );
    assert_eq!(hash_on_disk(&users, "Bob"), bob_before);
    server.wait_for_log("re-hashed the password of \"alice\" from ln=10,r=8,p=1 to ln=11,r=8,p=1");
    let log = server.log();
    for secret in [&alice_before, &alice_after, "alice-password"] {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
    assert_eq!(permission_bits(&users), 0o600);
    drop(server);
    // The new hash is the one that counts now, after a restart too.
    let server = start_server(&users, "11");
    assert_eq!(
        login(server.addr, "ALICE", "alice-password"),
        Answer::Welcome
    );
    assert_eq!(
        login(server.addr, "bob", "alice-password"),
        Answer::Refused("bad_credentials".into())
    );
    assert_eq!(hash_on_disk(&users, "alice"), alice_after);
}

#[test]
fn a_failed_rehash_write_is_logged_and_the_login_still_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data");
    let users = fixture_users_in(&folder);
    let server = start_server(&users, "11");
    // The users file's folder disappears: no write can succeed, even as root.
    std::fs::remove_dir_all(&folder).unwrap();
    assert_eq!(
        login(server.addr, "alice", "alice-password"),
        Answer::Welcome
    );
    server.wait_for_log("could not save the re-hashed password of \"alice\"");
}

#[test]
fn a_symlinked_users_file_is_warned_about_and_its_target_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let target = fixture_users_in(&dir.path().join("real"));
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("users.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let server = start_server(&link, TEST_LOG_N);
    server.wait_for_log(&format!(
        "users file {} is a symbolic link to {}",
        link.display(),
        target.display()
    ));
    assert!(server.log().contains("WARN"), "{}", server.log());
    assert_eq!(register(server.addr, "carol"), Answer::Welcome);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(names_on_disk(&target), ["alice", "Bob", "carol"]);
}

#[test]
fn a_users_file_open_to_group_or_others_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let users = fixture_users_in(dir.path());
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let private = start_server(&users, TEST_LOG_N);
    private.wait_for_log("listening on");
    assert!(!private.log().contains("WARN"), "{}", private.log());
    drop(private);

    for (mode, access) in [(0o644, "read"), (0o620, "write"), (0o666, "read and write")] {
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(mode)).unwrap();
        let server = start_server(&users, TEST_LOG_N);
        server.wait_for_log(&format!(
            "users file {} has mode {mode:04o}: group or others can {access} it",
            users.display()
        ));
    }
    // The next change makes it private again.
    let server = start_server(&users, TEST_LOG_N);
    assert_eq!(register(server.addr, "carol"), Answer::Welcome);
    assert_eq!(names_on_disk(&users), ["alice", "Bob", "carol"]);
    assert_eq!(permission_bits(&users), 0o600);
}

#[test]
fn a_corrupt_truncated_or_unreadable_users_file_stops_the_server_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Corrupt: a block of zeros in the middle, as a crash of the file system may leave.
    let mut corrupt = std::fs::read(fixture("users-ln10.json")).unwrap();
    corrupt[100..140].fill(0);
    let corrupt_path = dir.path().join("corrupt.json");
    std::fs::write(&corrupt_path, &corrupt).unwrap();
    let truncated_path = dir.path().join("truncated.json");
    std::fs::copy(fixture("users-truncated.json"), &truncated_path).unwrap();
    // Unreadable, even by root: a folder where the file should be (chmod 000 would not do).
    let unreadable_path = dir.path().join("unreadable.json");
    std::fs::create_dir(&unreadable_path).unwrap();
    std::fs::write(unreadable_path.join("inside"), b"keep me").unwrap();

    for (path, complaint) in [
        (&corrupt_path, "is not valid: control character"),
        (&truncated_path, "is not valid: EOF while parsing"),
        // Refused before it is opened: only a regular file is ever read.
        (&unreadable_path, "is not a regular file"),
    ] {
        server_command()
            .args([
                "--bind",
                "127.0.0.1:0",
                "--scrypt-log-n",
                TEST_LOG_N,
                "--users",
            ])
            .arg(path)
            .assert()
            .code(1)
            .stdout(predicate::str::is_empty())
            .stderr(
                predicate::str::contains(format!("users file {}", path.display()))
                    .and(predicate::str::contains(complaint)),
            );
    }
    assert_eq!(std::fs::read(&corrupt_path).unwrap(), corrupt);
    assert_eq!(
        std::fs::read(&truncated_path).unwrap(),
        std::fs::read(fixture("users-truncated.json")).unwrap()
    );
    let inside: Vec<_> = std::fs::read_dir(&unreadable_path)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(inside, ["inside"]);
    assert_eq!(
        std::fs::read(unreadable_path.join("inside")).unwrap(),
        b"keep me"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 3, "no temporary file: {leftovers:?}");
}

/// The users journal beside `users`.
fn journal_of(users: &Path) -> std::path::PathBuf {
    users.with_file_name("users.json.journal")
}

/// The fixture's accounts (`alice` and `Bob`, passwords `alice-password` and `bob-password`) as
/// journal records, the way the server appends them, and a users file with nobody in it.
fn journal_of_the_fixture(users: &Path) -> Vec<u8> {
    std::fs::write(users, b"{\"version\": 1, \"users\": []}\n").unwrap();
    std::fs::set_permissions(users, std::fs::Permissions::from_mode(0o600)).unwrap();
    read_users(&fixture("users-ln10.json"))["users"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|u| {
            p2pchat::user_store::journal::render_record(&p2pchat::user_store::StoredUser {
                username: u["username"].as_str().unwrap().into(),
                password_hash: u["password_hash"].as_str().unwrap().into(),
            })
        })
        .collect()
}

/// A crash in the middle of an append leaves part of a record, or zeros where the file system had
/// grown the file: never acknowledged. The server starts, warns, folds the whole records into the
/// users file and removes the journal; those accounts log in.
#[test]
fn a_torn_or_zero_filled_journal_tail_is_ignored_and_the_whole_records_load() {
    for (round, tail) in [
        b"{\"username\":\"carol\",\"password_hash\":\"$scr".as_slice(),
        &[0; 512],
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.json");
        let mut journal = journal_of_the_fixture(&users);
        journal.extend_from_slice(tail);
        std::fs::write(journal_of(&users), &journal).unwrap();
        let server = start_server(&users, TEST_LOG_N);
        server.wait_for_log(&format!(
            "users journal {}: its last record (line 3, {} bytes) is incomplete",
            journal_of(&users).display(),
            tail.len()
        ));
        assert_eq!(
            files_in(dir.path()),
            ["users.json", "users.json.lock"],
            "round {round}"
        );
        assert_eq!(names_on_disk(&users), ["alice", "Bob"], "round {round}");
        assert_eq!(
            login(server.addr, "alice", "alice-password"),
            Answer::Welcome
        );
        assert_eq!(login(server.addr, "bob", "bob-password"), Answer::Welcome);
    }
}

/// A damaged record with whole records after it cannot come from a crash: the server refuses to
/// start, naming the journal and the line, and leaves the journal and the users file as they are.
#[test]
fn a_damaged_record_in_the_middle_of_the_journal_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let whole = journal_of_the_fixture(&users);
    let first = whole.iter().position(|&b| b == b'\n').unwrap() + 1;
    // Zeros over the first record, then a changed byte in it: two kinds of damage.
    for (what, damage) in [
        ("not a record", 0..16),
        ("its check does not match", first - 50..first - 49),
    ] {
        let mut journal = whole.clone();
        for at in damage {
            journal[at] = if what == "not a record" {
                0
            } else {
                journal[at] ^ 1
            };
        }
        std::fs::write(journal_of(&users), &journal).unwrap();
        let before = std::fs::read(&users).unwrap();
        server_command()
            .args([
                "--bind",
                "127.0.0.1:0",
                "--scrypt-log-n",
                TEST_LOG_N,
                "--users",
            ])
            .arg(&users)
            .assert()
            .code(1)
            .stdout(predicate::str::is_empty())
            .stderr(
                predicate::str::contains(format!(
                    "users journal {} is not valid: line 1: {what}",
                    journal_of(&users).display()
                ))
                .and(predicate::str::contains("refusing to start")),
            );
        assert_eq!(
            std::fs::read(journal_of(&users)).unwrap(),
            journal,
            "{what}"
        );
        assert_eq!(std::fs::read(&users).unwrap(), before, "{what}");
    }
}

/// A crash tears only the last record: two damaged records at the journal's end are damage, not
/// a torn tail. The server starts with every whole record before them (acknowledged accounts are
/// never lost), and keeps the journal aside, byte for byte, as `users.json.journal.damaged` — or,
/// with an earlier one there, the first `.damaged.N` free, never over it — saying so in its log.
#[test]
fn two_damaged_records_at_the_journals_end_keep_it_aside_and_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let mut journal = journal_of_the_fixture(&users);
    let carol = p2pchat::user_store::journal::render_record(&p2pchat::user_store::StoredUser {
        username: "carol".into(),
        password_hash: "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
    });
    // carol's record with one byte changed, then a line of zeros.
    let mut damaged = carol.clone();
    damaged[15] ^= 1;
    journal.extend_from_slice(&damaged);
    journal.extend_from_slice(&[0, 0, 0, 0, b'\n']);
    std::fs::write(journal_of(&users), &journal).unwrap();
    let earlier = dir.path().join("users.json.journal.damaged");
    std::fs::write(&earlier, b"kept aside by an earlier start").unwrap();
    let server = start_server(&users, TEST_LOG_N);
    // The store is open before the server says where it listens: the journal is dealt with.
    assert_eq!(
        files_in(dir.path()),
        [
            "users.json",
            "users.json.journal.damaged",
            "users.json.journal.damaged.1",
            "users.json.lock"
        ]
    );
    assert_eq!(
        std::fs::read(dir.path().join("users.json.journal.damaged.1")).unwrap(),
        journal,
        "kept aside as it was"
    );
    assert_eq!(
        std::fs::read(&earlier).unwrap(),
        b"kept aside by an earlier start"
    );
    assert_eq!(names_on_disk(&users), ["alice", "Bob"]);
    assert_eq!(
        login(server.addr, "alice", "alice-password"),
        Answer::Welcome
    );
    assert_eq!(login(server.addr, "bob", "bob-password"), Answer::Welcome);
    server.wait_for_log(&format!(
        "users journal {}: lines 3 to 4 ({} bytes) after its last whole record are not records",
        journal_of(&users).display(),
        damaged.len() + 5
    ));
    server.wait_for_log(&format!(
        "kept aside as {}",
        dir.path().join("users.json.journal.damaged.1").display()
    ));
}

/// Someone who registers and then looks finds the account in the users file, and the users file
/// alone in its folder, without a restart: the server folds the journal in once registrations
/// pause.
#[test]
fn once_registrations_pause_the_users_file_holds_them_and_is_alone() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let server = start_server(&users, TEST_LOG_N);
    for name in ["alice", "bob", "carol"] {
        assert_eq!(register(server.addr, name), Answer::Welcome);
    }
    let start = Instant::now();
    while files_in(dir.path()) != ["users.json", "users.json.lock"] {
        assert!(
            start.elapsed() < DEADLINE,
            "the journal stays: {:?}",
            files_in(dir.path())
        );
        thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(names_on_disk(&users), ["alice", "bob", "carol"]);
    assert_eq!(permission_bits(&users), 0o600);
}

/// SIGTERM right after registrations: the server folds the journal in before it exits, leaving
/// the users file, complete, alone in its folder.
#[test]
fn a_graceful_stop_leaves_the_users_file_complete_and_alone() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let mut server = start_server(&users, TEST_LOG_N);
    let names: Vec<String> = (0..20).map(|i| format!("user{i:02}")).collect();
    for name in &names {
        assert_eq!(register(server.addr, name), Answer::Welcome);
    }
    assert!(server.terminate().success(), "{}", server.log());
    assert_eq!(files_in(dir.path()), ["users.json"]);
    assert_eq!(names_on_disk(&users), names);
}

/// A second server started on the port of a running one (the same users file, as a second start
/// by mistake would be) stops with "cannot listen" before it opens the users file: the running
/// server's journal, and the users file, are as they were.
#[test]
fn a_second_server_on_a_port_in_use_stops_before_touching_the_users_files() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let running = start_server(&users, TEST_LOG_N);
    // A record the running server has yet to fold in (it folds in only after its own appends).
    let journal = journal_of_the_fixture(&users);
    std::fs::write(journal_of(&users), &journal).unwrap();
    let before = std::fs::read(&users).unwrap();
    server_command()
        .args(["--plaintext", "--scrypt-log-n", TEST_LOG_N, "--bind"])
        .arg(running.addr.to_string())
        .arg("--users")
        .arg(&users)
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("cannot listen on"));
    assert_eq!(std::fs::read(journal_of(&users)).unwrap(), journal);
    assert_eq!(std::fs::read(&users).unwrap(), before);
}

/// One server per users file: a second server on the same file (another port) exits 1 naming
/// the file and the running server's process, before it reads or writes anything; the running
/// server's journal, users file and registrations are untouched. Once the first stops (its lock
/// file goes with it), a server starts on the file again.
#[test]
fn a_second_server_on_the_same_users_file_exits_1_naming_the_file_and_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let mut running = start_server(&users, TEST_LOG_N);
    assert_eq!(register(running.addr, "alice"), Answer::Welcome);
    // Waits for the journal to be folded in: from here on the running server writes nothing.
    assert_eq!(names_on_disk(&users), ["alice"]);
    let before = std::fs::read(&users).unwrap();
    server_command()
        .args([
            "--plaintext",
            "--scrypt-log-n",
            TEST_LOG_N,
            "--bind",
            "127.0.0.1:0",
        ])
        .arg("--users")
        .arg(&users)
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains(format!(
            "users file {}: in use by another server, process {}",
            users.display(),
            running.pid()
        )));
    assert_eq!(std::fs::read(&users).unwrap(), before);
    assert_eq!(files_in(dir.path()), ["users.json", "users.json.lock"]);
    assert_eq!(register(running.addr, "bob"), Answer::Welcome);
    assert!(running.terminate().success(), "{}", running.log());
    assert_eq!(files_in(dir.path()), ["users.json"]);
    let restarted = start_server(&users, TEST_LOG_N);
    for name in ["alice", "bob"] {
        assert_eq!(
            login(restarted.addr, name, PASSWORD),
            Answer::Welcome,
            "{name}"
        );
    }
}

/// An account removed from the users file by hand while its record was still in the journal
/// comes back at start; the server names it in a warning so that the administrator knows.
#[test]
fn accounts_the_journal_adds_at_start_are_named_in_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let journal = journal_of_the_fixture(&users);
    std::fs::write(journal_of(&users), &journal).unwrap();
    let server = start_server(&users, TEST_LOG_N);
    server.wait_for_log(&format!(
        "users journal {}: 2 record(s); it adds 2 account(s) that users file {} does not hold: \
         [\"alice\", \"Bob\"]",
        journal_of(&users).display(),
        users.display()
    ));
}

/// A FIFO planted at the journal's path or the users file's is refused at once (its open would
/// wait for a writer: the server would hang at start), and left where it is.
#[test]
fn a_fifo_at_the_journal_or_users_file_path_stops_the_server_at_once() {
    for planted in ["users.json.journal", "users.json"] {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.json");
        let fifo = dir.path().join(planted);
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that lives through the call.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        server_command()
            .args([
                "--plaintext",
                "--bind",
                "127.0.0.1:0",
                "--scrypt-log-n",
                TEST_LOG_N,
            ])
            .arg("--users")
            .arg(&users)
            .assert()
            .code(1)
            .stdout(predicate::str::is_empty())
            .stderr(
                predicate::str::contains(fifo.display().to_string())
                    .and(predicate::str::contains("is not a regular file")),
            );
        assert_eq!(files_in(dir.path()), [planted], "{planted}");
    }
}
