//! `p2pchat-client`: connects, asks the person (or reads from stdin) whether to log in or
//! register, the username and the password, then chats. On a terminal, a line editor keeps
//! incoming messages above the line being typed; otherwise every stdin line is a command.

#![deny(unsafe_code)]

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use futures::channel::mpsc;
use futures::SinkExt;
use p2pchat::client::secure::Ask;
use p2pchat::client::ui::{self, Ending, Renderer, TerminalChat};
use p2pchat::client::{command, known_servers};
use p2pchat::client::{
    exit, AuthMode, Client, ClientArgs, ClientError, ClientEvent, FirstContact, NameCheck,
    Reconnect, Transport, Trust, TrustOutcome,
};
use p2pchat::protocol::ErrorCode;
use p2pchat::rules::{validate_password, validate_username};
use p2pchat::runtime;

/// A p2pchat client: the room through the server, direct messages straight to a peer over UDP.
///
/// After login, each line is a command: the list is at the end of this help (and /help shows
/// it). Command names are case-insensitive.
///
/// On a terminal: every line starts with the local time (HH:MM), names are in colour (never
/// when NO_COLOR is set), direct messages and lines naming you are highlighted with a bell.
/// Keys: Tab completes names after @ and /msg, and commands after /; Up/Down and Ctrl-R walk the
/// history, kept across sessions in $XDG_STATE_HOME/p2pchat/history (else
/// ~/.local/state/p2pchat/history); Ctrl-C clears the line, or leaves on an empty one (exit 130);
/// Ctrl-D leaves on an empty line.
///
/// Direct messages are sealed end to end (X25519 session keys, ChaCha20-Poly1305) and
/// acknowledged: the sender tries 8 times within 2.7 s, then reports "delivered" or "not
/// delivered". With --plaintext they are clear JSON datagrams, unacknowledged (the lab's capture).
///
/// Received direct messages are dropped (and counted) when oversized, malformed, clear at a
/// client that seals, under an unknown or ended session's key, not from the announced address of
/// the peer they name, forged, replayed, or over that sender's rate limit (a token bucket per
/// sender: --dm-burst at once, then --dm-rate per second).
///
/// Lines for the server are paced to the flood limit it announces (none is dropped; the rest wait,
/// "sending N queued lines…"). On a terminal, a wrong password, a taken or invalid name or a
/// short password is asked again, and the client connects again (1 s doubling to 30 s) and logs
/// in again when the server is lost; without a terminal it exits 5 instead, unless --reconnect.
///
/// When stdin is not a terminal, its lines answer the prompts in order (login or register, the
/// username, the password) and every later line is a command; end of input quits.
///
/// The connection is TLS 1.3; the server is trusted by its fingerprint, as SSH trusts hosts: the
/// first time, on a terminal, you are shown it and asked (without a terminal it is accepted,
/// with a notice on stderr); then it is pinned in the known-servers file, and a server that
/// presents another one is refused. Nothing, the password least of all, is sent before.
///
/// Exit status: 0 after :q or end of input; 1 local error (bad answer at a prompt, UDP port in
/// use, the known-servers file); 2 bad arguments (a bad --server port too); 3 server unreachable,
/// not a p2pchat server (no hello within 5 s), or full (for everyone, or
/// for this address), too busy to check the login now (try again later), or speaking the other
/// protocol (TLS vs --plaintext); 4 login or registration refused; 5 the server went away or shut
/// down; 6 the server is not trusted (its fingerprint changed, is not the --trust one, or was
/// refused at the prompt); 130 interrupted (Ctrl-C on an empty line).
#[derive(Parser, Debug)]
#[command(name = "p2pchat-client", version, after_help = command::help())]
struct Args {
    /// Every flag, with its default and doc: `p2pchat::client::config`.
    #[command(flatten)]
    client: ClientArgs,
}

/// Where events go: JSON lines (the exact texts, for programs), or text for a person (laid out
/// safely by `p2pchat::client::screen`, a message's continuation lines capped, with the time
/// and colour `p2pchat::client::ui` adds on a terminal).
#[derive(Clone)]
enum Format {
    Json,
    Text(Arc<Renderer>),
}

