//! The binaries as a user meets them: flags and help, start-up failures, exit codes, the users
//! file at its default cost and from a fixture, connection limits, and graceful shutdown.

mod common;

use std::io::Write;

use assert_cmd::Command;

use common::*;
use predicates::prelude::*;

#[test]
fn server_help_describes_every_flag() {
    let mut cmd = Command::new(server_bin());
    cmd.arg("--help");
    cmd.assert().success().stdout(
        predicate::str::contains("--bind")
            .and(predicate::str::contains("--users"))
            .and(predicate::str::contains("--max-clients"))
            .and(predicate::str::contains("--scrypt-log-n"))
            .and(predicate::str::contains("--scrypt-r"))
            .and(predicate::str::contains("--scrypt-p"))
            .and(predicate::str::contains("0.0.0.0:12000"))
            .and(predicate::str::contains("[default: 64]"))
            .and(predicate::str::contains("send SIGHUP"))
            .and(predicate::str::contains("One server per users file")),
    );
}

#[test]
fn client_help_describes_flags_commands_and_exit_codes() {
    let mut cmd = Command::new(client_bin());
    cmd.arg("--help");
    cmd.assert().success().stdout(
        predicate::str::contains("--server")
            .and(predicate::str::contains("127.0.0.1:12000"))
            .and(predicate::str::contains("--p2p-port"))
            .and(predicate::str::contains("--json"))
            .and(predicate::str::contains("@NAME: TEXT"))
            .and(predicate::str::contains("--accept-new"))
            .and(predicate::str::contains("without a terminal it is refused"))
            .and(predicate::str::contains("Exit status")),
    );
}

/// `-h` is the usage and one line about each flag, without the long text; `--help` leads with
/// the usage too, then the long text (issue 18: eight paragraphs came before `Usage:`).
#[test]
fn short_help_is_short_and_both_lead_with_the_usage() {
    for bin in [client_bin(), server_bin()] {
        let short = Command::new(&bin).arg("-h").assert().success();
        let short = String::from_utf8_lossy(&short.get_output().stdout).into_owned();
        let long = Command::new(&bin).arg("--help").assert().success();
        let long = String::from_utf8_lossy(&long.get_output().stdout).into_owned();
        for help in [&short, &long] {
            assert!(help.starts_with("Usage: "), "{bin:?}: {help}");
        }
        assert!(
            long.len() > short.len() + 500,
            "{bin:?}: --help adds no long text to -h"
        );
        let paragraphs_before_options = short
            .split("Options:")
            .next()
            .unwrap()
            .split("\n\n")
            .count();
        assert!(
            paragraphs_before_options <= 3,
            "{bin:?} -h: {paragraphs_before_options} paragraphs before the options:\n{short}"
        );
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    Command::new(server_bin())
        .args(["--max-clients", "0"])
        .assert()
        .code(2);
    Command::new(server_bin())
        .args(["--bind", "not-an-address"])
        .assert()
        .code(2);
    Command::new(client_bin())
        .args(["--p2p-port", "70000"])
        .assert()
        .code(2);
}

#[test]
fn a_users_file_that_is_not_valid_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture_name, complaint) in [
        ("users-truncated.json", "EOF while parsing"),
        ("users-plaintext.json", "not a PHC string"),
        ("users-duplicate.json", "more than once"),
    ] {
        let users = dir.path().join(fixture_name);
        std::fs::copy(fixture(fixture_name), &users).unwrap();
        let before = std::fs::read(&users).unwrap();
        Command::new(server_bin())
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--users")
            .arg(&users)
            .assert()
            .failure()
            .code(1)
            .stdout(predicate::str::is_empty())
            .stderr(
                predicate::str::contains(users.display().to_string())
                    .and(predicate::str::contains(complaint)),
            );
        assert_eq!(
            std::fs::read(&users).unwrap(),
            before,
            "{fixture_name} was changed"
        );
    }
}

#[test]
fn a_missing_users_file_is_created_empty_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("new-users.json");
    let _server = Server::start(&users, &[]);
    let file = read_users(&users);
    assert_eq!(file, serde_json::json!({"version": 1, "users": []}));
    assert_eq!(permission_bits(&users), 0o600);
}

