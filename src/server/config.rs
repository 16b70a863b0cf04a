//! The server's limits: every one a named default here, a field of [`ServerConfig`], and a flag
//! of `p2pchat-server`. docs/security.md says what each defends and why its default is what it is.

use std::time::Duration;

use crate::broker::QueueLimits;
use crate::login_throttle::ThrottleConfig;

/// Default for `--max-clients`: connections served at once, logged in or not.
pub const DEFAULT_MAX_CLIENTS: usize = 64;

/// Default for `--max-pending-per-ip`: connections from one address that have not logged in yet.
pub const DEFAULT_MAX_PENDING_PER_IP: usize = 8;

/// Default for `--auth-timeout`: how long a connection may take to log in or register.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(20);

/// Default for `--ping-interval`: how long a logged-in connection may stay silent before the
/// server sends it `ping`.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(60);

/// Default for `--ping-timeout`: how long the client has to answer a `ping` (with anything).
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Default for `--flood-burst`: lines a client may send at once.
pub const DEFAULT_FLOOD_BURST: u32 = 10;

/// Default for `--flood-rate`: lines per second a client may send once its burst is spent.
pub const DEFAULT_FLOOD_RATE: f64 = 5.0;

/// Default for `--flood-strikes`: lines dropped for flooding, without a pause long enough to
/// refill the burst, before the client is disconnected.
pub const DEFAULT_FLOOD_STRIKES: u32 = 10;

/// Per-client flood control: a token bucket on every line the client sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodLimit {
    pub burst: u32,
    pub per_second: f64,
    pub strikes: u32,
}

impl Default for FloodLimit {
    fn default() -> Self {
        FloodLimit {
            burst: DEFAULT_FLOOD_BURST,
            per_second: DEFAULT_FLOOD_RATE,
            strikes: DEFAULT_FLOOD_STRIKES,
        }
    }
}

/// Settings for [`run`](super::run).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Connections served at once; one more gets `server_full` and is closed.
    pub max_clients: usize,
    /// Connections from one address not logged in yet; one more gets `too_many_connections`.
    pub max_pending_per_ip: usize,
    /// A connection that has not logged in by then gets `auth_timeout` and is closed.
    pub auth_timeout: Duration,
    /// Silence after which a logged-in client is sent `ping`.
    pub ping_interval: Duration,
    /// Time to answer a `ping` before the client is dropped and announced as gone.
    pub ping_timeout: Duration,
    pub flood: FloodLimit,
    /// Each client's send queue; a client that does not read is dropped when it is full.
    pub send_queue: QueueLimits,
    /// Delays after failed logins.
    pub login_throttle: ThrottleConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_clients: DEFAULT_MAX_CLIENTS,
            max_pending_per_ip: DEFAULT_MAX_PENDING_PER_IP,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            flood: FloodLimit::default(),
            send_queue: QueueLimits::default(),
            login_throttle: ThrottleConfig::default(),
        }
    }
}
