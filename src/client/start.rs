//! From the flags to a client: how to talk to the server and whom to trust ([`transport`]),
//! forgetting a server instead (`--forget`: [`forget`], and what the binary then says and exits
//! with: [`forget_and_tell`]), a connection with every setting applied ([`connect`]), the real
//! stdin as the dialogue's [`Terminal`] ([`Stdin`]) and, once logged in, as lines of commands
//! ([`stdin_lines`]), and a [`Client`] as its [`LoginServer`] ([`Dialing`]: one that connects
//! again as the flags say). The `p2pchat-client` binary only wires these together.
//!
//! On a terminal a password is read as `sudo` and `ssh` read one: keys typed before its prompt
//! are discarded (`tcflush`), echo goes off, and it stays off until the server has answered,
//! when what was typed meanwhile is discarded too (a second password typed ahead must never
//! show). The terminal's settings are given back if a signal (Ctrl-C) ends the client while
//! echo is off.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Mutex, Once, PoisonError};
use std::thread;

use futures::channel::mpsc;
use futures::SinkExt;
use rustix::termios::{self, LocalModes, OptionalActions, QueueSelector, Termios};

use super::config::ClientArgs;
use super::dialogue::{self, LoginServer, Terminal};
use super::error::{exit, ClientError, Local};
use super::event::ClientEvent;
use super::known_servers;
use super::link::{AuthMode, NameCheck};
use super::reconnect::Reconnect;
use super::secure::{Ask, FirstUse, Transport, Trust, TrustOutcome};
use super::Client;
use super::{identity_file, known_peers, IdentityStore};
use crate::runtime;

/// Lines of stdin read ahead of the chat (piped input); the reading thread waits when it is full.
const STDIN_LINES: usize = 64;

/// How to talk to the server, and whom to trust, as the flags say. A server met for the first
/// time is trusted and recorded with `--accept-new`, else asked about on a `terminal`
/// ([`dialogue::ask_trust`]), else refused: a script never sends a password to a server nobody
/// vouched for (OpenSSH in batch mode).
///
/// # Errors
/// No folder for the known-servers file.
pub fn transport(args: &ClientArgs, terminal: bool) -> Result<Transport, ClientError> {
    if args.plaintext {
        return Ok(Transport::Plaintext);
    }
    if let Some(fingerprint) = args.trust {
        return Ok(Transport::Tls(Trust::Required(fingerprint)));
    }
    let path = known_servers_path(args)?;
    let first_contact = if args.accept_new {
        FirstUse::AcceptNew
    } else if terminal {
        let ask: Ask =
            Box::new(|contact: &_| Ok(dialogue::ask_trust(&mut Stdin::new(true), contact)?));
        FirstUse::Ask(ask)
    } else {
        FirstUse::Refuse
    };
    Ok(Transport::Tls(Trust::KnownServers {
        path,
        first_contact,
        announced: args.announced.clone(),
    }))
}

/// The known-servers file the flags name: `--known-servers`, else the default place.
///
/// # Errors
/// No folder for it (neither `XDG_CONFIG_HOME` nor `HOME`).
pub fn known_servers_path(args: &ClientArgs) -> Result<PathBuf, Local> {
    args.known_servers
        .clone()
        .or_else(known_servers::default_path)
        .ok_or(Local::NoKnownServersFile)
}

/// Where the binary keeps identities: one file per account under `$XDG_DATA_HOME/p2pchat/
/// identities/` (else `~/.local/share/…`), and the pins of peers' identities in `known_peers`
/// beside the known-servers file the flags name.
///
/// # Errors
/// Neither `XDG_DATA_HOME` nor `HOME` is set, or no folder for the known-servers file.
pub fn identity_store(args: &ClientArgs) -> Result<IdentityStore, Local> {
    let folder = identity_file::default_folder().ok_or(Local::NoIdentityFolder)?;
    let known_peers = known_servers_path(args)?.with_file_name(known_peers::FILE_NAME);
    Ok(IdentityStore::Files {
        folder,
        known_peers,
    })
}

/// What `--forget` did: the server's lines removed from the known-servers file (none if it was
/// not there). Shown as the lines the binary prints.
#[derive(Debug)]
pub struct Forgotten {
    pub server: String,
    pub file: PathBuf,
    pub removed: Vec<known_servers::Entry>,
}

impl fmt::Display for Forgotten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        if self.removed.is_empty() {
            return write!(f, "{} is not in {file}; nothing removed", self.server);
        }
        let lines: Vec<String> = self
            .removed
            .iter()
            .map(|entry| format!("line {} ({})", entry.line, entry.fingerprint))
            .collect();
        write!(
            f,
            "forgot {}: removed {} of {file}; the next connection asks about its fingerprint again",
            self.server,
            lines.join(", ")
        )
    }
}

