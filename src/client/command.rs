//! What a person types after login, parsed once into a [`Command`], from one table
//! ([`COMMANDS`]): the parser, `/help`, the command list in the client's `--help` and Tab
//! completion all read it, so a command is added in one place.
//!
//! The lab's commands and the familiar IRC-style aliases:
//! plain text → the room; `/me waves` → an action in the room; `@name: text` or `/msg name text`
//! → a direct message; `:l` or `/peers` → the online users; `:q` or `/quit` → leave; `/help`;
//! `/stats` → the direct-message counters. A line starting with `//` sends the rest, from its
//! second `/`, to the room; `/clear` clears the screen (on a terminal; elsewhere it does nothing).
//! Files: `/send NAME PATH`, `/accept NAME [ID]`, `/decline NAME [ID]`, `/transfers`,
//! `/cancel [NAME|ID]`, `/resume [NAME|ID]` ([`TransferCommand`], for the transfers' table).
//!
//! Forgiving, as IRC clients are: command names in any case (`/PEERS`, `:Q`), extra words after
//! a command that takes none ignored (`/peers now`), `/msg` alone answered with its usage.

use std::path::PathBuf;

use futures::future;
use futures::stream::{Stream, StreamExt};

use crate::protocol::{RoomLine, TextKind};

/// One thing the person asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A line to the room, of any kind: said (`TEXT`), an action (`/me waves`), …
    Room(RoomLine),
    /// Send a direct message to one peer over UDP.
    Direct {
        to: String,
        text: String,
    },
    /// Show who is online (asked of the server).
    Peers,
    /// Show the direct-message counters (sent and acknowledged; received, shown, dropped by
    /// reason).
    Stats,
    Help,
    Quit,
    /// Clear the screen: the terminal does it; piped input has no screen to clear.
    Clear,
    /// `/verify NAME`: show the safety number with NAME; `/verify NAME confirm` (`confirm`)
    /// records NAME as verified.
    Verify {
        name: String,
        confirm: bool,
    },
    /// `/trust NAME`: trust NAME's new identity key after it changed.
    Trust {
        name: String,
    },
    /// A file transfer's command (`/send`, `/accept`, …): the transfers' table acts on it.
    Transfer(TransferCommand),
}

/// What the person asks of file transfers. `which` names a transfer by a peer's name or by its
/// id (its first hex digits, as `/transfers` shows them); none means the only one there is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    /// `/send NAME PATH`: offer the file at `path` to `to`.
    Send { to: String, path: PathBuf },
    /// `/accept NAME [ID]`: accept `from`'s offer (the one named by `id` if there are several).
    Accept { from: String, id: Option<String> },
    /// `/decline NAME [ID]`.
    Decline { from: String, id: Option<String> },
    /// `/transfers`: every offer and transfer, both ways.
    List,
    /// `/cancel [NAME|ID]`: stop a transfer (or withdraw or refuse an offer), at either end.
    Cancel { which: Option<String> },
    /// `/resume [NAME|ID]`: try an interrupted transfer again now (also done by itself).
    Resume { which: Option<String> },
}

/// How a line calls a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Its first word is one of these, in any case (`/peers`, `:l`); the rest of the line
    /// follows.
    Words(&'static [&'static str]),
    /// The line starts with this (`@bob: hi`, `//shrug`); the rest of the line follows.
    Prefix(&'static str),
    /// Any other line that does not start with `/`: the whole line.
    Text,
}

/// One command: how it is called, how `/help` shows it, and what it makes of the rest of the
/// line.
pub struct Spec {
    pub call: Call,
    /// How `/help` and `--help` show it (`/me ACTION`, `:l  /peers`).
    pub usage: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// The command, from the rest of the line (after the name or prefix; the whole line for
    /// [`Call::Text`]).
    make: fn(&str) -> Result<Command, CommandError>,
}

