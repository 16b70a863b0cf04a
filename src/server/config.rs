//! The server's settings: [`ServerConfig`], what [`run`](super::run) is given, and
//! [`ServerFlags`], the `p2pchat-server` flags that set it, each flag with its doc, its value
//! range and its default in one place.
//!
//! Where the defaults live: each default is a named constant beside the type it configures —
//! the connection limits and timeouts of [`ServerConfig`] here; flood control
//! ([`crate::flood`]); the send queue ([`crate::outbox`]); the login throttle
//! ([`crate::login_throttle`]); the scrypt cost of new hashes ([`crate::user_store`]). The flags
//! below show every one of them. docs/security.md says what each limit defends and why its
//! default is what it is. This module never binds, opens files or starts anything.

use std::num::NonZeroUsize;
use std::time::Duration;

use crate::address_key::Ipv6Grouping;
use crate::flood::{FloodLimit, DEFAULT_FLOOD_BURST, DEFAULT_FLOOD_RATE, DEFAULT_FLOOD_STRIKES};
use crate::login_throttle::{
    ThrottleConfig, DEFAULT_BASE_DELAY, DEFAULT_FREE_FAILURES, DEFAULT_MAX_DELAY,
};
use crate::outbox::{QueueLimits, DEFAULT_SEND_QUEUE_BYTES, DEFAULT_SEND_STALL_TIMEOUT};
use crate::protocol::MAX_PEER_ENTRY_BYTES;
use crate::user_store::{
    self, DEFAULT_LOG_N, DEFAULT_P, DEFAULT_R, MAX_LOG_N, MAX_P, MAX_R, MIN_LOG_N, MIN_P, MIN_R,
};

/// Default for `--max-clients`: connections served at once, logged in or not.
pub const DEFAULT_MAX_CLIENTS: usize = 64;

/// Default for `--max-pending-per-ip`: connections from one address that have not logged in yet.
pub const DEFAULT_MAX_PENDING_PER_IP: usize = 8;

/// Default for `--max-per-ip`: connections from one address (an
/// [`AddressKey`](crate::address_key::AddressKey)), logged in or not. IRC servers ship 3 to 5 (InspIRCd's example `localmax`, ngIRCd's
/// `MaxConnectionsIP`); 8 leaves room for a person's client, a second one and a reconnection
/// while the old connection waits for its ping timeout, and means it takes 8 addresses, not one,
/// to fill the default 64 slots. A classroom behind one NAT raises it to the class size.
pub const DEFAULT_MAX_PER_IP: usize = 8;

/// Default for `--register-per-ip-hour`: accounts one address may create per hour (the allowance
/// refills evenly over the hour). A person registers once; 20 covers a lab group's accounts and
/// mistakes from one machine, where the review made 107 accounts in 45 s. A classroom behind one
/// NAT raises it to the class size.
pub const DEFAULT_REGISTER_PER_IP_HOUR: u32 = 20;

/// Default for `--auth-timeout`: how long a connection may take to log in or register.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(20);

/// Default for `--ping-interval`: how long a logged-in connection may stay silent before the
/// server sends it `ping`.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(60);

/// Default for `--ping-timeout`: how long the client has to answer a `ping` (with anything).
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Default for `--tls-hello-timeout`: how long a TLS server waits for a client's first byte
/// before telling it `tls_required`. A TLS client sends its hello at once; a plaintext client
/// sends nothing until the server's `hello`, so this is how long a plaintext client waits to be
/// told to drop `--plaintext`.
pub const DEFAULT_TLS_HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// Default for `--tls-handshake-timeout`: how long a TLS server gives a connection to complete
/// the whole handshake, counted from the accept. A p2pchat client finishes it in milliseconds on
/// a LAN (it asks nothing of its user before the handshake ends); a connection that sends a byte
/// or part of a ClientHello and stalls would otherwise hold its admission slots until the login
/// deadline.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest time a flag in seconds may give: a day.
const MAX_FLAG_SECONDS: f64 = 86_400.0;