/// `--forget HOST[:PORT]`: removes that server's lines from the known-servers file the flags
/// name, without connecting (OpenSSH's `ssh-keygen -R`).
///
/// # Errors
/// No known-servers file, or it cannot be read or rewritten.
pub fn forget(args: &ClientArgs, server: &str) -> Result<Forgotten, ClientError> {
    let file = known_servers_path(args)?;
    let removed = known_servers::forget(&file, server).map_err(Local::KnownServers)?;
    Ok(Forgotten {
        server: known_servers::key(server),
        file,
        removed,
    })
}

/// `--forget HOST[:PORT]` as the binary runs it: one line saying what was removed (stdout) or
/// that nothing was (stderr), and the exit status: 0 either way, as `ssh-keygen -R`, or the
/// error's (1: the file could not be read or rewritten), its reason on stderr.
pub fn forget_and_tell(args: &ClientArgs, server: &str) -> i32 {
    match forget(args, server) {
        Ok(forgotten) if forgotten.removed.is_empty() => {
            eprintln!("p2pchat-client: {forgotten}");
            exit::OK
        }
        Ok(forgotten) => {
            // A closed stdout is no reason to fail: the file is rewritten already.
            let mut stdout = io::stdout().lock();
            let _ = writeln!(stdout, "p2pchat-client: {forgotten}");
            let _ = stdout.flush();
            exit::OK
        }
        Err(error) => {
            eprintln!("p2pchat-client: {error}");
            error.exit_code()
        }
    }
}

/// Connects as the flags say, with every setting of the client applied. On a `terminal` the
/// client connects again when it loses the server (unless `--no-reconnect`); elsewhere only with
/// `--reconnect`. A server met for the first time and trusted without asking (`--accept-new`),
/// (saying when its key is known at its address under another name), is told on stderr, so that a script's log
/// shows what was pinned.
///
/// # Errors
/// As [`Client::connect`], and a setting that makes no sense.
pub async fn connect(args: &ClientArgs, terminal: bool) -> Result<Client, ClientError> {
    let transport = transport(args, terminal)?;
    let mut client = Client::connect(args.server(), args.p2p_port, transport).await?;
    if let Some(TrustOutcome::Recorded {
        fingerprint,
        file,
        line,
        asked: false,
        known_as,
    }) = client.trust()
    {
        let also = known_as
            .as_ref()
            .map(|known_as| format!(" ({known_as})"))
            .unwrap_or_default();
        eprintln!(
            "p2pchat-client: first contact with {} (--accept-new): trusting its fingerprint {fingerprint}{also}, now recorded at line {line} of {}",
            args.server(),
            file.display()
        )
    }
    client.set_direct_limits(args.direct_limits())?;
    client.set_plaintext(args.plaintext);
    if !args.plaintext {
        client.set_identity_store(identity_store(args)?);
    }
    let reconnect = if args.no_reconnect {
        Reconnect::Never
    } else if args.reconnect || terminal {
        Reconnect::WithBackoff
    } else {
        Reconnect::Never
    };
    client.set_reconnect(reconnect, args.max_queued_lines);
    client.set_files(args.file_settings(terminal));
    Ok(client)
}

/// The process's stdin (and stdout for the questions).
pub struct Stdin {
    /// Whether questions are shown: on a terminal; piped answers come without them.
    shows_questions: bool,
}

/// Every later line of stdin (after the dialogue), read on a thread of its own because reading
/// stdin blocks; the thread ends at the end of stdin or once the chat stops taking lines.
pub fn stdin_lines() -> mpsc::Receiver<String> {
    let (mut tx, rx) = mpsc::channel(STDIN_LINES);
    thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if runtime::block_on(tx.send(line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// The terminal's settings from before echo went off for a password, while it is off: one for
/// the process, since every [`Stdin`] (the trust question's too) and the signal watcher must
/// see it.
static HIDDEN: Mutex<Option<Termios>> = Mutex::new(None);

/// Turns echo off on stdin (a terminal), if it is not off already; keeps the settings to give
/// back. Lines are still edited by the terminal (canonical mode), and Ctrl-C is still SIGINT.
fn hide_typing() {
    let mut hidden = HIDDEN.lock().unwrap_or_else(PoisonError::into_inner);
    if hidden.is_some() {
        return;
    }
    let Ok(before) = termios::tcgetattr(io::stdin()) else {
        return;
    };
    let mut quiet = before.clone();
    quiet
        .local_modes
        .remove(LocalModes::ECHO | LocalModes::ECHONL);
    if termios::tcsetattr(io::stdin(), OptionalActions::Now, &quiet).is_ok() {
        *hidden = Some(before);
        give_back_on_signals();
    }
}

/// Gives the terminal its settings back if echo is off, discarding what was typed while it
/// was (TCSAFLUSH): keys typed blind, maybe a password typed ahead.
fn show_typing() {
    let mut hidden = HIDDEN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(before) = hidden.take() {
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Flush, &before);
    }
}

/// Watches, from the first time echo goes off, for the signals that end the client (Ctrl-C's
/// SIGINT above all): echo must not stay off in the shell after it. Each is then handled as
/// the system would (the process ends by it), once the terminal's settings are given back.
fn give_back_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    static WATCHING: Once = Once::new();
    WATCHING.call_once(|| {
        let Ok(mut signals) =
            signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        else {
            return;
        };
        thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                show_typing();
                let _ = signal_hook::low_level::emulate_default_handler(signal);
            }
        });
    });
}

