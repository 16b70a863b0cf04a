//! Which server to connect to when the person names none: the servers announced on the LAN
//! ([`crate::discovery`], DNS-SD over mDNS), heard for [`BROWSE_TIME`]. One found is connected
//! to, saying which; several are listed and asked about on a terminal (a numbered choice), or
//! named in an error without one (exit 2: the script must say `--server`); none, and the client
//! tries [`DEFAULT_SERVER`], saying so. `--discover` only lists them ([`discover_and_tell`]).
//!
//! An explicit `--server` never browses. What a server announced is carried to the first-use
//! prompt ([`Announced`]), which compares its fingerprint with the certificate; it never pins.

use std::io::{self, Write};

use super::config::{ClientArgs, DEFAULT_SERVER};
use super::dialogue::Terminal;
use super::error::{exit, ClientError, Local};
use super::event::ClientEvent;
use crate::discovery::{self, Announced, Browsed, Found, BROWSE_TIME};
use crate::runtime;

/// The event for a server found on the LAN.
pub fn found_event(found: &Found, chosen: bool) -> ClientEvent {
    ClientEvent::ServerFound {
        name: found.name.clone(),
        server: found.server().unwrap_or_default(),
        addresses: found.addresses.iter().map(|ip| ip.to_string()).collect(),
        port: found.port,
        tls: found.tls,
        fingerprint: found.fingerprint.map(|fp| fp.to_string()),
        chosen,
    }
}

/// Picks the server among those `browsed` found: `None` when there is none; the only one;
/// else, on a `terminal`, the one the person picks from a numbered list.
///
/// # Errors
/// Several found and no terminal to ask on ([`ClientError::Ambiguous`], exit 2); the end of
/// input at the question.
pub fn choose(
    browsed: &Browsed,
    terminal: Option<&mut dyn Terminal>,
) -> Result<Option<Found>, ClientError> {
    match (&browsed.found[..], terminal) {
        ([], _) => Ok(None),
        ([one], _) => Ok(Some(one.clone())),
        (several, None) => Err(ClientError::Ambiguous(several.to_vec())),
        (several, Some(terminal)) => {
            terminal.say("Several p2pchat servers announce themselves on the LAN:");
            for (n, found) in several.iter().enumerate() {
                terminal.say(&format!("  {}) {found}", n + 1));
            }
            if browsed.more > 0 {
                terminal.say(&format!("  (and {} more, not listed)", browsed.more));
            }
            let mut question = format!("Connect to which (1-{})? ", several.len());
            loop {
                let answer = terminal.ask(&question)?;
                if let Ok(n @ 1..) = answer.trim().parse::<usize>() {
                    if let Some(found) = several.get(n - 1) {
                        return Ok(Some(found.clone()));
                    }
                }
                question = format!("Please type a number from 1 to {}: ", several.len());
            }
        }
    }
}

/// The servers a client in this mode can talk to: those announcing TLS, or plaintext ones for a
/// `plaintext` client; and how many others were set aside. When none speaks the client's mode,
/// all are kept: connecting then says what is wrong (TLS against plaintext) instead of a
/// silent fallback to this host.
pub fn for_mode(mut browsed: Browsed, plaintext: bool) -> (Browsed, usize) {
    let matching = browsed.found.iter().filter(|f| f.tls != plaintext).count();
    if matching == 0 {
        return (browsed, 0);
    }
    let before = browsed.found.len();
    browsed.found.retain(|f| f.tls != plaintext);
    (browsed, before - matching)
}

/// Browses off the runtime's threads (it blocks for [`BROWSE_TIME`]).
async fn browse() -> Result<Browsed, discovery::DiscoveryError> {
    runtime::spawn_blocking(|| discovery::browse(BROWSE_TIME)).await
}

/// The flags with the server to connect to: as given when `--server` names one (no browsing);
/// else the one found on the LAN, with what it announced ([`ClientArgs::announced`]); else
/// [`DEFAULT_SERVER`]. What it found or did not is reported to `emit`; a browse that failed
/// (no multicast here) is a warning, and the client falls back as if none answered.
///
/// # Errors
/// `--accept-new` without `--server` ([`ClientError::AcceptNewWithoutServer`], before any
/// browse); else as [`choose`].
pub async fn find_server(
    args: &ClientArgs,
    terminal: Option<&mut dyn Terminal>,
    emit: &mut dyn FnMut(ClientEvent),
) -> Result<ClientArgs, ClientError> {
    if args.server.is_some() {
        return Ok(args.clone());
    }
    // A LAN host can say goodbye for the real server and announce itself: the one server found
    // is connected to without asking, and --accept-new would trust it with the password.
    if args.accept_new {
        return Err(ClientError::AcceptNewWithoutServer);
    }
    let browsed = match browse().await {
        Ok(browsed) => browsed,
        Err(error) => {
            emit(ClientEvent::Warning {
                message: format!("cannot look for servers on the LAN: {error}"),
            });
            Browsed::default()
        }
    };
    let (browsed, other_mode) = for_mode(browsed, args.plaintext);
    if other_mode > 0 {
        let (they, we) = match args.plaintext {
            true => ("TLS", "--plaintext"),
            false => ("plaintext (--plaintext)", "TLS"),
        };
        emit(ClientEvent::Warning {
            message: format!(
                "{other_mode} server(s) announced on the LAN speak {they}, not {we} as this client: left out"
            ),
        });
    }
    let mut args = args.clone();
    match choose(&browsed, terminal)? {
        Some(found) => {
            emit(found_event(&found, true));
            args.server = found.server();
            args.announced = Some(Announced {
                name: found.name,
                fingerprint: found.fingerprint,
            });
        }
        None => {
            emit(ClientEvent::NoServerFound {
                fallback: DEFAULT_SERVER.into(),
            });
            args.server = Some(DEFAULT_SERVER.into());
        }
    }
    Ok(args)
}