impl Format {
    fn line(&self, event: &ClientEvent) -> String {
        match self {
            Format::Json => serde_json::to_string(event).expect("events always serialize"),
            Format::Text(renderer) => renderer.render(event),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let format = if args.client.json {
        Format::Json
    } else {
        Format::Text(Arc::new(Renderer::new(ui::style_for(
            &args.client,
            io::stdout().is_terminal(),
        ))))
    };
    let terminal = !args.client.json && io::stdin().is_terminal() && io::stdout().is_terminal();
    let code = match runtime::block_on(run(&args.client, format, terminal)) {
        Ok(Some(Ending::Interrupted)) => exit::INTERRUPTED,
        Ok(_) => exit::OK,
        Err(error) => {
            if args.client.json {
                print_line(&Format::Json.line(&error.to_event()));
            }
            eprintln!("p2pchat-client: {error}");
            error.exit_code()
        }
    };
    ExitCode::from(code as u8)
}

fn print_line(line: &str) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Chats; on a terminal, also says why the person stopped typing.
async fn run(
    args: &ClientArgs,
    format: Format,
    terminal: bool,
) -> Result<Option<Ending>, ClientError> {
    let limits = args.direct_limits();
    // Checked before connecting, so a bad flag costs no connection.
    limits.validate()?;
    print_line(&format.line(&ClientEvent::Connecting {
        server: args.server.clone(),
    }));
    let mut client = connect(args, terminal).await?;
    print_line(&format.line(&ClientEvent::Connected {
        server: client.server_addr(),
        p2p_addr: client.p2p_addr(),
    }));
    let mut print = |event: ClientEvent| print_line(&format.line(&event));
    if terminal {
        log_in_on_terminal(args, &mut client, &mut print).await?;
        chat_on_terminal(client, &format, args).await
    } else {
        let mode = match prompt(false, "login or register? ")?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "login" | "l" => AuthMode::Login,
            "register" | "r" => AuthMode::Register,
            other => {
                return Err(ClientError::Local(format!(
                    "expected 'login' or 'register', got {other:?}"
                )))
            }
        };
        let username = prompt(false, "username: ")?.trim().to_string();
        let password = secret_prompt("password: ")?;
        client
            .authenticate(mode, &username, &password, &mut print)
            .await?;
        drop(password);
        let shown = format.clone();
        let commands = command::parse_lines(stdin_lines(), move |wrong| {
            print_line(&shown.line(&ClientEvent::error(wrong.to_string())))
        });
        client.run(commands, &mut print).await.map(|()| None)
    }
}

/// Connects as the flags say, with every setting of the client applied.
async fn connect(args: &ClientArgs, terminal: bool) -> Result<Client, ClientError> {
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

/// The prompts on a terminal, forgiving: a wrong password, a taken or invalid name, or a
/// password too short is asked again (on a new connection when the server closed this one, as
/// the protocol has it after a refusal); a new name is checked (`check_name`) before the
/// password is asked, and a new password is typed twice.
async fn log_in_on_terminal(
    args: &ClientArgs,
    client: &mut Client,
    print: &mut dyn FnMut(ClientEvent),
) -> Result<(), ClientError> {
    let mode = loop {
        match prompt(true, "login or register? ")?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "login" | "l" => break AuthMode::Login,
            "register" | "r" => break AuthMode::Register,
            _ => println!("please answer login or register"),
        }
    };
    let mut username = ask_username(client, mode).await?;
    loop {
        let password = ask_password(mode)?;
        let refused = match client.authenticate(mode, &username, &password, print).await {
            Ok(()) => return Ok(()),
            Err(ClientError::Refused { code, message }) if asks_again(code) => (code, message),
            // The connection timed out or broke while the person typed: once more, on a new
            // connection, with what they typed.
            Err(ClientError::Disconnected(_))
            | Err(ClientError::Refused {
                code: ErrorCode::AuthTimeout,
                ..
            }) => {
                *client = connect(args, true).await?;
                client
                    .authenticate(mode, &username, &password, print)
                    .await?;
                return Ok(());
            }
            Err(other) => return Err(other),
        };
        let (code, message) = refused;
        println!("{message}; please try again");
        // Every refusal of a login or registration closes the connection.
        *client = connect(args, true).await?;
        if matches!(code, ErrorCode::NameTaken | ErrorCode::InvalidUsername) {
            username = ask_username(client, mode).await?;
        }
    }
}

/// Whether a refusal is a typing mistake worth asking again about.
fn asks_again(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::BadCredentials
            | ErrorCode::NameTaken
            | ErrorCode::InvalidUsername
            | ErrorCode::InvalidPassword
    )
}