/// Reads one line of stdin (a terminal in canonical mode, so a read gives at most one line)
/// straight from the descriptor, without its line end: nothing is read past it, so keys typed
/// after it stay with the terminal for whoever reads next.
fn read_terminal_line() -> Result<String, Local> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        match rustix::io::read(io::stdin(), &mut chunk) {
            Ok(0) if line.is_empty() => return Err(Local::InputEnded),
            Ok(0) => break,
            Ok(n) => {
                line.extend_from_slice(&chunk[..n]);
                if line.ends_with(b"\n") {
                    break;
                }
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Local::Password(e.into())),
        }
    }
    let line = String::from_utf8_lossy(&line);
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Where a secret's question goes: stdout when questions are shown, else the terminal itself
/// (stdout may be a pipe; the person still needs the prompt).
fn question_sink(shows_questions: bool) -> Box<dyn Write> {
    if shows_questions {
        return Box::new(io::stdout());
    }
    match OpenOptions::new().write(true).open("/dev/tty") {
        Ok(tty) => Box::new(tty),
        Err(_) => Box::new(io::stderr()),
    }
}

impl Stdin {
    pub fn new(shows_questions: bool) -> Stdin {
        Stdin { shows_questions }
    }
}

impl Terminal for Stdin {
    fn ask(&mut self, question: &str) -> Result<String, Local> {
        // A question after a secret (an empty password goes back to the username) is typed
        // in view again.
        show_typing();
        if self.shows_questions {
            print!("{question}");
            let _ = io::stdout().flush();
        }
        let mut line = String::new();
        match io::stdin().lock().read_line(&mut line) {
            Ok(0) => Err(Local::InputEnded),
            Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
            Err(e) => Err(Local::Stdin(e)),
        }
    }

    /// Without echo when stdin is a terminal (the question then goes to the terminal, even
    /// with piped stdout), after discarding what was typed before it; else a line of stdin.
    fn ask_secret(&mut self, question: &str) -> Result<String, Local> {
        if !io::stdin().is_terminal() {
            return Stdin::new(false).ask(question);
        }
        // Echo off first, then the flush: a key is either discarded or hidden, never shown.
        hide_typing();
        let _ = termios::tcflush(io::stdin(), QueueSelector::IFlush);
        let mut sink = question_sink(self.shows_questions);
        let _ = sink.write_all(question.as_bytes());
        let _ = sink.flush();
        let secret = read_terminal_line();
        // The Enter the terminal did not echo.
        let _ = sink.write_all(b"\n");
        let _ = sink.flush();
        secret
    }

    /// Echo stays off while the server checks (only on a terminal: piped input has none).
    fn checking(&mut self) {
        if !io::stdin().is_terminal() {
            return;
        }
        hide_typing();
        if self.shows_questions {
            println!("checking…");
        }
    }

    fn checked(&mut self) {
        show_typing();
    }

    fn say(&mut self, line: &str) {
        println!("{line}");
    }
}

impl Drop for Stdin {
    /// Whatever ends the dialogue, the terminal is left with echo on.
    fn drop(&mut self) {
        show_typing();
    }
}

/// A [`Client`] for the login dialogue: it reports `welcome` to `emit` once the dialogue is
/// over ([`Dialing::into_client`]), and connects again as `args` say.
pub struct Dialing<'a> {
    client: Client,
    args: &'a ClientArgs,
    terminal: bool,
    emit: &'a mut dyn FnMut(ClientEvent),
    /// What the login reported, held until the dialogue is over: the terminal shows keys again
    /// (and discards those typed blind) only after the server's answer, so a key typed once
    /// "logged in" shows must find it so, and reach the chat.
    held: Vec<ClientEvent>,
}

impl<'a> Dialing<'a> {
    pub fn new(
        client: Client,
        args: &'a ClientArgs,
        terminal: bool,
        emit: &'a mut dyn FnMut(ClientEvent),
    ) -> Dialing<'a> {
        Dialing {
            client,
            args,
            terminal,
            emit,
            held: Vec::new(),
        }
    }

    /// The client, logged in once the dialogue succeeded; what the login reported is reported
    /// now.
    pub fn into_client(self) -> Client {
        for event in self.held {
            (self.emit)(event);
        }
        self.client
    }
}

impl LoginServer for Dialing<'_> {
    async fn check_name(&mut self, username: &str) -> Result<NameCheck, ClientError> {
        self.client.check_name(username, self.emit).await
    }

    async fn authenticate(
        &mut self,
        mode: AuthMode,
        username: &str,
        password: &str,
    ) -> Result<(), ClientError> {
        let held = &mut self.held;
        self.client
            .authenticate(mode, username, password, &mut |event| held.push(event))
            .await
    }

    async fn connect_again(&mut self) -> Result<(), ClientError> {
        self.client = connect(self.args, self.terminal).await?;
        Ok(())
    }
}
