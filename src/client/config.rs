//! The client's settings: every flag of `p2pchat-client` ([`ClientArgs`]: the flag, its default
//! and its doc in one place), each default a named constant here, and the limits on received
//! direct messages ([`DirectLimits`]) with their validation.
//!
//! Only settings live here. Fixed bounds that are not flags live beside the code they bound: the
//! client core's timeouts and buffer sizes beside the code that waits and reads, the inbox's
//! table sizes and reporting intervals in [`direct_inbox`](super::direct_inbox).

use std::path::PathBuf;
use std::time::Duration;

use super::file_size::{self, FileSizeLimit};
use crate::protocol::MAX_DATAGRAM_BYTES;
use crate::tls::Fingerprint;

use crate::discovery::Announced;

/// `p2pchat-client -h`: what it is, in one line.
pub const ABOUT: &str =
    "A p2pchat client: the room through the server, direct messages straight to a peer over UDP.";

/// `p2pchat-client --help`: the one line, then what a person and a script need to know that
/// no single flag says. The command list comes after the flags, from the command table.
pub const LONG_ABOUT: &str = "A p2pchat client: the room through the server, direct messages straight to a peer over UDP.\n\n\
After login, each line is a command: the list is at the end of this help (and /help shows \
it). Command names are case-insensitive.\n\n\
On a terminal: every line starts with the local time (HH:MM), names are in colour (never \
when NO_COLOR is set; bold and reverse video stay), direct messages and lines naming you are \
highlighted with a bell, and long lines wrap at word boundaries under their text. Notices \
are marked -!- (joins -->, leaves <--), which no line of others can begin with. Keys: Tab \
completes a name at the start of a line (bob: ), names after @ and /msg, and commands after /; Up/Down and Ctrl-R walk \
the history, kept across sessions in $XDG_STATE_HOME/p2pchat/history (else \
~/.local/state/p2pchat/history); Ctrl-C clears the line, or leaves on an empty one (exit \
130); Ctrl-D leaves on an empty line.\n\n\
Direct messages are sealed end to end (X25519 session keys, ChaCha20-Poly1305) and \
acknowledged: the sender tries 8 times within 2.7 s, then reports \"delivered\" or \"not \
delivered\". With --plaintext they are clear JSON datagrams, unacknowledged (the lab's \
capture).\n\n\
Received direct messages are dropped (and counted) when oversized, malformed, clear at a \
client that seals, under an unknown or ended session's key, not from the announced address \
of the peer they name, forged, replayed, or over that sender's rate limit (a token bucket \
per sender: --dm-burst at once, then --dm-rate per second).\n\n\
Files go straight to a peer, never through the server: /send NAME PATH offers one (Tab \
completes the path), the peer answers /accept NAME or /decline NAME (an offer lapses after \
--offer-timeout), and the receiver's client fetches it over TCP from the sender's transfer port \
(the number of its UDP port), sealed with the pair's keys; it is saved in --download-dir (else \
the XDG download folder, else ~/Downloads) under a safe name, never over an existing file, \
once its SHA-256 matches. /transfers lists offers and transfers, /cancel stops one at both \
ends, and an interrupted transfer resumes where it stopped when both are online (/resume). \
Not with --plaintext.\n\n\
Lines for the server are paced to the flood limit it announces (none is dropped; the rest \
wait, \"sending N queued lines…\"). A line typed while the server is away is shown \
[queued] and sent once logged in again (\"N queued lines sent\"). On a terminal, a wrong password, a taken or invalid name \
or a short password is asked again, and the client connects again (1 s doubling to 30 s) and \
logs in again when the server is lost; without a terminal it exits 5 instead, unless \
--reconnect.\n\n\
When stdin is not a terminal, its lines answer the prompts in order (login or register, the \
username, the password) and every later line is a command; end of input quits.\n\n\
The connection is TLS 1.3; the server is trusted by its fingerprint, as SSH trusts hosts: \
the first time, on a terminal, you are shown it and asked; without a terminal it is refused \
(exit 6, its fingerprint shown) unless --trust names it or --accept-new is given (then it is \
accepted, with a notice on stderr). Once trusted it is pinned in the known-servers file, \
under its name and the address it answered at, and a server that presents another one there \
is refused. Nothing, the password least of all, is sent before. If the change is expected, --forget HOST[:PORT] removes the server's fingerprint (as \
ssh-keygen -R) and exits without connecting.\n\n\
Without --server the client looks for servers announced on the LAN (multicast DNS, about a \
second): one found is connected to, saying which; several are listed to choose from on a terminal, or \
named without one (exit 2); none, and it tries 127.0.0.1:12000, saying so. --discover only lists \
them. A fingerprint announced on the LAN proves nothing (anyone can announce): at first contact the \
client says whether the certificate matches it, and pins as always.\n\n\
Exit status: 0 after :q or end of input (or --forget, --discover); 1 local error (bad answer at a prompt, UDP port in \
use, the known-servers file); 2 bad arguments (a bad --server port too; several servers announced and no \
terminal to choose on; --accept-new without --server); 3 server \
unreachable, not a p2pchat server (no hello within 5 s, or something else first), or full \
(for everyone, or for this address), too busy to check the login now (try again later), or \
speaking the other protocol (TLS vs --plaintext); 4 login or registration refused; 5 the \
server went away or shut down; 6 the server is not trusted (its fingerprint changed, is not \
the --trust one, was refused at the prompt, or is unknown without a terminal or \
--accept-new); 7 the account logged in from another \
connection, which took the name over (not reconnected); 130 interrupted (Ctrl-C on an empty \
line).";

