//! What the server says at start names files a person can open, black-box: the real
//! `p2pchat-server`, started in a folder of its own with relative paths, logs the users file,
//! the TLS key and the certificate by their full paths.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::*;

#[test]
fn the_server_names_its_users_file_and_key_by_full_paths() {
    let dir = tempfile::tempdir().unwrap();
    // The folder as the server sees it from inside (getcwd resolves symbolic links).
    let folder = dir.path().canonicalize().unwrap();
    let mut server = Command::new(server_bin())
        .args(["--bind", "127.0.0.1:0", "--users", "users.json"])
        .args(["--scrypt-log-n", TEST_LOG_N])
        .current_dir(&folder)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start p2pchat-server");
    let (tx, log) = mpsc::channel();
    let stderr = server.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let users = folder.join("users.json");
    let key = folder.join("tls-key.pem");
    let cert = folder.join("tls-cert.pem");
    let wanted = [
        format!("users file {} (", users.display()),
        format!("key {}, certificate {}", key.display(), cert.display()),
    ];
    // The start-up lines, up to the TLS one (the last to name a file), then a look at them.
    let mut seen = Vec::new();
    while !seen.iter().any(|line: &String| line.contains("TLS 1.3")) {
        match log.recv_timeout(DEADLINE) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "the server never said TLS 1.3; it logged:\n{}",
                seen.join("\n")
            ),
        }
    }
    for needle in &wanted {
        assert!(
            seen.iter().any(|line| line.contains(needle)),
            "{needle:?} is not in the log:\n{}",
            seen.join("\n")
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}
