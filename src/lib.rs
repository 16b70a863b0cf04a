//! p2pchat: a LAN chat room. A TCP server authenticates users, keeps the list of who is online
//! and relays room messages; clients send direct messages to each other over UDP, never through
//! the server.
//!
//! Modules, from the wire up:
//! - [`runtime`]: the one seam to the async runtime (async-std).
//! - [`protocol`]: every message (TCP lines and UDP datagrams) as serde types; encode/decode.
//! - [`sealed`]: sealing and opening direct-message datagrams (session keys, pairwise keys,
//!   ChaCha20-Poly1305).
//! - [`identity`]: long-term identity keys (Ed25519), the binding of a session key to one, and
//!   the safety number two people compare.
//! - [`outbox`]: one client's bounded send queue, filled without waiting.
//! - [`tls`]: TLS between client and server: the server's key, certificate and fingerprint, and
//!   the client's verifier, which trusts a fingerprint (SSH's model), not an authority.
//! - [`discovery`]: finding the server on the LAN (DNS-SD over mDNS): the server's announcement,
//!   the client's browse; the only module that names the mDNS crate.
//! - [`connection`]: the stream (plain or TLS) and both halves of a framed connection (capped line reads, queued and direct
//!   writes), its graceful close, and why the server ends one.
//! - [`rules`]: the username and password rules and the default pace, which server and client
//!   share.
//! - [`rate_limit`]: the token bucket behind flood control and the direct-message limit.
//! - [`flood`]: the server's flood control on every line a client sends.
//! - [`address_key`]: what "one address" is for the per-address limits (IPv4; IPv6 on the
//!   server's own networks by address, elsewhere by /64).
//! - [`login_throttle`]: the growing delay after failed logins.
//! - [`user_store`]: accounts, scrypt password hashes, the users file.
//! - [`broker`]: the task that owns the online set and fans messages out.
//! - [`server`]: admitting, authenticating and serving connections; its settings and flags;
//!   shutdown.
//! - [`transfer`]: files straight to a peer: the data connection (handshake, sealed records),
//!   the sender's and the receiver's loops, the partial file and the download folder.
//! - [`client`]: the client core: connect, authenticate, chat, direct messages.
//! - `trace`: reading packet captures of p2pchat traffic, for `p2pchat-trace` and the lab's
//!   report; it never opens a socket.

// Safe wrappers (rustix, std) first: the one place that needs `unsafe` says why beside its
// `#[allow]` (src/server/scavenger.rs, glibc's allocator calls).
#![deny(unsafe_code)]

pub mod address_key;
pub mod broker;
pub mod client;
pub mod connection;
pub mod discovery;
pub mod flood;
pub mod identity;
pub mod login_throttle;
pub mod outbox;
pub mod protocol;
pub mod rate_limit;
pub mod rules;
pub mod runtime;
pub mod sealed;
pub mod server;
pub mod tls;
#[cfg(feature = "trace")]
pub mod trace;
pub mod transfer;
pub mod user_store;

/// Both binaries' `--help` layout: the usage first, then the about text (one line for `-h`, the
/// whole text for `--help`), the flags, and what comes after them.
pub const HELP_TEMPLATE: &str =
    "{before-help}{usage-heading} {usage}\n\n{about-with-newline}\n{all-args}{after-help}";