/// Default for `--server`: a server on this host, on the server's default port.
pub const DEFAULT_SERVER: &str = "127.0.0.1:12000";

/// Default for `--p2p-port`: 0, any free port (peers learn it from the server).
pub const DEFAULT_P2P_PORT: u16 = 0;

/// Default for `--dm-burst`: direct messages one peer may send at once before being limited.
/// Twenty covers a person pasting a few lines or a script sending a short batch.
pub const DEFAULT_DM_BURST: u32 = 20;

/// Default for `--dm-rate`, datagrams per second per peer: ten a second is far above anyone
/// typing, far below what would scroll a terminal out of reach.
pub const DEFAULT_DM_RATE: f64 = 10.0;

/// Default for `--dm-max-bytes`, the largest datagram accepted: the largest the protocol allows.
pub const DEFAULT_DM_MAX_BYTES: usize = MAX_DATAGRAM_BYTES;

/// Default for `--max-continuation-lines`: lines shown under the first line of a message whose
/// text has line breaks. Ten shows a pasted paragraph or a short listing whole, while nine messages
/// of 21,000 lines each take about a hundred lines of the terminal instead of 189,000.
pub const DEFAULT_MAX_CONTINUATION_LINES: u16 = 10;

/// Default for `--history-lines`: lines of typed input kept in the history file (and recalled
/// with Up). A thousand is weeks of chatting for Up and Ctrl-R, and at most about 4 MiB of file
/// at the longest lines (more usually tens of KiB), rewritten in well under a second.
pub const DEFAULT_HISTORY_LINES: usize = 1_000;
/// The port a `--server` without one means: the server's default port.
pub const DEFAULT_SERVER_PORT: u16 = 12000;

/// Default for `--max-queued-lines`: lines that may wait to be sent (for the server's pace, or
/// while reconnecting); a line past them is refused with an error, never dropped silently. A
/// thousand lines is a long paste, and about four minutes at the server's default pace.
pub const DEFAULT_MAX_QUEUED_LINES: usize = 1000;

/// Default for `--max-file-size`: 4 GiB holds any document, photo album or installer a LAN
/// passes around, and stops an offer that would fill a disk by mistake; `none` lifts it.
pub const DEFAULT_MAX_FILE_SIZE: &str = "4GiB";

/// [`DEFAULT_MAX_FILE_SIZE`] in bytes.
pub const DEFAULT_MAX_FILE_SIZE_BYTES: u64 = 4 << 30;

/// Default for `--offer-timeout`: ten minutes, long enough to come back to the keyboard,
/// short enough that a forgotten offer does not wait for a day (IRC clients' DCC timeouts are
/// minutes too).
pub const DEFAULT_OFFER_TIMEOUT_SECS: u64 = 600;

