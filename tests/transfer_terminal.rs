//! Files on a person's terminal (a real pty): a transfer's progress is one status line above the
//! prompt, redrawn in place (cursor up, line erased) rather than a line per report, and its end a
//! line of its own in that row; Tab completes the path after `/send NAME`.

mod common;

use std::fs;

use tempfile::TempDir;

use common::pty::TerminalClient;
use common::{ChatClient, Server};

const PASSWORD: &str = "correct horse battery";

/// Moves up one row and erases it: how the status line is redrawn in place.
const ERASE_PREVIOUS_ROW: &str = "\x1b[1A\r\x1b[2K";

#[test]
fn a_transfer_shows_its_progress_on_one_status_line_redrawn_in_place() {
    let users = TempDir::new().unwrap();
    let server = Server::start(&users.path().join("users.json"), &[]);
    let downloads = TempDir::new().unwrap();
    let mut bob = TerminalClient::start(
        server.addr,
        &["--download-dir", downloads.path().to_str().unwrap()],
    );
    bob.register("bob", PASSWORD);
    let mut alice = ChatClient::register(server.addr, "alice", PASSWORD);
    let files = TempDir::new().unwrap();
    let path = files.path().join("transfer.bin");
    fs::write(&path, vec![7u8; 300 * 1024]).unwrap();

    alice.send(&format!("/send bob {}", path.display()));
    bob.wait_for("alice offers transfer.bin (300 KiB) — /accept alice or /decline alice");
    bob.type_keys("/accept alice\n");
    // The first record is always reported: the status line shows.
    let status_at = bob.wait_for("transfer.bin from alice: ");
    let done_at = bob.wait_for("transfer.bin from alice saved as ");
    let between = String::from_utf8_lossy(&bob.output_from(status_at)).into_owned();
    let between = &between[..done_at - status_at];
    // Every later report, and the end, first erase the status line's row.
    let reports = between.matches("transfer.bin from alice: ").count();
    assert_eq!(
        between.matches(ERASE_PREVIOUS_ROW).count(),
        reports + 1,
        "each redraw and the end erase the row before: {between:?}"
    );
    bob.wait_for("SHA-256 ");
    alice.expect("file_done", |e| e["event"] == "file_done");
}

#[test]
fn tab_completes_the_path_after_send_and_the_offer_goes_out() {
    let users = TempDir::new().unwrap();
    let server = Server::start(&users.path().join("users.json"), &[]);
    let mut bob = ChatClient::register(server.addr, "bob", PASSWORD);
    let mut alice = TerminalClient::start(server.addr, &[]);
    alice.register("alice", PASSWORD);
    let files = TempDir::new().unwrap();
    fs::write(files.path().join("quarterly report.pdf"), b"numbers").unwrap();
    let folder = files.path().display().to_string();

    alice.type_keys(&format!("/send bob {folder}/quart\t"));
    alice.wait_for(&format!("{folder}/quarterly report.pdf"));
    alice.type_keys("\n");
    let offer = bob.expect("file_offer", |e| e["event"] == "file_offer");
    assert_eq!(offer["name"], "quarterly report.pdf");
    assert_eq!(offer["size"], 7);
}
