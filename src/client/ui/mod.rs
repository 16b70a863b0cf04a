//! The client on a person's terminal: how events look ([`style`]: the time, colour, own lines,
//! highlights, the bell), the line editor ([`editor`]: keys, the external printer), completion
//! ([`complete`]) and the history file ([`history`]). [`TerminalChat`] puts them together for
//! the binary; the client core knows nothing of any of it.
//!
//! What programs read never changes here: `--json` prints events as they are, and piped text
//! keeps today's exact lines (no time, no colour, no bell) unless a flag asks.

pub mod complete;
pub mod editor;
pub mod history;
pub mod status;
pub mod style;

use std::sync::{Mutex, PoisonError};

use futures::future;
use futures::stream::{Stream, StreamExt};

use super::command::Command;
use super::config::ClientArgs;
use super::event::ClientEvent;
pub use editor::{EditorError, EditorOptions, Ending, LineEditor, Printer};
use status::StatusLine;
pub use style::{Renderer, Style};

/// Clears the screen and its scrollback, cursor home (`/clear`).
const CLEAR_SCREEN: &str = "\u{1b}[H\u{1b}[2J\u{1b}[3J";

/// The style the flags and the environment ask for: time, colour, bold and reverse video, the
/// bell and wrapping only when stdout is a terminal (the time also with `--timestamps`), never
/// colour when `NO_COLOR` is set or with `--no-color` (bold and reverse video stay: they are not
/// colour, and without them a highlight would vanish).
pub fn style_for(args: &ClientArgs, stdout_is_terminal: bool) -> Style {
    let no_color = style::no_color_requested(std::env::var_os("NO_COLOR").as_deref());
    Style {
        colour: stdout_is_terminal && !no_color && !args.no_color,
        emphasis: stdout_is_terminal,
        wrap: stdout_is_terminal,
        timestamps: args.timestamps || (stdout_is_terminal && !args.no_timestamps),
        bell: stdout_is_terminal && !args.no_bell,
        max_continuations: args.max_continuation_lines.into(),
    }
}

/// The editor's options from the flags and the environment.
pub fn editor_options(args: &ClientArgs) -> EditorOptions {
    EditorOptions {
        history_file: history::default_path(),
        history_lines: args.history_lines,
    }
}

/// Chatting on a terminal: events shown above the line being typed, each typed line parsed once
/// (by the editor) and handed to the chat as a [`Command`]; a mistake is shown here and goes no
/// further. A line is not shown here as said: the core says what became of it (its own-line
/// event, drawn as everyone's lines are, marked while it waits for the server; or an error, as
/// for a direct message to someone offline), so the screen never shows a line as said that was
/// not.
pub struct TerminalChat {
    editor: LineEditor,
    renderer: Renderer,
    /// Running file transfers' progress, one line redrawn in place.
    status: Mutex<StatusLine>,
}

impl TerminalChat {
    /// Takes the terminal; returns the chat and the typed commands, for the client core.
    /// Warnings about the history file are shown at once.
    ///
    /// # Errors
    /// The terminal cannot be set up.
    pub fn start(
        renderer: Renderer,
        options: EditorOptions,
    ) -> Result<(TerminalChat, impl Stream<Item = Command> + Unpin), EditorError> {
        let (editor, typed, warnings) = LineEditor::start(renderer.names(), options)?;
        let chat = TerminalChat {
            editor,
            renderer,
            status: Mutex::new(StatusLine::default()),
        };
        for message in warnings {
            chat.show(&ClientEvent::Warning { message });
        }
        let printer = chat.editor.printer();
        let renderer = chat.renderer.clone();
        let commands = typed.filter_map(move |typed| {
            let forward = match typed {
                Err(wrong) => {
                    if let Some(shown) = renderer.render(&ClientEvent::error(wrong.to_string())) {
                        printer.print(&shown);
                    }
                    None
                }
                Ok(Command::Clear) => {
                    printer.print(CLEAR_SCREEN);
                    None
                }
                Ok(command) => Some(command),
            };
            future::ready(forward)
        });
        Ok((chat, commands))
    }

    /// Shows one event above the line being typed; a file transfer's progress on the status
    /// line ([`status`]).
    pub fn show(&self, event: &ClientEvent) {
        let shown = self.renderer.render(event);
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(text) = status.show(event, shown, editor::terminal_columns()) {
            self.editor.printer().print(&text);
        }
    }

    /// Why the person stopped typing (`None` if the chat ended first); gives the terminal back
    /// when the editor still holds it.
    pub fn finish(&self) -> Option<Ending> {
        self.editor.release();
        self.editor.ending()
    }
}