/// The flags of `p2pchat-client`, flattened into the binary's parser (which adds the about text,
/// `--help` and `--version`).
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct ClientArgs {
    /// The server, HOST[:PORT] (PORT 12000 when left out); HOST may be a name (system
    /// resolver) or an IPv4/IPv6 address ([::1]:12000, or ::1 alone). Without it the client
    /// looks for servers announced on the LAN (mDNS, about a second): one found is connected
    /// to; several are listed to choose from on a terminal, else named (exit 2); none, and it
    /// tries 127.0.0.1:12000.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_server)]
    pub server: Option<String>,

    /// List the servers announced on the LAN (name, address and port, TLS, the fingerprint
    /// they announced) after listening for about a second, and exit 0. With --json, one JSON
    /// object per server.
    #[arg(long, conflicts_with_all = ["server", "forget"])]
    pub discover: bool,

    /// Not a flag: the fingerprint the server chosen on the LAN announced, when it was found
    /// there rather than named with --server. Compared with the certificate at first contact,
    /// never trusted for itself (anyone on the LAN can announce).
    #[arg(skip)]
    pub announced: Option<Announced>,

    /// UDP port for receiving direct messages; 0 picks a free port.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_P2P_PORT)]
    pub p2p_port: u16,

    /// Print every event as one JSON object per line on stdout, for programs.
    #[arg(long)]
    pub json: bool,

    /// Speak the clear protocol, without TLS and with clear direct messages: anyone on the
    /// network reads the password and every message. For the lab's teaching capture; the server
    /// must run with --plaintext too. Direct messages are then clear JSON datagrams,
    /// unacknowledged, and a client that seals them (the default) drops them.
    #[arg(long, conflicts_with_all = ["trust", "known_servers", "accept_new"], help_heading = "Trust")]
    pub plaintext: bool,

    /// Trust the server only if its fingerprint is this one, as the server prints it at start
    /// (for scripts); the known-servers file is then neither read nor written.
    #[arg(long, value_name = "SHA256:…", help_heading = "Trust")]
    pub trust: Option<Fingerprint>,

    /// The fingerprints of the servers met before (one `HOST:PORT,ADDRESS SHA256:…` line each);
    /// a server met for the first time is asked about on a terminal, else refused unless
    /// --accept-new. Refused if it is a symbolic link or others could have written it.
    /// [default: $XDG_CONFIG_HOME/p2pchat/known_servers, else
    /// ~/.config/p2pchat/known_servers]
    #[arg(long, value_name = "PATH", help_heading = "Trust")]
    pub known_servers: Option<PathBuf>,

    /// Trust a server met for the first time without asking, and record it in the
    /// known-servers file with a notice on stderr (OpenSSH's StrictHostKeyChecking=accept-new);
    /// without it and without a terminal, an unknown server is refused. A server whose
    /// fingerprint changed is refused all the same. Needs --server (exit 2 without): a server
    /// found on the LAN may be anyone's announcement, and would be sent the password.
    #[arg(long, conflicts_with = "trust", help_heading = "Trust")]
    pub accept_new: bool,

    /// Remove HOST[:PORT]'s fingerprints from the known-servers file and exit, without
    /// connecting (OpenSSH's ssh-keygen -R): after "SERVER IDENTIFICATION HAS CHANGED", when
    /// the change is expected. Says what it removed; exit 0 whether or not the server was there,
    /// as ssh-keygen -R, 1 if the file cannot be read or rewritten.
    #[arg(long, value_name = "HOST[:PORT]", value_parser = parse_server,
          conflicts_with_all = ["plaintext", "trust"], help_heading = "Trust")]
    pub forget: Option<String>,

    /// Direct messages one peer may send at once before its rate limit applies.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DM_BURST,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub dm_burst: u32,

    /// Direct messages per second one peer may send after its burst (0 = none after the burst).
    #[arg(long, value_name = "PER_SECOND", default_value_t = DEFAULT_DM_RATE, allow_negative_numbers = true,
          value_parser = parse_rate)]
    pub dm_rate: f64,

    /// Largest direct-message datagram accepted, in bytes (at most 65507); larger ones are dropped.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_DM_MAX_BYTES as u32,
          value_parser = clap::value_parser!(u32).range(1..=MAX_DATAGRAM_BYTES as i64))]
    pub dm_max_bytes: u32,

    /// Lines shown under a message's first line when its text has line breaks, each marked "↳";
    /// the rest are counted in one "… (N more lines)" line. --json always has the whole text.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONTINUATION_LINES)]
    pub max_continuation_lines: u16,

    /// Do not start lines with the local time (HH:MM). Shown by default when stdout is a
    /// terminal; piped text keeps today's exact lines unless --timestamps asks for them.
    #[arg(long, overrides_with = "timestamps", help_heading = "Terminal")]
    pub no_timestamps: bool,

    /// Start every line with the local time (HH:MM) even when stdout is not a terminal.
    #[arg(long, overrides_with = "no_timestamps", help_heading = "Terminal")]
    pub timestamps: bool,

    /// No colour. Colour is only ever used when stdout is a terminal and NO_COLOR is not set
    /// (no-color.org); bold and reverse video are not colour and stay, so highlights show.
    #[arg(long, help_heading = "Terminal")]
    pub no_color: bool,

    /// No bell (BEL) when a direct message or a line naming you arrives.
    #[arg(long, help_heading = "Terminal")]
    pub no_bell: bool,

    /// Lines of typed input kept in the history file, $XDG_STATE_HOME/p2pchat/history (else
    /// ~/.local/state/p2pchat/history), mode 0600; 0 keeps no file. Lines starting with a space
    /// are not kept; the password never is (prompts are not history).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HISTORY_LINES, help_heading = "Terminal")]
    pub history_lines: usize,
    /// When the server is lost (restart, broken link), connect again (1 s, doubling to 30 s)
    /// and log in again with this session's name and password. The default on a terminal;
    /// without one the client exits (status 5) unless this is given.
    #[arg(long, conflicts_with = "no_reconnect", help_heading = "Reconnecting")]
    pub reconnect: bool,

    /// Exit (status 5) when the server is lost, even on a terminal (for scripts).
    #[arg(long, help_heading = "Reconnecting")]
    pub no_reconnect: bool,

    /// Lines that may wait to be sent (paced to the server's flood limit, or while
    /// reconnecting); one more is refused with an error, never dropped silently.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_QUEUED_LINES,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..), |n| n as usize),
          help_heading = "Reconnecting")]
    pub max_queued_lines: usize,

    /// Where received files are saved. [default: $XDG_DOWNLOAD_DIR, else the download folder
    /// of user-dirs.dirs, else ~/Downloads]
    #[arg(long, value_name = "PATH", help_heading = "Files")]
    pub download_dir: Option<PathBuf>,

    /// The largest file /accept takes (a larger offer is refused with a line saying so):
    /// bytes or a size with its unit (500MiB, 4GiB, 1.5GB); 0 or none for no limit.
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_MAX_FILE_SIZE,
          value_parser = file_size::parse_limit, help_heading = "Files")]
    pub max_file_size: FileSizeLimit,

    /// Seconds a file offer waits for /accept or /decline before it lapses, at both ends.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_OFFER_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400), help_heading = "Files")]
    pub offer_timeout: u64,
}