#[test]
fn a_port_in_use_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    Command::new(server_bin())
        .arg("--bind")
        .arg(taken.local_addr().unwrap().to_string())
        .arg("--users")
        .arg(dir.path().join("users.json"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot listen on"));
}

#[test]
fn new_accounts_use_the_owasp_scrypt_cost_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let server = Server::start_with(&users, &[]);
    ChatClient::register(server.addr, "alice", "default-cost-pw").finish();
    let file = read_users(&users);
    let phc = file["users"][0]["password_hash"].as_str().unwrap();
    assert!(phc.starts_with("$scrypt$ln=17,r=8,p=1$"), "{phc}");
}

#[test]
fn accounts_made_at_another_cost_keep_working() {
    // The fixture was written at ln=10; this server makes new hashes at ln=11.
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::copy(fixture("users-ln10.json"), &users).unwrap();
    let server = Server::start_with(&users, &["--scrypt-log-n", "11"]);
    let alice = ChatClient::login(server.addr, "alice", "alice-password");
    let bob = ChatClient::login(server.addr, "bob", "bob-password");
    assert_eq!(bob.history.last().unwrap()["username"], "Bob");
    drop((alice, bob));
    ChatClient::register(server.addr, "carol", "carol-password").finish();
    let file = read_users(&users);
    let hashes: Vec<&str> = file["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["password_hash"].as_str().unwrap())
        .collect();
    // Logging in re-hashed alice and Bob at the server's cost (tests/durability.rs has the details).
    for hash in &hashes {
        assert!(hash.starts_with("$scrypt$ln=11,"), "{hashes:?}");
    }
    assert_eq!(hashes.len(), 3);
}

#[test]
fn accept_new_without_server_is_a_usage_error_before_any_browse_or_connection() {
    // A server found on the LAN may be anyone's announcement: --accept-new would trust it and
    // send it the password, so the server must be named.
    let dir = tempfile::tempdir().unwrap();
    let refused = Command::new(client_bin())
        .args(["--json", "--accept-new"])
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_STATE_HOME", dir.path())
        .env("HOME", dir.path())
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--accept-new needs --server"))
        .get_output()
        .clone();
    // Nothing was looked for nor connected to (no server_found, no_server_found, connecting):
    // the one event is the error.
    let stdout = String::from_utf8_lossy(&refused.stdout);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{stdout}");
    assert_eq!(events[0]["event"], "error", "{stdout}");
    assert!(!dir.path().join("p2pchat/known_servers").exists());
}

#[test]
fn the_piped_example_from_the_readme_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let mut listener = ChatClient::register(server.addr, "bob", "bob-password");
    // As the README has it (first contact accepted and recorded), in a home of its own.
    Command::new(client_bin())
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--accept-new")
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_STATE_HOME", dir.path())
        .env("HOME", dir.path())
        .write_stdin("register\nalice\nsecret-pass\nhello\n:q\n")
        .assert()
        .success()
        .stdout(predicate::str::contains("logged in as alice"));
    let message = listener.expect_event("message");
    assert_eq!(message["from"], "alice");
    assert_eq!(message["text"], "hello");
    assert_eq!(listener.expect_event("left")["username"], "alice");
}

#[test]
fn registration_rules_are_enforced_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    for (name, password, code) in [
        ("has space", "long-enough", "invalid_username"),
        (
            "a-name-longer-than-twenty",
            "long-enough",
            "invalid_username",
        ),
        ("shortpw", "short", "invalid_password"),
    ] {
        let refused = ChatClient::start(server.addr, name, &["register", name, password]).finish();
        assert_eq!(refused.status.code(), Some(4), "{refused:#?}");
        assert_eq!(refused.events.last().unwrap()["code"], code);
        assert!(!refused.stderr.contains(password) || password == "long-enough");
    }
    assert_eq!(read_users(&server.users)["users"], serde_json::json!([]));
}