/// Settings for [`run`](super::run).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Connections served at once; one more gets `server_full` and is closed.
    pub max_clients: usize,
    /// Connections from one address not logged in yet; one more gets `too_many_connections`.
    pub max_pending_per_ip: usize,
    /// Connections from one address, logged in or not; one more gets `too_many_connections`.
    pub max_per_ip: usize,
    /// Accounts one address may register per hour; one more gets `registration_limit`.
    pub register_per_ip_hour: u32,
    /// What one IPv6 address is for every per-address limit (`--ipv6-prefix`).
    pub ipv6_grouping: Ipv6Grouping,
    /// A connection that has not logged in by then gets `auth_timeout` and is closed.
    pub auth_timeout: Duration,
    /// Silence after which a logged-in client is sent `ping`.
    pub ping_interval: Duration,
    /// Time to answer a `ping` before the client is dropped and announced as gone.
    pub ping_timeout: Duration,
    pub flood: FloodLimit,
    /// Each client's send buffer: a client owed more than its cap, or whose socket accepts
    /// nothing for its stall timeout, is dropped.
    pub send_queue: QueueLimits,
    /// Delays after failed logins.
    pub login_throttle: ThrottleConfig,
    /// TLS with this identity, or `None` for the plaintext protocol. The binary's default is TLS
    /// (it loads or makes the identity); the library's default is `None`, as it has no key.
    pub tls: Option<crate::tls::ServerTls>,
    /// With TLS, how long a connection may stay silent before it is told `tls_required`.
    pub tls_hello_timeout: Duration,
    /// With TLS, how long a connection has to complete the handshake (never more than
    /// `auth_timeout`); then it is closed.
    pub tls_handshake_timeout: Duration,
    /// Password hashes computed at once (each takes 128 MiB at the default cost); `None`: one per
    /// core. More requests wait, logins ahead of registrations.
    pub hash_workers: Option<NonZeroUsize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_clients: DEFAULT_MAX_CLIENTS,
            max_pending_per_ip: DEFAULT_MAX_PENDING_PER_IP,
            max_per_ip: DEFAULT_MAX_PER_IP,
            register_per_ip_hour: DEFAULT_REGISTER_PER_IP_HOUR,
            ipv6_grouping: Ipv6Grouping::default(),
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            flood: FloodLimit::default(),
            send_queue: QueueLimits::default(),
            login_throttle: ThrottleConfig::default(),
            tls: None,
            tls_hello_timeout: DEFAULT_TLS_HELLO_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            hash_workers: None,
        }
    }
}