/// `--discover`: lists the servers announced on the LAN on stdout, one per line (one JSON
/// object each with `--json`), says on stderr when none answered, and returns the exit status:
/// 0, or 1 when the LAN could not be browsed.
pub fn discover_and_tell(args: &ClientArgs) -> i32 {
    let browsed = match runtime::block_on(browse()) {
        Ok(browsed) => browsed,
        Err(error) => {
            eprintln!("p2pchat-client: {}", Local::Discovery(error));
            return exit::LOCAL;
        }
    };
    let mut stdout = io::stdout().lock();
    for found in &browsed.found {
        let event = found_event(found, false);
        let line = match args.json {
            true => serde_json::to_string(&event).expect("events always serialize"),
            false => event.render(0),
        };
        // A closed stdout is no reason to fail: nothing is left to do.
        let _ = writeln!(stdout, "{line}");
    }
    let _ = stdout.flush();
    if browsed.more > 0 {
        eprintln!(
            "p2pchat-client: {} more servers announced themselves, not listed",
            browsed.more
        );
    }
    if browsed.found.is_empty() {
        eprintln!(
            "p2pchat-client: no p2pchat server announced itself on the LAN (listened {:.1} s)",
            BROWSE_TIME.as_secs_f64()
        );
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers questions from a script and keeps what was said.
    struct Scripted {
        answers: Vec<&'static str>,
        said: Vec<String>,
    }

    impl Terminal for Scripted {
        fn ask(&mut self, question: &str) -> Result<String, Local> {
            self.said.push(question.to_string());
            match self.answers.is_empty() {
                true => Err(Local::InputEnded),
                false => Ok(self.answers.remove(0).to_string()),
            }
        }
        fn ask_secret(&mut self, question: &str) -> Result<String, Local> {
            self.ask(question)
        }
        fn checking(&mut self) {}
        fn checked(&mut self) {}
        fn say(&mut self, line: &str) {
            self.said.push(line.to_string());
        }
    }

    fn server(name: &str, ip: &str) -> Found {
        Found {
            name: name.into(),
            host: format!("{name}.local."),
            addresses: vec![ip.parse().unwrap()],
            port: 12000,
            tls: true,
            fingerprint: None,
            protocol: Some(1),
        }
    }

    fn browsed(found: Vec<Found>) -> Browsed {
        Browsed { found, more: 0 }
    }

    #[test]
    fn none_found_is_none_and_one_found_is_it_without_a_question() {
        assert_eq!(choose(&browsed(vec![]), None).unwrap(), None);
        let one = server("a", "10.0.0.1");
        let mut terminal = Scripted {
            answers: vec![],
            said: vec![],
        };
        let chosen = choose(&browsed(vec![one.clone()]), Some(&mut terminal)).unwrap();
        assert_eq!(chosen, Some(one));
        assert!(terminal.said.is_empty(), "{:?}", terminal.said);
    }

    #[test]
    fn servers_of_the_other_mode_are_left_out_unless_none_speaks_the_clients() {
        let mut plain = server("plain", "10.0.0.3");
        plain.tls = false;
        let both = browsed(vec![server("a", "10.0.0.1"), plain.clone()]);
        let (tls_client, left_out) = for_mode(both.clone(), false);
        assert_eq!(tls_client.found, vec![server("a", "10.0.0.1")]);
        assert_eq!(left_out, 1);
        let (plain_client, left_out) = for_mode(both, true);
        assert_eq!(plain_client.found, vec![plain.clone()]);
        assert_eq!(left_out, 1);
        // None of the client's mode: all kept, so that connecting says what is wrong.
        let (kept, left_out) = for_mode(browsed(vec![plain.clone()]), false);
        assert_eq!((kept.found, left_out), (vec![plain], 0));
    }

    #[test]
    fn several_without_a_terminal_are_named_in_an_error_that_exits_2() {
        let both = browsed(vec![server("a", "10.0.0.1"), server("b", "10.0.0.2")]);
        let error = choose(&both, None).unwrap_err();
        assert_eq!(error.exit_code(), exit::USAGE);
        let text = error.to_string();
        assert!(
            text.contains("a at 10.0.0.1:12000") && text.contains("b at 10.0.0.2:12000"),
            "{text}"
        );
        assert!(text.contains("--server"), "{text}");
    }

    #[test]
    fn several_on_a_terminal_are_a_numbered_choice_asked_until_answered() {
        let both = browsed(vec![server("a", "10.0.0.1"), server("b", "10.0.0.2")]);
        let mut terminal = Scripted {
            answers: vec!["3", "b", "0", " 2 "],
            said: vec![],
        };
        let chosen = choose(&both, Some(&mut terminal)).unwrap();
        assert_eq!(chosen.map(|f| f.name), Some("b".to_string()));
        assert!(terminal.said[1].starts_with("  1) a at 10.0.0.1:12000"));
        assert!(terminal.said[2].starts_with("  2) b at 10.0.0.2:12000"));
        assert_eq!(terminal.said[3], "Connect to which (1-2)? ");
        assert_eq!(terminal.said[4], "Please type a number from 1 to 2: ");
        // The end of input is the end of the question.
        let mut terminal = Scripted {
            answers: vec![],
            said: vec![],
        };
        assert!(matches!(
            choose(&both, Some(&mut terminal)),
            Err(ClientError::Local(Local::InputEnded))
        ));
    }
}
