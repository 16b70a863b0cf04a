//! The two line protocols the generator speaks: p2pchat's JSON lines and IRC (NICK, USER, JOIN,
//! PRIVMSG) for ngircd. Encodes what a simulated client sends and classifies what it receives,
//! without a JSON parser: the generator shares two cores with the server it measures, so it reads
//! only the few bytes it needs (a line's type, a message's text).
//!
//! A room message's text is `m SENDER SEQ MICROS`: the sender's number among the senders, its
//! sequence number from 1, and the microseconds since the run's start when it was written, so a
//! receiver checks order per sender and measures latency from the text alone.

/// The IRC channel every simulated IRC client joins: the room.
pub const CHANNEL: &str = "#bench";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    P2pchat,
    Irc,
}

/// What a received line means to a simulated client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// p2pchat's `hello`: send the login now.
    Hello,
    /// IRC 001: registered; join the channel now.
    Registered,
    /// IRC 353: this many names in the channel (one line of several).
    Names(u32),
    /// In the room: p2pchat's `welcome` (the peers it lists, this client included, are counted
    /// by the caller from the line's braces) or IRC 366 (end of the names).
    Welcome,
    /// Someone else entered the room (or, for IRC before 366, this client's own JOIN echo).
    Joined,
    /// A room message's text.
    Message(&'a [u8]),
    /// The server's ping, with IRC's token to echo.
    Ping(&'a [u8]),
    /// p2pchat's non-fatal `rate_limited`.
    RateLimited,
    /// Any other error: p2pchat's code, IRC's numeric or `ERROR`.
    Error(&'a [u8]),
    /// Someone left the room.
    Left,
    Other,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::P2pchat => "p2pchat",
            Dialect::Irc => "ngircd",
        }
    }

    /// What a client sends as soon as its TCP connection is up (IRC registers at once; p2pchat
    /// waits for `hello`).
    pub fn on_connect(self, name: &str) -> Option<Vec<u8>> {
        match self {
            Dialect::P2pchat => None,
            Dialect::Irc => {
                Some(format!("NICK {name}\r\nUSER {name} 0 * :{name}\r\n").into_bytes())
            }
        }
    }

    /// What a probe of the handshake storm sends once connected: nothing to p2pchat (its `hello`
    /// comes unasked); to IRC a `PING`, whose answer (a `PONG`, or 451 "not registered") is the
    /// server's first line.
    pub fn probe(self) -> Option<Vec<u8>> {
        match self {
            Dialect::P2pchat => None,
            Dialect::Irc => Some(b"PING :probe\r\n".to_vec()),
        }
    }

    /// p2pchat's `login` or `register` (after `hello`); IRC's JOIN (after 001).
    pub fn enter(self, name: &str, password: &str, register: bool) -> Vec<u8> {
        match self {
            Dialect::P2pchat => {
                let kind = if register { "register" } else { "login" };
                format!(
                    "{{\"type\":\"{kind}\",\"username\":\"{name}\",\"password\":\"{password}\",\"p2p_port\":40000}}\n"
                )
                .into_bytes()
            }
            Dialect::Irc => format!("JOIN {CHANNEL}\r\n").into_bytes(),
        }
    }

    /// A room message, appended to `out`.
    pub fn say(self, out: &mut Vec<u8>, sender: usize, seq: u32, micros: u64) {
        use std::io::Write;
        let _ = match self {
            Dialect::P2pchat => writeln!(
                out,
                "{{\"type\":\"say\",\"text\":\"m {sender} {seq} {micros}\"}}"
            ),
            Dialect::Irc => write!(out, "PRIVMSG {CHANNEL} :m {sender} {seq} {micros}\r\n"),
        };
    }

    pub fn pong(self, token: &[u8]) -> Vec<u8> {
        match self {
            Dialect::P2pchat => b"{\"type\":\"pong\"}\n".to_vec(),
            Dialect::Irc => [b"PONG ".as_slice(), token, b"\r\n"].concat(),
        }
    }

    /// Classifies one line (without its `\n`; a trailing `\r` is ignored).
    pub fn classify(self, line: &[u8]) -> Incoming<'_> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self {
            Dialect::P2pchat => classify_p2pchat(line),
            Dialect::Irc => classify_irc(line),
        }
    }
}

