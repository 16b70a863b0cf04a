//! The questions before the chat: log in or register, the username, the password, and whether
//! to trust a server met for the first time. It decides what to ask and what to do with the
//! answers — the retry policy — and never touches a real terminal or socket: it talks to the
//! person through a [`Terminal`] and to the server through a [`LoginServer`], so each rule is a
//! unit test over a scripted terminal. `start` has the real ones (stdin, and a
//! [`Client`](super::Client) that can connect again).
//!
//! Two dialogues: [`log_in`] on a terminal, forgiving (a wrong password, a taken or invalid name
//! or a short password is asked again, on a new connection when the server closed this one, as
//! the protocol has it after a refusal; a new name is checked before the password is asked, a
//! new password is typed twice and its prompt says the rule; an empty password goes back to the
//! username), and [`log_in_once`] for piped input, where the answers come in order and a wrong
//! one ends the client. Both tell the terminal when the server checks a password and when it
//! has answered ([`Terminal::checking`], [`Terminal::checked`]): keys typed in between may be
//! the next password, typed ahead, and must stay hidden.
//!
//! How a question is shown and an answer read (echo off for a secret, what happens to keys typed
//! ahead) belongs to the terminal, not to the dialogue: that is what [`Terminal`] is for.

use std::future::Future;

use super::error::{ClientError, Local};
use super::link::{AuthMode, NameCheck};
use super::secure::{AnnouncedMatch, FirstContact};
use crate::protocol::ErrorCode;
use crate::rules::{validate_password, validate_username, MIN_PASSWORD_CHARS};
use crate::tls::Fingerprint;

/// Where the questions are asked.
pub trait Terminal {
    /// Shows `question` and reads one answer, without its line end.
    ///
    /// # Errors
    /// [`Local::InputEnded`] at the end of input; a read that failed.
    fn ask(&mut self, question: &str) -> Result<String, Local>;

    /// Shows `question` and reads a secret (a password) without showing what is typed. Keys
    /// typed before the question are discarded (as `sudo` and `ssh` do: they were typed blind),
    /// and nothing typed is shown until the next question or [`Terminal::checked`].
    ///
    /// # Errors
    /// As [`Terminal::ask`].
    fn ask_secret(&mut self, question: &str) -> Result<String, Local>;

    /// The server is checking a password: says so, and keeps keys typed meanwhile hidden.
    fn checking(&mut self);

    /// The server has answered: keys typed while it checked are discarded (they may be a
    /// password typed ahead), and what is typed shows again.
    fn checked(&mut self);

    /// Shows a line: why an answer is asked again, what a question is about.
    fn say(&mut self, line: &str);
}

/// The server, as the login dialogue needs it.
pub trait LoginServer {
    /// Whether a registration could take `username` (`check_name`).
    fn check_name(
        &mut self,
        username: &str,
    ) -> impl Future<Output = Result<NameCheck, ClientError>>;

    /// Logs in or registers.
    fn authenticate(
        &mut self,
        mode: AuthMode,
        username: &str,
        password: &str,
    ) -> impl Future<Output = Result<(), ClientError>>;

    /// Drops this connection and makes a new one (the server closes it after a refusal).
    fn connect_again(&mut self) -> impl Future<Output = Result<(), ClientError>>;
}

