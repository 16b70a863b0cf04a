//! `p2pchat-client`: wiring only. It connects as the flags say (`p2pchat::client::start`), runs
//! the login dialogue (`p2pchat::client::dialogue`: on a terminal, forgiving; piped, the answers
//! in order), then chats. On a terminal, a line editor keeps incoming messages above the line
//! being typed; otherwise every stdin line is a command. `--forget` connects to nothing: the
//! library forgets the server and says so (`start::forget_and_tell`); `--discover` only lists the
//! servers announced on the LAN (`find::discover_and_tell`). Without `--server` the server is
//! looked for on the LAN first (`find::find_server`).

#![deny(unsafe_code)]

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use p2pchat::client::error::Local;
use p2pchat::client::start::{self, Dialing, Stdin};
use p2pchat::client::ui::{self, Ending, Renderer, TerminalChat};
use p2pchat::client::{
    command, config, dialogue, exit, find, Client, ClientArgs, ClientError, ClientEvent,
};
use p2pchat::runtime;

/// `-h` shows the one-line about and the usage; `--help` the usage first, then the whole text
/// (`p2pchat::client::config::LONG_ABOUT`), every flag, and the command table.
#[derive(Parser, Debug)]
#[command(name = "p2pchat-client", version, about = config::ABOUT, long_about = config::LONG_ABOUT,
    help_template = p2pchat::HELP_TEMPLATE, after_help = command::help())]
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
    /// The event's line(s); `None` when a person is not shown it (`--json` prints every event).
    fn line(&self, event: &ClientEvent) -> Option<String> {
        match self {
            Format::Json => Some(serde_json::to_string(event).expect("events always serialize")),
            Format::Text(renderer) => renderer.render(event),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(server) = &args.client.forget {
        return ExitCode::from(start::forget_and_tell(&args.client, server) as u8);
    }
    if args.client.discover {
        return ExitCode::from(find::discover_and_tell(&args.client) as u8);
    }
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
                print_line(Format::Json.line(&error.to_event()));
            }
            eprintln!("p2pchat-client: {error}");
            error.exit_code()
        }
    };
    ExitCode::from(code as u8)
}

fn print_line(line: Option<String>) {
    let Some(line) = line else { return };
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Connects, logs in (the dialogue), and chats; on a terminal, also says why the person
/// stopped typing.
async fn run(
    args: &ClientArgs,
    format: Format,
    terminal: bool,
) -> Result<Option<Ending>, ClientError> {
    // Checked before connecting, so a bad flag costs no connection (nor a browse of the LAN).
    args.direct_limits().validate()?;
    // Without --server: the server announced on the LAN (asked about on a terminal when there
    // are several), else this host's.
    let mut asker = Stdin::new(true);
    let found = find::find_server(
        args,
        terminal.then_some(&mut asker as &mut dyn dialogue::Terminal),
        &mut |event| print_line(format.line(&event)),
    )
    .await?;
    drop(asker);
    let args = &found;
    print_line(format.line(&ClientEvent::Connecting {
        server: args.server().to_string(),
    }));
    let client = start::connect(args, terminal).await?;
    print_line(format.line(&ClientEvent::Connected {
        server: client.server_addr(),
        p2p_addr: client.p2p_addr(),
    }));
    let mut print = |event: ClientEvent| print_line(format.line(&event));
    let mut dialing = Dialing::new(client, args, terminal, &mut print);
    if terminal {
        dialogue::log_in(&mut Stdin::new(true), &mut dialing).await?;
        chat_on_terminal(dialing.into_client(), &format, args).await
    } else {
        dialogue::log_in_once(&mut Stdin::new(false), &mut dialing).await?;
        let client = dialing.into_client();
        let shown = format.clone();
        let commands = command::parse_lines(start::stdin_lines(), move |wrong| {
            print_line(shown.line(&ClientEvent::error(wrong.to_string())))
        });
        client.run(commands, &mut print).await.map(|()| None)
    }
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
        .map_err(Local::Terminal)?;
    let mut print = |event: ClientEvent| chat.show(&event);
    let result = client.run(lines, &mut print).await;
    // The terminal as it was, even when the server ended the chat mid-line.
    let ending = chat.finish();
    result.map(|()| ending)
}