/// The settings of files (`--download-dir`, `--max-file-size`, `--offer-timeout`) and how often
/// progress is reported (often on a terminal, whose status line is redrawn in place; every few
/// seconds elsewhere).
#[derive(Debug, Clone)]
pub struct FileSettings {
    pub download_dir: Option<PathBuf>,
    pub max_file_size: FileSizeLimit,
    pub offer_timeout: Duration,
    pub progress_every: Duration,
    /// The engine's time limits (handshake, stall).
    pub limits: crate::transfer::Limits,
}

/// Progress every quarter of a second on a terminal: the status line looks alive.
pub const TERMINAL_PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Progress every 3 seconds for scripts and piped text: a line every few seconds.
pub const PIPED_PROGRESS_EVERY: Duration = Duration::from_secs(3);

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            download_dir: None,
            max_file_size: FileSizeLimit(Some(DEFAULT_MAX_FILE_SIZE_BYTES)),
            offer_timeout: Duration::from_secs(DEFAULT_OFFER_TIMEOUT_SECS),
            progress_every: PIPED_PROGRESS_EVERY,
            limits: crate::transfer::Limits::default(),
        }
    }
}

/// A `--server` that is not HOST[:PORT].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadServer {
    #[error("no host in {0:?}: expected HOST[:PORT]")]
    NoHost(String),
    #[error("{port:?} in {text:?} is not a port: expected a number from 1 to 65535")]
    BadPort { text: String, port: String },
    #[error("{0:?} is not HOST[:PORT]: an IPv6 address with a port is written [ADDRESS]:PORT")]
    Syntax(String),
}