/// The dialogue on a terminal, forgiving: typing mistakes are asked again.
///
/// # Errors
/// A refusal that is no typing mistake, a server lost twice, the end of input.
pub async fn log_in(
    terminal: &mut impl Terminal,
    server: &mut impl LoginServer,
) -> Result<(), ClientError> {
    let mode = loop {
        match auth_mode(&terminal.ask("login or register? ")?) {
            Some(mode) => break mode,
            None => terminal.say("please answer login or register"),
        }
    };
    let mut username = ask_username(terminal, server, mode).await?;
    loop {
        // An empty password: the person wants another name (or mistyped this one).
        let Some(password) = ask_password(terminal, mode)? else {
            username = ask_username(terminal, server, mode).await?;
            continue;
        };
        let (code, message) = match check(terminal, server, mode, &username, &password).await {
            Ok(()) => return Ok(()),
            Err(ClientError::Refused { code, message }) if asks_again(code) => (code, message),
            // The connection timed out or broke while the person typed: once more, on a new
            // connection, with what they typed.
            Err(ClientError::Disconnected(_))
            | Err(ClientError::Refused {
                code: ErrorCode::AuthTimeout,
                ..
            }) => {
                server.connect_again().await?;
                return check(terminal, server, mode, &username, &password).await;
            }
            Err(other) => return Err(other),
        };
        terminal.say(&format!("{message}; please try again"));
        // Every refusal of a login or registration closes the connection.
        server.connect_again().await?;
        if matches!(code, ErrorCode::NameTaken | ErrorCode::InvalidUsername) {
            username = ask_username(terminal, server, mode).await?;
        }
    }
}

/// The dialogue for piped input: login or register, the username, the password, in order, and
/// one try.
///
/// # Errors
/// A first answer that is neither `login` nor `register`, the end of input, the server's
/// refusal.
pub async fn log_in_once(
    terminal: &mut impl Terminal,
    server: &mut impl LoginServer,
) -> Result<(), ClientError> {
    let answer = terminal.ask("login or register? ")?;
    let mode = auth_mode(&answer).ok_or_else(|| Local::NotLoginOrRegister {
        answer: answer.trim().to_ascii_lowercase(),
    })?;
    let username = terminal.ask("username: ")?.trim().to_string();
    let password = terminal.ask_secret(&password_prompt(mode))?;
    check(terminal, server, mode, &username, &password).await
}

/// Has the server check a password, with the terminal told while it does.
async fn check(
    terminal: &mut impl Terminal,
    server: &mut impl LoginServer,
    mode: AuthMode,
    username: &str,
    password: &str,
) -> Result<(), ClientError> {
    terminal.checking();
    let answer = server.authenticate(mode, username, password).await;
    terminal.checked();
    answer
}

/// The prompt for a password: a new one's says the rule ([`MIN_PASSWORD_CHARS`]), so that the
/// first try can follow it.
fn password_prompt(mode: AuthMode) -> String {
    match mode {
        AuthMode::Login => "password: ".into(),
        AuthMode::Register => format!("password (at least {MIN_PASSWORD_CHARS} characters): "),
    }
}

/// SSH's question at first contact: trust this fingerprint? `yes`/`y` trusts it, `no`/`n`
/// refuses it (in any case), and so does OpenSSH's third answer: the fingerprint itself, pasted
/// from where the server printed it, trusts the server if it is this server's; one that differs
/// is said to differ and asked again, as is anything else.
///
/// # Errors
/// The end of input.
pub fn ask_trust(terminal: &mut impl Terminal, contact: &FirstContact) -> Result<bool, Local> {
    terminal.say(&format!(
        "The authenticity of server '{}' can't be established.\n\
         Its fingerprint is {}.\n\
         Compare it with the one the server printed at start (\"fingerprint SHA256:…\").",
        contact.server, contact.fingerprint
    ));
    if let Some(known_as) = &contact.known_as {
        terminal.say(&format!(
            "Note: {known_as} of {}. A new name for a known address is still a first \
             contact: whoever made the name lead there chose the server.",
            contact.file.display()
        ));
    }
    // Found on the LAN: the announcement is compared, never trusted (anyone can announce).
    match contact.announced_match() {
        Some(AnnouncedMatch::Matches) => terminal.say(
            "It matches the fingerprint announced on the LAN — anyone on the LAN can announce, \
             so compare it with the server's operator.",
        ),
        Some(AnnouncedMatch::Differs(announced)) => terminal.say(&format!(
            "WARNING: it does NOT match what was announced on the LAN ({announced}): someone \
             may be announcing a server that is not this one. Say no unless the server's \
             operator confirms the fingerprint above."
        )),
        Some(AnnouncedMatch::NoneAnnounced) => terminal.say(
            "No fingerprint was announced on the LAN for it: compare it with the server's \
             operator.",
        ),
        None => {}
    }
    let mut question = format!(
        "Trust it and remember it in {} (yes/no/[fingerprint])? ",
        contact.file.display()
    );
    loop {
        let answer = terminal.ask(&question)?;
        let answer = answer.trim();
        match answer.to_ascii_lowercase().as_str() {
            "yes" | "y" => return Ok(true),
            "no" | "n" => return Ok(false),
            _ => {}
        }
        if let Ok(pasted) = answer.parse::<Fingerprint>() {
            if pasted == contact.fingerprint {
                return Ok(true);
            }
            terminal.say(&format!(
                "{pasted} is not this server's fingerprint: it is {}",
                contact.fingerprint
            ));
        }
        question = "Please type 'yes', 'no' or the fingerprint: ".into();
    }
}