/// Every command, in the order `/help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        call: Call::Text,
        usage: "TEXT",
        help: "say TEXT to the room",
        make: |text| Ok(Command::Room(RoomLine::say(text))),
    },
    Spec {
        call: Call::Words(&["/me"]),
        usage: "/me ACTION",
        help: "an action in the room: /me waves shows * NAME waves",
        make: |rest| match rest.trim() {
            "" => Err(CommandError::MeUsage),
            action => Ok(Command::Room(RoomLine::new(TextKind::Action, action))),
        },
    },
    Spec {
        call: Call::Prefix("@"),
        usage: "@NAME: TEXT",
        help: "send TEXT straight to NAME (direct message over UDP)",
        make: |rest| direct(rest, ':'),
    },
    Spec {
        call: Call::Words(&["/msg"]),
        usage: "/msg NAME TEXT",
        help: "the same",
        make: |rest| direct(rest.trim_start(), ' '),
    },
    Spec {
        call: Call::Words(&[":l", "/peers", "/list", "/who"]),
        usage: ":l  /peers",
        help: "list the users online",
        make: |_| Ok(Command::Peers),
    },
    Spec {
        call: Call::Words(&["/stats"]),
        usage: "/stats",
        help: "direct messages sent and acknowledged; received, shown, dropped (by reason)",
        make: |_| Ok(Command::Stats),
    },
    Spec {
        call: Call::Words(&["/send"]),
        usage: "/send NAME PATH",
        help:
            "offer the file at PATH to NAME (straight to their client, sealed; Tab completes PATH)",
        make: send_file,
    },
    Spec {
        call: Call::Words(&["/accept"]),
        usage: "/accept NAME [ID]",
        help: "accept NAME's file offer (ID: which, if several) into the download folder",
        make: |rest| answer(rest, "/accept", true),
    },
    Spec {
        call: Call::Words(&["/decline"]),
        usage: "/decline NAME [ID]",
        help: "decline NAME's file offer",
        make: |rest| answer(rest, "/decline", false),
    },
    Spec {
        call: Call::Words(&["/transfers"]),
        usage: "/transfers",
        help: "list file offers and transfers, both ways",
        make: |_| Ok(Command::Transfer(TransferCommand::List)),
    },
    Spec {
        call: Call::Words(&["/cancel"]),
        usage: "/cancel [NAME|ID]",
        help: "stop a file transfer or offer, at either end",
        make: |rest| {
            Ok(Command::Transfer(TransferCommand::Cancel {
                which: one_word(rest),
            }))
        },
    },
    Spec {
        call: Call::Words(&["/resume"]),
        usage: "/resume [NAME|ID]",
        help: "resume interrupted file transfers now (they also resume by themselves)",
        make: |rest| {
            Ok(Command::Transfer(TransferCommand::Resume {
                which: one_word(rest),
            }))
        },
    },
    Spec {
        call: Call::Words(&[":q", "/quit", "/exit"]),
        usage: ":q  /quit",
        help: "leave",
        make: |_| Ok(Command::Quit),
    },
    Spec {
        call: Call::Words(&[":h", "/help", "/?"]),
        usage: "/help",
        help: "this help",
        make: |_| Ok(Command::Help),
    },
    Spec {
        call: Call::Words(&["/clear"]),
        usage: "/clear",
        help: "clear the screen",
        make: |_| Ok(Command::Clear),
    },
    Spec {
        call: Call::Words(&["/verify"]),
        usage: "/verify NAME",
        help: "the safety number with NAME, to compare on both screens; /verify NAME confirm \
               marks NAME verified",
        make: verify,
    },
    Spec {
        call: Call::Words(&["/trust"]),
        usage: "/trust NAME",
        help: "trust NAME's new identity key after it changed (compare safety numbers first)",
        make: |rest| match rest.split_whitespace().collect::<Vec<_>>()[..] {
            [name] => Ok(Command::Trust { name: name.into() }),
            _ => Err(CommandError::TrustUsage),
        },
    },
    Spec {
        call: Call::Prefix("//"),
        usage: "//TEXT",
        help: "say /TEXT to the room",
        make: |rest| Ok(Command::Room(RoomLine::say(format!("/{rest}")))),
    },
];