#[test]
fn a_bad_answer_at_the_prompt_is_a_local_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    Command::new(client_bin())
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--accept-new")
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("HOME", dir.path())
        .write_stdin("dance\n")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("expected 'login' or 'register'"));
    Command::new(client_bin())
        .arg("--server")
        .arg(server.addr.to_string())
        .arg("--accept-new")
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("HOME", dir.path())
        .write_stdin("login\nalice\n")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("input ended before login"));
}

#[test]
fn an_unreachable_server_exits_3() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Command::new(client_bin())
        .arg("--server")
        .arg(format!("127.0.0.1:{port}"))
        .write_stdin("login\nalice\nalice-password\n")
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cannot reach"));
    Command::new(client_bin())
        .args(["--server", "no-such-host.invalid:12000"])
        .write_stdin("")
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "cannot reach no-such-host.invalid:12000",
        ));
}

#[test]
fn a_port_that_first_says_something_else_than_hello_is_not_a_p2pchat_server() {
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    for (first, says) in [
        (
            &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
            "its first line was not a p2pchat message",
        ),
        (b"{\"type\":\"ping\"}\n", "its first message was not hello"),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts within the deadline, so that a client that never comes fails the test, not
        // hangs it; says `first`, then waits for the client to close.
        listener.set_nonblocking(true).unwrap();
        let played = std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok((mut stream, _)) = listener.accept() {
                    stream.set_nonblocking(false).unwrap();
                    stream.write_all(first).unwrap();
                    let _ = stream.read_to_end(&mut Vec::new());
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        });
        let config = tempfile::tempdir().unwrap();
        Command::new(client_bin())
            .args(["--plaintext", "--server", &addr.to_string()])
            .env("XDG_CONFIG_HOME", config.path())
            .env("XDG_DATA_HOME", config.path())
            .env("HOME", config.path())
            .write_stdin("login\nalice\nalice-password\n")
            .assert()
            .code(3)
            .stderr(predicate::str::contains(format!(
                "{addr} is not a p2pchat server: {says}"
            )));
        assert!(played.join().unwrap(), "the client never came");
    }
}

#[test]
fn connections_beyond_max_clients_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &["--max-clients", "2"]);
    let _a = ChatClient::register(server.addr, "alice", "alice-password");
    // Logged in: a connection not logged in would be closed to make room (tests/slots.rs).
    let (mut first_raw, _) = RawConnection::register(server.addr, "bob", "bob-password", 9);
    let third = ChatClient::start(
        server.addr,
        "carol",
        &["register", "carol", "carol-password"],
    )
    .finish();
    assert_eq!(third.status.code(), Some(3), "{third:#?}");
    assert!(third.stderr.contains("full"), "{}", third.stderr);
    server.wait_for_log("refused: server full");
    // Once a connection closes, there is room again.
    first_raw.write(b"{\"type\":\"quit\"}\n").unwrap();
    let rest = first_raw.read_to_end();
    assert!(rest.iter().all(|v| v["type"] != "error"), "{rest:?}");
    server.wait_for_log(" closed"); // logged once the connection no longer counts
    ChatClient::register(server.addr, "carol", "carol-password");
}

#[test]
fn sigterm_tells_every_client_and_exits_0_with_the_users_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("users.json"), &[]);
    let alice = ChatClient::register(server.addr, "alice", "alice-password");
    let bob = ChatClient::register(server.addr, "bob", "bob-password");
    let mut pending = RawConnection::connect(server.addr);
    // Once the registrations are folded into the users file, the shutdown changes nothing.
    assert_eq!(
        read_users(&server.users)["users"].as_array().unwrap().len(),
        2
    );
    let before = std::fs::read(&server.users).unwrap();

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    for client in [alice, bob] {
        let finished = client.wait();
        assert_eq!(finished.status.code(), Some(5), "{finished:#?}");
        assert!(
            finished.events.iter().any(|e| e["event"] == "shutdown"),
            "{finished:#?}"
        );
        assert!(
            !finished.events.iter().any(|e| e["event"] == "left"),
            "no departures announced during shutdown: {finished:#?}"
        );
    }
    let told = pending.read_to_end();
    assert_eq!(told.last().unwrap()["type"], "shutdown", "{told:?}");
    assert_eq!(std::fs::read(&server.users).unwrap(), before);
    assert!(server.log().contains("received SIGTERM"));
}