fn classify_p2pchat(line: &[u8]) -> Incoming<'_> {
    let Some(rest) = line.strip_prefix(b"{\"type\":\"") else {
        return Incoming::Other;
    };
    let kind = &rest[..rest.iter().position(|&b| b == b'"').unwrap_or(rest.len())];
    match kind {
        b"message" => Incoming::Message(string_field(line, b"\"text\":\"").unwrap_or(b"")),
        b"joined" => Incoming::Joined,
        b"left" => Incoming::Left,
        b"welcome" => Incoming::Welcome,
        b"hello" => Incoming::Hello,
        b"ping" => Incoming::Ping(b""),
        b"error" => match string_field(line, b"\"code\":\"") {
            Some(b"rate_limited") => Incoming::RateLimited,
            code => Incoming::Error(code.unwrap_or(b"?")),
        },
        b"shutdown" => Incoming::Error(b"shutdown"),
        _ => Incoming::Other,
    }
}

/// The string after `key` up to the next quote (the generator's own texts and the server's error
/// codes hold no escapes).
fn string_field<'a>(line: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = find(line, key)? + key.len();
    let len = line[start..].iter().position(|&b| b == b'"')?;
    Some(&line[start..start + len])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn classify_irc(line: &[u8]) -> Incoming<'_> {
    if let Some(token) = line.strip_prefix(b"PING ") {
        return Incoming::Ping(token);
    }
    if line.starts_with(b"ERROR") {
        return Incoming::Error(b"ERROR");
    }
    // `:prefix COMMAND params... [:trailing]`
    let mut rest = line;
    if rest.first() == Some(&b':') {
        let space = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        rest = &rest[(space + 1).min(rest.len())..];
    }
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let command = &rest[..end];
    let trailing = find(rest, b" :").map_or(&b""[..], |at| &rest[at + 2..]);
    match command {
        b"PRIVMSG" => Incoming::Message(trailing),
        b"JOIN" => Incoming::Joined,
        b"PART" | b"QUIT" => Incoming::Left,
        b"001" => Incoming::Registered,
        b"353" => Incoming::Names(
            trailing
                .split(|&b| b == b' ')
                .filter(|name| !name.is_empty())
                .count() as u32,
        ),
        b"366" => Incoming::Welcome,
        [b'4' | b'5', _, _] => Incoming::Error(command),
        _ => Incoming::Other,
    }
}

/// A room message's text, `m SENDER SEQ MICROS`, as numbers.
pub fn parse_text(text: &[u8]) -> Option<(usize, u32, u64)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut fields = text.strip_prefix("m ")?.split(' ');
    let sender = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let micros = fields.next()?.parse().ok()?;
    Some((sender, seq, micros))
}

/// Checked by the smoke run (`cargo test --bench load`): a bench without a harness runs no `#[test]`.
pub fn self_check() {
    let mut out = Vec::new();
    Dialect::P2pchat.say(&mut out, 3, 17, 123);
    assert_eq!(out, b"{\"type\":\"say\",\"text\":\"m 3 17 123\"}\n");
    let line = br#"{"type":"message","from":"u5","text":"m 3 17 123"}"#;
    let Incoming::Message(text) = Dialect::P2pchat.classify(line) else {
        panic!()
    };
    assert_eq!(parse_text(text), Some((3, 17, 123)));
    let line = b":u5!~u5@127.0.0.6 PRIVMSG #bench :m 3 17 123\r";
    let Incoming::Message(text) = Dialect::Irc.classify(line) else {
        panic!()
    };
    assert_eq!(parse_text(text), Some((3, 17, 123)));
    assert_eq!(
        Dialect::Irc.classify(b":srv 353 u1 = #bench :u1 @u0 u2 "),
        Incoming::Names(3)
    );
    assert_eq!(
        Dialect::P2pchat
            .classify(br#"{"type":"error","code":"rate_limited","message":"x","fatal":false}"#),
        Incoming::RateLimited
    );
}