/// The command list, as `/help` shows it (and `--help` after its own text).
pub fn help() -> String {
    let width = COMMANDS
        .iter()
        .map(|spec| spec.usage.len())
        .max()
        .unwrap_or(0);
    let mut text = String::from("commands:");
    for spec in COMMANDS {
        text.push_str(&format!("\n  {:width$}  {}", spec.usage, spec.help));
    }
    text
}

/// The command names Tab completes after `/`, sorted: every `/word` name, aliases included.
pub fn completions() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = COMMANDS
        .iter()
        .filter_map(|spec| match spec.call {
            Call::Words(words) => Some(words),
            _ => None,
        })
        .flatten()
        .copied()
        .filter(|name| name.starts_with('/') && name[1..].starts_with(char::is_alphabetic))
        .collect();
    names.sort_unstable();
    names
}

/// Whether the `/word` (any case) is a command whose first argument is a peer's name (its usage
/// reads `/word NAME …` or `/word [NAME|ID]`: `/msg`, `/verify`, `/send`, `/cancel`, …), so that
/// Tab completes a name after it.
pub fn takes_a_name(word: &str) -> bool {
    COMMANDS.iter().any(|spec| {
        let mut usage = spec.usage.split_whitespace();
        let named = matches!(spec.call, Call::Words(words) if words.iter().any(|w| w.eq_ignore_ascii_case(word)));
        named && usage.next().is_some() && matches!(usage.next(), Some("NAME" | "[NAME|ID]"))
    })
}

/// A line that is not a command the client knows, or a command without its parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A `/word` that names no command; holds the word.
    #[error("unknown command {0}; /help lists the commands")]
    Unknown(String),
    /// `@` or `/msg` without a name or without text.
    #[error("usage: @NAME: TEXT or /msg NAME TEXT")]
    DirectUsage,
    /// `/me` without an action.
    #[error("usage: /me ACTION")]
    MeUsage,
    /// `/verify` without a name, or with other words than `confirm` after it.
    #[error("usage: /verify NAME, or /verify NAME confirm once the numbers match")]
    VerifyUsage,
    /// `/trust` without a name, or with more.
    #[error("usage: /trust NAME")]
    TrustUsage,
    /// `/send` without a name or a path.
    #[error("usage: /send NAME PATH")]
    SendUsage,
    /// `/accept` or `/decline` without a name; holds the command.
    #[error("usage: {0} NAME [ID]")]
    AnswerUsage(&'static str),
}

/// Parses one input line; `Ok(None)` for a blank line.
///
/// # Errors
/// An unknown `/command`, or a command without its parts (`/msg bob`, `/me`).
pub fn parse(line: &str) -> Result<Option<Command>, CommandError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    // The first word names the command, in any case; commands that take nothing ignore the rest.
    let from_first = line.trim_start();
    let first = from_first.split_whitespace().next().unwrap_or(from_first);
    let named = |spec: &&Spec| match spec.call {
        Call::Words(words) => words.iter().any(|w| w.eq_ignore_ascii_case(first)),
        _ => false,
    };
    if let Some(spec) = COMMANDS.iter().find(named) {
        return (spec.make)(&from_first[first.len()..]).map(Some);
    }
    for spec in COMMANDS {
        if let Call::Prefix(prefix) = spec.call {
            if let Some(rest) = line.strip_prefix(prefix) {
                return (spec.make)(rest).map(Some);
            }
        }
    }
    if line.starts_with('/') {
        let name = line.split_whitespace().next().unwrap_or(line);
        return Err(CommandError::Unknown(name.to_string()));
    }
    COMMANDS
        .iter()
        .find(|spec| spec.call == Call::Text)
        .map_or(Ok(None), |spec| (spec.make)(line).map(Some))
}