/// Asks for a username until it follows the rules and, for a registration, the server says it
/// is free (a server too old to check says so at registration instead).
async fn ask_username(client: &mut Client, mode: AuthMode) -> Result<String, ClientError> {
    loop {
        let username = prompt(true, "username: ")?.trim().to_string();
        if let Err(wrong) = validate_username(&username) {
            println!("{wrong}; please try again");
            continue;
        }
        if mode == AuthMode::Login {
            return Ok(username);
        }
        match client.check_name(&username).await? {
            NameCheck::Available | NameCheck::NotSupported => return Ok(username),
            NameCheck::Refused { message, .. } => println!("{message}; please try again"),
        }
    }
}

/// Asks for the password; a new one must follow the rules and be typed twice alike.
fn ask_password(mode: AuthMode) -> Result<String, ClientError> {
    loop {
        let password = secret_prompt("password: ")?;
        if mode == AuthMode::Login {
            return Ok(password);
        }
        if let Err(wrong) = validate_password(&password) {
            println!("{wrong}; please try again");
            continue;
        }
        if secret_prompt("password again: ")? == password {
            return Ok(password);
        }
        println!("the two passwords differ; please try again");
    }
}

/// How to talk to the server, and whom to trust, as the flags say.
fn transport(args: &ClientArgs, terminal: bool) -> Result<Transport, ClientError> {
    if args.plaintext {
        return Ok(Transport::Plaintext);
    }
    if let Some(fingerprint) = args.trust {
        return Ok(Transport::Tls(Trust::Required(fingerprint)));
    }
    let path = args
        .known_servers
        .clone()
        .or_else(known_servers::default_path)
        .ok_or_else(|| {
            ClientError::Local(
                "neither XDG_CONFIG_HOME nor HOME is set: name the known-servers file with --known-servers".into(),
            )
        })?;
    let ask: Option<Ask> = terminal.then(|| Box::new(ask_on_terminal) as Ask);
    Ok(Transport::Tls(Trust::KnownServers { path, ask }))
}

/// SSH's question at first contact: trust this fingerprint? Only `yes` trusts it.
fn ask_on_terminal(contact: &FirstContact) -> Result<bool, ClientError> {
    println!(
        "The authenticity of server '{}' can't be established.\n\
         Its fingerprint is {}.\n\
         Compare it with the one the server printed at start (\"fingerprint SHA256:…\").",
        contact.server, contact.fingerprint
    );
    let mut question = format!(
        "Trust it and remember it in {} (yes/no)? ",
        contact.file.display()
    );
    loop {
        match prompt(true, &question)?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "yes" => return Ok(true),
            "no" => return Ok(false),
            _ => question = "Please type 'yes' or 'no': ".into(),
        }
    }
}

/// Reads one answer from stdin, showing `question` first on a terminal.
fn prompt(terminal: bool, question: &str) -> Result<String, ClientError> {
    if terminal {
        print!("{question}");
        let _ = io::stdout().flush();
    }
    let mut line = String::new();
    match io::stdin().lock().read_line(&mut line) {
        Ok(0) => Err(ClientError::Local(
            "input ended before login (expected: login or register, username, password)".into(),
        )),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
        Err(e) => Err(ClientError::Local(format!("cannot read stdin: {e}"))),
    }
}

/// Reads the password: from the terminal without echo when stdin is one, else as a line of stdin.
fn secret_prompt(question: &str) -> Result<String, ClientError> {
    if io::stdin().is_terminal() {
        rpassword::prompt_password(question)
            .map_err(|e| ClientError::Local(format!("cannot read the password: {e}")))
    } else {
        prompt(false, question)
    }
}

/// Every later line of stdin, read on a thread of its own (reading stdin blocks).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (mut tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if runtime::block_on(tx.send(line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Chats with a line editor (`p2pchat::client::ui`): incoming events are printed above the
/// line being typed.
async fn chat_on_terminal(
    client: Client,
    format: &Format,
    args: &ClientArgs,
) -> Result<Option<Ending>, ClientError> {
    let Format::Text(renderer) = format else {
        unreachable!("the terminal chat is only for text output");
    };
    let (chat, lines) = TerminalChat::start(Renderer::clone(renderer), ui::editor_options(args))
        .map_err(|e| ClientError::Local(e.to_string()))?;
    let mut print = |event: ClientEvent| chat.show(&event);
    let result = client.run(lines, &mut print).await;
    // The terminal as it was, even when the server ended the chat mid-line.
    let ending = chat.finish();
    result.map(|()| ending)
}