/// The flags of `p2pchat-server` that set its limits and the cost of new password hashes
/// (`#[command(flatten)]` them into the binary's parser). [`ServerFlags::config`] and
/// [`ServerFlags::hash_params`] turn them into what the server and the user store take.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct ServerFlags {
    /// Connections served at once, logged in or not; more are refused with `server_full`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CLIENTS as u32,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    pub max_clients: u32,

    /// Connections from one address that have not logged in yet; more are refused with
    /// `too_many_connections`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PENDING_PER_IP as u32,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    pub max_pending_per_ip: u32,

    /// Connections from one address (see --ipv6-prefix), logged in or not; more are refused
    /// with `too_many_connections`. Raise it for many people behind one NAT.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PER_IP as u32,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    pub max_per_ip: u32,

    /// Accounts one address (see --ipv6-prefix) may register per hour; more are refused with
    /// `registration_limit`. Raise it for many people behind one NAT.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_REGISTER_PER_IP_HOUR,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), help_heading = "Limits")]
    pub register_per_ip_hour: u32,

    /// IPv6 clients whose addresses share their first N bits count as one address for every
    /// per-address limit (connections, registrations, failed logins). Default: an IPv6 address
    /// on the server's own networks (its interfaces' prefixes, link-local) counts alone, as an
    /// IPv4 address does, and any other by its /64 (one host's usual share).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=128),
          help_heading = "Limits")]
    pub ipv6_prefix: Option<u8>,

    /// Seconds a connection has to log in or register; then `auth_timeout` and close.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_AUTH_TIMEOUT.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    pub auth_timeout: f64,

    /// Seconds of silence from a logged-in client before the server sends it `ping`.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_PING_INTERVAL.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    pub ping_interval: f64,

    /// Seconds a client has to answer `ping`; then it is dropped and announced as gone.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_PING_TIMEOUT.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    pub ping_timeout: f64,

    /// Lines a client may send at once before flood control starts dropping them.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FLOOD_BURST,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    pub flood_burst: u32,

    /// Lines per second a client may send once its burst is spent.
    #[arg(long, value_name = "PER_SEC", default_value_t = DEFAULT_FLOOD_RATE,
          value_parser = rate, help_heading = "Limits")]
    pub flood_rate: f64,

    /// Lines dropped for flooding (without a pause) before the client is disconnected.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FLOOD_STRIKES,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    pub flood_strikes: u32,

    /// Bytes one client may be owed (sent to it, not yet accepted by its socket); a client owed
    /// more is disconnected ("send queue exceeded"). Default: 1 MiB, or more when
    /// --max-clients is so large that a peer list of everyone would not fit twice.
    #[arg(long, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1..=1 << 30), help_heading = "Limits")]
    pub send_queue_bytes: Option<u32>,

    /// Seconds a client's socket may accept nothing while it is owed bytes; then the client is
    /// disconnected ("send stalled").
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_SEND_STALL_TIMEOUT.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    pub send_stall_timeout: f64,

    /// Obsolete and ignored: the send queue is bounded in bytes (--send-queue-bytes) and by
    /// progress (--send-stall-timeout), not in lines. Still accepted so that old scripts run.
    #[arg(long, value_name = "N", hide = true,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub send_queue_lines: Option<u32>,

    /// Seconds a TLS server waits for a client's TLS handshake to start; a client that has sent
    /// nothing by then (a plaintext client waits for the server) is told `tls_required`.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TLS_HELLO_TIMEOUT.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    pub tls_hello_timeout: f64,

    /// Seconds a TLS server gives a connection to complete its whole TLS handshake, counted from
    /// the accept (at most --auth-timeout); a connection that stalls in the middle is closed.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TLS_HANDSHAKE_TIMEOUT.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    pub tls_handshake_timeout: f64,

    /// Failed logins (per account and per address; each registration refused for a taken name
    /// counts as one for its address) before further attempts are delayed. Counts decay by one
    /// every 2 minutes; a correct login clears its account's, never its address's.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FREE_FAILURES, help_heading = "Limits")]
    pub login_free_failures: u32,

    /// Seconds of delay after the first failure beyond the free ones; doubles per failure.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_BASE_DELAY.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    pub login_delay: f64,

    /// The longest delay before a login attempt is checked, in seconds. Attempts on an account
    /// share one clock; one that would wait longer is refused at once (`throttled`), unless its
    /// address is in good standing (the owner's login is never refused).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MAX_DELAY.as_secs_f64(),
          value_parser = seconds, help_heading = "Limits")]
    pub login_delay_max: f64,

    /// Password hashes computed at once (each takes 128 MiB at the default cost); more wait,
    /// logins ahead of registrations, and one that cannot start before its connection's
    /// --auth-timeout is answered `busy` [default: one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024),
          help_heading = "Limits")]
    pub hash_workers: Option<u32>,

    /// scrypt cost for new password hashes: log2 of N (17 = 128 MiB per hash with r = 8; at most
    /// 20, and at most 1 GiB = 128 * r * 2^LN bytes per hash). Existing hashes keep the cost they
    /// were made with until their owner logs in, which re-hashes a weaker one at this cost.
    #[arg(long, value_name = "LN", default_value_t = DEFAULT_LOG_N,
          value_parser = clap::value_parser!(u8).range(MIN_LOG_N as i64..=MAX_LOG_N as i64))]
    pub scrypt_log_n: u8,

    /// scrypt block size r for new password hashes (at most 32).
    #[arg(long, value_name = "R", default_value_t = DEFAULT_R,
          value_parser = clap::value_parser!(u32).range(MIN_R as i64..=MAX_R as i64))]
    pub scrypt_r: u32,

    /// scrypt parallelism p for new password hashes (at most 16).
    #[arg(long, value_name = "P", default_value_t = DEFAULT_P,
          value_parser = clap::value_parser!(u32).range(MIN_P as i64..=MAX_P as i64))]
    pub scrypt_p: u32,
}

