//! From the flags to a client: how to talk to the server and whom to trust ([`transport`]),
//! forgetting a server instead (`--forget`: [`forget`]), a
//! connection with every setting applied ([`connect`]), the real stdin as the dialogue's
//! [`Terminal`] ([`Stdin`]), and a [`Client`] as its [`LoginServer`] ([`Dialing`]: one that
//! connects again as the flags say). The `p2pchat-client` binary only wires these together.

use std::fmt;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;

use super::config::ClientArgs;
use super::dialogue::{self, LoginServer, Terminal};
use super::error::{ClientError, Local};
use super::event::ClientEvent;
use super::known_servers;
use super::link::{AuthMode, NameCheck};
use super::reconnect::Reconnect;
use super::secure::{Ask, Transport, Trust, TrustOutcome};
use super::Client;

/// How to talk to the server, and whom to trust, as the flags say; on a `terminal`, a server
/// met for the first time is asked about ([`dialogue::ask_trust`]).
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
    let ask: Option<Ask> = terminal.then(|| {
        Box::new(|contact: &_| Ok(dialogue::ask_trust(&mut Stdin::new(true), contact)?)) as Ask
    });
    Ok(Transport::Tls(Trust::KnownServers { path, ask }))
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

/// Connects as the flags say, with every setting of the client applied. On a `terminal` the
/// client connects again when it loses the server (unless `--no-reconnect`); elsewhere only with
/// `--reconnect`. A server met for the first time and trusted without asking (no terminal: SSH's
/// `accept-new`) is told on stderr, so that a script's log shows what was pinned.
///
/// # Errors
/// As [`Client::connect`], and a setting that makes no sense.
pub async fn connect(args: &ClientArgs, terminal: bool) -> Result<Client, ClientError> {
    let transport = transport(args, terminal)?;
    let mut client = Client::connect(&args.server, args.p2p_port, transport).await?;
    if let Some(TrustOutcome::Recorded {
        fingerprint,
        file,
        line,
        asked: false,
    }) = client.trust()
    {
        eprintln!(
            "p2pchat-client: first contact with {}: trusting its fingerprint {fingerprint}, now recorded at line {line} of {}",
            args.server,
            file.display()
        );
    }
    client.set_direct_limits(args.direct_limits())?;
    client.set_plaintext(args.plaintext);
    let reconnect = if args.no_reconnect {
        Reconnect::Never
    } else if args.reconnect || terminal {
        Reconnect::WithBackoff
    } else {
        Reconnect::Never
    };
    client.set_reconnect(reconnect, args.max_queued_lines);
    Ok(client)
}

/// The process's stdin (and stdout for the questions).
pub struct Stdin {
    /// Whether questions are shown: on a terminal; piped answers come without them.
    shows_questions: bool,
}

impl Stdin {
    pub fn new(shows_questions: bool) -> Stdin {
        Stdin { shows_questions }
    }
}

impl Terminal for Stdin {
    fn ask(&mut self, question: &str) -> Result<String, Local> {
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
    /// with piped stdout); else a line of stdin.
    fn ask_secret(&mut self, question: &str) -> Result<String, Local> {
        if io::stdin().is_terminal() {
            rpassword::prompt_password(question).map_err(Local::Password)
        } else {
            Stdin::new(false).ask(question)
        }
    }

    fn say(&mut self, line: &str) {
        println!("{line}");
    }
}

/// A [`Client`] for the login dialogue: it reports `welcome` to `emit`, and connects again as
/// `args` say.
pub struct Dialing<'a> {
    client: Client,
    args: &'a ClientArgs,
    terminal: bool,
    emit: &'a mut dyn FnMut(ClientEvent),
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
        }
    }

    /// The client, logged in once the dialogue succeeded.
    pub fn into_client(self) -> Client {
        self.client
    }
}

impl LoginServer for Dialing<'_> {
    async fn check_name(&mut self, username: &str) -> Result<NameCheck, ClientError> {
        self.client.check_name(username).await
    }

    async fn authenticate(
        &mut self,
        mode: AuthMode,
        username: &str,
        password: &str,
    ) -> Result<(), ClientError> {
        self.client
            .authenticate(mode, username, password, self.emit)
            .await
    }

    async fn connect_again(&mut self) -> Result<(), ClientError> {
        self.client = connect(self.args, self.terminal).await?;
        Ok(())
    }
}
