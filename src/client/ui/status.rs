//! The status line of running file transfers on a terminal: one line, just above the line being
//! typed, redrawn in place as progress comes (cursor up, erase the line), so a transfer's
//! hundreds of progress reports take one row instead of scrolling the chat away. Any other line
//! printed meanwhile takes the status line's row, and the status line is drawn again under it;
//! a transfer's end (done, failed, cancelled) is a line of its own, and the status line goes when
//! nothing runs.
//!
//! [`StatusLine::show`] is the whole rule, over text: it says what to print for an event. The
//! terminal's printer does the printing ([`TerminalChat`](super::TerminalChat)).

use std::collections::BTreeMap;

use unicode_width::UnicodeWidthChar;

use crate::client::event::ClientEvent;
use crate::client::transfer_event::TransferEvent;

/// Moves the cursor up one row and erases it: the status line, printed last, is there.
pub const ERASE_PREVIOUS_ROW: &str = "\x1b[1A\r\x1b[2K";

/// Between two transfers' progress on the one status line.
const SEPARATOR: &str = "  |  ";

/// What the status line shows now.
#[derive(Debug, Default)]
pub struct StatusLine {
    /// Each running transfer's last progress, by transfer id.
    running: BTreeMap<String, String>,
    /// Whether the status line is on the screen, just above the line being typed.
    drawn: bool,
}

impl StatusLine {
    /// What to print for `event`, whose lines for a person are `shown` (`None` if it is not
    /// shown), on a terminal `columns` wide: the text to hand the printer, or nothing.
    pub fn show(
        &mut self,
        event: &ClientEvent,
        shown: Option<String>,
        columns: usize,
    ) -> Option<String> {
        let ClientEvent::Transfer(transfer) = event else {
            return self.above(shown, columns);
        };
        let id = transfer.transfer().map(str::to_string);
        match (transfer, id) {
            (TransferEvent::FileProgress { .. }, Some(id)) => {
                self.running.insert(id, transfer.render());
                let erase = if self.drawn { ERASE_PREVIOUS_ROW } else { "" };
                self.drawn = true;
                Some(format!("{erase}{}", self.line(columns)))
            }
            (_, Some(id)) if transfer.ends_transfer() => {
                self.running.remove(&id);
                self.above(shown, columns)
            }
            _ => self.above(shown, columns),
        }
    }

    /// `shown` printed where the status line was, and the status line again under it.
    fn above(&mut self, shown: Option<String>, columns: usize) -> Option<String> {
        let shown = shown?;
        let erase = if self.drawn { ERASE_PREVIOUS_ROW } else { "" };
        self.drawn = !self.running.is_empty();
        if self.drawn {
            Some(format!("{erase}{shown}\n{}", self.line(columns)))
        } else {
            Some(format!("{erase}{shown}"))
        }
    }

    /// The running transfers' progress on one row: cut to the terminal's width, so it never
    /// wraps (a wrapped status line would not be erased whole).
    fn line(&self, columns: usize) -> String {
        let text = self
            .running
            .values()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(SEPARATOR);
        let room = columns.saturating_sub(1).max(1);
        let mut used = 0;
        let mut line = String::new();
        for c in text.chars() {
            let width = c.width().unwrap_or(0);
            if used + width > room {
                line.push('…');
                break;
            }
            used += width;
            line.push(c);
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::transfer_event::Direction;

    fn progress(id: &str, bytes: u64) -> ClientEvent {
        ClientEvent::Transfer(TransferEvent::FileProgress {
            transfer: id.into(),
            direction: Direction::In,
            peer: "alice".into(),
            name: "a.bin".into(),
            bytes,
            size: 100,
            rate: 10,
            seconds_left: Some(1),
        })
    }

    #[test]
    fn progress_redraws_one_row_and_other_lines_go_above_it() {
        let mut status = StatusLine::default();
        let first = status.show(&progress("t1", 10), None, 80).unwrap();
        assert!(!first.starts_with(ERASE_PREVIOUS_ROW), "{first:?}");
        assert!(first.contains("10%"));
        let second = status.show(&progress("t1", 20), None, 80).unwrap();
        assert!(second.starts_with(ERASE_PREVIOUS_ROW), "{second:?}");
        assert!(second.contains("20%") && !second.contains("10%"));
        let chat = ClientEvent::Left {
            username: "carol".into(),
        };
        let above = status
            .show(&chat, Some("<-- carol left".into()), 80)
            .unwrap();
        assert_eq!(
            above,
            format!("{ERASE_PREVIOUS_ROW}<-- carol left\n{}", status.line(80))
        );
        let done = ClientEvent::Transfer(TransferEvent::FileCancelled {
            transfer: "t1".into(),
            direction: Direction::In,
            peer: "alice".into(),
            name: "a.bin".into(),
            by: crate::client::transfer_event::CancelledBy::You,
        });
        let end = status
            .show(&done, Some("-!- cancelled".into()), 80)
            .unwrap();
        assert_eq!(end, format!("{ERASE_PREVIOUS_ROW}-!- cancelled"));
        let after = status.show(&chat, Some("x".into()), 80).unwrap();
        assert_eq!(after, "x", "no status line left to erase");
    }

    #[test]
    fn the_status_line_never_wraps() {
        let mut status = StatusLine::default();
        status.show(&progress("t1", 10), None, 80);
        let line = status.show(&progress("t2", 30), None, 30).unwrap();
        let row = line.trim_start_matches(ERASE_PREVIOUS_ROW);
        assert!(row.chars().count() <= 30, "{row}");
        assert!(row.ends_with('…'));
    }
}
