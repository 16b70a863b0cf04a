//! What a person types after login, parsed into a [`Command`].
//!
//! The lab's commands and the familiar IRC-style aliases:
//! plain text → the room; `@name: text` or `/msg name text` → a direct message;
//! `:l` or `/peers` → the online users; `:q` or `/quit` → leave; `/help`; `/stats` → the
//! direct-message counters.
//! A line starting with `//` sends the rest, from its second `/`, to the room; `/clear` clears
//! the screen (on a terminal; elsewhere it does nothing).
//!
//! Forgiving, as IRC clients are: command names in any case (`/PEERS`, `:Q`), extra words after
//! a command that takes none ignored (`/peers now`), `/msg` alone answered with its usage.

/// One thing the person asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Say something to the room.
    Say(String),
    /// An action in the room: `/me waves`, shown to others as `* alice waves`.
    Me(String),
    /// Send a direct message to one peer over UDP.
    Direct {
        to: String,
        text: String,
    },
    /// Show who is online (asked of the server).
    Peers,
    /// Show the direct-message counters (received, delivered, dropped by reason).
    Stats,
    Help,
    Quit,
    /// Clear the screen: the terminal does it; piped input has no screen to clear.
    Clear,
}

/// The command names, for completion after `/` (each alias once, the IRC-style ones).
pub const COMMANDS: &[&str] = &[
    "/clear", "/exit", "/help", "/list", "/me", "/msg", "/peers", "/quit", "/stats", "/who",
];

/// Shown for `/help`.
pub const HELP: &str = "\
commands:
  TEXT                 say TEXT to the room
  /me ACTION           an action in the room: /me waves shows * NAME waves
  @NAME: TEXT          send TEXT straight to NAME (direct message over UDP)
  /msg NAME TEXT       the same
  :l  /peers           list the users online
  /stats               direct messages received, delivered and dropped (by reason)
  :q  /quit            leave
  /help                this help
  /clear               clear the screen
  //TEXT               say /TEXT to the room";

/// A line that is not a command the client knows, or a direct message without its parts.
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
}

/// Parses one input line; `Ok(None)` for a blank line.
///
/// # Errors
/// An unknown `/command`, or a direct message without a name or text.
pub fn parse(line: &str) -> Result<Option<Command>, CommandError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let trimmed = line.trim();
    // The first word names the command, in any case; commands that take nothing ignore the rest.
    let first = trimmed
        .split_whitespace()
        .next()
        .unwrap_or(trimmed)
        .to_ascii_lowercase();
    let command = match first.as_str() {
        ":l" | "/peers" | "/list" | "/who" => Command::Peers,
        ":q" | "/quit" | "/exit" => Command::Quit,
        ":h" | "/help" | "/?" => Command::Help,
        "/stats" => Command::Stats,
        "/clear" => Command::Clear,
        "/msg" => direct(line.trim_start()["/msg".len()..].trim_start(), ' ')?,
        "/me" => match trimmed["/me".len()..].trim() {
            "" => return Err(CommandError::MeUsage),
            action => Command::Me(action.to_string()),
        },
        _ => {
            if let Some(rest) = line.strip_prefix('@') {
                direct(rest, ':')?
            } else if let Some(escaped) = line.strip_prefix("//") {
                Command::Say(format!("/{escaped}"))
            } else if line.starts_with('/') {
                let name = line.split_whitespace().next().unwrap_or(line);
                return Err(CommandError::Unknown(name.to_string()));
            } else {
                Command::Say(line.to_string())
            }
        }
    };
    Ok(Some(command))
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
        Ok(Some(Command::Say(text.into())))
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
    fn every_listed_command_parses() {
        for name in COMMANDS {
            let line = match *name {
                "/msg" => "/msg bob hi",
                "/me" => "/me waves",
                other => other,
            };
            assert!(parse(line).is_ok(), "{name}");
        }
    }

    #[test]
    fn me_is_an_action() {
        assert_eq!(parse("/me waves"), Ok(Some(Command::Me("waves".into()))));
        assert_eq!(parse("/ME waves"), Ok(Some(Command::Me("waves".into()))));
        assert_eq!(parse("/me"), Err(CommandError::MeUsage));
        assert_eq!(parse("/me   "), Err(CommandError::MeUsage));
        assert_eq!(parse("/meow"), Err(CommandError::Unknown("/meow".into())));
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
}
