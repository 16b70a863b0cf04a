//! What the client reports about file transfers ([`TransferEvent`], one of the
//! [`ClientEvent`](super::event::ClientEvent)s): every step of an offer and a transfer, as a line
//! for a person or one JSON object for programs (`--json`: `file_offer`, `file_accepted`,
//! `file_declined`, `file_lapsed`, `file_started`, `file_progress`, `file_done`, `file_failed`,
//! `file_cancelled`, and `transfers` for `/transfers`).
//!
//! Names others chose (a peer's, an offered file's) are escaped whole ([`escape`]): a file named
//! `a\n-!- x` or with bidi controls shows as its escapes, never as a line of the client's own.

use serde::{Deserialize, Serialize};

use super::file_size::Bytes;
use super::screen::escape;

/// The mark of the client's own notices ([`crate::client::event::NOTICE`]; not imported, since
/// `event` holds these events: a test checks the two agree).
const NOTICE: &str = "-!-";

/// Which way a file goes, from this client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// This client sends it (`/send`).
    Out,
    /// This client receives it (an offer it got).
    In,
}

/// Who stopped a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelledBy {
    /// The person at this client (`/cancel`, `/decline` of a running one).
    You,
    /// The peer.
    Peer,
}

/// Where a transfer stands, as `/transfers` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Offered, not yet answered.
    Offered,
    /// Accepted, the data connection not yet running (or being set up).
    Accepted,
    /// Bytes flowing.
    Running,
    /// Stopped before the end; it resumes when both are online (`/resume`).
    Interrupted,
}

/// One line of `/transfers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferRow {
    pub transfer: String,
    pub direction: Direction,
    pub peer: String,
    pub name: String,
    pub size: u64,
    /// Bytes the receiver holds (or the sender has sent, as far as it knows).
    pub bytes: u64,
    pub stage: Stage,
    /// Seconds before an unanswered offer lapses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lapses_in: Option<u64>,
}

/// One step of a file transfer. Every one names the transfer (`transfer`: its 32 hex digits), the
/// way it goes (`direction`), the `peer` and the file's `name` (as offered; the saved name is in
/// `file_done`'s `path`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TransferEvent {
    /// An offer: received (`in`: answer with `/accept` or `/decline`) or made (`out`).
    /// `over_limit`: larger than `--max-file-size` (then `/accept` refuses it).
    FileOffer {
        transfer: String,
        direction: Direction,
        peer: String,
        name: String,
        size: u64,
        lapses_in: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        over_limit: bool,
    },
    /// The offer was accepted (by the peer, `out`; by this client, `in`).
    FileAccepted {
        transfer: String,
        direction: Direction,
        peer: String,
        name: String,
    },
    /// The offer was declined (by the peer, `out`; by this client, `in`).
    FileDeclined {
        transfer: String,
        direction: Direction,
        peer: String,
        name: String,
    },
    /// Nobody answered the offer in time: both ends forget it.
    FileLapsed {
        transfer: String,
        direction: Direction,
        peer: String,
        name: String,
    },
    /// Bytes start flowing, from `offset` (not 0 when resumed).
    FileStarted {
        transfer: String,
        direction: Direction,
        peer: String,
        name: String,
        offset: u64,
        size: u64,
    },
    /// How far it is: `bytes` of `size`, `rate` in bytes per second (over the last interval),
    /// `seconds_left` at that rate.
    FileProgress {
        transfer: String,
        direction: Direction,
        peer: String,
        name: String,
        bytes: u64,
        size: u64,
        rate: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        seconds_left: Option<u64>,
    },
    /// The whole file arrived and its SHA-256 matched the sender's (`in`: saved at `path`), or
    /// the receiver confirmed it (`out`: `path` is the file sent).
    FileDone {
        transfer: String,
        direction: Direction,
        peer: String,
        name: String,
        size: u64,
        sha256: String,
        path: String,
    },
    /// It stopped before the end: `reason`; `resumable` when it resumes once both are online
    /// (the receiver's partial file is kept), else it is over.
    FileFailed {
        transfer: String,
        direction: Direction,
        peer: String,
        name: String,
        reason: String,
        resumable: bool,
    },
    /// Stopped for good by `by` (the receiver's partial file is removed).
    FileCancelled {
        transfer: String,
        direction: Direction,
        peer: String,
        name: String,
        by: CancelledBy,
    },
    /// `/transfers`: every offer and transfer.
    Transfers { transfers: Vec<TransferRow> },
}

