//! Forgetting a server, black-box: the real binaries, each client's known-servers file in a
//! temporary XDG_CONFIG_HOME.
//!
//! - `p2pchat-client --forget HOST[:PORT]` removes that server's lines (and only those) from the
//!   known-servers file, keeps it private (0600), says what it removed, and exits 0 without
//!   connecting; a server that is not there is said so, exit 0 too (as `ssh-keygen -R`).
//! - A client that was running when the server's key changed (a reconnect meets another
//!   fingerprint) says "SERVER IDENTIFICATION HAS CHANGED" with the `--forget` line to run, not
//!   the words for `--trust`, which it was never given; after `--forget` the next connection
//!   trusts the new key.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// Runs `p2pchat-client ARGS` with `config` as its XDG_CONFIG_HOME and HOME, stdin closed.
fn client(config: &Path, args: &[&str]) -> Output {
    Command::new(client_bin())
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env("XDG_DATA_HOME", config)
        .env("HOME", config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run p2pchat-client")
}

#[test]
fn forget_removes_that_servers_lines_only_and_connects_to_nothing() {
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("p2pchat").join("known_servers");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let old = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
    let other = "SHA256:ypeBEsobvcr6wjGzmiPcTaeG7/gUfE5yuYB3ha/uSLs";
    fs::write(
        &file,
        format!("# lab\nchat.invalid:12000 {old}\nother.invalid:12000 {other}\nchat.invalid:12000 {other}\n"),
    )
    .unwrap();

    // HOST alone means port 12000, as --server does; the host never resolves, so a client that
    // tried to connect would fail (exit 3).
    let output = client(config.path(), &["--forget", "CHAT.invalid"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "forgot chat.invalid:12000: removed line 2 ({old}), line 4 ({other}) of {}",
            file.display()
        )),
        "{stdout}{stderr}"
    );
    assert!(!stdout.contains("connecting"), "{stdout}");
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!("# lab\nother.invalid:12000 {other}\n")
    );
    assert_eq!(permission_bits(&file), 0o600);

    // Again: nothing there, said so, still 0 (as ssh-keygen -R), the file as it was.
    let output = client(config.path(), &["--forget", "chat.invalid:12000"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
    assert!(
        stderr.contains(&format!(
            "chat.invalid:12000 is not in {}; nothing removed",
            file.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!("# lab\nother.invalid:12000 {other}\n")
    );
}

#[test]
fn forget_needs_a_server_and_refuses_the_flags_it_cannot_mean() {
    let config = tempfile::tempdir().unwrap();
    for args in [
        &["--forget", "host:99999"][..],
        &["--forget", "h", "--plaintext"],
        &[
            "--forget",
            "h",
            "--trust",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
        ],
    ] {
        let output = client(config.path(), args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn a_running_client_that_meets_a_new_key_says_the_identification_changed_and_how_to_forget_it() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let config = tempfile::tempdir().unwrap();
    let mut server = Server::start_with_keys("127.0.0.1:0", &users, &dir.path().join("old-key"));
    let addr = server.addr.to_string();
    // No --trust: the client pins the server in its known-servers file (--accept-new).
    let mut alice = ChatClient::start_exact(
        &addr,
        "alice",
        &["--reconnect", "--accept-new"],
        &["register", "alice", "alice-password"],
        config.path(),
    );
    alice.expect_event("welcome");
    server.kill();
    alice.expect_event("reconnecting");
    // The same address, the same accounts, another key.
    let _server = Server::start_with_keys(&addr, &users, &dir.path().join("new-key"));
    let finished = alice.wait();
    let stderr = finished.stderr;
    assert_eq!(finished.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("SERVER IDENTIFICATION HAS CHANGED"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("p2pchat-client --forget {addr}\n")),
        "{stderr}"
    );
    assert!(!stderr.contains("--trust"), "{stderr}");

    // The fix, as told: forget, and the next connection trusts the new key.
    let output = client(config.path(), &["--forget", &addr]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("removed line 1"),
        "{output:?}"
    );
    let mut again = ChatClient::start_exact(
        &addr,
        "alice",
        &["--accept-new"],
        &["login", "alice", "alice-password"],
        config.path(),
    );
    again.expect_event("welcome");
}
