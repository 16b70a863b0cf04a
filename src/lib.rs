//! p2pchat: a LAN chat room. A TCP server authenticates users, keeps the list of who is online
//! and relays room messages; clients send direct messages to each other over UDP, never through
//! the server.
//!
//! Modules, from the wire up:
//! - [`protocol`]: every message (TCP lines and UDP datagrams) as serde types; encode/decode.
//! - [`connection`]: reading capped, newline-delimited frames from a byte stream.
//! - [`user_store`]: accounts, scrypt password hashes, the users file.
//! - [`broker`]: the task that owns the online set and fans messages out.
//! - [`rate_limit`], [`login_throttle`]: the token bucket behind flood control, and the growing
//!   delay after failed logins.
//! - [`server`]: accepting, authenticating and serving connections; shutdown.
//! - [`client`]: the client core: connect, authenticate, chat, direct messages.
//! - [`runtime`]: the one seam to the async runtime (async-std).

pub mod broker;
pub mod client;
pub mod connection;
pub mod login_throttle;
pub mod protocol;
pub mod rate_limit;
pub mod runtime;
pub mod server;
#[cfg(feature = "trace")]
pub mod trace;
pub mod user_store;