/// What a client that reads may be owed at once: a peer list of a full server (its `welcome`,
/// or a `peers` it asked for) not yet written when the next one is queued, and a batch of room
/// and presence lines.
pub fn send_queue_floor(max_clients: usize) -> usize {
    2 * max_clients * (MAX_PEER_ENTRY_BYTES + 1) + crate::broker::MAX_CHUNK_BYTES
}

impl ServerFlags {
    /// The server's settings these flags give.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            max_clients: self.max_clients as usize,
            max_pending_per_ip: self.max_pending_per_ip as usize,
            max_per_ip: self.max_per_ip as usize,
            register_per_ip_hour: self.register_per_ip_hour,
            ipv6_grouping: match self.ipv6_prefix {
                Some(bits) => Ipv6Grouping::Prefix(bits),
                None => Ipv6Grouping::OwnNetworksByAddress,
            },
            auth_timeout: Duration::from_secs_f64(self.auth_timeout),
            ping_interval: Duration::from_secs_f64(self.ping_interval),
            ping_timeout: Duration::from_secs_f64(self.ping_timeout),
            flood: FloodLimit {
                burst: self.flood_burst,
                per_second: self.flood_rate,
                strikes: self.flood_strikes,
            },
            send_queue: QueueLimits {
                bytes: self.send_queue_bytes(),
                stall_timeout: Duration::from_secs_f64(self.send_stall_timeout),
            },
            login_throttle: ThrottleConfig {
                free_failures: self.login_free_failures,
                base_delay: Duration::from_secs_f64(self.login_delay),
                max_delay: Duration::from_secs_f64(self.login_delay_max),
            },
            // The binary sets it: the identity is files, and this module opens none.
            tls: None,
            tls_hello_timeout: Duration::from_secs_f64(self.tls_hello_timeout),
            tls_handshake_timeout: Duration::from_secs_f64(self.tls_handshake_timeout),
            hash_workers: self
                .hash_workers
                .and_then(|n| NonZeroUsize::new(n as usize)),
        }
    }

    /// The cap on bytes owed to one client: `--send-queue-bytes`, or by default
    /// [`DEFAULT_SEND_QUEUE_BYTES`] raised to [`send_queue_floor`] for a large `--max-clients`.
    /// A value given below the floor is kept, with a warning: a reading client may then be
    /// dropped right after its `welcome`.
    fn send_queue_bytes(&self) -> usize {
        let floor = send_queue_floor(self.max_clients as usize);
        match self.send_queue_bytes {
            None => DEFAULT_SEND_QUEUE_BYTES.max(floor),
            Some(bytes) => {
                let bytes = bytes as usize;
                if bytes < floor {
                    log::warn!(
                        "--send-queue-bytes {bytes} is less than a client may be owed while it \
                         reads with --max-clients {} ({floor} bytes: a list of everyone online, \
                         twice, and a batch of room and presence lines): a reading client may be \
                         dropped after its welcome",
                        self.max_clients
                    );
                }
                bytes
            }
        }
    }

    /// The scrypt parameters for new password hashes.
    ///
    /// # Errors
    /// Each cost flag is in its range, but together they must also fit the memory bound and
    /// scrypt's rules; [`HashCostRejected`] says which rule they break.
    pub fn hash_params(&self) -> Result<scrypt::Params, HashCostRejected> {
        user_store::scrypt_params(self.scrypt_log_n, self.scrypt_r, self.scrypt_p).map_err(|why| {
            HashCostRejected {
                log_n: self.scrypt_log_n,
                r: self.scrypt_r,
                p: self.scrypt_p,
                why: why.to_string(),
            }
        })
    }
}