#[test]
fn passwords_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let password = "hunter2-very-secret";
    ChatClient::register(server.addr, "alice", password).finish();
    ChatClient::start(
        server.addr,
        "x",
        &["login", "alice", "hunter3-wrong-secret"],
    )
    .finish();
    let mut raw = RawConnection::connect(server.addr);
    raw.write(b"{\"type\":\"login\",\"username\":\"a\",\"password\":[\"hunter4-in-a-list\"],\"p2p_port\":1}\n")
        .unwrap();
    assert_eq!(raw.read_json().unwrap()["code"], "malformed");
    server.wait_for_log("login as \"alice\" refused");
    let log = server.log();
    for secret in ["hunter2", "hunter3", "hunter4"] {
        assert!(!log.contains(secret), "{secret} in log:\n{log}");
    }
}

#[test]
fn a_client_stuck_at_its_password_prompt_delays_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    // Connected, greeted, and then silent, like a person who has not typed their password yet.
    let _stuck: Vec<RawConnection> = (0..5)
        .map(|_| RawConnection::connect(server.addr))
        .collect();
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    alice.send("nobody waited");
    assert_eq!(bob.expect_event("message")["text"], "nobody waited");
}

/// Says on the test binary's own stderr that `test` was skipped and why. Rust's test harness has no
/// skip at run time: the test still counts as passed, so the line must be seen. It bypasses the
/// harness's capture (which would hide an `eprintln!` from a passing test).
fn report_skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
}

#[test]
fn a_hostname_works() {
    let dir = tempfile::tempdir().unwrap();
    // A name, resolved by the system resolver (whichever of ::1 and 127.0.0.1 it gives first).
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let by_name = format!("localhost:{}", server.addr.port());
    let mut alice = ChatClient::start_to(&by_name, "alice", &["register", "alice", "alice-pass"]);
    alice.expect_event("welcome");
}

#[test]
fn ipv6_works_end_to_end_with_a_direct_message() {
    // The server on [::1], both clients on it, a direct message between them.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        report_skipped(
            "ipv6_works_end_to_end_with_a_direct_message",
            "no ::1 on this machine",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server6 = Server::start_on(
        "[::1]:0",
        &dir.path().join("users6.json"),
        &["--scrypt-log-n", TEST_LOG_N],
    );
    let mut carol = ChatClient::register(server6.addr, "carol", "carol-password");
    let mut dave = ChatClient::register(server6.addr, "dave", "dave-password");
    assert_eq!(dave.history.last().unwrap()["peers"][0]["ip"], "::1");
    carol.expect_event("joined");
    carol.send("@dave: over IPv6");
    let direct = dave.expect_event("direct");
    assert_eq!(direct["text"], "over IPv6");
    assert_eq!(direct["source"], carol.p2p_addr().to_string());
}

#[test]
fn messages_too_long_for_a_line_or_a_datagram_are_refused_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    alice.expect_event("joined");

    alice.send(&format!("@bob: {}", "d".repeat(66_000)));
    let error = alice.expect_event("error");
    assert!(
        error["message"].as_str().unwrap().contains("too long"),
        "{error}"
    );
    alice.send(&"r".repeat(70_000));
    let error = alice.expect_event("error");
    assert!(
        error["message"].as_str().unwrap().contains("too long"),
        "{error}"
    );

    // The largest direct message that fits does go through, and so does the next room message.
    alice.send(&format!("@bob: {}", "d".repeat(65_000)));
    assert_eq!(
        bob.expect_event("direct")["text"].as_str().unwrap().len(),
        65_000
    );
    alice.send("short again");
    let seen = bob.until("the short message", |e| e["event"] == "message");
    assert_eq!(seen.last().unwrap()["text"], "short again");
    assert_eq!(seen.iter().filter(|e| e["event"] == "message").count(), 1);
    assert_eq!(seen.iter().filter(|e| e["event"] == "direct").count(), 0);
}