/// `login`/`l` or `register`/`r`, in any case.
fn auth_mode(answer: &str) -> Option<AuthMode> {
    match answer.trim().to_ascii_lowercase().as_str() {
        "login" | "l" => Some(AuthMode::Login),
        "register" | "r" => Some(AuthMode::Register),
        _ => None,
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
async fn ask_username(
    terminal: &mut impl Terminal,
    server: &mut impl LoginServer,
    mode: AuthMode,
) -> Result<String, ClientError> {
    loop {
        let username = terminal.ask("username: ")?.trim().to_string();
        if let Err(wrong) = validate_username(&username) {
            terminal.say(&format!("{wrong}; please try again"));
            continue;
        }
        if mode == AuthMode::Login {
            return Ok(username);
        }
        match server.check_name(&username).await? {
            NameCheck::Available | NameCheck::NotSupported => return Ok(username),
            NameCheck::Refused { message, .. } => {
                terminal.say(&format!("{message}; please try again"))
            }
        }
    }
}

/// Asks for the password; a new one must follow the rules and be typed twice alike. `None`:
/// the password was left empty, to go back to the username.
fn ask_password(terminal: &mut impl Terminal, mode: AuthMode) -> Result<Option<String>, Local> {
    loop {
        let password = terminal.ask_secret(&password_prompt(mode))?;
        if password.is_empty() {
            return Ok(None);
        }
        if mode == AuthMode::Login {
            return Ok(Some(password));
        }
        if let Err(wrong) = validate_password(&password) {
            terminal.say(&format!("{wrong}; please try again"));
            continue;
        }
        if terminal.ask_secret("password again: ")? == password {
            return Ok(Some(password));
        }
        terminal.say("the two passwords differ; please try again");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::path::PathBuf;

    use super::*;
    use crate::client::error::Disconnect;
    use crate::runtime;
    use crate::tls::Fingerprint;

    /// A terminal that answers from a script and keeps a transcript: `> ` a question, `* ` a
    /// secret question, `(checking)` and `(checked)` around the server's check, and what it
    /// said as is.
    struct Scripted {
        answers: VecDeque<&'static str>,
        transcript: Vec<String>,
    }

    impl Scripted {
        fn new(answers: &[&'static str]) -> Scripted {
            Scripted {
                answers: answers.iter().copied().collect(),
                transcript: Vec::new(),
            }
        }

        fn answer(&mut self) -> Result<String, Local> {
            self.answers
                .pop_front()
                .map(String::from)
                .ok_or(Local::InputEnded)
        }
    }

    impl Terminal for Scripted {
        fn ask(&mut self, question: &str) -> Result<String, Local> {
            self.transcript.push(format!("> {question}"));
            self.answer()
        }

        fn ask_secret(&mut self, question: &str) -> Result<String, Local> {
            self.transcript.push(format!("* {question}"));
            self.answer()
        }

        fn checking(&mut self) {
            self.transcript.push(CHECKING.into());
        }

        fn checked(&mut self) {
            self.transcript.push(CHECKED.into());
        }

        fn say(&mut self, line: &str) {
            self.transcript.push(line.to_string());
        }
    }

    const CHECKING: &str = "(checking)";
    const CHECKED: &str = "(checked)";
    const NEW_PASSWORD: &str = "* password (at least 8 characters): ";

    /// What the fake server was asked, in order.
    #[derive(Debug, PartialEq, Eq)]
    enum Call {
        CheckName(String),
        Authenticate(AuthMode, String, String),
        ConnectAgain,
    }

    /// A server that answers `check_name` and `authenticate` from scripts (an unscripted
    /// `check_name` finds the name free, an unscripted `authenticate` succeeds), and records
    /// every call.
    #[derive(Default)]
    struct FakeServer {
        names: VecDeque<NameCheck>,
        logins: VecDeque<Result<(), ClientError>>,
        calls: Vec<Call>,
    }

    impl FakeServer {
        fn answering(logins: Vec<Result<(), ClientError>>) -> FakeServer {
            FakeServer {
                logins: logins.into(),
                ..FakeServer::default()
            }
        }
    }

    impl LoginServer for FakeServer {
        async fn check_name(&mut self, username: &str) -> Result<NameCheck, ClientError> {
            self.calls.push(Call::CheckName(username.into()));
            Ok(self.names.pop_front().unwrap_or(NameCheck::Available))
        }

        async fn authenticate(
            &mut self,
            mode: AuthMode,
            username: &str,
            password: &str,
        ) -> Result<(), ClientError> {
            self.calls
                .push(Call::Authenticate(mode, username.into(), password.into()));
            self.logins.pop_front().unwrap_or(Ok(()))
        }

        async fn connect_again(&mut self) -> Result<(), ClientError> {
            self.calls.push(Call::ConnectAgain);
            Ok(())
        }
    }

    fn refused(code: ErrorCode, message: &str) -> Result<(), ClientError> {
        Err(ClientError::Refused {
            code,
            message: message.into(),
        })
    }

    fn login(name: &str, password: &str) -> Call {
        Call::Authenticate(AuthMode::Login, name.into(), password.into())
    }

    fn register(name: &str, password: &str) -> Call {
        Call::Authenticate(AuthMode::Register, name.into(), password.into())
    }

    fn run_log_in(terminal: &mut Scripted, server: &mut FakeServer) -> Result<(), ClientError> {
        runtime::block_on(log_in(terminal, server))
    }

    #[test]
    fn a_wrong_password_is_asked_again_on_a_new_connection() {
        let mut terminal = Scripted::new(&["login", "alice", "wrong", "right"]);
        let mut server = FakeServer::answering(vec![refused(
            ErrorCode::BadCredentials,
            "unknown user or wrong password",
        )]);
        run_log_in(&mut terminal, &mut server).expect("logged in");
        assert_eq!(
            server.calls,
            [
                login("alice", "wrong"),
                Call::ConnectAgain,
                login("alice", "right")
            ]
        );
        assert_eq!(
            terminal.transcript,
            [
                "> login or register? ",
                "> username: ",
                "* password: ",
                CHECKING,
                CHECKED,
                "unknown user or wrong password; please try again",
                "* password: ",
                CHECKING,
                CHECKED,
            ]
        );
    }

    #[test]
    fn a_name_the_server_calls_taken_is_asked_again_before_the_password() {
        let mut terminal = Scripted::new(&["r", "alice", "alicia", "long-enough", "long-enough"]);
        let mut server = FakeServer {
            names: [NameCheck::Refused {
                code: ErrorCode::NameTaken,
                message: "alice is already registered".into(),
            }]
            .into(),
            ..FakeServer::default()
        };
        run_log_in(&mut terminal, &mut server).expect("registered");
        assert_eq!(
            server.calls,
            [
                Call::CheckName("alice".into()),
                Call::CheckName("alicia".into()),
                register("alicia", "long-enough"),
            ]
        );
        assert!(terminal
            .transcript
            .contains(&"alice is already registered; please try again".to_string()));
    }

    #[test]
    fn a_name_taken_at_registration_is_asked_again_on_a_new_connection() {
        let mut terminal = Scripted::new(&[
            "register",
            "alice",
            "long-enough",
            "long-enough",
            "alicia",
            "other-password",
            "other-password",
        ]);
        let mut server = FakeServer::answering(vec![refused(
            ErrorCode::NameTaken,
            "alice is already registered",
        )]);
        run_log_in(&mut terminal, &mut server).expect("registered");
        assert_eq!(
            server.calls,
            [
                Call::CheckName("alice".into()),
                register("alice", "long-enough"),
                Call::ConnectAgain,
                Call::CheckName("alicia".into()),
                register("alicia", "other-password"),
            ]
        );
    }

    #[test]
    fn a_name_against_the_rules_is_asked_again_without_asking_the_server() {
        let mut terminal = Scripted::new(&["login", "a b", "alice", "pw"]);
        let mut server = FakeServer::default();
        run_log_in(&mut terminal, &mut server).expect("logged in");
        assert_eq!(server.calls, [login("alice", "pw")]);
        let wrong = validate_username("a b").expect_err("a space is against the rules");
        assert_eq!(terminal.transcript[2], format!("{wrong}; please try again"));
    }

    #[test]
    fn a_short_new_password_is_asked_again_before_it_is_sent() {
        let mut terminal =
            Scripted::new(&["register", "alice", "short", "long-enough", "long-enough"]);
        let mut server = FakeServer::default();
        run_log_in(&mut terminal, &mut server).expect("registered");
        assert_eq!(
            server.calls,
            [
                Call::CheckName("alice".into()),
                register("alice", "long-enough")
            ]
        );
        let wrong = validate_password("short").expect_err("too short");
        assert!(terminal
            .transcript
            .contains(&format!("{wrong}; please try again")));
    }

    #[test]
    fn new_passwords_that_differ_are_both_asked_again() {
        let mut terminal = Scripted::new(&[
            "register",
            "alice",
            "long-enough",
            "long-enougj",
            "long-enough",
            "long-enough",
        ]);
        let mut server = FakeServer::default();
        run_log_in(&mut terminal, &mut server).expect("registered");
        assert_eq!(server.calls.last(), Some(&register("alice", "long-enough")));
        assert_eq!(
            terminal.transcript[2..],
            [
                NEW_PASSWORD,
                "* password again: ",
                "the two passwords differ; please try again",
                NEW_PASSWORD,
                "* password again: ",
                CHECKING,
                CHECKED,
            ]
        );
    }

    #[test]
    fn a_login_is_asked_once_for_its_password_and_its_name_is_not_checked() {
        let mut terminal = Scripted::new(&["L", "alice", "pw"]);
        let mut server = FakeServer::default();
        run_log_in(&mut terminal, &mut server).expect("logged in");
        assert_eq!(server.calls, [login("alice", "pw")]);
        assert_eq!(
            terminal.transcript,
            [
                "> login or register? ",
                "> username: ",
                "* password: ",
                CHECKING,
                CHECKED
            ]
        );
    }

    #[test]
    fn an_answer_that_is_neither_login_nor_register_is_asked_again() {
        let mut terminal = Scripted::new(&["maybe", " Login ", "alice", "pw"]);
        let mut server = FakeServer::default();
        run_log_in(&mut terminal, &mut server).expect("logged in");
        assert_eq!(
            terminal.transcript[..3],
            [
                "> login or register? ",
                "please answer login or register",
                "> login or register? "
            ]
        );
    }

    #[test]
    fn a_connection_lost_while_typing_is_made_again_once_with_what_was_typed() {
        let mut terminal = Scripted::new(&["login", "alice", "pw"]);
        let mut server = FakeServer::answering(vec![
            Err(Disconnect::Closed.into()),
            refused(ErrorCode::BadCredentials, "unknown user or wrong password"),
        ]);
        let result = run_log_in(&mut terminal, &mut server);
        // The second try is the last: its refusal ends the dialogue, nothing is asked again.
        assert!(
            matches!(
                result,
                Err(ClientError::Refused {
                    code: ErrorCode::BadCredentials,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(
            server.calls,
            [
                login("alice", "pw"),
                Call::ConnectAgain,
                login("alice", "pw")
            ]
        );
    }

    #[test]
    fn a_refusal_that_is_no_typing_mistake_ends_the_dialogue() {
        let mut terminal = Scripted::new(&["login", "alice", "pw", "more", "answers"]);
        let mut server =
            FakeServer::answering(vec![refused(ErrorCode::AlreadyOnline, "already online")]);
        let result = run_log_in(&mut terminal, &mut server);
        assert!(
            matches!(
                result,
                Err(ClientError::Refused {
                    code: ErrorCode::AlreadyOnline,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(server.calls, [login("alice", "pw")]);
    }

    #[test]
    fn input_that_ends_at_a_prompt_ends_the_dialogue_as_a_local_failure() {
        for answers in [&[][..], &["login"], &["register", "alice"]] {
            let mut terminal = Scripted::new(answers);
            let mut server = FakeServer::default();
            let result = run_log_in(&mut terminal, &mut server);
            assert!(
                matches!(result, Err(ClientError::Local(Local::InputEnded))),
                "{answers:?}: {result:?}"
            );
            assert!(
                !server
                    .calls
                    .iter()
                    .any(|c| matches!(c, Call::Authenticate(..))),
                "{answers:?}: {:?}",
                server.calls
            );
        }
    }

    #[test]
    fn piped_answers_are_taken_in_order_once() {
        let mut terminal = Scripted::new(&["Register", " alice ", "pw"]);
        let mut server =
            FakeServer::answering(vec![refused(ErrorCode::InvalidPassword, "too short")]);
        let result = runtime::block_on(log_in_once(&mut terminal, &mut server));
        // No name check, no rules checked here, no second try: the server says what is wrong.
        assert!(
            matches!(
                result,
                Err(ClientError::Refused {
                    code: ErrorCode::InvalidPassword,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(server.calls, [register("alice", "pw")]);
        assert_eq!(
            terminal.transcript,
            [
                "> login or register? ",
                "> username: ",
                NEW_PASSWORD,
                CHECKING,
                CHECKED
            ]
        );
    }

    #[test]
    fn a_piped_first_answer_that_is_neither_login_nor_register_ends_the_client() {
        let mut terminal = Scripted::new(&["hello", "alice", "pw"]);
        let mut server = FakeServer::default();
        let result = runtime::block_on(log_in_once(&mut terminal, &mut server));
        match result {
            Err(ClientError::Local(Local::NotLoginOrRegister { answer })) => {
                assert_eq!(answer, "hello")
            }
            other => panic!("{other:?}"),
        }
        assert!(server.calls.is_empty());
    }

    fn contact() -> FirstContact {
        FirstContact {
            server: "chat.lan:12000".into(),
            fingerprint: Fingerprint::of_certificate(b"cert"),
            file: PathBuf::from("/home/a/.config/p2pchat/known_servers"),
            known_as: None,
            announced: None,
        }
    }

    fn announced(fingerprint: Option<Fingerprint>) -> FirstContact {
        FirstContact {
            announced: Some(crate::discovery::Announced {
                name: "lab:12000".into(),
                fingerprint,
            }),
            ..contact()
        }
    }

    #[test]
    fn the_question_says_whether_the_certificate_matches_what_the_lan_announced() {
        let mut terminal = Scripted::new(&["yes"]);
        let matching = announced(Some(contact().fingerprint));
        assert_eq!(ask_trust(&mut terminal, &matching).ok(), Some(true));
        assert!(
            terminal.transcript[1].starts_with("It matches the fingerprint announced on the LAN")
                && terminal.transcript[1].contains("anyone on the LAN can announce"),
            "{:?}",
            terminal.transcript
        );

        let spoofed = Fingerprint::of_certificate(b"spoofed");
        let mut terminal = Scripted::new(&["no"]);
        assert_eq!(
            ask_trust(&mut terminal, &announced(Some(spoofed))).ok(),
            Some(false)
        );
        assert!(
            terminal.transcript[1].contains("does NOT match what was announced")
                && terminal.transcript[1].contains(&spoofed.to_string()),
            "{:?}",
            terminal.transcript
        );
        // An announced fingerprint pasted as the answer is not this server's: never trusted.
        let pasted: &'static str = Box::leak(spoofed.to_string().into_boxed_str());
        let mut terminal = Scripted::new(&[pasted]);
        assert!(matches!(
            ask_trust(&mut terminal, &announced(Some(spoofed))),
            Err(Local::InputEnded)
        ));

        let mut terminal = Scripted::new(&["no"]);
        ask_trust(&mut terminal, &announced(None)).unwrap();
        assert!(terminal.transcript[1].starts_with("No fingerprint was announced"));
        // Not found on the LAN: nothing said about announcements.
        let mut terminal = Scripted::new(&["no"]);
        ask_trust(&mut terminal, &contact()).unwrap();
        assert!(terminal.transcript[1].starts_with("> Trust it"));
    }

    #[test]
    fn yes_or_y_trusts_a_new_server_and_no_or_n_refuses_it_in_any_case() {
        for (answer, trusted) in [
            ("yes", true),
            (" Y ", true),
            ("YES", true),
            ("y", true),
            (" NO ", false),
            ("n", false),
            ("No", false),
        ] {
            let mut terminal = Scripted::new(&[answer]);
            assert_eq!(
                ask_trust(&mut terminal, &contact()).ok(),
                Some(trusted),
                "{answer:?}"
            );
        }
        let mut terminal = Scripted::new(&["sure", "ye", "yes"]);
        assert_eq!(ask_trust(&mut terminal, &contact()).ok(), Some(true));
        assert_eq!(
            terminal.transcript[1..],
            [
                "> Trust it and remember it in /home/a/.config/p2pchat/known_servers (yes/no/[fingerprint])? ",
                "> Please type 'yes', 'no' or the fingerprint: ",
                "> Please type 'yes', 'no' or the fingerprint: ",
            ]
        );
        assert!(terminal.transcript[0].contains(&contact().fingerprint.to_string()));
    }

    #[test]
    fn a_new_name_for_a_known_address_is_asked_about_naming_the_other_name() {
        let contact = FirstContact {
            known_as: Some(crate::client::known_servers::KnownAs {
                address: "10.0.0.9:12000".into(),
                names: vec!["10.0.0.9:12000".into()],
                line: 3,
            }),
            ..contact()
        };
        let mut terminal = Scripted::new(&["no"]);
        assert_eq!(ask_trust(&mut terminal, &contact).ok(), Some(false));
        assert!(
            terminal.transcript[1].contains(
                "this key is already known for 10.0.0.9:12000 under the name 10.0.0.9:12000 \
                 (line 3) of /home/a/.config/p2pchat/known_servers"
            ),
            "{:?}",
            terminal.transcript
        );
        assert!(terminal.transcript[2].starts_with("> Trust it"));
    }

    #[test]
    fn the_servers_own_fingerprint_pasted_trusts_it() {
        let pasted = format!("  {}  ", contact().fingerprint);
        let pasted: &'static str = Box::leak(pasted.into_boxed_str());
        let mut terminal = Scripted::new(&[pasted]);
        assert_eq!(ask_trust(&mut terminal, &contact()).ok(), Some(true));
    }

    #[test]
    fn another_fingerprint_pasted_is_said_to_differ_and_asked_again() {
        let other = Fingerprint::of_certificate(b"another cert").to_string();
        let other: &'static str = Box::leak(other.into_boxed_str());
        let mut terminal = Scripted::new(&[other, "no"]);
        assert_eq!(ask_trust(&mut terminal, &contact()).ok(), Some(false));
        assert_eq!(
            terminal.transcript[2..],
            [
                format!(
                    "{other} is not this server's fingerprint: it is {}",
                    contact().fingerprint
                ),
                "> Please type 'yes', 'no' or the fingerprint: ".into(),
            ]
        );
        // Another fingerprint never trusts, however often it is pasted.
        let mut terminal = Scripted::new(&[other, other]);
        assert!(matches!(
            ask_trust(&mut terminal, &contact()),
            Err(Local::InputEnded)
        ));
    }

    #[test]
    fn a_new_passwords_prompt_says_the_rule_and_a_logins_does_not() {
        let mut terminal = Scripted::new(&["register", "alice", "long-enough", "long-enough"]);
        run_log_in(&mut terminal, &mut FakeServer::default()).expect("registered");
        let rule = format!("* password (at least {MIN_PASSWORD_CHARS} characters): ");
        assert_eq!(terminal.transcript[2], rule);
        let mut terminal = Scripted::new(&["login", "alice", "pw"]);
        run_log_in(&mut terminal, &mut FakeServer::default()).expect("logged in");
        assert_eq!(terminal.transcript[2], "* password: ");
    }

    #[test]
    fn an_empty_password_goes_back_to_the_username() {
        let mut terminal = Scripted::new(&["login", "alcie", "", "alice", "pw"]);
        let mut server = FakeServer::default();
        run_log_in(&mut terminal, &mut server).expect("logged in");
        assert_eq!(server.calls, [login("alice", "pw")]);
        assert_eq!(
            terminal.transcript,
            [
                "> login or register? ",
                "> username: ",
                "* password: ",
                "> username: ",
                "* password: ",
                CHECKING,
                CHECKED
            ]
        );
        // At registration too, and the new name is checked again; after a wrong password too.
        let mut terminal = Scripted::new(&[
            "register",
            "alice",
            "",
            "alicia",
            "long-enough",
            "long-enough",
        ]);
        let mut server = FakeServer::default();
        run_log_in(&mut terminal, &mut server).expect("registered");
        assert_eq!(
            server.calls,
            [
                Call::CheckName("alice".into()),
                Call::CheckName("alicia".into()),
                register("alicia", "long-enough")
            ]
        );
        let mut terminal = Scripted::new(&["login", "alice", "wrong", "", "bob", "pw"]);
        let mut server = FakeServer::answering(vec![refused(
            ErrorCode::BadCredentials,
            "unknown user or wrong password",
        )]);
        run_log_in(&mut terminal, &mut server).expect("logged in");
        assert_eq!(
            server.calls,
            [
                login("alice", "wrong"),
                Call::ConnectAgain,
                login("bob", "pw")
            ]
        );
    }

    #[test]
    fn every_check_by_the_server_is_between_checking_and_checked() {
        // A lost connection checks twice: each check is announced and closed.
        let mut terminal = Scripted::new(&["login", "alice", "pw"]);
        let mut server = FakeServer::answering(vec![Err(Disconnect::Closed.into())]);
        run_log_in(&mut terminal, &mut server).expect("logged in the second time");
        assert_eq!(
            terminal.transcript[2..],
            ["* password: ", CHECKING, CHECKED, CHECKING, CHECKED]
        );
        // A refusal that ends the dialogue still closes the check (the terminal shows keys again).
        let mut terminal = Scripted::new(&["login", "alice", "pw"]);
        let mut server =
            FakeServer::answering(vec![refused(ErrorCode::AlreadyOnline, "already online")]);
        assert!(run_log_in(&mut terminal, &mut server).is_err());
        assert_eq!(
            terminal.transcript.last().map(String::as_str),
            Some(CHECKED)
        );
    }

    #[test]
    fn input_that_ends_at_the_trust_question_trusts_nothing() {
        let mut terminal = Scripted::new(&["what?"]);
        assert!(matches!(
            ask_trust(&mut terminal, &contact()),
            Err(Local::InputEnded)
        ));
    }
}