impl TransferEvent {
    /// The transfer this event is about (`None` for the list).
    pub fn transfer(&self) -> Option<&str> {
        match self {
            TransferEvent::FileOffer { transfer, .. }
            | TransferEvent::FileAccepted { transfer, .. }
            | TransferEvent::FileDeclined { transfer, .. }
            | TransferEvent::FileLapsed { transfer, .. }
            | TransferEvent::FileStarted { transfer, .. }
            | TransferEvent::FileProgress { transfer, .. }
            | TransferEvent::FileDone { transfer, .. }
            | TransferEvent::FileFailed { transfer, .. }
            | TransferEvent::FileCancelled { transfer, .. } => Some(transfer),
            TransferEvent::Transfers { .. } => None,
        }
    }

    /// Whether this event ends what a terminal shows as running (its status line goes).
    pub fn ends_transfer(&self) -> bool {
        matches!(
            self,
            TransferEvent::FileDone { .. }
                | TransferEvent::FileFailed { .. }
                | TransferEvent::FileCancelled { .. }
                | TransferEvent::FileDeclined { .. }
                | TransferEvent::FileLapsed { .. }
        )
    }

    /// The event as a person reads it (one line, the list several).
    pub fn render(&self) -> String {
        match self {
            TransferEvent::FileOffer {
                transfer,
                direction: Direction::In,
                peer,
                name,
                size,
                over_limit,
                ..
            } => {
                let peer = escape(peer);
                let mut line = format!(
                    "{NOTICE} {peer} offers {} ({}) — /accept {peer} or /decline {peer}",
                    escape(name),
                    Bytes(*size)
                );
                if *over_limit {
                    line.push_str(" (larger than --max-file-size: /accept will refuse it)");
                }
                line.push_str(&format!(" [{}]", short(transfer)));
                line
            }
            TransferEvent::FileOffer {
                transfer,
                peer,
                name,
                size,
                lapses_in,
                ..
            } => format!(
                "{NOTICE} offered {} ({}) to {}; waiting for an answer (it lapses in {}) [{}]",
                escape(name),
                Bytes(*size),
                escape(peer),
                duration(*lapses_in),
                short(transfer)
            ),
            TransferEvent::FileAccepted {
                direction,
                peer,
                name,
                ..
            } => match direction {
                Direction::Out => format!("{NOTICE} {} accepted {}", escape(peer), escape(name)),
                Direction::In => {
                    format!("{NOTICE} accepted {} from {}", escape(name), escape(peer))
                }
            },
            TransferEvent::FileDeclined {
                direction,
                peer,
                name,
                ..
            } => match direction {
                Direction::Out => format!("{NOTICE} {} declined {}", escape(peer), escape(name)),
                Direction::In => {
                    format!("{NOTICE} declined {} from {}", escape(name), escape(peer))
                }
            },
            TransferEvent::FileLapsed {
                direction,
                peer,
                name,
                ..
            } => match direction {
                Direction::Out => format!(
                    "{NOTICE} the offer of {} to {} lapsed unanswered",
                    escape(name),
                    escape(peer)
                ),
                Direction::In => format!(
                    "{NOTICE} {}'s offer of {} lapsed unanswered",
                    escape(peer),
                    escape(name)
                ),
            },
            TransferEvent::FileStarted {
                direction,
                peer,
                name,
                offset,
                size,
                ..
            } => {
                let resumed = if *offset > 0 {
                    format!(", resumed at {}", Bytes(*offset))
                } else {
                    String::new()
                };
                format!(
                    "{NOTICE} {} {} {} ({}{resumed})",
                    escape(name),
                    to_or_from(*direction),
                    escape(peer),
                    Bytes(*size)
                )
            }
            TransferEvent::FileProgress {
                direction,
                peer,
                name,
                bytes,
                size,
                rate,
                seconds_left,
                ..
            } => {
                let percent = if *size == 0 {
                    100
                } else {
                    (u128::from(*bytes) * 100 / u128::from(*size)) as u64
                };
                let left = seconds_left.map_or(String::new(), |s| format!(", {} left", clock(s)));
                format!(
                    "{NOTICE} {} {} {}: {percent}%, {} of {}, {}/s{left}",
                    escape(name),
                    to_or_from(*direction),
                    escape(peer),
                    Bytes(*bytes),
                    Bytes(*size),
                    Bytes(*rate)
                )
            }
            TransferEvent::FileDone {
                direction,
                peer,
                name,
                size,
                sha256,
                path,
                ..
            } => match direction {
                Direction::In => format!(
                    "{NOTICE} {} from {} saved as {} ({}, SHA-256 {sha256} checked)",
                    escape(name),
                    escape(peer),
                    escape(path),
                    Bytes(*size)
                ),
                Direction::Out => format!(
                    "{NOTICE} {} sent to {} ({}, SHA-256 {sha256} checked by {})",
                    escape(name),
                    escape(peer),
                    Bytes(*size),
                    escape(peer)
                ),
            },
            TransferEvent::FileFailed {
                direction,
                peer,
                name,
                reason,
                resumable,
                ..
            } => {
                let next = if *resumable {
                    "; it resumes when both are online (/resume)"
                } else {
                    ""
                };
                format!(
                    "! {} {} {} stopped: {}{next}",
                    escape(name),
                    to_or_from(*direction),
                    escape(peer),
                    escape(reason)
                )
            }
            TransferEvent::FileCancelled {
                direction,
                peer,
                name,
                by,
                ..
            } => {
                let who = match by {
                    CancelledBy::You => "you".to_string(),
                    CancelledBy::Peer => escape(peer),
                };
                format!(
                    "{NOTICE} {} {} {} cancelled by {who}",
                    escape(name),
                    to_or_from(*direction),
                    escape(peer)
                )
            }
            TransferEvent::Transfers { transfers } if transfers.is_empty() => {
                format!("{NOTICE} no file offers or transfers")
            }
            TransferEvent::Transfers { transfers } => {
                let mut text = format!("{NOTICE} file offers and transfers ({}):", transfers.len());
                for row in transfers {
                    let stage = match (row.stage, row.lapses_in) {
                        (Stage::Offered, Some(left)) => {
                            format!("offered, lapses in {}", duration(left))
                        }
                        (Stage::Offered, None) => "offered".into(),
                        (Stage::Accepted, _) => "accepted".into(),
                        (Stage::Running, _) => "running".into(),
                        (Stage::Interrupted, _) => {
                            "interrupted, resumes when both are online".into()
                        }
                    };
                    text.push_str(&format!(
                        "\n{NOTICE}   [{}] {} {} {}: {} of {}, {stage}",
                        short(&row.transfer),
                        escape(&row.name),
                        to_or_from(row.direction),
                        escape(&row.peer),
                        Bytes(row.bytes),
                        Bytes(row.size),
                    ));
                }
                text
            }
        }
    }
}