/// Each line of `lines` parsed into a command, blank lines skipped and each mistake handed to
/// `wrong` (to show it) as the line's turn comes: for input that is not a terminal.
pub fn parse_lines(
    lines: impl Stream<Item = String> + Unpin,
    mut wrong: impl FnMut(CommandError),
) -> impl Stream<Item = Command> + Unpin {
    lines.filter_map(move |line| {
        future::ready(match parse(&line) {
            Ok(command) => command,
            Err(mistake) => {
                wrong(mistake);
                None
            }
        })
    })
}

/// `/verify NAME [confirm]`.
fn verify(rest: &str) -> Result<Command, CommandError> {
    match rest.split_whitespace().collect::<Vec<_>>()[..] {
        [name] => Ok(Command::Verify {
            name: name.into(),
            confirm: false,
        }),
        [name, word] if word.eq_ignore_ascii_case("confirm") => Ok(Command::Verify {
            name: name.into(),
            confirm: true,
        }),
        _ => Err(CommandError::VerifyUsage),
    }
}

/// `/send NAME PATH`: the path is the rest of the line (spaces and all); a leading `~/` is the
/// home folder, as in a shell.
fn send_file(rest: &str) -> Result<Command, CommandError> {
    let rest = rest.trim();
    let (to, path) = rest
        .split_once(char::is_whitespace)
        .ok_or(CommandError::SendUsage)?;
    let path = path.trim();
    if to.is_empty() || path.is_empty() {
        return Err(CommandError::SendUsage);
    }
    Ok(Command::Transfer(TransferCommand::Send {
        to: to.to_string(),
        path: expand_home(path),
    }))
}

/// `~` and `~/…` as the home folder (`$HOME`); anything else as typed.
pub fn expand_home(path: &str) -> PathBuf {
    let home = std::env::var_os("HOME").filter(|home| !home.is_empty());
    match (path, home) {
        ("~", Some(home)) => PathBuf::from(home),
        (path, Some(home)) if path.starts_with("~/") => PathBuf::from(home).join(&path[2..]),
        (path, _) => PathBuf::from(path),
    }
}

/// `/accept NAME [ID]` and `/decline NAME [ID]`.
fn answer(rest: &str, command: &'static str, accept: bool) -> Result<Command, CommandError> {
    let mut words = rest.split_whitespace();
    let from = words
        .next()
        .ok_or(CommandError::AnswerUsage(command))?
        .to_string();
    let id = words.next().map(str::to_string);
    Ok(Command::Transfer(if accept {
        TransferCommand::Accept { from, id }
    } else {
        TransferCommand::Decline { from, id }
    }))
}

/// The first word of `rest`, if any.
fn one_word(rest: &str) -> Option<String> {
    rest.split_whitespace().next().map(str::to_string)
}

