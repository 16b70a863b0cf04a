//! The line editor on a terminal: `rustyline` on a thread of its own (it blocks on the
//! keyboard), parsing each typed line ([`command::parse`], the one place a typed line is
//! parsed) and handing it to the chat through a bounded channel, while incoming lines are printed
//! above the line being typed by its external printer.
//!
//! Keys, as readline users expect: Tab completes ([`complete`](super::complete)); Up/Down and
//! Ctrl-R walk the history, kept in a file across sessions ([`history`](super::history)); Ctrl-C
//! clears a non-empty line (Ctrl-Y brings it back) and leaves on an empty one ([`Ending::Interrupted`],
//! exit 130); Ctrl-D deletes the character under the cursor and leaves only on an empty line.
//! The editor never sees the password: the prompts before it read stdin themselves.
//!
//! Every line typed is sent, in order, however the keys arrive: several lines in one read
//! (type-ahead, `tmux send-keys`, a paste the terminal does not bracket) are kept past the first
//! line's Enter for the next `readline`, by rustyline's `buffer-redux` feature (without it each
//! `readline` starts a new input buffer and the rest of a read is lost); the client core paces
//! them to the server's flood limit.
//!
//! It owns the terminal while it runs: [`LineEditor::release`] gives it back as it was when the
//! chat ends while the editor is still waiting for a key (the server went away).

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use futures::channel::mpsc;
use futures::SinkExt;
use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{
    Cmd, CompletionType, ConditionalEventHandler, Config, Editor, Event, EventContext,
    EventHandler, ExternalPrinter, KeyEvent, Movement, RepeatCount,
};
use unicode_width::UnicodeWidthStr;

use super::complete::ChatHelper;
use super::history;
use super::style::Names;
use crate::client::command::{self, Command, CommandError};
use crate::client::config::DEFAULT_HISTORY_LINES;
use crate::runtime;

/// The prompt before the line being typed.
pub const PROMPT: &str = "> ";

/// Typed lines waiting for the chat: a person cannot outtype it; a paste of more waits for room.
const TYPED_LINES_QUEUE: usize = 64;

/// A typed line, parsed: a command, or what is wrong with it.
pub type Typed = Result<Command, CommandError>;

/// Why the person stopped typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// `:q` or `/quit`.
    Quit,
    /// Ctrl-D on an empty line.
    EndOfInput,
    /// Ctrl-C on an empty line: the process exits 130, as after SIGINT.
    Interrupted,
    /// The terminal failed; the text says how.
    Failed(String),
}

/// What the editor needs to know.
#[derive(Debug, Clone)]
pub struct EditorOptions {
    /// The history file, or none (`--history-lines 0`, or no HOME).
    pub history_file: Option<PathBuf>,
    /// Lines kept in the history file (`--history-lines`).
    pub history_lines: usize,
}