/// The short id people see and type: the first 8 hex digits.
pub fn short(transfer: &str) -> &str {
    transfer.get(..8).unwrap_or(transfer)
}

fn to_or_from(direction: Direction) -> &'static str {
    match direction {
        Direction::Out => "to",
        Direction::In => "from",
    }
}

/// `0:07`, `12:30`, `1:02:03`.
fn clock(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// `10 min`, `45 s`.
fn duration(seconds: u64) -> String {
    if seconds >= 60 && seconds.is_multiple_of(60) {
        format!("{} min", seconds / 60)
    } else {
        format!("{seconds} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_reads_as_the_issue_shows_it_and_escapes_what_the_peer_chose() {
        let offer = TransferEvent::FileOffer {
            transfer: "1a2b3c4d00000000000000000000000f".into(),
            direction: Direction::In,
            peer: "alice".into(),
            name: "report.pdf".into(),
            size: 2_411_724,
            lapses_in: 600,
            over_limit: false,
        };
        assert_eq!(
            offer.render(),
            "-!- alice offers report.pdf (2.3 MiB) — /accept alice or /decline alice [1a2b3c4d]"
        );
        let json = serde_json::to_value(&offer).unwrap();
        assert_eq!(json["event"], "file_offer");
        assert_eq!(json["direction"], "in");
        assert!(json.get("over_limit").is_none());
        let forged = TransferEvent::FileOffer {
            transfer: "1a2b3c4d00000000000000000000000f".into(),
            direction: Direction::In,
            peer: "alice".into(),
            name: "x\n-!- bob joined\u{202e}fdp.exe".into(),
            size: 1,
            lapses_in: 600,
            over_limit: true,
        };
        let line = forged.render();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("\\u{202e}"), "{line}");
    }

    #[test]
    fn notices_are_marked_as_every_other_notice() {
        assert_eq!(NOTICE, crate::client::event::NOTICE);
    }

    #[test]
    fn progress_says_bytes_rate_and_time_left() {
        let progress = TransferEvent::FileProgress {
            transfer: "t".into(),
            direction: Direction::Out,
            peer: "bob".into(),
            name: "a.iso".into(),
            bytes: 1 << 20,
            size: 4 << 20,
            rate: 1 << 20,
            seconds_left: Some(3),
        };
        assert_eq!(
            progress.render(),
            "-!- a.iso to bob: 25%, 1.0 MiB of 4.0 MiB, 1.0 MiB/s, 0:03 left"
        );
    }
}