/// `HOST[:PORT]` as `HOST:PORT`, the port [`DEFAULT_SERVER_PORT`] when left out: checked before
/// any connection, so a typo is a usage error (exit 2), not a failed connection.
pub fn parse_server(text: &str) -> Result<String, BadServer> {
    let text = text.trim();
    let port = |host: &str, port: &str| -> Result<String, BadServer> {
        if host.is_empty() || host == "[]" {
            return Err(BadServer::NoHost(text.to_string()));
        }
        match port.parse::<u16>() {
            Ok(n) if n > 0 && port.chars().all(|c| c.is_ascii_digit()) => Ok(format!("{host}:{n}")),
            _ => Err(BadServer::BadPort {
                text: text.to_string(),
                port: port.to_string(),
            }),
        }
    };
    if text.is_empty() {
        return Err(BadServer::NoHost(String::new()));
    }
    if let Some(rest) = text.strip_prefix('[') {
        // [v6] or [v6]:PORT
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| BadServer::Syntax(text.to_string()))?;
        if inside.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(BadServer::Syntax(text.to_string()));
        }
        let host = format!("[{inside}]");
        return match after {
            "" => Ok(format!("{host}:{DEFAULT_SERVER_PORT}")),
            _ => match after.strip_prefix(':') {
                Some(p) => port(&host, p),
                None => Err(BadServer::Syntax(text.to_string())),
            },
        };
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{text}]:{DEFAULT_SERVER_PORT}"));
    }
    match text.split_once(':') {
        None => Ok(format!("{text}:{DEFAULT_SERVER_PORT}")),
        Some((host, p)) if !p.contains(':') => port(host, p),
        Some(_) => Err(BadServer::Syntax(text.to_string())),
    }
}

impl ClientArgs {
    /// The server to connect to: `--server`, the one found on the LAN (set in its place), or
    /// [`DEFAULT_SERVER`].
    pub fn server(&self) -> &str {
        self.server.as_deref().unwrap_or(DEFAULT_SERVER)
    }

    /// How files are received and reported: progress often on a terminal (its status line is
    /// redrawn in place), every few seconds for a script or piped text.
    pub fn file_settings(&self, terminal: bool) -> FileSettings {
        FileSettings {
            download_dir: self.download_dir.clone(),
            max_file_size: self.max_file_size,
            offer_timeout: Duration::from_secs(self.offer_timeout),
            progress_every: if terminal && !self.json {
                TERMINAL_PROGRESS_EVERY
            } else {
                PIPED_PROGRESS_EVERY
            },
            limits: crate::transfer::Limits::default(),
        }
    }

    /// The limits on received direct messages that the `--dm-*` flags ask for (not yet
    /// validated: see [`DirectLimits::validate`]).
    pub fn direct_limits(&self) -> DirectLimits {
        DirectLimits {
            burst: self.dm_burst,
            rate: self.dm_rate,
            max_bytes: self.dm_max_bytes as usize,
        }
    }
}

/// A `--dm-rate` that is not a rate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a rate: expected a number of datagrams per second, 0 or more")]
pub struct NotARate(String);

/// A rate: a finite number, 0 or more.
fn parse_rate(text: &str) -> Result<f64, NotARate> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(NotARate(text.to_string())),
    }
}