/// Splits `NAME<sep> TEXT` (for `@` the separator is `:`, though a space also ends the name).
fn direct(rest: &str, separator: char) -> Result<Command, CommandError> {
    let end = rest
        .find(|c: char| c == separator || c.is_whitespace())
        .ok_or(CommandError::DirectUsage)?;
    let to = rest[..end].to_string();
    let text = rest[end..]
        .strip_prefix(separator)
        .unwrap_or(&rest[end..])
        .trim_start()
        .to_string();
    if to.is_empty() || text.trim().is_empty() {
        return Err(CommandError::DirectUsage);
    }
    Ok(Command::Direct { to, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn say(text: &str) -> Result<Option<Command>, CommandError> {
        Ok(Some(Command::Room(RoomLine::say(text))))
    }

    fn dm(to: &str, text: &str) -> Result<Option<Command>, CommandError> {
        Ok(Some(Command::Direct {
            to: to.into(),
            text: text.into(),
        }))
    }

    #[test]
    fn lab_commands_and_aliases() {
        assert_eq!(parse(":l"), Ok(Some(Command::Peers)));
        assert_eq!(parse("/peers"), Ok(Some(Command::Peers)));
        assert_eq!(parse(":q"), Ok(Some(Command::Quit)));
        assert_eq!(parse("/quit\r"), Ok(Some(Command::Quit)));
        assert_eq!(parse("/help"), Ok(Some(Command::Help)));
        assert_eq!(parse("/stats"), Ok(Some(Command::Stats)));
        assert_eq!(parse("   "), Ok(None));
    }

    #[test]
    fn direct_messages() {
        assert_eq!(parse("@bob: hi there"), dm("bob", "hi there"));
        assert_eq!(parse("@bob:hi"), dm("bob", "hi"));
        assert_eq!(parse("@bob hi"), dm("bob", "hi"));
        assert_eq!(parse("/msg bob hi: there"), dm("bob", "hi: there"));
        assert!(parse("@bob:").is_err());
        assert!(parse("@: hi").is_err());
        assert!(parse("/msg bob").is_err());
    }

    #[test]
    fn command_names_in_any_case() {
        assert_eq!(parse("/PEERS"), Ok(Some(Command::Peers)));
        assert_eq!(parse(":L"), Ok(Some(Command::Peers)));
        assert_eq!(parse("/Quit"), Ok(Some(Command::Quit)));
        assert_eq!(parse("/CLEAR"), Ok(Some(Command::Clear)));
        assert_eq!(parse("/MSG bob Hi"), dm("bob", "Hi"));
        assert_eq!(parse("/Stats"), Ok(Some(Command::Stats)));
    }

    #[test]
    fn extra_words_after_a_command_that_takes_none_are_ignored() {
        assert_eq!(parse("/peers now please"), Ok(Some(Command::Peers)));
        assert_eq!(parse(":l x"), Ok(Some(Command::Peers)));
        assert_eq!(parse("/quit bye all"), Ok(Some(Command::Quit)));
        assert_eq!(parse("/help me"), Ok(Some(Command::Help)));
        assert_eq!(parse("/clear all"), Ok(Some(Command::Clear)));
    }

    #[test]
    fn msg_without_a_name_or_text_prints_its_usage() {
        for line in ["/msg", "/msg ", "/msg bob", "/msg bob   ", "/MSG"] {
            assert_eq!(parse(line), Err(CommandError::DirectUsage), "{line:?}");
        }
        assert_eq!(
            parse("/msg").unwrap_err().to_string(),
            "usage: @NAME: TEXT or /msg NAME TEXT"
        );
    }

    #[test]
    fn every_completed_command_parses() {
        for name in completions() {
            let line = match name {
                "/msg" => "/msg bob hi",
                "/me" => "/me waves",
                "/verify" => "/verify bob",
                "/trust" => "/trust bob",
                "/send" => "/send bob a.txt",
                "/accept" | "/decline" => "/accept bob",
                other => other,
            };
            assert!(parse(line).is_ok(), "{name}");
        }
        assert!(completions().contains(&"/who"), "aliases are completed");
        for named in ["/msg", "/VERIFY", "/trust"] {
            assert!(takes_a_name(named), "{named}");
        }
        assert!(!takes_a_name("/me") && !takes_a_name("/peers"));
        assert!(!completions().contains(&"/?"));
    }

    #[test]
    fn help_lists_every_command_of_the_table_on_a_line_of_its_own() {
        let help = help();
        assert_eq!(help.lines().count(), COMMANDS.len() + 1, "{help}");
        for spec in COMMANDS {
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(spec.usage) && l.ends_with(spec.help)),
                "{help}"
            );
        }
    }

    #[test]
    fn each_usage_shown_in_help_parses() {
        // What a person copies from /help works, with its words filled in.
        for spec in COMMANDS {
            let example = spec
                .usage
                .split("  ")
                .next()
                .unwrap()
                .replace("NAME", "bob")
                .replace("ACTION", "waves")
                .replace("TEXT", "hi")
                .replace("PATH", "a.txt")
                .replace(" [ID]", "")
                .replace(" [NAME|ID]", "");
            assert!(matches!(parse(&example), Ok(Some(_))), "{example}");
        }
    }

    #[test]
    fn me_is_an_action() {
        let waves = Ok(Some(Command::Room(RoomLine::new(
            TextKind::Action,
            "waves",
        ))));
        assert_eq!(parse("/me waves"), waves);
        assert_eq!(parse("/ME waves  "), waves);
        assert_eq!(parse("/me"), Err(CommandError::MeUsage));
        assert_eq!(parse("/me   "), Err(CommandError::MeUsage));
        assert_eq!(parse("/meow"), Err(CommandError::Unknown("/meow".into())));
    }

    #[test]
    fn file_transfer_commands() {
        let t = |c| Ok(Some(Command::Transfer(c)));
        assert_eq!(
            parse("/send bob /tmp/my report.pdf "),
            t(TransferCommand::Send {
                to: "bob".into(),
                path: "/tmp/my report.pdf".into()
            })
        );
        assert_eq!(parse("/send bob"), Err(CommandError::SendUsage));
        assert_eq!(parse("/send"), Err(CommandError::SendUsage));
        assert_eq!(
            parse("/ACCEPT alice"),
            t(TransferCommand::Accept {
                from: "alice".into(),
                id: None
            })
        );
        assert_eq!(
            parse("/decline alice 1a2b3c4d"),
            t(TransferCommand::Decline {
                from: "alice".into(),
                id: Some("1a2b3c4d".into())
            })
        );
        assert_eq!(
            parse("/accept").unwrap_err().to_string(),
            "usage: /accept NAME [ID]"
        );
        assert_eq!(parse("/transfers"), t(TransferCommand::List));
        assert_eq!(parse("/cancel"), t(TransferCommand::Cancel { which: None }));
        assert_eq!(
            parse("/resume bob"),
            t(TransferCommand::Resume {
                which: Some("bob".into())
            })
        );
    }

    #[test]
    fn piped_lines_are_parsed_once_and_mistakes_handed_on() {
        let lines = futures::stream::iter(["hi", "", "/nope", ":q"].map(String::from));
        let mut wrong = Vec::new();
        let commands: Vec<Command> =
            futures::executor::block_on(parse_lines(lines, |e| wrong.push(e)).collect());
        assert_eq!(
            commands,
            [Command::Room(RoomLine::say("hi")), Command::Quit]
        );
        assert_eq!(wrong, [CommandError::Unknown("/nope".into())]);
    }

    #[test]
    fn everything_else_is_room_text() {
        assert_eq!(parse("hello world"), say("hello world"));
        assert_eq!(parse(":) smile"), say(":) smile"));
        assert_eq!(parse("//shrug"), say("/shrug"));
        assert!(parse("/nope x").unwrap_err().to_string().contains("/nope"));
    }

    #[test]
    fn errors_read_as_before() {
        assert_eq!(
            parse("/nope x").unwrap_err().to_string(),
            "unknown command /nope; /help lists the commands"
        );
        assert_eq!(
            parse("@bob:").unwrap_err().to_string(),
            "usage: @NAME: TEXT or /msg NAME TEXT"
        );
        assert_eq!(parse("/msg"), Err(CommandError::DirectUsage));
        assert_eq!(parse("@bob"), Err(CommandError::DirectUsage));
    }

    #[test]
    fn verify_and_trust_take_a_name() {
        let verify = |name: &str, confirm| {
            Ok(Some(Command::Verify {
                name: name.into(),
                confirm,
            }))
        };
        assert_eq!(parse("/verify bob"), verify("bob", false));
        assert_eq!(parse("/VERIFY bob Confirm"), verify("bob", true));
        assert_eq!(parse("/verify"), Err(CommandError::VerifyUsage));
        assert_eq!(parse("/verify bob now"), Err(CommandError::VerifyUsage));
        assert_eq!(
            parse("/trust bob"),
            Ok(Some(Command::Trust { name: "bob".into() }))
        );
        assert_eq!(parse("/trust"), Err(CommandError::TrustUsage));
        assert_eq!(parse("/trust bob carol"), Err(CommandError::TrustUsage));
    }
}