/// The line editor could not take the terminal.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the terminal: {0}")]
pub struct EditorError(#[from] ReadlineError);

/// Prints above the line being typed; cheap to clone.
#[derive(Clone)]
pub struct Printer(Arc<Mutex<Box<dyn ExternalPrinter + Send>>>);

impl Printer {
    /// Prints `lines` (joined with `\n`) above the line being typed, or at the cursor when the
    /// editor is not reading a line.
    pub fn print(&self, lines: &str) {
        let mut printer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Not in raw mode, rustyline writes the text as it is: the line feed must be ours.
        let _ = printer.print(format!("{lines}\n"));
    }
}

/// The running editor: its printer, why it stopped, and the terminal's settings from before.
pub struct LineEditor {
    printer: Printer,
    ending: Arc<Mutex<Option<Ending>>>,
    /// The terminal's settings before the editor took it, to give it back if the chat ends
    /// while the editor still waits for a key.
    saved: Option<Termios>,
}

impl LineEditor {
    /// Takes the terminal and starts reading lines. Problems with the history file are not
    /// fatal: they come back as warnings to show.
    ///
    /// # Errors
    /// The terminal cannot be set up.
    pub fn start(
        names: Names,
        options: EditorOptions,
    ) -> Result<(LineEditor, mpsc::Receiver<Typed>, Vec<String>), EditorError> {
        let kept = if options.history_lines == 0 {
            DEFAULT_HISTORY_LINES
        } else {
            options.history_lines
        };
        let config = Config::builder()
            .completion_type(CompletionType::List)
            .max_history_size(kept)?
            .history_ignore_dups(true)?
            // Like shells: a line typed with a leading space is not kept.
            .history_ignore_space(true)
            .auto_add_history(false)
            .build();
        let mut editor: Editor<ChatHelper, FileHistory> = Editor::with_config(config)?;
        editor.set_helper(Some(ChatHelper::new(names)));
        editor.bind_sequence(
            KeyEvent::ctrl('C'),
            EventHandler::Conditional(Box::new(ClearOrInterrupt)),
        );
        let mut warnings = Vec::new();
        let history_file = options
            .history_file
            .filter(|_| options.history_lines > 0)
            .and_then(|file| match history::prepare(&file) {
                Ok(()) => Some(file),
                Err(e) => {
                    warnings.push(format!("history not kept: {}: {e}", file.display()));
                    None
                }
            });
        if let Some(file) = &history_file {
            match editor.load_history(file) {
                Ok(()) => {}
                Err(ReadlineError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warnings.push(format!("history not read: {}: {e}", file.display())),
            }
        }
        let printer = Printer(Arc::new(Mutex::new(
            Box::new(editor.create_external_printer()?) as Box<dyn ExternalPrinter + Send>,
        )));
        let saved = terminal_settings();
        // Between two lines (the editor hands one on, then reads the next) the terminal would be
        // back in its own mode: keys typed then would be echoed by the terminal, and Ctrl-D,
        // Ctrl-C or Ctrl-U taken by its line discipline (a lost end of input, a SIGINT) instead
        // of reaching the editor. So the mode the editor returns to after each line is already
        // raw for input: no line buffering, no echo, no signals from keys. Output is left as it
        // was. `release` gives the terminal's own settings back.
        if let Some(saved) = &saved {
            let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &between_lines(saved));
        }
        let ending = Arc::new(Mutex::new(None));
        let (lines_tx, lines_rx) = mpsc::channel(TYPED_LINES_QUEUE);
        let why = ending.clone();
        thread::spawn(move || {
            let ended = read_lines(editor, history_file, lines_tx);
            *why.lock().unwrap_or_else(PoisonError::into_inner) = Some(ended);
        });
        Ok((
            LineEditor {
                printer,
                ending,
                saved,
            },
            lines_rx,
            warnings,
        ))
    }

    pub fn printer(&self) -> Printer {
        self.printer.clone()
    }

    /// Why the person stopped typing; `None` while the editor still reads.
    pub fn ending(&self) -> Option<Ending> {
        self.ending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Gives the terminal back as it was if the editor still holds it (the chat ended on its
    /// own): the settings from before, bracketed paste off, the half-typed line erased. The
    /// editor's thread ends with the process.
    pub fn release(&self) {
        if self.ending().is_some() {
            // The editor has given the terminal back, to its mode between lines: the terminal's
            // own settings are ours to restore.
            if let Some(saved) = &self.saved {
                let _ = termios::tcsetattr(io::stdin(), OptionalActions::Drain, saved);
            }
            return;
        }
        if let Some(saved) = &self.saved {
            // Drain: after what the chat has written reaches the terminal, as before it took it.
            let _ = termios::tcsetattr(io::stdin(), OptionalActions::Drain, saved);
        }
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(b"\x1b[?2004l\r\x1b[K");
        let _ = stdout.flush();
    }
}

/// Reads lines until the person leaves; returns why.
fn read_lines(
    mut editor: Editor<ChatHelper, FileHistory>,
    history_file: Option<PathBuf>,
    mut lines: mpsc::Sender<Typed>,
) -> Ending {
    loop {
        match editor.readline(PROMPT) {
            Ok(typed) => {
                erase_echo(&typed);
                // A paste arrives as one buffer with its line breaks (the terminal brackets it,
                // and the editor keeps it whole until Enter): each of its lines is a line typed.
                for line in typed.split('\n') {
                    if editor.add_history_entry(line).unwrap_or(false) {
                        if let Some(file) = &history_file {
                            // Written at once, so a crash or a kill loses nothing typed before.
                            let _ = editor.append_history(file);
                        }
                    }
                    // A blank line is nothing to send.
                    let Some(typed) = command::parse(line).transpose() else {
                        continue;
                    };
                    let quit = matches!(typed, Ok(Command::Quit));
                    if runtime::block_on(lines.send(typed)).is_err() {
                        return Ending::Quit;
                    }
                    if quit {
                        return Ending::Quit;
                    }
                }
            }
            Err(ReadlineError::Interrupted) => return Ending::Interrupted,
            Err(ReadlineError::Eof) => return Ending::EndOfInput,
            Err(e) => return Ending::Failed(e.to_string()),
        }
    }
}

/// Erases the prompt and the line just typed, which the editor leaves on the screen: the chat
/// shows the person's line as everyone else's, `<alice> text`, or not at all for a command.
fn erase_echo(typed: &str) {
    let columns = terminal_columns().max(1);
    // The prompt, then each line of the buffer (a paste has several) on rows of its own.
    let rows: usize = typed
        .split('\n')
        .enumerate()
        .map(|(i, line)| {
            let prompt = if i == 0 { PROMPT.width() } else { 0 };
            (prompt + line.width()).div_ceil(columns).max(1)
        })
        .sum();
    let mut stdout = io::stdout().lock();
    let _ = write!(stdout, "\x1b[{rows}A\r\x1b[J");
    let _ = stdout.flush();
}

/// Ctrl-C: clears a non-empty line (into the kill ring), interrupts on an empty one.
struct ClearOrInterrupt;

impl ConditionalEventHandler for ClearOrInterrupt {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, context: &EventContext) -> Option<Cmd> {
        if context.line().is_empty() {
            Some(Cmd::Interrupt)
        } else {
            Some(Cmd::Kill(Movement::WholeBuffer))
        }
    }
}

/// The terminal's width in columns (80 if it cannot be asked).
pub fn terminal_columns() -> usize {
    match termios::tcgetwinsize(io::stdout()) {
        Ok(size) if size.ws_col > 0 => usize::from(size.ws_col),
        _ => 80,
    }
}

/// The terminal's settings now, if stdin is one.
fn terminal_settings() -> Option<Termios> {
    termios::tcgetattr(io::stdin()).ok()
}

/// `saved` with its input as the editor reads it: byte by byte, not echoed, keys that would
/// send signals or edit the line (Ctrl-C, Ctrl-Z, Ctrl-D, Ctrl-U, Ctrl-V) passed on as keys.
fn between_lines(saved: &Termios) -> Termios {
    let mut mode = saved.clone();
    mode.local_modes
        .remove(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG | LocalModes::IEXTEN);
    mode.special_codes[SpecialCodeIndex::VMIN] = 1;
    mode.special_codes[SpecialCodeIndex::VTIME] = 0;
    mode
}