/// The scrypt cost flags are each in range but not allowed together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--scrypt-log-n {log_n} --scrypt-r {r} --scrypt-p {p} is not an allowed cost: {why}")]
pub struct HashCostRejected {
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
    /// The rule they break, as the user store words it.
    pub why: String,
}

/// Why a flag's value was refused (clap prints it after the flag and the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagValueError {
    #[error("{0:?} is not a number of seconds")]
    NotSeconds(String),
    #[error("must be more than 0 and at most 86400 seconds")]
    SecondsOutOfRange,
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("must be a number more than 0")]
    RateNotPositive,
}

/// A flag's number of seconds: more than 0, at most a day.
fn seconds(text: &str) -> Result<f64, FlagValueError> {
    let secs: f64 = text
        .parse()
        .map_err(|_| FlagValueError::NotSeconds(text.to_string()))?;
    if secs > 0.0 && secs <= MAX_FLAG_SECONDS {
        Ok(secs)
    } else {
        Err(FlagValueError::SecondsOutOfRange)
    }
}

/// A flag's rate per second: more than 0.
fn rate(text: &str) -> Result<f64, FlagValueError> {
    let rate: f64 = text
        .parse()
        .map_err(|_| FlagValueError::NotANumber(text.to_string()))?;
    if rate > 0.0 && rate.is_finite() {
        Ok(rate)
    } else {
        Err(FlagValueError::RateNotPositive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        flags: ServerFlags,
    }

    fn parse(args: &[&str]) -> Result<ServerFlags, clap::Error> {
        let argv = std::iter::once("p2pchat-server").chain(args.iter().copied());
        Command::try_parse_from(argv).map(|command| command.flags)
    }

    #[test]
    fn no_flags_give_the_default_config() {
        let flags = parse(&[]).unwrap();
        assert_eq!(flags.config(), ServerConfig::default());
        assert!(flags.hash_params().is_ok());
    }

    #[test]
    fn ipv6_prefix_groups_every_ipv6_address_by_its_prefix() {
        let grouping = |args: &[&str]| parse(args).unwrap().config().ipv6_grouping;
        assert_eq!(grouping(&[]), Ipv6Grouping::OwnNetworksByAddress);
        assert_eq!(grouping(&["--ipv6-prefix", "64"]), Ipv6Grouping::Prefix(64));
        assert_eq!(
            grouping(&["--ipv6-prefix", "128"]),
            Ipv6Grouping::Prefix(128)
        );
    }

    #[test]
    fn the_obsolete_line_limit_is_accepted_and_changes_nothing() {
        let flags = parse(&["--send-queue-lines", "256"]).unwrap();
        assert_eq!(flags.config(), ServerConfig::default());
    }

    #[test]
    fn the_default_send_queue_holds_a_full_servers_peer_list_twice() {
        let bytes = |args: &[&str]| parse(args).unwrap().config().send_queue.bytes;
        assert!(send_queue_floor(DEFAULT_MAX_CLIENTS) < DEFAULT_SEND_QUEUE_BYTES);
        assert_eq!(bytes(&[]), DEFAULT_SEND_QUEUE_BYTES);
        let big = bytes(&["--max-clients", "20000"]);
        assert_eq!(big, send_queue_floor(20_000));
        assert!(big >= 2 * 20_000 * MAX_PEER_ENTRY_BYTES);
        // A value given is the operator's, even below the floor (with a warning).
        assert_eq!(
            bytes(&["--max-clients", "20000", "--send-queue-bytes", "4096"]),
            4096
        );
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for args in [
            &["--max-clients", "0"][..],
            &["--max-per-ip", "0"],
            &["--register-per-ip-hour", "0"],
            &["--ipv6-prefix", "0"],
            &["--ipv6-prefix", "129"],
            &["--auth-timeout", "0"],
            &["--auth-timeout", "86401"],
            &["--flood-rate", "inf"],
            &["--send-queue-lines", "1000001"],
            &["--send-stall-timeout", "0"],
            &["--scrypt-log-n", "21"],
            &["--hash-workers", "0"],
        ] {
            let error = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        }
    }
}