/// The limits applied to received direct messages (`--dm-burst`, `--dm-rate`, `--dm-max-bytes`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirectLimits {
    /// Datagrams one source address may send at once (bucket size); at least 1.
    pub burst: u32,
    /// Datagrams per second added back to each source's bucket; 0 means never refilled.
    pub rate: f64,
    /// Largest datagram accepted, in bytes.
    pub max_bytes: usize,
}

impl Default for DirectLimits {
    fn default() -> Self {
        DirectLimits {
            burst: DEFAULT_DM_BURST,
            rate: DEFAULT_DM_RATE,
            max_bytes: DEFAULT_DM_MAX_BYTES,
        }
    }
}

/// A limit on received direct messages that makes no sense; the message names it.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum LimitsError {
    #[error("the direct-message burst must be at least 1")]
    ZeroBurst,
    #[error(
        "the direct-message rate must be a number of datagrams per second, 0 or more, not {0}"
    )]
    BadRate(f64),
    #[error("the largest direct message must be 1 to {max} bytes, not {0}", max = MAX_DATAGRAM_BYTES)]
    BadMaxBytes(usize),
}

impl DirectLimits {
    /// Checks the limits make sense.
    ///
    /// # Errors
    /// The first limit that does not, as a [`LimitsError`].
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.burst == 0 {
            return Err(LimitsError::ZeroBurst);
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(LimitsError::BadRate(self.rate));
        }
        if self.max_bytes == 0 || self.max_bytes > MAX_DATAGRAM_BYTES {
            return Err(LimitsError::BadMaxBytes(self.max_bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(burst: u32, rate: f64) -> DirectLimits {
        DirectLimits {
            burst,
            rate,
            ..DirectLimits::default()
        }
    }

    #[test]
    fn limits_are_validated() {
        assert!(DirectLimits::default().validate().is_ok());
        let why = |limits: DirectLimits| limits.validate().unwrap_err().to_string();
        assert!(why(limits(0, 1.0)).contains("burst"));
        assert!(why(limits(1, -1.0)).contains("rate"));
        assert!(why(limits(1, f64::NAN)).contains("rate"));
        let too_big = DirectLimits {
            max_bytes: MAX_DATAGRAM_BYTES + 1,
            ..DirectLimits::default()
        };
        assert!(why(too_big).contains("bytes"));
    }

    #[test]
    fn limit_errors_read_as_before() {
        assert_eq!(
            limits(1, -1.5).validate().unwrap_err().to_string(),
            "the direct-message rate must be a number of datagrams per second, 0 or more, not -1.5"
        );
        let too_big = DirectLimits {
            max_bytes: 70_000,
            ..DirectLimits::default()
        };
        assert_eq!(
            too_big.validate().unwrap_err().to_string(),
            "the largest direct message must be 1 to 65507 bytes, not 70000"
        );
    }

    #[test]
    fn a_server_without_a_port_means_12000_and_a_bad_port_is_refused() {
        assert_eq!(parse_server("example.org"), Ok("example.org:12000".into()));
        assert_eq!(parse_server("127.0.0.1:9"), Ok("127.0.0.1:9".into()));
        assert_eq!(parse_server("::1"), Ok("[::1]:12000".into()));
        assert_eq!(parse_server("[::1]"), Ok("[::1]:12000".into()));
        assert_eq!(parse_server("[::1]:7"), Ok("[::1]:7".into()));
        for bad in [
            "host:99999",
            "host:0",
            "host:",
            "host:http",
            ":12000",
            "",
            "[::1",
            "[nope]:1",
            "a:b:c",
            "host:+1",
        ] {
            assert!(parse_server(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_server("localhost:99999").unwrap_err().to_string(),
            "\"99999\" in \"localhost:99999\" is not a port: expected a number from 1 to 65535"
        );
    }

    #[test]
    fn a_rate_is_a_finite_number_zero_or_more() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        for bad in ["-1", "inf", "NaN", "fast"] {
            assert_eq!(
                parse_rate(bad).unwrap_err().to_string(),
                format!(
                    "{bad:?} is not a rate: expected a number of datagrams per second, 0 or more"
                )
            );
        }
    }
}
